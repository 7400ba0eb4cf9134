"""Export forms of CoT's costliest pieces beyond its FLOPs, timed in ONNX Runtime and OpenVINO (development script).

Usage (from the source tree, in an environment with onnxruntime and openvino)::

    python dev/export_forms.py [--rounds 9] [--runs 5] [--out DIR]

What `yolo-attn-bench profile` shows CoT's layers spend beyond the stock model's time per FLOP, and the alternatives
tried for it, each checked equal to the shipped form and timed interleaved on one thread (ms, median over rounds of
the best of `--runs` calls), at YOLO-n's shapes:

- the local aggregation K2 = sum_d A_d * V(p + d) (shipped: `aggregate_for_export`, k^2 shifted windows of the
  zero-padded values, each multiplied by its map and added, 26 elementwise nodes for k = 3), against
  `unfold`: one depthwise conv with one-hot kernels makes all k^2 windows at once (C -> k^2 C channels, no padding
  nodes), one Mul with the maps and one ReduceSum; and `stack`: the same k^2 slices concatenated, one Mul, one
  ReduceSum. Fewer nodes, but each k^2 times the tensor;
- the static-context conv (3x3, 4 groups, + ReLU), whose groups are 8 channels wide at C = 32 (the C2f_CoT/C3k2_CoT
  bottlenecks of YOLO-n at P3), against the same function with 2 groups or 1 (zero blocks off the diagonal, 2x and
  4x the multiply-adds), for ONNX Runtime's blocked (NCHWc) kernels that need 16 channels per group on AVX-512.

It writes `export_forms.md` into `--out` and prints it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from yolo_attn.bench.runners import OPENVINO_PRECISION, onnx_session, openvino_model
from yolo_attn.bench.text import machine_line
from yolo_attn.bench.timing import load_average, machine_info
from yolo_attn.cot import SHARE_PLANES, aggregate_for_export
from yolo_attn.tracing import zero_pad

K = 3


class Shipped(nn.Module):
    """The shipped export form, `aggregate_for_export`."""

    def forward(self, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return aggregate_for_export(v, a, K)


class Unfold(nn.Module):
    """All k^2 windows from one depthwise conv with one-hot kernels: channel c * k^2 + d is window d of channel c."""

    def __init__(self, c: int):
        super().__init__()
        w = torch.zeros(c * K * K, 1, K, K)
        for d in range(K * K):
            w[d :: K * K, 0, d // K, d % K] = 1
        self.register_buffer("w", w)

    def forward(self, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        b, c, h, w = v.shape
        u = F.conv2d(v, self.w, padding=K // 2, groups=c)  # (B, C k^2, H, W); c = j G + m -> (j, m, d)
        u = u.reshape(b, SHARE_PLANES, -1, h * w) * a.reshape(b, 1, -1, h * w)  # maps (m, d) broadcast over j
        return u.reshape(b, -1, K * K, h * w).sum(2).reshape(b, c, h, w)


class Stack(nn.Module):
    """The k^2 shifted windows of the padded values concatenated on a new axis, one Mul, one ReduceSum."""

    def forward(self, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        b, c, h, w = v.shape
        vp = zero_pad(v, K // 2)
        wins = [
            vp[:, :, d // K : d // K + h, d % K : d % K + w].reshape(b, 1, SHARE_PLANES, -1, w) for d in range(K * K)
        ]
        maps = a.reshape(b, -1, K * K, h * w).transpose(1, 2).reshape(b, K * K, 1, -1, w)  # (B, k^2, 1, G H, W)
        return (torch.cat(wins, 1) * maps).sum(1).reshape(b, c, h, w)


def regrouped(conv: nn.Conv2d, groups: int) -> nn.Conv2d:
    """`conv` (g groups) as a conv with `groups` groups computing the same function (zero blocks off the diagonal)."""
    g = conv.groups
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding, groups=groups)
    ci, co, per = conv.in_channels // g, conv.out_channels // g, g // groups
    w = torch.zeros_like(out.weight)
    for i in range(g):
        w[i * co : (i + 1) * co, (i % per) * ci : (i % per + 1) * ci] = conv.weight[i * co : (i + 1) * co]
    out.weight.data, out.bias.data = w, conv.bias.data.clone()
    return out


def runners(module: nn.Module, inputs: tuple, folder: Path, name: str) -> dict[str, Callable[[], object]]:
    """ONNX Runtime and OpenVINO calls (one thread, the benchmark's settings) of `module` exported with `inputs`."""
    path = folder / f"{name}.onnx"
    torch.onnx.export(module.eval(), inputs, path, opset_version=18, dynamo=False)
    feed = [x.numpy() for x in inputs]
    session = onnx_session(path, 1)
    named = {i.name: x for i, x in zip(session.get_inputs(), feed)}
    compiled = openvino_model(path, 1)
    return {"ONNX Runtime": lambda: session.run(None, named), f"OpenVINO {OPENVINO_PRECISION}": lambda: compiled(feed)}


def best_ms(fn: Callable[[], object], runs: int) -> float:
    """The fastest of `runs` calls, in ms."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return min(times)


def compare(forms: dict[str, nn.Module], inputs: tuple, folder: Path, rounds: int, runs: int) -> dict[str, list]:
    """Check every form against the first, then time all of them interleaved; return ms per runtime and form."""
    with torch.no_grad():
        ref = next(iter(forms.values()))(*inputs)
        for name, m in forms.items():
            torch.testing.assert_close(m(*inputs), ref, atol=1e-4, rtol=1e-4, msg=f"{name} differs")
    calls = {(rt, name): fn for name, m in forms.items() for rt, fn in runners(m, inputs, folder, name).items()}
    for fn in calls.values():
        fn()
    samples = {key: [] for key in calls}
    for r in range(rounds):
        for key in calls if r % 2 == 0 else list(calls)[::-1]:
            samples[key].append(best_ms(calls[key], runs))
    return {key: statistics.median(v) for key, v in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=9, help="interleaved rounds")
    ap.add_argument("--runs", type=int, default=5, help="calls per form and round (the best counts)")
    ap.add_argument("--out", default="runs/export_forms", help="output folder")
    args = ap.parse_args()
    torch.manual_seed(0)
    machine = machine_info()
    lines = [
        "| piece | shape | runtime | " + " | ".join(["form", "ms", "vs shipped"]) + " |",
        "| --- | --- | --- | --- | ---: | ---: |",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for c, hw in ((32, 80), (64, 80), (128, 40), (256, 20)):
            v, a = torch.randn(1, c, hw, hw), torch.randn(1, c // SHARE_PLANES * K * K, hw, hw)
            forms = {"shipped": Shipped(), "unfold": Unfold(c), "stack": Stack()}
            ms = compare(forms, (v, a), folder, args.rounds, args.runs)
            lines += _rows("aggregation", f"{c}×{hw}×{hw}", ms)
        for c, hw in ((32, 80), (32, 40), (64, 80)):
            base = nn.Conv2d(c, c, 3, padding=1, groups=4)
            forms = {"4 groups (shipped)": nn.Sequential(base, nn.ReLU())}
            forms.update({f"{g} group{'s' * (g > 1)}": nn.Sequential(regrouped(base, g), nn.ReLU()) for g in (2, 1)})
            ms = compare(forms, (torch.randn(1, c, hw, hw),), folder, args.rounds, args.runs)
            lines += _rows("static-context conv", f"{c}×{hw}×{hw}", ms)
    machine["loadavg_end"] = load_average()
    head = [
        "# CoT export forms tried",
        "",
        machine_line(machine) + f" One thread, batch 1; ms: median over {args.rounds} interleaved rounds of the best "
        f"of {args.runs} calls.",
        "",
    ]
    text = "\n".join(head + lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "export_forms.md").write_text(text, encoding="utf-8")
    print(text)


def _rows(piece: str, shape: str, ms: dict) -> list[str]:
    shipped = {rt: t for (rt, name), t in ms.items() if name.startswith(("shipped", "4 groups"))}
    return [
        f"| {piece} | {shape} | {rt} | {name} | {t:.3f} | {t / shipped[rt]:.2f}× |"
        for (rt, name), t in sorted(ms.items(), key=lambda kv: kv[0][0])
    ]


if __name__ == "__main__":
    main()
