"""Insertion by reference: `base:`/`insert:`/`replace:` YAMLs expand into correctly wired Ultralytics YAML for every
stock model and task, errors name the entry, and the `yolo-attn expand` command prints what the parser builds."""

from pathlib import Path

import pytest
import torch
import ultralytics
from helpers import MODEL_CLASSES, STOCK_SAMPLE, YOLO_ATTN_BIN, outputs, run, sampled
from ultralytics import YOLO
from ultralytics.nn import tasks
from ultralytics.utils import YAML

from yolo_attn.operators import plugin_modules
from yolo_attn.reference import INSERTABLE, MULTI_OUTPUT_MODULES, InsertionError, expand

STOCK_YAMLS = sorted((Path(ultralytics.__file__).parent / "cfg" / "models").rglob("*.yaml"))
REFERENCE_CLASSES = {  # the conftest classes plus the tasks of newer releases
    **MODEL_CLASSES,
    **{
        task: getattr(tasks, name)
        for task, name in (("semantic", "SemanticSegmentationModel"), ("depth", "DepthModel"))
        if hasattr(tasks, name)
    },
}
# The fast set's sample plus one RT-DETR; every other stock YAML (RT-DETR's other sizes included) with -m exhaustive.
STOCK_PARAMS = sampled(STOCK_YAMLS, STOCK_SAMPLE | {"yolov8-rtdetr.yaml"})
pytestmark = pytest.mark.usefixtures("one_thread")


def model_class(d: dict) -> type:
    """Return the class Ultralytics builds a model YAML dict with (RT-DETR by its head, as `RTDETR()` would)."""
    if d["head"][-1][2] == "RTDETRDecoder":
        return tasks.RTDETRDetectionModel
    return REFERENCE_CLASSES[tasks.guess_model_task(d)]


def expanded(d: dict) -> dict:
    """Expand a YAML dict written by reference, loading its base as Ultralytics loads model YAMLs."""
    return expand(d, tasks.yaml_model_load, plugin_modules())


def build(d: dict, scale: str) -> torch.nn.Module:
    """Build a model dict at `scale` with its task's model class (which runs the stride forward)."""
    torch.manual_seed(0)
    with torch.no_grad():
        return model_class(d)({**d, "scale": scale}, verbose=False).eval()


def stage_outputs(d: dict) -> list:
    """Backbone layers whose output leaves their stage: read by the head, followed by a stride-2 layer, or last."""
    nb, rows = len(d["backbone"]), [*d["backbone"], *d["head"]]
    read_by_head = {x for i, (f, *_) in enumerate(rows[nb:], nb) for x in ([f] if isinstance(f, int) else f) if x >= 0}
    downsampled = {i for i in range(nb - 1) if len(rows[i + 1][3]) > 2 and rows[i + 1][3][2] == 2}
    single = {i for i in range(nb) if rows[i][2] not in MULTI_OUTPUT_MODULES | {"nn.Identity"}}  # not the image
    return sorted((read_by_head | downsampled | {nb - 1}) & single)


def buildable(path: Path) -> dict:
    """Return the stock YAML dict, skipping models that do not build offline or need more than the YAML."""
    d = YAML.load(path)
    rtdetr = d["head"][-1][2] == "RTDETRDecoder"  # Ultralytics' task guess returns None for it; RTDETR() builds it
    if (tasks.guess_model_task(d) not in REFERENCE_CLASSES and not rtdetr) or d["head"][-1][2] == "WorldDetect":
        pytest.skip(f"{path.name}: not a YOLO {'/'.join(REFERENCE_CLASSES)} model")
    if any(
        m in ("YOLOEDetect", "YOLOESegment", "YOLOESegment26", "TorchVision") for *_, m, _ in d["backbone"] + d["head"]
    ):
        pytest.skip(f"{path.name}: needs text embeddings or downloaded backbone weights")
    return d


def sample(d: dict) -> torch.Tensor:
    """A rectangular input divisible by the P6 models' stride 64; for RT-DETR with at least 300 anchor points, its
    query count (8.4.50's top-k query selection fails below that; 8.4.190's does not)."""
    return torch.rand(1, 3, 128, 256) if d["head"][-1][2] == "RTDETRDecoder" else torch.rand(1, 3, 64, 128)


@pytest.mark.parametrize("path", STOCK_PARAMS, ids=lambda p: p.name)
def test_every_stock_model_takes_every_operator_after_each_stage(path):
    d = buildable(path)
    scales = list(d.get("scales") or [""])[:2]  # n and s where the model has scales
    stages = stage_outputs(d)
    x = sample(d)
    # Scale n: each operator after every stage output; scale s: the operators taking turns over the stages. AttnConv
    # skips the stride-2/4 stem layers: its global branch is quadratic in H·W (a 100k x 6k matrix per head there in
    # the 640 px FLOP count that classification models run at build time).
    plans = [(scales[0], [[i, op, []] for i in stages if op != "AttnConv" or i >= 3]) for op in INSERTABLE]
    plans.append((scales[-1], [[i, INSERTABLE[k % 3], []] for k, i in enumerate(stages)]))
    for scale, insert in plans:
        model = build(expanded({"base": path.name, "insert": insert}), scale)
        inserted = [m for m in model.model if type(m).__name__ in INSERTABLE]
        assert [type(m).__name__ for m in inserted] == [op for _, op, _ in insert], f"{path.name}: {insert}"
        with torch.no_grad():
            assert all(torch.isfinite(t).all() for t in outputs(model(x)))


@pytest.mark.parametrize("path", STOCK_PARAMS, ids=lambda p: p.name)
def test_no_insertion_is_stock(path):
    d = buildable(path)
    scale = next(iter(d.get("scales") or [""]))
    ours, stock = build(expanded({"base": path.name}), scale), build(d, scale)
    assert [type(m) for m in ours.model] == [type(m) for m in stock.model]
    x = sample(d)
    with torch.no_grad():
        for a, b in zip(outputs(ours(x)), outputs(stock(x))):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_consumers_read_the_inserted_layers():
    d = expanded(
        {
            "base": "yolo11.yaml",
            "insert": [[4, "CoordAtt", []], [6, "CoTAttention", []], [6, "AttnConv", {"pool_size": 2}]],
            "replace": [[8, "C3k2_CoT"]],
        }
    )
    rows = d["backbone"] + d["head"]
    assert len(d["backbone"]) == 14 and len(rows) == 27
    assert rows[5] == [-1, 1, "CoordAtt", [None]]  # after stock 4
    assert rows[8][2:] == ["CoTAttention", [None]] and rows[9][2:] == ["AttnConv", [None, None, 5, 0.5, 2]]
    assert rows[11][2] == "C3k2_CoT" and rows[11][3] == [1024, True]  # stock 8, its args kept
    assert rows[15] == [[-1, 9], 1, "Concat", [1]]  # stock 12 read stock 6: now the last layer inserted after it
    assert rows[18] == [[-1, 5], 1, "Concat", [1]]  # stock 15 read stock 4
    assert rows[-1][0] == [19, 22, 25]  # Detect: stock 16, 19, 22
    assert d["layer_map"][:12] == [0, 1, 2, 3, 4, None, 5, 6, None, None, 7, 8]
    assert (
        d["nc"] == 80
        and d["scales"] == YAML.load(next(Path(ultralytics.__file__).parent.rglob("yolo11.yaml")))["scales"]
    )


def test_top_level_keys_come_from_base_and_can_be_overridden():
    d = expanded({"base": "yolo26-pose.yaml", "insert": [[6, "CoordAtt", [512, 16]]], "kpt_shape": [4, 3], "nc": 3})
    assert (d["end2end"], d["reg_max"], d["kpt_shape"], d["nc"]) == (True, 1, [4, 3], 3)
    assert d["backbone"][7] == [-1, 1, "CoordAtt", [512, 16]]
    model = build(d, "n")
    assert list(model.model[-1].kpt_shape) == [4, 3] and model.model[-1].one2one_cv2 is not None  # YOLO26 end-to-end


def test_layer_scale_reaches_every_attention_layer_and_row_args_win():
    d = expanded(
        {
            "base": "yolov8.yaml",
            "layer_scale": 0.0,
            "insert": [[4, "CoordAtt", []], [6, "CoTAttention", {"layer_scale": 0.5}], [8, "AttnConv", []]],
        }
    )
    gammas = [m.gamma.mean().item() for m in build(d, "n").model if type(m).__name__ in INSERTABLE]
    assert gammas == [0.0, 0.5, 0.0]


@pytest.mark.parametrize(
    "d, words",
    [
        ({"base": "yolo26.yaml", "insert": [[24, "CoordAtt", []]]}, ["insert[0]", "layer 24", "0..23"]),
        ({"base": "yolo26.yaml", "insert": [[23, "CoordAtt", []]]}, ["insert[0]", "output layer (Detect)"]),
        ({"base": "yolo11-cls.yaml", "insert": [[10, "CoordAtt", []]]}, ["output layer (Classify)"]),
        ({"base": "yolo26.yaml", "insert": [[4, "CoTAtention", []]]}, ["unknown module 'CoTAtention'", "CoordAtt"]),
        ({"base": "yolo26.yaml", "insert": [[4, "C3k2_CoT", []]]}, ["C3k2_CoT does not keep its input's channel"]),
        ({"base": "yolo26.yaml", "insert": [[4, "CoordAtt", {"reduce": 4}]]}, ["no option reduce", "reduction"]),
        ({"base": "yolo26.yaml", "insert": [4, "CoordAtt"]}, ["insert[0] 4", "[after_layer, module, args]"]),
        ({"base": "yolo26.yaml", "replace": [[3, "C3k2_CoT"]]}, ["replace[0]", "layer 3", "Conv", "no plugin twin"]),
        ({"base": "yolo26.yaml", "replace": [[4, "C2f_CoT"]]}, ["replace[0]", "C3k2, whose plugin twin is C3k2_CoT"]),
        ({"base": "yolo99.yaml"}, ["base 'yolo99.yaml' was not found", "yolo26.yaml"]),
        ({"base": "yolov9e.yaml", "insert": [[10, "CoordAtt", []]]}, ["layer 10 (CBLinear)", "one feature map"]),
    ],
)
def test_bad_entries_name_the_entry(d, words):
    with pytest.raises(InsertionError) as e:
        expanded(d)
    for word in words:
        assert word in str(e.value)


def test_found_by_scaled_name_from_any_directory_and_a_local_file_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = YOLO("yolo26s-cot.yaml").model  # shipped, by reference
    assert model.yaml["scale"] == "s" and model.yaml["base"] == "yolo26.yaml"
    assert [m.key.conv.in_channels for m in model.model if type(m).__name__ == "CoTAttention"] == [256, 512]
    (tmp_path / "yolo26-cot.yaml").write_text("base: yolo26.yaml\ninsert:\n  - [4, CoordAtt, []]\n")
    assert [type(m).__name__ for m in YOLO("yolo26n-cot.yaml").model.model].count("CoordAtt") == 1


def test_nested_reference_composes_the_layer_map(tmp_path):
    (tmp_path / "yolo11-ca2.yaml").write_text("base: yolo11-ca.yaml\ninsert:\n  - [13, CoTAttention, []]\n")
    d = YOLO(str(tmp_path / "yolo11n-ca2.yaml")).model.yaml
    assert d["layer_map"].count(None) == 4  # three CoordAtt from the base, one CoT here
    assert [i for i in d["layer_map"] if i is not None] == list(range(24))  # relative to stock YOLO11


def test_expand_command_writes_a_yaml_that_builds_the_same_model(tmp_path):
    yolo_attn_bin = YOLO_ATTN_BIN
    out = tmp_path / "yolo26-seg-expanded.yaml"
    run([yolo_attn_bin, "expand", "yolo26n-seg-cot.yaml", "-o", out], cwd=tmp_path)
    text = out.read_text()
    assert "CoTAttention" in text and "base:" in text and "insert:" not in text
    a, b = YOLO(str(tmp_path / "yolo26n-seg-expanded.yaml")).model, YOLO("yolo26n-seg-cot.yaml").model
    assert a.yaml["layer_map"] == b.yaml["layer_map"]
    assert [type(m) for m in a.model] == [type(m) for m in b.model]
    printed = run([yolo_attn_bin, "expand", "yolo11n-cls-ca.yaml"], cwd=tmp_path).stdout
    assert "Classify" in printed and "# 5 (new, inserted by yolo_attn" in printed
    (tmp_path / "y11-ca.yaml").write_text("base: yolo11n.yaml\ninsert:\n  - [4, CoordAtt, []]\n")
    printed = run([yolo_attn_bin, "expand", "y11-ca.yaml"], cwd=tmp_path).stdout  # c2 null: said what it means
    assert "[-1, 1, CoordAtt, [null]] # 5 (new, inserted by yolo_attn; c2 null: keeps its input's channels" in printed
