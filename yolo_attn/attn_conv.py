"""AttnConv: CloFormer's attention-style convolution (Fan et al., "Rethinking Local Perception in Lightweight Vision
Transformer", 2023; official `EfficientAttention`) as a channel-keeping YOLO layer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from yolo_attn.fusion import fold_input_affine, scale_outputs
from yolo_attn.layer_scale import LayerScaled, layer_scale_parameter
from yolo_attn.tracing import affine_free, group_norm

__all__ = ["AttnConv"]


def _auto_head_dim(c: int) -> int:
    """Head size used when none is given: the CloFormer configs' choice, extended down to YOLO's narrowest layers.

    CloFormer uses d = 16 in every stage of XXS/XS/S except the 32-channel first stage of XXS (4 heads of 8), i.e.
    d = 16 exactly when C >= 48 and 16 | C. Narrower layers (YOLO-n widths 16, 24, 32) get d = 8 so they keep at
    least two heads, one local and one global; d = 4 covers C = 8 and other multiples of 4.
    """
    if c % 16 == 0 and c >= 48:
        return 16
    if c % 8 == 0 and c >= 16:
        return 8
    if c % 4 == 0 and c >= 8:
        return 4
    raise ValueError(f"AttnConv cannot choose a head dimension for c1={c} channels; pass head_dim explicitly")


class _LocalGroup(nn.Module):
    """Local (high-frequency) branch for g heads with one kernel size: the AttnConv proper.

    [Q, K, V] = DWConv_kxk(Conv1x1(X)); W = tanh(d^-0.5 · Conv1x1(SiLU(Conv1x1(Q ⊙ K)))); out = W ⊙ V.
    """

    def __init__(self, c: int, heads: int, head_dim: int, kernel_size: int):
        super().__init__()
        width = heads * head_dim
        self.heads = heads
        self.kernel_size = kernel_size
        self.scale = head_dim**-0.5
        self.qkv = nn.Conv2d(c, 3 * width, 1)
        # One depthwise conv over Q, K and V together: the shared (position-independent) aggregation weights.
        self.dw = nn.Conv2d(3 * width, 3 * width, kernel_size, padding=kernel_size // 2, groups=3 * width)
        # Context-aware weights come from a gated MLP on Q ⊙ K; its 1x1 convs mix all the heads of the group.
        self.gate = nn.Sequential(nn.Conv2d(width, width, 1), nn.SiLU(), nn.Conv2d(width, width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = _depthwise(self.dw, self.qkv(x)).chunk(3, dim=1)  # 3 x (B, g·d, H, W), channel layout (3, g, d)
        logits = self.gate(q * k)
        w = torch.tanh(logits if self.scale == 1 else logits * self.scale)  # (B, g·d, H, W), weights in [-1, 1]
        return w * v

    def fold_scale(self) -> None:
        """Fold d^-0.5 into the gate's last conv (exact: tanh follows it); `scale` becomes 1 and is skipped."""
        if self.scale != 1:
            scale_outputs(self.gate[-1], torch.full((self.gate[-1].out_channels,), self.scale))
            self.scale = 1.0


def _depthwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """`conv(x)` for a depthwise, stride-1 `nn.Conv2d`; on CPU, when its weight needs a gradient, a faster backward.

    On one CPU thread oneDNN's depthwise weight gradient is 5-25x slower than the same sums computed as a grouped
    convolution of the input with the output gradient (96 channels at 80x80: 11.3 vs 2.2 ms; at 40x40: 3.7 vs 0.2
    ms). Other devices, autocast (which would change the conv's dtype inside the function) and tracing for export
    take the plain conv.
    """
    fast = x.device.type == "cpu" and not torch.is_autocast_enabled("cpu") and not torch.jit.is_tracing()
    if fast and torch.is_grad_enabled() and conv.weight.requires_grad:
        return _DepthwiseConv.apply(x, conv.weight, conv.bias, conv.padding)
    return conv(x)


class _DepthwiseConv(torch.autograd.Function):
    """y = DWConv(x; w, b), stride 1; dw[c, 0, i, j] = sum over b, p of x_padded[b, c, p + (i, j)] · dy[b, c, p]."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: tuple) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return F.conv2d(x, weight, bias, padding=padding, groups=x.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        b, c, h, w = x.shape
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [1, 1], list(ctx.padding), [1, 1], False, [0, 0], c, [True, False, False]
            )[0]
        if ctx.needs_input_grad[1]:
            # C groups, each with the B images of one channel as its inputs and that channel's dy as its kernel.
            xs, gs = x.transpose(0, 1).reshape(1, c * b, h, w), grad.transpose(0, 1).reshape(c, b, *grad.shape[2:])
            dw = F.conv2d(xs, gs, padding=ctx.padding, groups=c).transpose(0, 1)  # (C, 1, k, k)
        if ctx.needs_input_grad[2]:
            db = grad.sum((0, 2, 3))
        return dx, dw, db, None


class _GlobalGroup(nn.Module):
    """Global (low-frequency) branch for g heads: attention from every position to an average-pooled grid.

    Q = Conv1x1(X); [K, V] = Conv1x1(AvgPool_s(X)); per head softmax(Q Kᵀ · d^-0.5) V.
    With `max_key_grid` = m > 0 the pooling stride per axis grows to max(s, ceil(H / m)) (and W alike), so at most
    m x m keys are attended to whatever the input size; inputs up to s·m pixels per side pool exactly as without it.
    """

    def __init__(self, c: int, heads: int, head_dim: int, pool_size: int, max_key_grid: int = 0):
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim
        self.pool_size = pool_size
        self.max_key_grid = max_key_grid
        self.scale = head_dim**-0.5
        self.q = nn.Conv2d(c, heads * head_dim, 1)
        self.kv = nn.Conv2d(c, 2 * heads * head_dim, 1)

    def key_stride(self, h: int, w: int) -> int | tuple[int, int]:
        """Pooling window and stride of the keys for an (h, w) input: `pool_size`, widened by `max_key_grid`."""
        s = self.pool_size
        m = getattr(self, "max_key_grid", 0)  # modules pickled before the option existed have no attribute
        if m:  # the stride follows the input size; an export records the one of its traced size
            s = (max(s, -(-h // m)), max(s, -(-w // m)))
        return s

    def queries_keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple]:
        """Project `x` (B, C, H, W) to queries and pooled keys and values, as `forward` attends with them.

        Returns:
            (tuple): q (B, g, H·W, d), k and v (B, g, h'·w', d), and the key grid (h', w').
        """
        b, _, h, w = x.shape
        g, d = self.heads, self.head_dim
        # Positions first, then heads: (B, g·d, H, W) -> (B, H·W, g, d) -> (B, g, H·W, d). The direct route, a
        # transpose of (B, g, d, H·W), is the same tensor, but Paddle Inference's oneDNN passes fuse that
        # reshape-transpose-matmul chain wrongly (max error 0.05-0.15 on one layer); this order they leave alone.
        q = self.q(x).flatten(2).transpose(1, 2).reshape(b, -1, g, d).transpose(1, 2)  # (B, g, H·W, d)
        # The official AvgPool2d(s, s) needs H and W divisible by s. ceil_mode keeps the partial windows at the
        # bottom/right edge; with no padding each of them is averaged over its valid pixels only, so 1x1 or 13x9 maps
        # work and divisible sizes give exactly the official result. Exports as a single ONNX AveragePool.
        s = self.key_stride(h, w)
        pooled = _avg_pool_valid(x, s) if s != 1 else x  # (B, C, ceil(H / s), ceil(W / s))
        # Channel layout of the K/V conv is (2, g, d), as in the official code; sliced, not unbound from a 5-D view,
        # so every converter reads it (x2paddle has no `unbind`, ncnn no 5-D tensors).
        kv = self.kv(pooled)  # (B, 2·g·d, h', w')
        k = kv[:, : g * d].reshape(b, g, d, -1).transpose(-1, -2)  # (B, g, h'·w', d)
        v = kv[:, g * d :].reshape(b, g, d, -1).transpose(-1, -2)  # (B, g, h'·w', d)
        return q, k, v, tuple(pooled.shape[2:])

    def attention_weights(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """The softmax weights `forward` applies to the values for input `x` (B, C, H, W), for inspection (maps).

        Returns:
            (tuple): weights (B, g, H·W, h'·w'), each query's row summing to 1, and the key grid (h', w').
        """
        q, k, _, grid = self.queries_keys_values(x)
        return _attention_weights(q, k, self.scale), grid

    def fold_scale(self) -> None:
        """Fold d^-0.5 into the query conv (exact: q enters the logits linearly); `scale` becomes 1 and is skipped."""
        if self.scale != 1:
            scale_outputs(self.q, torch.full((self.q.out_channels,), self.scale))
            self.scale = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v, _ = self.queries_keys_values(x)
        out = _attention(q, k, v, self.scale)  # (B, g, H·W, d)
        return out.transpose(-1, -2).reshape(b, self.heads * self.head_dim, h, w)


def _avg_pool_valid(x: torch.Tensor, s: int | tuple[int, int]) -> torch.Tensor:
    """Average pooling with window and stride `s`, each partial edge window averaged over its valid pixels only.

    Eager and traced (TorchScript, ONNX): one `avg_pool2d` with `ceil_mode` and without the padding in the count.
    Under `torch.export` (LiteRT, ExecuTorch, Core AI), where the sizes are static, the same values as a pool of the
    input zero-padded to whole windows, divided by the fraction of each window that lies inside: LiteRT's INT8
    quantiser has no parameters for the generic reduce-window op the ceil-mode pool lowers to ("Failed to get
    quantization parameters"), and plain average pooling it quantises.
    """
    if not torch.compiler.is_exporting():
        return F.avg_pool2d(x, s, s, ceil_mode=True, count_include_pad=False)
    sh, sw = (s, s) if isinstance(s, int) else s
    h, w = x.shape[-2:]
    pad = (0, -w % sw, 0, -h % sh)  # right and bottom, to whole windows
    if not any(pad):
        return F.avg_pool2d(x, (sh, sw), (sh, sw))
    inside = F.avg_pool2d(F.pad(torch.ones_like(x[:1, :1]), pad), (sh, sw), (sh, sw))  # (1, 1, h', w') in (0, 1]
    return F.avg_pool2d(F.pad(x, pad), (sh, sw), (sh, sw)) / inside


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Return softmax(q kᵀ · scale) v over the last two axes: (..., N, d), (..., M, d), (..., M, d) -> (..., N, d).

    In eager PyTorch and under `torch.compile`, large score matrices go to `F.scaled_dot_product_attention`, whose
    fused CPU kernel never materialises the N x M matrix: at P3 of a 640 px input (N = 6400, M = 400, d = 16) it
    runs 4.5x faster for inference and 3.6x for a train step than the written-out form; for small ones (P5:
    N = 400, M = 25) its overhead makes it 2x slower, hence the size switch. While tracing for export (TorchScript,
    ONNX, every converter) the written-out MatMul -> Softmax -> MatMul is recorded instead: PyTorch exports the fused
    op to ONNX only from opset 14, this form at every opset. Both compute the same function (they agree to float
    rounding). The softmax runs over the last axis: ONNX Runtime's Softmax over another axis transposes internally
    (measured at P3: 2.3x the time of the whole attention).
    """
    # Tracing is checked first: comparing traced sizes would record a constant and warn (TracerWarning).
    if not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()) and q.shape[-2] * k.shape[-2] >= 2**15:
        # The fused kernel needs unit stride along d; otherwise PyTorch falls back to a slower unfused path.
        return F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous(), scale=scale)
    return _attention_weights(q, k, scale) @ v


def _attention_weights(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """Return softmax(q kᵀ · scale) over the keys (last axis): (..., N, d), (..., M, d) -> (..., N, M)."""
    return torch.softmax((q if scale == 1 else q * scale) @ k.transpose(-1, -2), dim=-1)


class _ConvFFN(LayerScaled):
    """CloFormer's ConvFFN as a pre-norm residual sublayer: Y = X + [γ ·] Conv1x1(DWConv_5x5(GELU(Conv1x1(GN(X)))))."""

    def __init__(self, c: int, hidden: int, layer_scale: float | None = None, kernel_size: int = 5):
        super().__init__()
        self.gamma = layer_scale_parameter(c, layer_scale, "AttnConv")
        self.norm = nn.GroupNorm(1, c)
        self.fc1 = nn.Conv2d(c, hidden, 1)
        self.act = nn.GELU()
        self.dw = nn.Conv2d(hidden, hidden, kernel_size, padding=kernel_size // 2, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc2(self.dw(self.act(self.fc1(group_norm(self.norm, x)))))
        return x + (y if self.gamma is None else self.gamma.view(-1, 1, 1) * y)

    def fold_affines(self) -> None:
        """Fold the norm's affine into fc1 and γ into fc2 (both 1x1 convs with bias, so exact); see AttnConv."""
        _fold_norm_affine(self, [self.fc1])
        if self.gamma is not None:
            scale_outputs(self.fc2, self.gamma.detach().reshape(-1))
            self.gamma = None


class AttnConv(LayerScaled):
    """CloFormer's AttnConv mixer (official `EfficientAttention`) as a channel-keeping YOLO layer.

    The C channels form `C / head_dim` heads of size d = `head_dim`. A fraction `global_ratio` of the heads forms the
    global group; the other heads are split evenly across `kernel_sizes`, one local group per kernel size:

    - local group (kernel k, g heads): [Q, K, V] = DWConv_kxk(Conv1x1(X)) with one depthwise conv over all 3·g·d
      channels; W = tanh(d^-0.5 · Conv1x1(SiLU(Conv1x1(Q ⊙ K)))); out = W ⊙ V.
    - global group (g heads): Q = Conv1x1(X); [K, V] = Conv1x1(AvgPool_s(X)); per head softmax(Q Kᵀ · d^-0.5) V
      over all pooled positions. Unlike the official code, H and W need not be multiples of s: partial edge windows
      are averaged over their valid pixels.
    - mixer output: Conv1x1(concat(local groups..., global group)).

    As in CloFormer's block the mixer sees group-normalised input: Y = X + Mixer(GroupNorm(1, C)(X)) with
    `shortcut=True`, Y = Mixer(GroupNorm(1, C)(X)) without; with `layer_scale` set,
    Y = X + γ · Mixer(GroupNorm(1, C)(X)) (LayerScale, γ per channel initialised to `layer_scale`; the ConvFFN branch
    gets a γ of its own). The norm stays either way: it makes the Q ⊙ K gate and the
    attention logits independent of the scale of YOLO's un-normalised activations, and keeps the parameter set the
    same for both settings. With `ffn_ratio > 0` CloFormer's ConvFFN follows as its own pre-norm residual sublayer
    (hidden width `ffn_ratio`·C, depthwise 5x5, GELU), regardless of `shortcut`.

    Heads are assigned as: g_global = floor(heads · global_ratio), moved into [1, heads - 1] when
    0 < global_ratio < 1 so that both branches exist; local heads are dealt to the kernel sizes in order, the first
    ones taking the remainder; a kernel size left with no head is dropped (the official code skips empty groups too).

    Defaults (d = 16, or 8 for narrow layers; one local kernel 5; half the heads global; pool 4) follow CloFormer's
    second stage, the one at YOLO's P3 stride 8 (CloFormer-XXS/XS/S: d = 16, group split [2, 2]/[3, 3]/[4, 4],
    kernel 5, pool 4, i.e. a 7x7 key grid at 224 px; here 20x20 at P3 and 5x5 at P5 for 640 px input). They work for
    every channel count YOLO scales produce (all multiples of 8 from 16 up).

    Args:
        c1 (int): Input channels.
        c2 (int): Output channels; must equal `c1`.
        head_dim (int | None): Channels per head d. None or 0 picks 16 when 16 | C and C >= 48 (CloFormer's choice),
            else 8 (else 4), so every YOLO width gets at least two heads.
        kernel_sizes (int | Sequence[int]): Odd depthwise kernel size(s) of the local group(s).
        global_ratio (float): Fraction of heads in the global group, in [0, 1]; 0 = all local, 1 = all global.
        pool_size (int): Average-pooling window and stride s of the global group's keys and values (1 = no pooling).
        shortcut (bool): Add the input to the output (residual form of CloFormer's block).
        ffn_ratio (float): Hidden-width ratio of an appended ConvFFN sublayer; 0 (default) = no FFN, CloFormer uses 4.
        layer_scale (float | None): Initial per-channel γ on each residual branch (LayerScale); 0.0 makes the layer
            start as the exact identity, so it can be inserted into a trained network without changing its
            predictions. None (default) = no γ. Needs `shortcut=True`.
        max_key_grid (int): Bound on the global group's key grid for high-resolution inputs: 0 (default, the
            paper's) pools with the fixed stride `pool_size`, so the keys grow with the image (ceil(H/s)·ceil(W/s))
            and the global branch's cost with its square; m > 0 widens the pooling stride per axis where needed
            (max(s, ceil(H/m))), so at most m x m keys and a cost linear in pixels. Feature maps up to
            `pool_size`·m pixels per side pool exactly as with 0 (e.g. m = 20: P3 of a 640 px input). The stride is
            then computed from the input size, so an ONNX export holds the stride of its export size (Ultralytics
            exports a static shape by default).

    Raises:
        ValueError: If `c2 != c1` or an option is out of range or does not fit the channel count.
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        head_dim: int | None = None,
        kernel_sizes: int | Sequence[int] = 5,
        global_ratio: float = 0.5,
        pool_size: int = 4,
        shortcut: bool = True,
        ffn_ratio: float = 0.0,
        layer_scale: float | None = None,
        max_key_grid: int = 0,
    ):
        super().__init__()
        if c2 != c1:
            raise ValueError(f"AttnConv keeps the channel count: expected c2 == c1, got c1={c1}, c2={c2}")
        if layer_scale is not None and not shortcut:
            raise ValueError("AttnConv layer_scale scales the residual branch: it needs shortcut=True")
        c = c1
        if head_dim is None or (_is_int(head_dim) and head_dim == 0):
            head_dim = _auto_head_dim(c)
        elif not _is_int(head_dim) or head_dim < 1 or c % head_dim:
            raise ValueError(f"AttnConv head_dim must be a positive divisor of c1={c}, got {head_dim!r}")
        ks = list(kernel_sizes) if isinstance(kernel_sizes, (list, tuple)) else [kernel_sizes]
        if not ks or not all(_is_int(k) and k >= 1 and k % 2 == 1 for k in ks):
            raise ValueError(f"AttnConv kernel_sizes must be odd positive integers, got {kernel_sizes!r}")
        if not _is_number(global_ratio) or not 0 <= global_ratio <= 1:
            raise ValueError(f"AttnConv global_ratio must be a number in [0, 1], got {global_ratio!r}")
        if not _is_int(pool_size) or pool_size < 1:
            raise ValueError(f"AttnConv pool_size must be a positive integer, got {pool_size!r}")
        if not _is_int(max_key_grid) or max_key_grid < 0:
            raise ValueError(f"AttnConv max_key_grid must be an integer >= 0 (0 = unbounded), got {max_key_grid!r}")
        if not _is_number(ffn_ratio) or ffn_ratio < 0:
            raise ValueError(f"AttnConv ffn_ratio must be a number >= 0, got {ffn_ratio!r}")
        if ffn_ratio > 0 and int(c * ffn_ratio) < 1:
            raise ValueError(f"AttnConv ffn_ratio={ffn_ratio} gives no hidden channels for c1={c}")

        heads = c // head_dim
        n_global = int(heads * global_ratio + 1e-9)  # the epsilon guards against 0.7 * 10 = 6.999...
        if 0 < global_ratio < 1:
            if heads < 2:
                raise ValueError(
                    f"AttnConv needs at least 2 heads for both a local and a global group (0 < global_ratio < 1), "
                    f"got c1={c} with head_dim={head_dim}: use a smaller head_dim or global_ratio 0 or 1"
                )
            n_global = min(max(n_global, 1), heads - 1)
        n_local = heads - n_global
        split = [n_local // len(ks) + (i < n_local % len(ks)) for i in range(len(ks))]

        self.c = c
        self.head_dim = head_dim
        self.heads = heads
        self.group_split = [*split, n_global]  # official layout: heads per kernel size, then global heads
        self.kernel_sizes = ks
        self.pool_size = pool_size
        self.shortcut = bool(shortcut)
        self.norm = nn.GroupNorm(1, c)
        self.local_groups = nn.ModuleList(_LocalGroup(c, g, head_dim, k) for g, k in zip(split, ks) if g > 0)
        self.global_group = _GlobalGroup(c, n_global, head_dim, pool_size, max_key_grid) if n_global > 0 else None
        self.proj = nn.Conv2d(c, c, 1)
        self.ffn = _ConvFFN(c, int(c * ffn_ratio), layer_scale) if ffn_ratio > 0 else None
        self.gamma = layer_scale_parameter(c, layer_scale, "AttnConv")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer to `x` of shape (B, C, H, W); any B and any H, W >= 1. Returns (B, C, H, W)."""
        t = group_norm(self.norm, x)
        groups = [group(t) for group in self.local_groups]  # each (B, g·d, H, W)
        if self.global_group is not None:
            groups.append(self.global_group(t))  # (B, g·d, H, W)
        y = self.proj(torch.cat(groups, dim=1))  # (B, C, H, W)
        if self.gamma is not None:
            y = self.gamma.view(-1, 1, 1) * y
        if self.shortcut:
            y = x + y
        if self.ffn is not None:
            y = self.ffn(y)
        return y

    def fold_norms(self) -> None:
        """Fold every norm affine, γ and d^-0.5 into a neighbouring conv, for inference (called by `model.fuse()`).

        - The GroupNorm's affine (γ_n x̂ + β_n) feeds only 1x1 convs with bias: each local group's `qkv` and the
          global group's `q` and `kv` (average pooling over valid pixels keeps a per-channel constant, so β_n passes
          through it unchanged); the norm keeps its normalisation, without affine. The same for the ConvFFN's norm
          into `fc1`. The normalisation itself cannot fold: its mean and variance are per image.
        - LayerScale γ multiplies `proj`'s output (and the FFN's `fc2`'s) linearly: folded into their rows.
        - d^-0.5 goes into the gate's last conv (local) and the query conv (global).
        Exact up to float rounding; idempotent. The depthwise convs have no norm after them: nothing else to fold.
        """
        consumers = [g.qkv for g in self.local_groups]
        if self.global_group is not None:
            consumers += [self.global_group.q, self.global_group.kv]
        _fold_norm_affine(self, consumers)
        for group in [*self.local_groups, *([self.global_group] if self.global_group is not None else [])]:
            group.fold_scale()
        if self.gamma is not None:
            scale_outputs(self.proj, self.gamma.detach().reshape(-1))
            self.gamma = None
        if self.ffn is not None:
            self.ffn.fold_affines()

    def extra_repr(self) -> str:
        m = getattr(self.global_group, "max_key_grid", 0)
        return (
            f"c={self.c}, heads={self.heads}, head_dim={self.head_dim}, group_split={self.group_split}, "
            f"kernel_sizes={self.kernel_sizes}, pool_size={self.pool_size}, shortcut={self.shortcut}"
            + (f", max_key_grid={m}" if m else "")
        )


def _fold_norm_affine(owner: nn.Module, consumers: list) -> None:
    """Move `owner.norm`'s affine into the 1x1 convs that read the norm's output; the norm keeps no affine."""
    norm = owner.norm
    if not norm.affine:
        return
    for conv in consumers:
        fold_input_affine(conv, norm.weight.detach(), norm.bias.detach())
    owner.norm = affine_free(norm)


def _is_int(v: object) -> bool:
    """True for integers, False for bools (a YAML `true` must not pass as 1)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    """True for ints and floats, False for bools."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)
