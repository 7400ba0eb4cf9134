"""Operator steps written so that tracing for export gives graphs every converter reads, with no extra warnings.

Outside tracing each function is the plain PyTorch call; while tracing (`torch.onnx.export`, OpenVINO's conversion,
pnnx for ncnn, coremltools, x2paddle) it computes the same values with ops that the converter reads and whose export
torch does not warn about.
"""

import torch
import torch.nn.functional as F
from torch import nn


def zero_pad(v: torch.Tensor, p: int) -> torch.Tensor:
    """`F.pad(v, (p, p, p, p))`; while exporting to ONNX, the same zeros concatenated instead.

    Torch's ONNX export of `F.pad` reverses the pads with a step -1 Slice, which its constant folding cannot fold and
    warns about ("Only steps=1 can be constant folded", three times per layer); stock YOLO models have no F.pad. The
    converters that read a TorchScript trace instead (pnnx, coremltools, x2paddle) all convert `F.pad`, and x2paddle
    has no `new_zeros`, so only the ONNX export takes the concatenation.
    """
    if not torch.onnx.is_in_onnx_export():
        return F.pad(v, (p, p, p, p))
    side = v.new_zeros((*v.shape[:-1], p))
    v = torch.cat([side, v, side], -1)
    edge = v.new_zeros((*v.shape[:-2], p, v.shape[-1]))
    return torch.cat([edge, v, edge], -2)


def group_norm(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """`norm(x)`; while tracing for export, the same ATen op without `F.group_norm`'s Python batch-size check.

    That check compares traced sizes in Python, which torch reports as a TracerWarning that stock models do not give.
    """
    if not torch.jit.is_tracing():
        return norm(x)
    return torch.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
