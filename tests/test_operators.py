"""Anyone's operator: the operator table, `yolo_attn.register_module` and the entry-point group `yolo_attn.modules`.

A throwaway package with a squeeze-and-excitation block is exposed to subprocesses through a `*.dist-info` directory
on PYTHONPATH (what pip would install, without a network): the stock `yolo` command uses it with nothing imported by
hand.
"""

import textwrap

import pytest
import torch
from helpers import PY, YOLO_ATTN_BIN, YOLO_BIN, outputs, run
from torch import nn
from ultralytics.nn.tasks import DetectionModel, parse_model, yaml_model_load

from yolo_attn import operators, register_module
from yolo_attn.operators import RegistrationError
from yolo_attn.yaml_checks import LayerError

SE_SOURCE = textwrap.dedent(
    """
    from torch import nn


    class SEBlock(nn.Module):
        def __init__(self, c1: int, c2: int, reduction: int = 4):
            super().__init__()
            hidden = max(c1 // reduction, 8)
            self.fc = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Conv2d(c1, hidden, 1), nn.SiLU(), nn.Conv2d(hidden, c1, 1), nn.Sigmoid()
            )

        def forward(self, x):
            return x * self.fc(x)
    """
)
SE_YAML = "base: yolo11n.yaml\ninsert:\n  - [4, SEBlock, []]\n  - [6, SEBlock, {reduction: 8}]\n"


def make_package(root, entry_points: str) -> dict:
    """Write `se_pkg` and its dist-info (with `entry_points`) under `root`; return the env exposing it."""
    (root / "se_pkg").mkdir(parents=True)
    (root / "se_pkg" / "__init__.py").write_text(SE_SOURCE)
    info = root / "se_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: se-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[yolo_attn.modules]\n" + entry_points)
    return {"PYTHONPATH": str(root)}


_script = {"__name__": __name__}
exec(SE_SOURCE, _script)
SEBlock = _script["SEBlock"]  # the same block, as a user's script defines it, registered in-process


@pytest.fixture(autouse=True)
def own_table():
    """Each test sees the built-in rows and its own registrations only: a package installed beside the plugin that
    provides a module of the same name (an `SEBlock` entry point) must not change what these tests see."""
    with operators.isolated():
        yield


@pytest.fixture
def se_registered():
    register_module(SEBlock)
    yield SEBlock
    operators.unregister_module("SEBlock")


def test_builtins_are_table_rows_and_everything_derives_from_the_table():
    import yolo_attn
    from yolo_attn.reference import INSERTABLE, TWINS

    names = [op.name for op in operators.BUILTINS]
    assert set(names) <= set(yolo_attn.__all__) and set(INSERTABLE) | set(TWINS.values()) == set(names)
    assert TWINS == {"C2f": "C2f_CoT", "C3k2": "C3k2_CoT"} and operators.twins() == TWINS
    for name in names:
        assert getattr(yolo_attn, name) in torch.serialization.get_safe_globals()


@pytest.mark.parametrize("scale, width", [("n", 0.25), ("s", 0.5)])
def test_register_module_alone_makes_a_class_insertable_by_reference_at_every_scale(
    tmp_path, se_registered, scale, width
):
    op = operators.get("SEBlock")
    assert op.keeps_channels is True and "register_module" in op.origin  # inferred by a probe
    (tmp_path / f"yolo11{scale}-se.yaml").write_text(SE_YAML)
    model = DetectionModel(str(tmp_path / f"yolo11{scale}-se.yaml"), verbose=False)
    se = [(i, m) for i, m in enumerate(model.model) if isinstance(m, SEBlock)]
    assert [i for i, _ in se] == [5, 8]
    for i, m in se:  # c1 = the previous layer's width at this scale, reduction from the YAML mapping
        assert m.fc[1].in_channels == model.model[i - 1].cv2.conv.out_channels
    assert se[0][1].fc[1].in_channels == int(512 * width) and se[1][1].fc[1].out_channels == int(512 * width) // 8
    assert model.yaml["layer_map"].count(None) == 2


def test_registered_module_options_are_type_checked(tmp_path, se_registered):
    (tmp_path / "bad.yaml").write_text("base: yolo11n.yaml\ninsert:\n  - [4, SEBlock, {reduction: 2.5}]\n")
    with pytest.raises(LayerError, match=r"layer 5 \(SEBlock\): option reduction=2\.5 is a float; expected int"):
        DetectionModel(str(tmp_path / "bad.yaml"), verbose=False)


class NotAModule:
    def __init__(self, c1, c2):
        pass


class NoChannels(nn.Module):
    def __init__(self, reduction: int = 4):
        super().__init__()


class Widen(nn.Module):
    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.conv = nn.Conv2d(c1, 2 * c1, 1)

    def forward(self, x):
        return self.conv(x)


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (SEBlock, {"name": "Conv"}, r"module Conv from register_module \(module .*test_operators\).*clashes with Ultr"),
        (SEBlock, {"name": "CoordAtt"}, r"module CoordAtt .*already registered by yolo_attn \(built-in\)"),
        (NotAModule, {}, r"module NotAModule .*is not an nn.Module subclass"),
        (NoChannels, {}, r"module NoChannels .*does not take \(c1, c2\) first"),
        (
            Widen,
            {"keeps_channels": True},
            r"module Widen .*declared channel-keeping, but .* maps 16 input channels to 32",
        ),
    ],
)
def test_registration_errors_name_the_module_and_its_origin(cls, kwargs, match):
    with pytest.raises(RegistrationError, match=match):
        register_module(cls, **kwargs)
    assert operators.get(kwargs.get("name", cls.__name__)) is None or kwargs.get("name") == "CoordAtt"


class Gate(nn.Module):
    """A channel-keeping gate taking one int option."""

    def __init__(self, c1: int, c2: int, reduction: int = 4):
        super().__init__()
        self.fc = nn.Conv2d(c1, c2, 1)

    def forward(self, x):
        return x * self.fc(x).sigmoid()


@pytest.mark.parametrize("name", ["Gate", "MyGate"])
def test_a_module_gets_the_same_checks_under_another_yaml_name(tmp_path, name):
    register_module(Gate, name=name)
    op = operators.get(name)
    assert op.cls is Gate and op.keeps_channels is True and op.n_supplied == 2
    yaml = "nc: 2\nbackbone:\n  - [-1, 1, Conv, [64, 3, 2]]\n  - [-1, 1, {m}, [{args}]]\n"
    yaml += "head:\n  - [-1, 1, Conv, [8, 1]]\n"  # the parser alone builds it: no Detect head needed for the checks
    good = tmp_path / "good.yaml"
    good.write_text(yaml.format(m=name, args="64, 8"))
    built, _ = parse_model(yaml_model_load(str(good)), 3, verbose=False)
    assert type(built[1]) is Gate and built[1].type.endswith(f".{name}")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.format(m=name, args="32"))  # c2 32 != its input's 64: the named channel check
    with pytest.raises(LayerError, match=rf"layer 1 \({name}\): {name} keeps the channel count, but its input has 64"):
        parse_model(yaml_model_load(str(bad)), 3, verbose=False)
    typed = tmp_path / "typed.yaml"
    typed.write_text(yaml.format(m=name, args="64, 2.5"))
    with pytest.raises(LayerError, match=rf"layer 1 \({name}\): option reduction=2\.5 is a float; expected int"):
        parse_model(yaml_model_load(str(typed)), 3, verbose=False)


def test_a_module_that_changes_channels_registers_but_is_not_insertable(tmp_path):
    register_module(Widen)
    try:
        assert operators.get("Widen").keeps_channels is False and "Widen" not in operators.insertable()
        (tmp_path / "w.yaml").write_text("base: yolo11n.yaml\ninsert:\n  - [4, Widen, []]\n")
        with pytest.raises(Exception, match="Widen does not keep its input's channel count"):
            DetectionModel(str(tmp_path / "w.yaml"), verbose=False)
    finally:
        operators.unregister_module("Widen")


def test_entry_point_module_trains_with_the_stock_yolo_command_and_reloads_under_safe_load(tmp_path, tiny_data):
    env = make_package(tmp_path / "site", "SEBlock = se_pkg:SEBlock\n")
    work = tmp_path / "empty"
    work.mkdir()
    (work / "yolo11n-se.yaml").write_text(SE_YAML)
    args = ["model=yolo11n-se.yaml", f"data={tiny_data}", "imgsz=64", "epochs=1", "batch=8", "workers=0"]
    run([YOLO_BIN, "train", *args, "plots=False", f"project={tmp_path / 'runs'}", "name=se"], work, env)
    best = tmp_path / "runs" / "se" / "weights" / "best.pt"
    code = (
        f"from ultralytics import YOLO; import numpy as np; m = YOLO({str(best)!r}); "
        "m.predict(np.zeros((64, 64, 3), 'uint8'), imgsz=64, verbose=False); "
        "print(sorted({type(x).__module__ + '.' + type(x).__name__ for x in m.model.modules()} & "
        "{'se_pkg.SEBlock'}))"
    )
    out = run([PY, "-c", code], work, {**env, "ULTRALYTICS_SAFE_LOAD": "1"})
    assert out.stdout.splitlines()[-1] == "['se_pkg.SEBlock']"


def test_a_broken_entry_point_fails_only_the_yaml_naming_it(tmp_path):
    env = make_package(tmp_path / "site", "SEBlock = se_pkg:SEBlock\nBroken = no_such_pkg.blocks:Broken\n")
    (tmp_path / "se.yaml").write_text(SE_YAML)
    (tmp_path / "broken.yaml").write_text("base: yolo11n.yaml\ninsert:\n  - [4, Broken, []]\n")
    code = textwrap.dedent(
        """
        from ultralytics import YOLO
        for yaml in ("yolov8n.yaml", "yolov8n-ca.yaml", "se.yaml", "broken.yaml"):
            try:
                YOLO(yaml)
                print("built", yaml)
            except Exception as e:
                print("error", yaml, e)
        """
    )
    lines = run([PY, "-c", code], tmp_path, env).stdout.splitlines()
    assert [line for line in lines if line.startswith("built")] == [
        "built yolov8n.yaml",
        "built yolov8n-ca.yaml",
        "built se.yaml",
    ]
    error = next(line for line in lines if line.startswith("error broken.yaml"))
    assert "module Broken from se-pkg 0.1 (entry point)" in error and "No module named 'no_such_pkg'" in error
    modules = run([YOLO_ATTN_BIN, "modules"], tmp_path, env).stdout
    assert "SEBlock" in modules and "se-pkg 0.1 (entry point)" in modules and "no_such_pkg" in modules


@pytest.mark.exhaustive
def test_entry_point_module_exports_to_onnx_matching_pytorch_and_takes_every_stock_item(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    env = make_package(tmp_path / "site", "SEBlock = se_pkg:SEBlock\n")
    (tmp_path / "yolo11n-se.yaml").write_text(SE_YAML)
    code = textwrap.dedent(
        """
        import torch
        from ultralytics.nn.tasks import DetectionModel, parse_model, yaml_model_load
        from ultralytics.utils import LOGGER
        stock = DetectionModel("yolo11n.yaml", verbose=False)
        held = []
        LOGGER.addFilter(lambda r: held.append(r.getMessage()) or True)
        DetectionModel("yolo11n.yaml", verbose=False).load(stock)
        model = DetectionModel("yolo11n-se.yaml", verbose=False)
        model.load(stock)
        n = [m.split()[1] for m in held if m.startswith("Transferred")]
        print("stock items", n[1], n[0])
        model.eval()
        x = torch.rand(1, 3, 64, 64)
        torch.onnx.export(model, x, "se.onnx", opset_version=17, dynamo=False)
        torch.save({"x": x, "y": model(x)[0]}, "ref.pt")
        """
    )
    out = run([PY, "-c", code], tmp_path, env).stdout
    line = next(line for line in out.splitlines() if line.startswith("stock items"))
    _, _, into_plugin, into_stock = line.split()
    # every item a stock model takes from a stock checkpoint (N of "Transferred N/M", M counts the model's own items)
    assert into_plugin.split("/")[0] == into_stock.split("/")[0]
    ref = torch.load(tmp_path / "ref.pt")
    session = ort.InferenceSession(str(tmp_path / "se.onnx"))
    y = session.run(None, {session.get_inputs()[0].name: ref["x"].numpy()})[0]
    assert torch.allclose(torch.from_numpy(y), outputs(ref["y"])[0], atol=1e-4)
