"""Tests for the offline procedural dataset generator datasets/synth_shapes.py and its dataset YAMLs."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
GEN_FILE = ROOT / "datasets" / "synth_shapes.py"
TINY_YAML = ROOT / "datasets" / "synth-shapes-tiny.yaml"


def _load_generator():
    spec = importlib.util.spec_from_file_location("synth_shapes_under_test", GEN_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ss = _load_generator()


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _read_labels(path: Path) -> np.ndarray:
    return np.array([[float(v) for v in line.split()] for line in path.read_text().splitlines()]).reshape(-1, 5)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_labels_match_drawn_objects(tmp_path):
    n, seed, count = 128, 3, 12
    root = ss.generate(tmp_path / "ds", n_train=count, n_val=0, imgsz=n, seed=seed)
    n_labels = 0
    for i in range(count):
        img, labels, info = ss.render_sample(seed, "train", i, n, debug=True)
        owner, bg, clean = info["owner"], info["background"], info["clean"]
        # nothing is drawn outside the items' masks
        assert np.array_equal(clean[owner < 0], bg[owner < 0])
        for (c, x0, y0, x1, y1), k, vis in zip(labels.tolist(), info["ids"].tolist(), info["visible"].tolist()):
            n_labels += 1
            assert 0 <= c < len(ss.CLASS_NAMES)
            assert 0 <= x0 < x1 <= n and 0 <= y0 < y1 <= n
            assert x1 - x0 >= 3 and y1 - y0 >= 3, "degenerate box"
            mask = owner == k
            # the box is exactly the tight box of the object's visible drawn pixels
            assert (x0, y0, x1, y1) == _tight_box(mask)
            assert 0.4 <= vis <= 1.0  # never more than 60% occluded
            # the object really is drawn there and contrasts with the background under it
            diff = np.abs(clean[mask].astype(int) - bg[mask].astype(int)).sum(1)
            assert diff.mean() > 20, f"class {c} object barely differs from its background"
            if c in (4, 5):  # pair / triplet: 2 / 3 separate marks in a horizontal row, never occluded
                assert vis == 1.0
                m8 = mask[y0:y1, x0:x1].astype(np.uint8)
                n_cc, _, stats, cent = cv2.connectedComponentsWithStats(m8, connectivity=8)
                assert n_cc - 1 == (2 if c == 4 else 3)
                assert np.ptp(cent[1:, 1]) < 0.5 * (y1 - y0) + 1 and (x1 - x0) > (y1 - y0)
            if c == 6 and vis == 1.0:  # framed: the box outline is the frame itself
                sub = mask[y0:y1, x0:x1]
                assert sub[0].all() and sub[-1].all() and sub[:, 0].all() and sub[:, -1].all()
        # what generate() wrote matches: same boxes (normalised) and the decoded JPEG is the rendered image
        lab = _read_labels(root / "labels" / "train" / f"{i:06d}.txt")
        assert lab.shape[0] == labels.shape[0]
        if len(labels):
            x0, y0, x1, y1 = (labels[:, 1:].T / n).astype(float)
            expect = np.stack([labels[:, 0], (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], 1)
            np.testing.assert_allclose(lab, expect, atol=1e-6)
        jpg_file = root / "images" / "train" / f"{i:06d}.jpg"
        assert jpg_file.read_bytes() == ss._encode_jpg(img)
        jpg = cv2.imread(str(jpg_file))
        assert jpg.shape == (n, n, 3)
        assert np.abs(jpg.astype(int) - img.astype(int)).mean() < 8
    assert n_labels >= count  # at least one object per image on average


def test_deterministic(tmp_path):
    a = _tree(ss.generate(tmp_path / "a", 5, 3, imgsz=96, seed=7))
    b = _tree(ss.generate(tmp_path / "b", 5, 3, imgsz=96, seed=7))
    assert a.keys() == b.keys() and len([k for k in a if k.endswith(".jpg")]) == 8
    assert a == b  # byte-identical labels and JPEGs
    img1, lab1 = ss.render_sample(7, "val", 2, 96)
    img2, lab2 = ss.render_sample(7, "val", 2, 96)
    assert np.array_equal(img1, img2) and np.array_equal(lab1, lab2)
    # a split's images do not depend on its size
    c = _tree(ss.generate(tmp_path / "c", 2, 1, imgsz=96, seed=7))
    assert all(c[k] == a[k] for k in c if k.endswith((".jpg", ".txt")))
    # another seed gives another dataset; train and val differ
    d = _tree(ss.generate(tmp_path / "d", 5, 3, imgsz=96, seed=8))
    imgs = [k for k in a if k.endswith(".jpg")]
    assert sum(a[k] == d[k] for k in imgs) == 0
    assert a["images/train/000000.jpg"] != a["images/val/000000.jpg"]


def test_regenerate_replaces_splits(tmp_path):
    root = tmp_path / "ds"
    ss.generate(root, 4, 2, imgsz=64, seed=0)
    (root / "labels" / "train.cache").write_text("stale")
    ss.generate(root, 2, 1, imgsz=64, seed=1)
    assert len(list((root / "images" / "train").glob("*.jpg"))) == 2
    assert len(list((root / "labels" / "val").glob("*.txt"))) == 1
    assert not (root / "labels" / "train.cache").exists()
    assert not list(root.rglob("*.partial"))
    meta = json.loads((root / "synth_shapes.json").read_text())
    assert meta["seed"] == 1 and meta["names"] == ss.CLASS_NAMES


def test_every_class_appears():
    counts = np.zeros(len(ss.CLASS_NAMES), int)
    for i in range(40):
        _, labels = ss.render_sample(0, "train", i, 160)
        np.add.at(counts, labels[:, 0], 1)
    assert (counts >= 5).all(), dict(zip(ss.CLASS_NAMES, counts.tolist()))


CLI_SCRIPT = """
import runpy, sys
before = set(sys.modules)  # (an installed plugin may legitimately be imported at startup by a .pth hook)
gen, root = sys.argv[1:3]
sys.argv = [gen, "--root", root, "--train", "2", "--val", "1", "--imgsz", "64", "--seed", "5"]
runpy.run_path(gen, run_name="__main__")
bad = [m for m in set(sys.modules) - before if m.split(".")[0] in ("torch", "ultralytics", "yolo_attn")]
assert not bad, f"generator must stay standalone, imported {bad}"
"""


def test_cli_and_standalone_imports(tmp_path):
    root = tmp_path / "cli"
    r = subprocess.run(
        [sys.executable, "-c", CLI_SCRIPT, str(GEN_FILE), str(root)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert len(list((root / "images" / "train").glob("*.jpg"))) == 2
    assert len(list((root / "labels" / "val").glob("*.txt"))) == 1


CHECK_SCRIPT = r"""
import os, sys, time
from pathlib import Path
from ultralytics.data.utils import check_det_dataset, verify_image_label
from ultralytics.utils import DATASETS_DIR

yaml_path, expect_root = sys.argv[1], Path(sys.argv[2])
assert Path(DATASETS_DIR) == expect_root.parent, DATASETS_DIR
d = check_det_dataset(yaml_path)
assert Path(d["path"]) == expect_root, d["path"]
assert d["nc"] == 7 and d["names"][6] == "framed", d["names"]
imgs = sorted((expect_root / "images" / "train").glob("*.jpg")) + sorted((expect_root / "images" / "val").glob("*.jpg"))
assert len(imgs) == 24, len(imgs)
for im in imgs:
    lb = str(im).replace("/images/", "/labels/").replace(".jpg", ".txt")
    r = verify_image_label((str(im), lb, "", False, 7, 0, 0, False))
    assert r[0] is not None and r[8] == 0 and not r[9], r[9]  # not corrupt, no warning
stamp = {p: p.stat().st_mtime_ns for p in imgs}
time.sleep(0.05)
d2 = check_det_dataset(yaml_path)  # second use: must reuse, not regenerate
assert Path(d2["path"]) == expect_root
assert {p: p.stat().st_mtime_ns for p in imgs} == stamp
print("OK")
"""


def test_yaml_autobuild_via_ultralytics(tmp_path):
    pytest.importorskip("ultralytics")
    # copy the YAML and the generator side by side into a fresh dir (as they sit in the repo / wheel)
    work = tmp_path / "pkg"
    work.mkdir()
    yaml_path = Path(shutil.copy(TINY_YAML, work / TINY_YAML.name))
    shutil.copy(GEN_FILE, work / GEN_FILE.name)
    # isolated Ultralytics settings: datasets_dir under tmp, so the relative 'path:' resolves there
    cfg = tmp_path / "cfg"
    (cfg / "Ultralytics").mkdir(parents=True)
    datasets_dir = tmp_path / "datasets"
    settings = {"settings_version": "0.0.8", "datasets_dir": str(datasets_dir), "sync": False}
    (cfg / "Ultralytics" / "settings.json").write_text(json.dumps(settings))
    (cfg / "Ultralytics" / "Arial.ttf").write_bytes(b"")  # check_font() would otherwise try the network
    env = {**os.environ, "YOLO_CONFIG_DIR": str(cfg), "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}
    expect_root = datasets_dir / "synth-shapes-tiny"
    r = subprocess.run(
        [sys.executable, "-c", CHECK_SCRIPT, str(yaml_path), str(expect_root)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr
    assert (expect_root / "synth_shapes.json").exists()
    assert not (work / "synth-shapes-tiny").exists()  # nothing written next to the YAML


@pytest.mark.parametrize("yaml_file", ["synth-shapes.yaml", "synth-shapes-tiny.yaml"])
def test_dataset_yaml_contents(yaml_file):
    import yaml

    data = yaml.safe_load((ROOT / "datasets" / yaml_file).read_text())
    assert data["train"] == "images/train" and data["val"] == "images/val"
    assert data["names"] == dict(enumerate(ss.CLASS_NAMES))
    assert not Path(data["path"]).is_absolute()
    assert set(data["synth"]) == {"n_train", "n_val", "imgsz", "seed"}
    assert "ensure(" in data["download"] and "http" not in data["download"]


# ------------------------------------------------------------------------------------ segment / pose / OBB / classify
# The task datasets as Ultralytics itself reads them: found by name from another directory, built offline, loaded with
# its own dataset classes, every label compared with the generator's geometry (datasets/synth_tasks.py).
def _load_tasks():
    spec = importlib.util.spec_from_file_location("synth_tasks_under_test", ROOT / "datasets" / "synth_tasks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


st = _load_tasks()
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
    _, objs = st.objects(0, "train", i, 128)
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
            for (a, k), children in st.bridges(loops).items():
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
    assert data["kpt_shape"] == [5, 3] and data["flip_idx"] == st.FLIP_IDX == [0, 1, 4, 3, 2]
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
            flipped = kpts[st.FLIP_IDX] * [-1, 1, 1] + [n, 0, 0]
            np.testing.assert_allclose(st.keypoints(mirrored)[[0, 2, 4]], flipped[[0, 2, 4]], atol=1e-4)  # float32
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
    assert data["nc"] == 7 and data["names"] == dict(enumerate(sorted(ss.CLASS_NAMES)))
    for split, count in (("train", 16), ("val", 8)):
        crops = {p.name: p for p in Path(data[split]).rglob("*.jpg")}
        expect = {}
        for i in range(count):
            img, objs = st.objects(0, split, i, 128)
            for j, obj in enumerate(objs):
                expect[f"{i:06d}_{j}.jpg"] = (obj, img)
        assert crops.keys() == expect.keys()
        for name, (obj, img) in expect.items():
            assert crops[name].parent.name == ss.CLASS_NAMES[obj["cls"]]  # the scene's class for that object
            x0, y0, x1, y1 = st.crop_box(obj["box"], 128)
            b0, c0, b1, c1 = obj["box"]
            assert 0 <= x0 <= b0 < b1 <= x1 <= 128 and 0 <= y0 <= c0 < c1 <= y1 <= 128  # the whole object
            assert min(x1 - x0, y1 - y0) >= st.MIN_CROP  # Ultralytics skips images under 10 px as corrupt
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

    data = yaml.safe_load((ROOT / "datasets" / yaml_file).read_text())
    base = yaml.safe_load(
        (ROOT / "datasets" / yaml_file.replace("-seg", "").replace("-pose", "").replace("-obb", "")).read_text()
    )
    assert data["names"] == base["names"] and data["path"] == yaml_file[:-5]
    assert {k: v for k, v in data["synth"].items() if k != "task"} == base["synth"]  # same scenes as detection
    assert data["synth"]["task"] in st.TASKS and "synth_tasks.ensure(" in data["download"]
    assert "http" not in data["download"]
