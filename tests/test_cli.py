"""End to end through the real interfaces: the start-up hook, the stock `yolo` command, the Python API, reloads."""

import site
import sys
from pathlib import Path

import pytest
from conftest import YOLO_BIN, run
from ultralytics import YOLO
from ultralytics.data.utils import check_det_dataset

import yolo_attn
from yolo_attn import CoordAtt
from yolo_attn.lookup import shipped_dir

PY = sys.executable
TRAIN_ARGS = {"epochs": 1, "imgsz": 64, "batch": 8, "workers": 0, "plots": False, "device": "cpu", "exist_ok": True}
TRAIN = [f"{k}={v}" for k, v in TRAIN_ARGS.items()]


def test_startup_hook_is_installed_and_imports_neither_torch_nor_ultralytics(tmp_path):
    assert any((Path(d) / "yolo_attn.pth").is_file() for d in site.getsitepackages())
    out = run(
        [PY, "-c", "import sys; print(*(m in sys.modules for m in ('yolo_attn', 'torch', 'ultralytics')))"], tmp_path
    )
    assert out.stdout.split() == ["True", "False", "False"]


@pytest.mark.parametrize("flag, expected", [(None, "yolo_attn.registry"), ("0", "ultralytics.nn.tasks")])
def test_autoload_activates_on_ultralytics_import_and_env_var_disables_it(tmp_path, flag, expected):
    code = "import ultralytics.nn.tasks as t; print(t.parse_model.__module__)"
    out = run([PY, "-c", code], tmp_path, env={"YOLO_ATTN_AUTOLOAD": flag} if flag else None)
    assert out.stdout.split()[-1] == expected


def test_operator_module_imported_first_still_registers(tmp_path):
    # An operator module imports Ultralytics, whose parser import triggers registration mid-way through that module.
    code = "from yolo_attn.cot import CoTAttention; from ultralytics import YOLO; print(YOLO('yolov8n-ca.yaml').task)"
    assert run([PY, "-c", code], tmp_path).stdout.split()[-1] == "detect"


def test_spawned_worker_processes_have_the_plugin(tmp_path):
    # Multiprocessing 'spawn' workers (and DDP scripts) are fresh interpreters that only import Ultralytics.
    script = tmp_path / "spawn_check.py"
    script.write_text(
        "import multiprocessing as mp\n"
        "def build(_):\n"
        "    from ultralytics.nn.tasks import DetectionModel\n"
        "    return type(DetectionModel('yolov8n-ca.yaml', verbose=False).model[5]).__name__\n"
        "if __name__ == '__main__':\n"
        "    with mp.get_context('spawn').Pool(1) as pool:\n"
        "        print(pool.map(build, [0])[0])\n"
    )
    assert run([PY, str(script)], tmp_path).stdout.split()[-1] == "CoordAtt"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data):
    """Train yolov8n-ca for one tiny epoch with the stock `yolo` command, from a directory outside the repo."""
    work = tmp_path_factory.mktemp("cli")
    run([YOLO_BIN, "train", "model=yolov8n-ca.yaml", f"data={tiny_data}", f"project={work}", "name=ca", *TRAIN], work)
    best = work / "ca" / "weights" / "best.pt"
    assert best.is_file()
    return work, best


def test_yolo_val_and_predict_commands(trained, tiny_data):
    work, best = trained
    val = [YOLO_BIN, "val", f"model={best}", f"data={tiny_data}", "imgsz=64", "batch=8", "plots=False"]
    out = run([*val, f"project={work}", "name=val"], work)  # an explicit project keeps runs out of site-packages
    assert "all" in out.stdout + out.stderr  # the metrics table row over all classes
    image = next(Path(check_det_dataset(tiny_data)["val"]).glob("*.jpg"))
    predict = [YOLO_BIN, "predict", f"model={best}", f"source={image}", "imgsz=64", "save=False"]
    out = run([*predict, f"project={work}", "name=predict"], work)
    assert "64x64" in out.stdout + out.stderr or "inference" in out.stdout + out.stderr


@pytest.mark.parametrize("env", [{"ULTRALYTICS_SAFE_LOAD": "1"}, {"YOLO_ATTN_AUTOLOAD": "0"}])
def test_checkpoint_reloads_in_fresh_process(trained, env):
    work, best = trained
    code = (
        "import sys, torch; from ultralytics import YOLO; m = YOLO(sys.argv[1]);"
        "names = {type(x).__name__ for x in m.model.modules()}; assert 'CoordAtt' in names, names;"
        "print(m.model.eval()(torch.rand(1, 3, 64, 96))[0].shape)"
    )
    out = run([PY, "-c", code, best], work, env=env)
    assert "torch.Size([1, 11, 126])" in out.stdout  # 4 box + 7 class rows, 126 anchors at 64x96


def test_python_api_trains_yolo11_ca(tmp_path, tiny_data):
    model = YOLO("yolo11n-ca.yaml")
    model.train(data=tiny_data, project=str(tmp_path), name="api", **TRAIN_ARGS)
    assert sum(isinstance(m, CoordAtt) for m in model.model.modules()) == 3
    assert (tmp_path / "api" / "weights" / "last.pt").is_file()


def test_local_yaml_takes_precedence_over_shipped(tmp_path, monkeypatch):
    assert YOLO("yolov8n-ca.yaml").model.model[-1].nc == 80
    local = (shipped_dir("model_yamls") / "yolov8-ca.yaml").read_text().replace("nc: 80", "nc: 7")
    (tmp_path / "yolov8-ca.yaml").write_text(local)
    monkeypatch.chdir(tmp_path)
    assert YOLO("yolov8n-ca.yaml").model.model[-1].nc == 7


def test_shipped_files_are_installed():
    names = {p.name for p in shipped_dir("model_yamls").glob("*.yaml")}
    assert {"yolov8-ca.yaml", "yolo11-ca.yaml"} <= names
    assert (shipped_dir("datasets") / "synth-shapes.yaml").is_file()
    package = Path(yolo_attn.__file__).parent
    if any(package.is_relative_to(d) for d in site.getsitepackages()):  # a wheel install carries them in the package
        assert shipped_dir("model_yamls") == package / "model_yamls"
