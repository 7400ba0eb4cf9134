"""Coordinate Attention (Hou et al., "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021)."""

import torch
from torch import nn
from ultralytics.nn.modules import Conv

from yolo_attn.layer_scale import LayerScaled, layer_scale_parameter


class CoordAtt(LayerScaled):
    """Coordinate attention: channel attention factorised into one map along H and one along W.

    z_h = mean_W(X), z_w = mean_H(X); f = h_swish(BN(Conv1x1(cat(z_h, z_wᵀ)))) with C → max(8, C / reduction);
    a_h = σ(Conv1x1(f_h)), a_w = σ(Conv1x1(f_w)); Y = X · a_h · a_w                       (paper form, the default)
    Y = X + γ · (X · a_h · a_w − X),  γ per channel, initialised to `layer_scale`        (identity-start form)

    With `layer_scale=0.0` the layer starts as the identity, so it can be inserted into a trained network without
    changing its predictions; γ is trained and moves the layer towards the paper form (γ = 1 is exactly it).

    Args:
        c1 (int): Input channels.
        c2 (int): Output channels; must equal `c1` (the layer re-weights its input).
        reduction (int): Channel reduction of the shared bottleneck (the paper's r, 32).
        layer_scale (float | None): Initial γ of the identity-start form; None (default) = the paper form.

    Raises:
        ValueError: If `c2 != c1`, `reduction < 1` or `layer_scale` is not a number.
    """

    def __init__(self, c1: int, c2: int, reduction: int = 32, layer_scale: float | None = None):
        super().__init__()
        if c2 != c1:
            raise ValueError(f"CoordAtt keeps the channel count: expected c2 == c1, got c1={c1}, c2={c2}")
        if reduction < 1:
            raise ValueError(f"CoordAtt reduction must be a positive integer, got {reduction}")
        self.gamma = layer_scale_parameter(c1, layer_scale, "CoordAtt")
        mip = max(8, c1 // reduction)
        # The paper's conv1 has a bias before BN; BN's shift absorbs it, so Ultralytics' bias-free Conv is equivalent.
        self.squeeze = Conv(c1, mip, 1, act=nn.Hardswish())
        self.attn_h = nn.Conv2d(mip, c1, 1)
        self.attn_w = nn.Conv2d(mip, c1, 1)
        # Nothing of its own folds at inference (so no `fold_norms`): `squeeze`'s BN is a Conv's, folded by
        # Ultralytics' fuse, and γ acts after the sigmoid gates, so no conv can absorb it.

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Re-weight `x` (B, C, H, W) by its height and width attention maps."""
        h, w = x.shape[2], x.shape[3]
        # Means instead of AdaptiveAvgPool2d((None, 1)): same values, and ONNX export keeps H and W dynamic.
        z_h = x.mean(dim=3, keepdim=True)  # (B, C, H, 1)
        z_w = x.mean(dim=2, keepdim=True).transpose(2, 3)  # (B, C, W, 1)
        f = self.squeeze(torch.cat((z_h, z_w), dim=2))  # (B, mip, H + W, 1)
        f_h, f_w = torch.split(f, [h, w], dim=2)
        a_h = self.attn_h(f_h).sigmoid()  # (B, C, H, 1)
        a_w = self.attn_w(f_w.transpose(2, 3)).sigmoid()  # (B, C, 1, W)
        if self.gamma is None:
            return x * a_h * a_w
        return x + self.gamma.view(-1, 1, 1) * (x * a_h * a_w - x)
