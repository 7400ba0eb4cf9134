"""`yolo-attn doctor`: the versions, the registration state, and the inventory with each patch's check."""

import importlib
import platform

from yolo_attn import compat, failure, patches
from yolo_attn.version import __version__


def report() -> str:
    """Return the versions, the registration state and the inventory with each check's result."""
    lines = []
    try:
        import torch

        torch_version = torch.__version__
    except Exception as e:
        torch_version = f"not importable ({e})"
    try:
        version = compat.version()
        where = "inside" if compat.in_range(version) else "OUTSIDE"
    except Exception as e:
        version, where = f"not importable ({e})", "?"
    lines.append(
        f"yolo_attn {__version__}, Ultralytics {version} ({where} the supported ultralytics{compat.SUPPORTED})"
    )
    lines.append(f"torch {torch_version}, Python {platform.python_version()}")
    try:  # so that the patches waiting for it are installed and checked too
        importlib.import_module(patches.DATA_UTILS)
    except Exception as e:
        lines.append(f"{patches.DATA_UTILS} not importable ({e})")
    last = failure.last()
    state = "registered" if patches.is_registered() else f"NOT registered: {last}" if last else "not registered"
    lines.append(f"state: {state}")
    lines.append("")
    lines.append("inventory (check: the Ultralytics behaviour each patch assumes):")
    for patch, problem in patches.check_all():
        lines.append(f"  [{'ok' if problem is None else 'FAIL'}] {patch.name}: {patch.target}")
        lines.append(f"        why: {patch.why}")
        lines.append(f"        assumes: {patch.assumes}")
        if patch.bound:
            lines.append(f"        bound as: {', '.join(patch.bound)}")
        if patch.waiting:
            lines.append(f"        installed when {patches.DATA_UTILS} has been imported (not yet)")
        if problem:
            lines.append(f"        problem: {problem}")
    return "\n".join(lines)
