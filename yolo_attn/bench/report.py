"""Output of the models mode: Markdown tables (benchmark.md, cost.md), chart, raw JSON and CSV."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from yolo_attn.bench.runners import OPENVINO_PRECISION
from yolo_attn.bench.stats import format_delta, mean_sd, noise_test
from yolo_attn.bench.text import machine_line, plural
from yolo_attn.bench.zoo import Entry


def _fmt_ms(e: Entry, key: str) -> str:
    if f"{key}_ms" not in e.results:
        return "—"
    ratio = e.results.get(f"{key}_ratio")
    return f"{e.results[f'{key}_ms']:.1f} ({ratio:.2f}×)" if ratio is not None else f"{e.results[f'{key}_ms']:.1f}"


def _fmt_map(e: Entry, key: str) -> str:
    vals = e.results.get(f"{key}_seeds")
    if not vals:
        return "—"
    mean, sd = mean_sd(vals)
    return f"{mean:.3f} ± {sd:.3f}" if len(vals) > 1 else f"{mean:.3f}"


def _fmt_delta(e: Entry, stock: Entry | None) -> str:
    if e.stock or stock is None or not e.results.get("map_seeds") or not stock.results.get("map_seeds"):
        return "—" if not e.stock else "reference"
    return format_delta(*noise_test(e.results["map_seeds"], stock.results["map_seeds"]))


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
    """Write `benchmark.md`: the main table, the method and the GFLOPs table."""
    stock = {e.family: e for e in entries if e.stock}
    s = settings
    compiled, openvino = bool(s.get("compile")), bool(s.get("openvino"))
    lines = [
        "| model | params (M) | GFLOPs Ultralytics | GFLOPs full | PyTorch ms | "
        + ("PyTorch compiled ms | " if compiled else "")
        + "ONNX Runtime ms | "
        + ("OpenVINO ms | " if openvino else "")
        + "train step ms | mAP50 | mAP50-95 | Δ mAP50-95 vs stock |",
        "| --- |" + " ---: |" * (8 + compiled + openvino) + " --- |",
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
            *([_fmt_ms(e, "pytorch_compiled")] if compiled else []),
            _fmt_ms(e, "onnx"),
            *([_fmt_ms(e, "openvino")] if openvino else []),
            _fmt_ms(e, "train_step"),
            _fmt_map(e, "map50"),
            _fmt_map(e, "map"),
            _fmt_delta(e, stock.get(e.family)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    text = [
        "# yolo_attn benchmark",
        "",
        f"{machine_line(machine)} Run {s['started']}, {s['total_seconds'] / 60:.1f} min in all.",
        "",
        *lines,
        "",
        f"- Models at scale n as built from their YAMLs (nc = 80), fused (Conv+BN folded) for params, FLOPs and "
        f"inference; batch 1, {s['imgsz_latency']}×{s['imgsz_latency']} input, {plural(s['threads'], 'thread')}.",
        "- GFLOPs Ultralytics: `get_flops` (what `model.info()` prints: THOP layer rules, extrapolated from small "
        "proxy images). GFLOPs full: every multiply-accumulate of convolutions, matrix products and attention as 2 "
        "FLOPs (the same convention), plus the elementwise arithmetic, reductions and normalisations that THOP has no "
        "rule for, counted at the real input size (`yolo_attn.benchmark.count_flops`).",
        f"- Latency: median over {s['rounds']} interleaved rounds × {plural(s['runs'], 'run')} (after "
        f"{plural(s['warmup'], 'warm-up run')} per model and round); in brackets the ratio to the stock model of the "
        "same family (median of per-round ratios). "
        f"ONNX: Ultralytics' exporter (`format=onnx simplify=True`, static {s['imgsz_latency']}² shape), "
        "ONNX Runtime CPU provider."
        + (
            " OpenVINO: Ultralytics' exporter (`format=openvino`, static shape), CPU plugin, "
            f"`INFERENCE_NUM_THREADS` as the thread count, `INFERENCE_PRECISION_HINT` {OPENVINO_PRECISION} (the CPU "
            "plugin's default is bf16 where the CPU has bf16 units)."
            if openvino
            else ""
        )
        + (
            " PyTorch compiled: `torch.compile` (Inductor, default mode, as Ultralytics' `compile=True`) of the fused "
            "model, compiled before the timed rounds."
            if compiled
            else ""
        ),
        f"- Train step: forward + loss + backward + SGD step on a fixed random batch of {s['step_batch']}×3×"
        f"{s['imgsz_step']}² with 8 boxes per image; {s['step_rounds']} rounds × {plural(s['step_runs'], 'step')}.",
    ]
    if s.get("train"):
        recipe = " ".join(f"{k}={val}" for k, val in s["train_args"].items())
        text.append(
            f"- mAP50 / mAP50-95 on the val split of `{s['data']}` after training from scratch: "
            f"{plural(s['epochs'], 'epoch')} at imgsz {s['imgsz_train']}, batch {s['batch']}, fraction "
            f"{s['fraction']} of the train split"
            + (f", `{recipe}`" if recipe else "")
            + f", otherwise Ultralytics' defaults; seeds {s['seeds']} with `deterministic=True`, {s['jobs']} runs at a "
            f"time, {plural(s['threads'], 'thread')} each. Mean ± sample standard deviation over seeds. Δ: difference "
            "of the mAP50-95 means to the stock model of the family ± the 95% band of that difference (Welch t); "
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


RUNTIMES = (  # result key -> column title; the cost and scaling tables show those that were measured
    ("pytorch", "PyTorch"),
    ("pytorch_compiled", "PyTorch compiled"),
    ("onnx", "ONNX Runtime"),
    ("openvino", f"OpenVINO {OPENVINO_PRECISION}"),
)
TARGET_EXCESS = {"inference": 0.05, "train_step": 0.10}  # latency ratio may exceed the FLOPs ratio by this much


def _flops_ratio(e: Entry, stock: Entry | None, suffix: str = "") -> float | None:
    key = "gflops_full" + suffix
    if stock is None or key not in e.results or key not in stock.results:
        return None
    return e.results[key] / stock.results[key]


def _cost_cell(e: Entry, key: str, flops: float | None, target: float) -> str:
    """ "ratio [min–max over rounds] excess" with a ✗ where the excess is over `target`, or "—" if not measured."""
    ratio, rounds = e.results.get(f"{key}_ratio"), e.results.get(f"{key}_ratios", [])
    if ratio is None:
        return "—"
    spread = f" [{min(rounds):.2f}–{max(rounds):.2f}]" if len(rounds) > 1 else ""
    if flops is None:
        return f"{ratio:.2f}{spread}"
    excess = ratio - flops
    return f"{ratio:.2f}{spread} {excess:+.2f}" + (" ✗" if excess > target + 1e-9 else "")


def cost_table(entries: list[Entry]) -> list[str]:
    """Markdown lines: per plugin model, FLOPs ratio and per runtime the latency ratio with its excess over it."""
    stock = {e.family: e for e in entries if e.stock}
    keys = [(k, t) for k, t in RUNTIMES if any(f"{k}_ratio" in e.results for e in entries)]
    train = any("train_step_ratio" in e.results for e in entries)
    head = "| model | FLOPs ratio | " + " | ".join(t for _, t in keys) + (" | train step |" if train else " |")
    lines = [head, "| --- |" + " ---: |" * (1 + len(keys) + train)]
    for e in entries:
        if e.stock:
            continue
        flops = _flops_ratio(e, stock.get(e.family))
        cells = [e.name, f"{flops:.2f}" if flops is not None else "—"]
        cells += [_cost_cell(e, k, flops, TARGET_EXCESS["inference"]) for k, _ in keys]
        if train:
            cells.append(_cost_cell(e, "train_step", flops, TARGET_EXCESS["train_step"]))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _mib(e: Entry, key: str, ref: Entry | None) -> str:
    peak = e.results.get(f"{key}_peak_bytes")
    if peak is None:
        return "—"
    base = ref.results.get(f"{key}_peak_bytes") if ref is not None else None
    return f"{peak / 2**20:.0f} ({peak / base:.2f}×)" if base else f"{peak / 2**20:.0f}"


def scaling_table(entries: list[Entry], sizes: list[int]) -> list[str]:
    """Markdown lines: per model and image size, FLOPs ratio, latency ms (ratio) and peak MiB (ratio) per runtime."""
    stock = {e.family: e for e in entries if e.stock}
    keys = [(k, t) for k, t in RUNTIMES if any(f"{k}_ms" in e.results for e in entries)]
    mem = [(k, t) for k, t in [*keys, ("train_step", "train step (batch 2)")]
           if any(f"{k}_peak_bytes" in e.results for e in entries)]  # fmt: skip
    head = "| model | imgsz | FLOPs ratio | " + " | ".join(f"{t} ms" for _, t in keys)
    head += "".join(f" | {t} peak MiB" for _, t in mem) + " |"
    lines = [head, "| --- | ---: |" + " ---: |" * (1 + len(keys) + len(mem))]
    for e in entries:
        ref = stock.get(e.family)
        for i, size in enumerate(sizes):
            suffix = f"@{size}" if i else ""
            flops = _flops_ratio(e, ref, suffix)
            cells = [f"**{e.name}**" if e.stock else e.name, str(size), f"{flops:.2f}" if flops is not None else "—"]
            for k, _ in keys:
                ms, ratio = e.results.get(f"{k}{suffix}_ms"), e.results.get(f"{k}{suffix}_ratio")
                cells.append("—" if ms is None else f"{ms:.1f}" + (f" ({ratio:.2f}×)" if ratio is not None else ""))
            cells += [_mib(e, f"{k}{suffix}", ref) for k, _ in mem]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_cost_tables(entries: list[Entry], settings: dict, machine: dict, path: Path) -> None:
    """`cost.md`: the cost table (the README's) and, with several image sizes or peak memory, the scaling table."""
    s = settings
    text = [
        "# yolo_attn: cost against the stock model",
        "",
        f"{machine_line(machine)} Run {s['started']}. Batch 1, {s['imgsz_latency']}² input, "
        f"{plural(s['threads'], 'thread')}, fused eval models; train step: batch {s['step_batch']} at "
        f"{s['imgsz_step']}².",
        "",
        *cost_table(entries),
        "",
        "- Each cell: latency ratio to the stock model of the same family (median over "
        f"{s['rounds']} interleaved rounds of the per-round ratio; min–max over rounds in brackets), then its excess "
        "over the FLOPs ratio (full count, `count_flops`, at the latency size). ✗: excess over the target, "
        f"+{TARGET_EXCESS['inference']:.2f} for inference, +{TARGET_EXCESS['train_step']:.2f} for the train step.",
    ]
    sizes = s.get("imgsz_sizes", [s["imgsz_latency"]])
    if len(sizes) > 1 or s.get("memory"):
        text += [
            "",
            "## Cost as the input grows",
            "",
            *scaling_table(entries, sizes),
            "",
            "- Latency: median ms (ratio to the stock model of the family), batch 1, at each size; the files were "
            "exported at that size (static shape).",
            "- Peak MiB: resident memory one call adds at its peak over the loaded model, each measured in a fresh "
            "process (`yolo_attn.bench.memory`); in brackets the ratio to the stock model.",
        ]
    path.write_text("\n".join(text) + "\n", encoding="utf-8")


def write_chart(entries: list[Entry], path: Path) -> None:
    """Write `benchmark.png`: mAP (or GFLOPs) against the latency ratio, and the time ratios per model."""
    from matplotlib.figure import Figure  # no pyplot: the caller's matplotlib backend stays as it was

    colors = {f: c for f, c in zip(dict.fromkeys(e.family for e in entries), ("tab:blue", "tab:orange", "tab:green"))}
    trained = any(e.results.get("map_seeds") for e in entries)
    fig = Figure(figsize=(14, 6))
    ax1, ax2 = fig.subplots(1, 2)
    for e in entries:
        x = e.results.get("pytorch_ratio")
        if trained and e.results.get("map_seeds"):
            y, sd = mean_sd(e.results["map_seeds"])
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


def write_raw(entries: list[Entry], settings: dict, machine: dict, out: Path) -> None:
    """Write `benchmark.json` (every sample and setting) and `benchmark.csv` (one row per model) into `out`."""
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
    cols = ["params", "gflops_ultralytics", "gflops_full", "pytorch_ms", "pytorch_ratio"]
    cols += ["pytorch_compiled_ms", "pytorch_compiled_ratio", "onnx_ms", "onnx_ratio"]
    cols += ["train_step_ms", "train_step_ratio"]
    with open(out / "benchmark.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["model", "family", "stock", *cols, "map50_mean", "map50_sd", "map_mean", "map_sd", "seeds"])
        for e in entries:
            row = [e.name, e.family, e.stock, *(e.results.get(c, "") for c in cols)]
            for key in ("map50", "map"):
                vals = e.results.get(f"{key}_seeds")
                row += list(mean_sd(vals)) if vals else ["", ""]
            w.writerow(row + [len(e.results.get("map_seeds", []))])
