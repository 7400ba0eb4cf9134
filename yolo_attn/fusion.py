"""Inference-time folding of the operators' own norms and scales, reached from Ultralytics' `BaseModel.fuse()`.

Ultralytics' `fuse()` folds each `Conv`'s BatchNorm into its conv (and reparameterises its own blocks), but never
calls a custom module's fusion. An operator that has norms or scales of its own which fold exactly at inference
defines `fold_norms()` (the protocol: fold in place, be idempotent, leave unfused state-dict names to the build); the
inventory's `BaseModel.fuse` patch calls `fold_norms` on every module of the model that has it, after the stock fuse,
so the operators find their `Conv`s already folded and Ultralytics' own steps run exactly as without the plugin.

The helpers fold per-channel affine maps into 1x1 convolutions; they import only torch, so operator files use them.
"""

from collections.abc import Callable

import torch
from torch import nn


def bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (scale, shift), each (C,), with eval-mode `bn(x) == x * scale + shift` per channel."""
    scale = bn.running_var.add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale.detach(), shift.detach()


def scale_outputs(layer: nn.Module, scale: torch.Tensor) -> None:
    """Multiply output channel c of a conv or BatchNorm (its weight row and bias) by `scale[c]`, in place.

    Exact for any kernel size and grouping: the scale multiplies every output of channel c, padding included.
    """
    with torch.no_grad():
        layer.weight.mul_(scale.reshape(-1, *[1] * (layer.weight.ndim - 1)).to(layer.weight))
        if layer.bias is not None:
            layer.bias.mul_(scale.to(layer.bias))


def fold_input_affine(conv: nn.Conv2d, scale: torch.Tensor | None, shift: torch.Tensor | None) -> None:
    """Make `conv(x)` compute the old `conv(x * scale + shift)` (per input channel), in place.

    Exact only for an ungrouped 1x1 conv with a bias (a kxk conv would zero-pad the shifted input): W' = W diag(scale),
    b' = b + W shift.

    Raises:
        ValueError: If `conv` is not an ungrouped 1x1 conv with a bias.
    """
    if conv.kernel_size != (1, 1) or conv.groups != 1 or conv.bias is None:
        raise ValueError(f"an input affine folds exactly only into an ungrouped 1x1 conv with bias, not {conv}")
    with torch.no_grad():
        w = conv.weight[:, :, 0, 0]  # (C_out, C_in)
        if shift is not None:
            conv.bias.add_(w @ shift.to(w))  # before the scale: the shift meets the original weights
        if scale is not None:
            conv.weight.mul_(scale.to(w).view(1, -1, 1, 1))


def fold_norms(model: nn.Module) -> int:
    """Call `fold_norms()` on every module of `model` that defines it; return how many did.

    Args:
        model (nn.Module): A model in eval mode (the folds use BatchNorm running statistics).

    Returns:
        (int): The number of modules asked to fold.
    """
    folders = [m for m in model.modules() if callable(getattr(m, "fold_norms", None))]
    for m in folders:
        m.fold_norms()
    return len(folders)


def make_fuse(original: Callable) -> Callable:
    """Return `BaseModel.fuse` that runs `original` and then folds the plugin operators' norms.

    After the stock fuse, not before: Ultralytics' steps then see the model exactly as without the plugin (its
    `is_fused()` reads only its own modules), and a CoT layer finds its value conv already folded. A model with
    ModelOpt's fake quantisation (QAT) keeps the operators' norms: Ultralytics rescales a QAT conv's weight range
    only for the Conv+BN folds it makes itself, and a fold here would move the INT8 codes.
    """
    try:
        from ultralytics.utils.torch_utils import is_qat
    except ImportError:  # a release without `is_qat` has no quantisation-aware models to protect
        is_qat = None

    def fuse(self, *args, **kwargs):
        model = original(self, *args, **kwargs)
        if is_qat is None or not is_qat(self):
            fold_norms(self)
        return model

    fuse.__wrapped__ = original
    fuse.__doc__, fuse.__name__, fuse.__qualname__ = original.__doc__, original.__name__, original.__qualname__
    return fuse
