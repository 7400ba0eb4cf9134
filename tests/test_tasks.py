"""Every task end to end through the `yolo` command: a plugin YAML trains one epoch on its tiny synthetic data from an
empty directory, its checkpoint reloads in a fresh process for `yolo val`, and YOLO26 keeps its end-to-end head."""

import pytest
import torch
from conftest import SANDBOX, YOLO_BIN, run
from ultralytics import YOLO

FAST = ["epochs=1", "batch=8", "workers=0", "plots=False", "amp=False", "device=cpu", "pretrained=False"]
TASKS = {  # task: (plugin YAML, tiny data set, image size)
    "detect": ("yolo26n-cot.yaml", "synth-shapes-tiny.yaml", 64),
    "segment": ("yolo11n-seg-ca.yaml", "synth-shapes-seg-tiny.yaml", 64),
    "pose": ("yolo26n-pose-cot.yaml", "synth-shapes-pose-tiny.yaml", 64),
    "obb": ("yolo11n-obb-ca.yaml", "synth-shapes-obb-tiny.yaml", 64),
    "classify": ("yolo26n-cls-cot.yaml", "synth-shapes-cls-tiny", 64),
}


@pytest.mark.parametrize("task", TASKS)
def test_train_reload_val(task, tmp_path):
    model, data, imgsz = TASKS[task]
    project = SANDBOX / "tasks"
    out = run([YOLO_BIN, "train", f"model={model}", f"data={data}", f"imgsz={imgsz}", *FAST,
               f"project={project}", f"name={task}", "exist_ok=True"], cwd=tmp_path)  # fmt: skip
    assert not any(tmp_path.iterdir()), "a run from an empty directory must leave it empty"
    assert "yolo_attn." in out.stdout + out.stderr  # the summary rows show the plugin layers
    best = project / task / "weights" / "best.pt"
    val = run([YOLO_BIN, "val", f"model={best}", f"data={data}", f"imgsz={imgsz}", "batch=8", "workers=0",
               "plots=False", "device=cpu", f"project={project}", f"name={task}-val"], cwd=tmp_path)  # fmt: skip
    assert "all" in val.stdout + val.stderr or "top1_acc" in val.stdout + val.stderr

    loaded = YOLO(best)
    assert loaded.task == task
    assert any(type(m).__module__.startswith("yolo_attn.") for m in loaded.model.modules())


def test_yolo26_keeps_the_stock_end_to_end_head(tmp_path):
    best = SANDBOX / "tasks" / "detect" / "weights" / "best.pt"
    if not best.exists():
        pytest.skip("needs the detect run of test_train_reload_val")
    model, data, imgsz = TASKS["detect"]
    fresh, stock = YOLO(model).model, YOLO("yolo26n.yaml").model
    head, stock_head = fresh.model[-1], stock.model[-1]
    assert head.one2one_cv2 is not None and type(head) is type(stock_head)  # the one-to-one (NMS-free) branch is kept
    assert (fresh.end2end, head.max_det, head.reg_max) == (stock.end2end, stock_head.max_det, stock_head.reg_max)
    x = torch.rand(1, 3, 64, 64)
    for mode in (True, False):  # the one-to-one branch selected, and not
        fresh.end2end = stock.end2end = mode
        with torch.no_grad():
            assert fresh.eval()(x)[0].shape == stock.eval()(x)[0].shape

    # A trained checkpoint predicts and reloads exactly as a stock YOLO26 trained the same way.
    run([YOLO_BIN, "train", "model=yolo26n.yaml", f"data={data}", f"imgsz={imgsz}", *FAST,
         f"project={SANDBOX / 'tasks'}", "name=detect-stock", "exist_ok=True"], cwd=tmp_path)  # fmt: skip
    ours, theirs = YOLO(best), YOLO(SANDBOX / "tasks" / "detect-stock" / "weights" / "best.pt")
    assert ours.model.end2end == theirs.model.end2end
    results = [m.predict(x, imgsz=64, conf=0.0, device="cpu", verbose=False)[0] for m in (ours, theirs)]
    assert results[0].boxes.data.shape == results[1].boxes.data.shape
