"""Training runs with a fixed budget over several seeds, in worker processes: the mAP of the models and finetune modes.

The budget is a `TrainBudget`; `train_all` runs seeds x models, `budget.jobs` at a time. The workers ignore Ctrl-C
(SIGINT reaches every process of the terminal's process group): the calling process gets the KeyboardInterrupt alone
and ends the workers, so an interrupted run prints no traceback per worker.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolo_attn.bench.text import duration
from yolo_attn.bench.timing import quiet
from yolo_attn.bench.zoo import Entry, guard

# The mAP runs' budget is ~190 iterations. Ultralytics' warm-up (at least 100 iterations) would take half of it, and
# its optimizer=auto choice for short runs (AdamW, lr0 = 0.002 * 5 / (4 + nc) = 0.0009) learns slowly. yolov8n on
# synth-shapes, 3 epochs, seed 0, mAP50-95: at 160 px 0.005 with Ultralytics' defaults, 0.008 without warm-up, 0.011
# without warm-up at lr0=0.003, 0.001 at lr0=0.006; at 128 px 0.005 without warm-up, 0.009 with this recipe. Mosaic
# is off anyway: Ultralytics closes it for the last close_mosaic=10 epochs, i.e. for all of a run this short.
SHORT_BUDGET_RECIPE = ("warmup_epochs=0", "optimizer=AdamW", "lr0=0.003")


@dataclass(frozen=True)
class TrainBudget:
    """What every training run of a comparison gets: the same data, epochs, size, recipe and seeds.

    Attributes:
        data (str): Dataset YAML.
        epochs (int): Epochs per run.
        imgsz (int): Training and validation image size.
        batch (int): Batch size.
        seeds (int): Runs per model, seeds 0, 1, ...
        jobs (int): Runs at a time, each in its own worker process.
        threads (int): CPU threads per run.
        fraction (float): Fraction of the train split used.
        device (str): Ultralytics device (`cpu`, `0`, ...).
        verbose (bool): Show Ultralytics' training output.
        train_args (dict): Further Ultralytics train arguments (the recipe; `parse_train_args` reads them).
    """

    data: str
    epochs: int
    imgsz: int
    batch: int
    seeds: int
    jobs: int
    threads: int = 1
    fraction: float = 1.0
    device: str = "cpu"
    verbose: bool = False
    train_args: dict[str, Any] = field(default_factory=dict)


def parse_train_args(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return KEY=VALUE strings as a dict, values parsed as YAML scalars (as the `yolo` command does).

    Raises:
        SystemExit: An item without `=` or without a key.
    """
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"benchmark: --train-args expects KEY=VALUE, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


@contextlib.contextmanager
def ultralytics_threads(n: int) -> Iterator[None]:
    """Let Ultralytics' CPU training use `n` threads (it sets min(8, cpu_count - 1) in `select_device`)."""
    import ultralytics.utils.torch_utils as tu

    old = tu.NUM_THREADS
    tu.NUM_THREADS = n
    try:
        yield
    finally:
        tu.NUM_THREADS = old


def train_once(yaml: str, name: str, budget: TrainBudget, seed: int, project: str) -> dict[str, float]:
    """Train a model from `yaml` with `budget` and one seed; return final validation metrics and the time it took.

    Runs in a worker process (see `train_all`): it sets its own thread count and keeps Ultralytics quiet unless
    verbose.
    """
    import torch
    from ultralytics import YOLO

    import yolo_attn  # noqa: F401  (the start-up hook does this too; a spawned worker must not depend on it)

    torch.set_num_threads(budget.threads)
    model = YOLO(yaml)
    t, cpu = time.perf_counter(), time.process_time()
    with quiet(not budget.verbose), ultralytics_threads(budget.threads):
        model.train(
            **{
                "data": budget.data,
                "epochs": budget.epochs,
                "imgsz": budget.imgsz,
                "batch": budget.batch,
                "fraction": budget.fraction,
                "seed": seed,
                "deterministic": True,
                "device": budget.device,
                "workers": 0,
                "plots": False,
                "val": False,  # validate after the last epoch only (and on best.pt: Ultralytics' final evaluation)
                **budget.train_args,
                "project": project,
                "name": f"{name}-seed{seed}",
                "exist_ok": True,
                "verbose": budget.verbose,
            }
        )
    box = model.trainer.validator.metrics.box
    return {
        "map50": float(box.map50),
        "map": float(box.map),
        "seconds": time.perf_counter() - t,
        "cpu_seconds": time.process_time() - cpu,  # what the run costs on an idle core (wall time includes waiting)
    }


def prepare_data(data: str) -> None:
    """Build/verify the data set and write its label caches once, before parallel training runs read them."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    info = check_det_dataset(data)
    cfg = get_cfg(overrides={"imgsz": 64})
    for split in ("train", "val"):
        build_yolo_dataset(cfg, info[split], 1, info, mode="val")


def _ignore_interrupt() -> None:
    """Pool initializer: a worker leaves Ctrl-C to the calling process, which ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _workers(n: int) -> Iterator[Any]:
    """A pool of `n` spawned workers that ignore SIGINT from their first instruction, terminated on leaving."""
    ctx = multiprocessing.get_context("spawn")
    # Ignored while the workers start: an ignored signal stays ignored across exec, and the new interpreter then
    # installs no KeyboardInterrupt handler, so a Ctrl-C during their start-up cannot print a traceback either.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        pool = ctx.Pool(n, initializer=_ignore_interrupt)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        yield pool
    finally:
        pool.terminate()  # after a Ctrl-C or an error: the running jobs are dropped, not waited for
        pool.join()


def train_all(
    entries: list[Entry], budget: TrainBudget, out: Path, on_run_done: Callable[[int, int], None] | None = None
) -> list[float]:
    """Run seeds x models training runs, `budget.jobs` at a time in worker processes; store metrics on the entries.

    Args:
        entries (list[Entry]): The models; `map50_seeds`, `map_seeds`, `train_seconds` and `train_cpu_seconds` are
            appended to each one's results (a failed run is recorded in its errors).
        budget (TrainBudget): What every run gets.
        out (Path): Folder whose `train/` receives each run's results.csv.
        on_run_done (Callable[[int, int], None] | None): Called with (runs done, runs in all) after each run.

    Returns:
        (list[float]): Wall seconds of each finished run.
    """
    with quiet(not budget.verbose):
        prepare_data(budget.data)
    run_seconds = []
    (out / "train").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="yolo_attn_train_") as tmp, _workers(budget.jobs) as pool:
        # Seed-major order: drift on the machine and the pairing of concurrent runs hit every model alike.
        jobs = [(seed, e) for seed in range(budget.seeds) for e in entries]
        pending = [(s, e, pool.apply_async(train_once, (e.yaml, e.name, budget, s, tmp))) for s, e in jobs]
        for k, (seed, e, result) in enumerate(pending, 1):
            res = guard(e, f"training seed {seed}", result.get)
            if on_run_done is not None:
                on_run_done(k, len(jobs))
            if res is None:
                continue
            run_seconds.append(res["seconds"])
            e.results.setdefault("map50_seeds", []).append(res["map50"])
            e.results.setdefault("map_seeds", []).append(res["map"])
            e.results.setdefault("train_seconds", []).append(res["seconds"])
            e.results.setdefault("train_cpu_seconds", []).append(res["cpu_seconds"])
            csv_file = Path(tmp) / f"{e.name}-seed{seed}" / "results.csv"
            if csv_file.is_file():
                shutil.copy(csv_file, out / "train" / f"{e.name}-seed{seed}.csv")
            elapsed = time.perf_counter() - started  # runs overlap: the wall time per finished run predicts the rest
            alone = on_run_done is None  # else the caller reports the time left of its whole job
            left = f", about {duration(elapsed / k * (len(jobs) - k))} left" if alone and k < len(jobs) else ""
            print(
                f"benchmark: [{k}/{len(jobs)}] {e.name} seed {seed}: mAP50 {res['map50']:.3f} "
                f"mAP50-95 {res['map']:.3f} ({res['seconds']:.0f}s, {res['cpu_seconds']:.0f} CPU s{left})",
                flush=True,
            )
    return run_seconds
