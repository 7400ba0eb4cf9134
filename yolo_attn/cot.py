"""Contextual Transformer (Li et al., "Contextual Transformer Networks for Visual Recognition", TPAMI 2022).

`CoTAttention` follows the official CoTNet `CotLayer`: a grouped k x k conv mines the static context of the keys,
a 1x1 "embed" on [query; static context] yields per-position local k x k attention maps, the maps aggregate the values
(dynamic context), and a split-attention (radix 2) fusion mixes the static and dynamic contexts per channel.

`CoTBottleneck`, `C3k_CoT`, `C2f_CoT` and `C3k2_CoT` carry CoTNet's own use of the block (the CoT block replaces the
3x3 conv of a bottleneck) into the Ultralytics C2f / C3k2 family.
"""

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.modules import C2f, C3k2, Conv
from ultralytics.nn.modules.block import C3k, PSABlock

from yolo_attn.fusion import bn_affine, scale_outputs
from yolo_attn.layer_scale import LayerScaled, layer_scale_parameter
from yolo_attn.tracing import group_norm, zero_pad

__all__ = (
    "CoTAttention",
    "CoTBottleneck",
    "C3k_CoT",
    "C2f_CoT",
    "C3k2_CoT",
    "PooledBatchNorm2d",
    "local_aggregate",
    "aggregate_for_export",
)

SHARE_PLANES = 8  # channels c, c + C/8, c + 2C/8, ... share one local attention map (official `share_planes`)
RADIX = 2  # split attention over {dynamic context, static context}


class PooledBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that also trains on a batch holding a single value per channel.

    The fusion branch of CoT normalises a globally pooled (B, C, 1, 1) tensor, so in training mode a batch of one image
    gives one value per channel and `nn.BatchNorm2d` raises ("Expected more than 1 value per channel when training").
    YOLO training does meet batch 1 (tiny data sets, the last batch of an epoch, `batch=1`). For that case only this
    layer normalises with its running statistics, exactly as in eval mode, and leaves them unchanged: a single sample
    carries no variance estimate. Weight and bias still receive gradients. The switch reads the tensor's shape, never
    its values, so tracing and export are unaffected (in eval mode it is never taken). Inside a YOLO model the plugin's
    parser wrapper gives it Ultralytics' BN eps/momentum, which `initialize_weights` sets only on exact BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise `x` (B, C, H, W); in training mode with B * H * W == 1, use the running statistics."""
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


def _shift(i: int, k: int) -> slice:
    """Slice that picks the window at offset `i` of a k-tap neighbourhood from a tensor zero-padded by k // 2 per side.

    The end is a negative constant (or None), not one derived from the input size, so ONNX export keeps H and W
    dynamic without any shape arithmetic.
    """
    return slice(i, i - (k - 1) or None)


def local_aggregate(
    v: torch.Tensor, attn: torch.Tensor, kernel_size: int, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Aggregate values over each position's k x k neighbourhood with per-position weights (CoT dynamic context).

    out[b, c, p] = sum over offsets d of attn[b, c mod G, d, p] * v[b, c, p + d], zero padded, where G = C / 8 is the
    number of attention maps. This is the official CoTNet `LocalConvolution` (a CUDA kernel there) written as k^2
    fused multiply-adds over shifted windows of a padded `v`, so memory stays O(C * H * W): an unfold of `v` would
    materialise a k^2 * C * H * W tensor. When gradients are needed, the same
    forward runs inside `_LocalAggregate`, whose hand-written backward accumulates into one buffer instead of
    autograd's k^2 zero-padded copies; this is also the seam where a fused kernel (CUDA/Triton) would plug in.
    Eager only: `CoTAttention` traces `aggregate_for_export`, the same sum in ops every converter reads.

    Args:
        v (torch.Tensor): Values, (B, C, H, W) with C divisible by G.
        attn (torch.Tensor): Local attention maps, (B, G, k * k, H, W), offsets in row-major order.
        kernel_size (int): Odd neighbourhood size k.
        bias (torch.Tensor | None): Per-channel (C,) term added to the sum (a folded BatchNorm's shift); without
            gradients it rides on the first product at no extra pass.

    Returns:
        (torch.Tensor): Aggregated values, (B, C, H, W).
    """
    if torch.is_grad_enabled() and (v.requires_grad or attn.requires_grad):
        out = _LocalAggregate.apply(v, attn, kernel_size)
        return out if bias is None else out + bias.view(-1, 1, 1)
    return _aggregate(v, attn, kernel_size, bias)


def _aggregate(v: torch.Tensor, attn: torch.Tensor, k: int, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Forward of `local_aggregate`: the centre product, then one in-place fused multiply-add per further offset.

    Each off-centre offset adds into the part of the output whose window lies inside the image, read from the
    matching part of `v`, so no zero-padded copy of `v` is made (measured on one thread: 0.69-0.94x the time of
    the padded form at YOLOv8n's P3-P5 shapes). A `bias` (C,) is added by the centre product's own pass. Eager only:
    export traces `aggregate_for_export` instead.
    """
    p, g = k // 2, attn.shape[1]
    h, w = v.shape[-2:]
    # Channel c = j * G + m uses map m: split C into (C / G, G) so the G maps broadcast over the leading axis.
    v5 = v.unflatten(1, (-1, g))  # (B, C/G, G, H, W)
    a = attn.unsqueeze(1)  # (B, 1, G, k*k, H, W)
    centre = p * k + p
    if bias is None:
        out = a[:, :, :, centre] * v5  # (B, C/G, G, H, W)
    else:  # channel c = j * G + m sits at [j, m], as in v5
        out = torch.addcmul(bias.view(-1, g, 1, 1), a[:, :, :, centre], v5)
    for d in range(k * k):
        if d != centre:
            dy, dx = d // k - p, d % k - p  # out[y, x] += a_d[y, x] * v[y + dy, x + dx] where y + dy, x + dx are inside
            oy, ox = _inside(dy, h), _inside(dx, w)
            out[..., oy, ox].addcmul_(a[:, :, :, d, oy, ox], v5[..., _inside(-dy, h), _inside(-dx, w)])
    return out.flatten(1, 2)  # (B, C, H, W)


def _inside(shift: int, n: int) -> slice:
    """Positions i in [0, n) with i + shift also in [0, n) (empty when |shift| >= n)."""
    return slice(max(0, -shift), max(0, n - max(0, shift)))


def aggregate_for_export(v: torch.Tensor, attn: torch.Tensor, k: int, share: int = SHARE_PLANES) -> torch.Tensor:
    """`local_aggregate` written with the ops every deployment converter reads (ONNX, pnnx/ncnn, CoreML, x2paddle).

    The same sum as `_aggregate`, over shifted windows of a zero-padded `v`, but with 4-D tensors only, slices of step
    1, and out-of-place Mul and Add (no `addcmul`, `unflatten`, `unbind` or in-place writes into traced tensors).
    Channel c = j * G + m uses map m, so viewing `v` as (B, C/G, G*H, W) puts j on the channel axis and (m, y) on the
    row axis, where each map, viewed as (B, 1, G*H, W), broadcasts over j. Slice bounds are constants (`_shift`) and
    the views read B, H and W off the tensors, so an ONNX export keeps batch, H and W dynamic.

    Args:
        v (torch.Tensor): Values, (B, C, H, W).
        attn (torch.Tensor): Local attention maps as the attention conv gives them, (B, G * k * k, H, W), channel
            m * k * k + d holding offset d (row-major) of map m.
        k (int): Odd neighbourhood size.
        share (int): Channels per map, C / G.

    Returns:
        (torch.Tensor): Aggregated values, (B, C, H, W).
    """
    b, _, h, w = v.shape
    vp = zero_pad(v, k // 2)  # (B, C, H+2p, W+2p)
    maps = attn.reshape(b, -1, k * k, h * w)  # (B, G, k*k, H*W)
    out = None
    for d in range(k * k):
        window = vp[:, :, _shift(d // k, k), _shift(d % k, k)].reshape(b, share, -1, w)  # (B, C/G, G*H, W)
        term = maps[:, :, d : d + 1].reshape(b, 1, -1, w) * window  # map d of every m, broadcast over j
        out = term if out is None else out + term
    return out.reshape(b, -1, h, w)  # (B, C, H, W)


class _LocalAggregate(torch.autograd.Function):
    """`_aggregate` with a backward that keeps memory O(C * H * W) and makes one pass per offset and gradient.

    With g the output gradient split as (B, C/G, G, H, W):
    dv_padded[j, m, p + d] += attn[m, d, p] * g[j, m, p]   (in place into one padded buffer, cropped at the end)
    dattn[m, d, p] = sum_j g[j, m, p] * v_padded[j, m, p + d]
    """

    @staticmethod
    def forward(ctx, v: torch.Tensor, attn: torch.Tensor, k: int) -> torch.Tensor:
        ctx.save_for_backward(v, attn)
        ctx.k = k
        return _aggregate(v, attn, k)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        v, attn = ctx.saved_tensors
        k, g = ctx.k, attn.shape[1]
        p = k // 2
        vp = F.pad(v, (p, p, p, p)).unflatten(1, (-1, g))  # (B, C/G, G, H+2p, W+2p)
        grad = grad.unflatten(1, (-1, g))  # (B, C/G, G, H, W)
        a = attn.unsqueeze(1)  # (B, 1, G, k*k, H, W)
        # Accumulate in the gradient's dtype (float32 when autocast made v bfloat16/float16), round once at the end.
        dvp = vp.new_zeros(vp.shape, dtype=grad.dtype) if ctx.needs_input_grad[0] else None
        # Offsets leading, so each offset's slice is contiguous (torch.compile accepts only contiguous `out=`).
        dattn = attn.new_empty((k * k, *grad.shape[:1], *grad.shape[2:])) if ctx.needs_input_grad[1] else None
        prod = torch.empty_like(grad)  # one buffer for the k^2 products instead of a fresh tensor each
        for d in range(k * k):
            window = (..., _shift(d // k, k), _shift(d % k, k))
            if dvp is not None:
                dvp[window].addcmul_(grad, a[:, :, :, d])
            if dattn is not None:
                torch.sum(torch.mul(grad, vp[window], out=prod), 1, out=dattn[d])
        dv = dvp[..., _shift(p, k), _shift(p, k)].flatten(1, 2).to(v.dtype) if dvp is not None else None  # crop
        return dv, dattn.movedim(0, 2) if dattn is not None else None, None


class CoTAttention(LayerScaled):
    """Contextual Transformer (CoT) block, as the official CoTNet `CotLayer`, with an optional YOLO-style shortcut.

    K1 = ReLU(BN(Conv_kxk(X, groups=4)))                static context
    A  = GN(Conv1x1(ReLU(BN(Conv1x1([X; K1])))))        2C -> C/2 -> k^2 * C/8 channels, C/8 GN groups
    V  = BN(Conv1x1(X))                                 values
    K2 = SiLU(BN(sum_d A[c mod C/8, d] * V[c, p + d]))  dynamic context (no softmax, as official)
    z  = Conv1x1(ReLU(BN(Conv1x1(mean_HW(K1 + K2)))))   C -> max(C/2, 32) -> 2C
    (a_dyn, a_stat) = softmax of the pair (z[2c], z[2c + 1]);  Y = a_dyn * K2 + a_stat * K1
    out = X + Y if shortcut else Y                      (paper form with the YOLO shortcut, the default)
    out = X + γ · Y,  γ per channel = `layer_scale`     (identity-start form, needs the shortcut)

    Conv + BN pairs are Ultralytics `Conv` layers, so `model.fuse()` folds them. Two small departures from the official
    code, neither changing the function class: the fusion's first 1x1 conv has no bias (BN's shift absorbs it), and
    its BN is a `PooledBatchNorm2d` so that training with batch size 1 works.

    Args:
        c1 (int): Input channels.
        c2 (int): Output channels; must equal `c1` and be divisible by 8 (channels share attention maps in groups of 8).
        kernel_size (int): Odd size k of the static-context conv and of the local attention window.
        shortcut (bool): Add the input to the output. On by default so the block starts near identity when it is
            inserted into a trained network (a YOLO layer convention; the official `CotLayer` returns Y).
        layer_scale (float | None): Initial per-channel γ on Y (LayerScale); 0.0 makes the block start as the exact
            identity, so it can be inserted into a trained network without changing its predictions. None (default)
            = no γ.

    Raises:
        ValueError: If `c2 != c1`, `c1` is not a positive multiple of 8, `kernel_size` is not a positive odd integer,
            or `layer_scale` is given without the shortcut.
    """

    def __init__(self, c1: int, c2: int, kernel_size: int = 3, shortcut: bool = True, layer_scale: float | None = None):
        super().__init__()
        if c2 != c1:
            raise ValueError(f"CoTAttention keeps the channel count: expected c2 == c1, got c1={c1}, c2={c2}")
        if c1 <= 0 or c1 % SHARE_PLANES:
            raise ValueError(
                f"CoTAttention needs channels divisible by {SHARE_PLANES} (shared attention maps), got {c1}"
            )
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"CoTAttention kernel_size must be a positive odd integer, got {kernel_size}")
        if layer_scale is not None and not shortcut:
            raise ValueError("CoTAttention layer_scale scales the residual branch: it needs shortcut=True")
        c, k = c1, kernel_size
        self.kernel_size = k
        self.shortcut = shortcut
        self.gamma = layer_scale_parameter(c, layer_scale, "CoTAttention")
        n_maps = c // SHARE_PLANES
        attn_chs = max(c * RADIX // 4, 32)  # official: reduction_factor 4 on radix * C

        self.key = Conv(c, c, k, 1, g=4, act=nn.ReLU())  # static context K1
        self.attn_reduce = Conv(2 * c, c // 2, 1, act=nn.ReLU())
        self.attn_expand = nn.Conv2d(c // 2, k * k * n_maps, 1)  # with bias, as official
        self.attn_norm = nn.GroupNorm(n_maps, k * k * n_maps)  # one group per k x k map
        self.value = Conv(c, c, 1, act=False)
        self.dyn_bn = nn.BatchNorm2d(c)
        self.dyn_act = nn.SiLU()
        self.se_reduce = Conv(c, attn_chs, 1, act=nn.ReLU())
        self.se_reduce.bn = PooledBatchNorm2d(attn_chs)  # normalises a (B, C, 1, 1) tensor: must survive B == 1
        self.se_expand = nn.Conv2d(attn_chs, RADIX * c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the CoT block.

        Args:
            x (torch.Tensor): Input, (B, C, H, W).

        Returns:
            (torch.Tensor): Output, (B, C, H, W).
        """
        k, tracing = self.kernel_size, torch.jit.is_tracing()
        k1 = self.key(x)  # (B, C, H, W) static context
        a = group_norm(self.attn_norm, self.attn_expand(self._reduce(x, k1)))  # (B, C/8*k*k, H, W)
        v = self.value(x)  # (B, C, H, W)
        shift = getattr(self, "dyn_shift", None)  # after `fold_norms`: dyn_bn's shift (its scale is in `value`)
        # Export records the converter-friendly form; eager runs the fast one (with its own backward when training).
        if tracing:
            k2 = aggregate_for_export(v, a, k)
            k2 = k2 if shift is None else k2 + shift.view(-1, 1, 1)
        else:
            k2 = local_aggregate(v, a.unflatten(1, (-1, k * k)), k, shift)
        k2 = self.dyn_act(self.dyn_bn(k2))  # (B, C, H, W) dynamic context (dyn_bn is an Identity once folded)
        s = k1.mean((2, 3), keepdim=True) + k2.mean((2, 3), keepdim=True)  # (B, C, 1, 1) = mean_HW(K1 + K2)
        z = self.se_expand(self.se_reduce(s))  # (B, 2C, 1, 1); channel 2c: dynamic logit, 2c + 1: static logit
        w = z.reshape(z.shape[0], -1, RADIX, 1).softmax(2)  # (B, C, 2, 1): softmax over each pair
        w_dyn, w_stat = w[:, :, :1], w[:, :, 1:]  # 2 x (B, C, 1, 1)
        if self.gamma is not None:
            w_dyn, w_stat = self.gamma.view(-1, 1, 1) * w_dyn, self.gamma.view(-1, 1, 1) * w_stat
        if tracing:  # plain Mul and Add: pnnx, coremltools and x2paddle have no addcmul
            y = w_stat * k1 + w_dyn * k2
            return x + y if self.shortcut else y
        # Two passes over (B, C, H, W) for [X +] a_stat * K1 + a_dyn * K2, with γ already in the (B, C, 1, 1) weights.
        y = torch.addcmul(x, w_stat, k1) if self.shortcut else w_stat * k1
        return y.addcmul_(w_dyn, k2)

    def fold_norms(self) -> None:
        """Fold `dyn_bn` for inference (eval mode; called by `model.fuse()` after Ultralytics' Conv+BN folds).

        BN(K2) = s * K2 + t per channel, and K2 is linear in V: s * sum_d A_d * V(p + d) = sum_d A_d * (s * V)(p + d),
        zero padding included. So s moves into the `value` conv (its BN when not yet folded) and t is added by the
        aggregation's first pass (eager) or as one Add (export), where dyn_bn was a pass of its own. Exact up to float
        rounding; idempotent. Left as they are, and why:
        - `attn_norm` (GroupNorm): its statistics are per image, so only its affine could move, and that feeds the
          bilinear aggregation (the shift would become a depthwise conv of V: an extra pass, not a fold).
        - `gamma` (LayerScale): it multiplies the (B, C, 1, 1) split-attention weights, which costs nothing; behind
          their softmax it cannot enter a conv.
        - the other BatchNorms are `Conv`s that Ultralytics' fuse folds (`se_reduce`'s PooledBatchNorm2d too).
        """
        if not isinstance(self.dyn_bn, nn.BatchNorm2d):
            return
        scale, shift = bn_affine(self.dyn_bn)
        scale_outputs(self.value.bn if hasattr(self.value, "bn") else self.value.conv, scale)
        self.dyn_bn = nn.Identity()
        self.register_buffer("dyn_shift", shift)

    def _reduce(self, x: torch.Tensor, k1: torch.Tensor) -> torch.Tensor:
        """`attn_reduce` applied to [x; k1]; while tracing for export, as two convs on x and k1 instead of a Concat.

        The conv is linear, so W [x; k1] = W_x x + W_k1 k1. ONNX Runtime and OpenVINO copy the concatenated tensor
        (and reorder it to their blocked conv layout) in a node of its own; the split form skips that copy (measured
        on one CoT layer under ONNX Runtime, one thread: 0.76-0.93x the time). Eager PyTorch keeps the Concat, which
        it runs as fast or faster.
        """
        r = self.attn_reduce
        if not torch.jit.is_tracing():
            return r(torch.cat((x, k1), 1))
        w = r.conv.weight
        c = r.conv.in_channels // 2  # a Python int: no shape arithmetic recorded
        y = F.conv2d(x, w[:, :c]) + F.conv2d(k1, w[:, c:])
        if r.conv.bias is not None:  # added apart: x2paddle cannot map a bias beside a sliced weight
            y = y + r.conv.bias.view(-1, 1, 1)
        return r.act(r.bn(y) if hasattr(r, "bn") else y)


class CoTBottleneck(nn.Module):
    """Ultralytics `Bottleneck` whose second conv is a CoT block, CoTNet's use of CoT (it replaces the 3x3 conv).

    Stock: x -> Conv_k0(c1 -> c_) -> Conv_k1(c_ -> c2, groups g) (+ x). Here the second conv becomes
    `CoTAttention(c_, c_, kernel_size=k[1], shortcut=False)`; the bottleneck's own shortcut stays. CoT keeps the channel
    count, so the hidden width must already be the output width: c_ = int(c2 * e) == c2, which holds where C2f and C3k
    build their bottlenecks (e=1.0, hence the default here). CoT fixes its own grouping (a 4-group key conv and maps
    shared by 8 channels), so `g` has nothing to act on and only g=1 is accepted rather than silently ignored.

    Args:
        c1 (int): Input channels.
        c2 (int): Output channels.
        shortcut (bool): Add the input to the output when c1 == c2.
        g (int): Groups of the replaced conv; must be 1.
        k (tuple[int, int]): Kernel size of the first conv and of the CoT block (odd ints).
        e (float): Expansion ratio; int(c2 * e) must equal c2.

    Raises:
        ValueError: If int(c2 * e) != c2 or g != 1 (and as CoTAttention for unsupported widths or kernels).
    """

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, k: tuple = (3, 3), e: float = 1.0):
        super().__init__()
        c_ = int(c2 * e)  # hidden channels
        if c_ != c2:
            raise ValueError(f"CoTBottleneck needs hidden width == c2 (CoT keeps channels), got int({c2} * {e}) = {c_}")
        if g != 1:
            raise ValueError(f"CoTBottleneck supports only g=1 (the CoT block has its own grouping), got g={g}")
        self.cv1 = Conv(c1, c_, k[0], 1)
        self.cv2 = CoTAttention(c_, c2, kernel_size=k[1], shortcut=False)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the bottleneck with optional shortcut connection."""
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class C3k_CoT(C3k):
    """Ultralytics `C3k` whose bottlenecks are `CoTBottleneck`s (a CoT block of kernel k replaces each k x k conv).

    Args:
        c1 (int): Input channels.
        c2 (int): Output channels.
        n (int): Number of bottlenecks.
        shortcut (bool): Whether the bottlenecks use shortcut connections.
        g (int): Groups; must be 1 (see `CoTBottleneck`).
        e (float): Expansion ratio; the hidden width int(c2 * e) must be divisible by 8.
        k (int): Kernel size of the bottlenecks' conv and CoT block.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5, k: int = 3):
        super().__init__(c1, c2, n, shortcut, g, e, k)
        c_ = int(c2 * e)  # hidden channels
        self.m = nn.Sequential(*(CoTBottleneck(c_, c_, shortcut, g, k=(k, k), e=1.0) for _ in range(n)))


class C2f_CoT(C2f):
    """Ultralytics `C2f` whose bottlenecks are `CoTBottleneck`s; forward and forward_split are the stock ones.

    Args:
        c1 (int): Input channels.
        c2 (int): Output channels.
        n (int): Number of bottlenecks.
        shortcut (bool): Whether the bottlenecks use shortcut connections.
        g (int): Groups; must be 1 (see `CoTBottleneck`).
        e (float): Expansion ratio; the hidden width int(c2 * e) must be divisible by 8.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        self.m = nn.ModuleList(CoTBottleneck(self.c, self.c, shortcut, g, k=(3, 3), e=1.0) for _ in range(n))


class C3k2_CoT(C3k2):
    """Ultralytics `C3k2` whose every bottleneck uses CoT; forward and forward_split are the stock ones.

    Per inner block, as the stock C3k2: `C3k_CoT` when c3k, else a `CoTBottleneck` followed, when attn, by the stock
    `PSABlock` (kept: it is a separate global-attention stage, not a bottleneck conv, and YAMLs that set attn keep
    working). One difference in shape: the stock plain bottleneck here uses e=0.5 (c -> c/2 -> c); CoT keeps channels,
    so `CoTBottleneck` runs at full width (e=1.0).

    Args:
        c1 (int): Input channels.
        c2 (int): Output channels.
        n (int): Number of blocks.
        c3k (bool): Whether to use C3k_CoT blocks.
        e (float): Expansion ratio; the hidden width int(c2 * e) must be divisible by 8 (by 16 when c3k, whose inner
            C3k halves it again).
        attn (bool): Whether to follow each bottleneck with the stock PSABlock.
        g (int): Groups; must be 1 (see `CoTBottleneck`).
        shortcut (bool): Whether to use shortcut connections.
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        n: int = 1,
        c3k: bool = False,
        e: float = 0.5,
        attn: bool = False,
        g: int = 1,
        shortcut: bool = True,
    ):
        C2f.__init__(self, c1, c2, n, shortcut, g, e)  # C3k2's own base call; C3k2's options differ by release
        self.m = nn.ModuleList(
            nn.Sequential(
                CoTBottleneck(self.c, self.c, shortcut, g),
                PSABlock(self.c, attn_ratio=0.5, num_heads=max(self.c // 64, 1)),
            )
            if attn
            else C3k_CoT(self.c, self.c, 2, shortcut, g)
            if c3k
            else CoTBottleneck(self.c, self.c, shortcut, g)
            for _ in range(n)
        )
