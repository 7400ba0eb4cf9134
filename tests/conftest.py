"""Keep Ultralytics offline and away from the user's settings, in this process and in every subprocess it starts.

The environment and the sandbox's settings file are written at import time, before any test module imports
Ultralytics: it reads both on import and binds `DATASETS_DIR` (where data sets are found and built) there and then, so
a `SETTINGS.update()` after the import would reach subprocesses but not this process.
"""

import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

SANDBOX = Path(tempfile.mkdtemp(prefix="yolo_attn_tests_"))
os.environ.update(
    YOLO_OFFLINE="1",  # no connectivity checks, downloads or event uploads
    YOLO_AUTOINSTALL="0",  # never pip-install a missing requirement
    YOLO_CONFIG_DIR=str(SANDBOX / "config"),  # settings (datasets_dir, runs_dir) private to this run
)

SANDBOX_SETTINGS = {
    "datasets_dir": str(SANDBOX / "datasets"),
    "runs_dir": str(SANDBOX / "runs"),
    "weights_dir": str(SANDBOX / "weights"),
    "sync": False,
}
# Ultralytics writes its complete settings file first (releases before 8.4.115 reset a partial one to defaults), then
# these keys replace its values; this process and every subprocess read the result. The folder must exist first:
# releases before 8.4 fall back to a shared one in the temp dir when YOLO_CONFIG_DIR is missing.
(SANDBOX / "config").mkdir()
subprocess.run([sys.executable, "-c", "import ultralytics.utils"], env=os.environ, capture_output=True, check=False)
SETTINGS_FILE = SANDBOX / "config" / "Ultralytics" / "settings.json"
SETTINGS_FILE.parent.mkdir(exist_ok=True)
previous = json.loads(SETTINGS_FILE.read_text()) if SETTINGS_FILE.exists() else {}
SETTINGS_FILE.write_text(json.dumps({**previous, **SANDBOX_SETTINGS}))

import ultralytics.nn.tasks as tasks  # noqa: E402
from ultralytics.nn.modules import Conv  # noqa: E402
from ultralytics.utils import DATASETS_DIR, LOGGER, NUM_THREADS, SETTINGS  # noqa: E402

from yolo_attn import compat  # noqa: E402

assert {k: SETTINGS[k] for k in SANDBOX_SETTINGS} == SANDBOX_SETTINGS, SETTINGS
assert DATASETS_DIR == SANDBOX / "datasets", DATASETS_DIR

YOLO_BIN = str(Path(sys.executable).with_name("yolo"))  # the installed console script of this environment
MODEL_CLASSES = {  # Ultralytics' model class for each task
    "detect": tasks.DetectionModel,
    "segment": tasks.SegmentationModel,
    "pose": tasks.PoseModel,
    "obb": tasks.OBBModel,
    "classify": tasks.ClassificationModel,
}

# Ultralytics sets PyTorch's thread count to NUM_THREADS whenever it selects the CPU in-process (train, val, predict),
# so without a fixed value here a test's speed and numerics would depend on which tests ran before it.
torch.set_num_threads(NUM_THREADS)
THREADS = torch.get_num_threads()


@pytest.fixture(autouse=True)
def no_leaked_global_state():
    """Fail a test that leaves global state changed (Conv.default_act, matplotlib's backend) and restore it; restore
    PyTorch's thread count, which Ultralytics itself changes on purpose (see above)."""
    act, backend, threads = Conv.default_act, _matplotlib_backend(), torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    leaked = []
    if Conv.default_act is not act:
        leaked.append(f"Conv.default_act {act} -> {Conv.default_act}")
        Conv.default_act = act
    if backend is not None and _matplotlib_backend() != backend:
        import matplotlib

        leaked.append(f"matplotlib backend {backend} -> {_matplotlib_backend()}")
        matplotlib.use(backend)
    assert not leaked, f"the test left global state changed: {leaked}"


def _matplotlib_backend():
    """matplotlib's backend, or None where no test has imported matplotlib yet (importing it here would cost ~1 s)."""
    return sys.modules["matplotlib"].get_backend() if "matplotlib" in sys.modules else None


@pytest.fixture(scope="module")
def one_thread():
    """Run a module on one thread: many builds of small models, where a second thread gains little on 2 shared cores
    and OpenMP's spinning threads lose a lot when the cores are busy. Restored for the modules after it."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(THREADS)


# On a release before YOLO26 (8.3), a case naming a YOLO26 model is skipped with the reason (the two hooks below).
HAS_YOLO26 = compat.has_yolo26()
# The fast set's sample of the stock-YAML sweeps: the families the plugin ships YAMLs for, one per task (YOLO11's
# pose and classify models stand in for YOLO26's before 8.4).
STOCK_SAMPLE = {"yolov8.yaml", "yolo11.yaml", "yolo11-seg.yaml", "yolo11-obb.yaml"}
STOCK_SAMPLE |= (
    {"yolo26.yaml", "yolo26-pose.yaml", "yolo26-cls.yaml"} if HAS_YOLO26 else {"yolo11-pose.yaml", "yolo11-cls.yaml"}
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a release without YOLO26, a test that failed only because a YOLO26 YAML does not exist there is skipped."""
    outcome = yield
    report = outcome.get_result()
    if not HAS_YOLO26 and report.failed and call.excinfo is not None:
        if re.search(r"'yolo26[^']*\.yaml' (was not found|does not exist)|is a YOLO26 model", str(call.excinfo.value)):
            report.outcome, report.longrepr = "skipped", (str(item.path), item.location[1], "YOLO26 needs 8.4.0+")


def pytest_collection_modifyitems(config, items):
    """Skip the cases whose parameters name a YOLO26 model on a release without YOLO26."""
    if HAS_YOLO26:
        return
    skip = pytest.mark.skip(reason=compat.yolo26_message("the case"))
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {}).values()
        values = [v for p in params for v in (p if isinstance(p, (tuple, list)) else [p])]
        if any(isinstance(v, (str, Path)) and compat.is_yolo26_name(v) for v in values):
            item.add_marker(skip)


def sampled(paths: list, sample: set) -> list:
    """Parameters for a sweep over `paths`: those named in `sample` run in the fast set, the others only with
    `pytest -m exhaustive`.

    Args:
        paths (list): The files the sweep covers (Path objects).
        sample (set): File names that stay in the fast set.

    Returns:
        (list): Each path, or a pytest.param carrying the `exhaustive` marker.
    """
    missing = sample - {p.name for p in paths}
    assert not missing, f"the fast sample names files that do not exist: {sorted(missing)}"
    return [p if p.name in sample else pytest.param(p, marks=pytest.mark.exhaustive) for p in paths]


def logged(fn) -> list:
    """Call `fn` and return the messages Ultralytics' logger emitted meanwhile."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    LOGGER.addHandler(handler)
    try:
        fn()
    finally:
        LOGGER.removeHandler(handler)
    return [r.getMessage() for r in records]


def run(args: list, cwd: Path, env: dict = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a command in a fresh interpreter, failing the test with its output if it exits non-zero."""
    proc = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def outputs(x) -> list:
    """Flatten a model's (nested) output into a list of tensors."""
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict):
        x = list(x.values())
    return [t for item in (x if isinstance(x, (list, tuple)) else []) for t in outputs(item)]


def randomise_norms(m: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every norm layer non-trivial statistics and affine parameters, so a misplaced norm shows in the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)):
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.3)
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=g) * 0.3)
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) + 1.0)
    return m


@pytest.fixture(scope="session")
def tiny_data() -> str:
    """Name of the tiny shipped dataset YAML, built once per test session by Ultralytics' own dataset check."""
    from ultralytics.data.utils import check_det_dataset

    check_det_dataset("synth-shapes-tiny.yaml")
    return "synth-shapes-tiny.yaml"


# The README's main job (`yolo train model=yolov8n-cot.yaml data=synth-shapes.yaml batch=16 device=cpu`) with only the
# size of the job reduced: data, epochs and image size (workers=0 is what Ultralytics uses on CPU anyway).
MAIN_JOB = ["train", "model=yolov8n-cot.yaml", "batch=16", "device=cpu", "epochs=1", "imgsz=64", "workers=0"]


@pytest.fixture(scope="session")
def main_job(tmp_path_factory, tiny_data) -> tuple:
    """Run the README's main job once with the stock `yolo` command, from an empty working directory, offline, plots
    on (Ultralytics' default). An absolute project folder: under pytest (PYTEST_CURRENT_TEST is inherited by the
    subprocess) Ultralytics would put a relative/default one under site-packages/tests/tmp/runs, not under runs_dir.

    Returns:
        (tuple): The working directory, the run folder and the command's output (stdout and stderr).
    """
    root = tmp_path_factory.mktemp("main_job")
    work, run_dir = root / "work", root / "runs" / "main"
    work.mkdir()
    out = run([YOLO_BIN, *MAIN_JOB, f"data={tiny_data}", f"project={run_dir.parent}", "name=main"], work, timeout=600)
    return work, run_dir, out.stdout + out.stderr


def pytest_unconfigure(config):
    """Remove the sandbox (settings, data sets, runs) of this test session."""
    import shutil

    shutil.rmtree(SANDBOX, ignore_errors=True)
