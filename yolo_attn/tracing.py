"""Operator steps written so that tracing for export gives graphs every converter reads, with no extra warnings.

Outside tracing each function is the plain PyTorch call; while tracing (`torch.onnx.export`, OpenVINO's conversion,
pnnx for ncnn, coremltools, x2paddle) it computes the same values with ops that the converter reads and whose export
torch does not warn about.
"""

import torch
import torch.nn.functional as F
from torch import nn


def zero_pad(v: torch.Tensor, p: int) -> torch.Tensor:
    """`F.pad(v, (p, p, p, p))`; while tracing for export, zero tensors concatenated to the sides instead.

    No converter-specific op: torch's ONNX export of `F.pad` reverses the pads with a step -1 Slice that its constant
    folding warns about ("Only steps=1 can be constant folded", three times per layer; stock YOLO models have no
    F.pad), Paddle Inference's oneDNN path crashes on x2paddle's `pad` (segmentation fault), and x2paddle converts
    neither `new_zeros` nor `zeros_like`. Every converter reads `torch.zeros` of the traced size (in ONNX a
    ConstantOfShape); zero strips made as an edge slice times 0 would do too, but made OpenVINO's CoT layer at P3
    1.4x slower.
    """
    if not torch.jit.is_tracing():
        return F.pad(v, (p, p, p, p))
    b, c, h, w = v.shape
    side = torch.zeros(b, c, h, p, dtype=v.dtype, device=v.device)
    v = torch.cat([side, v, side], -1)  # (B, C, H, W + 2p)
    edge = torch.zeros(b, c, p, w + 2 * p, dtype=v.dtype, device=v.device)
    return torch.cat([edge, v, edge], -2)  # (B, C, H + 2p, W + 2p)


def group_norm(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """`norm(x)`; while tracing for export, the same ATen op without `F.group_norm`'s Python batch-size check.

    That check compares traced sizes in Python, which torch reports as a TracerWarning that stock models do not give.
    """
    if not torch.jit.is_tracing():
        return norm(x)
    if norm.affine:
        return torch.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
    # Folded (`affine_free`): the identity affine as module tensors, since x2paddle maps a group norm's weight only
    # from the module's parameters and buffers; the exported norm op applies an affine anyway.
    return torch.group_norm(x, norm.num_groups, norm.export_weight, norm.export_bias, norm.eps)


def affine_free(norm: nn.GroupNorm) -> nn.GroupNorm:
    """Return `norm` without its affine (moved into the next convs by `fold_norms`), for inference.

    Eager PyTorch then skips the affine pass; while tracing (`group_norm`) the norm reads an identity affine from its
    buffers `export_weight`/`export_bias`, present only in the fused form.
    """
    out = nn.GroupNorm(norm.num_groups, norm.num_channels, norm.eps, affine=False)
    out.register_buffer("export_weight", torch.ones(norm.num_channels, dtype=norm.weight.dtype))
    out.register_buffer("export_bias", torch.zeros(norm.num_channels, dtype=norm.weight.dtype))
    return out.to(norm.weight.device)
