"""A user's mistake under the commands users run (`yolo train/predict`, a script): one line naming the file, the layer,
what is wrong and the fix; a non-zero exit status; the traceback only with YOLO_ATTN_TRACEBACK=1."""

import re
import textwrap

import pytest
from helpers import PY, YOLO_BIN, run
from ultralytics.utils import ASSETS

from yolo_attn.usererrors import TRACEBACK_ENV

TRAIN = ["train", "data=synth-shapes-tiny.yaml", "epochs=1", "imgsz=64", "device=cpu", "workers=0"]
FULL = "nc: 2\n{backbone}:\n  - [-1, 1, Conv, [64, 3, 2]]\n  - [-1, 1, {module}, [64]]\n"
FULL += "head:\n  - [[-1], 1, Detect, [nc]]\n"  # a model YAML written out in full
MISTAKES = {  # file -> (YAML text, what the line must say)
    "typo.yaml": (
        FULL.format(backbone="backbone", module="CoTAtention"),
        r"typo\.yaml: layer 1 \(CoTAtention\): unknown module 'CoTAtention'; did you mean 'CoTAttention'\?",
    ),
    "stock-typo.yaml": (  # no plugin module at all: Ultralytics' own bare KeyError before
        FULL.format(backbone="backbone", module="C2ff"),
        r"stock-typo\.yaml: layer 1 \(C2ff\): unknown module 'C2ff'; did you mean 'C2f'\?",
    ),
    "section.yaml": (
        FULL.format(backbone="bakbone", module="CoTAttention"),
        r"section\.yaml: the 'backbone' section is missing; did you mean 'backbone' for 'bakbone'\?",
    ),
    "reference.yaml": (
        "base: yolov8n.yaml\ninsert:\n  - [4, CordAtt, []]\n",
        r"reference\.yaml: insert\[0\] \[4, 'CordAtt', \[\]\]: unknown module 'CordAtt'; did you mean 'CoordAtt'\?",
    ),
    "channels.yaml": (
        "base: yolov8n.yaml\ninsert:\n  - [4, CoordAtt, [64, 3]]\n",
        r"channels\.yaml: layer 5 \(CoordAtt\): CoordAtt keeps the channel count, but its input has 64 channels",
    ),
}


@pytest.mark.parametrize("name", list(MISTAKES))
def test_a_yaml_mistake_under_yolo_train_is_one_line(tmp_path, name):
    text, says = MISTAKES[name]
    (tmp_path / name).write_text(text)
    proc = run([YOLO_BIN, *TRAIN, f"model={name}"], tmp_path, check=False)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "WARNING" not in line]
    assert proc.returncode != 0 and len(lines) == 1, proc.stdout + proc.stderr
    assert lines[0].startswith("yolo: error: ") and TRACEBACK_ENV in lines[0]
    assert re.search(says, lines[0]), lines[0]


def test_the_traceback_on_request(tmp_path):
    text, _ = MISTAKES["typo.yaml"]
    (tmp_path / "typo.yaml").write_text(text)
    proc = run([YOLO_BIN, *TRAIN, "model=typo.yaml"], tmp_path, env={TRACEBACK_ENV: "1"}, check=False)
    assert proc.returncode != 0 and "Traceback (most recent call last)" in proc.stderr
    assert "UnknownModuleError" in proc.stderr and "did you mean 'CoTAttention'" in proc.stderr


def test_the_python_api_raises_a_named_error_that_is_also_a_key_error(tmp_path):
    from ultralytics import YOLO

    from yolo_attn.yaml_checks import UnknownModuleError

    text, _ = MISTAKES["stock-typo.yaml"]
    (tmp_path / "stock-typo.yaml").write_text(text)
    with pytest.raises(KeyError) as e:  # code that caught Ultralytics' KeyError still catches it
        YOLO(str(tmp_path / "stock-typo.yaml"))
    assert isinstance(e.value, UnknownModuleError) and str(e.value).startswith("stock-typo.yaml: layer 1 (C2ff)")


ECA = textwrap.dedent(
    """
    from torch import nn


    class ECA(nn.Module):
        def __init__(self, c1: int, c2: int, k: int = 3):
            super().__init__()
            self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

        def forward(self, x):
            y = x.mean((2, 3), keepdim=True).squeeze(-1).transpose(-1, -2)
            return x * self.conv(y).transpose(-1, -2).unsqueeze(-1).sigmoid()
    """
)


@pytest.mark.parametrize("safe_load", ["0", "1"])
def test_a_checkpoint_of_a_registered_module_loaded_without_it_names_the_module_and_both_fixes(tmp_path, safe_load):
    made, elsewhere = tmp_path / "made", tmp_path / "elsewhere"
    made.mkdir()
    elsewhere.mkdir()
    (made / "my_eca.py").write_text(ECA)
    (made / "yolov8n-eca.yaml").write_text("base: yolov8n.yaml\ninsert:\n  - [4, ECA, []]\n")
    save = "import yolo_attn, my_eca; yolo_attn.register_module(my_eca.ECA); from ultralytics import YOLO; "
    run([PY, "-c", save + f"YOLO('yolov8n-eca.yaml').save({str(elsewhere / 'eca.pt')!r})"], made)
    env = {"ULTRALYTICS_SAFE_LOAD": safe_load, "YOLO_AUTOINSTALL": "1"}  # AutoInstall on: it must not be tried
    proc = run([YOLO_BIN, "predict", "model=eca.pt", f"source={ASSETS / 'bus.jpg'}"], elsewhere, env=env, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "AutoInstall" not in out and len(out.strip().splitlines()) == 1, out
    for part in ("eca.pt: layer 5 (ECA) is my_eca.ECA", "cannot import 'my_eca'", "`yolo_attn.modules` entry points",
                 "yolo_attn.register_module(ECA)"):  # fmt: skip
        assert part in out, out
