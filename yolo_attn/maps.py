"""Attention maps: where each attention layer of a YOLO model looks, as a 2-D map over the input image.

`attention_maps(model, source)` runs one forward pass with hooks and returns, per attention layer, a map at the
original image's resolution with values in [0, 1]. What a map means follows each operator's equations
(docs/maps.md):

- CoordAtt: the multiplicative weight the layer applies at each position, mean over channels of
  1 + γ_c (a_h[c, y] · a_w[c, x] − 1) — without LayerScale simply mean_c a_h[c, y] · a_w[c, x].
- CoTAttention (also inside C2f_CoT / C3k2_CoT / CoTBottleneck): the dynamic context as fused into the output, mean
  over channels of |γ_c · a_dyn[c] · K2[c, y, x]|: where the block's attention-aggregated context, weighted by the
  split-attention fusion, contributes.
- AttnConv: the context-aware weights of the local branch, mean over channels of |tanh(...)| (how strongly each
  position's values pass), times mean |γ| with LayerScale; a layer without a local branch (global_ratio 1) shows the
  global attention each key cell receives, summed over queries and averaged over heads, from the softmax weights
  the layer's own global branch computes (`attention_weights`, so `max_key_grid`'s wider stride is honoured).
- any other module in the plugin's operator table (a registered third-party operator): the relative change it makes
  to its input per position, ||y − x|| / ||x|| over channels, or ||y|| where the shapes differ; a module that defines
  `attention_map(x, y) -> (B, H, W) tensor` supplies its own.

Every map is brought to the letterboxed input size, the letterbox padding is cut off, the result is resized to the
original image and min-max normalised; a map with no contrast (an identity-start layer) becomes all zeros and is
flagged `uniform`. Each map also carries its raw range and relative contrast (max − min) / max(|min|, |max|); below
`FLAT_CONTRAST` (5 %) it is flagged `flat`, and `save_figure` says so, draws it on a colour scale widened to that
contrast (so it looks as flat as it is) and gives every panel a colour bar in the map's raw units, per panel or on
one scale shared by all panels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from yolo_attn.attn_conv import AttnConv
from yolo_attn.coord_att import CoordAtt
from yolo_attn.cot import RADIX, CoTAttention

__all__ = (
    "FLAT_CONTRAST",
    "AttentionMap",
    "attention_maps",
    "colour_scales",
    "default_imgsz",
    "load_model",
    "preprocess",
    "save_figure",
)

OURS = (CoordAtt, CoTAttention, AttnConv)  # operators with a map defined from their equations
# Relative contrast below which a map is called flat: a CoordAtt map spanning 0.2397-0.2410 (0.5 %) re-weights its
# input by at most half a percent, which min-max stretching would paint as strong attention.
FLAT_CONTRAST = 0.05


@dataclass
class AttentionMap:
    """One attention layer's map.

    Attributes:
        index (int): Index of the layer in the model (the YAML row, as Ultralytics numbers it).
        name (str): Module: its class for a top-level layer ("CoordAtt"), `Block.path` for an operator inside a block
            ("C2f_CoT.m.0.cv2"), the type name for a third-party layer.
        feature_size (tuple[int, int]): (h, w) of the feature map the layer worked on.
        map (np.ndarray): (H, W) float32 in [0, 1] at the original image's resolution, min-max normalised.
        raw (np.ndarray): (h, w) float32, the unnormalised map at feature resolution (letterbox padding included).
        uniform (bool): The raw map has no contrast (e.g. an identity-start layer); `map` is then all zeros.
        range (tuple[float, float]): (min, max) of the raw map over the image, what 0 and 1 of `map` stand for.
        contrast (float): Relative contrast (max − min) / max(|min|, |max|) of the map over the image (0 if all 0).
        flat (bool): `contrast` is below `FLAT_CONTRAST` (5 %): the layer treats the image almost uniformly, however
            much `map` (stretched to [0, 1]) varies.
    """

    index: int
    name: str
    feature_size: tuple
    map: np.ndarray
    raw: np.ndarray
    uniform: bool
    range: tuple
    contrast: float = 0.0
    flat: bool = False

    @property
    def key(self) -> tuple:
        """(index, name), unique within a model: `{m.key: m.map for m in maps}` gives a dict."""
        return self.index, self.name


# ----------------------------------------------------------------------------------------------------------- probes
# A probe registers forward hooks on one operator and, after the pass, turns what they caught into a (B, h, w) map.


def _catch(module: nn.Module, store: dict, key: str, hooks: list, inputs: bool = False) -> None:
    """Hook `module` so that its output (or its first input) lands in `store[key]`."""

    def hook(_, args, out):
        store[key] = args[0] if inputs else out

    hooks.append(module.register_forward_hook(hook))


def _gamma(module: nn.Module) -> torch.Tensor | None:
    """The LayerScale γ (C, 1, 1) of an operator, or None in its paper form."""
    gamma = getattr(module, "gamma", None)
    return None if gamma is None else gamma.view(-1, 1, 1)  # (C,) or, from older checkpoints, (C, 1, 1)


def _probe_coord_att(m: CoordAtt, hooks: list) -> Callable:
    s = {}
    _catch(m.attn_h, s, "h", hooks)
    _catch(m.attn_w, s, "w", hooks)

    def read() -> torch.Tensor:
        weight = s["h"].sigmoid() * s["w"].sigmoid()  # (B, C, H, W): a_h ⊗ a_w per channel
        g = _gamma(m)
        if g is not None:
            weight = 1 + g * (weight - 1)  # Y = X · (1 + γ (a_h a_w − 1)) in the identity-start form
        return weight.mean(1)

    return read


def _probe_cot(m: CoTAttention, hooks: list) -> Callable:
    s = {}
    _catch(m.dyn_act, s, "k2", hooks)
    _catch(m.se_expand, s, "z", hooks)

    def read() -> torch.Tensor:
        w_dyn = s["z"].unflatten(1, (-1, RADIX)).softmax(2)[:, :, 0]  # (B, C, 1, 1) fusion weight of K2
        g = _gamma(m)
        if g is not None:
            w_dyn = g * w_dyn
        return (w_dyn * s["k2"]).abs().mean(1)  # |dynamic-context term of Y|, mean over channels

    return read


def _probe_attn_conv(m: AttnConv, hooks: list) -> Callable:
    s = {}
    for i, group in enumerate(m.local_groups):
        _catch(group.gate, s, f"gate{i}", hooks)
    if not m.local_groups and m.global_group is not None:
        _catch(m.global_group, s, "t", hooks, inputs=True)

    def read() -> torch.Tensor:
        if m.local_groups:
            gates = [torch.tanh(s[f"gate{i}"] * g.scale) for i, g in enumerate(m.local_groups)]
            out = torch.cat(gates, 1).abs().mean(1)  # (B, H, W): |context-aware weights|
        else:
            out = _global_attention_received(m.global_group, s["t"])
        g = _gamma(m)
        return out if g is None else out * g.abs().mean()

    return read


def _global_attention_received(group: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """Attention each key cell receives from all queries, mean over heads, spread over its pixels: (B, H, W).

    The weights and the key stride are the global branch's own (`attention_weights`, `key_stride`), so the cells are
    the ones the layer attended to, `max_key_grid` included.
    """
    b, _, h, w = t.shape
    weights, grid = group.attention_weights(t)  # (B, g, HW, h'w'), (h', w')
    received = weights.sum(2).mean(1).reshape(b, *grid)  # (B, h', w')
    s = group.key_stride(h, w)
    sh, sw = (s, s) if isinstance(s, int) else s
    return received.repeat_interleave(sh, 1).repeat_interleave(sw, 2)[:, :h, :w]  # partial edge cells cut off


def _probe_generic(m: nn.Module, hooks: list) -> Callable:
    s = {}

    def hook(_, args, out):
        s["x"], s["y"] = (args[0] if args else None), out

    hooks.append(m.register_forward_hook(hook))

    def read() -> torch.Tensor:
        x, y = s["x"], s["y"]
        if hasattr(m, "attention_map"):
            return m.attention_map(x, y)
        y = y[0] if isinstance(y, (list, tuple)) else y
        if isinstance(x, torch.Tensor) and x.shape == y.shape:
            return (y - x).norm(dim=1) / x.norm(dim=1).clamp_min(1e-12)
        return y.norm(dim=1)

    return read


PROBES = {CoordAtt: _probe_coord_att, CoTAttention: _probe_cot, AttnConv: _probe_attn_conv}


def _probe(module: nn.Module, hooks: list) -> Callable:
    """The probe of one of our operators (or a subclass of one)."""
    return next(probe for cls, probe in PROBES.items() if isinstance(module, cls))(module, hooks)


def _type_name(layer: nn.Module) -> str:
    """Class name of a layer as its YAML row names it (Ultralytics' `.type` holds the dotted path)."""
    name = getattr(layer, "type", None)  # outside a YOLO model this is nn.Module's `type()` method
    return (name if isinstance(name, str) else type(layer).__name__).rsplit(".", 1)[-1]


def _registered_names() -> set:
    """YAML names of every operator in the plugin's table (built-in and registered third-party rows)."""
    from yolo_attn.operators import rows

    return {op.name for op in rows()}


def _layers(model: nn.Module) -> list:
    """(index, layer) of a model's top-level layers: Ultralytics' `model.model` rows, else its children."""
    seq = getattr(model, "model", None)
    if isinstance(seq, nn.Sequential):
        return [(getattr(m, "i", i), m) for i, m in enumerate(seq)]
    return list(enumerate(model.children()))


def _attach(model: nn.Module, include: Iterable[int | str], hooks: list) -> list:
    """Hook every attention layer; return (index, name, read) per map, in model order."""
    include = set(include)
    table = _registered_names() | {n for n in include if isinstance(n, str)}
    probes = []
    for i, layer in _layers(model):
        if isinstance(layer, OURS):
            probes.append((i, type(layer).__name__, _probe(layer, hooks)))
            continue
        inner = [(path, sub) for path, sub in layer.named_modules() if path and isinstance(sub, OURS)]
        if inner:  # C2f_CoT, C3k2_CoT, ...: one map per operator inside the block
            for path, sub in inner:
                probes.append((i, f"{_type_name(layer)}.{path}", _probe(sub, hooks)))
        elif _type_name(layer) in table or i in include:  # third-party operator: its own map or the generic one
            probes.append((i, _type_name(layer), _probe_generic(layer, hooks)))
    return probes


# ------------------------------------------------------------------------------------------------------ input side


def load_model(model: str | Path | nn.Module | object) -> nn.Module:
    """Return the `nn.Module` behind a YOLO object, a model, or a checkpoint / model YAML path."""
    from ultralytics.engine.model import Model  # YOLO objects (themselves nn.Modules) wrap the network

    if isinstance(model, (str, Path)):
        from ultralytics import YOLO

        model = YOLO(str(model))
    if isinstance(model, Model):
        return model.model
    if isinstance(model, nn.Module):
        return model
    raise TypeError(f"attention_maps: expected a YOLO object, an nn.Module or a path, got {type(model).__name__}")


def preprocess(source, imgsz: int = 640, stride: int = 32) -> tuple:
    """Letterbox an image as Ultralytics' predictor does (rectangular, padded to a multiple of `stride`).

    Args:
        source: Image path, HxWx3 uint8 BGR array (as `cv2.imread` gives) or an RGB float tensor in [0, 1], (3, H, W)
            or (1, 3, H, W), used as it is (no letterbox).
        imgsz (int): Longest side of the letterboxed image.
        stride (int): The model's largest stride.

    Returns:
        (tuple): (tensor (1, 3, H, W) float in [0, 1] RGB, original BGR image or None for a tensor, crop) where crop
            = (top, left, height, width) of the image inside the letterboxed tensor.
    """
    if isinstance(source, torch.Tensor):
        x = source if source.ndim == 4 else source[None]
        if x.ndim != 4 or x.shape[:2] != (1, 3):
            raise ValueError(f"attention_maps: a tensor source must be (3, H, W) or (1, 3, H, W), got {tuple(x.shape)}")
        return x.float(), None, (0, 0, x.shape[2], x.shape[3])
    if isinstance(source, (str, Path)):
        from ultralytics.utils.patches import imread  # Ultralytics' reader (non-ASCII paths too)

        image = imread(str(source))
        if image is None:
            raise FileNotFoundError(f"attention_maps: cannot read an image from {source}")
    else:
        image = np.asarray(source)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"attention_maps: expected an HxWx3 BGR image, got shape {image.shape}")
    from ultralytics.data.augment import LetterBox

    letterboxed = LetterBox(imgsz, auto=True, stride=stride)(image=image)
    h0, w0 = image.shape[:2]
    r = min(imgsz / h0, imgsz / w0)
    h, w = max(round(h0 * r), 1), max(round(w0 * r), 1)  # LetterBox's unpadded size; padding split as it does
    dh, dw = (letterboxed.shape[0] - h) / 2, (letterboxed.shape[1] - w) / 2
    top, left = int(round(dh - 0.1)), int(round(dw - 0.1))
    x = torch.from_numpy(np.ascontiguousarray(letterboxed[..., ::-1].transpose(2, 0, 1))).float()[None] / 255
    return x, image, (top, left, h, w)


def _to_image(raw: torch.Tensor, size: tuple, crop: tuple, out: tuple | None) -> np.ndarray:
    """Bring a (h, w) map to the letterboxed input size, cut the padding off, resize to the original image."""
    m = F.interpolate(raw[None, None].float(), size=size, mode="bilinear", align_corners=False)
    top, left, h, w = crop
    m = m[..., top : top + h, left : left + w]
    if out is not None and tuple(out) != (h, w):
        m = F.interpolate(m, size=out, mode="bilinear", align_corners=False)
    return m[0, 0].cpu().numpy().astype(np.float32)


def _normalise(m: np.ndarray) -> tuple:
    """Min-max normalise to [0, 1]; a map without contrast (relative range <= 1e-6) becomes zeros: (map, uniform)."""
    lo, hi = float(m.min()), float(m.max())
    if hi - lo <= 1e-6 * max(abs(lo), abs(hi)) or hi - lo < 1e-30:
        return np.zeros_like(m), True
    return (m - lo) / (hi - lo), False


def _contrast(lo: float, hi: float) -> float:
    """Relative contrast (hi − lo) / max(|lo|, |hi|) of a range; 0 for an all-zero map."""
    scale = max(abs(lo), abs(hi))
    return (hi - lo) / scale if scale > 1e-30 else 0.0


def _stride(model: nn.Module) -> int:
    """The model's largest stride, at least 32 (what Ultralytics' predictor pads to)."""
    s = getattr(model, "stride", None)
    return max(int(s.max()) if isinstance(s, torch.Tensor) else int(s or 32), 32)


# ------------------------------------------------------------------------------------------------------ public API


def default_imgsz(model: nn.Module) -> int:
    """The image size a model was trained at: its checkpoint's `train_args` imgsz, else 640 (a model YAML's default).

    Ultralytics attaches the checkpoint's training arguments to the network as `args` (a dict; during training a
    namespace); a model built from a YAML carries the default 640 there, a bare `nn.Module` nothing.
    """
    args = getattr(model, "args", None)
    imgsz = args.get("imgsz") if isinstance(args, dict) else getattr(args, "imgsz", None)
    if isinstance(imgsz, (list, tuple)) and imgsz:  # imgsz=[h, w]: the longest side, as the letterbox takes it
        imgsz = max(imgsz)
    return int(imgsz) if isinstance(imgsz, (int, float)) and imgsz > 0 else 640


def attention_maps(
    model, source, imgsz: int | None = None, include: Iterable[int | str] = (), original_size: bool = True
) -> list:
    """Return the attention map of every attention layer of `model` for one image.

    One forward pass in eval mode without gradients, with forward hooks on the attention layers; afterwards the
    hooks are removed and every module's train/eval mode restored, so the model is left exactly as it was.

    Args:
        model: A YOLO object, an `nn.Module` (e.g. `YOLO(...).model`) or a checkpoint / model YAML path.
        source: An image path, an HxWx3 uint8 BGR array (as `cv2.imread` gives), or an RGB float tensor in [0, 1] of
            shape (3, H, W) or (1, 3, H, W) with H, W multiples of the model's stride (used as it is).
        imgsz (int | None): Longest side of the letterboxed input, as Ultralytics' `imgsz` for predict; None takes
            the size the checkpoint was trained at (`default_imgsz`: 640 for a model built from a YAML).
        include (Iterable[int | str]): Further layers to draw with the generic map, by index or by class name (e.g.
            "C2PSA"); the plugin's operators and every operator in its table are drawn anyway.
        original_size (bool): Maps at the original image size (True) or at the letterboxed image without padding.

    Returns:
        (list[AttentionMap]): One entry per attention layer (per operator inside a CoT block), in model order.
    """
    net = load_model(model)
    p = next(net.parameters(), None)
    device, dtype = (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)
    x, image, crop = preprocess(source, imgsz or default_imgsz(net), _stride(net))
    out_size = image.shape[:2] if (image is not None and original_size) else None

    hooks: list = []
    modes = {m: m.training for m in net.modules()}
    try:
        probes = _attach(net, include, hooks)
        net.eval()
        with torch.no_grad():
            net(x.to(device, dtype))
            raws = [(i, name, read()[0].float()) for i, name, read in probes]
    finally:
        for h in hooks:
            h.remove()
        for m, training in modes.items():
            m.training = training

    maps = []
    for i, name, raw in raws:
        full = _to_image(raw, x.shape[2:], crop, out_size)
        norm, flat = _normalise(full)
        lo, hi = float(full.min()), float(full.max())
        contrast = _contrast(lo, hi)
        maps.append(
            AttentionMap(
                i, name, tuple(raw.shape), norm, raw.cpu().numpy(), flat, (lo, hi), contrast, contrast < FLAT_CONTRAST
            )
        )
    return maps


def colour_scales(maps: list, shared: bool = False) -> list:
    """The raw values the colour map's ends stand for in each panel: (vmin, vmax) per map.

    Per panel (default) a map spans its own range, except a flat one (`AttentionMap.flat`), whose scale is widened
    about its middle to `FLAT_CONTRAST` of its magnitude, so its colours vary no more than the layer's effect does.
    With `shared` every panel gets one absolute scale, from the lowest minimum to the highest maximum of all maps
    (values of different operators are then compared as numbers, whatever they measure).

    Args:
        maps (list[AttentionMap]): The maps to draw.
        shared (bool): One scale across all panels.

    Returns:
        (list[tuple[float, float]]): (vmin, vmax) per map, vmin < vmax.
    """
    if shared and maps:
        lo, hi = min(m.range[0] for m in maps), max(m.range[1] for m in maps)
        return [_widened(lo, hi, 1e-6)] * len(maps)
    return [_widened(*m.range, FLAT_CONTRAST if m.flat else 1e-6) for m in maps]


def _widened(lo: float, hi: float, contrast: float) -> tuple:
    """(lo, hi) widened about its middle to at least `contrast` of its magnitude (and never empty)."""
    span = max(hi - lo, contrast * max(abs(lo), abs(hi)), 1e-12)
    mid = (lo + hi) / 2
    return (mid - span / 2, mid + span / 2) if span > hi - lo else (lo, hi)


def save_figure(
    maps: list,
    image: np.ndarray,
    path: str | Path,
    title: str = "",
    panel: float = 2.6,
    shared_scale: bool = False,
) -> Path:
    """Draw the image and one heatmap overlay per map, each with a colour bar in the map's raw units, into a PNG.

    Each panel is titled `index module h×w`, then the map's raw min–max and relative contrast, with `FLAT` when the
    contrast is below `FLAT_CONTRAST`; its colour bar marks the map's min and max (the scales are `colour_scales`).
    matplotlib's global backend is left alone.

    Args:
        maps (list[AttentionMap]): Maps at the image's resolution (as `attention_maps` returns them).
        image (np.ndarray): The original image, HxWx3 BGR uint8.
        path (str | Path): PNG to write.
        title (str): Figure title (e.g. the image name).
        panel (float): Panel size in inches.
        shared_scale (bool): One absolute colour scale across all panels instead of one per panel.

    Returns:
        (Path): The written file.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rgb = image[..., ::-1]
    n = len(maps) + 1
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    aspect = image.shape[0] / image.shape[1]
    size = (panel * 1.25 * cols, panel * aspect * rows + 0.7 * rows + (0.4 if title else 0))
    fig = Figure(figsize=size, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    if title:
        fig.suptitle(title + ("  (one colour scale for all panels)" if shared_scale else ""), fontsize=10)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    axes[0].imshow(rgb)
    axes[0].set_title("image", fontsize=9)
    for ax, m, (vmin, vmax) in zip(axes[1:], maps, colour_scales(maps, shared_scale)):
        lo, hi = m.range
        ax.imshow(rgb)
        drawn = ax.imshow(lo + m.map * (hi - lo), cmap="viridis", alpha=0.6, vmin=vmin, vmax=vmax)
        bar = fig.colorbar(drawn, ax=ax, fraction=0.046, pad=0.02)
        bar.ax.tick_params(labelsize=6)
        for v in (lo, hi):  # where this map's own values lie on the (possibly wider) scale
            bar.ax.axhline(v, color="red", linewidth=1)
        h, w = m.feature_size
        flat = f" FLAT (<{FLAT_CONTRAST:.0%})" if m.flat else ""
        ax.set_title(
            f"{m.index} {m.name} {h}×{w}\n{lo:.4g}–{hi:.4g}, contrast {_percent(m.contrast)}{flat}",
            fontsize=7,
            color="firebrick" if m.flat else "black",
        )
    path = Path(path)
    fig.savefig(path)
    return path


def _percent(v: float) -> str:
    """A contrast as a percentage with two significant digits (0.53 %, 12 %, 100 %)."""
    return f"{v * 100:.2g} %" if v < 0.1 else f"{v:.0%}".replace("%", " %")
