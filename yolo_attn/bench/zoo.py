"""The benchmarked models: the stock n models and every shipped plugin YAML at scale n."""

from __future__ import annotations

import fnmatch
import re
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolo_attn.bench.timing import quiet
from yolo_attn.lookup import shipped_dir

STOCK_FAMILIES = ("yolov8", "yolo11", "yolo26")  # always in the table, even with no plugin YAML of theirs selected
OTHER_TASKS = ("-seg-", "-pose-", "-obb-", "-cls-")  # segment/pose/OBB/classify variants: not in this benchmark
_YAML_NAME = re.compile(r"^(?P<family>yolov?\d+)(?P<variant>-[^.]+)\.ya?ml$")  # yolov8-cot.yaml, yolo11-ca-neck.yaml


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
        if m["variant"].startswith(OTHER_TASKS):
            continue  # the benchmark trains and times detection models on synth-shapes
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


def build(entry: Entry) -> Any:
    """Build the model from its YAML (nc from the YAML, 80 for COCO-style YAMLs), quietly."""
    from ultralytics import YOLO

    with quiet():
        return YOLO(entry.yaml)


def guard(entry: Entry, what: str, fn: Callable[[], Any]) -> Any:
    """Run one measurement; record a failure on the entry instead of aborting the whole benchmark."""
    try:
        return fn()
    except Exception as exc:  # a broken model must not cost the other rows
        entry.errors.append(f"{what}: {type(exc).__name__}: {exc}")
        print(f"benchmark: {entry.name}: {what} failed\n{traceback.format_exc()}", file=sys.stderr)
        return None


def export(entry: Entry, imgsz: int, folder: Path, fmt: str = "onnx") -> Path:
    """Export the model with Ultralytics' exporter (`fmt` "onnx", simplified, or "openvino"; static shape).

    Returns the file a runtime loads: the .onnx file, or the OpenVINO .xml inside the exported folder.
    """
    from ultralytics import YOLO

    sub = folder / f"{fmt}-{imgsz}"
    sub.mkdir(parents=True, exist_ok=True)
    pt = sub / f"{entry.name}.pt"
    build(entry).save(pt)  # a checkpoint in a temp folder: the exporter writes next to its source file
    with quiet():
        out = Path(YOLO(pt).export(format=fmt, imgsz=imgsz, simplify=True, device="cpu", verbose=False))
    return next(out.glob("*.xml")) if out.is_dir() else out
