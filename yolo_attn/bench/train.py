"""Training runs with a fixed budget over several seeds, in worker processes: the mAP columns of the models mode."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from yolo_attn.bench.report import duration
from yolo_attn.bench.timing import quiet
from yolo_attn.bench.zoo import Entry, guard

# The mAP runs' budget is ~190 iterations. Ultralytics' warm-up (at least 100 iterations) would take half of it, and
# its optimizer=auto choice for short runs (AdamW, lr0 = 0.002 * 5 / (4 + nc) = 0.0009) learns slowly. yolov8n on
# synth-shapes, 3 epochs, seed 0, mAP50-95: at 160 px 0.005 with Ultralytics' defaults, 0.008 without warm-up, 0.011
# without warm-up at lr0=0.003, 0.001 at lr0=0.006; at 128 px 0.005 without warm-up, 0.009 with this recipe. Mosaic
# is off anyway: Ultralytics closes it for the last close_mosaic=10 epochs, i.e. for all of a run this short.
SHORT_BUDGET_RECIPE = ("warmup_epochs=0", "optimizer=AdamW", "lr0=0.003")


@contextlib.contextmanager
def _ultralytics_threads(n: int) -> Iterator[None]:
    """Let Ultralytics' CPU training use `n` threads (it sets min(8, cpu_count - 1) in `select_device`)."""
    import ultralytics.utils.torch_utils as tu

    old = tu.NUM_THREADS
    tu.NUM_THREADS = n
    try:
        yield
    finally:
        tu.NUM_THREADS = old


def train_once(yaml: str, name: str, options: dict[str, Any], seed: int, project: str) -> dict[str, float]:
    """Train a model from `yaml` with the fixed budget in `options` and one seed; return final validation metrics.

    Runs in a worker process (see `run`): it sets its own thread count and keeps Ultralytics quiet unless verbose.
    """
    import torch
    from ultralytics import YOLO

    import yolo_attn  # noqa: F401  (the start-up hook does this too; a spawned worker must not depend on it)

    torch.set_num_threads(options["threads"])
    model = YOLO(yaml)
    t, cpu = time.perf_counter(), time.process_time()
    with quiet(not options["verbose"]), _ultralytics_threads(options["threads"]):
        model.train(
            **{
                "data": options["data"],
                "epochs": options["epochs"],
                "imgsz": options["imgsz_train"],
                "batch": options["batch"],
                "fraction": options["fraction"],
                "seed": seed,
                "deterministic": True,
                "device": "cpu",
                "workers": 0,
                "plots": False,
                "val": False,  # validate after the last epoch only (and on best.pt: Ultralytics' final evaluation)
                **options["train_args"],
                "project": project,
                "name": f"{name}-seed{seed}",
                "exist_ok": True,
                "verbose": options["verbose"],
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


def train_all(entries: list[Entry], args: argparse.Namespace, out: Path) -> list[float]:
    """Run seeds x models training runs, `args.jobs` at a time in worker processes; store metrics on the entries."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with quiet(not args.verbose):
        prepare_data(args.data)
    keys = ("data", "epochs", "imgsz_train", "batch", "fraction", "threads", "verbose", "train_args")
    options = {k: getattr(args, k) for k in keys}
    run_seconds = []
    (out / "train").mkdir(exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="yolo_attn_train_") as tmp:
        # Seed-major order: drift on the machine and the pairing of concurrent runs hit every model alike.
        jobs = [(seed, e) for seed in range(args.seeds) for e in entries]
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [(s, e, pool.submit(train_once, e.yaml, e.name, options, s, tmp)) for s, e in jobs]
            for k, (seed, e, future) in enumerate(futures, 1):
                res = guard(e, f"training seed {seed}", future.result)
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
                elapsed = (
                    time.perf_counter() - started
                )  # runs overlap: the wall time per finished run predicts the rest
                left = f", about {duration(elapsed / k * (len(jobs) - k))} left" if k < len(jobs) else ""
                print(
                    f"benchmark: [{k}/{len(jobs)}] {e.name} seed {seed}: mAP50 {res['map50']:.3f} "
                    f"mAP50-95 {res['map']:.3f} ({res['seconds']:.0f}s, {res['cpu_seconds']:.0f} CPU s{left})",
                    flush=True,
                )
    return run_seconds
