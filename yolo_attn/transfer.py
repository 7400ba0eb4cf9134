"""Pretrained weights survive insertion: stock checkpoints load into plugin models layer by layer.

Ultralytics transfers weights by key (`model.{i}.…`) and shape, so a layer inserted after layer i shifts every later
key and everything after the first insertion is silently dropped. The plugin's `BaseModel.load` reads the model's
layer map (`model.yaml["layer_map"]`, see `yolo_attn.reference`) and, when the weights come from a model with the
stock layer count, hands Ultralytics' own `load` a view of that model whose layers sit at their new indices (the
inserted positions hold empty placeholders). Everything else is Ultralytics' logic unchanged: shape matching, the
class-count aware head transfer and the "Transferred N/M items" line, where N now counts every stock item.
"""

import copy
from collections.abc import Callable

from torch import nn
from ultralytics.utils import LOGGER

from yolo_attn import operators
from yolo_attn.layer_scale import flatten_gammas
from yolo_attn.reference import layer_map_of


def remap(source: nn.Module, layer_map: list) -> nn.Module | None:
    """Return a shallow view of `source` with its stock layers at the indices `layer_map` gives them, or None.

    The source is a stock model (its layer count is the stock one) or a plugin model with a layer map of its own
    (another variant of the same stock model: the stock layers they share transfer).

    Args:
        source (nn.Module): An Ultralytics model.
        layer_map (list): Stock index of each layer of the new model, None for an inserted layer.

    Returns:
        (nn.Module | None): The view (sharing the source's layers), or None when the source's layers already sit at the
            new indices or cannot be placed, so Ultralytics' plain key matching applies.
    """
    layers = getattr(source, "model", None)
    if not isinstance(layers, nn.Sequential):
        return None
    source_map = layer_map_of(getattr(source, "yaml", None)) or list(range(len(layers)))
    n_stock = sum(i is not None for i in layer_map)
    if len(source_map) != len(layers) or sum(i is not None for i in source_map) != n_stock or source_map == layer_map:
        return None
    index_of = {stock: i for i, stock in enumerate(source_map) if stock is not None}
    view = copy.copy(source)
    view._modules = dict(source._modules)  # the copy must not re-seat the source's own `model`
    view.model = nn.Sequential(*(nn.Identity() if i is None else layers[index_of[i]] for i in layer_map))
    return view


def fresh_items(source: nn.Module, target: nn.Module) -> list:
    """Return the keys of `target` that Ultralytics' `load` left without a source value: they start fresh.

    Call after the load (it may rebuild the head's class branch at the source width). These are the items missing
    from its "Transferred N/M items" count: a key transfers when the source has it with the same shape, and the first
    conv is filled from the source filters at another input channel count.
    """
    src, dst = source.state_dict(), target.state_dict()
    fresh = [k for k, v in dst.items() if k not in src or src[k].shape != v.shape]
    first = "model.0.conv.weight"  # Ultralytics' first-conv rule (BaseModel.load)
    if first in fresh and first in src and src[first].shape[2:] == dst[first].shape[2:]:
        fresh.remove(first)
    return fresh


def _nc(model: nn.Module) -> object:
    return getattr(model, "nc", None) or (getattr(model, "yaml", None) or {}).get("nc")


def _layers(keys: list, layer_map: list | None = None) -> str:
    """Return the layer indices of `keys` (`model.{i}.…`), or their stock indices through `layer_map`."""
    layers = dict.fromkeys(int(k.split(".")[1]) for k in keys)
    return ", ".join(str(i if layer_map is None else layer_map[i]) for i in layers)


def _report(source: nn.Module, target: nn.Module, layer_map: list) -> None:
    """After a load, log what starts fresh and why, in counts that add up to Ultralytics' "Transferred N/M" line.

    Info: the inserted layers (new), the CoT twins' replaced convs, the head's class outputs when the class count
    differs (naming them). Warning: stock items of any other layer (weights from another scale or model).
    """
    dst = target.state_dict()
    fresh = fresh_items(source, target)
    if not fresh:
        return
    head, nc, source_nc = len(layer_map) - 1, _nc(target), _nc(source)
    inserted, twins, classes, unexpected = [], [], [], []
    for key in fresh:
        i = int(key.split(".")[1])
        if layer_map[i] is None:
            inserted.append(key)
        elif type(target.model[i]).__name__ in operators.twins().values() and ".m." in key:
            twins.append(key)
        elif i == head and nc != source_nc and dst[key].ndim and dst[key].shape[0] == nc:
            classes.append(key)
        else:
            unexpected.append(key)
    parts = []
    if inserted:
        parts.append(f"{len(inserted)} of the inserted layers {_layers(inserted)} (new)")
    if twins:
        parts.append(
            f"{len(twins)} of the CoT twins of stock layers {_layers(twins, layer_map)} (bottlenecks with CoT)"
        )
    if classes:
        parts.append(
            f"{len(classes)} of the head's class outputs (the weights have nc={source_nc}, this model nc={nc}): "
            f"{', '.join(classes)}"
        )
    if unexpected:
        parts.append(f"{len(unexpected)} of stock layers {_layers(unexpected, layer_map)} (of another shape)")
    n, m = len(dst) - len(fresh), len(dst)
    LOGGER.info(f"yolo_attn: {n}/{m} items transferred; the other {len(fresh)} start fresh: {'; '.join(parts)}")
    if unexpected:
        LOGGER.warning(
            f"yolo_attn: stock layers {_layers(unexpected, layer_map)} did not (fully) transfer ({len(unexpected)} "
            "items of another shape): are the weights from another scale or model?"
        )


def make_load(original: Callable) -> Callable:
    """Return Ultralytics' `BaseModel.load` that also transfers stock weights into plugin models across insertions."""

    def load(self, weights, verbose: bool = True):
        """Ultralytics' `BaseModel.load` (wrapped by yolo_attn: stock weights follow the layer map)."""
        return _load(original, self, weights, verbose)

    load.__wrapped__ = original
    return load


def _load(original: Callable, self: nn.Module, weights, verbose: bool = True):
    """Hand Ultralytics' `load` a view of the weights with their stock layers at this model's indices."""
    layer_map = layer_map_of(getattr(self, "yaml", None))
    source = (weights.get("ema") or weights["model"]) if isinstance(weights, dict) else weights
    if isinstance(source, nn.Module):
        flatten_gammas(source)  # checkpoints before 0.2 hold LayerScale γ as (C, 1, 1); the modules now hold (C,)
    view = remap(source, layer_map) if layer_map else None
    layers = getattr(source, "model", None)
    aligned = isinstance(layers, nn.Sequential) and len(layers) == len(self.model)  # source layers at our indices
    if view is None and verbose and layer_map and isinstance(layers, nn.Sequential) and not aligned:
        LOGGER.warning(
            f"yolo_attn: the weights come from a model of {len(layers)} layers, neither this model's stock model "
            f"({sum(i is not None for i in layer_map)} layers) nor a variant of it; they transfer by key and shape "
            f"only, as in Ultralytics"
        )
    result = original(self, weights if view is None else view, verbose)
    if verbose and layer_map and (view is not None or aligned):
        _report(source if view is None else view, self, layer_map)
    return result
