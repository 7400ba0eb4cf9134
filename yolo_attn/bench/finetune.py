"""`yolo-attn-bench finetune`: did attention help, when every model starts from the same pretrained weights?

1. The stock model of a family (`yolov8n` by default) is trained once from scratch on `--data`, or taken from
   `--pretrained`; the trained weights are cached in the output folder.
2. Every insert-only variant of that family is built with the identity start (`layer_scale: 0.0`) and loads those
   weights: every stock item transfers, so before any step it predicts as stock. Two checks, reported: its raw outputs
   on two photos equal the stock model's (this holds whatever the stock model has learnt), and so does its epoch-0
   validation.
3. The stock model and every variant are fine-tuned from those weights with the same budget and seeds; the table
   gives mAP after fine-tuning and the difference to the fine-tuned stock model with its 95 % band.

Variants that replace stock blocks (`-c2f-cot`, `-c3k2-cot`) cannot start as the stock model and are left out.

The run works in a hidden folder beside `--out` and moves its files into `--out` when it is done, so an interrupted
run (Ctrl-C: one line, exit status 130) leaves nothing half-made behind; only the cached stock weights, written
whole once pretraining has finished, are kept for the next run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from yolo_attn.bench.finetune_report import rank_note, write_report
from yolo_attn.bench.progress import Progress
from yolo_attn.bench.text import plural
from yolo_attn.bench.timing import free_threads, load_average, machine_info, quiet, torch_threads
from yolo_attn.bench.train import TrainBudget, parse_train_args, train_all, ultralytics_threads
from yolo_attn.bench.zoo import Entry, discover

DESCRIPTION = __doc__.split("\n")[0].split(": ", 1)[1]
REPLACING = ("-c2f-cot", "-c3k2-cot")  # variants that swap stock blocks: no identity start
# Pretraining: Ultralytics' defaults would warm up for 3 of 20 epochs, and its optimizer=auto picks AdamW lr0=0.0009
# for this data; yolov8n from scratch at 224 px with this recipe reached mAP50-95 0.50 after 20 epochs on the 2-core
# CPU (seed 0), a regime where the stock model has learnt. amp=False: float32 on every device, and no AMP check (on a
# GPU it would fetch yolo26n.pt).
PRETRAIN_RECIPE = ("optimizer=AdamW", "lr0=0.002", "warmup_epochs=1", "amp=False")
# Fine-tuning starts at a quarter of that lr0 and without warm-up, so it refines the pretrained optimum instead of
# leaving it: the from-scratch short-budget recipe (lr0=0.003) lowered every model below its epoch-0 mAP.
FINETUNE_RECIPE = ("optimizer=AdamW", "lr0=0.0005", "warmup_epochs=0", "amp=False")
# Largest difference of a variant's raw outputs from the stock model's at epoch 0, relative to the output scale: the
# identity start computes X + 0 * F(X) = X exactly, so anything above float32 rounding means it does not start as stock.
START_TOLERANCE = 1e-5
RUN_UNITS = 0.3  # progress: a fine-tuning run's start-up and two validations, in epochs of work
PRESETS = {  # --preset NAME: other defaults; an option given on the command line (with another value) wins
    "quick": {
        "models": ["{family}n-ca", "{family}n-cot"],
        "pretrain_epochs": 3,
        "epochs": 1,
        "imgsz": 128,
        "seeds": 2,
        "out": "runs/yolo_attn_finetune_quick",
    },
}
# What a preset takes on 2 idle CPU cores, as announced and used for the time left until a step is measured. quick:
# 277 CPU s in all (2026-12-07, synth-shapes built), which even one core alone runs in 4.6 min; its wall time was
# 9.5 min at a load average of 5-7 (docs/finetune-usage.md).
PRESET_MINUTES = {"quick": 5}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """Add the fine-tune mode's options."""
    ap.add_argument("--family", default="yolov8", help="stock family: yolov8, yolo11 or yolo26 (scale n)")
    ap.add_argument("--models", nargs="+", help="shell patterns selecting the variants (default: all insert-only)")
    ap.add_argument("--data", default="synth-shapes.yaml", help="detection dataset YAML")
    ap.add_argument("--pretrained", help="stock weights to start from (default: train them once and cache them)")
    ap.add_argument("--pretrain-epochs", type=int, default=20, help="epochs of the stock pretraining run")
    ap.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs per run")
    ap.add_argument("--imgsz", type=int, default=224, help="training and validation image size")
    ap.add_argument("--batch", type=int, default=16, help="batch size")
    ap.add_argument("--seeds", type=int, default=3, help="fine-tuning runs per model (seeds 0, 1, ...)")
    ap.add_argument("--device", default="cpu", help="Ultralytics device, e.g. cpu, 0, 0,1")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per training run")
    ap.add_argument("--jobs", type=int, default=2, help="training runs at a time")
    ap.add_argument("--out", default="runs/yolo_attn_finetune", help="output folder")
    ap.add_argument("--verbose", action="store_true", help="show Ultralytics' training output")
    ap.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help=f"quick: 2 variants, 3 pretraining epochs, 1 fine-tuning epoch, 2 seeds at 128 px (about "
        f"{PRESET_MINUTES['quick']} min on 2 idle CPU cores; tries the pipeline, too small to rank anything); options "
        "given explicitly win",
    )
    ap.set_defaults(preset_base={k: ap.get_default(k) for preset in PRESETS.values() for k in preset})


def apply_preset(args: argparse.Namespace) -> None:
    """Give the options of `args.preset` that the command line left at their defaults the preset's values."""
    for key, value in PRESETS.get(args.preset or "", {}).items():
        if getattr(args, key) == args.preset_base[key]:
            value = [v.format(family=args.family) for v in value] if key == "models" else value
            setattr(args, key, value)


def cache_path(args: argparse.Namespace, out: Path) -> Path:
    """Return where the stock weights of this data, size and pretraining length are cached in `out`."""
    return out / f"{args.family}n-{Path(args.data).stem}-{args.imgsz}px-{args.pretrain_epochs}ep.pt"


def _pretrain_callbacks(progress: Progress, epochs: int) -> dict[str, Any]:
    """Ultralytics callbacks that report the pretraining run's batches and epochs to `progress`."""
    seen = {"epoch": -1, "batch": 0}

    def on_train_batch_end(trainer: Any) -> None:
        if trainer.epoch != seen["epoch"]:
            seen.update(epoch=trainer.epoch, batch=0)
        seen["batch"] += 1
        done = trainer.epoch + seen["batch"] / max(1, len(trainer.train_loader))
        progress.update(done, f"pretraining epoch {trainer.epoch + 1}/{epochs}")

    def on_fit_epoch_end(trainer: Any) -> None:
        if trainer.epoch >= epochs:  # Ultralytics' final validation of best.pt calls it once more
            return
        m = (trainer.metrics or {}).get("metrics/mAP50-95(B)")
        score = f": mAP50-95 {m:.3f}" if m is not None else ""
        progress.update(trainer.epoch + 1, f"pretraining epoch {trainer.epoch + 1}/{epochs}{score}", announce=True)

    return {"on_train_batch_end": on_train_batch_end, "on_fit_epoch_end": on_fit_epoch_end}


def pretrain(args: argparse.Namespace, work: Path, cached: Path, progress: Progress) -> Path:
    """Train the stock model from scratch in `work`, then cache its best weights at `cached` (written whole)."""
    from ultralytics import YOLO

    wanted = args.threads * args.jobs  # the pretraining run is alone: it gets every fine-tuning job's threads
    threads = free_threads(wanted) if args.device == "cpu" else wanted
    busy = f" (of {wanted}: the CPU is busy)" if threads < wanted else ""
    print(
        f"benchmark: training {args.family}n from scratch, {plural(args.pretrain_epochs, 'epoch')}, "
        f"{plural(threads, 'thread')}{busy}",
        flush=True,
    )
    model = YOLO(f"{args.family}n.yaml")
    for event, callback in _pretrain_callbacks(progress, args.pretrain_epochs).items():
        model.add_callback(event, callback)
    with torch_threads(threads), quiet(not args.verbose), ultralytics_threads(threads):
        model.train(data=args.data, epochs=args.pretrain_epochs, imgsz=args.imgsz, batch=args.batch,
                    device=args.device, workers=0, plots=False, seed=0, deterministic=True, pretrained=False,
                    **parse_train_args(PRETRAIN_RECIPE), project=str(work / "pretrain"), name=args.family,
                    exist_ok=True)  # fmt: skip
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(cached.name + ".partial")
    shutil.copy(Path(model.trainer.best), partial)
    os.replace(partial, cached)  # a rerun finds whole weights or none
    return cached


def identity_yaml(entry: Entry, nc: int, folder: Path) -> Path:
    """Write a model at the data's class count (scale n by its name): a variant in its identity-start form, or stock."""
    path = folder / f"{entry.name}-id.yaml"
    base = f"{entry.family}.yaml" if entry.stock else entry.source
    start = "" if entry.stock else "layer_scale: 0.0 # the attention layers start as the identity\n"
    path.write_text(f"base: {base}\nnc: {nc}\n{start}")
    return path


def start_outputs(yaml: str, weights: Path, imgsz: int) -> Any:
    """Return the raw outputs (numpy) of the model built from `yaml` with `weights` loaded, on bus.jpg and zidane.jpg.

    Unlike mAP, these depend on the image whatever the weights have learnt, so comparing them tells whether a variant
    starts as the stock model even where both would validate at mAP 0.
    """
    import torch
    from ultralytics import YOLO

    from yolo_attn.bench.calibrate import photos

    with quiet():
        model = YOLO(yaml)
        model.load(str(weights))
    net = model.model.float().eval()
    with torch.no_grad():
        y = net(torch.from_numpy(photos(imgsz, imgsz, batch=2)))
    while isinstance(y, (list, tuple)):  # the decoded predictions come first
        y = y[0]
    return y.numpy()


def start_gap(y: Any, ref: Any) -> float:
    """Return the largest |y - ref| relative to the output scale (max |ref|, at least 1)."""
    import numpy as np

    return float(np.abs(y - ref).max() / max(1.0, float(np.abs(ref).max())))


def epoch0(yaml: str, weights: Path, args: argparse.Namespace, out: Path) -> float:
    """Validate a model built from `yaml` with `weights` loaded, before any training step; return mAP50-95."""
    from ultralytics import YOLO

    model = YOLO(yaml)
    model.load(str(weights))
    with quiet(not args.verbose):
        metrics = model.val(data=args.data, imgsz=args.imgsz, batch=args.batch, device=args.device, workers=0,
                            plots=False, project=str(out / "epoch0"), name=Path(yaml).stem, exist_ok=True)  # fmt: skip
    return float(metrics.box.map)


def budget(args: argparse.Namespace, weights: Path) -> TrainBudget:
    """Return the fine-tuning budget: every model from `weights`, with `FINETUNE_RECIPE`."""
    recipe = {**parse_train_args(FINETUNE_RECIPE), "pretrained": str(weights)}
    return TrainBudget(
        data=args.data, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, seeds=args.seeds, jobs=args.jobs,
        threads=args.threads, device=args.device, verbose=args.verbose, train_args=recipe,
    )  # fmt: skip


def main(args: argparse.Namespace) -> int:
    """Run the fine-tune comparison; return 0, 1 when a variant did not start as the stock model, 130 on Ctrl-C."""
    apply_preset(args)
    out = Path(args.out).resolve()  # Ultralytics nests a relative `project` under its runs_dir
    out.parent.mkdir(parents=True, exist_ok=True)
    cached = cache_path(args, out)
    had_cache = cached.is_file()
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-unfinished-", dir=out.parent))  # same file system: moves
    try:
        status = _run(args, work, out)
        publish(work, out)
        print(f"benchmark: wrote {out / 'finetune.md'} and {out / 'finetune.png'}", flush=True)
        return status
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        done = f"kept only the finished stock weights {cached}" if cached.is_file() and not had_cache else ""
        print(f"yolo-attn-bench: interrupted; {done or f'wrote nothing to {out}'}", file=sys.stderr, flush=True)
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)


def publish(work: Path, out: Path) -> None:
    """Move every file and folder of `work` into `out`, replacing what an earlier run left under the same name."""
    out.mkdir(parents=True, exist_ok=True)
    for item in work.iterdir():
        dest = out / item.name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        elif dest.exists():
            dest.unlink()
        os.replace(item, dest)


def _run(args: argparse.Namespace, work: Path, out: Path) -> int:
    """The comparison, writing into `work` (the stock-weights cache into `out`); return the exit status."""
    from ultralytics.data.utils import check_det_dataset

    started, t = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), time.perf_counter()
    machine = machine_info()
    nc = check_det_dataset(args.data)["nc"]
    variants = [
        e
        for e in discover(args.models or [f"{args.family}n-*"])
        if e.family == args.family and not e.stock and not e.source.endswith(tuple(f"{r}.yaml" for r in REPLACING))
    ]
    stock = Entry(f"{args.family}n", f"{args.family}n.yaml", args.family, True)
    entries = [stock, *variants]
    cached = cache_path(args, out)
    pretraining = 0 if args.pretrained or cached.is_file() else args.pretrain_epochs
    per_run = args.epochs + RUN_UNITS
    units = pretraining + len(entries) * args.seeds * per_run
    expected = None
    if args.preset:  # the announced time, scaled to what is left to do (the weights may be cached already)
        full = args.pretrain_epochs + len(entries) * args.seeds * per_run
        expected = 60 * PRESET_MINUTES[args.preset] * units / full
        print(f"benchmark: --preset {args.preset}: about {expected / 60:.0f} min on 2 idle CPU cores (longer on a busy "
              "CPU: the progress lines give the time left as measured)", flush=True)  # fmt: skip
    with Progress(units, expected, every=20) as progress:
        progress.update(0, "preparing", announce=True)
        if args.pretrained:
            weights = Path(args.pretrained)
        elif cached.is_file():
            print(f"benchmark: stock weights from the cache {cached}", flush=True)
            weights = cached
        else:
            weights = pretrain(args, work, cached, progress)
        (work / "yamls").mkdir(exist_ok=True)
        for e in entries:  # built at the data's class count, so the head transfers too and epoch 0 is comparable
            e.yaml = str(identity_yaml(e, nc, work / "yamls"))
        status = _check_start(entries, weights, args, work, progress, pretraining)
        print(f"benchmark: fine-tuning {plural(len(entries), 'model')} x {plural(args.seeds, 'seed')}", flush=True)

        def run_done(k: int, n: int) -> None:
            progress.update(pretraining + k * per_run, f"fine-tuning: {k}/{n} runs done")

        run_done(0, len(entries) * args.seeds)

        train_all(entries, budget(args, weights), work, on_run_done=run_done)
    machine["loadavg_end"] = load_average()
    settings = {
        "machine": machine,
        "device": args.device,
        "started": started,
        "minutes": (time.perf_counter() - t) / 60,
        "weights": str(weights),
        "pretraining": "given"
        if args.pretrained
        else f"{args.family}n from scratch, {args.pretrain_epochs} epochs, {', '.join(PRETRAIN_RECIPE)}",
        "recipe": list(FINETUNE_RECIPE),
        **{k: getattr(args, k) for k in ("epochs", "imgsz", "batch", "seeds", "data")},
    }
    write_report(entries, settings, work)
    return status


def _check_start(
    entries: list[Entry], weights: Path, args: argparse.Namespace, work: Path, progress: Progress, done: float
) -> int:
    """Check that each variant starts as the stock model (entries[0]): raw outputs, epoch-0 mAP; 1 if one does not."""
    stock, status = entries[0], 0
    ref = start_outputs(stock.yaml, weights, args.imgsz)
    for e in entries:
        progress.update(done, f"epoch-0 check of {e.name}")
        e.results["start_gap"] = start_gap(start_outputs(e.yaml, weights, args.imgsz), ref)
        e.results["map0"] = epoch0(e.yaml, weights, args, work)
        print(
            f"benchmark: {e.name} at epoch 0: mAP50-95 {e.results['map0']:.4f}, outputs differ from stock by "
            f"{e.results['start_gap']:.1e}",
            flush=True,
        )
        if e.results["start_gap"] > START_TOLERANCE or abs(e.results["map0"] - stock.results["map0"]) > 1e-6:
            print(f"benchmark: {e.name} does not start as the stock model at epoch 0", flush=True)
            status = 1
        if e is stock and rank_note(e.results["map0"]):
            print(f"benchmark: note: {rank_note(e.results['map0'])}", flush=True)
    return status
