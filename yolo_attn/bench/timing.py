"""Timing on a shared CPU: interleaved rounds, quiet Ultralytics, and a description of the machine."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def quiet(enabled: bool = True) -> Iterator[None]:
    """Silence Ultralytics' INFO logging (and with it its progress bars)."""
    from ultralytics.utils import LOGGER

    level = LOGGER.level
    if enabled:
        LOGGER.setLevel(logging.WARNING)
    try:
        yield
    finally:
        LOGGER.setLevel(level)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `n` intra-op PyTorch threads and restore the caller's count afterwards."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3  # ms


def interleaved(
    fns: dict[str, Callable[[], Any]], rounds: int, runs: int, warmup: int, label: str = ""
) -> dict[str, list[list[float]]]:
    """Time every function in turn, round after round (reversing the order each round); return ms per round per run."""
    samples: dict[str, list[list[float]]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        t = time.perf_counter()
        for name in names if r % 2 == 0 else names[::-1]:
            for _ in range(warmup):
                fns[name]()
            samples[name].append([_timed(fns[name]) for _ in range(runs)])
        print(f"benchmark: {label} round {r + 1}/{rounds} ({time.perf_counter() - t:.0f}s)", flush=True)
    return samples


def free_threads(wanted: int) -> int:
    """Return how many of `wanted` PyTorch threads the CPU runs now without waiting: idle cores, at least 1.

    A multi-threaded PyTorch op waits for its slowest thread, so on a busy CPU threads beyond the idle cores cost far
    more than they bring (yolov8n pretraining at 128 px on 2 cores at load 5: an epoch took about 1 min with one thread,
    over 2 min and unfinished with two).
    Idle cores: the core count minus the 1-minute load average, rounded.
    """
    load = load_average()
    if load is None:
        return wanted
    return max(1, min(wanted, round((os.cpu_count() or 1) - load[0])))


def load_average() -> list[float] | None:
    """Return the 1, 5 and 15 minute load averages, or None where the OS has none."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, OS and package versions of this machine, and the load average now (`loadavg_start`).

    `text.machine_line` words it for the reports; a mode adds `loadavg_end` (`load_average()`) when it is done.
    """
    import torch
    import ultralytics

    import yolo_attn

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f"{kb / 2**20:.0f} GiB"
    versions = {"python": platform.python_version(), "torch": torch.__version__, "ultralytics": ultralytics.__version__}
    with contextlib.suppress(ImportError):
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    versions["yolo_attn"] = yolo_attn.__version__
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "os": platform.platform(),
        "versions": versions,
        "loadavg_start": load_average(),
    }
