"""Pretrained weights survive insertion: stock checkpoints load into plugin models layer by layer.

Ultralytics transfers weights by key (`model.{i}.…`) and shape, so a layer inserted after layer i shifts every later
key and everything after the first insertion is silently dropped. The plugin's `BaseModel.load` reads the model's
layer map (`model.yaml["layer_map"]`, see `yolo_attn.reference`) and, when the weights come from a model with the
stock layer count, hands Ultralytics' own `load` a view of that model whose layers sit at their new indices (the
inserted positions hold empty placeholders). Everything else is Ultralytics' logic unchanged: shape matching, the
class-count aware head transfer and the "Transferred N/M items" line, where N now counts every stock item.
"""

import copy
from collections import defaultdict
from typing import Callable, Optional

from torch import nn
from ultralytics.utils import LOGGER

from yolo_attn import operators
from yolo_attn.layer_scale import flatten_gammas
from yolo_attn.reference import layer_map_of


def remap(source: nn.Module, layer_map: list) -> Optional[nn.Module]:
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


def _untransferred(view: nn.Module, target: nn.Module, layer_map: list) -> dict:
    """Return stock layer index -> keys of the remapped source `view` that will not transfer into `target`."""
    dst = target.state_dict()
    out = defaultdict(list)
    for key, value in view.state_dict().items():
        parts = key.split(".")
        if parts[0] == "model" and parts[1].isdigit() and (key not in dst or dst[key].shape != value.shape):
            out[layer_map[int(parts[1])]].append(key)
    return out


def _report(view: nn.Module, target: nn.Module, layer_map: list) -> None:
    """Log which stock layers do not transfer: a CoT twin's replaced convs as info, anything else as one warning."""
    head = layer_map[-1]  # a new class count reshapes the head's last convs; Ultralytics handles that
    missing = {i: keys for i, keys in _untransferred(view, target, layer_map).items() if i != head}
    new_of = {stock: new for new, stock in enumerate(layer_map) if stock is not None}
    replaced = {
        i: keys
        for i, keys in missing.items()
        if type(target.model[new_of[i]]).__name__ in operators.twins().values() and all(".m." in k for k in keys)
    }
    if replaced:
        LOGGER.info(
            f"yolo_attn: stock layers {', '.join(map(str, replaced))} became CoT twins; their bottlenecks' 3x3 convs "
            f"({sum(map(len, replaced.values()))} items) are replaced by CoT and start fresh, the rest transferred"
        )
    unexpected = {i: keys for i, keys in missing.items() if i not in replaced}
    if unexpected:
        LOGGER.warning(
            f"yolo_attn: stock layers {', '.join(map(str, unexpected))} did not (fully) transfer "
            f"({sum(map(len, unexpected.values()))} items missing or of another shape): are the weights from another "
            f"scale or model?"
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
    if view is None:
        layers = getattr(source, "model", None)
        if verbose and layer_map and isinstance(layers, nn.Sequential) and len(layers) != len(self.model):
            LOGGER.warning(
                f"yolo_attn: the weights come from a model of {len(layers)} layers, neither this model's stock model "
                f"({sum(i is not None for i in layer_map)} layers) nor a variant of it; they transfer by key and shape "
                f"only, as in Ultralytics"
            )
        return original(self, weights, verbose)
    if verbose:
        _report(view, self, layer_map)
    return original(self, view, verbose)
