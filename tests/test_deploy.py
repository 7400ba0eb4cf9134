"""Deployment beyond ONNX: every operator through each export format of `yolo export`, run by Ultralytics' AutoBackend.

One detector holds every plugin operator (helpers.ALL_OPS_YAML: CoTAttention, C2f_CoT, C3k2_CoT with C3k_CoT blocks,
AttnConv with and without ConvFFN, CoordAtt). It is exported with the Python API as a user would, the file is loaded
by `AutoBackend` (what `yolo predict model=<exported>` runs) and its raw head output on two photos is compared with
PyTorch float32. The bound, per output block (box rows in pixels, class-score rows): the plugin model's error is
within twice the stock yolov8n's error in the same format, or within the float32 parity bound of the ONNX tests
(1e-3 * max|y| + 1e-4), whichever is larger. Both models are untrained and calibrated
(`yolo_attn.bench.calibrate`) so their outputs depend on the image: a broken operator shows as an error of pixels.

The fast set runs ncnn (ncnn and pnnx, about 110 MB, in the dev extra); `pytest -m exhaustive` runs every format
whose exporter is installed (`pip install ".[deploy]"`), each skipping with the package it needs when that is absent.
CoreML and Core AI have no runtime on Linux: their tests check that the conversion succeeds.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ABS, ALL_OPS_YAML, IMGSZ, REL, make_checkpoint, run

from yolo_attn.bench.deploy import NO_RUNTIME_HERE

# format -> the import names its exporter and runtime need (what `pip install ".[deploy]"` brings)
NEEDS = {
    "torchscript": [],
    "openvino": ["openvino"],
    "ncnn": ["ncnn", "pnnx"],
    "mnn": ["MNN"],
    "paddle": ["paddle", "x2paddle"],
    "litert": ["litert_torch", "ai_edge_litert"],
    "executorch": ["executorch"],
    "saved_model": ["tensorflow", "onnx2tf"],
    "pb": ["tensorflow", "onnx2tf"],
    "coreml": ["coremltools"],
    "coreai": ["coreai_torch"],
}
FAST = {"ncnn"}
OWN_ENV = {"saved_model", "pb", "coreml"}  # numpy < 2.2 (TensorFlow 2.19) and <= 2.3.5 (coremltools 9)


def _python(fmt: str) -> str:
    """The interpreter that exports `fmt`: TensorFlow and CoreML need their own environment (scripts/deploy_env.sh),
    named by YOLO_ATTN_TF_PYTHON; every other format exports here."""
    return os.environ.get("YOLO_ATTN_TF_PYTHON", "") if fmt in OWN_ENV else sys.executable


def _requires(fmt: str) -> None:
    if fmt in OWN_ENV:
        if not _python(fmt):
            pytest.skip(f"{fmt} needs numpy < 2.2: bash scripts/deploy_env.sh, then YOLO_ATTN_TF_PYTHON=<its python>")
        probe = subprocess.run([_python(fmt), "-c", f"import {', '.join(NEEDS[fmt])}, yolo_attn"], capture_output=True)
        assert probe.returncode == 0, f"YOLO_ATTN_TF_PYTHON cannot import {NEEDS[fmt]}: {probe.stderr[-500:]}"
        return
    missing = [m for m in NEEDS[fmt] if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{fmt} export needs {', '.join(missing)}: pip install '.[deploy]' (docs/export.md)")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    """The every-operator detector and the stock yolov8n, untrained and calibrated."""
    work = tmp_path_factory.mktemp("deploy")
    (work / "yolov8-allops.yaml").write_text(ALL_OPS_YAML)
    return {
        "plugin": str(make_checkpoint(str(work / "yolov8n-allops.yaml"), work / "allops.pt")),
        "stock": str(make_checkpoint("yolov8n.yaml", work / "stock.pt")),
    }


def cells(fmt: str, models: dict, folder: Path, python: str = sys.executable) -> dict:
    """Export and run `models` in `fmt` through the deploy benchmark's worker: a fresh interpreter per format, as
    `yolo-attn-bench deploy` runs it (exporters and runtimes of different frameworks in one process can deadlock:
    Paddle Inference hung on a futex after the other formats' runtimes had loaded)."""
    folder.mkdir()
    (folder / "job.json").write_text(json.dumps({"format": fmt, "imgsz": IMGSZ, "models": models, "rounds": 0}))
    out = run([python, "-m", "yolo_attn.bench.deploy", "job.json"], folder)
    assert (folder / "cells.json").exists(), out.stdout[-2000:] + out.stderr[-2000:]
    return json.loads((folder / "cells.json").read_text())


@pytest.mark.parametrize(
    "fmt",
    [f if f in FAST else pytest.param(f, marks=pytest.mark.exhaustive) for f in NEEDS if f not in NO_RUNTIME_HERE],
)
def test_every_operator_runs_in_the_format_as_close_as_stock(tmp_path, checkpoints, fmt):
    _requires(fmt)
    result = cells(fmt, checkpoints, tmp_path / fmt, python=_python(fmt))
    for name, cell in result.items():
        assert cell.get("runs"), f"{fmt} {name}: {cell.get('error')}"
    stock, plugin = result["stock"], result["plugin"]
    for block in ("box", "cls"):
        err, scale = plugin[f"{block}_err"], plugin[f"{block}_scale"]
        bound = max(2 * stock[f"{block}_err"], REL * scale + ABS)
        assert err <= bound, f"{fmt} {block}: plugin max|Δ| {err:.3g} > {bound:.3g} (stock {stock[f'{block}_err']:.3g})"


@pytest.mark.exhaustive
def test_every_operator_converts_to_coreml(tmp_path, checkpoints):
    """No CoreML runtime on Linux: the conversion succeeds (coremltools raises on an op it cannot convert) and the
    program is made of CoreML's own ops."""
    _requires("coreml")
    cell = cells("coreml", {"plugin": checkpoints["plugin"]}, tmp_path / "coreml", python=_python("coreml"))["plugin"]
    assert cell["exported"], cell.get("error")
    assert {"conv", "softmax", "mul", "add", "sigmoid"} <= set(cell["ops"]), cell["ops"]


@pytest.mark.exhaustive
def test_every_operator_converts_to_core_ai(tmp_path, checkpoints):
    """Core AI runs on macOS 26 only: the conversion succeeds."""
    _requires("coreai")
    cell = cells("coreai", {"plugin": checkpoints["plugin"]}, tmp_path / "coreai")["plugin"]
    assert cell["exported"] and cell["size_mb"] > 1, cell.get("error")
