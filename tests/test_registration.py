"""Registration with Ultralytics' parser: stock YAMLs unchanged, scaling, task heads, repeats and readable errors."""

from copy import deepcopy
from pathlib import Path

import pytest
import torch
import ultralytics
import ultralytics.nn.tasks as tasks
from helpers import CA_YAML, STOCK_SAMPLE, logged, outputs, sampled
from ultralytics import YOLO
from ultralytics.nn.tasks import ClassificationModel, DetectionModel, OBBModel, PoseModel, SegmentationModel
from ultralytics.utils import YAML

from yolo_attn import CoordAtt, register, unregister
from yolo_attn.yaml_checks import LayerError

STOCK_YAMLS = sorted((Path(ultralytics.__file__).parent / "cfg" / "models").rglob("*.yaml"))


def _build_and_run(path: Path):
    """Build a YAML with a fixed seed and run it once; return (parameter count, outputs) or the exception."""
    torch.manual_seed(0)
    try:
        model = YOLO(str(path)).model.eval()
        with torch.no_grad():
            return sum(p.numel() for p in model.parameters()), outputs(model(torch.rand(1, 3, 64, 64)))
    except Exception as e:  # a YAML that cannot build offline must fail the same way with and without the plugin
        return e


@pytest.mark.parametrize("path", sampled(STOCK_YAMLS, STOCK_SAMPLE), ids=lambda p: p.name)
def test_stock_yaml_builds_exactly_as_without_plugin(path):
    assert tasks.parse_model.__module__ == "yolo_attn.parser"
    with_plugin = _build_and_run(path)
    unregister()
    try:
        assert tasks.parse_model.__module__ == "ultralytics.nn.tasks"
        without_plugin = _build_and_run(path)
    finally:
        register()
    if isinstance(without_plugin, Exception):
        assert type(with_plugin) is type(without_plugin) and str(with_plugin) == str(without_plugin)
        return
    assert with_plugin[0] == without_plugin[0]
    assert len(with_plugin[1]) == len(without_plugin[1])
    for a, b in zip(with_plugin[1], without_plugin[1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_register_is_idempotent_and_reversible():
    register()
    register()
    wrapper = tasks.parse_model
    unregister()
    unregister()
    assert tasks.parse_model is not wrapper and not hasattr(tasks, "CoordAtt")
    with pytest.raises(KeyError, match="CoordAtt"):  # stock parser: plugin names are unknown again
        DetectionModel(str(CA_YAML), verbose=False)
    register()
    assert tasks.parse_model is wrapper and tasks.CoordAtt is CoordAtt
    DetectionModel(str(CA_YAML), verbose=False)


def _ca_yaml(**changes) -> dict:
    d = YAML.load(CA_YAML)
    for key, value in changes.items():
        section, index = key.rsplit("_", 1)
        d[section][int(index)] = value
    return d


@pytest.mark.parametrize("scale, expected", [("n", 1), ("deep", 3)])
def test_repeats_are_depth_scaled(scale, expected):
    d = {**_ca_yaml(backbone_5=[-1, 3, "CoordAtt", [256]]), "scale": scale}
    d["scales"]["deep"] = [1.0, 0.25, 1024]  # scale l's depth at scale n's width: 3 repeats in a small model
    layer = DetectionModel(d, verbose=False).model[5]
    blocks = list(layer) if isinstance(layer, torch.nn.Sequential) else [layer]
    assert len(blocks) == expected and all(isinstance(b, CoordAtt) for b in blocks)


def test_reduction_option_reaches_module():
    d = {**_ca_yaml(backbone_5=[-1, 1, "CoordAtt", [256, 8]]), "scale": "s"}
    layer = DetectionModel(d, verbose=False).model[5]
    assert layer.squeeze.conv.out_channels == 128 // 8


HEADS = {
    "segment": (SegmentationModel, ["Segment", ["nc", 32, 256]]),
    "pose": (PoseModel, ["Pose", ["nc", "kpt_shape"]]),
    "obb": (OBBModel, ["OBB", ["nc", 1]]),
}


# First output of each head on a (2, 3, 96, 64) batch at nc=3: 4 box + 3 class rows (+ 32 mask coefficients, 17 x 3
# keypoint values, 1 angle) for each of the 12*8 + 6*4 + 3*2 = 126 anchors; Classify: probabilities over 5 classes.
TASK_OUTPUTS = {"detect": (2, 7, 126), "segment": (2, 39, 126), "pose": (2, 58, 126), "obb": (2, 8, 126)}
TASK_OUTPUTS["classify"] = (2, 5)


@pytest.mark.parametrize("task", list(TASK_OUTPUTS))
def test_every_task_head(task):
    if task == "classify":  # a classification backbone with CoordAtt before the head
        d = {
            "nc": 5,
            "scale": "n",
            "scales": {"n": [0.33, 0.25, 1024]},
            "backbone": YAML.load(CA_YAML)["backbone"][:12],
            "head": [[-1, 1, "Classify", ["nc"]]],
        }
        model = ClassificationModel(d, verbose=False)
    else:
        d = {**YAML.load(CA_YAML), "scale": "n", "nc": 3, "kpt_shape": [17, 3]}
        model_cls = DetectionModel
        if task in HEADS:
            model_cls, (head, args) = HEADS[task]
            d["head"][-1] = [d["head"][-1][0], 1, head, args]
        model = model_cls(d, verbose=False)
    assert sum(isinstance(m, CoordAtt) for m in model.model) == 3
    with torch.no_grad():
        out = model.eval()(torch.rand(2, 3, 96, 64))
    y = outputs(out)[0]  # Classify returns (probabilities, logits) outside export; the others (decoded, raw)
    assert tuple(y.shape) == TASK_OUTPUTS[task] and torch.isfinite(y).all()
    if task == "classify":
        torch.testing.assert_close(y.sum(1), torch.ones(2))
    if task == "segment":  # the mask prototypes at a quarter of the input size (where in the outputs: by release)
        assert (2, 32, 24, 16) in [tuple(t.shape) for t in outputs(out)]


def test_summary_rows_show_true_module():
    rows = logged(lambda: DetectionModel({**YAML.load(CA_YAML), "scale": "n"}, verbose=True))
    row5 = next(r for r in rows if r.startswith(f"{5:>3}{-1:>20}"))
    assert "yolo_attn.coord_att.CoordAtt" in row5 and "[64, 64]" in row5
    assert not any("nn.modules.conv.Conv" in r and r.startswith(f"{5:>3}") for r in rows)
    assert sum(r.startswith(f"{i:>3}") for r in rows for i in [0]) >= 1  # the stock rows are still printed


@pytest.mark.parametrize(
    "row, index, words",
    [
        ([-1, 1, "CoordAtt", [256, 16, None, 3]], 5, ["layer 5", "CoordAtt", "[c2, reduction: int = 32, layer_scale"]),
        ([-1, 1, "CoordAtt", []], 5, ["layer 5", "CoordAtt", "missing c2"]),
        ([-1, 1, "CoordAtt", [512]], 5, ["layer 5", "CoordAtt", "64 channels", "c2=512", "128"]),
        ([9, 1, "CoordAtt", [256]], 5, ["layer 5", "CoordAtt", "'from' index 9", "0..4"]),
    ],
)
def test_readable_errors(row, index, words):
    d = {**_ca_yaml(**{f"backbone_{index}": row}), "scale": "n"}
    with pytest.raises(LayerError) as e:
        DetectionModel(d, verbose=False)
    for word in words:
        assert word in str(e.value)


def test_bad_from_index_in_stock_row_of_plugin_yaml():
    d = YAML.load(CA_YAML)
    d["head"][1] = [[-1, 30], 1, "Concat", [1]]  # layer 14
    with pytest.raises(LayerError, match=r"layer 14 \(Concat\): 'from' index 30"):
        DetectionModel(deepcopy(d), verbose=False)
