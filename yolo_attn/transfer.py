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

from yolo_attn.reference import TWINS, layer_map_of

_original_load: list[Callable] = []  # BaseModel.load before patching; non-empty while patched


def remap(source: nn.Module, layer_map: list) -> Optional[nn.Module]:
    """Return a shallow view of `source` with its layers at the indices `layer_map` gives them, or None.

    Args:
        source (nn.Module): An Ultralytics model whose `model` holds the stock layers.
        layer_map (list): Stock index of each layer of the new model, None for an inserted layer.

    Returns:
        (nn.Module | None): The view (sharing the source's layers), or None when `source` has not the stock layer count
            or the map is the identity, so Ultralytics' plain key matching applies.
    """
    layers = getattr(source, "model", None)
    n_stock = sum(i is not None for i in layer_map)
    if not isinstance(layers, nn.Sequential) or len(layers) != n_stock or layer_map == list(range(n_stock)):
        return None
    view = copy.copy(source)
    view._modules = dict(source._modules)  # the copy must not re-seat the source's own `model`
    view.model = nn.Sequential(*(nn.Identity() if i is None else layers[i] for i in layer_map))
    return view


def _untransferred(source: nn.Module, target: nn.Module, layer_map: list) -> dict:
    """Return stock layer index -> keys of `source` that will not transfer into `target` (missing or reshaped)."""
    new_of = {stock: new for new, stock in enumerate(layer_map) if stock is not None}
    dst = target.state_dict()
    out = defaultdict(list)
    for key, value in source.state_dict().items():
        parts = key.split(".")
        if parts[0] != "model" or not parts[1].isdigit():
            continue
        stock = int(parts[1])
        new_key = ".".join(["model", str(new_of.get(stock, -1)), *parts[2:]])
        if new_key not in dst or dst[new_key].shape != value.shape:
            out[stock].append(key)
    return out


def _report(source: nn.Module, target: nn.Module, layer_map: list) -> None:
    """Log which stock layers do not transfer: a CoT twin's replaced convs as info, anything else as one warning."""
    head = len(source.model) - 1  # a new class count reshapes the head's last convs; Ultralytics handles that
    missing = {i: keys for i, keys in _untransferred(source, target, layer_map).items() if i != head}
    new_of = {stock: new for new, stock in enumerate(layer_map) if stock is not None}
    twin = {i for i in missing if type(target.model[new_of[i]]).__name__ in TWINS.values()}
    replaced = {i: keys for i, keys in missing.items() if i in twin and all(".m." in k for k in keys)}
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


def load(self, weights, verbose: bool = True):
    """Ultralytics' `BaseModel.load` that also transfers stock weights into plugin models across inserted layers."""
    layer_map = layer_map_of(getattr(self, "yaml", None))
    source = (weights.get("ema") or weights["model"]) if isinstance(weights, dict) else weights
    view = remap(source, layer_map) if layer_map else None
    if view is None:
        return _original_load[0](self, weights, verbose)
    if verbose:
        _report(source, self, layer_map)
    return _original_load[0](self, view, verbose)


def patch(base_model: type) -> None:
    """Install the remapping `load` on Ultralytics' `BaseModel`. Idempotent."""
    if not _original_load:
        _original_load.append(base_model.load)
        base_model.load = load


def unpatch(base_model: type) -> None:
    """Restore Ultralytics' own `BaseModel.load`."""
    if _original_load:
        base_model.load = _original_load.pop()
