"""Kernel research beside `yolo-attn-bench ops` (development script, not shipped: it uses private torch APIs).

Usage (from the source tree, in an environment where yolo_attn is installed)::

    python dev/kernels.py [--scales n s] [--levels P3 P4 P5] [--imgsz 640] [--out DIR]

Two tables, written to `--out/kernels.md` and printed:

- peak memory of each operator's train step (and of the reference 3x3 conv): the highest running sum of the CPU
  allocator events that `torch.profiler(profile_memory=True)` records during one step, i.e. what the step allocates on
  top of what was live before it (activations kept for backward, gradients, temporaries). It reads the profiler's
  raw Kineto events (`prof.profiler.kineto_results`), an undocumented interface;
- a C->C 1x1 conv per level on the kernel PyTorch dispatches it to and on oneDNN called directly
  (`torch.mkldnn_convolution`, also undocumented). With one thread and a batch below 16 PyTorch runs 1x1 convs on
  its own GEMM path (THNN, `_slow_conv2d_forward`) by design (`ConvParams::use_mkldnn`).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from yolo_attn.bench.ops import (
    GEMM_KERNELS,
    LEVELS,
    REFERENCE,
    WIDTHS,
    feature_shape,
    operators,
    ratios,
)
from yolo_attn.bench.runners import backward_fn
from yolo_attn.bench.timing import interleaved, torch_threads


def peak_step_memory(step: Callable[[], Any]) -> int:
    """Bytes: the peak of the running sum of CPU allocations and frees recorded during one call of `step`."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns()
    )
    live = peak = 0
    for e in events:
        live += e.nbytes()  # negative for a free
        peak = max(peak, live)
    return peak


def peak_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Train-step peak memory of the reference conv and every operator at every (scale, level)."""
    rows = []
    for scale in args.scales:
        for level in args.levels:
            c, s = feature_shape(scale, level, args.imgsz)
            g = torch.Generator().manual_seed(0)
            x, grad = torch.randn(1, c, s, s, generator=g), torch.randn(1, c, s, s, generator=g)
            for name, factory in operators().items():
                torch.manual_seed(0)
                step = backward_fn(factory(c).train(), x, grad)
                step()  # first call outside: lazy initialisations are not the step's memory
                rows.append({"scale": scale, "level": level, "shape": [c, s, s], "operator": name,
                             "peak_train_bytes": peak_step_memory(step)})  # fmt: skip
    return rows


def pointwise_paths(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Time a C -> C 1x1 conv at every (scale, level) on the kernel PyTorch dispatches it to, and on oneDNN."""
    rows = []
    for scale in args.scales:
        for level in args.levels:
            c, s = feature_shape(scale, level, args.imgsz)
            g = torch.Generator().manual_seed(0)
            x, w = torch.randn(1, c, s, s, generator=g), torch.randn(c, c, 1, 1, generator=g)
            b = torch.zeros(c)
            fns = {
                "dispatched": lambda x=x, w=w, b=b: F.conv2d(x, w, b),
                "oneDNN": lambda x=x, w=w, b=b: torch.mkldnn_convolution(x, w, b, [0, 0], [1, 1], [1, 1], 1),
            }
            with torch.inference_mode():
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    fns["dispatched"]()
                timed = interleaved(fns, args.rounds, args.runs, 1, f"{scale} {level} 1x1 conv kernels")
            rows.append(
                {
                    "scale": scale,
                    "level": level,
                    "shape": [c, s, s],
                    "kernel": next(e.key for e in prof.key_averages() if e.key in GEMM_KERNELS),
                    "dispatched_ms": statistics.median(t for r in timed["dispatched"] for t in r),
                    "onednn_ms": statistics.median(t for r in timed["oneDNN"] for t in r),
                    "onednn_ratios": ratios(timed, "oneDNN", ref="dispatched"),
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scales", nargs="+", default=["n", "s"], choices=list(WIDTHS))
    ap.add_argument("--levels", nargs="+", default=list(LEVELS), choices=list(LEVELS))
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/yolo_attn_dev")
    args = ap.parse_args()
    with torch_threads(args.threads):
        peaks, kernels = peak_rows(args), pointwise_paths(args)
    lines = ["# Kernel research", "", f"Batch 1, {args.threads} thread(s), feature maps of a {args.imgsz}² input.", ""]
    lines += ["| scale | level C×H×W | operator | peak train MiB |", "| --- | --- | --- | ---: |"]
    for r in peaks:
        name = f"**{r['operator']}**" if r["operator"] == REFERENCE else r["operator"]
        lines.append(f"| {r['scale']} | {r['level']} {'×'.join(map(str, r['shape']))} | {name} | "
                     f"{r['peak_train_bytes'] / 2**20:.1f} |")  # fmt: skip
    lines += ["", "| scale | level C×H×W | kernel PyTorch picks | its ms | oneDNN ms | oneDNN / picked |"]
    lines.append("| --- | --- | --- | ---: | ---: | ---: |")
    for r in kernels:
        q = r["onednn_ratios"]
        lines.append(
            f"| {r['scale']} | {r['level']} {'×'.join(map(str, r['shape']))} | `{r['kernel']}` | "
            f"{r['dispatched_ms']:.3f} | {r['onednn_ms']:.3f} | {statistics.median(q):.2f}× "
            f"({min(q):.2f}–{max(q):.2f}) |"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernels.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
