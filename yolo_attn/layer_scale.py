"""LayerScale (Touvron et al., "Going deeper with Image Transformers", 2021): a learnt per-channel gain γ on a
residual branch, Y = X + γ · F(X). Initialised at 0 it makes a layer inserted into a trained network start as the
identity; γ receives gradients, so training moves the layer away from it."""

from typing import Optional

import torch
from torch import nn


def layer_scale_parameter(channels: int, init: Optional[float], owner: str) -> Optional[nn.Parameter]:
    """Return γ of shape (C, 1, 1) filled with `init`, or None when `init` is None (the layer's paper form).

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
    return nn.Parameter(torch.full((channels, 1, 1), float(init)))
