"""What a newcomer hits first: a misspelled YAML key is an error naming both spellings, `yolo-attn expand` validates
as the build does, and the plugin's commands print a user's mistake as one line (exit 2) without a traceback."""

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import ultralytics
from helpers import BENCH_BIN, YOLO_ATTN_BIN
from ultralytics import YOLO
from ultralytics.utils import YAML

from yolo_attn.lookup import shipped_dir
from yolo_attn.yaml_checks import PLUGIN_KEYS, ULTRALYTICS_KEYS, UnknownKeyError

FULL_YAML = """nc: 3
{extra}backbone:
  - [-1, 1, Conv, [16, 3, 2]]
  - [-1, 1, CoordAtt, [16{options}]]
  - [-1, 1, Conv, [32, 3, 2]]
head:
  - [-1, 1, Classify, [nc]]
"""


def command(args: list, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    "text, typo, meant",
    [
        ("base: yolo11.yaml\ninsrt:\n  - [6, CoTAttention, []]\n", "insrt", "insert"),
        ("base: yolo11.yaml\nlayer_scal: 0.0\ninsert:\n  - [6, CoTAttention, []]\n", "layer_scal", "layer_scale"),
        ("base: yolo11.yaml\nnc: 3\nreplce:\n  - [2, C3k2_CoT]\n", "replce", "replace"),
        (FULL_YAML.format(extra="widht_multiple: 0.5\n", options=""), "widht_multiple", "width_multiple"),
    ],
    ids=["insrt", "layer_scal", "replce", "full-yaml"],
)
def test_misspelled_key_of_a_plugin_yaml_names_both_spellings(tmp_path, text, typo, meant):
    (tmp_path / "typo.yaml").write_text(text)
    with pytest.raises(UnknownKeyError, match=rf"'{typo}'.*did you mean '{meant}'"):
        YOLO(str(tmp_path / "typo.yaml"))


def test_stock_yaml_keeps_ultralytics_behaviour_for_unknown_keys(tmp_path):
    stock = FULL_YAML.format(extra="my_note: anything\n", options="").replace("CoordAtt, [16]", "Conv, [16, 3, 1]")
    (tmp_path / "stock.yaml").write_text(stock)
    assert YOLO(str(tmp_path / "stock.yaml")).task == "classify"


def test_every_key_of_the_stock_and_shipped_yamls_is_known():
    """A key that Ultralytics' own YAMLs (or the plugin's) use must never be reported as unknown."""
    root = Path(ultralytics.__file__).parent / "cfg" / "models"
    shipped = shipped_dir("model_yamls")
    keys = {key for path in [*root.rglob("*.yaml"), *shipped.glob("*.yaml")] for key in YAML.load(path)}
    assert keys - {"scale", "yaml_file"} <= set(ULTRALYTICS_KEYS + PLUGIN_KEYS)  # the two added by the loader


def test_expand_reports_a_wrong_option_in_one_line_and_exit_2(tmp_path):
    (tmp_path / "bad.yaml").write_text('base: yolo11n.yaml\ninsert:\n  - [6, CoTAttention, {kernel_size: "three"}]\n')
    proc = command([YOLO_ATTN_BIN, "expand", "bad.yaml"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("yolo-attn: error:")]
    assert len(errors) == 1 and "kernel_size='three'" in errors[0] and "CoTAttention" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    proc = command([YOLO_ATTN_BIN, "expand", "bad.yaml", "--traceback"], tmp_path)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "LayerError" in proc.stderr


def test_expand_validates_rows_the_parser_would_reject(tmp_path):
    """A forward `from` in a full YAML: `expand` fails as the build fails, naming the layer."""
    text = FULL_YAML.format(extra="", options="").replace("[-1, 1, Conv, [32, 3, 2]]", "[3, 1, Conv, [32, 3, 2]]")
    (tmp_path / "forward.yaml").write_text(text)
    proc = command([YOLO_ATTN_BIN, "expand", "forward.yaml"], tmp_path)
    assert proc.returncode == 2 and "layer 2" in proc.stderr and "'from' index 3" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_bench_reports_a_missing_file_in_one_line(tmp_path):
    proc = command([BENCH_BIN, "finetune", "--data", "no-such-data.yaml", "--out", tmp_path], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "yolo-attn-bench: error:" in proc.stderr and "no-such-data.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr


def export_warnings(model: str) -> set:
    """Export `model` to ONNX at 64 px; return the (category, file, line) of every warning raised meanwhile."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        YOLO(model).export(format="onnx", imgsz=64, simplify=False)  # the warnings come from torch's exporter
    return {(w.category.__name__, Path(w.filename).name, w.lineno) for w in caught}


def test_plugin_onnx_export_warns_no_more_than_stock(tmp_path, monkeypatch):
    """CoT (also as a C3k2 twin), AttnConv and CoordAtt export with the warnings a stock export gives, no others."""
    pytest.importorskip("onnx")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "yolo11n-all.yaml").write_text(
        "base: yolo11n.yaml\ninsert:\n  - [4, CoordAtt, []]\n  - [6, CoTAttention, []]\n  - [16, AttnConv, []]\n"
        "replace:\n  - [8, C3k2_CoT]\n"
    )
    stock = export_warnings("yolo11n.yaml")
    plugin = export_warnings(str(tmp_path / "yolo11n-all.yaml"))
    assert plugin <= stock, f"only in the plugin's export: {plugin - stock}"


def test_import_name_installs_as_the_distribution():
    """Ultralytics auto-installs a checkpoint's missing module by its import name (`yolo_attn`); pip normalises that
    to the distribution `yolo-attn`, so publishing this project under its name makes that install fetch the plugin."""
    from packaging.utils import canonicalize_name

    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    name = re.search(r'^name = "([^"]+)"', pyproject, re.M).group(1)
    assert canonicalize_name("yolo_attn") == canonicalize_name(name)


@pytest.mark.exhaustive  # two fresh interpreters importing Ultralytics: ~20 s idle, over a minute on a loaded machine
def test_checkpoint_where_the_plugin_is_not_installed(tmp_path):
    """Without the plugin (`python -S`: no .pth, so no start-up hook; and `yolo_attn` unimportable, as where it is not
    installed, whether this environment holds it as a wheel or editable), Ultralytics announces an auto-install of
    'yolo_attn'; under ULTRALYTICS_SAFE_LOAD=1 it installs nothing (offline here either way)."""
    torch.save({"model": YOLO("yolo11n-ca.yaml").model, "train_args": {}}, tmp_path / "ca.pt")
    site = next(p for p in sys.path if p.endswith("site-packages"))
    code = (
        "import sys\n"
        "class NotInstalled:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'yolo_attn':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        f"sys.meta_path.insert(0, NotInstalled()); sys.path.append({site!r})\n"
        "from ultralytics import YOLO; YOLO('ca.pt')"
    )
    logs = {}
    for safe in ("0", "1"):
        env = {**os.environ, "ULTRALYTICS_SAFE_LOAD": safe, "YOLO_AUTOINSTALL": "1", "YOLO_OFFLINE": "1"}
        proc = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert proc.returncode != 0
        logs[safe] = proc.stdout + proc.stderr
    assert "AutoInstall will run now for 'yolo_attn'" in logs["0"]
    assert "AutoInstall" not in logs["1"] and "references types outside" in logs["1"], logs["1"]
