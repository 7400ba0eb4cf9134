"""What the benchmark times or measures: one call of a model in each runtime, and one training step.

Each function returns a callable that does the work once, with its input made beforehand (a fixed random batch), so
that timing or memory measurement wraps the call alone. The same runners serve the latency rounds of the models mode,
the peak-memory children (`memory.py`) and the operators mode.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any


def random_images(batch: int, imgsz: int) -> Any:
    """Return a fixed (seed 0) float32 numpy batch of shape (batch, 3, imgsz, imgsz) in [0, 1)."""
    import numpy as np

    return np.random.default_rng(0).random((batch, 3, imgsz, imgsz), dtype=np.float32)


def infer_fn(module: Any, x: Any) -> Callable[[], Any]:
    """Return a call of `module(x)` under `torch.inference_mode` (the module is expected in eval mode)."""
    import torch

    def run() -> None:
        with torch.inference_mode():
            module(x)

    return run


def backward_fn(module: Any, x: Any, grad: Any) -> Callable[[], Any]:
    """Return a forward and backward of the fixed output gradient `grad` into the parameters and the input.

    Parameter and input gradients are dropped before each call, so every call does the same work.
    """
    x = x.clone().requires_grad_(True)
    params = list(module.parameters())

    def step() -> None:
        for p in params:
            p.grad = None
        x.grad = None
        module(x).backward(grad)

    return step


def pytorch_fn(model: Any, imgsz: int, batch: int = 1) -> Callable[[], Any]:
    """Return one PyTorch inference of `model` (fused, eval) on a fixed random batch."""
    import torch

    return infer_fn(model, torch.from_numpy(random_images(batch, imgsz)))


def compiled_fn(model: Any, imgsz: int) -> Callable[[], Any]:
    """Return `pytorch_fn` of `torch.compile(model)` (Inductor, the default mode), compiled by one call already."""
    import torch

    run = pytorch_fn(torch.compile(model), imgsz)
    run()  # compile outside the timed rounds
    return run


def onnx_session(path: str | Path, threads: int, **options: Any) -> Any:
    """Return an ONNX Runtime session (CPU provider, `threads` intra-op threads, quiet) of the file at `path`.

    `options` sets further `SessionOptions` attributes (e.g. `enable_profiling=True`).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
    for name, value in options.items():
        setattr(opts, name, value)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_fn(path: str | Path, imgsz: int, threads: int, batch: int = 1) -> Callable[[], Any]:
    """Return one ONNX Runtime inference (`onnx_session`) of the file at `path`."""
    session = onnx_session(path, threads)
    name, x = session.get_inputs()[0].name, random_images(batch, imgsz)
    return lambda: session.run(None, {name: x})


OPENVINO_PRECISION = "f32"
"""OpenVINO's CPU inference precision in the benchmark. The plugin's default is bf16 on CPUs with bf16 units (it
halves the memory traffic of elementwise passes, but speeds up convolutions far more), so without this hint the
same command would compare different arithmetic on different machines."""


def openvino_model(path: str | Path, threads: int, **config: Any) -> Any:
    """Return the OpenVINO model at `path` compiled for the CPU plugin: `threads` threads, `OPENVINO_PRECISION`.

    `config` adds CPU plugin properties (e.g. `PERF_COUNT=True`).
    """
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": OPENVINO_PRECISION, **config}
    return ov.Core().compile_model(str(path), "CPU", config)


def openvino_fn(path: str | Path, imgsz: int, threads: int, batch: int = 1) -> Callable[[], Any]:
    """Return one OpenVINO inference (`openvino_model`) of the model at `path`."""
    compiled = openvino_model(path, threads)
    x = random_images(batch, imgsz)
    return lambda: compiled(x)


def has_openvino() -> bool:
    """Return whether OpenVINO is installed (it comes with the `export` extra)."""
    return importlib.util.find_spec("openvino") is not None


def train_step_fn(model: Any, batch: int, imgsz: int) -> Callable[[], Any]:
    """Return one training step of a detection model on a fixed random batch with 8 boxes per image.

    Args:
        model (DetectionModel): The built model (`YOLO(yaml).model`), 80 classes as built; it is put in train mode.
        batch (int): Images per step.
        imgsz (int): Square image size.

    Returns:
        (Callable): Forward, loss, backward and an SGD step (Ultralytics' momentum and Nesterov setting).
    """
    import torch
    from ultralytics.cfg import get_cfg

    model.args = get_cfg()  # default loss gains (box, cls, dfl), as the trainer sets them
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    nc = model.model[-1].nc
    g = torch.Generator().manual_seed(0)
    n = 8 * batch
    xy = torch.rand(n, 2, generator=g) * 0.6 + 0.2
    wh = torch.rand(n, 2, generator=g) * 0.25 + 0.05
    data = {
        "img": torch.rand(batch, 3, imgsz, imgsz, generator=g),
        "batch_idx": torch.arange(batch).repeat_interleave(8).float(),
        "cls": torch.randint(0, nc, (n, 1), generator=g).float(),
        "bboxes": torch.cat((xy, wh), 1),
    }
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.937, nesterov=True)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss, _ = model.loss(data)
        loss.sum().backward()
        opt.step()

    return step
