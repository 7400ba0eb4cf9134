"""`yolo-attn-bench finetune`: did attention help, when every model starts from the same pretrained weights?

1. The stock model of a family (`yolov8n` by default) is trained once from scratch on `--data`, or taken from
   `--pretrained`; the trained weights are cached in the output folder.
2. Every insert-only variant of that family is built with the identity start (`layer_scale: 0.0`) and loads those
   weights: every stock item transfers, so before any step it predicts as stock. Its epoch-0 validation is checked
   against the stock model's and reported.
3. The stock model and every variant are fine-tuned from those weights with the same budget and seeds; the table
   gives mAP after fine-tuning and the difference to the fine-tuned stock model with its 95 % band.

Variants that replace stock blocks (`-c2f-cot`, `-c3k2-cot`) cannot start as the stock model and are left out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from yolo_attn.bench.models import _parse_train_args
from yolo_attn.bench.report import _n, duration, format_delta, mean_sd, noise_test, paired_test
from yolo_attn.bench.timing import machine_info, quiet, torch_threads
from yolo_attn.bench.train import _ultralytics_threads, train_all
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
# Below this mAP50-95 the stock model has learnt too little for a comparison to rank anything: the identity check
# passes trivially (0 = 0) and fine-tuning differences are those of models that barely detect.
MIN_STOCK_MAP = 0.05
PRESETS = {  # --preset NAME: other defaults; an option given on the command line (with another value) wins
    # About 5 min on 2 idle cores (551 CPU s measured, docs/finetune-usage.md): a try-out of the pipeline.
    "quick": {
        "models": ["{family}n-ca", "{family}n-cot"],
        "pretrain_epochs": 5,
        "epochs": 1,
        "imgsz": 128,
        "seeds": 2,
        "out": "runs/yolo_attn_finetune_quick",
    },
}


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
        help="quick: 2 variants, 5 pretraining epochs, 1 fine-tuning epoch, 2 seeds at 128 px (about 5 min on 2 CPU "
        "cores; tries the pipeline, too small to rank anything); options given explicitly win",
    )
    ap.set_defaults(preset_base={k: ap.get_default(k) for preset in PRESETS.values() for k in preset})


def apply_preset(args: argparse.Namespace) -> None:
    """Give the options of `args.preset` that the command line left at their defaults the preset's values."""
    for key, value in PRESETS.get(args.preset or "", {}).items():
        if getattr(args, key) == args.preset_base[key]:
            value = [v.format(family=args.family) for v in value] if key == "models" else value
            setattr(args, key, value)


def rank_note(stock_map0: float, stock_map: float | None = None) -> str | None:
    """Return a warning when the stock model has learnt too little to rank anything (mAP50-95 < MIN_STOCK_MAP)."""
    best = max(stock_map0, stock_map or 0.0)
    if best >= MIN_STOCK_MAP:
        return None
    return (
        f"The stock model reached mAP50-95 {best:.4f} (below {MIN_STOCK_MAP}): it has not learnt this data enough for "
        "the comparison to rank anything, and the epoch-0 identity check passes trivially. Pretrain longer "
        "(--pretrain-epochs), at a larger --imgsz, or give --pretrained weights."
    )


def _progress(total_epochs: int):
    """Return an Ultralytics `on_fit_epoch_end` callback printing one line per epoch with an estimate of time left."""
    started = time.perf_counter()

    def on_fit_epoch_end(trainer) -> None:
        done = trainer.epoch + 1
        elapsed = time.perf_counter() - started
        left = f", about {duration(elapsed / done * (total_epochs - done))} left" if done < total_epochs else ""
        m = (trainer.metrics or {}).get("metrics/mAP50-95(B)")
        score = f": mAP50-95 {m:.3f}" if m is not None else ""
        print(f"benchmark: pretraining epoch {done}/{total_epochs}{score} ({duration(elapsed)}{left})", flush=True)

    return on_fit_epoch_end


def pretrain(args: argparse.Namespace, out: Path) -> Path:
    """Return the stock weights: `--pretrained`, a cached run, or a new from-scratch training run (then cached)."""
    if args.pretrained:
        return Path(args.pretrained)
    cached = out / f"{args.family}n-{Path(args.data).stem}-{args.imgsz}px-{args.pretrain_epochs}ep.pt"
    if cached.is_file():
        print(f"benchmark: stock weights from the cache {cached}", flush=True)
        return cached
    from ultralytics import YOLO

    threads = args.threads * args.jobs  # the pretraining run is alone: it gets every fine-tuning job's threads
    print(
        f"benchmark: training {args.family}n from scratch, {args.pretrain_epochs} epochs, {threads} threads", flush=True
    )
    model = YOLO(f"{args.family}n.yaml")
    model.add_callback("on_fit_epoch_end", _progress(args.pretrain_epochs))
    with torch_threads(threads), quiet(not args.verbose), _ultralytics_threads(threads):
        model.train(data=args.data, epochs=args.pretrain_epochs, imgsz=args.imgsz, batch=args.batch,
                    device=args.device, workers=0, plots=False, seed=0, deterministic=True, pretrained=False,
                    **_parse_train_args(list(PRETRAIN_RECIPE)), project=str(out / "pretrain"), name=args.family,
                    exist_ok=True)  # fmt: skip
    shutil.copy(Path(model.trainer.best), cached)
    return cached


def identity_yaml(entry: Entry, nc: int, folder: Path) -> Path:
    """Write a model at the data's class count (scale n by its name): a variant in its identity-start form, or stock."""
    path = folder / f"{entry.name}-id.yaml"
    base = f"{entry.family}.yaml" if entry.stock else entry.source
    start = "" if entry.stock else "layer_scale: 0.0 # the attention layers start as the identity\n"
    path.write_text(f"base: {base}\nnc: {nc}\n{start}")
    return path


def epoch0(yaml: str, weights: Path, args: argparse.Namespace, out: Path) -> float:
    """Validate a model built from `yaml` with `weights` loaded, before any training step; return mAP50-95."""
    from ultralytics import YOLO

    model = YOLO(yaml)
    model.load(str(weights))
    with quiet(not args.verbose):
        metrics = model.val(data=args.data, imgsz=args.imgsz, batch=args.batch, device=args.device, workers=0,
                            plots=False, project=str(out / "epoch0"), name=Path(yaml).stem, exist_ok=True)  # fmt: skip
    return float(metrics.box.map)


def write_report(entries: list[Entry], settings: dict, out: Path) -> None:
    """Write finetune.md (table), finetune.png (chart) and finetune.json (every sample)."""
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
    text = [
        "# yolo_attn fine-tune comparison",
        "",
        f"{settings['machine']}. Run {settings['started']}, {settings['minutes']:.1f} min in all.",
        "",
        *([f"**{note}**", ""] if note else []),
        *(["**One seed: the differences come without a band or a verdict.**", ""] if settings["seeds"] < 2 else []),
        *rows,
        "",
        f"- Stock weights: {settings['weights']} ({settings['pretraining']}).",
        f"- Fine-tuning: {_n(settings['epochs'], 'epoch')} at {settings['imgsz']} px, batch {settings['batch']}, "
        f"{', '.join(FINETUNE_RECIPE)}, seeds {list(range(settings['seeds']))} (`deterministic=True`), from the "
        "stock weights; the stock model itself is fine-tuned the same way. Mean ± sample standard deviation.",
        "- Variants start as the identity (`layer_scale: 0.0`) with every stock item transferred; epoch 0 is their "
        "validation before any step, which equals the stock model's (checked in the run).",
        "- Δ vs stock: difference of the mAP50-95 means to the fine-tuned stock model ± the 95 % band (Welch t, seeds "
        "as independent samples). Paired by seed: mean of the per-seed differences ± its 95 % band (paired t); a "
        "variant and the stock model with the same seed share data order, augmentation and starting weights, so this "
        "band leaves out the seed-to-seed spread they have in common.",
    ]
    (out / "finetune.md").write_text("\n".join(text) + "\n")
    (out / "finetune.json").write_text(json.dumps({"settings": settings, **{e.name: e.results for e in entries}}))
    from matplotlib.figure import Figure  # no pyplot: the caller's matplotlib backend stays as it was

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
    fig.savefig(out / "finetune.png", dpi=120)


def chart_title(settings: dict) -> str:
    """Return the chart title, on two lines so that it fits a chart of two bars."""
    return (
        f"Fine-tuned {_n(settings['epochs'], 'epoch')} from the same stock weights\n"
        f"{_n(settings['seeds'], 'seed')}" + (" (no spread)" if settings["seeds"] < 2 else ", bars: mean ± sd")
    )


def main(args: argparse.Namespace) -> int:
    """Run the fine-tune comparison; return 0, or 1 when an identity-start model did not validate as stock."""
    from ultralytics.data.utils import check_det_dataset

    apply_preset(args)
    started, t = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), time.perf_counter()
    out = Path(args.out).resolve()  # Ultralytics nests a relative `project` under its runs_dir
    (out / "yamls").mkdir(parents=True, exist_ok=True)
    nc = check_det_dataset(args.data)["nc"]
    weights = pretrain(args, out)
    variants = [
        e
        for e in discover(args.models or [f"{args.family}n-*"])
        if e.family == args.family and not e.stock and not e.source.endswith(tuple(f"{r}.yaml" for r in REPLACING))
    ]
    stock = Entry(f"{args.family}n", f"{args.family}n.yaml", args.family, True)
    entries = [stock, *variants]
    for e in entries:  # built at the data's class count, so the head transfers too and epoch 0 is comparable
        e.yaml = str(identity_yaml(e, nc, out / "yamls"))
    status = 0
    for e in entries:
        e.results["map0"] = epoch0(e.yaml, weights, args, out)
        print(f"benchmark: {e.name} at epoch 0: mAP50-95 {e.results['map0']:.4f}", flush=True)
        if abs(e.results["map0"] - stock.results["map0"]) > 1e-6:
            print(f"benchmark: {e.name} does not start as the stock model at epoch 0", flush=True)
            status = 1
        if e is stock and rank_note(e.results["map0"]):
            print(f"benchmark: note: {rank_note(e.results['map0'])}", flush=True)
    train_args = _parse_train_args(list(FINETUNE_RECIPE))
    train_args.update(pretrained=str(weights), device=args.device)
    options = argparse.Namespace(
        data=args.data, epochs=args.epochs, imgsz_train=args.imgsz, batch=args.batch, fraction=1.0,
        threads=args.threads, verbose=args.verbose, train_args=train_args, seeds=args.seeds, jobs=args.jobs,
    )  # fmt: skip
    print(f"benchmark: fine-tuning {_n(len(entries), 'model')} x {_n(args.seeds, 'seed')}", flush=True)
    train_all(entries, options, out)
    m = machine_info()
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    settings = {
        "machine": f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']} RAM; {versions}; device {args.device}",
        "started": started,
        "minutes": (time.perf_counter() - t) / 60,
        "weights": str(weights),
        "pretraining": "given"
        if args.pretrained
        else f"{args.family}n from scratch, {args.pretrain_epochs} epochs, {', '.join(PRETRAIN_RECIPE)}",
        **{k: getattr(args, k) for k in ("epochs", "imgsz", "batch", "seeds", "data")},
    }
    write_report(entries, settings, out)
    print(f"benchmark: wrote {out / 'finetune.md'} and {out / 'finetune.png'}", flush=True)
    return status
