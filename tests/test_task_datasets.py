"""synth-shapes for segment, pose, OBB and classify: each data set found by name and built offline by Ultralytics'
checks, loaded with its own dataset classes, and every label compared with the generator's geometry (the pixels each
object owns, its whole drawn mask; datasets/synth_tasks.py)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from yolo_attn.by_path import import_file
from yolo_attn.lookup import shipped_dir

DATA_DIR = shipped_dir("datasets")
synth_tasks = import_file(DATA_DIR / "synth_tasks.py")

N = 128
SCENES = [synth_tasks.objects(0, split, i, N) for split in ("train", "val") for i in range(6)]
OBJECTS = [obj for _, objs in SCENES for obj in objs]
CLASS_NAMES = synth_tasks.synth_shapes.CLASS_NAMES


def test_scenes_hold_every_kind_of_object():
    assert len(OBJECTS) >= 20
    assert {obj["cls"] for obj in OBJECTS} == set(range(7))


def test_written_labels_and_crops_match_the_scenes(tmp_path):
    for task in synth_tasks.TASKS:
        synth_tasks.generate(tmp_path / task, task, 6, 6, N)
    for split in ("train", "val"):
        scenes = SCENES[:6] if split == "train" else SCENES[6:]
        for i, (_, objs) in enumerate(scenes):
            for task, width in (("segment", None), ("pose", 1 + 4 + 15), ("obb", 1 + 8)):
                lines = (tmp_path / task / "labels" / split / f"{i:06d}.txt").read_text().splitlines()
                assert [int(line.split()[0]) for line in lines] == [obj["cls"] for obj in objs]
                assert width is None or all(len(line.split()) == width for line in lines)
        crops = sorted((tmp_path / "classify" / split).rglob("*.jpg"))
        assert len(crops) == sum(len(objs) for _, objs in scenes)
        names = synth_tasks.synth_shapes.CLASS_NAMES
        assert sorted(f.parent.name for f in crops) == sorted(names[o["cls"]] for _, objs in scenes for o in objs)


# The task datasets as Ultralytics itself reads them: found by name from another directory, built offline, loaded with
# its own dataset classes, every label compared with the generator's geometry (datasets/synth_tasks.py).
TASK_YAML = {
    "segment": "synth-shapes-seg-tiny.yaml",
    "pose": "synth-shapes-pose-tiny.yaml",
    "obb": "synth-shapes-obb-tiny.yaml",
}


def _offline_home(tmp_path: Path, monkeypatch) -> None:
    """Run from an empty working directory with a fresh Ultralytics datasets_dir, so each dataset is found by name and
    built by the current generator (Ultralytics binds DATASETS_DIR at import, before conftest's settings apply)."""
    import ultralytics.data.utils

    monkeypatch.setattr(ultralytics.data.utils, "DATASETS_DIR", tmp_path / "datasets")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")


def _ultralytics_labels(task: str, tmp_path: Path, monkeypatch) -> tuple[dict, list[dict]]:
    """Build the tiny ``task`` dataset by name from an empty directory; return its data dict and the train labels of
    Ultralytics' own loader, in image order, after checking that none was dropped or reported corrupt."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    _offline_home(tmp_path, monkeypatch)
    data = check_det_dataset(TASK_YAML[task])
    assert data["synth"]["imgsz"] == 128 and data["synth"]["n_train"] == 16
    ds = YOLODataset(img_path=data["train"], imgsz=128, augment=False, data=data, task=task, hyp=get_cfg())
    labels = sorted(ds.labels, key=lambda lab: lab["im_file"])
    assert [Path(lab["im_file"]).name for lab in labels] == [f"{i:06d}.jpg" for i in range(16)]  # none corrupt
    assert ds[0]["img"].shape == (3, 128, 128)  # and its transforms accept them
    return data, labels


def _scene(i: int, labels: dict) -> list[dict]:
    _, objs = synth_tasks.objects(0, "train", i, 128)
    assert labels["cls"][:, 0].astype(int).tolist() == [obj["cls"] for obj in objs]
    return objs


def test_segment_masks_as_ultralytics_fills_them_are_the_visible_pixels(tmp_path, monkeypatch):
    from ultralytics.data.utils import polygon2mask

    n, multi = 128, 0
    _, labels = _ultralytics_labels("segment", tmp_path, monkeypatch)
    for i, lab in enumerate(labels):
        for obj, seg in zip(_scene(i, lab), lab["segments"]):
            visible = obj["visible"]
            filled = polygon2mask((n, n), [seg * n]).astype(bool)  # exactly as Ultralytics rasterises a label
            assert (filled >= visible).all(), f"class {obj['cls']}: visible pixels left out"
            # the only extra pixels lie on the bridges joining parts and holes, each a one-pixel line
            loops = [
                c[:, 0] for c in cv2.findContours(visible.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)[0]
            ]
            lines = np.zeros((n, n), np.uint8)
            length = 0
            for (a, k), children in synth_tasks.bridges(loops).items():
                for b, j in children:
                    p, q = loops[a][k], loops[b][j]
                    cv2.line(lines, tuple(map(int, p)), tuple(map(int, q)), 1)
                    length += int(np.abs(p - q).max()) + 1
            extra = filled & ~visible
            assert extra.sum() <= length and (extra <= cv2.dilate(lines, np.ones((3, 3), np.uint8)).astype(bool)).all()
            multi += len(loops) > 1
            if len(loops) == 1:  # one part, no hole: the polygon's area is the pixels' less half the boundary
                assert np.array_equal(filled, visible)
                area = cv2.contourArea((seg * n).astype(np.float32))
                assert visible.sum() - cv2.arcLength(loops[0], True) / 2 - 1 <= area <= visible.sum()
    assert multi >= 5  # pairs, triplets, hollow shapes and frames were covered


def test_pose_keypoints_are_the_drawn_extremes_with_occlusion_flags(tmp_path, monkeypatch):
    n, flags = 128, set()
    data, labels = _ultralytics_labels("pose", tmp_path, monkeypatch)
    assert data["kpt_shape"] == [5, 3] and data["flip_idx"] == synth_tasks.FLIP_IDX == [0, 1, 4, 3, 2]
    for i, lab in enumerate(labels):
        objs = _scene(i, lab)
        # box columns: the detection box of the same object
        boxes = np.array([obj["box"] for obj in objs], np.float64).reshape(-1, 4)
        xywh = np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1) / n
        np.testing.assert_allclose(lab["bboxes"], xywh, atol=1e-6)
        for obj, kpts in zip(objs, lab["keypoints"]):
            kpts = kpts * [n, n, 1]
            drawn, visible = obj["drawn"], obj["visible"]
            ys, xs = np.nonzero(drawn)
            np.testing.assert_allclose(kpts[0, :2], (xs.mean() + 0.5, ys.mean() + 0.5), atol=1e-3)  # centroid
            px, py = np.floor(kpts[:, :2]).astype(int).T
            assert np.allclose(kpts[1:, :2] % 1, 0.5, atol=1e-4)  # pixel centres
            assert (py[1], px[2], py[3], px[4]) == (ys.min(), xs.max(), ys.max(), xs.min())  # top, right, bottom, left
            assert drawn[py[1:], px[1:]].all()  # on the shape itself
            # 2: the object owns the pixel; 1: something hides it (occluder, or background inside a hollow shape)
            expect = [2 if visible[y, x] else 1 for x, y in zip(px, py)]
            assert kpts[:, 2].tolist() == expect
            flags.update(expect)
            # flip_idx: Ultralytics mirrors x and reorders by flip_idx; that must give the mirrored object's keypoints
            # (centre, right, left exactly; top / bottom stay pixels of the mirrored top / bottom row, where the
            # median pixel of a row with an even count may differ)
            mirrored = {"drawn": drawn[:, ::-1], "visible": visible[:, ::-1]}
            flipped = kpts[synth_tasks.FLIP_IDX] * [-1, 1, 1] + [n, 0, 0]
            mirrored_kpts = synth_tasks.keypoints(mirrored)
            np.testing.assert_allclose(mirrored_kpts[[0, 2, 4]], flipped[[0, 2, 4]], atol=1e-4)  # float32
            assert all(mirrored["drawn"][int(y), int(x)] for x, y in flipped[[1, 3], :2])
            assert np.floor(flipped[[1, 3], 1]).tolist() == [ys.min(), ys.max()]
    assert flags == {1, 2}  # hidden keypoints occurred and were flagged


def test_obb_is_the_tightest_rotated_rectangle_inside_the_image(tmp_path, monkeypatch):
    n, at_border = 128, 0
    _, labels = _ultralytics_labels("obb", tmp_path, monkeypatch)
    for i, lab in enumerate(labels):
        for obj, corners in zip(_scene(i, lab), lab["segments"]):
            c = (corners * n).astype(np.float64)
            sides = np.roll(c, -1, 0) - c
            assert np.abs((sides * np.roll(sides, -1, 0)).sum(1)).max() < 1e-2 * (sides**2).sum(1).max()  # rectangle
            assert (c >= 0).all() and (c <= n).all()
            ys, xs = np.nonzero(obj["visible"])
            squares = (np.stack([xs, ys], 1)[:, None] + np.float32([[0, 0], [1, 0], [1, 1], [0, 1]])).reshape(-1, 2)
            poly = c.astype(np.float32)
            inside = [cv2.pointPolygonTest(poly, (float(x), float(y)), True) for x, y in np.unique(squares, axis=0)]
            assert min(inside) >= -2e-3  # covers every visible pixel square
            area = cv2.contourArea(poly)
            rect = cv2.minAreaRect(squares.astype(np.float32))
            x0, y0, x1, y1 = obj["box"]
            if ((cv2.boxPoints(rect) >= 0) & (cv2.boxPoints(rect) <= n)).all():
                assert abs(area - rect[1][0] * rect[1][1]) < 1e-2  # OpenCV's minimum-area rectangle
            else:  # touching the border: no larger than the detection box, no smaller than the true minimum
                at_border += 1
                assert rect[1][0] * rect[1][1] - 1e-2 <= area <= (x1 - x0) * (y1 - y0) + 1e-2
    assert at_border < 10


def test_classify_crops_found_by_folder_name_and_loaded_by_ultralytics(tmp_path, monkeypatch):
    from ultralytics.cfg import get_cfg
    from ultralytics.data.dataset import ClassificationDataset
    from ultralytics.data.utils import check_cls_dataset

    _offline_home(tmp_path, monkeypatch)
    data = check_cls_dataset("synth-shapes-cls-tiny")  # a bare folder name, built where Ultralytics would download
    assert data["nc"] == 7 and data["names"] == dict(enumerate(sorted(CLASS_NAMES)))
    for split, count in (("train", 16), ("val", 8)):
        crops = {p.name: p for p in Path(data[split]).rglob("*.jpg")}
        expect = {}
        for i in range(count):
            img, objs = synth_tasks.objects(0, split, i, 128)
            for j, obj in enumerate(objs):
                expect[f"{i:06d}_{j}.jpg"] = (obj, img)
        assert crops.keys() == expect.keys()
        for name, (obj, img) in expect.items():
            assert crops[name].parent.name == CLASS_NAMES[obj["cls"]]  # the scene's class for that object
            x0, y0, x1, y1 = synth_tasks.crop_box(obj["box"], 128)
            b0, c0, b1, c1 = obj["box"]
            assert 0 <= x0 <= b0 < b1 <= x1 <= 128 and 0 <= y0 <= c0 < c1 <= y1 <= 128  # the whole object
            assert min(x1 - x0, y1 - y0) >= synth_tasks.MIN_CROP  # Ultralytics skips images under 10 px as corrupt
            region = img[y0:y1, x0:x1]
            assert crops[name].read_bytes() == cv2.imencode(".jpg", region, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    ds = ClassificationDataset(str(data["train"]), get_cfg(overrides={"imgsz": 64}), augment=False)
    assert len(ds) == len(list(Path(data["train"]).rglob("*.jpg"))) and ds[0]["img"].shape == (3, 64, 64)


def test_task_datasets_share_the_detection_scenes(tmp_path, monkeypatch):
    from ultralytics.data.utils import check_det_dataset

    _offline_home(tmp_path, monkeypatch)
    det = Path(check_det_dataset("synth-shapes-tiny.yaml")["path"])
    for yaml_file in TASK_YAML.values():
        root = Path(check_det_dataset(yaml_file)["path"])
        for split in ("train", "val"):
            images = sorted((root / "images" / split).glob("*.jpg"))
            assert len(images) == (16 if split == "train" else 8)
            assert [p.read_bytes() for p in images] == [(det / "images" / split / p.name).read_bytes() for p in images]


@pytest.mark.parametrize(
    "yaml_file", [f"synth-shapes-{t}{s}.yaml" for t in ("seg", "pose", "obb") for s in ("", "-tiny")]
)
def test_task_dataset_yaml_contents(yaml_file):
    import yaml

    data = yaml.safe_load((DATA_DIR / yaml_file).read_text())
    base = yaml.safe_load(
        (DATA_DIR / yaml_file.replace("-seg", "").replace("-pose", "").replace("-obb", "")).read_text()
    )
    assert data["names"] == base["names"] and data["path"] == yaml_file[:-5]
    assert {k: v for k, v in data["synth"].items() if k != "task"} == base["synth"]  # same scenes as detection
    assert data["synth"]["task"] in synth_tasks.TASKS and "synth_tasks.ensure(" in data["download"]
    assert "http" not in data["download"]
