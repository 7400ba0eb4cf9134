"""Deployment: ONNX and TorchScript exports of plugin models match PyTorch and run without the plugin.

Every exported file is run in a fresh interpreter where neither `yolo_attn` nor Ultralytics can be imported (the
start-up hook is off and a meta path finder refuses both), so a file that secretly needs the plugin fails here. How the
untrained models are made worth comparing, and the parity bound: tests/helpers.py.

The fast set exports one representative model per head type and a few cells of the option matrix; the
`exhaustive` marker adds every shipped YAML and every cell.
"""

import copy
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    ABS,
    ALL_OPS_YAML,
    IMGSZ,
    OTHER_SIZES,
    REL,
    YOLO_BIN,
    assert_close,
    export,
    images,
    inputs_for,
    make_checkpoint,
    randomise_norms,
    reference,
    run,
    run_isolated,
    sampled,
    scale_n,
    table_operator,
)
from torch import nn
from ultralytics import YOLO
from ultralytics.nn.modules import Conv
from ultralytics.utils import ASSETS, YAML
from ultralytics.utils.export.engine import best_onnx_opset

from yolo_attn import AttnConv, CoTAttention
from yolo_attn.lookup import shipped_dir
from yolo_attn.operators import BUILTINS, plugin_modules

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

DEFAULT_OPSET = None  # Ultralytics' choice (18 with torch >= 2.4)
# Newest opset of the TorchScript-based exporter that Ultralytics uses (dynamo=False): 20 in torch 2.4 .. 2.15.
MAX_OPSET = getattr(torch.onnx._constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20)

# The YOLOv8/YOLO11 detection zoo, and one YAML per task head: YOLO26's end-to-end Detect, Segment, Pose, OBB,
# Classify (the other YOLO26 detection variants use the same operators and head).
PER_TASK = ("yolo26-cot", "yolo26-attnconv-neck", "yolo11-seg-ca", "yolo26-pose-cot", "yolo11-obb-ca", "yolo26-cls-cot")
YAMLS = sorted(p for p in shipped_dir("model_yamls").glob("*.yaml") if "base" not in YAML.load(p))
YAMLS += [shipped_dir("model_yamls") / f"{stem}.yaml" for stem in PER_TASK]
# The fast set: one model per head type (the YOLOv8/YOLO11 Detect head is the every-operator detector's, below).
HEAD_TYPES = {"yolo26-cot.yaml", "yolo11-seg-ca.yaml", "yolo26-pose-cot.yaml", "yolo11-obb-ca.yaml"}
HEAD_TYPES |= {"yolo26-cls-cot.yaml"}


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
OPERATORS = {op.name: lambda name=op.name: table_operator(name) for op in BUILTINS}  # every row of the table
OPERATORS.update(  # AttnConv's other paths: two kernel sizes, pools 3 and 1, the FFN sublayer
    {
        "AttnConv-2k-pool3-ffn": lambda: (AttnConv(64, 64, 8, (3, 5), 0.25, 3, False, 2.0), 64),
        "AttnConv-k7-pool1-ffn": lambda: (AttnConv(64, 64, None, [7], 0.5, 1, False, 2.0), 64),
    }
)


def test_each_operator_exports_at_oldest_and_newest_opset(tmp_path):
    # 40 x 40: AttnConv's eager forward takes its fused attention kernel there (N * M >= 2**15 scores), the ONNX graph
    # the written-out form it traces.
    sizes = [(20, 20), (1, 1), (3, 2), (7, 5), (13, 9), (6, 17), (40, 40)]
    jobs, refs = {}, {}
    for name, build in OPERATORS.items():
        torch.manual_seed(0)
        m, c = build()
        m = randomise_norms(m).eval()
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


@pytest.mark.parametrize("yaml", sampled(YAMLS, HEAD_TYPES), ids=lambda p: p.stem)
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


# The fast set's cell: the Python API with Ultralytics' defaults (which the `yolo predict` and `yolo val` tests below
# run); the others, the `yolo export` command among them, with `pytest -m exhaustive`.
FAST_CELLS = [(DEFAULT_OPSET, True, True, "python")]


def export_cells(ckpt: Path, cells: list) -> dict:
    """Export the every-operator model once per matrix cell: cell name -> (ONNX file, dynamic)."""
    files = {}
    for opset, dynamic, simplify, interface in cells:
        name = _cell(opset, dynamic, simplify, interface)
        options = {"format": "onnx", "opset": opset, "dynamic": dynamic, "simplify": simplify, "half": False}
        if interface == "python":
            f = export(ckpt, name, **options)
        else:  # the stock command in a fresh interpreter, where the start-up hook loads the plugin
            args = [f"{k}={v}" for k, v in options.items() if v is not None]
            out = run([YOLO_BIN, "export", f"model={ckpt}", f"imgsz={IMGSZ}", *args], ckpt.parent)
            assert "failure" not in out.stdout + out.stderr  # Ultralytics reports a failed simplification so
            f = ckpt.with_suffix(".onnx").rename(ckpt.with_name(f"{name}.onnx"))
        written = {o.domain: o.version for o in onnx.load(f).opset_import}[""]
        assert written == (opset or best_onnx_opset(onnx)), name
        files[name] = (f, dynamic)
    return files


def check_cells(tmp_path: Path, ckpt: Path, exports: dict) -> None:
    """Run the exported cells without the plugin and check each output against PyTorch's."""
    jobs = {name: (f, inputs_for(dynamic)) for name, (f, dynamic) in exports.items()}
    refs = {dynamic: reference(ckpt, inputs_for(dynamic)) for dynamic in (False, True)}
    for name, outs in run_isolated(tmp_path, jobs).items():
        f, dynamic = exports[name]
        for x, (y,), ref in zip(jobs[name][1], outs, refs[dynamic]):
            assert_close(y, ref, f"{name} at {x.shape}")


@pytest.fixture(scope="module")
def all_ops_exports(all_ops_ckpt) -> dict:
    """The fast set's cells of the every-operator model: cell name -> (ONNX file, dynamic)."""
    return export_cells(all_ops_ckpt, FAST_CELLS)


def test_export_matrix_matches_pytorch(tmp_path, all_ops_ckpt, all_ops_exports):
    check_cells(tmp_path, all_ops_ckpt, all_ops_exports)


@pytest.mark.exhaustive
def test_export_matrix_every_cell_matches_pytorch(tmp_path, all_ops_ckpt):
    assert set(FAST_CELLS) <= set(MATRIX)
    check_cells(tmp_path, all_ops_ckpt, export_cells(all_ops_ckpt, [c for c in MATRIX if c not in FAST_CELLS]))


@pytest.mark.parametrize("dynamic", [True, pytest.param(False, marks=pytest.mark.exhaustive)], ids=["dyn", "static"])
def test_torchscript_export_runs_without_plugin(tmp_path, all_ops_ckpt, dynamic):
    """TorchScript, dynamic and static: the file holds the code, so torch alone runs it (a static one only at its size:
    the stock Detect head bakes the anchor grid of the export size in, as for stock models)."""
    ckpt = tmp_path / f"ts-{'dynamic' if dynamic else 'static'}.pt"
    ckpt.write_bytes(all_ops_ckpt.read_bytes())
    f = YOLO(ckpt).export(format="torchscript", imgsz=IMGSZ, dynamic=dynamic, verbose=False)
    xs = inputs_for(dynamic)
    (outs,) = run_isolated(tmp_path, {ckpt.stem: (Path(f), xs)}, backend="torchscript").values()
    for x, (y, *_), ref in zip(xs, outs, reference(all_ops_ckpt, xs)):
        assert_close(y, ref, f"{ckpt.stem} at {x.shape}")


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
    # Ultralytics folds the Conv+BN pairs; the plugin's fold (yolo_attn.fusion) CoT's dynamic-context norm, which
    # follows the local aggregation, not a conv.
    assert left == {}, left
    assert all(hasattr(m, "dyn_shift") for m in fused.modules() if isinstance(m, CoTAttention))
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


@pytest.mark.exhaustive
def test_yolo_val_runs_on_onnx(tmp_path, all_ops_exports, tiny_data):
    f, _ = all_ops_exports[_cell(DEFAULT_OPSET, True, True, "python")]
    val = [YOLO_BIN, "val", f"model={f}", f"data={tiny_data}", f"imgsz={IMGSZ}", "plots=False"]
    out = run([*val, f"project={tmp_path}", "name=val"], tmp_path)
    assert re.search(r"^\s+all\s+8\s+\d+", out.stdout + out.stderr, re.MULTILINE)  # metrics row over all 8 images
