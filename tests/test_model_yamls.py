"""Shipped model YAMLs: stock wiring once the plugin rows are taken out, every scale builds with channels kept, forward
shapes as stock, and lookup by the scaled name.

The wiring check is generic: it deletes the channel-keeping attention rows, remaps `from` indices and renames the CoT
blocks, then requires the stock twin's rows exactly; no per-YAML index table. YAMLs written by reference are checked
in their expanded form, so the check also covers the expansion.
"""

import re
from copy import deepcopy
from functools import cache
from pathlib import Path

import pytest
import torch
import ultralytics
from helpers import MODEL_CLASSES, outputs, sampled
from ultralytics import YOLO
from ultralytics.nn.tasks import parse_model, yaml_model_load
from ultralytics.utils import YAML

from yolo_attn.lookup import shipped_dir
from yolo_attn.operators import insertable
from yolo_attn.reference import TWINS

YAML_DIR = shipped_dir("model_yamls")
YAMLS = sorted(YAML_DIR.glob("*.yaml"))
ATTENTION = set(insertable())  # channel-keeping layers of the operator table: inserted rows
BLOCKS = {twin: stock for stock, twin in TWINS.items()}  # drop-in replacements: renamed rows
STOCK_DIR = Path(ultralytics.__file__).parent / "cfg" / "models"
SCALES = "nsmlx"
VARIANTS = ("ca", "cot", "attnconv", "ca-neck", "cot-neck", "attnconv-neck")
TASKS = ("seg", "pose", "obb", "cls")
pytestmark = pytest.mark.usefixtures("one_thread")
# The builds in the fast set: the channel-kept layers at every scale of a full YAML, and one YAML by reference per task
# (at n and s); the other shipped YAMLs with `pytest -m exhaustive`.
BUILD_SAMPLE = {"yolov8-ca.yaml", "yolo26-cot.yaml", "yolo11-seg-ca.yaml"}
BUILD_SAMPLE |= {"yolo26-pose-cot.yaml", "yolo11-obb-ca.yaml", "yolo26-cls-cot.yaml"}
EXPECTED = (
    {f"{family}-{variant}.yaml" for family in ("yolov8", "yolo11", "yolo26") for variant in VARIANTS}
    | {"yolov8-c2f-cot.yaml", "yolo11-c3k2-cot.yaml", "yolo26-c3k2-cot.yaml"}
    | {f"{family}-{task}-{op}.yaml" for family, op in (("yolo11", "ca"), ("yolo26", "cot")) for task in TASKS}
)


def stock_twin(path: Path) -> Path:
    """Return the stock Ultralytics YAML a shipped YAML is derived from: its `base:` or, for a YAML written in full,
    the family named by its file name."""
    d = YAML.load(path)
    if "base" in d:
        return next(STOCK_DIR.rglob(d["base"]))
    match = re.match(r"(yolov8|yolo11)-", path.name)
    assert match, f"{path.name}: no stock twin known (a full YAML's name must start with yolov8- or yolo11-)"
    return STOCK_DIR / {"yolov8": "v8", "yolo11": "11"}[match.group(1)] / f"{match.group(1)}.yaml"


def load(path: Path) -> dict:
    """Return a YAML as the model sees it: expanded when written by reference."""
    d = yaml_model_load(str(path))
    d.pop("scale")
    return d


def model_class(path: Path) -> type:
    """Return the Ultralytics model class for a YAML's task."""
    from ultralytics.nn import tasks

    return MODEL_CLASSES[tasks.guess_model_task(load(path))]


def strip_plugin(rows: list) -> list:
    """Return `rows` without attention rows, `from` indices remapped, CoT blocks renamed to their stock blocks.

    An index that pointed at an attention row maps to the row that attention row read from (following chains of
    attention rows). Relative indices stay relative and absolute ones absolute, so the result compares literally.
    """
    alias = {}  # old index of an attention row -> old index of the row it reads
    new_index = {-1: -1}  # old index of a kept row (-1: the image) -> its index once the attention rows are gone
    out = []

    def resolve(i: int, x: int) -> int:
        j = i + x if x < 0 else x
        while j in alias:
            j = alias[j]
        return j

    for i, (f, n, m, args) in enumerate(rows):
        if m in ATTENTION:
            assert isinstance(f, int), f"row {i} ({m}): a channel-keeping layer reads one layer, got from={f}"
            alias[i] = resolve(i, f)
            continue
        remapped = [new_index[resolve(i, x)] - (len(out) if x < 0 else 0) for x in ([f] if isinstance(f, int) else f)]
        new_index[i] = len(out)
        out.append([remapped[0] if isinstance(f, int) else remapped, n, BLOCKS.get(m, m), args])
    return out


def bypassed_attention(rows: list) -> list:
    """Return (reader, j) for every row that reads a layer j which an attention row wraps, other than that row.

    Once attention wraps layer j, every stock reader of j must read the attention output instead; reading j directly
    would bypass it, which `strip_plugin` cannot see (it maps both to stock j).
    """
    absolute = [[i + x if x < 0 else x for x in ([f] if isinstance(f, int) else f)] for i, (f, *_) in enumerate(rows)]
    wrapped = {absolute[i][0]: i for i, (_, _, m, _) in enumerate(rows) if m in ATTENTION}
    return [(i, j) for i, sources in enumerate(absolute) for j in sources if j in wrapped and wrapped[j] != i]


def layer_channels(layers, x: torch.Tensor) -> list:
    """Run `x` through a parsed model's layers up to (not including) the head; return each layer's (c_in, c_out)."""
    y, channels = [], []
    for m in layers[:-1]:
        if m.f != -1:
            x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
        c_in = x.shape[1] if isinstance(x, torch.Tensor) else sum(t.shape[1] for t in x)
        x = m(x)
        y.append(x)
        channels.append((c_in, x.shape[1]))
    return channels


def build(path: Path, scale: str) -> torch.nn.Module:
    """Build a shipped (or stock) YAML at `scale` with its task's model class, which also runs its stride forward."""
    with torch.no_grad():  # the stride forward needs no autograd graph
        return model_class(path)({**load(path), "scale": scale}, verbose=False)


@cache
def model_n(path: Path) -> torch.nn.Module:
    """Scale-n build, shared by the tests that use it (larger scales are built, checked and dropped)."""
    torch.manual_seed(0)
    return build(path, "n").eval()


@cache
def stock_channels(stock: Path, scale: str) -> list:
    """(c_in, c_out) of each layer but the head of the stock twin at `scale` (parsed only: no stride forward)."""
    layers, _ = parse_model(deepcopy({**YAML.load(stock), "scale": scale}), ch=3, verbose=False)
    with torch.no_grad():
        return layer_channels(layers.eval(), torch.zeros(1, 3, 32, 32))


def test_every_planned_yaml_is_shipped():
    assert EXPECTED <= {p.name for p in YAMLS}, f"missing: {sorted(EXPECTED - {p.name for p in YAMLS})}"


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_wiring_is_stock_without_plugin_rows(path):
    d, stock = load(path), YAML.load(stock_twin(path))
    rows = d["backbone"] + d["head"]
    assert any(m in ATTENTION or m in BLOCKS for _, _, m, _ in rows), f"{path.name} uses no plugin module"
    assert d["scales"] == stock["scales"]
    assert d["nc"] == stock["nc"]
    bypassed = bypassed_attention(rows)
    assert not bypassed, f"{path.name}: (row, layer) pairs that read around the layer's attention: {bypassed}"
    stripped = strip_plugin(rows)
    nb = len(strip_plugin(d["backbone"]))  # attention rows of the backbone belong to the backbone
    assert stripped[:nb] == stock["backbone"], f"{path.name}: backbone differs from {stock_twin(path).name}"
    assert stripped[nb:] == stock["head"], f"{path.name}: head differs from {stock_twin(path).name}"
    layer_map = [None if m in ATTENTION else i for i, (_, _, m, _) in enumerate(rows)]
    kept = [i for i in layer_map if i is not None]
    assert d["layer_map"] == [None if i is None else kept.index(i) for i in layer_map], "layer map must match"


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_starts_with_comment_block(path):
    lines = path.read_text().splitlines()
    block = lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))]
    assert len(block) >= 3, f"{path.name} must start with a comment block (operator, where and why, wiring, usage)"
    assert block[0].startswith("# yolo_attn:")
    scaled = re.sub(r"^(yolov8|yolo11|yolo26)-", r"\1n-", path.name)
    assert any("Usage:" in line and scaled in line for line in block), f"usage line should name {scaled}"


@pytest.mark.parametrize("path", sampled(YAMLS, BUILD_SAMPLE), ids=lambda p: p.name)
def test_builds_at_every_scale_with_channels_kept(path):
    d = load(path)
    names = [m for _, _, m, _ in d["backbone"] + d["head"]]
    attention = [m in ATTENTION for m in names]
    plugin = {i: m for i, m in enumerate(names) if m in ATTENTION or m in BLOCKS}
    # A YAML by reference takes its widths from the expansion, which tests/test_reference.py checks on every stock
    # model at n and s; the full scale sweep is for the YAMLs written out by hand.
    for scale in SCALES if "base" not in YAML.load(path) else "ns":
        model = model_n(path) if scale == "n" else build(path, scale).eval()
        assert {i: type(model.model[i]).__name__ for i in plugin} == plugin, "plugin rows must build plugin modules"
        with torch.no_grad():
            got = layer_channels(model.model, torch.zeros(1, 3, 32, 32))
        del model
        for i, (c_in, c_out) in enumerate(got):
            if attention[i]:
                assert c_out == c_in, f"{path.name} scale {scale}: layer {i} changed {c_in} to {c_out} channels"
        kept = [c for c, att in zip(got, attention) if not att]
        assert kept == stock_channels(stock_twin(path), scale), f"{path.name} scale {scale}: channels differ from stock"


@pytest.mark.parametrize("shape", [(64, 64), (96, 160)], ids=["square", "rect"])
@pytest.mark.parametrize("path", sampled(YAMLS, BUILD_SAMPLE), ids=lambda p: p.name)
def test_forward_shapes_as_stock(path, shape):
    x = torch.rand(1, 3, *shape)
    with torch.no_grad():
        got = [t.shape for t in outputs(model_n(path)(x))]
        expected = [t.shape for t in outputs(model_n(stock_twin(path))(x))]
    assert got == expected


def test_scaled_name_builds_that_scale():
    model = YOLO("yolov8s-cot.yaml").model  # found by bare name, scale letter stripped by Ultralytics
    assert model.yaml["scale"] == "s"
    with torch.no_grad():
        channels = layer_channels(model.model.eval(), torch.zeros(1, 3, 32, 32))
    cot = [channels[i] for i, m in enumerate(model.model) if type(m).__name__ == "CoTAttention"]
    assert cot == [(256, 256), (512, 512)]  # P4 and P5 at width 0.5; scale n would give 128 and 256
