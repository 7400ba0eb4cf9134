"""Registration with Ultralytics' parser: stock YAMLs unchanged, scaling, task heads, repeats and readable errors."""

import logging
from copy import deepcopy
from pathlib import Path

import pytest
import torch
import ultralytics
import ultralytics.nn.tasks as tasks
from ultralytics import YOLO
from ultralytics.nn.tasks import ClassificationModel, DetectionModel, OBBModel, PoseModel, SegmentationModel
from ultralytics.utils import LOGGER, YAML

from yolo_attn import CoordAtt, register, unregister
from yolo_attn.lookup import shipped_dir
from yolo_attn.registry import LayerError

STOCK_YAMLS = sorted((Path(ultralytics.__file__).parent / "cfg" / "models").rglob("*.yaml"))
CA_YAML = shipped_dir("model_yamls") / "yolov8-ca.yaml"


def _outputs(x):
    """Flatten a model's (nested) output into a list of tensors."""
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict):
        x = list(x.values())
    return [t for item in (x if isinstance(x, (list, tuple)) else []) for t in _outputs(item)]


def _build_and_run(path: Path):
    """Build a YAML with a fixed seed and run it once; return (parameter count, outputs) or the exception."""
    torch.manual_seed(0)
    try:
        model = YOLO(str(path)).model.eval()
        with torch.no_grad():
            return sum(p.numel() for p in model.parameters()), _outputs(model(torch.rand(1, 3, 64, 64)))
    except Exception as e:  # a YAML that cannot build offline must fail the same way with and without the plugin
        return e


@pytest.mark.parametrize("path", STOCK_YAMLS, ids=lambda p: p.name)
def test_stock_yaml_builds_exactly_as_without_plugin(path):
    assert tasks.parse_model.__module__ == "yolo_attn.registry"
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


@pytest.mark.parametrize("family", ["yolov8", "yolo11"])
@pytest.mark.parametrize("scale", "nsmlx")
def test_every_scale_gets_true_channels_and_keeps_stock_layers(family, scale):
    plugin = YOLO(f"{family}{scale}-ca.yaml").model
    stock = YOLO(f"{family}{scale}.yaml").model
    attention = [m for m in plugin.model if isinstance(m, CoordAtt)]
    assert len(attention) == 3
    for m in attention:
        c_in = plugin.model[m.i - 1]  # each CoordAtt reads the previous layer
        c_prev = c_in.cv2.conv.out_channels  # C2f / C3k2 output
        assert m.attn_h.out_channels == c_prev and m.squeeze.conv.in_channels == c_prev
    n_attention = sum(p.numel() for m in attention for p in m.parameters())
    assert sum(p.numel() for p in plugin.parameters()) - n_attention == sum(p.numel() for p in stock.parameters())
    stock_layers = [type(m) for m in stock.model]
    assert [type(m) for m in plugin.model if not isinstance(m, CoordAtt)] == stock_layers


def _ca_yaml(**changes) -> dict:
    d = YAML.load(CA_YAML)
    for key, value in changes.items():
        section, index = key.rsplit("_", 1)
        d[section][int(index)] = value
    return d


@pytest.mark.parametrize("scale, expected", [("n", 1), ("l", 3)])
def test_repeats_are_depth_scaled(scale, expected):
    d = {**_ca_yaml(backbone_5=[-1, 3, "CoordAtt", [256]]), "scale": scale}
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


@pytest.mark.parametrize("task", ["detect", "segment", "pose", "obb", "classify"])
def test_every_task_head(task):
    if task == "classify":  # a classification backbone with CoordAtt before the head
        d = {
            "nc": 5,
            "scale": "n",
            "scales": {"n": [0.33, 0.25, 1024]},
            "backbone": YAML.load(CA_YAML)["backbone"][:12],
            "head": [[-1, 1, "Classify", ["nc"]]],
        }
        model, shape = ClassificationModel(d, verbose=False), (2, 5)
    else:
        d = {**YAML.load(CA_YAML), "scale": "n", "nc": 3, "kpt_shape": [17, 3]}
        model_cls = DetectionModel
        if task in HEADS:
            model_cls, (head, args) = HEADS[task]
            d["head"][-1] = [d["head"][-1][0], 1, head, args]
        model, shape = model_cls(d, verbose=False), None
    assert sum(isinstance(m, CoordAtt) for m in model.model) == 3
    out = model.eval()(torch.rand(2, 3, 96, 64))
    if shape:  # Classify returns (probabilities, logits) outside export
        assert out[0].shape == shape


def test_summary_rows_show_true_module():
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    LOGGER.addHandler(handler)
    try:
        DetectionModel({**YAML.load(CA_YAML), "scale": "n"}, verbose=True)
    finally:
        LOGGER.removeHandler(handler)
    rows = [r.getMessage() for r in records]
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
