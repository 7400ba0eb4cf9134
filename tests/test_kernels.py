"""Fast paths of the operators: the hand-written gradients equal the true ones, and no path depends on grad mode."""

import pytest
import torch

from yolo_attn.cot import _aggregate, local_aggregate


@pytest.mark.parametrize("k", [1, 3, 5])
def test_local_aggregate_backward_is_the_true_gradient(k):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(2, 16, 5, 7, dtype=torch.float64, generator=g, requires_grad=True)
    a = torch.randn(2, 2, k * k, 5, 7, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, a: local_aggregate(v, a, k), (v, a))
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
