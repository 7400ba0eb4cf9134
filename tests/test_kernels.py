"""Fast paths of the operators: the hand-written gradients equal the true ones, and no path depends on grad mode."""

import pytest
import torch
from test_attn_conv import _randomise
from test_attn_conv import reference as attn_conv_reference

from yolo_attn import AttnConv
from yolo_attn.attn_conv import _depthwise
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


# AttnConv's global attention takes the fused kernel for N * M >= 2**15 score entries (eager and compiled) and the
# written-out form while tracing for export: 40 x 40 with pool 4 gives N = 1600, M = 100.
@pytest.mark.parametrize("c, size", [(32, (40, 40)), (16, (45, 37))])
def test_attn_conv_fused_attention_matches_reference(c, size):
    torch.manual_seed(0)
    m = _randomise(AttnConv(c, c)).eval()
    x = torch.randn(1, c, *size)
    ref = attn_conv_reference(m, x)
    with torch.no_grad():
        y = m(x)
        y16 = m.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert (y.double() - ref).abs().max().item() < 1e-5
    assert (y16.double() - ref).abs().max().item() < 0.05 * ref.abs().max().item()


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("opset", [13, 20])
def test_attn_conv_onnx_matches_fused_eager(tmp_path, opset):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    m = _randomise(AttnConv(32, 32)).eval()
    path, axes = tmp_path / "a.onnx", {0: "b", 2: "h", 3: "w"}
    torch.onnx.export(
        m, (torch.randn(1, 32, 8, 8),), str(path), dynamo=False, opset_version=opset,
        input_names=["x"], output_names=["y"], dynamic_axes={"x": axes, "y": axes},
    )  # fmt: skip
    x = torch.randn(1, 32, 40, 40)
    with torch.no_grad():
        expected = m(x).numpy()  # eager: the fused kernel
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})
    assert abs(got - expected).max() < 1e-4


@pytest.mark.parametrize("k, bias", [(3, True), (5, False)])
def test_depthwise_backward_is_the_true_gradient(k, bias):
    conv = torch.nn.Conv2d(6, 6, k, padding=k // 2, groups=6, bias=bias).double()
    x = torch.randn(2, 6, 7, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, *params: _depthwise(conv, x), (x, *conv.parameters()))
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
