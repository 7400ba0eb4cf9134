"""Helpers the tests share: the installed console scripts, the stock-YAML sample, a subprocess runner, output
flattening, the logger capture; and for the export tests (test_export.py, test_openvino.py, test_deploy.py,
test_compile.py) the every-operator detector, the parity bound, and an interpreter without the plugin.

`tests/conftest.py` holds only fixtures and hooks; it sets the sandbox's environment before this module (and so
Ultralytics) is imported.

The export models are untrained; `yolo_attn.bench.calibrate` (photos as inputs, calibrated checkpoints, shared with
`yolo-attn-bench deploy`) makes their outputs depend on the image.

Parity bound, per output block (box rows in pixels, class-score rows in [0, 1]): max|Δ| <= 1e-3 * max|y| + 1e-4.
"""

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import ultralytics.nn.tasks as tasks
from ultralytics import YOLO
from ultralytics.utils import LOGGER

from yolo_attn import compat
from yolo_attn.bench.calibrate import calibrated_checkpoint as make_checkpoint  # noqa: F401 (the tests' name)
from yolo_attn.bench.calibrate import photos as images
from yolo_attn.lookup import shipped_dir

SANDBOX = Path(os.environ["YOLO_CONFIG_DIR"]).parent  # this test session's settings, data sets and runs (conftest)
PY = sys.executable
# The installed console scripts of this environment.
YOLO_BIN = str(Path(PY).with_name("yolo"))
YOLO_ATTN_BIN = str(Path(PY).with_name("yolo-attn"))
BENCH_BIN = str(Path(PY).with_name("yolo-attn-bench"))
CA_YAML = shipped_dir("model_yamls") / "yolov8-ca.yaml"  # the smallest shipped plugin model
MODEL_CLASSES = {  # Ultralytics' model class for each task
    "detect": tasks.DetectionModel,
    "segment": tasks.SegmentationModel,
    "pose": tasks.PoseModel,
    "obb": tasks.OBBModel,
    "classify": tasks.ClassificationModel,
}
# On a release before YOLO26 (8.3), a case naming a YOLO26 model is skipped with the reason (the two hooks below).
HAS_YOLO26 = compat.has_yolo26()
# The fast set's sample of the stock-YAML sweeps: the families the plugin ships YAMLs for, one per task (YOLO11's
# pose and classify models stand in for YOLO26's before 8.4).
STOCK_SAMPLE = {"yolov8.yaml", "yolo11.yaml", "yolo11-seg.yaml", "yolo11-obb.yaml"}
STOCK_SAMPLE |= (
    {"yolo26.yaml", "yolo26-pose.yaml", "yolo26-cls.yaml"} if HAS_YOLO26 else {"yolo11-pose.yaml", "yolo11-cls.yaml"}
)


def sampled(paths: list, sample: set) -> list:
    """Parameters for a sweep over `paths`: those named in `sample` run in the fast set, the others only with
    `pytest -m exhaustive`.

    Args:
        paths (list): The files the sweep covers (Path objects).
        sample (set): File names that stay in the fast set.

    Returns:
        (list): Each path, or a pytest.param carrying the `exhaustive` marker.
    """
    missing = sample - {p.name for p in paths}
    assert not missing, f"the fast sample names files that do not exist: {sorted(missing)}"
    return [p if p.name in sample else pytest.param(p, marks=pytest.mark.exhaustive) for p in paths]


def logged(fn) -> list:
    """Call `fn` and return the messages Ultralytics' logger emitted meanwhile."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    LOGGER.addHandler(handler)
    try:
        fn()
    finally:
        LOGGER.removeHandler(handler)
    return [r.getMessage() for r in records]


def run(args: list, cwd: Path, env: dict = None, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command in a fresh interpreter, failing the test with its output if it exits non-zero (with `check`)."""
    proc = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0 or not check, (
        f"{' '.join(map(str, args))} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )
    return proc


def outputs(x) -> list:
    """Flatten a model's (nested) output into a list of tensors."""
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict):
        x = list(x.values())
    return [t for item in (x if isinstance(x, (list, tuple)) else []) for t in outputs(item)]


def randomise_norms(m: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every norm layer non-trivial statistics and affine parameters, so a misplaced norm shows in the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)):
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.3)
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=g) * 0.3)
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) + 1.0)
    return m


IMGSZ = 160  # export size of the model tests
# Rectangular H x W, multiples of 32 as YOLO needs at the input; at stride 32 their maps are 2x3, 5x3 and 3x2: not
# multiples of AttnConv's pool (4) or of anything else inside the operators.
OTHER_SIZES = [(64, 96), (160, 96), (96, 64)]
REL, ABS = 1e-3, 1e-4  # the parity bound: max|Δ| <= REL * max|y| + ABS per output block

# Every plugin operator in one small detector, for the export matrix: a matrix cell then covers each operator.
ALL_OPS_YAML = """
nc: 80
scales:
  n: [0.33, 0.25, 1024]
backbone:
  - [-1, 1, Conv, [64, 3, 2]] # 0-P1/2
  - [-1, 1, Conv, [128, 3, 2]] # 1-P2/4
  - [-1, 1, C2f_CoT, [128, True]] # 2
  - [-1, 1, Conv, [256, 3, 2]] # 3-P3/8
  - [-1, 1, C3k2_CoT, [256, True]] # 4 (C3k_CoT inner blocks)
  - [-1, 1, Conv, [512, 3, 2]] # 5-P4/16
  - [-1, 1, AttnConv, [512, 0, 5, 0.5, 4, True, 2.0]] # 6 with ConvFFN
  - [-1, 1, Conv, [1024, 3, 2]] # 7-P5/32
  - [-1, 1, CoTAttention, [1024]] # 8
  - [-1, 1, CoordAtt, [1024]] # 9
  - [-1, 1, SPPF, [1024, 5]] # 10
head:
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 6], 1, Concat, [1]]
  - [-1, 1, C2f, [512]] # 13
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 4], 1, Concat, [1]]
  - [-1, 1, C2f, [256]] # 16
  - [-1, 1, AttnConv, [256, 0, [3, 5], 0.5, 3]] # 17 two local kernels, pool 3
  - [-1, 1, Conv, [256, 3, 2]]
  - [[-1, 13], 1, Concat, [1]]
  - [-1, 1, C2f, [512]] # 20
  - [-1, 1, Conv, [512, 3, 2]]
  - [[-1, 10], 1, Concat, [1]]
  - [-1, 1, C2f, [1024]] # 23
  - [[17, 20, 23], 1, Detect, [nc]]
"""

# A fresh interpreter in which the plugin and Ultralytics cannot be imported runs exported files and saves outputs.
ISOLATED_RUNNER = r'''
import json, sys

BLOCKED = ("yolo_attn", "ultralytics")


class Refuse:
    """Meta path finder that makes the plugin and Ultralytics unimportable in this interpreter."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: a deployed model must run without it")
        return None


sys.meta_path.insert(0, Refuse())
for name in BLOCKED:
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{name} is imported or importable despite the block")

import numpy as np

backend, jobs_file, inputs_file, outputs_file = sys.argv[1:5]
jobs = json.load(open(jobs_file))
inputs = np.load(inputs_file)
outputs = {}
for job, path in jobs.items():
    keys = [k for k in inputs.files if k.split("|")[0] == job]
    if backend == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for key in keys:
            for j, y in enumerate(session.run(None, {name: inputs[key]})):
                outputs[f"{key}|{j}"] = y
    else:
        import torch

        model = torch.jit.load(path).eval()
        for key in keys:
            with torch.no_grad():
                y = model(torch.from_numpy(inputs[key]))
            for j, t in enumerate(y if isinstance(y, (list, tuple)) else [y]):
                outputs[f"{key}|{j}"] = t.numpy()
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
assert not loaded, f"loaded in the isolated interpreter: {loaded}"
np.savez(outputs_file, **outputs)
print("ISOLATED-OK", backend, len(outputs))
'''


def run_isolated(tmp: Path, jobs: dict, backend: str = "onnx") -> dict:
    """Run exported files in an interpreter without the plugin or Ultralytics.

    Args:
        tmp (Path): Folder for the exchange files.
        jobs (dict): Job name -> (exported file, list of input arrays).
        backend (str): "onnx" (ONNX Runtime) or "torchscript" (torch.jit.load).

    Returns:
        (dict): Job name -> list (one item per input) of lists of output arrays.
    """
    script, jobs_file, inputs_file, outputs_file = (tmp / n for n in ("runner.py", "jobs.json", "in.npz", "out.npz"))
    script.write_text(ISOLATED_RUNNER)
    jobs_file.write_text(json.dumps({job: str(path) for job, (path, _) in jobs.items()}))
    np.savez(inputs_file, **{f"{job}|{i}": x for job, (_, xs) in jobs.items() for i, x in enumerate(xs)})
    out = run([PY, script, backend, jobs_file, inputs_file, outputs_file], tmp, env={"YOLO_ATTN_AUTOLOAD": "0"})
    assert "ISOLATED-OK" in out.stdout
    saved = np.load(outputs_file)
    result = {}
    for job, (_, xs) in jobs.items():
        result[job] = [
            [saved[k] for k in sorted((k for k in saved.files if k.startswith(f"{job}|{i}|")), key=_last_int)]
            for i in range(len(xs))
        ]
    return result


def _last_int(key: str) -> int:
    return int(key.rsplit("|", 1)[1])


def scale_n(path: Path) -> str:
    """Bare name of the n scale of a shipped YAML: yolov8-ca.yaml -> yolov8n-ca.yaml."""
    return re.sub(r"^(yolo(?:v)?\d+)", r"\1n", path.name, count=1)


def reference(ckpt: Path, xs: list) -> list:
    """Outputs of the checkpoint's PyTorch model in eval mode, unfused, float32 (first output: the decoded boxes)."""
    net = YOLO(ckpt).model.float().eval()
    with torch.no_grad():
        return [outputs(net(torch.from_numpy(x)))[0].numpy() for x in xs]


def assert_close(y: np.ndarray, ref: np.ndarray, what: str) -> dict:
    """Check the parity bound on the box rows and the other rows (class scores, mask coefficients, keypoints, angles)
    of a (B, 4 + nc + extra, anchors) output; of an end-to-end (B, detections, 6) output's boxes and scores; of
    classification probabilities (B, nc)."""
    assert y.shape == ref.shape, f"{what}: shape {y.shape} != {ref.shape}"
    if y.ndim == 2:  # Classify
        blocks = {"cls": (slice(None), slice(None))}
    elif y.shape[-1] == 6:  # end-to-end: x1, y1, x2, y2, score, class per detection
        blocks = {"box": (slice(None), slice(None), slice(0, 4)), "cls": (slice(None), slice(None), slice(4, 5))}
    else:
        blocks = {"box": (slice(None), slice(0, 4)), "cls": (slice(None), slice(4, None))}
    stats = {}
    for block, rows in blocks.items():
        diff = float(np.abs(y[rows] - ref[rows]).max())
        scale = float(np.abs(ref[rows]).max())
        bound = REL * scale + ABS
        assert diff <= bound, f"{what} {block}: max|Δ| = {diff:.3g} > {bound:.3g} (max|y| = {scale:.3g})"
        stats[block] = (diff, scale)
    return stats


def export(ckpt: Path, name: str, **kwargs) -> Path:
    """Export with the Python API, check that requested simplification happened, and give the file its own name."""
    options, files = {"imgsz": IMGSZ, "half": False, "verbose": False, **kwargs}, []
    failures = [m for m in logged(lambda: files.append(YOLO(ckpt).export(**options))) if "failure" in m]
    assert not failures, failures
    f = Path(files[0])
    return f.rename(f.with_name(name + f.suffix))


def inputs_for(dynamic: bool) -> list:
    """Inputs at the export size, and for dynamic exports also a batch of 2 and the rectangular sizes."""
    xs = [images(IMGSZ, IMGSZ)]
    if dynamic:
        xs += [images(IMGSZ, IMGSZ, batch=2)] + [images(h, w, batch=1) for h, w in OTHER_SIZES]
    return xs


def table_operator(name: str, c: int = 64) -> tuple:
    """Build the operator table's row `name` with its default options; return (module, input channels).

    A channel-keeping row is built as (c, c); a CSP twin as (c // 2, c, 1, True): one inner block, its first option on
    (C2f's shortcut, C3k2's C3k blocks), so the twin's own bottleneck path runs.
    """
    from yolo_attn import operators

    cls = operators.load(name)
    if operators.get(name).keeps_channels:
        return cls(c, c), c
    return cls(c // 2, c, 1, True), c // 2
