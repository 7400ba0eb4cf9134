"""Deployment: ONNX and TorchScript exports of plugin models match PyTorch and run without the plugin.

Every exported file is run in a fresh interpreter where neither `yolo_attn` nor Ultralytics can be imported (the
start-up hook is off and a meta path finder refuses both), so a file that secretly needs the plugin fails here.

The models are untrained, so two steps make their outputs worth comparing. BatchNorm statistics are calibrated on
real photos (bus.jpg, zidane.jpg), which keeps every layer's activations at a sane scale (with the default statistics
YOLO's activations grow layer by layer, and float32 rounding alone moves the outputs by whole pixels). And the class
logits of the detection head are standardised over those photos, so class scores spread over (0, 1) where the sigmoid
is sensitive: the default prior puts every score near 1e-4 and random weights put many near 1, both in the sigmoid's
flat tails, which would hide a wrong class logit and make detections tie on score.

Parity bound, per output block (box rows in pixels, class-score rows in [0, 1]): max|Δ| <= 1e-3 * max|y| + 1e-4.
"""

import copy
import json
import logging
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from conftest import YOLO_BIN, outputs, randomise_norms, run
from torch import nn
from ultralytics import YOLO
from ultralytics.nn.modules import Conv
from ultralytics.utils import ASSETS, LOGGER, YAML
from ultralytics.utils.export.engine import best_onnx_opset

from yolo_attn import AttnConv, C2f_CoT, C3k2_CoT, CoordAtt, CoTAttention
from yolo_attn.lookup import shipped_dir
from yolo_attn.registry import plugin_modules

PY = sys.executable
IMGSZ = 160  # export size of the model tests
# Rectangular H x W, multiples of 32 as YOLO needs at the input; at stride 32 their maps are 2x3, 5x3 and 3x2: not
# multiples of AttnConv's pool (4) or of anything else inside the operators.
OTHER_SIZES = [(64, 96), (160, 96), (96, 64)]
REL, ABS = 1e-3, 1e-4  # the parity bound: max|Δ| <= REL * max|y| + ABS per output block
DEFAULT_OPSET = None  # Ultralytics' choice (18 with torch >= 2.4)
# Newest opset of the TorchScript-based exporter that Ultralytics uses (dynamo=False): 20 in torch 2.4 .. 2.15.
MAX_OPSET = getattr(torch.onnx._constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20)

# The YOLOv8/YOLO11 detection zoo, and one YAML per task head: YOLO26's end-to-end Detect, Segment, Pose, OBB,
# Classify (the other YOLO26 detection variants use the same operators and head).
PER_TASK = ("yolo26-cot", "yolo26-attnconv-neck", "yolo11-seg-ca", "yolo26-pose-cot", "yolo11-obb-ca", "yolo26-cls-cot")
YAMLS = sorted(p for p in shipped_dir("model_yamls").glob("*.yaml") if "base" not in YAML.load(p))
YAMLS += [shipped_dir("model_yamls") / f"{stem}.yaml" for stem in PER_TASK]

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


def images(h: int, w: int, batch: int = 1) -> np.ndarray:
    """Real photos resized to h x w, as a float32 (batch, 3, h, w) array in [0, 1]; bus.jpg first, then zidane.jpg."""
    photos = [cv2.imread(str(ASSETS / f))[:, :, ::-1] for f in ("bus.jpg", "zidane.jpg")]
    x = [cv2.resize(photos[i % 2], (w, h)).transpose(2, 0, 1) for i in range(batch)]
    return (np.stack(x) / 255.0).astype(np.float32)


def scale_n(path: Path) -> str:
    """Bare name of the n scale of a shipped YAML: yolov8-ca.yaml -> yolov8n-ca.yaml."""
    return re.sub(r"^(yolo(?:v)?\d+)", r"\1n", path.name, count=1)


def make_checkpoint(cfg: str, path: Path, spread_scores: bool = True) -> Path:
    """Build an untrained model, calibrate it on real photos (see the module docstring), save a loadable checkpoint."""
    torch.manual_seed(0)
    model = YOLO(cfg)
    net = model.model
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    net.train()
    with torch.no_grad():
        for h, w in [(160, 160), (128, 192), (192, 128)]:
            x = torch.from_numpy(images(h, w, batch=4))
            net(torch.cat((x, x.flip(3))))  # the photos and their mirror images
        net.eval()
        head = net.model[-1]
        if spread_scores and hasattr(head, "cv3"):  # standardise each level's class logits over the photos
            # the 1x1 convs that output class logits (YOLO26's end-to-end head infers with its one-to-one branch)
            heads = [branch[-1] for branch in (head.one2one_cv3 if getattr(head, "end2end", False) else head.cv3)]
            logits = []
            hooks = [
                m.register_forward_hook(lambda m, i, out: logits.append(out - m.bias[:, None, None])) for m in heads
            ]
            net(torch.from_numpy(images(256, 192, batch=2)))
            for hook in hooks:
                hook.remove()
            for m, z in zip(heads, logits):
                m.weight.div_(z.std())
                m.bias.copy_(-z.mean((0, 2, 3)) / z.std())
    model.save(path)
    return path


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
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    LOGGER.addHandler(handler)
    try:
        f = YOLO(ckpt).export(**{"imgsz": IMGSZ, "half": False, "verbose": False, **kwargs})
    finally:
        LOGGER.removeHandler(handler)
    failures = [r.getMessage() for r in records if "failure" in r.getMessage()]
    assert not failures, failures
    f = Path(f)
    return f.rename(f.with_name(name + f.suffix))


def inputs_for(dynamic: bool) -> list:
    """Inputs at the export size, and for dynamic exports also a batch of 2 and the rectangular sizes."""
    xs = [images(IMGSZ, IMGSZ)]
    if dynamic:
        xs += [images(IMGSZ, IMGSZ, batch=2)] + [images(h, w, batch=1) for h, w in OTHER_SIZES]
    return xs


@pytest.fixture(scope="module")
def all_ops_ckpt(tmp_path_factory) -> Path:
    """Checkpoint of the every-operator detector (scale n); a new plugin module must be added to ALL_OPS_YAML."""
    work = tmp_path_factory.mktemp("all_ops")
    (work / "yolov8-allops.yaml").write_text(ALL_OPS_YAML)
    ckpt = make_checkpoint(str(work / "yolov8n-allops.yaml"), work / "allops.pt")
    kinds = {type(m) for m in YOLO(ckpt).model.modules()}
    assert set(plugin_modules().values()) <= kinds
    return ckpt


# ---------------------------------------------------------------------------------------------------------------------
# Each operator alone: every opset, odd and tiny maps
# ---------------------------------------------------------------------------------------------------------------------
OPERATORS = {
    "CoordAtt": (lambda: CoordAtt(64, 64), 64),
    "CoTAttention": (lambda: CoTAttention(64, 64), 64),
    "AttnConv": (lambda: AttnConv(64, 64), 64),
    "AttnConv-2k-pool3-ffn": (lambda: AttnConv(64, 64, 8, (3, 5), 0.25, 3, False, 2.0), 64),
    "C2f_CoT": (lambda: C2f_CoT(32, 64, 1, True), 32),
    "C3k2_CoT-c3k": (lambda: C3k2_CoT(32, 64, 1, True), 32),
}


def test_each_operator_exports_at_oldest_and_newest_opset(tmp_path):
    sizes = [(20, 20), (1, 1), (3, 2), (7, 5), (13, 9), (6, 17)]
    jobs, refs = {}, {}
    for name, (build, c) in OPERATORS.items():
        torch.manual_seed(0)
        m = randomise_norms(build()).eval()
        xs = [torch.randn(2 if i == 1 else 1, c, h, w) for i, (h, w) in enumerate(sizes)]
        with torch.no_grad():
            refs[name] = [m(x).numpy() for x in xs]
        for opset in (13, MAX_OPSET):
            f = tmp_path / f"{name}-{opset}.onnx"
            axes = {0: "batch", 2: "height", 3: "width"}
            torch.onnx.export(
                m, xs[0], f, opset_version=opset, input_names=["x"], output_names=["y"],
                dynamic_axes={"x": axes, "y": axes}, dynamo=False,
            )  # fmt: skip
            onnx.checker.check_model(onnx.load(f), full_check=True)
            jobs[f"{name}@{opset}"] = (f, [x.numpy() for x in xs])
    results = run_isolated(tmp_path, jobs)
    for job, outs in results.items():
        for (h, w), (y,), ref in zip(sizes, outs, refs[job.split("@")[0]]):
            diff, scale = float(np.abs(y - ref).max()), float(np.abs(ref).max())
            assert diff <= 1e-5 * scale + 1e-5, f"{job} at {h}x{w}: max|Δ| = {diff:.3g}, max|y| = {scale:.3g}"


# ---------------------------------------------------------------------------------------------------------------------
# Every shipped model YAML: ONNX Runtime agrees with PyTorch
# ---------------------------------------------------------------------------------------------------------------------
# Dynamic, so that rectangular sizes are checked for every YAML. Unsimplified, because onnxslim's symbolic shape
# inference triples the export time of a dynamic graph (4.6 s against 1.6 s for yolo11n-cot-neck) and the number of
# YAMLs grows; simplification is checked on the every-operator model below, which holds each operator of every YAML.
YAML_EXPORT = {"dynamic": True, "simplify": False}


@pytest.mark.parametrize("yaml", YAMLS, ids=lambda p: p.stem)
def test_shipped_yaml_onnx_matches_pytorch(tmp_path, yaml):
    cfg = scale_n(yaml)
    ckpt = make_checkpoint(cfg, tmp_path / f"{Path(cfg).stem}.pt")
    model = YOLO(ckpt)
    assert model.model.yaml.get("scale", "n") == "n"
    assert any(type(m) in plugin_modules().values() for m in model.model.modules()), f"{cfg} has no plugin layer"
    f = export(ckpt, "dynamic", format="onnx", **YAML_EXPORT)
    xs = inputs_for(dynamic=True)
    (outs,) = run_isolated(tmp_path, {"model": (f, xs)}).values()
    for x, (y, *_), ref in zip(xs, outs, reference(ckpt, xs)):  # the first output (a segment model adds its protos)
        assert_close(y, ref, f"{cfg} at {x.shape}")


# ---------------------------------------------------------------------------------------------------------------------
# Export options: opsets 13..newest, dynamic or not, simplified or not, Python API and `yolo export`
# ---------------------------------------------------------------------------------------------------------------------
MATRIX = [  # (opset, dynamic, simplify, interface) on the every-operator model; simplification is Ultralytics' default
    (13, True, True, "cli"),
    (13, False, False, "python"),
    (14, True, False, "python"),
    (15, False, False, "python"),
    (16, True, False, "python"),
    (17, False, False, "python"),
    (DEFAULT_OPSET, True, True, "python"),
    (DEFAULT_OPSET, False, False, "python"),
    (19, True, False, "python"),
    (MAX_OPSET, True, False, "python"),
    (MAX_OPSET, False, True, "python"),
]


def _cell(opset, dynamic, simplify, interface) -> str:
    return f"{interface}-opset{opset or 'default'}-{'dynamic' if dynamic else 'static'}-{'slim' if simplify else 'raw'}"


@pytest.fixture(scope="module")
def all_ops_exports(all_ops_ckpt) -> dict:
    """Export the every-operator model once per matrix cell: cell name -> (ONNX file, dynamic)."""
    files = {}
    for opset, dynamic, simplify, interface in MATRIX:
        name = _cell(opset, dynamic, simplify, interface)
        options = {"format": "onnx", "opset": opset, "dynamic": dynamic, "simplify": simplify, "half": False}
        if interface == "python":
            f = export(all_ops_ckpt, name, **options)
        else:  # the stock command in a fresh interpreter, where the start-up hook loads the plugin
            args = [f"{k}={v}" for k, v in options.items() if v is not None]
            out = run([YOLO_BIN, "export", f"model={all_ops_ckpt}", f"imgsz={IMGSZ}", *args], all_ops_ckpt.parent)
            assert "failure" not in out.stdout + out.stderr  # Ultralytics reports a failed simplification so
            f = all_ops_ckpt.with_suffix(".onnx").rename(all_ops_ckpt.with_name(f"{name}.onnx"))
        written = {o.domain: o.version for o in onnx.load(f).opset_import}[""]
        assert written == (opset or best_onnx_opset(onnx)), name
        files[name] = (f, dynamic)
    return files


def test_export_matrix_matches_pytorch(tmp_path, all_ops_ckpt, all_ops_exports):
    jobs = {name: (f, inputs_for(dynamic)) for name, (f, dynamic) in all_ops_exports.items()}
    refs = {dynamic: reference(all_ops_ckpt, inputs_for(dynamic)) for dynamic in (False, True)}
    for name, outs in run_isolated(tmp_path, jobs).items():
        f, dynamic = all_ops_exports[name]
        for x, (y,), ref in zip(jobs[name][1], outs, refs[dynamic]):
            assert_close(y, ref, f"{name} at {x.shape}")


def test_torchscript_export_runs_without_plugin(tmp_path, all_ops_ckpt):
    """TorchScript, static and dynamic: the file holds the code, so torch alone runs it (a static one only at its size:
    the stock Detect head bakes the anchor grid of the export size in, as for stock models)."""
    jobs = {}
    for dynamic in (False, True):
        ckpt = tmp_path / f"ts-{'dynamic' if dynamic else 'static'}.pt"
        ckpt.write_bytes(all_ops_ckpt.read_bytes())
        f = YOLO(ckpt).export(format="torchscript", imgsz=IMGSZ, dynamic=dynamic, verbose=False)
        jobs[ckpt.stem] = (Path(f), inputs_for(dynamic))
    refs = {dynamic: reference(all_ops_ckpt, inputs_for(dynamic)) for dynamic in (False, True)}
    for name, outs in run_isolated(tmp_path, jobs, backend="torchscript").items():
        for x, (y, *_), ref in zip(jobs[name][1], outs, refs[name.endswith("dynamic")]):
            assert_close(y, ref, f"{name} at {x.shape}")


# ---------------------------------------------------------------------------------------------------------------------
# Fusion
# ---------------------------------------------------------------------------------------------------------------------
def test_fuse_folds_every_conv_bn_pair_in_plugin_layers(all_ops_ckpt):
    net = YOLO(all_ops_ckpt).model.float().eval()
    fused = copy.deepcopy(net).fuse(verbose=False)
    plugin_layers = [m for m in fused.model if type(m) in plugin_modules().values()]
    assert len(plugin_layers) == 6
    left = {
        f"{layer.i}.{name}": type(m).__name__
        for layer in plugin_layers
        for name, m in layer.named_modules()
        if (isinstance(m, Conv) and hasattr(m, "bn")) or isinstance(m, nn.BatchNorm2d)
    }
    # The only BatchNorm left is CoT's dynamic-context norm: it follows the local aggregation, not a conv.
    assert left and all(name.endswith("dyn_bn") for name in left), left
    n_cot = sum(isinstance(m, CoTAttention) for m in fused.modules())
    assert len(left) == n_cot
    xs = [images(IMGSZ, IMGSZ, batch=2), images(*OTHER_SIZES[1])]
    with torch.no_grad():
        for x in map(torch.from_numpy, xs):
            assert_close(fused(x)[0].numpy(), net(x)[0].numpy(), f"fused at {tuple(x.shape)}")


# ---------------------------------------------------------------------------------------------------------------------
# Ultralytics inference on the exported file: `yolo predict` and `yolo val`
# ---------------------------------------------------------------------------------------------------------------------
def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xywh boxes a (N, 4) against b (M, 4)."""
    a1, a2 = a[:, None, :2] - a[:, None, 2:] / 2, a[:, None, :2] + a[:, None, 2:] / 2
    b1, b2 = b[None, :, :2] - b[None, :, 2:] / 2, b[None, :, :2] + b[None, :, 2:] / 2
    inter = np.clip(np.minimum(a2, b2) - np.maximum(a1, b1), 0, None).prod(-1)
    return inter / (a[:, None, 2:].prod(-1) + b[None, :, 2:].prod(-1) - inter)


def test_yolo_predict_onnx_gives_the_pt_detections(tmp_path, all_ops_ckpt, all_ops_exports):
    f, _ = all_ops_exports[_cell(DEFAULT_OPSET, True, True, "python")]
    source, imgsz = ASSETS / "bus.jpg", 320  # letterboxed to 320 x 256 (rect), not the export size
    model = YOLO(all_ops_ckpt)
    scores = np.sort(model.predict(source, imgsz=imgsz, conf=0.01, verbose=False)[0].boxes.conf.numpy())[::-1]
    assert len(scores) >= 40
    # A threshold in the widest gap between the 10th and 40th best scores: no detection sits near it, so tiny
    # differences in score cannot move one across it. (NMS keeps a box or not by higher-scoring boxes only, so the
    # boxes above the threshold are the same whatever the threshold.)
    k = 10 + int(np.argmax(scores[9:39] - scores[10:40]))
    conf = float(scores[k - 1] + scores[k]) / 2
    score_tol = REL + ABS  # the parity bound on class scores
    assert scores[k - 1] - scores[k] > 4 * score_tol, "scores too crowded for a stable comparison"
    r = model.predict(source, imgsz=imgsz, conf=conf, verbose=False)[0]
    pt = np.concatenate([r.boxes.cls.numpy()[:, None], r.boxes.xywhn.numpy(), r.boxes.conf.numpy()[:, None]], 1)
    assert len(pt) == k
    args = [f"imgsz={imgsz}", f"conf={conf}", "save=False", "save_txt=True", "save_conf=True"]
    run([YOLO_BIN, "predict", f"model={f}", f"source={source}", f"project={tmp_path}", "name=onnx", *args], tmp_path)
    labels = np.loadtxt(tmp_path / "onnx" / "labels" / "bus.txt", ndmin=2)  # cls x y w h conf, normalised
    assert labels.shape == pt.shape, f"ONNX gave {len(labels)} detections, PyTorch {len(pt)}"
    iou = _iou(pt[:, 1:5], labels[:, 1:5])
    same_class = pt[:, None, 0] == labels[None, :, 0]
    match = np.argmax(np.where(same_class, iou, -1), axis=1)
    assert len(set(match)) == len(pt), "two PyTorch detections match the same ONNX detection"
    assert (iou[np.arange(len(pt)), match] > 0.99).all() and same_class[np.arange(len(pt)), match].all()
    assert np.abs(pt[:, 5] - labels[match, 5]).max() <= score_tol


def test_yolo_val_runs_on_onnx(tmp_path, tiny_data):
    ckpt = make_checkpoint("yolov8n-cot.yaml", tmp_path / "val.pt", spread_scores=False)
    f = export(ckpt, "val", format="onnx", dynamic=False, simplify=False)
    val = [YOLO_BIN, "val", f"model={f}", f"data={tiny_data}", f"imgsz={IMGSZ}", "plots=False"]
    out = run([*val, f"project={tmp_path}", "name=val"], tmp_path)
    assert re.search(r"^\s+all\s+8\s+\d+", out.stdout + out.stderr, re.MULTILINE)  # metrics row over all 8 images
