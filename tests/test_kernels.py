"""Fast paths of the operators: the hand-written gradients equal the true ones, and no path depends on grad mode."""

import pytest
import torch

from yolo_attn.attn_conv import _depthwise
from yolo_attn.cot import _aggregate, local_aggregate

# gradcheck's fast mode compares the gradient with finite differences along random projections (seconds); the full
# Jacobian comparison (a minute per kernel size on 2 cores) runs with `pytest -m exhaustive`.
FAST_MODE = pytest.mark.parametrize(
    "fast_mode", [True, pytest.param(False, marks=pytest.mark.exhaustive)], ids=["fast_mode", "full_jacobian"]
)


@FAST_MODE
@pytest.mark.parametrize("k", [1, 3, 5])
def test_local_aggregate_backward_is_the_true_gradient(k, fast_mode):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(2, 16, 5, 7, dtype=torch.float64, generator=g, requires_grad=True)
    a = torch.randn(2, 2, k * k, 5, 7, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, a: local_aggregate(v, a, k), (v, a), fast_mode=fast_mode)
    out = local_aggregate(v, a, k)
    assert out.grad_fn is not None and "LocalAggregate" in type(out.grad_fn).__name__  # the hand-written backward
    torch.testing.assert_close(out, _aggregate(v.detach(), a.detach(), k))


def test_local_aggregate_backward_with_only_one_input_requiring_grad():
    v, a = torch.randn(1, 8, 4, 4, requires_grad=True), torch.randn(1, 1, 9, 4, 4)
    local_aggregate(v, a, 3).sum().backward()
    assert v.grad.shape == v.shape
    v, a = torch.randn(1, 8, 4, 4), torch.randn(1, 1, 9, 4, 4, requires_grad=True)
    local_aggregate(v, a, 3).sum().backward()
    assert a.grad.shape == a.shape


@FAST_MODE
@pytest.mark.parametrize("k, bias", [(3, True), (5, False)])
def test_depthwise_backward_is_the_true_gradient(k, bias, fast_mode):
    conv = torch.nn.Conv2d(6, 6, k, padding=k // 2, groups=6, bias=bias).double()
    x = torch.randn(2, 6, 7, 5, dtype=torch.float64, requires_grad=True)
    check = torch.autograd.gradcheck
    assert check(lambda x, *params: _depthwise(conv, x), (x, *conv.parameters()), fast_mode=fast_mode)
    assert "DepthwiseConv" in type(_depthwise(conv, x).grad_fn).__name__


def test_fast_backwards_under_cpu_autocast():
    conv = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
    x = torch.randn(1, 8, 6, 6, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = _depthwise(conv, x)
    y.float().sum().backward()
    assert y.dtype == torch.bfloat16 and conv.weight.grad.dtype == torch.float32
    v = torch.randn(1, 16, 5, 5, dtype=torch.bfloat16, requires_grad=True)  # a conv output under autocast
    a = torch.randn(1, 2, 9, 5, 5, requires_grad=True)  # a GroupNorm output under autocast stays float32
    grad = torch.randn(1, 16, 5, 5)
    local_aggregate(v, a, 3).backward(grad)
    v64, a64 = v.detach().double().requires_grad_(), a.detach().double().requires_grad_()
    truth = torch.autograd.grad(_aggregate(v64, a64, 3), (v64, a64), grad.double())
    assert v.grad.dtype == torch.bfloat16 and a.grad.dtype == torch.float32
    for got, exact in zip((v.grad, a.grad), truth):
        assert (got.double() - exact).abs().max() <= 0.01 * exact.abs().max()  # bfloat16 rounding, once
