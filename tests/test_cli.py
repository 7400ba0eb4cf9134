"""End to end through the real interfaces: the start-up hook, the stock `yolo` command, the Python API, reloads."""

import re
import site
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import PY, YOLO_BIN, run
from ultralytics import YOLO
from ultralytics.data.utils import check_det_dataset

import yolo_attn
from yolo_attn import CoordAtt
from yolo_attn.lookup import shipped_dir


def test_startup_hook_is_installed_and_imports_neither_torch_nor_ultralytics(tmp_path):
    assert any((Path(d) / "yolo_attn.pth").is_file() for d in site.getsitepackages())
    out = run(
        [PY, "-c", "import sys; print(*(m in sys.modules for m in ('yolo_attn', 'torch', 'ultralytics')))"], tmp_path
    )
    assert out.stdout.split() == ["True", "False", "False"]


def test_autoload_activates_on_ultralytics_import(tmp_path):
    # YOLO_ATTN_AUTOLOAD=0 leaving the parser stock: tests/test_load_hint.py.
    code = "import ultralytics.nn.tasks as t; print(t.parse_model.__module__)"
    assert run([PY, "-c", code], tmp_path).stdout.split()[-1] == "yolo_attn.parser"


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


def test_yolo_val_and_predict_commands(main_job, tiny_data, tmp_path):
    """`yolo val` scores every image and object of the val split; `yolo predict` saves the Python API's detections."""
    _, run_dir, _ = main_job
    best = run_dir / "weights" / "best.pt"
    val = [YOLO_BIN, "val", f"model={best}", f"data={tiny_data}", "imgsz=64", "batch=8", "plots=False"]
    out = run([*val, f"project={tmp_path}", "name=val"], tmp_path)  # a project folder: runs stay out of site-packages
    images = sorted(Path(check_det_dataset(tiny_data)["val"]).glob("*.jpg"))
    n_objects = sum(len(Path(str(p.with_suffix(".txt")).replace("/images/", "/labels/")).read_text().splitlines())
                    for p in images)  # fmt: skip
    row = re.search(r"^\s+all\s+(\d+)\s+(\d+)\s", out.stdout + out.stderr, re.MULTILINE)  # the metrics row
    assert row and (int(row[1]), int(row[2])) == (len(images), n_objects), (out.stdout + out.stderr)[-2000:]

    args = [f"model={best}", f"source={images[0]}", "imgsz=64", "conf=0.0", "save=False", "save_txt=True"]
    run([YOLO_BIN, "predict", *args, "save_conf=True", f"project={tmp_path}", "name=predict"], tmp_path)
    saved = np.loadtxt(tmp_path / "predict" / "labels" / f"{images[0].stem}.txt", ndmin=2)  # cls x y w h conf
    boxes = YOLO(best).predict(images[0], imgsz=64, conf=0.0, device="cpu", verbose=False)[0].boxes
    expected = np.concatenate([np.asarray(t).reshape(len(boxes), -1) for t in (boxes.cls, boxes.xywhn, boxes.conf)], 1)
    assert len(expected) > 0 and saved.shape == expected.shape
    diff = np.abs(saved[:, None] - expected[None]).max(-1)  # saved rows x expected rows (6 significant digits saved)
    assert diff.min(0).max() <= 1e-4 and diff.min(1).max() <= 1e-4, "the saved detections differ from the API's"


@pytest.mark.parametrize("env", [{"ULTRALYTICS_SAFE_LOAD": "1"}, {"YOLO_ATTN_AUTOLOAD": "0"}])
def test_checkpoint_reloads_in_fresh_process(main_job, env, tmp_path):
    _, run_dir, _ = main_job
    code = (
        "import sys, torch; from ultralytics import YOLO; m = YOLO(sys.argv[1]);"
        "names = {type(x).__name__ for x in m.model.modules()}; assert 'CoTAttention' in names, names;"
        "print(m.model.eval()(torch.rand(1, 3, 64, 96))[0].shape)"
    )
    out = run([PY, "-c", code, run_dir / "weights" / "best.pt"], tmp_path, env=env)
    assert "torch.Size([1, 11, 126])" in out.stdout  # 4 box + 7 class rows, 126 anchors at 64x96


def test_python_api_builds_yolo11_ca():
    model = YOLO("yolo11n-ca.yaml")
    attention = [m for m in model.model.model if isinstance(m, CoordAtt)]
    assert len(attention) == 3 and model.task == "detect"
    for m in attention:  # each CoordAtt keeps the channels of the C3k2 before it
        assert m.attn_h.out_channels == m.squeeze.conv.in_channels == model.model.model[m.i - 1].cv2.conv.out_channels
    with torch.no_grad():
        assert model.model.eval()(torch.rand(1, 3, 64, 96))[0].shape == (1, 84, 126)


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
