"""Numerical tests for `yolo_attn.attn_conv.AttnConv` (CloFormer's AttnConv as a channel-keeping YOLO layer).

The reference below is written from the formulas, on purpose unlike the module: float64, 1x1 convs as einsums,
depthwise convs as sums of k² shifted products, average pooling as an explicit loop over the valid pixels of each
window, and attention as a loop over heads with a hand-written softmax. It reads the module's own (randomised) weights.
"""

import importlib
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from yolo_attn.attn_conv import AttnConv

# Every width YOLO's n/s/m/l/x scales produce for the usual YAML channel counts.
YOLO_WIDTHS = [16, 24, 32, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512, 576, 640, 768, 1024, 1280]

CONFIGS = {
    "default": {},
    "no_shortcut": {"shortcut": False},
    "two_kernels_pool3": {"head_dim": 8, "kernel_sizes": (3, 5), "global_ratio": 0.25, "pool_size": 3},
    "ffn_k7_pool1": {"kernel_sizes": [7], "pool_size": 1, "ffn_ratio": 2.0, "shortcut": False},
    "all_local": {"global_ratio": 0.0, "kernel_sizes": (3, 5)},
    "all_global": {"global_ratio": 1.0, "pool_size": 2},
}
SIZES = [(1, 1), (7, 5), (13, 9), (9, 16), (8, 12)]


# ----------------------------------------------------------------------------------------------------------------
# Reference, float64
# ----------------------------------------------------------------------------------------------------------------
def _p(t: torch.Tensor) -> torch.Tensor:
    return t.detach().double()


def _group_norm(x, gn):
    mu = x.mean(dim=(1, 2, 3), keepdim=True)
    var = ((x - mu) ** 2).mean(dim=(1, 2, 3), keepdim=True)
    return (x - mu) / torch.sqrt(var + gn.eps) * _p(gn.weight)[:, None, None] + _p(gn.bias)[:, None, None]


def _pointwise(x, conv):
    return torch.einsum("oi,bihw->bohw", _p(conv.weight)[:, :, 0, 0], x) + _p(conv.bias)[:, None, None]


def _depthwise(x, conv):
    k = conv.weight.shape[-1]
    r = k // 2
    h, w = x.shape[2:]
    xp = torch.zeros(x.shape[0], x.shape[1], h + 2 * r, w + 2 * r, dtype=x.dtype)
    xp[:, :, r : r + h, r : r + w] = x
    wt = _p(conv.weight)[:, 0]  # (C, k, k)
    out = torch.zeros_like(x)
    for i in range(k):
        for j in range(k):
            out += wt[:, i, j][:, None, None] * xp[:, :, i : i + h, j : j + w]
    return out + _p(conv.bias)[:, None, None]


def _silu(x):
    return x / (1 + torch.exp(-x))


def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _pool_valid(x, s):
    """Average of each s x s window, partial windows at the bottom/right edge averaged over their valid pixels."""
    h, w = x.shape[2:]
    rows = []
    for i in range(0, h, s):
        row = [x[:, :, i : min(i + s, h), j : min(j + s, w)].mean(dim=(2, 3)) for j in range(0, w, s)]
        rows.append(torch.stack(row, dim=-1))
    return torch.stack(rows, dim=-2)  # (B, C, ceil(H/s), ceil(W/s))


def _local_ref(t, grp, d):
    gd = grp.gate[0].weight.shape[0]
    qkv = _depthwise(_pointwise(t, grp.qkv), grp.dw)
    q, k, v = qkv[:, :gd], qkv[:, gd : 2 * gd], qkv[:, 2 * gd :]
    a = _pointwise(_silu(_pointwise(q * k, grp.gate[0])), grp.gate[2])
    return torch.tanh(a / math.sqrt(d)) * v


def _global_ref(t, grp, d, s):
    b, _, h, w = t.shape
    g = grp.heads
    q = _pointwise(t, grp.q).reshape(b, g * d, h * w)
    kv = _pointwise(_pool_valid(t, s), grp.kv).flatten(2)  # (B, 2·g·d, N), channel layout (2, g, d)
    outs = []
    for head in range(g):
        qh = q[:, head * d : (head + 1) * d]  # (B, d, HW)
        kh = kv[:, head * d : (head + 1) * d]  # (B, d, N)
        vh = kv[:, (g + head) * d : (g + head + 1) * d]  # (B, d, N)
        logits = torch.einsum("bdn,bdm->bnm", qh, kh) / math.sqrt(d)
        e = torch.exp(logits - logits.max(dim=-1, keepdim=True).values)
        attn = e / e.sum(dim=-1, keepdim=True)  # softmax over all pooled positions, per query position
        outs.append(torch.einsum("bnm,bdm->bdn", attn, vh))
    return torch.cat(outs, dim=1).reshape(b, g * d, h, w)


def reference(m: AttnConv, x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    d = m.head_dim
    t = _group_norm(x, m.norm)
    parts = [_local_ref(t, grp, d) for grp in m.local_groups]
    if m.global_group is not None:
        parts.append(_global_ref(t, m.global_group, d, m.pool_size))
    y = _pointwise(torch.cat(parts, dim=1), m.proj)
    if m.shortcut:
        y = y + x
    if m.ffn is not None:
        f = m.ffn
        y = y + _pointwise(_depthwise(_gelu(_pointwise(_group_norm(y, f.norm), f.fc1)), f.dw), f.fc2)
    return y


def _randomise(m: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Perturb every parameter (norm affines and biases included) so that none of them is at its neutral value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return m


# ----------------------------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("c", [16, 32, 64])
@pytest.mark.parametrize("cfg", list(CONFIGS), ids=list(CONFIGS))
def test_matches_reference(cfg, c, size):
    torch.manual_seed(c + 100 * size[0] + size[1])
    m = _randomise(AttnConv(c, c, **CONFIGS[cfg])).eval()
    x = torch.randn(2, c, *size)
    with torch.no_grad():
        y = m(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert (y.double() - reference(m, x)).abs().max().item() < 1e-5


@pytest.mark.parametrize(
    "c, kwargs, head_dim, split, kernels",
    [
        (16, {}, 8, [1, 1], [5]),
        (24, {}, 8, [2, 1], [5]),
        (32, {}, 8, [2, 2], [5]),  # CloFormer-XXS stage 1: 32 channels, 4 heads of 8
        (48, {}, 16, [2, 1], [5]),  # CloFormer-XS stage 1: 48 channels, 3 heads of 16
        (256, {}, 16, [8, 8], [5]),
        (64, {"head_dim": 8, "kernel_sizes": [3, 5], "global_ratio": 0.25}, 8, [3, 3, 2], [3, 5]),
        (64, {"head_dim": 16, "kernel_sizes": [3, 5, 7], "global_ratio": 0.5}, 16, [1, 1, 0, 2], [3, 5]),
        (256, {"global_ratio": 0.75, "kernel_sizes": 9}, 16, [4, 12], [9]),  # CloFormer-XXS stage 4 split
        (32, {"global_ratio": 0.01}, 8, [3, 1], [5]),  # at least one global head when 0 < ratio < 1
        (32, {"global_ratio": 0.99}, 8, [1, 3], [5]),  # ... and at least one local head
        (32, {"global_ratio": 0.0}, 8, [4, 0], [5]),
        (32, {"global_ratio": 1.0}, 8, [0, 4], []),
    ],
)
def test_head_assignment(c, kwargs, head_dim, split, kernels):
    m = AttnConv(c, c, **kwargs)
    assert m.head_dim == head_dim
    assert m.group_split == split
    assert [grp.dw.kernel_size[0] for grp in m.local_groups] == kernels
    assert [grp.heads for grp in m.local_groups] == [g for g in split[:-1] if g]
    assert (m.global_group is None) == (split[-1] == 0)
    assert sum(split) * head_dim == c


def test_positional_yaml_args():
    # YAML row [-1, 1, AttnConv, [64, 8, [3, 5], 0.5, 3, False, 2.0]] -> AttnConv(c1, 64, 8, [3, 5], 0.5, 3, False, 2.0)
    m = AttnConv(64, 64, 8, [3, 5], 0.5, 3, False, 2.0)
    assert (m.head_dim, m.group_split, m.pool_size, m.shortcut) == (8, [2, 2, 4], 3, False)
    assert m.ffn is not None and m.ffn.fc1.out_channels == 128
    assert m(torch.randn(1, 64, 6, 5)).shape == (1, 64, 6, 5)


@pytest.mark.parametrize("c", YOLO_WIDTHS)
def test_defaults_every_yolo_width(c):
    m = AttnConv(c, c)
    assert m.group_split[-1] >= 1 and sum(m.group_split[:-1]) >= 1  # both branches present
    x = torch.randn(1, c, 5, 3)
    with torch.no_grad():
        y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("cfg", ["default", "two_kernels_pool3", "ffn_k7_pool1"])
def test_gradients_reach_every_parameter(cfg):
    torch.manual_seed(0)
    m = _randomise(AttnConv(32, 32, **CONFIGS[cfg])).train()
    x = torch.randn(2, 32, 9, 7, requires_grad=True)
    m(x).square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_train_and_eval_agree():
    torch.manual_seed(0)
    m = _randomise(AttnConv(32, 32))
    x = torch.randn(3, 32, 7, 5)
    y_train = m.train()(x)
    with torch.no_grad():
        y_eval = m.eval()(x)
    torch.testing.assert_close(y_train.detach(), y_eval)  # no dropout or batch statistics in the layer


def test_any_batch_size():
    m = AttnConv(16, 16).eval()
    x = torch.randn(5, 16, 6, 7)
    with torch.no_grad():
        full = m(x)
        single = torch.cat([m(x[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(full, single, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cfg", ["default", "two_kernels_pool3"])
def test_bfloat16_close_to_float32(cfg):
    torch.manual_seed(0)
    m = _randomise(AttnConv(64, 64, **CONFIGS[cfg])).eval()
    x = torch.randn(2, 64, 13, 9)
    with torch.no_grad():
        y32 = m(x)
        y16 = m.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y16.dtype == torch.bfloat16 and torch.isfinite(y16).all()
    err = (y16.float() - y32).abs().max().item()
    assert err < 0.05 * y32.abs().max().item(), err


# AttnConv's global attention takes the fused kernel for N * M >= 2**15 score entries (eager and compiled) and the
# written-out form while tracing for export: 40 x 40 with pool 4 gives N = 1600, M = 100.
@pytest.mark.parametrize("c, size", [(32, (40, 40)), (16, (45, 37))])
def test_attn_conv_fused_attention_matches_reference(c, size):
    torch.manual_seed(0)
    m = _randomise(AttnConv(c, c)).eval()
    x = torch.randn(1, c, *size)
    ref = reference(m, x)
    with torch.no_grad():
        y = m(x)
        y16 = m.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert (y.double() - ref).abs().max().item() < 1e-5
    assert (y16.double() - ref).abs().max().item() < 0.05 * ref.abs().max().item()


def test_tracing_records_no_constant_from_the_operator():
    """At a size where eager mode takes the fused kernel, tracing neither warns from our code nor records it."""
    m = AttnConv(32, 32).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = torch.jit.trace(m, torch.randn(1, 32, 64, 64))
    assert not [w for w in caught if "yolo_attn" in w.filename], [str(w.message) for w in caught]
    assert "scaled_dot_product_attention" not in str(traced.inlined_graph)


@pytest.mark.parametrize("hw", [(10, 10), (5, 7), (8, 8), (1, 1), (13, 9)], ids=str)
def test_torch_export_form_equals_eager(hw):
    """Under torch.export (LiteRT, ExecuTorch) the ceil-mode pool is a pool of the padded input over the inside
    fraction, and K/V are sliced, not unbound: the exported program computes the eager layer's values."""
    torch.manual_seed(0)
    m = _randomise(AttnConv(32, 32, None, [3, 5], 0.5, 4, True, 1.0)).eval()
    x = torch.randn(1, 32, *hw)
    program = torch.export.export(m, (x,))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not any("unbind" in t for t in targets), targets
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), m(x), atol=1e-5, rtol=0)


def test_pooling_partial_windows_use_valid_pixels():
    # The edge-window semantics the global branch relies on (and which ONNX AveragePool reproduces, see above).
    x = torch.randn(2, 3, 13, 9, dtype=torch.float64)
    for s in (2, 3, 4, 20):
        got = F.avg_pool2d(x, s, s, ceil_mode=True, count_include_pad=False)
        torch.testing.assert_close(got, _pool_valid(x, s))


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((32, 64), {}, r"AttnConv.*c1=32, c2=64"),
        ((32, 32), {"head_dim": 12}, r"AttnConv head_dim must be a positive divisor of c1=32"),
        ((32, 32), {"head_dim": -8}, r"AttnConv head_dim"),
        ((32, 32), {"head_dim": 8.0}, r"AttnConv head_dim"),
        ((32, 32), {"kernel_sizes": 4}, r"AttnConv kernel_sizes must be odd"),
        ((32, 32), {"kernel_sizes": []}, r"AttnConv kernel_sizes"),
        ((32, 32), {"kernel_sizes": [3, 0]}, r"AttnConv kernel_sizes"),
        ((32, 32), {"kernel_sizes": "5"}, r"AttnConv kernel_sizes"),
        ((32, 32), {"global_ratio": 1.5}, r"AttnConv global_ratio must be a number in \[0, 1\]"),
        ((32, 32), {"global_ratio": -0.1}, r"AttnConv global_ratio"),
        ((32, 32), {"global_ratio": True}, r"AttnConv global_ratio"),
        ((32, 32), {"pool_size": 0}, r"AttnConv pool_size must be a positive integer"),
        ((32, 32), {"pool_size": 2.0}, r"AttnConv pool_size"),
        ((32, 32), {"ffn_ratio": -1}, r"AttnConv ffn_ratio"),
        ((32, 32), {"ffn_ratio": 0.01}, r"AttnConv ffn_ratio.*no hidden channels"),
        ((16, 16), {"head_dim": 16}, r"AttnConv needs at least 2 heads"),
        ((10, 10), {}, r"AttnConv cannot choose a head dimension for c1=10"),
    ],
)
def test_bad_options_raise(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        AttnConv(*args, **kwargs)


def test_single_head_allowed_when_only_one_branch():
    # With one head a split is impossible, but an all-local or all-global layer is fine.
    for ratio in (0.0, 1.0):
        m = AttnConv(16, 16, head_dim=16, global_ratio=ratio)
        assert m(torch.randn(1, 16, 3, 4)).shape == (1, 16, 3, 4)


def test_weights_only_reload(tmp_path):
    # Ultralytics checkpoints pickle whole modules; a restricted (weights_only) load must allow-list every class the
    # layer is built from: torch.nn classes plus the classes of yolo_attn.attn_conv, nothing else.
    m = _randomise(AttnConv(32, 32, head_dim=8, kernel_sizes=(3, 5), ffn_ratio=2.0)).eval()
    path = tmp_path / "attn_conv.pt"
    torch.save(m, path)
    needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    assert all(n.startswith(("torch.nn.modules.", "yolo_attn.attn_conv.")) for n in needed), needed
    classes = [getattr(importlib.import_module(n.rpartition(".")[0]), n.rpartition(".")[2]) for n in needed]
    with torch.serialization.safe_globals(classes):
        loaded = torch.load(path, weights_only=True)
    x = torch.randn(1, 32, 7, 5)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), m(x))


def test_max_key_grid_keeps_the_paper_pooling_up_to_its_bound():
    # max_key_grid only widens the pool where the key grid would exceed it: below, the layer is the default one.
    torch.manual_seed(0)
    default = _randomise(AttnConv(32, 32)).eval()
    bounded = AttnConv(32, 32, max_key_grid=20).eval()
    bounded.load_state_dict(default.state_dict())
    x = torch.randn(1, 32, 80, 77)  # P3 of a 640 px input: a 20 x 20 grid with the default stride 4
    with torch.no_grad():
        assert torch.equal(bounded(x), default(x))
    assert AttnConv(32, 32).global_group.max_key_grid == 0  # the default stays the paper's fixed stride


def test_max_key_grid_bounds_the_keys_at_large_inputs():
    torch.manual_seed(0)
    bounded = _randomise(AttnConv(16, 16, pool_size=4, max_key_grid=6)).eval()
    keys = []
    bounded.global_group.kv.register_forward_hook(lambda mod, inp, out: keys.append(inp[0].shape[2:]))
    with torch.no_grad():
        for size in [(100, 70), (250, 9), (96, 96)]:
            bounded(torch.randn(1, 16, *size))
    assert keys == [(6, 6), (6, 3), (6, 6)]  # strides (17, 12), (42, 4), (16, 16); unbounded: 25x18, 63x3, 24x24
    # Same function as the paper's layer with that wider stride: at 96 x 96 the bound pools with stride 16.
    wide = AttnConv(16, 16, pool_size=16).eval()
    wide.load_state_dict(bounded.state_dict())
    x = torch.randn(1, 16, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(bounded(x), wide(x))
    del bounded.global_group.max_key_grid  # a layer pickled before the option existed runs as the default
    with torch.no_grad():
        assert bounded(torch.randn(1, 16, 100, 70)).shape == (1, 16, 100, 70)
    assert keys[-1] == (25, 18)
    with pytest.raises(ValueError, match="AttnConv max_key_grid"):
        AttnConv(16, 16, max_key_grid=-1)
