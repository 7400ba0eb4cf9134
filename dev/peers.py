"""Our operators against the implementations a user would otherwise run (development script, not shipped).

Usage (from the source tree, in an environment where yolo_attn is installed)::

    python dev/peers.py --cotnet PATH/CoTNet --cloformer PATH/CloFormer --coordatt PATH/CoordAttention \
        [--blog-cot FILE.py] [--scales n s] [--levels P3 P4 P5] [--out DIR]

The official code runs from local checkouts of its public repositories (JDAI-CV/CoTNet, qhfan/CloFormer,
houqb/CoordAttention) given on the command line; nothing of it is copied into this repository. Only the classes
compared are taken from their files (by `ast`, so the repositories' training dependencies such as cupy, timm or
efficientnet_pytorch need not be installed); the names those classes use from elsewhere are supplied here:

- CoTNet `CotLayer` (models/cotnet.py): its aggregation `LocalConvolution` is a cupy CUDA kernel, so on CPU it gets
  the textbook unfold aggregation written below (what a CPU user would substitute); `get_act_layer('swish')` is SiLU.
- CloFormer `EfficientAttention` and `AttnMap` (classification/models/blocks.py): `MemoryEfficientSwish` is SiLU
  (the same function). It runs as CloFormer's block runs it, x + mixer(GroupNorm(1, C)(x)), against `AttnConv`'s
  default (the same pre-norm residual form).
- CoordAttention `CoordAtt` (coordatt.py, self-contained).
- The blog `CoTAttention` that YOLO forks copy: give a .py file holding that class (`--blog-cot`).

Per (scale, level) and pair it times inference (eval; ours with Conv+BN folded as `model.fuse()` does, the peers
as they are, since Ultralytics' `fuse()` does not reach their BN layers) and a train step (train mode, forward and
backward of a fixed output gradient, batch 2) in interleaved rounds, and reports peer time / our time (> 1: ours is
faster), median over rounds with the min-max beside it. Writes `peers.md` into `--out` and prints it.
"""

from __future__ import annotations

import argparse
import ast
import copy
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from yolo_attn import AttnConv, CoordAtt, CoTAttention
from yolo_attn.attn_conv import _auto_head_dim
from yolo_attn.bench.ops import LEVELS, WIDTHS, feature_shape, fold_bn
from yolo_attn.bench.runners import backward_fn, infer_fn
from yolo_attn.bench.timing import interleaved, machine_info, torch_threads


def load_classes(path: Path, names: list[str], namespace: dict[str, Any]) -> dict[str, type]:
    """Execute only the class definitions `names` of the Python file `path` in `namespace`; return them by name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    body = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in names]
    missing = set(names) - {n.name for n in body}
    if missing:
        raise SystemExit(f"peers: {path} has no class {sorted(missing)}")
    ns = {"torch": torch, "nn": nn, "F": F, "List": list, **namespace}
    exec(compile(ast.Module(body=body, type_ignores=[]), str(path), "exec"), ns)  # the official code, unchanged
    return {n: ns[n] for n in names}


class UnfoldLocalConvolution(nn.Module):
    """CPU stand-in for CoTNet's cupy `LocalConvolution(dim, dim, k, stride=1, padding=k // 2, dilation=1)`.

    out[b, c, p] = sum_d w[b, 0, c mod G, d, p] * x[b, c, p + d], zero padded; w: (B, 1, G, k*k, H, W).
    """

    def __init__(self, in_planes, out_planes, kernel_size, stride=1, padding=0, dilation=1):
        super().__init__()
        self.k, self.padding = kernel_size, padding

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        b, c, h, wd = x.shape
        g = w.shape[2]
        cols = F.unfold(x, self.k, padding=self.padding).view(b, c // g, g, self.k * self.k, h, wd)
        return (cols * w).sum(3).view(b, c, h, wd)


class PreNormResidual(nn.Module):
    """x + mixer(GroupNorm(1, C)(x)): how CloFormer's block applies its mixer (blocks.py, `x + attn(norm1(x))`)."""

    def __init__(self, c: int, mixer: nn.Module):
        super().__init__()
        self.norm, self.mixer = nn.GroupNorm(1, c), mixer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mixer(self.norm(x))


def pairs(args: argparse.Namespace) -> dict[str, tuple[Callable[[int], nn.Module], Callable[[int], nn.Module]]]:
    """Comparison name -> (our factory, peer factory), each channels -> module, for the peers given."""
    out = {}
    if args.cotnet:
        cot = load_classes(
            Path(args.cotnet) / "models" / "cotnet.py",
            ["CotLayer"],
            {"LocalConvolution": UnfoldLocalConvolution, "get_act_layer": lambda name: nn.SiLU},
        )["CotLayer"]
        out["CoTAttention vs CoTNet CotLayer"] = (lambda c: CoTAttention(c, c, shortcut=False), lambda c: cot(c, 3))
    if args.blog_cot:
        blog = load_classes(Path(args.blog_cot), ["CoTAttention"], {})["CoTAttention"]
        out["CoTAttention vs blog CoTAttention"] = (
            lambda c: CoTAttention(c, c, shortcut=False),
            lambda c: blog(dim=c, kernel_size=3),
        )
    if args.cloformer:
        found = load_classes(
            Path(args.cloformer) / "classification" / "models" / "blocks.py",
            ["AttnMap", "EfficientAttention"],
            {"MemoryEfficientSwish": nn.SiLU},
        )

        def official(c: int) -> nn.Module:
            heads = c // _auto_head_dim(c)
            mixer = found["EfficientAttention"](c, heads, [heads - heads // 2, heads // 2], [5], window_size=4)
            return PreNormResidual(c, mixer)

        out["AttnConv vs CloFormer EfficientAttention"] = (lambda c: AttnConv(c, c), official)
    if args.coordatt:
        ca = load_classes(Path(args.coordatt) / "coordatt.py", ["h_sigmoid", "h_swish", "CoordAtt"], {})["CoordAtt"]
        out["CoordAtt vs official CoordAtt"] = (lambda c: CoordAtt(c, c), lambda c: ca(c, c))
    if not out:
        raise SystemExit("peers: give at least one of --cotnet, --cloformer, --coordatt, --blog-cot")
    return out


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for scale in args.scales:
        for level in args.levels:
            c, s = feature_shape(scale, level, args.imgsz)
            g = torch.Generator().manual_seed(0)
            x = torch.randn(1, c, s, s, generator=g)
            # Train step at batch 2: the official CotLayer's BN on the pooled vector cannot train on one image.
            xt, grad = torch.randn(2, c, s, s, generator=g), torch.randn(2, c, s, s, generator=g)
            for name, (ours, peer) in pairs(args).items():
                torch.manual_seed(0)
                mine, theirs = ours(c).train(), peer(c).train()
                infer = {"ours": infer_fn(fold_bn(copy.deepcopy(mine)).eval(), x), "peer": infer_fn(theirs.eval(), x)}
                theirs = copy.deepcopy(theirs).train()
                step = {"ours": backward_fn(mine, xt, grad), "peer": backward_fn(theirs, xt, grad)}
                label = f"{name} {scale} {level}"
                row = {"pair": name, "scale": scale, "level": level, "shape": [c, s, s]}
                for key, fns in (("infer", infer), ("train", step)):
                    t = interleaved(fns, args.rounds, args.runs, 1, f"{label} {key}")
                    row[f"{key}_speedups"] = [
                        statistics.median(p) / statistics.median(o) for o, p in zip(t["ours"], t["peer"])
                    ]
                    row[f"{key}_ms"] = {k: statistics.median(v for r in t[k] for v in r) for k in t}
                rows.append(row)
    return rows


def _cell(v: list[float]) -> str:
    return f"{statistics.median(v):.2f}× ({min(v):.2f}–{max(v):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cotnet", help="local checkout of JDAI-CV/CoTNet")
    ap.add_argument("--cloformer", help="local checkout of qhfan/CloFormer")
    ap.add_argument("--coordatt", help="local checkout of houqb/CoordAttention")
    ap.add_argument("--blog-cot", help="a .py file holding the blog CoTAttention class")
    ap.add_argument("--scales", nargs="+", default=["n", "s"], choices=list(WIDTHS))
    ap.add_argument("--levels", nargs="+", default=list(LEVELS), choices=list(LEVELS))
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/yolo_attn_dev")
    args = ap.parse_args()
    m = machine_info()
    with torch_threads(args.threads):
        rows = measure(args)
    load = m["loadavg_start"]
    lines = [
        "# yolo_attn operators against peer implementations",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + (f"; load average at start {load[0]:.2f}" if load else "")
        + f". Batch 1, {args.threads} thread(s), feature maps of a {args.imgsz}² input, {args.rounds} interleaved "
        f"rounds × {args.runs} calls; train step at batch 2. Cells: peer time / our time (> 1: ours is faster), "
        "median (min–max over rounds).",
        "",
        "| comparison | scale | level C×H×W | inference | train step | ours / peer ms, inference | train step |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        i, t = r["infer_ms"], r["train_ms"]
        lines.append(
            f"| {r['pair']} | {r['scale']} | {r['level']} {'×'.join(map(str, r['shape']))} | "
            f"{_cell(r['infer_speedups'])} | {_cell(r['train_speedups'])} | {i['ours']:.2f} / {i['peer']:.2f} | "
            f"{t['ours']:.2f} / {t['peer']:.2f} |"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "peers.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
