"""The plugin never breaks Ultralytics: registration is a transaction over one inventory, and `unregister()` is exact.

Subprocess tests break the internals a patch relies on (a missing function, a changed signature, a plugin module that
cannot import) and check that stock Ultralytics still works and a plugin YAML fails naming what went wrong.
"""

import os
import subprocess
import textwrap

import pytest
import torch
import ultralytics
import ultralytics.nn.tasks as tasks
from helpers import CA_YAML, PY, YOLO_ATTN_BIN, YOLO_BIN, run
from ultralytics.nn.tasks import DetectionModel

from yolo_attn import compat, failure, patches, register, unregister
from yolo_attn.lookup import shipped_dir

# The state the inventory touches, as a comparable fingerprint (identity of every bound function and attribute).
FINGERPRINT = textwrap.dedent(
    """
    import sys, torch, ultralytics.nn.tasks as tasks
    def name(g):
        if isinstance(g, tuple):
            return g[1]
        return f"{getattr(g, '__module__', '?')}.{getattr(g, '__qualname__', type(g).__name__)}"
    def fingerprint():
        names = ("parse_model", "yaml_model_load", "check_file", "check_font", "check_cls_dataset", "torch_safe_load")
        bound = sorted(
            f"{m.__name__}.{n}={name(getattr(m, n))}"
            for m in list(sys.modules.values()) if (getattr(m, "__name__", "") or "").startswith("ultralytics")
            for n in names if callable(getattr(m, n, None))
        )
        load = tasks.BaseModel.__dict__["load"]
        return {
            "bound": bound,
            "BaseModel.load": f"{load.__module__}.{load.__qualname__}",
            "safe_globals": sorted(map(name, torch.serialization.get_safe_globals())),
            "meta_path": [type(f).__name__ for f in sys.meta_path],
            "tasks names": sorted(k for k in vars(tasks) if not k.startswith("__")),
        }
    """
)


def _fingerprint() -> dict:
    scope = {}
    exec(FINGERPRINT, scope)
    return scope["fingerprint"]()


def test_unregister_leaves_exactly_the_state_of_a_process_without_the_plugin(tmp_path):
    used = "from ultralytics import YOLO; YOLO('yolov8n-ca.yaml'); import yolo_attn; "
    for _ in range(3):
        used += "yolo_attn.unregister(); yolo_attn.register(); "
    with_plugin = run([PY, "-c", FINGERPRINT + used + "yolo_attn.unregister(); print(fingerprint())"], tmp_path)
    no_plugin = (  # the start-up hook's finder taken out before Ultralytics is imported: the plugin never registers
        "from yolo_attn import import_watch; import_watch.forget('ultralytics.nn.tasks')\n"
        + FINGERPRINT
        + "from ultralytics import YOLO; YOLO('yolov8n.yaml'); print(fingerprint())"
    )
    without = run([PY, "-c", no_plugin], tmp_path)
    assert with_plugin.stdout.splitlines()[-1] == without.stdout.splitlines()[-1]


def test_register_unregister_cycles_in_process_are_clean():
    unregister()  # a fresh registration (rows other tests resolved in this process are no longer in the table)
    register()
    registered = _fingerprint()
    unregister()
    stock = _fingerprint()
    assert stock != registered and tasks.parse_model.__module__ == "ultralytics.nn.tasks"
    for _ in range(3):
        register()
        assert _fingerprint() == registered
        unregister()
        assert _fingerprint() == stock
    register()


IMPORT_ORDER = textwrap.dedent(
    """
    import sys
    {first}
    import ultralytics.data.utils, ultralytics.engine.trainer, ultralytics.engine.validator, ultralytics.nn.tasks
    from yolo_attn import patches
    wrapped = sorted(m.__name__ for m in list(sys.modules.values())
                     if getattr(getattr(m, "check_cls_dataset", None), "__module__", "") == "yolo_attn.data_checks")
    print(patches.is_registered(), sys.modules["ultralytics.nn.tasks"].parse_model.__module__, wrapped,
          [type(f).__name__ for f in sys.meta_path if type(f).__module__.startswith("yolo_attn")])
    """
)


@pytest.mark.parametrize(
    "first",
    [
        "import ultralytics.data",  # the parser registers while ultralytics.data.utils is half-imported
        "from ultralytics import YOLO",  # the parser first, ultralytics.data.utils later
        "import ultralytics.nn.tasks; import yolo_attn; yolo_attn.unregister(); yolo_attn.register()",
    ],
)
def test_every_import_order_registers_everything_and_leaves_no_finder(tmp_path, first):
    out = run([PY, "-c", IMPORT_ORDER.format(first=first)], tmp_path).stdout.splitlines()[-1]
    every_name = ["ultralytics.data.utils", "ultralytics.engine.trainer", "ultralytics.engine.validator"]
    assert out == f"True yolo_attn.parser {every_name} []"


def test_a_patch_that_waited_and_fails_its_check_is_off_alone(tmp_path):
    # after registration, ultralytics.data.utils is imported with check_cls_dataset's parameters changed (as a future
    # release might); that patch's check runs then, when the transaction has long been committed
    code = textwrap.dedent(
        """
        import importlib.machinery, sys
        import ultralytics.nn.tasks  # registers; check_cls_dataset waits for ultralytics.data.utils

        class ChangedRelease:
            def find_spec(self, name, path, target=None):
                if name != "ultralytics.data.utils":
                    return None
                spec = importlib.machinery.PathFinder.find_spec(name, path, target)
                run = spec.loader.exec_module

                def exec_module(module):
                    run(module)
                    f = module.check_cls_dataset
                    module.check_cls_dataset = lambda path, *a, **k: f(path, *a, **k)

                spec.loader.exec_module = exec_module
                return spec

        sys.meta_path.insert(1, ChangedRelease())  # behind the plugin's finder, which wraps its loader
        import ultralytics.data.utils as u
        from ultralytics import YOLO
        from yolo_attn import patches
        print("state:", patches.is_registered(), u.check_cls_dataset.__module__, YOLO("yolov8n-ca.yaml").task)
        """
    )
    out = run([PY, "-c", code], tmp_path)
    assert "state: True __main__ detect" in out.stdout.splitlines()
    warned = [line for line in (out.stdout + out.stderr).splitlines() if "check_cls_dataset is off" in line]
    assert len(warned) == 1 and "takes (path, a)" in warned[0] and "classification set" in warned[0], warned


def test_a_changed_signature_fails_the_whole_transaction_and_leaves_ultralytics_stock(monkeypatch):
    unregister()
    stock = _fingerprint()

    def parse_model(cfg, channels):  # a release that renamed the parser's parameters
        raise AssertionError("not to be called")

    monkeypatch.setattr(tasks, "parse_model", parse_model)
    stock_changed = _fingerprint()
    try:
        with pytest.raises(patches.RegistrationFailed, match=r"parse_model.*takes \(cfg, channels\)") as e:
            register()
        assert f"Ultralytics {ultralytics.__version__}" in str(e.value) and compat.SUPPORTED in str(e.value)
        failed = _fingerprint()
        # Stock, except the failure reporters: new names for the plugin's modules and wrappers that return the stock
        # result for everything but a plugin YAML or checkpoint (which then fail with the same message).
        assert {k: v for k, v in failed.items() if k not in ("tasks names", "bound")} == {
            k: v for k, v in stock_changed.items() if k not in ("tasks names", "bound")
        }
        changed = set(failed["bound"]) ^ set(stock_changed["bound"])
        assert all("install_reporters" in b or b in stock_changed["bound"] for b in changed), changed
        assert set(failed["tasks names"]) - set(stock_changed["tasks names"]) == {
            "CoordAtt",
            "CoTAttention",
            "AttnConv",
            "C2f_CoT",
            "C3k2_CoT",
        }
        assert failure.last() == str(e.value)
    finally:
        monkeypatch.undo()
        unregister()
    assert _fingerprint() == stock
    register()
    assert patches.is_registered() and failure.last() is None


def test_a_failing_install_rolls_back_what_was_installed(monkeypatch):
    unregister()
    stock = _fingerprint()
    last = patches.INVENTORY[-1]

    def broken():
        raise RuntimeError("simulated")

    monkeypatch.setattr(last, "install", broken)
    with pytest.raises(patches.RegistrationFailed, match="simulated"):
        register()
    monkeypatch.undo()
    unregister()
    assert _fingerprint() == stock
    register()
    assert tasks.parse_model.__module__ == "yolo_attn.parser"


@pytest.mark.parametrize(
    "breakage, what",
    [
        ("import ultralytics.utils.checks as c; c.check_font = lambda name=None: None", "check_font"),
        (
            "import ultralytics.utils.checks as c; f = c.check_file; c.check_file = lambda p, *a, **k: f(p, *a, **k)",
            "check_file",
        ),
        ("sys.modules['yolo_attn.yaml_checks'] = None", "yaml_checks"),
    ],
)
def test_broken_internals_leave_stock_ultralytics_working_and_plugin_yamls_name_the_failure(tmp_path, breakage, what):
    (tmp_path / "ca.yaml").write_text(CA_YAML.read_text())
    (tmp_path / "ref.yaml").write_text("base: yolov8n.yaml\ninsert:\n  - [4, CoordAtt, []]\n")
    code = textwrap.dedent(
        f"""
        import sys
        {breakage}
        from ultralytics import YOLO
        import ultralytics.nn.tasks as t
        print("parser:", t.parse_model.__module__)
        print("stock:", YOLO("yolov8n.yaml").task)
        for yaml in ("ca.yaml", "ref.yaml"):
            try:
                YOLO(yaml)
                print("built", yaml)
            except Exception as e:
                print("error:", e)
        """
    )
    out = run([PY, "-c", code], tmp_path)
    lines = out.stdout.splitlines()
    assert "parser: ultralytics.nn.tasks" in lines and "stock: detect" in lines
    output = (out.stdout + out.stderr).splitlines()
    logged = [line for line in output if "is not active" in line and not line.startswith("error:")]
    assert logged and what in logged[0] and ultralytics.__version__ in logged[0] and "8.3.253" in logged[0]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 2 and all(what in e and "is not active" in e for e in errors), out.stdout
    assert len(logged) == 1, logged  # said once


def test_doctor_prints_versions_inventory_and_checks(tmp_path):
    out = run([YOLO_ATTN_BIN, "doctor"], tmp_path).stdout
    assert f"Ultralytics {ultralytics.__version__}" in out and "state: registered" in out
    for patch in patches.INVENTORY:
        assert f"[ok] {patch.name}:" in out


def test_layer_scale_gamma_is_1d_and_old_3d_checkpoints_load_predict_and_transfer_the_same():
    yaml = {**tasks.yaml_model_load(str(CA_YAML)), "layer_scale": 0.5}
    model = DetectionModel(yaml, verbose=False).eval()
    gammas = [m for m in model.modules() if getattr(m, "gamma", None) is not None]
    assert gammas and all(m.gamma.ndim == 1 for m in gammas)  # MuSGD before 8.4.108 sends ndim >= 2 to Muon
    x = torch.rand(1, 3, 64, 64)
    for m in gammas:  # as saved by an earlier version: (C, 1, 1), random values
        m.gamma = torch.nn.Parameter(torch.rand(m.gamma.shape[0], 1, 1))
    with torch.no_grad():
        before = model(x)[0]
    fresh = DetectionModel(yaml, verbose=False).eval()
    fresh.load(model)  # the stock transfer path (fine-tuning an old checkpoint)
    with torch.no_grad():
        assert torch.allclose(fresh(x)[0], before, atol=1e-5)
        assert torch.allclose(model(x)[0], before)  # the old module itself, γ flattened, computes the same
    assert all(m.gamma.ndim == 1 for m in fresh.modules() if getattr(m, "gamma", None) is not None)


def test_plugin_layers_ignore_an_earlier_yamls_activation():
    from ultralytics.nn.modules import Conv

    before = Conv.default_act
    try:
        Conv.default_act = torch.nn.ReLU()  # what parse_model leaves after `activation: nn.ReLU()` before 8.4.164
        model = DetectionModel(str(CA_YAML), verbose=False)
    finally:
        Conv.default_act = before
    acts = {type(m.act).__name__ for m in model.modules() if isinstance(m, Conv)}
    assert "ReLU" not in acts and "SiLU" in acts and Conv.default_act is before


def test_twin_options_bind_to_the_installed_stock_signature():
    class C3k2Before84:  # 8.3.x: no `attn`
        def __init__(self, c1, c2, n=1, c3k=False, e=0.5, g=1, shortcut=True):
            pass

    names = ["c3k", "e", "attn", "g", "shortcut"]
    assert compat.bind_to(C3k2Before84, names, [True, 0.25]) == [True, 0.25]
    assert compat.bind_to(C3k2Before84, names, [True, 0.25, False, 1, False]) == [True, 0.25, 1, False]


def test_a_yolo26_base_on_a_release_without_yolo26_names_the_release(monkeypatch):
    from yolo_attn.reference import InsertionError

    monkeypatch.setattr(compat, "has_yolo26", lambda: False)
    with pytest.raises(InsertionError, match=r"needs Ultralytics >= 8\.4\.0; installed: Ultralytics"):
        tasks.yaml_model_load("yolo26n-ca.yaml")


def test_env_bool_reads_like_ultralytics(monkeypatch):
    for value, expected in [("1", True), ("True", True), (" yes ", True), ("0", False), ("", False)]:
        monkeypatch.setenv("YOLO_ATTN_TEST_FLAG", value)
        assert compat.env_bool("YOLO_ATTN_TEST_FLAG") is expected
    monkeypatch.delenv("YOLO_ATTN_TEST_FLAG")
    assert compat.env_bool("YOLO_ATTN_TEST_FLAG", True) is True


@pytest.mark.exhaustive
def test_stock_yolo_train_works_when_registration_fails(tmp_path, tiny_data):
    # sitecustomize runs in every interpreter of the `yolo` command, after the start-up hook: it changes the signature
    # of a function the plugin wraps before Ultralytics' parser is imported, as a future release might.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import ultralytics.utils.checks as c\n_check_file = c.check_file\n"
        "def check_file(path, *args, **kwargs):\n    return _check_file(path, *args, **kwargs)\n"
        "c.check_file = check_file\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    (work / "ca.yaml").write_text(CA_YAML.read_text())
    env = {"PYTHONPATH": str(site)}
    yolo = YOLO_BIN
    data = shipped_dir("datasets") / tiny_data  # by path: the plugin's lookup of shipped YAMLs is off
    args = [f"data={data}", "imgsz=64", "epochs=1", "batch=8", "workers=0", "plots=False"]
    out = run([yolo, "train", "model=yolov8n.yaml", *args, f"project={tmp_path / 'runs'}"], work, env)
    assert "is not active" in out.stdout + out.stderr and "check_file" in out.stdout + out.stderr
    proc = subprocess.run(
        [yolo, "train", "model=ca.yaml", *args], cwd=work, env={**os.environ, **env}, text=True, capture_output=True
    )
    assert proc.returncode != 0 and "is not active, Ultralytics is left stock: check_file" in proc.stdout + proc.stderr
