"""Keep Ultralytics offline and away from the user's settings, in this process and in every subprocess it starts.

The environment and the sandbox's settings file are written at import time, before any test module imports
Ultralytics: it reads both on import and binds `DATASETS_DIR` (where data sets are found and built) there and then, so
a `SETTINGS.update()` after the import would reach subprocesses but not this process.
"""

import json
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

from helpers import HAS_YOLO26, YOLO_BIN, run  # noqa: E402
from ultralytics.nn.modules import Conv  # noqa: E402
from ultralytics.utils import DATASETS_DIR, NUM_THREADS, SETTINGS  # noqa: E402

from yolo_attn import compat  # noqa: E402

assert {k: SETTINGS[k] for k in SANDBOX_SETTINGS} == SANDBOX_SETTINGS, SETTINGS
assert DATASETS_DIR == SANDBOX / "datasets", DATASETS_DIR


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
