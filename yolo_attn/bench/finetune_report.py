"""Output of the finetune mode: finetune.md (table and method), finetune.json (every figure), finetune.png (chart)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from yolo_attn.bench.stats import format_delta, mean_sd, noise_test, paired_test
from yolo_attn.bench.text import machine_line, plural
from yolo_attn.bench.zoo import Entry

# Below this mAP50-95 the stock model has learnt too little for a comparison to rank anything: the epoch-0 mAP check
# passes trivially (0 = 0) and fine-tuning differences are those of models that barely detect.
MIN_STOCK_MAP = 0.05


def rank_note(stock_map0: float, stock_map: float | None = None) -> str | None:
    """Return a warning when the stock model has learnt too little to rank anything (mAP50-95 < MIN_STOCK_MAP)."""
    best = max(stock_map0, stock_map or 0.0)
    if best >= MIN_STOCK_MAP:
        return None
    return (
        f"The stock model reached mAP50-95 {best:.4f} (below {MIN_STOCK_MAP}): it has not learnt this data enough for "
        "the comparison to rank anything, and the epoch-0 mAP check passes trivially (the output check does not). "
        "Pretrain longer (--pretrain-epochs), at a larger --imgsz, or give --pretrained weights."
    )


def write_report(entries: list[Entry], settings: dict[str, Any], out: Path) -> None:
    """Write finetune.md (table), finetune.png (chart) and finetune.json (every sample) into `out`.

    Args:
        entries (list[Entry]): The stock model first, then the variants; results hold `map0`, `map_seeds`,
            `map50_seeds` and, from the run, `start_gap`.
        settings (dict): `machine` (`timing.machine_info()`), `device`, `started`, `minutes`, `weights`,
            `pretraining`, `recipe`, `epochs`, `imgsz`, `batch`, `seeds`, `data`.
        out (Path): Output folder.
    """
    stock = entries[0]
    rows = [
        "| model | mAP50-95 epoch 0 | mAP50 fine-tuned | mAP50-95 fine-tuned | Δ vs stock | Δ paired by seed |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for e in entries:
        (m50, s50), (m, s) = mean_sd(e.results["map50_seeds"]), mean_sd(e.results["map_seeds"])
        deltas = ["reference"] * 2
        if e is not stock:
            for k, test in enumerate((noise_test, paired_test)):
                deltas[k] = format_delta(*test(e.results["map_seeds"], stock.results["map_seeds"]), digits=4)
        name = f"**{e.name}**" if e is stock else e.name
        spread = len(e.results["map_seeds"]) > 1  # one seed: no standard deviation
        fine_tuned = [f"{m50:.3f} ± {s50:.3f}", f"{m:.3f} ± {s:.3f}"] if spread else [f"{m50:.3f}", f"{m:.3f}"]
        cells = [name, f"{e.results['map0']:.4f}", *fine_tuned, *deltas]
        rows.append(f"| {' | '.join(cells)} |")
    note = rank_note(stock.results["map0"], mean_sd(stock.results["map_seeds"])[0])
    gaps = [e.results["start_gap"] for e in entries[1:] if "start_gap" in e.results]
    text = [
        "# yolo_attn fine-tune comparison",
        "",
        f"{machine_line(settings['machine'])} Device {settings['device']}. Run {settings['started']}, "
        f"{settings['minutes']:.1f} min in all.",
        "",
        *([f"**{note}**", ""] if note else []),
        *(["**One seed: the differences come without a band or a verdict.**", ""] if settings["seeds"] < 2 else []),
        *rows,
        "",
        f"- Stock weights: {settings['weights']} ({settings['pretraining']}).",
        f"- Fine-tuning: {plural(settings['epochs'], 'epoch')} at {settings['imgsz']} px, batch {settings['batch']}, "
        f"{', '.join(settings['recipe'])}, seeds {list(range(settings['seeds']))} (`deterministic=True`), from the "
        "stock weights; the stock model itself is fine-tuned the same way. Mean ± sample standard deviation.",
        "- Variants start as the identity (`layer_scale: 0.0`) with every stock item transferred; epoch 0 is their "
        "validation before any step, which equals the stock model's (checked in the run), and so do their raw "
        "outputs on bus.jpg and zidane.jpg"
        + (f" (largest difference {max(gaps):.1e} of the output scale)." if gaps else "."),
        "- Δ vs stock: difference of the mAP50-95 means to the fine-tuned stock model ± the 95 % band (Welch t, seeds "
        "as independent samples). Paired by seed: mean of the per-seed differences ± its 95 % band (paired t); a "
        "variant and the stock model with the same seed share data order, augmentation and starting weights, so this "
        "band leaves out the seed-to-seed spread they have in common.",
    ]
    (out / "finetune.md").write_text("\n".join(text) + "\n")
    (out / "finetune.json").write_text(json.dumps({"settings": settings, **{e.name: e.results for e in entries}}))
    _chart(entries, settings, out / "finetune.png")


def _chart(entries: list[Entry], settings: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: the caller's matplotlib backend stays as it was

    stock = entries[0]
    fig = Figure(figsize=(max(6.0, 1.2 * len(entries) + 2), 4))
    ax = fig.subplots()
    for k, e in enumerate(entries):
        m, s = mean_sd(e.results["map_seeds"])
        ax.bar(k, m, yerr=s if len(e.results["map_seeds"]) > 1 else 0, color="grey" if e is stock else "tab:blue")
        ax.plot([k - 0.4, k + 0.4], [e.results["map0"]] * 2, "k--", lw=1)
    ax.set_xticks(range(len(entries)), [e.name for e in entries], rotation=30, ha="right")
    ax.set_ylabel("mAP50-95 (dashed: epoch 0)")
    ax.set_title(chart_title(settings), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def chart_title(settings: dict[str, Any]) -> str:
    """Return the chart title, on two lines so that it fits a chart of two bars."""
    return (
        f"Fine-tuned {plural(settings['epochs'], 'epoch')} from the same stock weights\n"
        f"{plural(settings['seeds'], 'seed')}" + (" (no spread)" if settings["seeds"] < 2 else ", bars: mean ± sd")
    )
