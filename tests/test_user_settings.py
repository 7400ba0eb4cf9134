"""Where a user's runs and data land, and that the plugin never writes the user's Ultralytics settings.

The README's main job from an empty working directory, as a user with a pip-installed Ultralytics has it: settings with
a relative `runs_dir` (Ultralytics' default outside a git work tree) and a `datasets_dir` of their own.
"""

import json
import os
import subprocess

from helpers import YOLO_BIN


def test_runs_in_working_dir_data_in_datasets_dir_settings_untouched(tmp_path):
    cfg, work, data = tmp_path / "cfg", tmp_path / "work", tmp_path / "data"
    work.mkdir()
    (cfg / "Ultralytics").mkdir(parents=True)
    settings = cfg / "Ultralytics" / "settings.json"
    settings.write_text(json.dumps({"datasets_dir": str(data), "runs_dir": "runs", "sync": False}))
    # Ultralytics completes the file on first import (its own doing); the plugin must not change it afterwards.
    env = {**os.environ, "YOLO_CONFIG_DIR": str(cfg)}
    for key in ("PYTEST_CURRENT_TEST", "GITHUB_ACTIONS"):  # else Ultralytics sends runs to its own tests/tmp folder
        env.pop(key, None)
    subprocess.run([YOLO_BIN, "settings"], cwd=work, env=env, capture_output=True, timeout=120, check=True)
    before = settings.read_bytes()
    assert json.loads(before)["runs_dir"] == "runs" and json.loads(before)["datasets_dir"] == str(data)

    args = ["model=yolov8n-ca.yaml", "data=synth-shapes-tiny.yaml", "epochs=1", "imgsz=64", "batch=8", "workers=0"]
    proc = subprocess.run(
        [YOLO_BIN, "train", *args, "plots=False", "device=cpu"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (work / "runs" / "detect" / "train" / "weights" / "best.pt").is_file()
    assert sorted(p.name for p in work.iterdir()) == ["runs"]
    assert (data / "synth-shapes-tiny" / "images" / "val").is_dir()  # built where the settings say
    assert settings.read_bytes() == before
