"""Numerical tests of the CoT operator family (`yolo_attn.cot`) against a reference written from the formulas."""

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import randomise_norms
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from ultralytics.nn.modules import C2f, C3k2, Conv
from ultralytics.nn.modules.block import Bottleneck

from yolo_attn.cot import (
    C2f_CoT,
    C3k2_CoT,
    C3k_CoT,
    CoTAttention,
    CoTBottleneck,
    PooledBatchNorm2d,
    aggregate_for_export,
    local_aggregate,
)

ATOL = 1e-5


# ---------------------------------------------------------------------------------------------------------------------
# Reference: the CoT formulas written out, sharing the module's weights but none of its code paths.
# ---------------------------------------------------------------------------------------------------------------------


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d, batch_stats: bool) -> torch.Tensor:
    """BatchNorm by hand: batch mean / biased variance, or the running statistics."""
    if batch_stats:
        mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    x = (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + bn.eps)
    return x * bn.weight[:, None, None] + bn.bias[:, None, None]


def _gn(x: torch.Tensor, gn: nn.GroupNorm) -> torch.Tensor:
    """GroupNorm by hand."""
    b, c, h, w = x.shape
    xg = x.reshape(b, gn.num_groups, -1)
    xg = (xg - xg.mean(-1, keepdim=True)) / torch.sqrt(xg.var(-1, unbiased=False, keepdim=True) + gn.eps)
    return xg.reshape(b, c, h, w) * gn.weight[:, None, None] + gn.bias[:, None, None]


def _conv_bn(x: torch.Tensor, unit: Conv, train: bool) -> torch.Tensor:
    """Ultralytics Conv (conv, BN, act) by hand; the act is applied by the caller."""
    cv = unit.conv
    return _bn(F.conv2d(x, cv.weight, None, padding=cv.padding, groups=cv.groups), unit.bn, train)


def _aggregate_unfold(v: torch.Tensor, a: torch.Tensor, k: int) -> torch.Tensor:
    """K2[b, c, p] = sum_d a[b, c mod G, d, p] * v[b, c, p + d], with an explicit unfold and an explicit map index."""
    b, c, h, w = v.shape
    n_maps = a.shape[1]
    neighbourhoods = F.unfold(v, k, padding=k // 2).view(b, c, k * k, h, w)  # channel-major, offsets row-major
    map_of_channel = torch.arange(c) % n_maps
    return (a[:, map_of_channel] * neighbourhoods).sum(2)


def reference(m: CoTAttention, x: torch.Tensor, train: bool) -> torch.Tensor:
    """CoT output from the paper's / official formulas; `train` selects batch statistics for the norms."""
    b, c, h, w = x.shape
    k, n_maps = m.kernel_size, c // 8
    k1 = F.relu(_conv_bn(x, m.key, train))
    hid = F.relu(_conv_bn(torch.cat([x, k1], 1), m.attn_reduce, train))
    a = _gn(F.conv2d(hid, m.attn_expand.weight, m.attn_expand.bias), m.attn_norm).view(b, n_maps, k * k, h, w)
    v = _conv_bn(x, m.value, train)
    k2 = F.silu(_bn(_aggregate_unfold(v, a, k), m.dyn_bn, train))
    s = (k1 + k2).mean((2, 3), keepdim=True)
    # A single pooled value per channel has no batch variance: the module then uses the running statistics.
    hid = F.relu(_conv_bn(s, m.se_reduce, train and b > 1))
    z = F.conv2d(hid, m.se_expand.weight, m.se_expand.bias).flatten(1)  # (B, 2C)
    dyn, stat = z[:, 0::2], z[:, 1::2]  # logits of channel c at 2c (dynamic) and 2c + 1 (static)
    a_dyn = (dyn.exp() / (dyn.exp() + stat.exp()))[..., None, None]
    y = a_dyn * k2 + (1 - a_dyn) * k1
    return x + y if m.shortcut else y


def reference_f64(m: CoTAttention, x: torch.Tensor, train: bool) -> torch.Tensor:
    """`reference` in float64 on a copy of the module, so a comparison measures the module's float32 error alone."""
    return reference(copy.deepcopy(m).double(), x.double(), train).float()


# ---------------------------------------------------------------------------------------------------------------------
# CoTAttention
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("c", [16, 32])
def test_local_aggregate_matches_unfold(c, k):
    torch.manual_seed(0)
    v, a = torch.randn(2, c, 7, 5), torch.randn(2, c // 8, k * k, 7, 5)
    torch.testing.assert_close(local_aggregate(v, a, k), _aggregate_unfold(v, a, k), atol=ATOL, rtol=0)


@pytest.mark.parametrize("hw", [(7, 5), (1, 1), (2, 9)], ids=str)
@pytest.mark.parametrize("k", [3, 5])
def test_export_form_of_the_aggregation_matches_unfold(k, hw):
    """The traced form (4-D views, zero strips from torch.zeros, out-of-place Mul/Add), at maps narrower than k."""
    torch.manual_seed(0)
    v, a = torch.randn(2, 32, *hw), torch.randn(2, 4, k * k, *hw)
    traced = torch.jit.trace(lambda v, a: aggregate_for_export(v, a, k), (v, a.flatten(1, 2)), check_trace=False)
    torch.testing.assert_close(traced(v, a.flatten(1, 2)), _aggregate_unfold(v, a, k), atol=ATOL, rtol=0)
    kinds = {n.kind() for n in traced.inlined_graph.nodes()}
    assert not kinds & {"aten::addcmul", "aten::addcmul_", "aten::unflatten", "aten::unbind", "aten::pad"}, kinds


@pytest.mark.parametrize("shortcut, layer_scale", [(True, None), (False, None), (True, 0.5)])
def test_traced_block_matches_eager_at_other_sizes(shortcut, layer_scale):
    """The block traced at one size runs the export form; at other sizes and batches it equals the eager block."""
    torch.manual_seed(0)
    m = randomise_norms(CoTAttention(32, 32, shortcut=shortcut, layer_scale=layer_scale)).eval()
    with torch.no_grad():
        traced = torch.jit.trace(m, torch.randn(1, 32, 8, 8), check_trace=False)
        for x in (torch.randn(2, 32, 13, 9), torch.randn(1, 32, 1, 1)):
            torch.testing.assert_close(traced(x), m(x), atol=ATOL, rtol=0)
    kinds = {n.kind() for n in traced.inlined_graph.nodes()}
    assert not kinds & {"aten::addcmul", "aten::addcmul_", "aten::unflatten", "aten::unbind", "aten::new_zeros"}


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("shortcut", [True, False], ids=["shortcut", "no_shortcut"])
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("hw", [(7, 5), (1, 1), (13, 9)], ids=str)
@pytest.mark.parametrize("c", [16, 32])
def test_matches_reference(c, hw, k, shortcut, train):
    torch.manual_seed(c + k)
    m = randomise_norms(CoTAttention(c, c, kernel_size=k, shortcut=shortcut), seed=c * k).train(train)
    x = torch.randn(2, c, *hw)
    with torch.no_grad():
        expected = reference_f64(m, x, train)  # before the module's train-mode forward moves its running stats
        out = m(x)
    assert out.shape == x.shape
    assert (out - expected).abs().max().item() < ATOL


def test_train_batch_one():
    """Batch 1 in training mode: the pooled fusion BN falls back to running statistics and leaves them alone."""
    torch.manual_seed(0)
    m = randomise_norms(CoTAttention(16, 16)).train()
    x = torch.randn(1, 16, 7, 5)
    se_mean, key_mean = m.se_reduce.bn.running_mean.clone(), m.key.bn.running_mean.clone()
    with torch.no_grad():
        expected = reference_f64(m, x, train=True)
    out = m(x)
    assert (out - expected).abs().max().item() < ATOL
    out.square().mean().backward()
    assert m.se_reduce.bn.weight.grad is not None and m.se_reduce.bn.weight.grad.abs().sum() > 0
    assert torch.equal(m.se_reduce.bn.running_mean, se_mean)  # one sample: no statistics update
    assert not torch.equal(m.key.bn.running_mean, key_mean)  # ordinary BN layers still update


def test_pooled_batchnorm_batch_two_is_stock():
    torch.manual_seed(0)
    bn, stock = PooledBatchNorm2d(8).train(), nn.BatchNorm2d(8).train()
    x = torch.randn(2, 8, 1, 1)
    torch.testing.assert_close(bn(x), stock(x))
    torch.testing.assert_close(bn.running_var, stock.running_var)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    m = CoTAttention(16, 16).train()
    x = torch.randn(2, 16, 8, 6, requires_grad=True)
    (m(x) * torch.randn(2, 16, 8, 6)).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_bfloat16_close_to_float32(train):
    torch.manual_seed(0)
    m = randomise_norms(CoTAttention(32, 32)).train(train)
    mb = copy.deepcopy(m).to(torch.bfloat16)
    x = torch.randn(2, 32, 12, 10)
    with torch.no_grad():
        out, out_bf16 = m(x), mb(x.bfloat16())
    assert out_bf16.dtype == torch.bfloat16
    assert torch.isfinite(out_bf16).all()
    err = (out_bf16.float() - out).abs()
    assert err.max() < 0.05 * out.abs().max(), err.max()
    assert err.mean() < 0.01 * out.abs().mean(), err.mean()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(c1=16, c2=32), "CoTAttention.*c1=16, c2=32"),
        (dict(c1=12, c2=12), "divisible by 8"),
        (dict(c1=16, c2=16, kernel_size=4), "odd"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CoTAttention(**kwargs)


class _LargestStorage(TorchDispatchMode):
    """Records the largest storage (in elements) of any tensor an aten op returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.untyped_storage().nbytes() // t.element_size())
        return out


@pytest.mark.parametrize("k", [3, 5])
def test_aggregation_never_materialises_k2_chw(k):
    """No op in the forward returns a tensor of k^2 * C * H * W elements (what an unfold of V would need).

    Seen at the aten level, so it covers every intermediate the module creates; it does not see scratch memory inside
    a kernel (e.g. a conv's own im2col), which is not the aggregation's doing. The probe itself is checked to fire on
    the unfold-based aggregation.
    """
    c, h, w = 32, 24, 20
    m = CoTAttention(c, c, kernel_size=k).eval()
    x = torch.randn(1, c, h, w)
    limit = k * k * c * h * w
    with torch.no_grad(), _LargestStorage() as probe:
        m(x)
    assert probe.largest < limit, (probe.largest, limit)
    with torch.no_grad(), _LargestStorage() as probe:
        _aggregate_unfold(x, torch.randn(1, c // 8, k * k, h, w), k)
    assert probe.largest >= limit


# ---------------------------------------------------------------------------------------------------------------------
# Bottleneck and CSP blocks
# ---------------------------------------------------------------------------------------------------------------------


def test_cot_bottleneck():
    torch.manual_seed(0)
    b = CoTBottleneck(16, 16).eval()
    assert isinstance(b.cv2, CoTAttention) and not b.cv2.shortcut and b.add
    x = torch.randn(2, 16, 9, 7)
    with torch.no_grad():
        torch.testing.assert_close(b(x), x + b.cv2(b.cv1(x)))
    with pytest.raises(ValueError, match="hidden width"):
        CoTBottleneck(16, 16, e=0.5)
    with pytest.raises(ValueError, match="g=1"):
        CoTBottleneck(16, 16, g=2)


@pytest.mark.parametrize(
    "make, make_stock, inner",
    [
        (lambda: C2f_CoT(32, 64, 2, True), lambda: C2f(32, 64, 2, True), CoTBottleneck),
        (lambda: C2f_CoT(48, 32), lambda: C2f(48, 32), CoTBottleneck),
        (lambda: C3k2_CoT(32, 64, 1, False, 0.5), lambda: C3k2(32, 64, 1, False, 0.5), CoTBottleneck),
        (lambda: C3k2_CoT(32, 64, 2, True, 0.5), lambda: C3k2(32, 64, 2, True, 0.5), C3k_CoT),
        (
            lambda: C3k2_CoT(64, 64, 1, True, 0.5, False, 1, False),
            lambda: C3k2(64, 64, 1, True, 0.5, False, 1, False),
            C3k_CoT,
        ),
        (lambda: C3k2_CoT(64, 64, 1, False, 0.5, True), lambda: C3k2(64, 64, 1, False, 0.5, True), nn.Sequential),
    ],
    ids=["c2f", "c2f_default", "c3k2", "c3k2_c3k", "c3k2_c3k_no_shortcut", "c3k2_attn"],
)
def test_csp_blocks(make, make_stock, inner):
    torch.manual_seed(0)
    block, stock = make().eval(), make_stock().eval()
    assert all(type(mod) is inner for mod in block.m)
    x = torch.randn(2, block.cv1.conv.in_channels, 12, 10)
    with torch.no_grad():
        out = block(x)
        assert out.shape == stock(x).shape
        torch.testing.assert_close(block.forward_split(x), out)
    assert sum(p.numel() for p in block.parameters()) != sum(p.numel() for p in stock.parameters())
    bottlenecks = [mod for mod in block.modules() if isinstance(mod, CoTBottleneck)]
    assert len(bottlenecks) == len(block.m) * (2 if inner is C3k_CoT else 1)
    assert all(isinstance(b.cv2, CoTAttention) for b in bottlenecks)
    assert not any(isinstance(mod, Bottleneck) for mod in block.modules())  # no stock bottleneck left behind


def test_cot_blocks_train_backward():
    """The gradient of a whole C3k2_CoT block in train mode (batch statistics, the aggregation's hand-written backward)
    with respect to its input and to every parameter equals a central finite difference, in float64, along a random
    direction per tensor."""
    torch.manual_seed(0)
    block = randomise_norms(C3k2_CoT(32, 32, 1, True)).double().train()
    x = torch.randn(2, 32, 6, 5, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 32, 6, 5, dtype=torch.float64)  # a loss that weighs every output element differently

    def loss() -> torch.Tensor:
        return (block(x) * weights).sum()

    tensors = [x, *block.parameters()]
    grads = torch.autograd.grad(loss(), tensors)
    eps = 1e-6
    with torch.no_grad():
        for t, grad in zip(tensors, grads):
            d = torch.randn_like(t)
            t.add_(eps * d)
            plus = loss()
            t.sub_(2 * eps * d)
            minus = loss()
            t.add_(eps * d)
            expected = (plus - minus) / (2 * eps)
            got = (grad * d).sum()
            assert abs(got - expected) <= 1e-6 * max(abs(expected), 1.0), (tuple(t.shape), float(got), float(expected))
