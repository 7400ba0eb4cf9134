"""The generated data sets under concurrency and faults: parallel first use builds a set once and every user gets it
whole; a killed build is recovered; a damaged set is rebuilt, or the error names it; a folder that cannot be written
is named. Through Ultralytics' own dataset checks and the `yolo` command, in fresh processes with a fresh datasets_dir.
"""

import ctypes
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import YOLO_BIN

from yolo_attn.by_path import import_file
from yolo_attn.lookup import shipped_dir

DATASETS = shipped_dir("datasets")
TINY = {  # data= argument -> (folder under datasets_dir, data folders and their file counts)
    "synth-shapes-tiny.yaml": ("synth-shapes-tiny", {"images/train": 16, "labels/train": 16, "images/val": 8}),
    "synth-shapes-seg-tiny.yaml": ("synth-shapes-seg-tiny", {"images/train": 16, "labels/val": 8, "images/val": 8}),
    "synth-shapes-pose-tiny.yaml": ("synth-shapes-pose-tiny", {"labels/train": 16, "images/val": 8}),
    "synth-shapes-obb-tiny.yaml": ("synth-shapes-obb-tiny", {"images/train": 16, "labels/val": 8}),
    "synth-shapes-cls-tiny": ("synth-shapes-cls-tiny", {}),  # crops: as many as the scenes' objects
}


ss = import_file(DATASETS / "synth_shapes.py")
st = import_file(DATASETS / "synth_tasks.py")
sb = import_file(DATASETS / "safe_build.py")  # the lock, the record, the kill hook


def _env(tmp: Path, **extra) -> dict:
    """Environment of a fresh Ultralytics: its own settings, datasets_dir `tmp/datasets`, offline."""
    cfg = tmp / "cfg" / "Ultralytics"
    cfg.mkdir(parents=True, exist_ok=True)
    settings = {k: str(tmp / k.split("_")[0]) for k in ("datasets_dir", "runs_dir", "weights_dir")}
    (cfg / "settings.json").write_text(json.dumps({**settings, "sync": False}))
    return {**os.environ, "YOLO_CONFIG_DIR": str(cfg.parent), "OMP_NUM_THREADS": "1", **extra}


def _complete(root: Path, expect: dict) -> None:
    """Assert the set in `root` matches its record, has the expected counts and no leftovers of a build."""
    record = json.loads((root / ss.RECIPE.marker).read_text())
    params = {k: record[k] for k in ("task", "n_train", "n_val", "imgsz", "seed")}
    assert sb.check(root, params, ss.RECIPE) is None
    for folder, n in expect.items():
        assert record["folders"][folder]["files"] == n and len(list((root / folder).iterdir())) == n, folder
    assert not list(root.parent.glob(f".{root.name}.partial")) and not list(root.rglob("*.partial"))


# ---------------------------------------------------------------------------------------------------- parallel use
RACE = r"""
import sys, time
from pathlib import Path
from ultralytics.data.utils import check_cls_dataset, check_det_dataset  # the plugin registers halfway through this

go = Path(sys.argv[1])
while not go.exists():  # start together
    time.sleep(0.005)
for data in sys.argv[2:]:
    d = check_det_dataset(data) if data.endswith(".yaml") else check_cls_dataset(data)
    val = Path(d["val"])
    print("USED", data, sum(1 for p in val.rglob("*.jpg")), flush=True)
"""


def test_parallel_first_use_builds_each_set_once(tmp_path):
    env, go = _env(tmp_path), tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACE, str(go), *TINY],
            env=env,
            cwd=tmp_path,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        for _ in range(3)
    ]
    time.sleep(1.0)
    go.touch()
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
    everything = "".join(outs)
    for data, (folder, expect) in TINY.items():
        assert everything.count(f"synth-shapes: building {folder} (") == 1, (data, everything[-4000:])
        _complete(tmp_path / "datasets" / folder, expect)
    n_val = {line.split()[1]: int(line.split()[2]) for out in outs for line in out.splitlines() if line[:5] == "USED "}
    assert all(n == 8 for d, n in n_val.items() if d.endswith(".yaml")), n_val  # every user saw the whole val split


def test_waiting_too_long_names_the_lock_file(tmp_path, monkeypatch):
    root = tmp_path / "synth-shapes-tiny"
    monkeypatch.setenv(sb.LOCK_TIMEOUT_ENV, "0.5")
    with sb.folder_lock(
        root, "synth-shapes"
    ):  # another build in progress (flock is per open file: this process conflicts too)
        with pytest.raises(TimeoutError, match=re.escape(str(tmp_path / ".synth-shapes-tiny.lock"))):
            ss.ensure(root, 2, 1, 64)
    assert ss.ensure(root, 2, 1, 64) == root  # released: the next user builds
    _complete(root, {"images/train": 2, "images/val": 1})


# ---------------------------------------------------------------------------------------------------------- faults
GENERATE = [sys.executable, str(DATASETS / "synth_shapes.py"), "--train", "4", "--val", "2", "--imgsz", "64"]


@pytest.mark.parametrize("at", [1, 9, 13, 16, 17], ids=["first-file", "val-file", "rename", "val-renamed", "record"])
def test_killed_build_is_rebuilt(tmp_path, at):
    # 4 + 2 scenes: steps 1-12 write files, 13-16 rename folders (images/val last), 17 is just before the record
    root = tmp_path / "set"
    if at == 1:  # over a finished set: a rebuild killed at once must not leave the old record standing
        ss.generate(root, 4, 2, 64)
    env = {**os.environ, sb.KILL_ENV: str(at)}
    proc = subprocess.run([*GENERATE, "--root", str(root)], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    params = {"task": "detect", "n_train": 4, "n_val": 2, "imgsz": 64, "seed": 0}
    assert sb.check(root, params, ss.RECIPE) is not None  # seen as unfinished
    ss.ensure(root, 4, 2, 64)
    _complete(root, {"images/train": 4, "labels/train": 4, "images/val": 2, "labels/val": 2})


@pytest.mark.parametrize("at", [2, -1], ids=["crop", "final-rename"])
def test_killed_classify_build_leaves_no_folder_to_take_for_a_set(tmp_path, monkeypatch, at):
    root, steps = tmp_path / "cls", tmp_path / "count"
    if at == -1:  # the rename of the whole set, the step before the record: count a build's steps first
        before = sb.steps_taken()
        with monkeypatch.context() as m:
            m.setenv(sb.KILL_ENV, "1000000")
            st.generate(steps, "classify", 3, 2, 64)
        at = sb.steps_taken() - before - 1
    args = [DATASETS / "synth_tasks.py", "--task", "classify", "--root", root, "--train", "3", "--val", "2"]
    args = [sys.executable, *map(str, args), "--imgsz", "64"]
    proc = subprocess.run(args, env={**os.environ, sb.KILL_ENV: str(at)}, timeout=120)
    assert proc.returncode == -9
    if at == 2:
        assert not root.exists()  # Ultralytics would take any folder of that name for a finished set
    st.ensure(root, "classify", 3, 2, 64)
    _complete(root, {})


@pytest.fixture
def data_utils(tmp_path, monkeypatch):
    """Ultralytics' dataset checks, as the plugin wraps them, with datasets_dir `tmp_path`."""
    import ultralytics.nn.tasks  # noqa: F401  (registers the plugin)
    from ultralytics.data import utils

    monkeypatch.setattr(utils, "DATASETS_DIR", tmp_path)
    return utils


def _use(data_utils, data: str) -> dict:
    return data_utils.check_det_dataset(data) if data.endswith(".yaml") else data_utils.check_cls_dataset(data)


@pytest.mark.parametrize("data", TINY)
def test_damaged_set_is_rebuilt_on_use(data_utils, tmp_path, data):
    folder, expect = TINY[data]
    root = tmp_path / folder
    _use(data_utils, data)
    record = json.loads((root / ss.RECIPE.marker).read_text())
    files = sorted((root / ("val" if "cls" in data else "images/val")).rglob("*.jpg"))
    for f in files[:3]:  # deleted files
        f.unlink()
    mtime = root.joinpath(ss.RECIPE.marker).stat().st_mtime_ns
    _use(data_utils, data)
    assert root.joinpath(ss.RECIPE.marker).stat().st_mtime_ns != mtime, "a set missing files was used as it is"
    assert json.loads((root / ss.RECIPE.marker).read_text()) == record and all(f.exists() for f in files)
    files[-1].write_bytes(files[-1].read_bytes()[:100])  # a truncated file
    _use(data_utils, data)
    assert files[-1].stat().st_size > 100
    _complete(root, expect)
    mtime = root.joinpath(ss.RECIPE.marker).stat().st_mtime_ns
    _use(data_utils, data)  # a whole set is used as it is
    assert root.joinpath(ss.RECIPE.marker).stat().st_mtime_ns == mtime


RO_SCRIPT = r"""
import sys
from yolo_attn.by_path import import_file
ss = import_file(sys.argv[1])
try:
    ss.ensure(sys.argv[2], 4, 2, 64)
except OSError as e:
    print("ERROR", e)
else:
    print("OK")
"""


def _without_root_override():
    """Drop root's power to write regardless of permission bits (CAP_DAC_OVERRIDE), so a 0o555 folder is read-only."""
    if os.geteuid() == 0 and ctypes.CDLL(None, use_errno=True).prctl(24, 1, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
        raise OSError(ctypes.get_errno(), "cannot drop CAP_DAC_OVERRIDE")


def test_read_only_folder(tmp_path):
    base = tmp_path / "datasets"
    root = base / "synth-shapes-tiny"
    ss.ensure(root, 4, 2, 64)

    def run(mode: int = 0o555) -> str:
        for p in [base, *base.rglob("*")]:
            p.chmod(mode if p.is_dir() else mode & 0o444)
        try:
            args = [sys.executable, "-c", RO_SCRIPT, str(DATASETS / "synth_shapes.py"), str(root)]
            r = subprocess.run(args, capture_output=True, text=True, timeout=120, preexec_fn=_without_root_override)
        except subprocess.SubprocessError as e:
            pytest.skip(f"cannot make a read-only folder here: {e}")
        finally:
            for p in [base, *base.rglob("*")]:
                p.chmod(0o755 if p.is_dir() else 0o644)
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert run().strip() == "OK"  # a finished set is used from a read-only disk
    (root / "images" / "val" / "000001.jpg").unlink()
    out = run()  # a damaged one is named, with what is wrong and why it cannot be rebuilt
    assert out.startswith("ERROR") and f"cannot build data set synth-shapes-tiny in {root}" in out, out
    assert "images/val holds 1 files, the build wrote 2" in out and "Permission denied" in out, out
    assert run(0o755).strip() == "OK"  # writable again: rebuilt
    _complete(root, {"images/train": 4, "images/val": 2})


def test_full_disk_names_the_folder(tmp_path):
    root = tmp_path / "synth-shapes-tiny"

    def small_files():  # a file size limit: writes fail (EFBIG) as on a full disk (ENOSPC), the same path
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))

    r = subprocess.run([sys.executable, "-c", RO_SCRIPT, str(DATASETS / "synth_shapes.py"), str(root)],
                       capture_output=True, text=True, timeout=120, preexec_fn=small_files)  # fmt: skip
    assert r.stdout.startswith("ERROR") and f"cannot build data set synth-shapes-tiny in {root}" in r.stdout, r
    assert "File too large" in r.stdout
    assert not list(root.rglob("*.partial")), "a failed build frees its space"
    assert not (root / ss.RECIPE.marker).exists()
    ss.ensure(root, 4, 2, 64)  # space again: built
    _complete(root, {"images/train": 4, "images/val": 2})


# ------------------------------------------------------------------------------- the `yolo` command (exhaustive)
FAST = ["epochs=1", "imgsz=64", "batch=8", "workers=0", "plots=False", "amp=False", "device=cpu", "pretrained=False"]
MODELS = {"synth-shapes-seg": "yolov8n-seg.yaml", "synth-shapes-pose": "yolov8n-pose.yaml",
          "synth-shapes-obb": "yolov8n-obb.yaml", "synth-shapes-cls": "yolov8n-cls.yaml"}  # fmt: skip


def _train(tmp_path: Path, data: str, name: str, **popen) -> subprocess.Popen:
    model = next((m for k, m in MODELS.items() if data.startswith(k)), "yolov8n.yaml")
    args = [YOLO_BIN, "train", f"model={model}", f"data={data}", *FAST, f"project={tmp_path / 'runs'}", f"name={name}"]
    return subprocess.Popen(args, cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def _race(tmp_path: Path, data: str, n: int = 3) -> list[str]:
    env = _env(tmp_path)
    procs = [_train(tmp_path, data, f"r{i}", env=env) for i in range(n)]
    outs = [p.communicate(timeout=3600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n\n".join(o[-3000:] for o in outs)
    return outs


@pytest.mark.exhaustive
@pytest.mark.parametrize("data", TINY)
def test_parallel_yolo_train_tiny(tmp_path, data):
    folder, expect = TINY[data]
    outs = _race(tmp_path, data)
    assert "".join(outs).count(f"synth-shapes: building {folder} (") == 1
    _complete(tmp_path / "datasets" / folder, expect)
    if data.endswith(".yaml"):  # each run validated on the whole val split
        assert all(re.search(r"val: .*\b8 images, \d+ backgrounds, 0 corrupt", o) for o in outs), outs[0][-3000:]


@pytest.mark.long
@pytest.mark.parametrize("data", ["synth-shapes.yaml", "synth-shapes-seg.yaml", "synth-shapes-pose.yaml",
                                  "synth-shapes-obb.yaml", "synth-shapes-cls"])  # fmt: skip
def test_parallel_yolo_train_full(tmp_path, data):
    folder = data.removesuffix(".yaml")
    outs = _race(tmp_path, data)
    assert "".join(outs).count(f"synth-shapes: building {folder} (") == 1
    root = tmp_path / "datasets" / folder
    if data.endswith(".yaml"):
        _complete(root, {"images/train": 1000, "labels/train": 1000, "images/val": 200, "labels/val": 200})
        assert all(re.search(r"val: .*\b200 images, \d+ backgrounds, 0 corrupt", o) for o in outs)
    else:
        _complete(root, {})


@pytest.mark.exhaustive
def test_yolo_train_after_a_killed_build_and_on_a_damaged_set(tmp_path):
    env = _env(tmp_path)
    proc = _train(tmp_path, "synth-shapes-tiny.yaml", "killed", env={**env, sb.KILL_ENV: "30"})
    proc.communicate(timeout=600)
    assert proc.returncode == -9
    root = tmp_path / "datasets" / "synth-shapes-tiny"
    for name in ("again", "damaged"):
        if name == "damaged":
            for f in sorted((root / "images" / "val").iterdir())[:3]:
                f.unlink()
        out = _train(tmp_path, "synth-shapes-tiny.yaml", name, env=env).communicate(timeout=600)[0]
        assert re.search(r"val: .*\b8 images, \d+ backgrounds, 0 corrupt", out), out[-3000:]
        _complete(root, {"images/train": 16, "labels/train": 16, "images/val": 8, "labels/val": 8})
    assert "images/val holds 5 files, the build wrote 8; rebuilding it" in out


@pytest.mark.exhaustive
def test_yolo_train_on_a_damaged_classification_set(tmp_path):
    env = _env(tmp_path)
    first = _train(tmp_path, "synth-shapes-cls-tiny", "first", env=env).communicate(timeout=600)[0]
    root = tmp_path / "datasets" / "synth-shapes-cls-tiny"
    crops = sorted((root / "val").rglob("*.jpg"))
    found = re.search(r"val:.* found (\d+) images in \d+ classes", first)
    assert found and int(found[1]) == len(crops), first[-3000:]
    for f in crops[:3]:
        f.unlink()
    out = _train(tmp_path, "synth-shapes-cls-tiny", "damaged", env=env).communicate(timeout=600)[0]
    assert f"val holds {len(crops) - 3} files, the build wrote {len(crops)}; rebuilding it" in out, out[-3000:]
    assert re.search(rf"val:.* found {len(crops)} images in \d+ classes", out), out[-3000:]
    _complete(root, {})
