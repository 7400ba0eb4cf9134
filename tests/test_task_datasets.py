"""synth-shapes for segment, pose, OBB and classify: labels checked against the generator's own geometry (the pixels
each object owns, its whole drawn mask), and each data set found by name and built offline by Ultralytics' checks."""

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
from ultralytics.data.utils import check_cls_dataset, check_det_dataset

from yolo_attn.lookup import shipped_dir

spec = importlib.util.spec_from_file_location("synth_tasks", shipped_dir("datasets") / "synth_tasks.py")
synth_tasks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(synth_tasks)

N = 128
SCENES = [synth_tasks.objects(0, split, i, N) for split in ("train", "val") for i in range(6)]
OBJECTS = [obj for _, objs in SCENES for obj in objs]


def test_scenes_hold_every_kind_of_object():
    assert len(OBJECTS) >= 20
    assert {obj["cls"] for obj in OBJECTS} == set(range(7))


def test_segment_polygon_fills_the_visible_pixels():
    exact = 0
    for obj in OBJECTS:
        visible = obj["visible"]
        filled = np.zeros((N, N), np.uint8)
        cv2.fillPoly(filled, [np.round(synth_tasks.polygon(visible)).astype(np.int32)], 1)
        filled = filled.astype(bool)
        assert (filled >= visible).all(), f"class {obj['cls']}: visible pixels left out"
        loops, _ = cv2.findContours(visible.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        if len(loops) == 1:  # one part, no hole: exactly its pixels
            assert np.array_equal(filled, visible), f"class {obj['cls']}"
            exact += 1
        else:  # parts and holes are joined by zero-width bridges, which rasterise to one-pixel lines
            assert (filled & ~visible).sum() <= sum(cv2.arcLength(c, False) for c in loops), f"class {obj['cls']}"
    assert exact >= 10


def test_pose_keypoints_are_the_drawn_shape_centre_and_extremes_with_visibility():
    for obj in OBJECTS:
        kpts = synth_tasks.keypoints(obj)
        ys, xs = np.nonzero(obj["drawn"])
        px, py = np.floor(kpts[:, :2]).astype(int).T
        assert np.allclose(kpts[0, :2], (xs.mean() + 0.5, ys.mean() + 0.5))  # centroid, pixel-edge coordinates
        assert (py[1], px[2], py[3], px[4]) == (ys.min(), xs.max(), ys.max(), xs.min())  # top, right, bottom, left
        assert obj["drawn"][py[1:], px[1:]].all()  # the extremes lie on the shape
        assert list(kpts[:, 2]) == [2 if obj["visible"][y, x] else 1 for x, y in zip(px, py)]


def test_obb_is_the_tight_rotated_box_around_the_visible_pixels():
    for obj in OBJECTS:
        corners = synth_tasks.oriented_box(obj["visible"]).astype(np.float32)
        ys, xs = np.nonzero(obj["visible"])
        centres = np.stack([xs + 0.5, ys + 0.5], 1)
        inside = [cv2.pointPolygonTest(corners, (float(x), float(y)), True) for x, y in centres]
        assert min(inside) >= -1e-3  # covers every visible pixel
        x0, y0, x1, y1 = obj["box"]
        assert (
            obj["visible"].sum() <= cv2.contourArea(corners) <= (x1 - x0) * (y1 - y0) + 1e-3
        )  # no looser than the box


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


@pytest.mark.parametrize("task", ["seg", "pose", "obb"])
def test_found_by_name_and_built_offline(task):
    data = check_det_dataset(f"synth-shapes-{task}-tiny.yaml")
    assert len(list(Path(data["val"]).glob("*.jpg"))) == 8
    if task == "pose":
        assert data["kpt_shape"] == [5, 3] and data["flip_idx"] == synth_tasks.FLIP_IDX


def test_classification_set_found_by_folder_name_and_built_offline():
    data = check_cls_dataset("synth-shapes-cls-tiny")
    assert data["nc"] == 7 and sorted(data["names"].values()) == sorted(synth_tasks.synth_shapes.CLASS_NAMES)
    assert any(Path(data["val"]).rglob("*.jpg"))
