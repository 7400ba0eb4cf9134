"""Full FLOP count of a forward pass (a library feature: `count_flops`), and Ultralytics' own count beside it."""

from __future__ import annotations

import math
from typing import Any


def _numel(shape) -> int:
    return math.prod(shape) if shape else 1


def _per_output(*args, out_shape=None, **kwargs) -> int:
    """Elementwise binary arithmetic (add, sub, mul, div): one FLOP per output element."""
    return _numel(out_shape)


def _per_output2(*args, out_shape=None, **kwargs) -> int:
    """Fused multiply-add (addcmul, addcdiv): two FLOPs per output element."""
    return 2 * _numel(out_shape)


def _per_input(x_shape, *args, out_shape=None, **kwargs) -> int:
    """Reductions (sum, mean): one add per input element."""
    return _numel(x_shape)


def _avg_pool(x_shape, *args, out_shape=None, **kwargs) -> int:
    """Average pooling: one add per input element and one division per output element (non-overlapping windows)."""
    return _numel(x_shape) + _numel(out_shape)


def _batch_norm(x_shape, *args, out_shape=None, **kwargs) -> int:
    """Batch norm with running statistics: a per-channel scale and shift, two FLOPs per element."""
    return 2 * _numel(x_shape)


def _group_norm(x_shape, *args, out_shape=None, **kwargs) -> int:
    """Group/layer norm: statistics (mean 1, variance 2), normalisation (2) and affine (2): 7 FLOPs per element."""
    return 7 * _numel(x_shape)


def _sdpa_cpu(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    """PyTorch's fused CPU attention kernel: its two matrix products, by torch's own SDPA rule (it has none for it)."""
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(q_shape, k_shape, v_shape)


def _flop_mapping() -> dict:
    """Extra FLOP formulas for torch's FlopCounterMode, keyed by aten overload packet."""
    import torch

    aten = torch.ops.aten
    mapping = {}
    for names, fn in (
        (("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "rsub"), _per_output),
        (("addcmul", "addcmul_", "addcdiv", "addcdiv_"), _per_output2),
        (("sum", "mean"), _per_input),
        (("avg_pool2d",), _avg_pool),
        (("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training"), _batch_norm),
        (("native_group_norm", "native_layer_norm"), _group_norm),
        (("_scaled_dot_product_flash_attention_for_cpu",), _sdpa_cpu),
    ):
        for name in names:
            if hasattr(aten, name):
                mapping[getattr(aten, name)] = fn
    return mapping


def count_flops(model: Any, x: Any = 640, by_module: bool = False) -> int | tuple[int, dict[str, int]]:
    """Count the FLOPs of one forward pass of `model`, the attention arithmetic included.

    Convention (the one behind Ultralytics' GFLOPs, which are 2 x the multiply-accumulates THOP counts): a
    multiply-accumulate is 2 FLOPs. Convolutions, matrix products and scaled-dot-product attention are counted by
    `torch.utils.flop_counter.FlopCounterMode` (2 per multiply-accumulate, biases ignored, as THOP does). Added here,
    because attention operators do much of their arithmetic elementwise: add/sub/mul/div 1 FLOP per output element
    (so CoT's local aggregation of k x k shifted products costs 2k^2 - 1 per output element, less at the border,
    where the zero padding is not computed), reductions (sum, mean)
    1 per input element, average pooling 1 per input + 1 per output element, batch norm with running statistics 2 and
    group/layer norm 7 per element. Activations and softmax (exp, sigmoid, tanh, ...), data movement, max pooling and
    nearest upsampling count 0, as in Ultralytics/THOP. The input is run at its real size (no extrapolation).

    Args:
        model (torch.nn.Module): The model or module (eval mode is set for the count and restored).
        x (int | torch.Tensor): Square image size of a 1x3xSxS input, or the input tensor itself.
        by_module (bool): Also return FLOPs per module (fully qualified name -> FLOPs, every nesting level).

    Returns:
        (int | tuple[int, dict[str, int]]): Total FLOPs, and the per-module counts when `by_module`.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    if isinstance(x, int):
        p = next(model.parameters())
        x = torch.zeros(1, 3, x, x, dtype=p.dtype, device=p.device)
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False, depth=None, custom_mapping=_flop_mapping())
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    total = counter.get_total_flops()
    if not by_module:
        return total
    return total, {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}


def ultralytics_flops(model, imgsz: int = 640) -> float:
    """FLOPs as Ultralytics reports them (`get_flops`: THOP rules, extrapolated from small proxy images)."""
    from ultralytics.utils.torch_utils import get_flops

    return get_flops(model, imgsz) * 1e9


def flop_breakdown(model, imgsz: int = 640) -> dict[str, float]:
    """Where Ultralytics' count and the full count part: GFLOPs by THOP's rules at the real size, and of plugin layers.

    Returns GFLOPs: `thop_direct` (THOP's rules on the real input, no extrapolation), `plugin_thop` and `plugin_full`
    (the plugin layers alone, each profiled on the input it gets in the model: THOP's rules, functional matrix
    products and attention included, vs `count_flops`). Ultralytics' `get_flops` minus `thop_direct` is the error of
    its extrapolation from small proxy images; `plugin_full - plugin_thop` is the arithmetic THOP has no rule for.
    """
    import copy

    import thop
    import torch

    p = next(model.parameters())
    x = torch.zeros(1, 3, imgsz, imgsz, dtype=p.dtype, device=p.device)
    plugin = [m for m in model.model if str(getattr(m, "type", "")).startswith("yolo_attn")]
    inputs, hooks = {}, [m.register_forward_pre_hook(lambda m, a: inputs.setdefault(m, a[0])) for m in plugin]
    try:
        macs, _ = thop.profile(model, inputs=[x], verbose=False)  # real size: no stride, no extrapolation
    finally:
        for h in hooks:
            h.remove()
    plugin_thop = sum(2 * thop.profile(copy.deepcopy(m), inputs=[inputs[m]], verbose=False)[0] for m in plugin)
    return {
        "thop_direct": 2 * macs / 1e9,
        "plugin_thop": plugin_thop / 1e9,
        "plugin_full": sum(count_flops(m, inputs[m]) for m in plugin) / 1e9,
        "plugin_layers": len(plugin),
    }
