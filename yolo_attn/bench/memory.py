"""Peak memory of one inference or training step, measured in a fresh process for every runtime alike.

A measurement runs in a spawned child process: it loads the model (PyTorch from its YAML, ONNX Runtime or OpenVINO
from an exported file), reads the process's resident memory, runs one call, and reports the resident high-water
mark (`VmHWM` in `/proc/self/status`) minus that level. The difference is the working memory the call needed on top
of the loaded model (activations, workspace, for a train step also gradients and optimiser state), whatever
allocator the runtime uses. A fresh process per measurement keeps allocator caches of earlier calls out of it. Linux
only (elsewhere the columns stay empty).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from pathlib import Path

from yolo_attn.bench.runners import onnx_fn, openvino_fn, pytorch_fn, train_step_fn
from yolo_attn.bench.zoo import Entry, build


def _status_kib(field: str) -> int:
    """A `kB` field of /proc/self/status (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def _child(kind: str, source: str, imgsz: int, threads: int, batch: int) -> int:
    """Load `source` for runtime `kind`, then return the bytes of resident memory one call adds at its peak."""
    if kind == "onnx":
        fn = onnx_fn(source, imgsz, threads, batch)
    elif kind == "openvino":
        fn = openvino_fn(source, imgsz, threads, batch)
    else:
        import torch

        import yolo_attn  # noqa: F401  (a spawned child must not depend on the start-up hook)

        torch.set_num_threads(threads)
        model = build(Entry(Path(source).stem, source, "", False)).model
        if kind == "train_step":
            fn = train_step_fn(model, batch, imgsz)
        else:
            fn = pytorch_fn(model.fuse(verbose=False).eval(), imgsz, batch)
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident size (Linux >= 4.0)
    fn()
    return (_status_kib("VmHWM") - before) * 1024


def peak_memory(kind: str, source: str, imgsz: int, threads: int = 1, batch: int = 1) -> int:
    """Bytes of resident memory one call adds at its peak, measured in a fresh spawned process.

    Args:
        kind (str): "pytorch" (fused eval model), "train_step" (forward, loss, backward, SGD step), "onnx" (ONNX
            Runtime) or "openvino".
        source (str): Model YAML for "pytorch"/"train_step", exported model file for "onnx"/"openvino".
        imgsz (int): Square input size.
        threads (int): Runtime threads.
        batch (int): Batch size.

    Returns:
        (int): Peak resident bytes of the call over the resident size before it.
    """
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(_child, kind, source, imgsz, threads, batch).result()
