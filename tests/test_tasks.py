"""Every task end to end: a plugin YAML trains one epoch on its tiny synthetic data with the `yolo` command from an
empty directory, validating its best checkpoint over the whole val split at the end of the run, reloads and predicts
through the Python API, and YOLO26 keeps its end-to-end head. `pytest -m exhaustive` adds `yolo val` of each
checkpoint in a fresh process."""

import re
from pathlib import Path

import pytest
import torch
from helpers import YOLO_BIN, run
from ultralytics import YOLO
from ultralytics.data.utils import check_cls_dataset, check_det_dataset
from ultralytics.nn.tasks import DetectionModel

FAST = ["epochs=1", "batch=8", "workers=0", "plots=False", "amp=False", "device=cpu", "pretrained=False"]
TASKS = {  # task: (plugin YAML, tiny data set, image size)
    "detect": ("yolo26n-cot.yaml", "synth-shapes-tiny.yaml", 64),
    "segment": ("yolo11n-seg-ca.yaml", "synth-shapes-seg-tiny.yaml", 64),
    "pose": ("yolo26n-pose-cot.yaml", "synth-shapes-pose-tiny.yaml", 64),
    "obb": ("yolo11n-obb-ca.yaml", "synth-shapes-obb-tiny.yaml", 64),
    "classify": ("yolo26n-cls-cot.yaml", "synth-shapes-cls-tiny", 64),
}
RESULT = {"detect": "boxes", "segment": "masks", "pose": "keypoints", "obb": "obb", "classify": "probs"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`yolo train` of a task's plugin YAML from an empty directory, once per task: (project folder, best.pt, log)."""
    done = {}

    def train(task: str) -> tuple:
        if task not in done:
            model, data, imgsz = TASKS[task]
            project, cwd = tmp_path_factory.mktemp(f"{task}-runs"), tmp_path_factory.mktemp(f"{task}-cwd")
            out = run([YOLO_BIN, "train", f"model={model}", f"data={data}", f"imgsz={imgsz}", *FAST,
                       f"project={project}", "name=train"], cwd=cwd)  # fmt: skip
            assert not any(cwd.iterdir()), "a run from an empty directory must leave it empty"
            summary = [line for line in (out.stdout + out.stderr).splitlines() if "yolo_attn." in line]
            assert summary, "the model summary rows must show the plugin layers"
            done[task] = project, project / "train" / "weights" / "best.pt", out.stdout + out.stderr
        return done[task]

    return train


def val_split(task: str, data: str) -> tuple:
    """(number of images, number of labelled objects) of the val split, counted from the files."""
    if task == "classify":
        images = list(Path(check_cls_dataset(data)["val"]).rglob("*.jpg"))
        return len(images), len(images)  # one object per crop
    images = sorted(Path(check_det_dataset(data)["val"]).glob("*.jpg"))
    labels = [Path(str(p.with_suffix(".txt")).replace("/images/", "/labels/")) for p in images]
    return len(images), sum(len(f.read_text().splitlines()) for f in labels if f.is_file())


def check_val_log(task: str, data: str, log: str) -> None:
    """Check that a validation scored every image (and every labelled object) of the val split."""
    if task == "classify":  # "all  top1  top5": accuracies over the whole split
        top1, top5 = map(float, re.search(r"^\s+all\s+([\d.]+)\s+([\d.]+)\s*$", log, re.MULTILINE).groups())
        assert 0 <= top1 <= top5 <= 1
    else:  # "all  images  instances  P  R  mAP50  mAP50-95 ...": every val image and labelled object was scored
        row = re.search(r"^\s+all\s+(\d+)\s+(\d+)((?:\s+[\d.]+)+)\s*$", log, re.MULTILINE)
        assert row, log[-2000:]
        assert (int(row[1]), int(row[2])) == val_split(task, data)
        assert all(0 <= float(v) <= 1 for v in row[3].split())


@pytest.mark.exhaustive
@pytest.mark.parametrize("task", TASKS)
def test_yolo_val_in_fresh_process(task, trained, tmp_path):
    model, data, imgsz = TASKS[task]
    project, best, _ = trained(task)
    val = run([YOLO_BIN, "val", f"model={best}", f"data={data}", f"imgsz={imgsz}", "batch=8", "workers=0",
               "plots=False", "device=cpu", f"project={project}", "name=val"], cwd=tmp_path)  # fmt: skip
    check_val_log(task, data, val.stdout + val.stderr)


@pytest.mark.parametrize("task", TASKS)
def test_train_val_reload_predict(task, trained):
    model, data, imgsz = TASKS[task]
    _, best, log = trained(task)
    assert "Validating" in log and str(best) in log  # the run validates its best checkpoint at the end
    check_val_log(task, data, log)

    loaded = YOLO(best)
    assert loaded.task == task
    assert any(type(m).__module__.startswith("yolo_attn.") for m in loaded.model.modules())
    image = next(Path(check_det_dataset("synth-shapes-tiny.yaml")["val"]).glob("*.jpg"))
    (result,) = loaded.predict(image, imgsz=imgsz, conf=0.0, device="cpu", verbose=False)
    got = getattr(result, RESULT[task])
    assert got is not None and len(got) > 0, f"{task}: no {RESULT[task]} predicted at conf=0"
    if task == "classify":
        torch.testing.assert_close(got.data.sum(), torch.tensor(1.0))
        assert got.data.shape == (7,)
    else:
        assert result.orig_shape == (imgsz * 2, imgsz * 2)  # synth-shapes-tiny images are 128 px
        if task == "pose":
            assert got.data.shape[1:] == (5, 3)  # the data set's kpt_shape


def test_yolo26_keeps_the_stock_end_to_end_head(trained):
    _, best, _ = trained("detect")
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

    # The trained checkpoint keeps the one-to-one branch and, in either mode, outputs what a stock YOLO26 outputs.
    ours = YOLO(best).model.float().eval()
    stock = DetectionModel("yolo26n.yaml", nc=ours.nc, verbose=False).eval()  # the data set's class count
    assert ours.model[-1].one2one_cv2 is not None and type(ours.model[-1]) is type(stock_head)
    for mode in (True, False):
        ours.end2end = stock.end2end = mode
        with torch.no_grad():
            assert ours(x)[0].shape == stock(x)[0].shape
