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
from typing import Any


def _status_kib(field: str) -> int:
    """A `kB` field of /proc/self/status (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def _child(kind: str, source: str, imgsz: int, threads: int, batch: int) -> int:
    """Load `source` for runtime `kind`, then return the bytes of resident memory one call adds at its peak."""
    import numpy as np

    x = np.random.default_rng(0).random((batch, 3, imgsz, imgsz), dtype=np.float32)
    if kind == "onnx":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
        session = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def fn() -> Any:
            return session.run(None, {name: x})

    elif kind == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(source, "CPU", {"INFERENCE_NUM_THREADS": threads})

        def fn() -> Any:
            return compiled(x)

    else:
        import torch

        import yolo_attn  # noqa: F401  (a spawned child must not depend on the start-up hook)
        from yolo_attn.bench.models import _train_step_fn
        from yolo_attn.bench.zoo import Entry, build

        torch.set_num_threads(threads)
        entry = Entry(Path(source).stem, source, "", False)
        if kind == "train_step":
            fn = _train_step_fn(entry, batch, imgsz)
        else:
            model = build(entry).model.fuse(verbose=False).eval()
            t = torch.from_numpy(x)

            def fn() -> Any:
                with torch.inference_mode():
                    model(t)

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
