"""Profile mode: where a plugin model's time over its FLOPs goes, per plugin layer and kind of node.

Usage::

    yolo-attn-bench profile [--models yolov8n-cot-neck ...] [--imgsz 640] [--runs 20] [--out DIR]

For each selected plugin model and the stock model of its family, each exported as the models mode exports it, it runs
the runtimes' own per-node profilers on one thread (ONNX Runtime's session profiling, OpenVINO's `PERF_COUNT` at the
models mode's precision) and reports per plugin layer:

- its time, and its FLOPs-fair time: the stock model's time per FLOP times the layer's FLOPs (`count_flops` of the
  fused model), so a layer running at the stock model's speed per FLOP has an excess of 0;
- how its time splits over kinds of node: convolutions and matrix products, data layout (reorders, concatenations,
  slices, reshapes), norms and reductions, and the other elementwise passes.

A last row per model gives the whole model against the stock model times the FLOPs ratio. Profiled times carry the
profilers' own overhead per node, so they add up to more than a plain timed call; the shares and the per-layer
excess are what they are for, the latency ratios are the models mode's. It writes `profile.md` into `--out`.
"""

from __future__ import annotations

import argparse
import collections
import re
import tempfile
from pathlib import Path
from typing import Any

from yolo_attn.bench.flops import count_flops
from yolo_attn.bench.runners import OPENVINO_PRECISION, has_openvino, onnx_session, openvino_model, random_images
from yolo_attn.bench.text import machine_line
from yolo_attn.bench.timing import load_average, machine_info
from yolo_attn.bench.zoo import Entry, build, discover, export

DESCRIPTION = (
    "Profile plugin models node by node in ONNX Runtime and OpenVINO (one thread) and show, per plugin layer, its time "
    "against the stock model's time per FLOP and how it splits over convolutions, data layout, norms and elementwise "
    "passes."
)
KINDS = {  # node kind -> op types of ONNX Runtime (after its graph optimisation) and OpenVINO (its node types)
    "conv": {"Conv", "FusedConv", "NhwcConv", "Convolution", "GroupConvolution", "MatMul", "Gemm", "FullyConnected"},
    "layout": set(
        "ReorderInput ReorderOutput Reorder Concat Slice StridedSlice Split VariadicSplit Reshape Transpose Gather Pad "
        "Expand Tile Squeeze Unsqueeze Identity".split()
    ),
    "norm": {"InstanceNormalization", "GroupNormalization", "LayerNormalization", "MVN", "ReduceMean", "ReduceSum"},
}
KIND_NAMES = (*KINDS, "elementwise")  # every other node type is an elementwise pass
_LAYER = re.compile(r"model[./](\d+)\b")  # "/model.16/key/conv/Conv" (ONNX), "__module.model.16.key..." (OpenVINO)


def kind_of(op_type: str) -> str:
    """Return the kind ("conv", "layout", "norm" or "elementwise") of a runtime's node type."""
    return next((k for k, ops in KINDS.items() if op_type in ops), "elementwise")


def layer_of(node: str) -> int | None:
    """Return the model layer index a node name carries, or None (nodes the runtime added between layers)."""
    m = _LAYER.search(node)
    return int(m.group(1)) if m else None


def onnx_profile(path: str | Path, imgsz: int, runs: int) -> dict[str, tuple[str, float]]:
    """Return node name -> (op type, ms per call) from ONNX Runtime's profiler, one thread, after 3 warm-up calls."""
    import json

    prefix = str(Path(tempfile.gettempdir()) / "yolo_attn_profile")
    session = onnx_session(path, 1, enable_profiling=True, profile_file_prefix=prefix)
    feed = {session.get_inputs()[0].name: random_images(1, imgsz)}
    for _ in range(3 + runs):
        session.run(None, feed)
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    calls: dict[str, tuple[str, list[float]]] = {}
    for ev in events:  # in call order, so each node's last `runs` events are the timed calls
        if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time"):
            name = ev["name"][: -len("_kernel_time")]
            calls.setdefault(name, (ev["args"].get("op_name", "?"), []))[1].append(ev["dur"] / 1e3)
    return {name: (op, sum(ms[-runs:]) / runs) for name, (op, ms) in calls.items()}


def openvino_profile(path: str | Path, imgsz: int, runs: int) -> dict[str, tuple[str, float]]:
    """Return node name -> (node type, ms per call) from OpenVINO's performance counters, one thread."""
    request = openvino_model(path, 1, PERF_COUNT=True).create_infer_request()
    x = random_images(1, imgsz)
    for _ in range(3):
        request.infer({0: x})
    totals: dict[str, tuple[str, float]] = {}
    for _ in range(runs):
        request.infer({0: x})
        for p in request.profiling_info:
            ms = p.real_time.total_seconds() * 1e3 / runs
            totals[p.node_name] = (p.node_type, totals.get(p.node_name, (p.node_type, 0.0))[1] + ms)
    return totals


def layer_rows(
    nodes: dict[str, tuple[str, float]], layers: dict[int, tuple[str, float]], ms_per_gflop: float
) -> list[dict[str, Any]]:
    """Per plugin layer (index -> (module, GFLOPs)): its ms, its FLOPs-fair ms and its ms per node kind."""
    rows = []
    for i, (module, gflops) in layers.items():
        kinds = collections.Counter()
        for name, (op, ms) in nodes.items():
            if layer_of(name) == i:
                kinds[kind_of(op)] += ms
        total = sum(kinds.values())
        fair = gflops * ms_per_gflop
        rows.append({"layer": i, "module": module, "gflops": gflops, "ms": total, "fair_ms": fair, **kinds})
    return rows


def _plugin_layers(entry: Entry, imgsz: int) -> tuple[float, dict[int, tuple[str, float]]]:
    """Full GFLOPs of the fused model, and per plugin layer index its module type and GFLOPs."""
    model = build(entry).model.fuse(verbose=False).eval()
    total, by_module = count_flops(model, imgsz, by_module=True)
    layers = {}
    for i, m in enumerate(model.model):
        if str(getattr(m, "type", "")).startswith("yolo_attn"):
            flops = next((f for name, f in by_module.items() if name.endswith(f"model.{i}")), 0)
            layers[i] = (type(m).__name__, flops / 1e9)
    return total / 1e9, layers


RUNTIMES = {"onnx": ("ONNX Runtime", onnx_profile), "openvino": (f"OpenVINO {OPENVINO_PRECISION}", openvino_profile)}


def profile(entries: list[Entry], imgsz: int, runs: int, folder: Path) -> list[str]:
    """Markdown lines: per runtime and plugin model, the plugin layers' profile and the whole model's excess."""
    runtimes = {k: v for k, v in RUNTIMES.items() if k == "onnx" or has_openvino()}
    stock = {e.family: e for e in entries if e.stock}
    flops = {e.name: _plugin_layers(e, imgsz) for e in entries}
    lines = []
    for fmt, (title, run) in runtimes.items():
        totals = {e.name: run(export(e, imgsz, folder, fmt), imgsz, runs) for e in entries}
        lines += [f"### {title}", "", "| model | layer | module | GFLOPs | ms | FLOPs-fair ms | excess ms | "
                  "conv | layout | norm | elementwise |", "| --- | ---: | --- |" + " ---: |" * 8]  # fmt: skip
        for e in entries:
            if e.stock:
                continue
            ref = stock[e.family]
            ref_ms = sum(ms for _, ms in totals[ref.name].values())
            ms_per_gflop = ref_ms / flops[ref.name][0]
            for r in layer_rows(totals[e.name], flops[e.name][1], ms_per_gflop):
                shares = " | ".join(f"{r.get(k, 0.0) / r['ms']:.0%}" if r["ms"] else "–" for k in KIND_NAMES)
                lines.append(
                    f"| {e.name} | {r['layer']} | {r['module']} | {r['gflops']:.3f} | {r['ms']:.2f} | "
                    f"{r['fair_ms']:.2f} | {r['ms'] - r['fair_ms']:+.2f} | {shares} |"
                )
            ms = sum(t for _, t in totals[e.name].values())
            fair = ref_ms * flops[e.name][0] / flops[ref.name][0]
            lines.append(f"| {e.name} | all | (vs {ref.name} × FLOPs ratio) | {flops[e.name][0]:.2f} | {ms:.1f} | "
                         f"{fair:.1f} | {ms - fair:+.1f} | | | | |")  # fmt: skip
        lines.append("")
    return lines


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """Options of the profile mode."""
    ap.add_argument("--models", nargs="+", default=None, help="shell patterns selecting models (default: all)")
    ap.add_argument("--imgsz", type=int, default=640, help="inference image size")
    ap.add_argument("--runs", type=int, default=20, help="profiled calls per model and runtime (after 3 warm-up)")
    ap.add_argument("--out", default="runs/yolo_attn_profile", help="output folder")


def main(args: argparse.Namespace) -> int:
    """Run the profile mode with parsed options; write and print `profile.md`."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    entries = discover(args.models)
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="yolo_attn_export_") as tmp:
        body = profile(entries, args.imgsz, args.runs, Path(tmp))
    machine["loadavg_end"] = load_average()
    head = [
        "# Where the plugin layers' time goes",
        "",
        machine_line(machine) + f" Batch 1, {args.imgsz}² input, one thread, {args.runs} profiled calls.",
        "",
        "- ms: the layer's nodes in the runtime's own profiler (with its overhead per node); FLOPs-fair ms: the stock "
        "model's profiled ms per full GFLOP times the layer's GFLOPs; the shares split the layer's ms by node kind.",
        "",
    ]
    text = "\n".join(head + body) + "\n"
    (out / "profile.md").write_text(text, encoding="utf-8")
    print(text)
    return 0
