"""YAML rows that build only the model they say, Ultralytics' BN settings, offline fonts, editable installs."""

import ast
import inspect
import site
import sys
import time
from copy import deepcopy
from pathlib import Path

import pytest
import torch
import ultralytics.nn.tasks as tasks
import ultralytics.utils.checks as checks
import ultralytics.utils.plotting as plotting
from helpers import CA_YAML
from torch import nn
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import YAML

import yolo_attn
from yolo_attn import autoload, data_checks, import_watch, operators, register, unregister
from yolo_attn.cot import PooledBatchNorm2d
from yolo_attn.lookup import shipped_dir
from yolo_attn.operators import plugin_modules
from yolo_attn.yaml_checks import LayerError

LAYER = 5  # the first CoordAtt row of yolov8-ca.yaml; 64 channels at scale n


def _yaml(row: list) -> dict:
    """Return yolov8-ca.yaml at scale n with layer 5 replaced by `row`."""
    d = {**YAML.load(CA_YAML), "scale": "n"}
    d["backbone"][LAYER] = row
    return d


def n_supplied(name: str) -> int:
    """How many leading constructor arguments the parser supplies for module `name` (its table row says)."""
    return operators.load_row(name).n_supplied


def _options() -> list:
    """Return (module name, option parameter, its position in the YAML args) for every option of every plugin module."""
    return [
        (name, p, k)
        for name, cls in plugin_modules().items()
        for k, p in enumerate(
            list(inspect.signature(cls).parameters.values())[operators.load_row(name).n_supplied :], start=1
        )
    ]


OPTIONS = _options()
IDS = [f"{name}.{p.name}" for name, p, _ in OPTIONS]


def _row(name: str, k: int, value) -> list:
    """A layer-5 row for `name` whose k-th YAML argument is `value` (earlier options at their defaults)."""
    params = list(inspect.signature(plugin_modules()[name]).parameters.values())[n_supplied(name) :]
    return [-1, 1, name, [256, *(p.default for p in params[: k - 1]), value]]


def _layer(row: list) -> nn.Module:
    """Build yolov8n-ca with `row` as layer 5 through the (wrapped) parser, seeded, and return that layer."""
    torch.manual_seed(0)
    return tasks.parse_model(_yaml(row), 3, verbose=False)[0][LAYER]


@pytest.mark.parametrize("name, param, k", OPTIONS, ids=IDS)
def test_every_option_rejects_a_wrong_type(name, param, k):
    assert param.annotation is not inspect.Parameter.empty, f"{name}.{param.name} needs a type annotation"
    wrong = 1 if param.annotation in (bool, "bool") else True  # a YAML int for a bool, a YAML bool for anything else
    for value in (wrong, "word"):
        with pytest.raises(LayerError) as e:
            _layer(_row(name, k, value))
        for word in (f"layer {LAYER}", name, f"{param.name}={value!r}", "expected"):
            assert word in str(e.value)


@pytest.mark.parametrize("name, param, k", OPTIONS, ids=IDS)
def test_literal_strings_build_the_same_layer_as_typed_values(name, param, k):
    value = (not param.default) if isinstance(param.default, bool) else param.default  # "False" where the default is on
    _same_layer(_layer(_row(name, k, value)), _layer(_row(name, k, str(value))))


def _same_layer(a: nn.Module, b: nn.Module) -> None:
    """Assert two layers are the same: structure, parameters and output."""
    assert repr(a) == repr(b)
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    x = torch.rand(2, 64, 9, 7)
    torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "text, typed",
    [
        ([256, 3, "False"], [256, 3, False]),  # CoTAttention: 'False' used to be truthy, so the shortcut stayed on
        ([256, None, 5, 0.5, 4, "False"], [256, None, 5, 0.5, 4, False]),  # AttnConv
        (["256", "16"], [256, 16]),  # CoordAtt: used to fail with "'<' not supported between 'str' and 'int'"
        ([256, "5"], [256, 5]),  # CoTAttention
        ([256, "None", "[3, 5]"], [256, None, [3, 5]]),  # AttnConv
    ],
    ids=["CoTAttention", "AttnConv", "CoordAtt", "CoTAttention-k", "AttnConv-k"],
)
def test_issue_examples_are_literal_evaluated(request, text, typed):
    name = request.node.callspec.id.split("-")[0]
    _same_layer(_layer([-1, 1, name, text]), _layer([-1, 1, name, typed]))
    flipped = [*typed[:-1], not typed[-1]] if isinstance(typed[-1], bool) else None
    if flipped:  # and the flag really reaches the module: the other value builds a different layer
        with pytest.raises(AssertionError):
            _same_layer(_layer([-1, 1, name, text]), _layer([-1, 1, name, flipped]))


@pytest.mark.parametrize(
    "row, index, words",
    [
        ([-1, 1, "CoordAtt"], LAYER, ["layer 5", "malformed", "[from, repeats, module, args]"]),
        ([-1, 1, "CoordAtt", [256], 7], LAYER, ["layer 5", "malformed"]),
        ([[-1, 4], 1, "CoordAtt", [512]], LAYER, ["layer 5 (CoordAtt)", "[-1, 4]", "one input", "Concat"]),
        ([-1, 0, "CoordAtt", [256]], LAYER, ["layer 5 (CoordAtt)", "repeats 0"]),
        ([-1, 1, "CoordAtt", ["wide"]], LAYER, ["layer 5 (CoordAtt)", "c2 'wide'"]),
        ([-1, 1, "CoordAtt", [64]], 0, ["layer 0 (CoordAtt)", "input image has 3 channels", "Conv", "channels:"]),
    ],
)
def test_yaml_mistakes_name_their_row(row, index, words):
    d = {**YAML.load(CA_YAML), "scale": "n"}
    d["backbone"][index] = row
    with pytest.raises(LayerError) as e:
        DetectionModel(d, verbose=False)
    for word in words:
        assert word in str(e.value)


def test_plugin_layer_first_works_with_channels_a_multiple_of_8():
    d = {**YAML.load(CA_YAML), "scale": "n", "channels": 8}
    d["backbone"][0] = [-1, 1, "CoordAtt", [32]]  # 32 * 0.25 = 8 channels, the input's
    d["backbone"][1] = [-1, 1, "Conv", [128, 3, 4]]  # keep the strides of the stock model
    model = tasks.parse_model(deepcopy(d), 8, verbose=False)[0]
    assert type(model[0]).__name__ == "CoordAtt"


@pytest.mark.parametrize(
    "plugin, stock",
    [
        ("yolov8n-ca.yaml", "yolov8n.yaml"),
        ("yolo26n-cot.yaml", "yolo26n.yaml"),
        ("yolo11n-pose-ca.yaml", "yolo11n-pose.yaml"),
    ],
)
def test_build_probe_leaves_the_head_as_stock_does(plugin, stock):
    """The build-time probe must not leave the head with anchors cached for its input shape (strides were 0 then)."""
    from ultralytics import YOLO

    model = YOLO(plugin).model
    assert model.model[-1].shape is None and YOLO(stock).model.model[-1].shape is None
    with torch.no_grad():  # at the probe's own input size the boxes are real boxes, not zeros
        boxes = model.eval()(torch.rand(1, 3, 128, 128))[0][:, :4]
    assert boxes.abs().max() > 1


def test_pooled_batchnorm_gets_ultralytics_bn_settings():
    model = DetectionModel(str(shipped_dir("model_yamls") / "yolov8-cot.yaml"), verbose=False)
    pooled = [m for m in model.modules() if isinstance(m, PooledBatchNorm2d)]
    plain = [m for m in model.modules() if type(m) is nn.BatchNorm2d]
    assert pooled and plain
    assert {(m.eps, m.momentum) for m in pooled} == {(m.eps, m.momentum) for m in plain} == {(1e-3, 0.03)}
    alone = PooledBatchNorm2d(8)  # outside a YOLO model: PyTorch's defaults, like a stock Conv's BN
    assert (alone.eps, alone.momentum) == (1e-5, 0.1)
    state = model.state_dict()  # attributes only: the state dict loads into a freshly built model unchanged
    DetectionModel(str(shipped_dir("model_yamls") / "yolov8-cot.yaml"), verbose=False).load_state_dict(state)


def test_offline_font_lookup_returns_at_once_without_a_request(monkeypatch):
    import ultralytics.utils.downloads as downloads

    def no_request(*args, **kwargs):
        raise AssertionError("check_font made a request although YOLO_OFFLINE is set")

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setattr(downloads, "is_url", no_request)
    monkeypatch.setattr(downloads, "safe_download", no_request)
    assert checks.check_font is plotting.check_font  # the name bound elsewhere is the wrapper too
    start = time.perf_counter()
    font = plotting.check_font("NoSuchFont-yolo-attn.ttf")
    assert font is None and time.perf_counter() - start < 1.0
    annotator = plotting.Annotator(torch.zeros(64, 64, 3, dtype=torch.uint8).numpy(), pil=True, font="NoSuch.ttf")
    assert annotator.font is not None  # PIL's built-in font


def test_online_font_lookup_is_the_stock_one(monkeypatch):
    calls = []
    monkeypatch.delenv("YOLO_OFFLINE")
    data_checks.make_check_font(calls.append)("Arial.ttf")  # the wrapper around a stand-in for the stock function
    assert calls == ["Arial.ttf"]


def test_autoload_imports_only_the_import_watch_at_module_level_and_unregister_cancels_it():
    tree = ast.parse(Path(autoload.__file__).read_text())
    top_imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert [getattr(n, "module", None) for n in top_imports] == ["yolo_attn.import_watch"]
    calls = []
    pending = import_watch.when_imported("no_such_module_yolo_attn_test", lambda: calls.append("pending"))
    assert any(type(f).__module__ == import_watch.__name__ for f in sys.meta_path)
    pending.cancel()
    unregister()  # also cancels a registration still waiting for the parser's import
    try:
        assert not any(type(f).__module__ == import_watch.__name__ for f in sys.meta_path)
        assert calls == []
    finally:
        register()


def test_editable_install_reads_the_checkout_data_and_leaves_no_copy():
    package = Path(yolo_attn.__file__).resolve().parent
    if not (package.parent / "pyproject.toml").is_file():
        pytest.skip("not a source checkout (a wheel install carries the data in the package)")
    assert shipped_dir("model_yamls") == package.parent / "model_yamls"
    for d in site.getsitepackages():
        assert not (Path(d) / "yolo_attn" / "model_yamls").exists(), f"stale zoo copy in {d}"
