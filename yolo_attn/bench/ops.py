"""Operators mode: each plugin operator against a C->C 3x3 Ultralytics `Conv` (+BN+SiLU) at YOLO's feature shapes.

Usage::

    yolo-attn-bench ops [--scales n s] [--levels P3 P4 P5] [--imgsz 640] [--compile] [--out DIR] ...

Per level (P3/P4/P5 = stride 8/16/32 of an `--imgsz` input, with YOLOv8's widths 256/512/1024 scaled by the model
scale: n 64/128/256, s 128/256/512 channels) and per operator it measures:

- full FLOPs of one forward pass (`count_flops`) of the operator as inference runs it (Conv+BN folded);
- inference time (eval, folded, `torch.inference_mode`) and train-step time (train mode: forward, then backward of
  a fixed random output gradient into the parameters and the input);
- each time also per FLOP as a ratio to the 3x3 conv: (t_op / t_conv) / (FLOPs_op / FLOPs_conv), from the same
  interleaved rounds (median over rounds of the per-round ratio, min-max over rounds beside it);
- the share of inference and train-step time spent outside conv/matmul kernels (elementwise passes, norms, copies),
  and from it the kernel floor: the per-FLOP ratio the operator would have if those passes were free;
- with `--compile`: the speed-up of `torch.compile(fullgraph=True)` over eager, inference and train step.

It writes `ops.md` (a Markdown table with machine and settings) and `ops.json` (every raw sample) into `--out`. The
kernel research that needs private torch APIs (train-step peak memory from the profiler's allocator events, the 1x1
conv kernel PyTorch picks against oneDNN called directly) is the development script `dev/kernels.py` of the source
tree, not part of the package.
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import json
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from yolo_attn.bench.flops import count_flops
from yolo_attn.bench.runners import backward_fn, infer_fn
from yolo_attn.bench.stats import median_of_all, round_ratios
from yolo_attn.bench.text import machine_line
from yolo_attn.bench.timing import interleaved, load_average, machine_info, torch_threads

DESCRIPTION = (
    "Time each yolo_attn operator (inference and train step), count its FLOPs, and "
    "compare its time per FLOP with a 3x3 Conv+BN+SiLU of the same shape, at YOLO's P3/P4/P5 feature maps."
)
REFERENCE = "Conv 3x3"
LEVELS = {"P3": (8, 256), "P4": (16, 512), "P5": (32, 1024)}  # level -> (stride, YOLOv8 channels before scaling)
WIDTHS = {"n": 0.25, "s": 0.5, "m": 0.75, "l": 1.0}  # YOLOv8 width multiples


def operators() -> dict[str, Callable[[int], Any]]:
    """Reference conv and every built-in operator of the operator table, by name: channels C -> a C -> C module.

    A channel-keeping operator is built as `cls(C, C)`, a CSP twin as `cls(C, C, 1)` (one CoT bottleneck at C/2, as in
    yolov8n-c2f-cot).
    """
    from ultralytics.nn.modules import Conv

    from yolo_attn import operators as table

    out = {REFERENCE: lambda c: Conv(c, c, 3)}
    for op in table.BUILTINS:
        cls = table.load(op.name)
        out[op.name] = (lambda c, cls=cls: cls(c, c)) if op.keeps_channels else (lambda c, cls=cls: cls(c, c, 1))
    return out


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """Options of the operators mode."""
    ap.add_argument("--ops", nargs="+", default=None, help="shell patterns selecting operators (default: all)")
    ap.add_argument("--scales", nargs="+", default=["n", "s"], choices=list(WIDTHS), help="model width scales")
    ap.add_argument("--levels", nargs="+", default=list(LEVELS), choices=list(LEVELS), help="feature levels")
    ap.add_argument("--imgsz", type=int, default=640, help="input image size the feature maps belong to")
    ap.add_argument("--batch", type=int, default=1, help="batch size, inference and train step")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--runs", type=int, default=5, help="timed calls per module per round")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls per module per round")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile(fullgraph=True) (slow to build)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads")
    ap.add_argument("--out", default="runs/yolo_attn_benchmark", help="output folder")


def fold_bn(module: Any) -> Any:
    """Fold every Ultralytics Conv's BN into its conv, then the operators' own norms and scales (`fold_norms`), as
    `model.fuse()` does for inference with the plugin registered."""
    from ultralytics.nn.modules import Conv
    from ultralytics.utils.torch_utils import fuse_conv_and_bn

    from yolo_attn.fusion import fold_norms

    for m in module.modules():
        if isinstance(m, Conv) and hasattr(m, "bn"):
            m.conv = fuse_conv_and_bn(m.conv, m.bn)
            delattr(m, "bn")
            m.forward = m.forward_fuse
    fold_norms(module)
    return module


# Kernels that do the multiply-accumulate work (convolutions, matrix products, fused attention, and their backward
# passes); everything else an operator runs (elementwise arithmetic, norms, pads, concatenations, copies) is a pass
# over memory with few FLOPs. `aten::convolution_backward` is where oneDNN's conv gradients show their self time.
GEMM_KERNELS = (
    "aten::mkldnn_convolution",
    "aten::_slow_conv2d_forward",
    "aten::convolution_backward",
    "aten::_slow_conv2d_backward",
    "aten::addmm",
    "aten::mm",
    "aten::bmm",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
)


def memory_pass_share(run: Callable[[], Any], calls: int = 3) -> float:
    """Fraction of the CPU time of `run` spent outside `GEMM_KERNELS` (self time of every op, over a few calls).

    The rest, `1 - share`, is the time of the multiply-accumulate kernels: an operator's time per FLOP can fall no
    lower than that share of it without faster convolution or matrix kernels (its "kernel floor").
    """
    from torch.profiler import ProfilerActivity, profile

    run()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            run()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    gemm = sum(e.self_cpu_time_total for e in events if e.key in GEMM_KERNELS)
    return 1 - gemm / total if total else float("nan")


def ratios(samples: dict[str, list[list[float]]], name: str, scale: float = 1.0, ref: str = REFERENCE) -> list[float]:
    """Per round: median time of `name` / median time of `ref` (default: the reference conv), divided by `scale`."""
    return round_ratios(samples[name], samples[ref], scale)


def feature_shape(scale: str, level: str, imgsz: int) -> tuple[int, int]:
    """Channels and side of YOLOv8's feature map at `level` for model `scale` and an `imgsz` input."""
    stride, c0 = LEVELS[level]
    return int(c0 * WIDTHS[scale]), imgsz // stride


def measure_level(args: argparse.Namespace, scale: str, level: str, names: list[str]) -> list[dict[str, Any]]:
    """Measure the reference conv and the operators `names` at one (scale, level); return one row per module."""
    import torch

    c, s = feature_shape(scale, level, args.imgsz)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, c, s, s, generator=g)
    grad = torch.randn(args.batch, c, s, s, generator=g)
    factories = operators()
    rows, infer, step = [], {}, {}
    if args.compile:
        torch.compiler.reset()  # every level recompiles each forward: keep under Dynamo's per-function recompile limit
    for name in [REFERENCE, *names]:
        torch.manual_seed(0)
        train = factories[name](c).train()
        folded = fold_bn(copy.deepcopy(train)).eval()
        infer[name], step[name] = infer_fn(folded, x), backward_fn(train, x, grad)
        if args.compile:
            infer[f"{name} compiled"] = infer_fn(torch.compile(folded, fullgraph=True), x)
            step[f"{name} compiled"] = backward_fn(torch.compile(train, fullgraph=True), x, grad)
            infer[f"{name} compiled"](), step[f"{name} compiled"]()  # compile now, outside the timed rounds
        rows.append(
            {
                "scale": scale,
                "level": level,
                "shape": [c, s, s],
                "operator": name,
                "flops": count_flops(folded, x),
                "infer_memory_pass_share": memory_pass_share(infer[name]),
                "train_memory_pass_share": memory_pass_share(step[name]),
            }
        )
    label = f"{scale} {level} {c}x{s}x{s}"
    samples = {
        "infer": interleaved(infer, args.rounds, args.runs, args.warmup, f"ops {label} inference"),
        "train": interleaved(step, args.rounds, args.runs, args.warmup, f"ops {label} train step"),
    }
    ref_flops = rows[0]["flops"]
    for row in rows:
        name, flop_ratio = row["operator"], row["flops"] / ref_flops
        for key, timed in samples.items():
            row[f"{key}_ms"] = median_of_all(timed[name])
            row[f"{key}_samples_ms"] = timed[name]
            row[f"{key}_time_ratios"] = ratios(timed, name)
            row[f"{key}_flop_ratios"] = ratios(timed, name, flop_ratio)
            if args.compile:
                row[f"{key}_compiled_speedups"] = [1 / r for r in ratios(timed, f"{name} compiled", ref=name)]
                row[f"{key}_compiled_flop_ratios"] = ratios(
                    timed, f"{name} compiled", flop_ratio, ref=f"{REFERENCE} compiled"
                )
    return rows


def _cell(values: list[float]) -> str:
    """Median over rounds, with the min-max range when there is more than one round."""
    med = statistics.median(values)
    return f"{med:.2f}× ({min(values):.2f}–{max(values):.2f})" if len(values) > 1 else f"{med:.2f}×"


def _floor(row: dict[str, Any], key: str) -> float:
    """Per FLOP vs conv of the operator's conv/matmul kernels alone: its ratio if every other pass were free."""
    return statistics.median(row[f"{key}_flop_ratios"]) * (1 - row[f"{key}_memory_pass_share"])


def markdown(rows: list[dict[str, Any]], settings: dict, machine: dict) -> str:
    """The operators table, with machine, load and method."""
    compiled = settings["compile"]
    head = "| scale | level C×H×W | operator | GFLOPs | infer ms | infer per FLOP vs conv | train step ms "
    head += "| train per FLOP vs conv | time vs conv infer / train | time outside conv/matmul infer / train "
    head += "| kernel floor per FLOP infer / train |"
    if compiled:
        head += " compiled speed-up infer / train | compiled per FLOP vs compiled conv infer / train |"
    lines = [head, "|" + " --- |" * 3 + " ---: |" * (head.count("|") - 4)]
    for r in rows:
        ref = r["operator"] == REFERENCE
        cells = [
            r["scale"],
            f"{r['level']} {'×'.join(map(str, r['shape']))}",
            f"**{r['operator']}**" if ref else r["operator"],
            f"{r['flops'] / 1e9:.3f}",
            f"{r['infer_ms']:.2f}",
            "reference" if ref else _cell(r["infer_flop_ratios"]),
            f"{r['train_ms']:.2f}",
            "reference" if ref else _cell(r["train_flop_ratios"]),
            "reference"
            if ref
            else f"{statistics.median(r['infer_time_ratios']):.2f} / {statistics.median(r['train_time_ratios']):.2f}",
            f"{100 * r['infer_memory_pass_share']:.0f} % / {100 * r['train_memory_pass_share']:.0f} %",
            "reference" if ref else f"{_floor(r, 'infer'):.2f}× / {_floor(r, 'train'):.2f}×",
        ]
        if compiled:
            med = {k: statistics.median(r[k]) for k in r if "compiled" in k}
            cells.append(f"{med['infer_compiled_speedups']:.2f}× / {med['train_compiled_speedups']:.2f}×")
            cells.append(
                "reference"
                if ref
                else f"{med['infer_compiled_flop_ratios']:.2f}× / {med['train_compiled_flop_ratios']:.2f}×"
            )
        lines.append("| " + " | ".join(cells) + " |")
    s = settings
    return "\n".join(
        [
            "# yolo_attn operators",
            "",
            f"{machine_line(machine)} Run {s['started']}, {s['total_seconds'] / 60:.1f} min.",
            "",
            *lines,
            "",
            f"- Feature maps of a {s['imgsz']}² input, batch {s['batch']}, {s['threads']} thread(s). GFLOPs: "
            "`count_flops` of the operator with Conv+BN folded (multiply-accumulate = 2 FLOPs, elementwise "
            "arithmetic, reductions and norms included).",
            "- Inference: eval mode, BN folded, `torch.inference_mode`. Train step: train mode, forward + backward "
            "of a fixed random output gradient (parameter and input gradients).",
            f"- Per FLOP vs conv: (t_op / t_conv) / (FLOPs_op / FLOPs_conv), t per round the median of "
            f"{s['runs']} calls, median over {s['rounds']} interleaved rounds (min–max over rounds in brackets); "
            "time vs conv: the plain time ratio. The conv is Ultralytics' `Conv(C, C, 3)` (+BN+SiLU).",
            "- Time outside conv/matmul: share of the CPU time (torch.profiler self times) of inference / of the train "
            "step spent in other kernels: elementwise arithmetic, norms, pads, concatenations, copies; passes over "
            "memory that carry few FLOPs, so they raise the time per FLOP. Kernel floor: per FLOP vs conv × (1 − that "
            "share), the time per FLOP of the operator's conv/matmul kernels alone, i.e. the lowest ratio it could "
            "reach if every other pass were free.",
            "- Peak memory of the train step and the 1×1-conv kernel table come from the development script "
            "`dev/kernels.py` (it uses private torch APIs, so it is not part of the package); peak memory of whole "
            "models per runtime: `yolo-attn-bench models --memory`.",
        ]
        + (
            [
                "- Compiled: `torch.compile(fullgraph=True)` (Inductor, compiled before the timed rounds), timed "
                "in the same rounds; speed-up = eager time / compiled time; per FLOP against the compiled conv."
            ]
            if compiled
            else []
        )
    )


def main(args: argparse.Namespace) -> int:
    """Run the operators mode with parsed options and write `ops.md` and `ops.json` into `args.out`."""

    t0 = time.perf_counter()
    names = [n for n in operators() if n != REFERENCE]
    if args.ops:
        names = [n for n in names if any(fnmatch.fnmatch(n, p) for p in args.ops)]
        if not names:
            raise SystemExit(f"benchmark: --ops {' '.join(args.ops)} matches none of {list(operators())[1:]}")
    machine = machine_info()
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    with torch_threads(args.threads):
        rows = [r for scale in args.scales for level in args.levels for r in measure_level(args, scale, level, names)]
    machine["loadavg_end"] = load_average()
    settings = {**vars(args), "started": started, "total_seconds": time.perf_counter() - t0}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(rows, settings, machine)
    (out / "ops.md").write_text(text + "\n", encoding="utf-8")
    raw = {"settings": settings, "machine": machine, "rows": rows}
    (out / "ops.json").write_text(json.dumps(raw, indent=1))
    print(text)
    return 0
