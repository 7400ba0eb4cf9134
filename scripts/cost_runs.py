"""The README's cost table from several runs of `yolo-attn-bench models --skip-train` (their benchmark.json files).

Each cell is the range of the per-run latency ratios (each run's median of interleaved per-round ratios) to the stock
model of the same family; ✗ marks a cell over its target (FLOPs ratio + 0.05, train step + 0.10) in every run, (✗)
in some runs. Usage: `python scripts/cost_runs.py RUN1/benchmark.json RUN2/benchmark.json ...`
"""

import json
import sys
from pathlib import Path

from yolo_attn.bench.report import RUNTIMES as TITLES
from yolo_attn.bench.report import TARGET_EXCESS

RUNTIMES = tuple((k, t, TARGET_EXCESS["inference"]) for k, t in TITLES if k != "pytorch_compiled")
STEP = ("train_step", "train step", TARGET_EXCESS["train_step"])


def table(runs: list) -> str:
    """Return the markdown table for the runs (lists of model records, same models in each)."""
    first = runs[0]
    stock = {m["family"]: m for m in first if m["stock"]}
    lines = [
        "| model | FLOPs ratio | " + " | ".join(title for _, title, _ in (*RUNTIMES, STEP)) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in (*RUNTIMES, STEP)) + " |",
    ]
    for i, model in enumerate(first):
        if model["stock"]:
            continue
        flops = model["gflops_full"] / stock[model["family"]]["gflops_full"]
        cells = []
        for key, _, target in (*RUNTIMES, STEP):
            ratios = [run[i].get(f"{key}_ratio") for run in runs]
            ratios = [r for r in ratios if r is not None]
            if not ratios:
                cells.append("–")
                continue
            over = [r - flops > target for r in ratios]
            mark = " ✗" if all(over) else " (✗)" if any(over) else ""
            lo, hi = min(ratios), max(ratios)
            cells.append((f"{lo:.2f}" if hi - lo < 0.005 else f"{lo:.2f}–{hi:.2f}") + mark)
        lines.append(f"| {model['name']} | {flops:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(paths: list) -> None:
    runs = [json.loads(Path(p).read_text()) for p in paths]
    names = [[m["name"] for m in run["models"]] for run in runs]
    assert all(n == names[0] for n in names), "the runs must cover the same models in the same order"
    for run in runs:
        load = run["machine"]["loadavg_start"][0], run["machine"]["loadavg_end"][0]
        print(f"<!-- {run['machine']['cpu']}, load {load[0]:.2f} -> {load[1]:.2f} -->")
    print(table([run["models"] for run in runs]))


if __name__ == "__main__":
    main(sys.argv[1:])
