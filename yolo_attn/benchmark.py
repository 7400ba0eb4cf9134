"""Benchmark: stock YOLOv8n / YOLO11n against every n-scale plugin YAML, measured in one run on the same data.

Usage::

    python -m yolo_attn.benchmark [--data synth-shapes.yaml] [--models PATTERN ...] [--out DIR] ...
    yolo-attn-bench ...                                     (the same, as a console script)

For each model (the stock `yolov8n.yaml` and `yolo11n.yaml`, and every YAML in the plugin's `model_yamls/` built at
scale n: `yolov8-cot.yaml` -> `yolov8n-cot.yaml`) it measures:

- parameters and GFLOPs of the fused model at the latency image size, twice: Ultralytics' own number
  (`ultralytics.utils.torch_utils.get_flops`, what `model.info()` prints) and a full count (`count_flops`);
- CPU inference latency at batch 1 in PyTorch (fused, eval) and in ONNX Runtime (the model exported by Ultralytics'
  own ONNX exporter), and the time of one training step (forward, loss, backward, optimiser step on a fixed random
  batch), each also as a ratio to the stock model of the same family measured in the same run. Models are measured
  in interleaved rounds, so drift on a shared machine hits every model alike; a ratio is the median over rounds of
  the per-round ratio;
- mAP50 and mAP50-95 on the validation split after a fixed training budget, for several seeds: mean, standard deviation,
  and whether the difference to the stock model of the same family is inside the seed-to-seed noise.

It writes `benchmark.md` (Markdown tables with machine and settings), `benchmark.png` (chart), `benchmark.json` (every
raw sample and setting) and `benchmark.csv` (one row per model) into `--out`.

Every measurement runs single-threaded by default (`--threads 1`): on a small or shared CPU, multi-threaded PyTorch
spends most of its time waiting for a busy core (on a loaded 2-core machine yolov8n at 64 px took 21 ms with one
thread, 650 ms with two). The training runs use the other cores instead: `--jobs` runs (default cores / threads) at a
time, each in its own worker process. Defaults finish in about 47 minutes on a 2-core CPU: ~4 minutes of timing and
48 training runs (16 models x 3 seeds) of ~100 s each, two at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fnmatch
import json
import logging
import math
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from yolo_attn.lookup import shipped_dir

STOCK_FAMILIES = ("yolov8", "yolo11")  # always in the table, even when no plugin YAML of that family is selected
_YAML_NAME = re.compile(r"^(?P<family>yolov?\d+)(?P<variant>-[^.]+)\.ya?ml$")  # yolov8-cot.yaml, yolo11-ca-neck.yaml
# The mAP runs' budget is ~190 iterations. Ultralytics' warm-up (at least 100 iterations) would take half of it, and
# its optimizer=auto choice for short runs (AdamW, lr0 = 0.002 * 5 / (4 + nc) = 0.0009) learns slowly. yolov8n on
# synth-shapes, 3 epochs, seed 0, mAP50-95: at 160 px 0.005 with Ultralytics' defaults, 0.008 without warm-up, 0.011
# without warm-up at lr0=0.003, 0.001 at lr0=0.006; at 128 px 0.005 without warm-up, 0.009 with this recipe. Mosaic
# is off anyway: Ultralytics closes it for the last close_mosaic=10 epochs, i.e. for all of a run this short.
SHORT_BUDGET_RECIPE = ("warmup_epochs=0", "optimizer=AdamW", "lr0=0.003")
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


# ------------------------------------------------------------------------------------------------------------ models
@dataclass
class Entry:
    """One benchmarked model: `name` is the scale-n model name, `yaml` what `YOLO()` is given."""

    name: str
    yaml: str
    family: str
    stock: bool
    source: str = ""  # the shipped YAML it comes from (empty for stock models)
    results: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def discover(patterns: Iterable[str] | None = None) -> list[Entry]:
    """Return the stock models and every shipped plugin YAML at scale n, filtered by `patterns`.

    A pattern (shell-style, e.g. `yolov8n-cot` or `*-ca*`) selects a model when it matches its name (`yolov8n-cot`),
    its YAML (`yolov8n-cot.yaml`) or its shipped file (`yolov8-cot.yaml`). The stock model of each selected model's
    family is always included: the ratios need it.
    """
    plugin = []
    for path in sorted(shipped_dir("model_yamls").glob("*.yaml")):
        m = _YAML_NAME.match(path.name)
        if not m:
            print(f"benchmark: skipping {path.name} (not named <family>-<variant>.yaml)", file=sys.stderr)
            continue
        name = f"{m['family']}n{m['variant']}"
        plugin.append(Entry(name, f"{name}.yaml", m["family"], False, path.name))
    families = list(dict.fromkeys([*STOCK_FAMILIES, *(e.family for e in plugin)]))
    stock = [Entry(f"{f}n", f"{f}n.yaml", f, True) for f in families]
    entries = stock + plugin
    if patterns:
        pats = [p for pat in patterns for p in pat.split(",") if p]
        chosen = [e for e in entries if any(fnmatch.fnmatch(s, p) for p in pats for s in (e.name, e.yaml, e.source))]
        if not chosen:
            raise SystemExit(f"benchmark: --models {' '.join(pats)} matches none of {[e.name for e in entries]}")
        keep = {e.family for e in chosen}
        entries = [e for e in entries if e in chosen or (e.stock and e.family in keep)]
    order = {f: i for i, f in enumerate(families)}
    return sorted(entries, key=lambda e: (order[e.family], not e.stock, e.name))


def _build(entry: Entry):
    """Build the model from its YAML (nc from the YAML, 80 for COCO-style YAMLs), quietly."""
    from ultralytics import YOLO

    with _quiet():
        return YOLO(entry.yaml)


# ------------------------------------------------------------------------------------------------------------- FLOPs
def _numel(shape) -> int:
    return math.prod(shape) if shape else 1


def _per_output(*args, out_shape=None, **kwargs) -> int:
    """Elementwise binary arithmetic (add, sub, mul, div): one FLOP per output element."""
    return _numel(out_shape)


def _per_output2(*args, out_shape=None, **kwargs) -> int:
    """Fused multiply-add (addcmul, addcdiv): two FLOPs per output element."""
    return 2 * _numel(out_shape)


def _per_input(x_shape, *args, out_shape=None, **kwargs) -> int:
    """Reductions (sum, mean): one add per input element."""
    return _numel(x_shape)


def _avg_pool(x_shape, *args, out_shape=None, **kwargs) -> int:
    """Average pooling: one add per input element and one division per output element (non-overlapping windows)."""
    return _numel(x_shape) + _numel(out_shape)


def _batch_norm(x_shape, *args, out_shape=None, **kwargs) -> int:
    """Batch norm with running statistics: a per-channel scale and shift, two FLOPs per element."""
    return 2 * _numel(x_shape)


def _group_norm(x_shape, *args, out_shape=None, **kwargs) -> int:
    """Group/layer norm: statistics (mean 1, variance 2), normalisation (2) and affine (2): 7 FLOPs per element."""
    return 7 * _numel(x_shape)


def _flop_mapping() -> dict:
    """Extra FLOP formulas for torch's FlopCounterMode, keyed by aten overload packet."""
    import torch

    aten = torch.ops.aten
    mapping = {}
    for names, fn in (
        (("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "rsub"), _per_output),
        (("addcmul", "addcmul_", "addcdiv", "addcdiv_"), _per_output2),
        (("sum", "mean"), _per_input),
        (("avg_pool2d",), _avg_pool),
        (("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training"), _batch_norm),
        (("native_group_norm", "native_layer_norm"), _group_norm),
    ):
        for name in names:
            if hasattr(aten, name):
                mapping[getattr(aten, name)] = fn
    return mapping


def count_flops(model, x=640, by_module: bool = False):
    """Count the FLOPs of one forward pass of `model`, the attention arithmetic included.

    Convention (the one behind Ultralytics' GFLOPs, which are 2 x the multiply-accumulates THOP counts): a
    multiply-accumulate is 2 FLOPs. Convolutions, matrix products and scaled-dot-product attention are counted by
    `torch.utils.flop_counter.FlopCounterMode` (2 per multiply-accumulate, biases ignored, as THOP does). Added here,
    because attention operators do much of their arithmetic elementwise: add/sub/mul/div 1 FLOP per output element
    (so CoT's local aggregation of k x k shifted products costs 2k^2 - 1 per output element), reductions (sum, mean)
    1 per input element, average pooling 1 per input + 1 per output element, batch norm with running statistics 2 and
    group/layer norm 7 per element. Activations and softmax (exp, sigmoid, tanh, ...), data movement, max pooling and
    nearest upsampling count 0, as in Ultralytics/THOP. The input is run at its real size (no extrapolation).

    Args:
        model (torch.nn.Module): The model or module (eval mode is set for the count and restored).
        x (int | torch.Tensor): Square image size of a 1x3xSxS input, or the input tensor itself.
        by_module (bool): Also return FLOPs per module (fully qualified name -> FLOPs, every nesting level).

    Returns:
        (int | tuple[int, dict[str, int]]): Total FLOPs, and the per-module counts when `by_module`.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    if isinstance(x, int):
        p = next(model.parameters())
        x = torch.zeros(1, 3, x, x, dtype=p.dtype, device=p.device)
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False, depth=None, custom_mapping=_flop_mapping())
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    total = counter.get_total_flops()
    if not by_module:
        return total
    return total, {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}


def ultralytics_flops(model, imgsz: int = 640) -> float:
    """FLOPs as Ultralytics reports them (`get_flops`: THOP rules, extrapolated from small proxy images)."""
    from ultralytics.utils.torch_utils import get_flops

    return get_flops(model, imgsz) * 1e9


def flop_breakdown(model, imgsz: int = 640) -> dict[str, float]:
    """Where Ultralytics' count and the full count part: GFLOPs by THOP's rules at the real size, and of plugin layers.

    Returns GFLOPs: `thop_direct` (THOP's rules on the real input, no extrapolation), `plugin_thop` and `plugin_full`
    (the plugin layers alone, each profiled on the input it gets in the model: THOP's rules, functional matrix
    products and attention included, vs `count_flops`). Ultralytics' `get_flops` minus `thop_direct` is the error of
    its extrapolation from small proxy images; `plugin_full - plugin_thop` is the arithmetic THOP has no rule for.
    """
    import copy

    import thop
    import torch

    p = next(model.parameters())
    x = torch.zeros(1, 3, imgsz, imgsz, dtype=p.dtype, device=p.device)
    plugin = [m for m in model.model if str(getattr(m, "type", "")).startswith("yolo_attn")]
    inputs, hooks = {}, [m.register_forward_pre_hook(lambda m, a: inputs.setdefault(m, a[0])) for m in plugin]
    try:
        macs, _ = thop.profile(model, inputs=[x], verbose=False)  # real size: no stride, no extrapolation
    finally:
        for h in hooks:
            h.remove()
    plugin_thop = sum(2 * thop.profile(copy.deepcopy(m), inputs=[inputs[m]], verbose=False)[0] for m in plugin)
    return {
        "thop_direct": 2 * macs / 1e9,
        "plugin_thop": plugin_thop / 1e9,
        "plugin_full": sum(count_flops(m, inputs[m]) for m in plugin) / 1e9,
        "plugin_layers": len(plugin),
    }


# ---------------------------------------------------------------------------------------------------------- timings
@contextlib.contextmanager
def _quiet(enabled: bool = True) -> Iterator[None]:
    """Silence Ultralytics' INFO logging (and with it its progress bars)."""
    from ultralytics.utils import LOGGER

    level = LOGGER.level
    if enabled:
        LOGGER.setLevel(logging.WARNING)
    try:
        yield
    finally:
        LOGGER.setLevel(level)


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


def _timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3  # ms


def interleaved(
    fns: dict[str, Callable[[], Any]], rounds: int, runs: int, warmup: int, label: str = ""
) -> dict[str, list[list[float]]]:
    """Time every function in turn, round after round (reversing the order each round); return ms per round per run."""
    samples: dict[str, list[list[float]]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        t = time.perf_counter()
        for name in names if r % 2 == 0 else names[::-1]:
            for _ in range(warmup):
                fns[name]()
            samples[name].append([_timed(fns[name]) for _ in range(runs)])
        print(f"benchmark: {label} round {r + 1}/{rounds} ({time.perf_counter() - t:.0f}s)", flush=True)
    return samples


def _summarise(samples: dict[str, list[list[float]]], entries: list[Entry], key: str) -> None:
    """Store median ms and the median over rounds of the per-round ratio to the family's stock model."""
    stock = {e.family: e.name for e in entries if e.stock}
    for e in entries:
        if e.name not in samples or not samples[e.name]:
            continue
        rounds = samples[e.name]
        e.results[f"{key}_ms"] = statistics.median([t for r in rounds for t in r])
        e.results[f"{key}_samples_ms"] = rounds
        ref = samples.get(stock.get(e.family, ""))
        if ref and len(ref) == len(rounds):
            ratios = [statistics.median(a) / statistics.median(b) for a, b in zip(rounds, ref)]
            e.results[f"{key}_ratio"] = statistics.median(ratios)
            e.results[f"{key}_ratios"] = ratios


def _pytorch_fn(model, imgsz: int) -> Callable[[], Any]:
    import torch

    x = torch.rand(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))

    def run():
        with torch.inference_mode():
            model(x)

    return run


def _export_onnx(entry: Entry, imgsz: int, folder: Path) -> Path:
    """Export the model with Ultralytics' ONNX exporter (simplified, static shape) into `folder`."""
    from ultralytics import YOLO

    pt = folder / f"{entry.name}.pt"
    _build(entry).save(pt)  # a checkpoint in a temp folder: the exporter writes next to its source file
    with _quiet():
        out = YOLO(pt).export(format="onnx", imgsz=imgsz, simplify=True, device="cpu", verbose=False)
    return Path(out)


def _onnx_fn(path: Path, imgsz: int, threads: int) -> Callable[[], Any]:
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    return lambda: session.run(None, {name: x})


def _train_step_fn(entry: Entry, batch: int, imgsz: int) -> Callable[[], Any]:
    """One training step of the model (train mode, 80 classes as built) on a fixed random batch with 8 boxes/image."""
    import torch
    from ultralytics.cfg import get_cfg

    model = _build(entry).model
    model.args = get_cfg()  # default loss gains (box, cls, dfl), as the trainer sets them
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    nc = model.model[-1].nc
    g = torch.Generator().manual_seed(0)
    n = 8 * batch
    xy = torch.rand(n, 2, generator=g) * 0.6 + 0.2
    wh = torch.rand(n, 2, generator=g) * 0.25 + 0.05
    data = {
        "img": torch.rand(batch, 3, imgsz, imgsz, generator=g),
        "batch_idx": torch.arange(batch).repeat_interleave(8).float(),
        "cls": torch.randint(0, nc, (n, 1), generator=g).float(),
        "bboxes": torch.cat((xy, wh), 1),
    }
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.937, nesterov=True)

    def step():
        opt.zero_grad(set_to_none=True)
        loss, _ = model.loss(data)
        loss.sum().backward()
        opt.step()

    return step


# ----------------------------------------------------------------------------------------------------------- training
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
    with _quiet(not options["verbose"]), _ultralytics_threads(options["threads"]):
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


def _prepare_data(data: str) -> None:
    """Build/verify the data set and write its label caches once, before parallel training runs read them."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    info = check_det_dataset(data)
    cfg = get_cfg(overrides={"imgsz": 64})
    for split in ("train", "val"):
        build_yolo_dataset(cfg, info[split], 1, info, mode="val")


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def noise_test(a: list[float], b: list[float]) -> tuple[float, float, bool | None]:
    """Difference of means a - b, its 95% half-width (Welch's t), and whether it is inside that noise band.

    The band is t(0.975, df) x sqrt(sd_a^2 / n_a + sd_b^2 / n_b), with Welch-Satterthwaite df; None with fewer than
    two seeds per side (no spread to compare with).
    """
    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return diff, float("nan"), None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, 0.0, diff == 0
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if va and vb else len(a) + len(b) - 2
    t = _T975.get(max(1, int(df)), 2.0 if df < 60 else 1.96)
    return diff, t * se, abs(diff) <= t * se


# ------------------------------------------------------------------------------------------------------------ report
def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, OS and package versions of this machine."""
    import torch
    import ultralytics

    import yolo_attn

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f"{kb / 2**20:.0f} GiB"
    versions = {"python": platform.python_version(), "torch": torch.__version__, "ultralytics": ultralytics.__version__}
    with contextlib.suppress(ImportError):
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    versions["yolo_attn"] = yolo_attn.__version__
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "os": platform.platform(),
        "versions": versions,
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _fmt_ms(e: Entry, key: str) -> str:
    if f"{key}_ms" not in e.results:
        return "—"
    ratio = e.results.get(f"{key}_ratio")
    return f"{e.results[f'{key}_ms']:.1f} ({ratio:.2f}×)" if ratio is not None else f"{e.results[f'{key}_ms']:.1f}"


def _fmt_map(e: Entry, key: str) -> str:
    vals = e.results.get(f"{key}_seeds")
    if not vals:
        return "—"
    mean, sd = _mean_sd(vals)
    return f"{mean:.3f} ± {sd:.3f}" if len(vals) > 1 else f"{mean:.3f}"


def _fmt_delta(e: Entry, stock: Entry | None) -> str:
    if e.stock or stock is None or not e.results.get("map_seeds") or not stock.results.get("map_seeds"):
        return "—" if not e.stock else "reference"
    diff, band, inside = noise_test(e.results["map_seeds"], stock.results["map_seeds"])
    if inside is None:
        return f"{diff:+.3f} (1 seed: no noise estimate)"
    return f"{diff:+.3f} ± {band:.3f}: " + ("inside the noise" if inside else ("better" if diff > 0 else "worse"))


def flops_table(entries: list[Entry], imgsz: int) -> list[str]:
    """Markdown lines explaining the two GFLOPs columns for every model."""
    lines = [
        f"GFLOPs in detail ({imgsz}×{imgsz}, fused). Ultralytics' number applies THOP's layer rules to small proxy "
        "images and extrapolates to the real size; the next column applies the same rules at the real size, so their "
        "difference is the extrapolation error (it scales branches whose cost does not grow with the image area, such "
        "as a fusion MLP on a pooled vector, with the area). The last two columns count the plugin layers alone, each "
        "on the input it gets in the model: THOP's rules (matrix products and attention included) vs the full count; "
        "their difference is the elementwise arithmetic THOP has no rule for.",
        "",
        "| model | Ultralytics | THOP rules, real size | full count | Ultralytics − full | plugin layers: THOP rules "
        "| plugin layers: full |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in entries:
        r, d = e.results, e.results.get("gflops_detail")
        if not d or "gflops_full" not in r:
            lines.append(f"| {e.name} | — | — | — | — | — | — |")
            continue
        plugin = (f"{d['plugin_thop']:.3f}", f"{d['plugin_full']:.3f}") if d["plugin_layers"] else ("—", "—")
        lines.append(
            f"| {e.name} | {r['gflops_ultralytics']:.3f} | {d['thop_direct']:.3f} | {r['gflops_full']:.3f} "
            f"| {r['gflops_ultralytics'] - r['gflops_full']:+.3f} | {plugin[0]} | {plugin[1]} |"
        )
    return lines


def write_markdown(entries: list[Entry], settings: dict, machine: dict, path: Path) -> None:
    stock = {e.family: e for e in entries if e.stock}
    s = settings
    lines = [
        "| model | params (M) | GFLOPs Ultralytics | GFLOPs full | PyTorch ms | ONNX Runtime ms | train step ms "
        "| mAP50 | mAP50-95 | Δ mAP50-95 vs stock |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for e in entries:
        r = e.results
        name = f"**{e.name}**" if e.stock else e.name
        if e.errors:
            name += " (error, see below)"
        cells = [
            name,
            f"{r['params'] / 1e6:.3f}" if "params" in r else "—",
            f"{r['gflops_ultralytics']:.2f}" if "gflops_ultralytics" in r else "—",
            f"{r['gflops_full']:.2f}" if "gflops_full" in r else "—",
            _fmt_ms(e, "pytorch"),
            _fmt_ms(e, "onnx"),
            _fmt_ms(e, "train_step"),
            _fmt_map(e, "map50"),
            _fmt_map(e, "map"),
            _fmt_delta(e, stock.get(e.family)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    v = machine["versions"]
    load = machine.get("loadavg_start")
    text = [
        "# yolo_attn benchmark",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory']} RAM, {machine['os']}; "
        + ", ".join(f"{k} {val}" for k, val in v.items())
        + (f". Load average at start {load[0]:.2f}, at end {machine['loadavg_end'][0]:.2f}." if load else ".")
        + f" Run {s['started']}, {s['total_seconds'] / 60:.1f} min in all.",
        "",
        *lines,
        "",
        f"- Models at scale n as built from their YAMLs (nc = 80), fused (Conv+BN folded) for params, FLOPs and "
        f"inference; batch 1, {s['imgsz_latency']}×{s['imgsz_latency']} input, {_n(s['threads'], 'thread')}.",
        "- GFLOPs Ultralytics: `get_flops` (what `model.info()` prints: THOP layer rules, extrapolated from small "
        "proxy images). GFLOPs full: every multiply-accumulate of convolutions, matrix products and attention as 2 "
        "FLOPs (the same convention), plus the elementwise arithmetic, reductions and normalisations that THOP has no "
        "rule for, counted at the real input size (`yolo_attn.benchmark.count_flops`).",
        f"- Latency: median over {s['rounds']} interleaved rounds × {_n(s['runs'], 'run')} (after "
        f"{_n(s['warmup'], 'warm-up run')} per model and round); in brackets the ratio to the stock model of the "
        "same family (median of per-round ratios). "
        f"ONNX: Ultralytics' exporter (`format=onnx simplify=True`, static {s['imgsz_latency']}² shape), "
        "ONNX Runtime CPU provider.",
        f"- Train step: forward + loss + backward + SGD step on a fixed random batch of {s['step_batch']}×3×"
        f"{s['imgsz_step']}² with 8 boxes per image; {s['step_rounds']} rounds × {_n(s['step_runs'], 'step')}.",
    ]
    if s.get("train"):
        recipe = " ".join(f"{k}={val}" for k, val in s["train_args"].items())
        text.append(
            f"- mAP50 / mAP50-95 on the val split of `{s['data']}` after training from scratch: "
            f"{_n(s['epochs'], 'epoch')} at imgsz {s['imgsz_train']}, batch {s['batch']}, fraction {s['fraction']} of "
            "the train split"
            + (f", `{recipe}`" if recipe else "")
            + f", otherwise Ultralytics' defaults; seeds {s['seeds']} with `deterministic=True`, {s['jobs']} runs at a "
            f"time, {_n(s['threads'], 'thread')} each. Mean ± sample standard deviation over seeds. Δ: difference of "
            "the mAP50-95 means to the stock model of the family ± the 95% band of that difference (Welch t); "
            "'inside the noise' means these seeds cannot tell the two models apart. One run took "
            f"{s.get('train_seconds_mean', float('nan')):.0f} s ({s.get('train_cpu_seconds_mean', float('nan')):.0f} "
            "CPU s) on average. The budget is short: it shows how fast a model starts to learn this data set, not how "
            "good it is when trained to convergence."
        )
    text += ["", *flops_table(entries, s["imgsz_latency"])]
    errors = [(e.name, err) for e in entries for err in e.errors]
    if errors:
        text += ["", "Errors:", ""] + [f"- {name}: {err}" for name, err in errors]
    path.write_text("\n".join(text) + "\n", encoding="utf-8")


def write_chart(entries: list[Entry], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {f: c for f, c in zip(dict.fromkeys(e.family for e in entries), ("tab:blue", "tab:orange", "tab:green"))}
    trained = any(e.results.get("map_seeds") for e in entries)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 6))
    for e in entries:
        x = e.results.get("pytorch_ratio")
        if trained and e.results.get("map_seeds"):
            y, sd = _mean_sd(e.results["map_seeds"])
            sd = 0.0 if math.isnan(sd) else sd
        elif not trained and "gflops_full" in e.results:
            y, sd = e.results["gflops_full"], 0.0
        else:
            continue
        if x is None:
            continue
        c = colors.get(e.family, "gray")
        ax1.errorbar(x, y, yerr=sd, fmt="*" if e.stock else "o", ms=14 if e.stock else 7, color=c, capsize=3)
        ax1.annotate(e.name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, marker="o", ls="", label=f) for f, c in colors.items()]
    handles.append(Line2D([], [], color="gray", marker="*", ms=12, ls="", label="stock model"))
    ax1.legend(handles=handles, fontsize=8)
    ax1.set_xlabel("PyTorch CPU latency / stock model of the same family")
    ax1.set_ylabel("mAP50-95 (mean ± sd over seeds)" if trained else "GFLOPs (full count)")
    ax1.set_title("Accuracy vs. latency (stars: stock models)" if trained else "GFLOPs vs. latency (stars: stock)")
    ax1.grid(alpha=0.3)
    names = [e.name for e in entries]
    keys = [("pytorch_ratio", "PyTorch"), ("onnx_ratio", "ONNX Runtime"), ("train_step_ratio", "train step")]
    width = 0.8 / len(keys)
    for i, (key, label) in enumerate(keys):
        vals = [e.results.get(key, float("nan")) for e in entries]
        ax2.barh([j + (i - 1) * width for j in range(len(names))], vals, height=width, label=label)
    ax2.axvline(1.0, color="k", lw=0.8)
    ax2.set_yticks(range(len(names)), names, fontsize=8)
    ax2.invert_yaxis()
    ax2.set_xlabel("time / stock model of the same family")
    ax2.set_title("CPU time ratios")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_raw(entries: list[Entry], settings: dict, machine: dict, out: Path) -> None:
    raw = {
        "settings": settings,
        "machine": machine,
        "models": [
            {"name": e.name, "yaml": e.yaml, "family": e.family, "stock": e.stock, "source": e.source}
            | e.results
            | {"errors": e.errors}
            for e in entries
        ],
    }
    (out / "benchmark.json").write_text(json.dumps(raw, indent=1), encoding="utf-8")
    cols = ["params", "gflops_ultralytics", "gflops_full", "pytorch_ms", "pytorch_ratio", "onnx_ms", "onnx_ratio"]
    cols += ["train_step_ms", "train_step_ratio"]
    with open(out / "benchmark.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["model", "family", "stock", *cols, "map50_mean", "map50_sd", "map_mean", "map_sd", "seeds"])
        for e in entries:
            row = [e.name, e.family, e.stock, *(e.results.get(c, "") for c in cols)]
            for key in ("map50", "map"):
                vals = e.results.get(f"{key}_seeds")
                row += list(_mean_sd(vals)) if vals else ["", ""]
            w.writerow(row + [len(e.results.get("map_seeds", []))])


# --------------------------------------------------------------------------------------------------------------- main
def _parse_train_args(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE strings -> dict, values parsed as YAML scalars (as the `yolo` command does)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"benchmark: --train-args expects KEY=VALUE, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="yolo-attn-bench",
        description="Compare stock YOLOv8n/YOLO11n with every n-scale yolo_attn YAML: params, GFLOPs, CPU latency "
        "(PyTorch, ONNX Runtime), training-step time and mAP after a fixed training budget over several seeds.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
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
    ap.add_argument("--imgsz-latency", type=int, default=640, help="inference image size (latency and FLOPs)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved latency rounds")
    ap.add_argument("--runs", type=int, default=5, help="timed inferences per model per round")
    ap.add_argument("--warmup", type=int, default=1, help="untimed inferences per model per round")
    ap.add_argument("--skip-onnx", action="store_true", help="no ONNX export / ONNX Runtime latency")
    ap.add_argument("--step-batch", type=int, default=4, help="training-step batch size")
    ap.add_argument("--imgsz-step", type=int, default=320, help="training-step image size")
    ap.add_argument("--step-rounds", type=int, default=3, help="interleaved training-step rounds")
    ap.add_argument("--step-runs", type=int, default=2, help="timed training steps per model per round")
    ap.add_argument(
        "--threads", type=int, default=1, help="CPU threads for latency, training steps and each training run"
    )
    ap.add_argument("--jobs", type=int, default=None, help="parallel training runs (default: cores // threads)")
    ap.add_argument("--verbose", action="store_true", help="show Ultralytics' training output")
    args = ap.parse_args(argv)
    args.train_args = _parse_train_args(args.train_args)
    if args.jobs is None:
        args.jobs = max(1, (os.cpu_count() or 1) // args.threads)
    return args


def _guard(entry: Entry, what: str, fn: Callable[[], Any]) -> Any:
    """Run one measurement; record a failure on the entry instead of aborting the whole benchmark."""
    try:
        return fn()
    except Exception as exc:  # a broken model must not cost the other rows
        entry.errors.append(f"{what}: {type(exc).__name__}: {exc}")
        print(f"benchmark: {entry.name}: {what} failed\n{traceback.format_exc()}", file=sys.stderr)
        return None


def _train_all(entries: list[Entry], args: argparse.Namespace, out: Path) -> list[float]:
    """Run seeds x models training runs, `args.jobs` at a time in worker processes; store metrics on the entries."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with _quiet(not args.verbose):
        _prepare_data(args.data)
    keys = ("data", "epochs", "imgsz_train", "batch", "fraction", "threads", "verbose", "train_args")
    options = {k: getattr(args, k) for k in keys}
    run_seconds = []
    (out / "train").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="yolo_attn_train_") as tmp:
        # Seed-major order: drift on the machine and the pairing of concurrent runs hit every model alike.
        jobs = [(seed, e) for seed in range(args.seeds) for e in entries]
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [(s, e, pool.submit(train_once, e.yaml, e.name, options, s, tmp)) for s, e in jobs]
            for k, (seed, e, future) in enumerate(futures, 1):
                res = _guard(e, f"training seed {seed}", future.result)
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
                print(
                    f"benchmark: [{k}/{len(jobs)}] {e.name} seed {seed}: mAP50 {res['map50']:.3f} "
                    f"mAP50-95 {res['map']:.3f} ({res['seconds']:.0f}s, {res['cpu_seconds']:.0f} CPU s)",
                    flush=True,
                )
    return run_seconds


def run(args: argparse.Namespace) -> list[Entry]:
    import torch

    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    entries = discover(args.models)
    machine = machine_info()
    print(f"benchmark: {len(entries)} models: {', '.join(e.name for e in entries)}", flush=True)

    # 1. Params and FLOPs of the fused models; keep them for PyTorch latency.
    fused = {}
    for e in entries:

        def measure(e=e):
            model = _build(e).model.fuse(verbose=False).eval()
            e.results["params"] = sum(p.numel() for p in model.parameters())
            e.results["gflops_ultralytics"] = ultralytics_flops(model, args.imgsz_latency) / 1e9
            e.results["gflops_full"] = count_flops(model, args.imgsz_latency) / 1e9
            e.results["gflops_detail"] = flop_breakdown(model, args.imgsz_latency)
            return model

        model = _guard(e, "build/FLOPs", measure)
        if model is not None:
            fused[e.name] = model
    print(f"benchmark: params and FLOPs done ({time.perf_counter() - t0:.0f}s)", flush=True)

    # 2. PyTorch latency.
    samples = interleaved(
        {n: _pytorch_fn(m, args.imgsz_latency) for n, m in fused.items()},
        args.rounds,
        args.runs,
        args.warmup,
        "PyTorch latency",
    )
    _summarise(samples, entries, "pytorch")
    del fused

    # 3. ONNX export and ONNX Runtime latency.
    if not args.skip_onnx:
        with tempfile.TemporaryDirectory(prefix="yolo_attn_onnx_") as tmp:
            fns = {}
            for e in entries:
                path = _guard(e, "ONNX export", lambda e=e: _export_onnx(e, args.imgsz_latency, Path(tmp)))
                if path is not None:
                    fn = _guard(e, "ONNX Runtime", lambda p=path: _onnx_fn(p, args.imgsz_latency, args.threads))
                    if fn is not None:
                        fns[e.name] = fn
            print(f"benchmark: ONNX export done ({time.perf_counter() - t0:.0f}s)", flush=True)
            samples = interleaved(fns, args.rounds, args.runs, args.warmup, "ONNX Runtime latency")
            _summarise(samples, entries, "onnx")
            del fns

    # 4. Training-step time.
    steps = {}
    for e in entries:
        fn = _guard(e, "train step", lambda e=e: _train_step_fn(e, args.step_batch, args.imgsz_step))
        if fn is not None:
            steps[e.name] = fn
    samples = interleaved(steps, args.step_rounds, args.step_runs, 1, "training step")
    _summarise(samples, entries, "train_step")
    del steps

    # 5. mAP after a fixed training budget, seed-major so drift and warm caches hit every model alike.
    settings = {k: v for k, v in vars(args).items() if k not in {"models"}}
    settings.update(models=[e.name for e in entries], seeds=list(range(args.seeds)), train=not args.skip_train)
    if not args.skip_train:
        run_seconds = _train_all(entries, args, out)
        settings["train_seconds_mean"] = statistics.fmean(run_seconds) if run_seconds else float("nan")
        cpu = [t for e in entries for t in e.results.get("train_cpu_seconds", [])]
        settings["train_cpu_seconds_mean"] = statistics.fmean(cpu) if cpu else float("nan")

    machine["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    settings["started"] = started
    settings["total_seconds"] = time.perf_counter() - t0
    write_markdown(entries, settings, machine, out / "benchmark.md")
    write_raw(entries, settings, machine, out)
    write_chart(entries, out / "benchmark.png")
    print(f"benchmark: done in {settings['total_seconds'] / 60:.1f} min -> {out / 'benchmark.md'}", flush=True)
    return entries


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    entries = run(args)
    print((Path(args.out) / "benchmark.md").read_text(encoding="utf-8"))
    return 1 if any(e.errors for e in entries) else 0


if __name__ == "__main__":
    sys.exit(main())
