"""Models mode (the default): stock YOLOv8n / YOLO11n against every n-scale plugin YAML, measured in one run.

Usage::

    yolo-attn-bench [models] [--data synth-shapes.yaml] [--models PATTERN ...] [--out DIR] ...

For each model (the stock `yolov8n.yaml` and `yolo11n.yaml`, and every YAML in the plugin's `model_yamls/` built at
scale n: `yolov8-cot.yaml` -> `yolov8n-cot.yaml`) it measures:

- parameters and GFLOPs of the fused model at the latency image size, twice: Ultralytics' own number
  (`ultralytics.utils.torch_utils.get_flops`, what `model.info()` prints) and a full count (`count_flops`);
- CPU inference latency at batch 1 in PyTorch (fused, eval), in ONNX Runtime and, when installed, in OpenVINO (the
  model exported by Ultralytics' own exporters), at every `--imgsz` size, and the time of one training step
  (forward, loss, backward, optimiser step on a fixed random batch), each also as a ratio to the stock model of the
  same family measured in the same run (with `--compile`, also PyTorch inference under `torch.compile`, as
  Ultralytics' `compile=True` runs it). Models are measured in interleaved rounds, so drift on a shared machine hits
  every model alike; a ratio is the median over rounds of the per-round ratio;
- with `--memory`, peak memory of one inference per runtime and size and of one train step (batch 2), each in a
  fresh process (`yolo_attn.bench.memory`);
- mAP50 and mAP50-95 on the validation split after a fixed training budget, for several seeds: mean, standard deviation,
  and whether the difference to the stock model of the same family is inside the seed-to-seed noise.

It writes `benchmark.md` (Markdown tables with machine and settings), `cost.md` (per plugin model and runtime the
latency ratio, the FLOPs ratio and the excess of one over the other, the train-step ratio; with several sizes or
`--memory` the scaling table), `benchmark.png` (chart), `benchmark.json` (every raw sample and setting) and
`benchmark.csv` (one row per model) into `--out`.

Every measurement runs single-threaded by default (`--threads 1`): on a small or shared CPU, multi-threaded PyTorch
spends most of its time waiting for a busy core (on a loaded 2-core machine yolov8n at 64 px took 21 ms with one
thread, 650 ms with two). The training runs use the other cores instead: `--jobs` runs (default cores / threads) at a
time, each in its own worker process. Defaults finish in about 47 minutes on a 2-core CPU: ~4 minutes of timing and
48 training runs (16 models x 3 seeds) of ~100 s each, two at a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from yolo_attn.bench.flops import count_flops, flop_breakdown, ultralytics_flops
from yolo_attn.bench.memory import peak_memory
from yolo_attn.bench.report import write_chart, write_cost_tables, write_markdown, write_raw
from yolo_attn.bench.runners import compiled_fn, has_openvino, onnx_fn, openvino_fn, pytorch_fn, train_step_fn
from yolo_attn.bench.stats import median_of_all, round_ratios
from yolo_attn.bench.timing import interleaved, load_average, machine_info, torch_threads
from yolo_attn.bench.train import SHORT_BUDGET_RECIPE, TrainBudget, parse_train_args, train_all
from yolo_attn.bench.zoo import Entry, build, discover, export, guard

DESCRIPTION = (
    "Compare stock YOLOv8n/YOLO11n/YOLO26n with every n-scale yolo_attn detection YAML: params, GFLOPs, CPU "
    "latency (PyTorch, ONNX Runtime), training-step time and mAP after a fixed training budget over several seeds."
)


def _summarise(samples: dict[str, list[list[float]]], entries: list[Entry], key: str) -> None:
    """Store median ms and the median over rounds of the per-round ratio to the family's stock model.

    `key` names the measurement: "pytorch", "onnx", ... at the first image size, "onnx@1280" at a further one.
    """
    stock = {e.family: e.name for e in entries if e.stock}
    for e in entries:
        if e.name not in samples or not samples[e.name]:
            continue
        rounds = samples[e.name]
        e.results[f"{key}_ms"] = median_of_all(rounds)
        e.results[f"{key}_samples_ms"] = rounds
        ref = samples.get(stock.get(e.family, ""))
        if ref and len(ref) == len(rounds):
            ratios = round_ratios(rounds, ref)
            e.results[f"{key}_ratio"] = statistics.median(ratios)
            e.results[f"{key}_ratios"] = ratios


def _guarded(entries: list[Entry], what: str, make: Callable[[Entry], Any]) -> dict[str, Any]:
    """`make(entry)` by entry name, for the entries where it did not fail (a failure is recorded on its entry)."""
    made = {}
    for e in entries:
        fn = guard(e, what, lambda e=e: make(e))
        if fn is not None:
            made[e.name] = fn
    return made


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """Options of the models mode."""
    ap.add_argument("--data", default="synth-shapes.yaml", help="dataset YAML for the mAP training runs")
    ap.add_argument("--models", nargs="+", default=None, help="shell patterns selecting models (default: all)")
    ap.add_argument("--out", default="runs/yolo_attn_benchmark", help="output folder")
    ap.add_argument("--epochs", type=int, default=3, help="training epochs per run")
    ap.add_argument("--imgsz-train", type=int, default=128, help="training and validation image size")
    ap.add_argument("--batch", type=int, default=16, help="training batch size")
    ap.add_argument("--fraction", type=float, default=1.0, help="fraction of the train split used")
    ap.add_argument(
        "--train-args",
        nargs="*",
        default=list(SHORT_BUDGET_RECIPE),
        metavar="KEY=VALUE",
        help="Ultralytics train arguments for the mAP runs (replace the default; none: Ultralytics' defaults)",
    )
    ap.add_argument("--seeds", type=int, default=3, help="training runs per model (seeds 0, 1, ...)")
    ap.add_argument("--skip-train", action="store_true", help="no training runs (no mAP columns)")
    ap.add_argument(
        "--imgsz-latency",
        "--imgsz",
        type=int,
        nargs="+",
        default=[640],
        help="inference image size(s) for latency and FLOPs: the first for the main and cost tables, every one for "
        "the scaling table (e.g. 640 1280 1920)",
    )
    ap.add_argument("--rounds", type=int, default=3, help="interleaved latency rounds")
    ap.add_argument("--runs", type=int, default=5, help="timed inferences per model per round")
    ap.add_argument("--warmup", type=int, default=1, help="untimed inferences per model per round")
    ap.add_argument("--skip-onnx", action="store_true", help="no ONNX export / ONNX Runtime latency")
    ap.add_argument(
        "--skip-openvino", action="store_true", help="no OpenVINO export / latency (skipped anyway if not installed)"
    )
    ap.add_argument("--compile", action="store_true", help="also time PyTorch inference under torch.compile")
    ap.add_argument(
        "--memory",
        action="store_true",
        help="also measure peak memory of one inference per runtime and image size and of one train step, each in "
        "a fresh process (slow: one process per model, runtime and size)",
    )
    ap.add_argument("--step-batch", type=int, default=4, help="training-step batch size")
    ap.add_argument("--imgsz-step", type=int, default=320, help="training-step image size")
    ap.add_argument("--step-rounds", type=int, default=3, help="interleaved training-step rounds")
    ap.add_argument("--step-runs", type=int, default=2, help="timed training steps per model per round")
    ap.add_argument(
        "--threads", type=int, default=1, help="CPU threads for latency, training steps and each training run"
    )
    ap.add_argument("--jobs", type=int, default=None, help="parallel training runs (default: cores // threads)")
    ap.add_argument("--verbose", action="store_true", help="show Ultralytics' training output")


def run(args: argparse.Namespace) -> list[Entry]:
    """Measure every selected model (the torch thread count is restored afterwards); return the entries."""
    with torch_threads(args.threads):
        return _run(args)


def _latency(
    args: argparse.Namespace, entries: list[Entry], imgsz: int, tmp: Path, suffix: str
) -> dict[str, dict[str, str]]:
    """PyTorch (fused eval), optionally compiled, ONNX Runtime and OpenVINO latency at one image size.

    Returns the exported files, by model name and runtime ("onnx", "openvino").
    """
    exported: dict[str, dict[str, str]] = {}
    fused = _guarded(entries, "build", lambda e: build(e).model.fuse(verbose=False).eval())
    label = f" {imgsz} px" if suffix else ""
    samples = interleaved({n: pytorch_fn(m, imgsz) for n, m in fused.items()}, args.rounds, args.runs, args.warmup,
                          f"PyTorch latency{label}")  # fmt: skip
    _summarise(samples, entries, "pytorch" + suffix)
    # PyTorch latency under torch.compile (Inductor, as Ultralytics' `compile=True`), compiled before timing.
    if args.compile:
        built = [e for e in entries if e.name in fused]
        compiled = _guarded(built, "torch.compile", lambda e, m=fused: compiled_fn(m[e.name], imgsz))
        samples = interleaved(compiled, args.rounds, args.runs, args.warmup, f"PyTorch compiled latency{label}")
        _summarise(samples, entries, "pytorch_compiled" + suffix)
        del compiled
    del fused
    runtimes = [] if args.skip_onnx else [("onnx", "ONNX Runtime", onnx_fn)]
    if not args.skip_openvino and has_openvino():
        runtimes.append(("openvino", "OpenVINO", openvino_fn))
    for fmt, title, make in runtimes:
        fns = {}
        for e in entries:
            path = guard(e, f"{fmt} export", lambda e=e, f=fmt: export(e, imgsz, tmp, f))
            if path is not None:
                exported.setdefault(e.name, {})[fmt] = str(path)
                fn = guard(e, title, lambda p=path, m=make: m(p, imgsz, args.threads))
                if fn is not None:
                    fns[e.name] = fn
        samples = interleaved(fns, args.rounds, args.runs, args.warmup, f"{title} latency{label}")
        _summarise(samples, entries, fmt + suffix)
        del fns
    return exported


def _memory(
    args: argparse.Namespace, entries: list[Entry], imgsz: int, suffix: str, exported: dict[str, dict[str, str]]
) -> None:
    """Peak memory of one inference per runtime (from the files `_latency` exported) and of one train step (batch 2)."""
    for e in entries:
        sources = {"pytorch": e.yaml, **exported.get(e.name, {})}
        for kind, source in sources.items():
            peak = guard(e, f"{kind} memory", lambda k=kind, s=source: peak_memory(k, s, imgsz, args.threads))
            if peak is not None:
                e.results[f"{kind}{suffix}_peak_bytes"] = peak
        peak = guard(e, "train step memory", lambda e=e: peak_memory("train_step", e.yaml, imgsz, args.threads, 2))
        if peak is not None:
            e.results[f"train_step{suffix}_peak_bytes"] = peak


def _run(args: argparse.Namespace) -> list[Entry]:
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = list(dict.fromkeys(args.imgsz_latency))
    entries = discover(args.models)
    machine = machine_info()
    print(f"benchmark: {len(entries)} models: {', '.join(e.name for e in entries)}", flush=True)

    # 1. Params and FLOPs of the fused models (FLOPs at every latency size).
    for e in entries:

        def measure(e=e):
            model = build(e).model.fuse(verbose=False).eval()
            e.results["params"] = sum(p.numel() for p in model.parameters())
            e.results["gflops_ultralytics"] = ultralytics_flops(model, sizes[0]) / 1e9
            e.results["gflops_detail"] = flop_breakdown(model, sizes[0])
            for i, size in enumerate(sizes):
                e.results["gflops_full" + (f"@{size}" if i else "")] = count_flops(model, size) / 1e9

        guard(e, "build/FLOPs", measure)
    print(f"benchmark: params and FLOPs done ({time.perf_counter() - t0:.0f}s)", flush=True)

    # 2. Latency per runtime and image size (the first size unsuffixed); with --memory, peak memory beside it.
    with tempfile.TemporaryDirectory(prefix="yolo_attn_export_") as tmp:
        for i, size in enumerate(sizes):
            suffix = f"@{size}" if i else ""
            exported = _latency(args, entries, size, Path(tmp), suffix)
            print(f"benchmark: latency at {size} px done ({time.perf_counter() - t0:.0f}s)", flush=True)
            if args.memory:
                _memory(args, entries, size, suffix, exported)
                print(f"benchmark: memory at {size} px done ({time.perf_counter() - t0:.0f}s)", flush=True)

    # 3. Training-step time.
    steps = _guarded(entries, "train step", lambda e: train_step_fn(build(e).model, args.step_batch, args.imgsz_step))
    samples = interleaved(steps, args.step_rounds, args.step_runs, 1, "training step")
    _summarise(samples, entries, "train_step")
    del steps

    # 4. mAP after a fixed training budget, seed-major so drift and warm caches hit every model alike.
    settings = {k: v for k, v in vars(args).items() if k not in {"models"}}
    settings.update(imgsz_latency=sizes[0], imgsz_sizes=sizes, openvino=not args.skip_openvino and has_openvino())
    settings.update(models=[e.name for e in entries], seeds=list(range(args.seeds)), train=not args.skip_train)
    if not args.skip_train:
        run_seconds = train_all(entries, budget(args), out)
        settings["train_seconds_mean"] = statistics.fmean(run_seconds) if run_seconds else float("nan")
        cpu = [t for e in entries for t in e.results.get("train_cpu_seconds", [])]
        settings["train_cpu_seconds_mean"] = statistics.fmean(cpu) if cpu else float("nan")

    machine["loadavg_end"] = load_average()
    settings["started"] = started
    settings["total_seconds"] = time.perf_counter() - t0
    write_markdown(entries, settings, machine, out / "benchmark.md")
    write_cost_tables(entries, settings, machine, out / "cost.md")
    write_raw(entries, settings, machine, out)
    write_chart(entries, out / "benchmark.png")
    print(f"benchmark: done in {settings['total_seconds'] / 60:.1f} min -> {out / 'benchmark.md'}", flush=True)
    return entries


def budget(args: argparse.Namespace) -> TrainBudget:
    """Return the training budget of the mAP runs from the models mode's options."""
    return TrainBudget(
        data=args.data, epochs=args.epochs, imgsz=args.imgsz_train, batch=args.batch, seeds=args.seeds,
        jobs=args.jobs, threads=args.threads, fraction=args.fraction, verbose=args.verbose, train_args=args.train_args,
    )  # fmt: skip


def main(args: argparse.Namespace) -> int:
    """Run the models mode with parsed options; exit status 1 when any measurement failed."""
    args.train_args = parse_train_args(args.train_args)
    if args.jobs is None:
        args.jobs = max(1, (os.cpu_count() or 1) // args.threads)
    entries = run(args)
    print((Path(args.out) / "benchmark.md").read_text(encoding="utf-8"))
    print((Path(args.out) / "cost.md").read_text(encoding="utf-8"))
    return 1 if any(e.errors for e in entries) else 0
