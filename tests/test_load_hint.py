"""Loading a plugin checkpoint with the start-up hook off (`YOLO_ATTN_AUTOLOAD=0`), in fresh interpreters.

Unpickling a checkpoint imports the `yolo_attn.*` modules it names, which activates the plugin, so the default load
works (tests/test_cli.py). Ultralytics' restricted load (`ULTRALYTICS_SAFE_LOAD=1`) never imports them: there the
hook, even when off, makes the error name the plugin and say what to do (yolo_attn/loadhint.py), and it leaves every
other load, failed or not, exactly as Ultralytics has it.
"""

import sys
import types

import pytest
import torch
from helpers import PY, run
from ultralytics import YOLO

OFF = {"YOLO_ATTN_AUTOLOAD": "0"}
SAFE_OFF = {**OFF, "ULTRALYTICS_SAFE_LOAD": "1"}

# Import the modules listed in sys.argv[1] (comma-separated, may be empty), then load each checkpoint named after it
# with Ultralytics and print what was loaded or the error raised.
LOAD = """
import sys
for name in filter(None, sys.argv[1].split(",")):
    __import__(name)
from ultralytics import YOLO
for ckpt in sys.argv[2:]:
    try:
        model = YOLO(ckpt)
        print("LOADED", sorted({type(m).__name__ for m in model.model.modules()} & {"CoordAtt", "C2f"}))
    except Exception as e:
        print("ERROR", type(e).__name__, e)
print("PLUGIN-IMPORTED", "yolo_attn" in sys.modules)
"""


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    """A plugin checkpoint (yolov8n-ca), a stock one, an unreadable file, and one naming a module the plugin lacks."""
    d = tmp_path_factory.mktemp("ckpts")
    YOLO("yolov8n-ca.yaml").save(d / "plugin.pt")
    YOLO("yolov8n.yaml").save(d / "stock.pt")
    (d / "corrupt.pt").write_bytes(b"not a checkpoint" * 64)
    gone = types.ModuleType("yolo_attn.gone")  # a module of some other version of the plugin
    gone.Gone = type("Gone", (torch.nn.Module,), {"__module__": "yolo_attn.gone"})
    sys.modules["yolo_attn.gone"] = gone
    try:
        torch.save({"model": gone.Gone()}, d / "gone.pt")
    finally:
        del sys.modules["yolo_attn.gone"]
    return {p.stem: p for p in d.iterdir()}


def load(tmp_path, env, *ckpts, imports=()) -> str:
    out = run([PY, "-c", LOAD, ",".join(imports), *ckpts], tmp_path, env=env)
    return out.stdout + out.stderr


def test_hook_off_imports_nothing_and_leaves_the_parser_stock(tmp_path):
    code = (
        "import sys; print(*(m in sys.modules for m in ('yolo_attn', 'torch', 'ultralytics', 'yolo_attn_hook_off')),"
        "any(p.rstrip('/').endswith('yolo_attn') for p in sys.path));"
        "print([type(f).__name__ for f in sys.meta_path if 'OnImport' in type(f).__name__]);"
        "import ultralytics.nn.tasks as t, ultralytics.nn as n;"
        "print(t.parse_model.__module__, t.torch_safe_load._yolo_attn_hint, n.torch_safe_load is t.torch_safe_load)"
    )
    lines = run([PY, "-c", code], tmp_path, env=OFF).stdout.splitlines()
    assert lines[0].split() == ["False", "False", "False", "True", "False"]  # and the package folder left sys.path
    assert lines[1] == "['_HintOnImport']"
    assert lines[2].split() == ["ultralytics.nn.tasks", "True", "True"]


def test_safe_load_with_hook_off_names_the_plugin_and_what_to_do(tmp_path, checkpoints):
    log = load(tmp_path, {**SAFE_OFF, "YOLO_AUTOINSTALL": "1"}, checkpoints["plugin"])
    assert "ERROR TypeError" in log  # the type Ultralytics raises there; only the message is the plugin's
    assert "needs the yolo_attn plugin (it holds yolo_attn.coord_att.CoordAtt)" in log, log
    assert "`import yolo_attn` before loading the checkpoint, or unset YOLO_ATTN_AUTOLOAD" in log
    assert "official Ultralytics model" not in log and "AutoInstall" not in log and "AutoUpdate" not in log, log
    assert "PLUGIN-IMPORTED False" in log  # naming it did not activate it


@pytest.mark.parametrize(
    "imports", [["yolo_attn"], pytest.param(["ultralytics.nn.tasks", "yolo_attn"], marks=pytest.mark.exhaustive)]
)
def test_safe_load_with_hook_off_after_import_yolo_attn_loads(tmp_path, checkpoints, imports):
    # Before and after Ultralytics: the plugin's own finder and the hint's must compose, not call each other forever.
    log = load(tmp_path, SAFE_OFF, checkpoints["plugin"], imports=imports)
    assert "LOADED ['C2f', 'CoordAtt']" in log, log


@pytest.mark.exhaustive
def test_other_loads_with_hook_off_are_ultralytics_own(tmp_path, checkpoints):
    stock, corrupt = checkpoints["stock"], checkpoints["corrupt"]
    default, safe = load(tmp_path, OFF, stock, corrupt), load(tmp_path, SAFE_OFF, stock, corrupt)
    for log in (default, safe):
        assert "LOADED ['C2f']" in log and "yolo_attn" not in log, log
    assert f"ERROR TypeError ERROR ❌️ {corrupt} is not a loadable checkpoint" in default, default
    assert f"ERROR TypeError ERROR ❌️ {corrupt} references types outside the supported" in safe, safe


def test_module_missing_from_the_installed_plugin_is_named(tmp_path, checkpoints):
    # The unpickler imports yolo_attn (activating it), then misses yolo_attn.gone. The distribution is installed, so
    # Ultralytics' requirement check is satisfied and nothing is installed, even with auto-install on.
    log = load(tmp_path, {**OFF, "YOLO_AUTOINSTALL": "1"}, checkpoints["gone"])
    assert "ERROR ModuleNotFoundError" in log
    assert "needs the module 'yolo_attn.gone', which the installed yolo_attn 0.1.0 does not have" in log, log
    assert "AutoUpdate" not in log
