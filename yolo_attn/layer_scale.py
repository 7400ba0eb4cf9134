"""LayerScale (Touvron et al., "Going deeper with Image Transformers", 2021): a learnt per-channel gain γ on a
residual branch, Y = X + γ · F(X). Initialised at 0 it makes a layer inserted into a trained network start as the
identity; γ receives gradients, so training moves the layer away from it."""

import torch
from torch import nn


def layer_scale_parameter(channels: int, init: float | None, owner: str) -> nn.Parameter | None:
    """Return γ of shape (C,) filled with `init`, or None when `init` is None (the layer's paper form).

    γ is 1-D, applied as `gamma.view(-1, 1, 1)`: optimisers that treat ndim >= 2 parameters as matrices (Ultralytics'
    MuSGD before 8.4.108 sends every one to Muon, which asserts 2-D) leave it to SGD. Checkpoints of earlier versions
    hold (C, 1, 1); the view applies to both, and `flatten_gammas` makes them (C,) when they are trained further.

    Args:
        channels (int): Channels C of the residual branch.
        init (float | None): Initial value of every γ; None = no LayerScale.
        owner (str): Name of the layer, for the error message.

    Raises:
        ValueError: If `init` is neither None nor a real number (a YAML `true` must not pass as 1.0).
    """
    if init is None:
        return None
    if isinstance(init, bool) or not isinstance(init, (int, float)):
        raise ValueError(f"{owner} layer_scale must be a number (initial γ) or None, got {init!r}")
    return nn.Parameter(torch.full((channels,), float(init)))


def flatten_gammas(model: nn.Module) -> None:
    """Make every (C, 1, 1) LayerScale γ of the plugin's modules in `model` (C,) in place (same values, same name)."""
    for m in model.modules():
        gamma = getattr(m, "gamma", None)
        if type(m).__module__.startswith("yolo_attn.") and isinstance(gamma, nn.Parameter) and gamma.ndim == 3:
            m.gamma = nn.Parameter(gamma.detach().reshape(-1), requires_grad=gamma.requires_grad)


class LayerScaled(nn.Module):
    """Base of the operators with an optional LayerScale γ: it loads state dicts that hold γ as (C, 1, 1).

    Releases before the 1-D γ stored it as (C, 1, 1); the values are the same, so `load_state_dict` takes them flat.
    """

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "gamma"
        if key in state_dict and state_dict[key] is not None and state_dict[key].ndim == 3:
            state_dict[key] = state_dict[key].reshape(-1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
