"""Keep Ultralytics offline and away from the user's settings, in this process and in every subprocess it starts.

The environment and the sandbox's settings file are written at import time, before any test module imports
Ultralytics: it reads both on import and binds `DATASETS_DIR` (where data sets are found and built) there and then, so
a `SETTINGS.update()` after the import would reach subprocesses but not this process.
"""

import json
import os
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
# Only these keys: on import Ultralytics completes the file with its defaults for the others (keeping these values).
(SANDBOX / "config" / "Ultralytics").mkdir(parents=True)
(SANDBOX / "config" / "Ultralytics" / "settings.json").write_text(json.dumps(SANDBOX_SETTINGS))

from ultralytics.utils import DATASETS_DIR, SETTINGS  # noqa: E402

assert {k: SETTINGS[k] for k in SANDBOX_SETTINGS} == SANDBOX_SETTINGS, SETTINGS
assert DATASETS_DIR == SANDBOX / "datasets", DATASETS_DIR

YOLO_BIN = str(Path(sys.executable).with_name("yolo"))  # the installed console script of this environment


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
