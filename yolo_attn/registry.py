"""Registration with Ultralytics: plugin module names become usable in model YAMLs.

Ultralytics' `parse_model` injects input channels, width scaling and repeats only for modules on its private list.
Rather than re-implement it, `register()` wraps it: each plugin row is handed to the stock parser as a stand-in it
already understands (`Conv` for the attention layers, the stock block for the CoT versions of C2f/C3k2), and the
real module is built from the channels, repeats and activation the parser gave the stand-in, then swapped in.
A YAML that names no plugin module goes straight to the stock parser.
"""

import inspect
import sys
from typing import Callable, Optional

import torch
from torch import nn
from ultralytics.nn.modules import C3k2, Conv
from ultralytics.nn.modules.block import C3k
from ultralytics.utils import LOGGER

from yolo_attn import transfer
from yolo_attn.lookup import find_shipped
from yolo_attn.reference import INSERTABLE, expand, is_reference, with_layer_map

_originals: dict[str, Callable] = {}  # patched Ultralytics function name -> original, non-empty while registered


class LayerError(ValueError):
    """A model YAML row that uses a plugin module wrongly; the message names the layer, module and expectation."""


def plugin_modules() -> dict[str, type]:
    """Return the YAML name → class of every module the plugin adds."""
    from yolo_attn.attn_conv import AttnConv
    from yolo_attn.coord_att import CoordAtt
    from yolo_attn.cot import C2f_CoT, C3k2_CoT, CoTAttention

    return {cls.__name__: cls for cls in (CoordAtt, CoTAttention, AttnConv, C2f_CoT, C3k2_CoT)}


def _stand_in(cls: type) -> type:
    """Return the stock module the parser builds in place of `cls`: its Ultralytics base block, else `Conv`."""
    return next((base for base in cls.__mro__[1:] if base.__module__.startswith("ultralytics.")), Conv)


def _n_supplied(cls: type) -> int:
    """Return how many leading constructor arguments the parser supplies: (c1, c2) or, for CSP blocks, (c1, c2, n)."""
    return 2 if _stand_in(cls) is Conv else 3


def _yaml_signature(cls: type) -> str:
    """Describe the YAML arguments of `cls`: its constructor without the channels/repeats the parser supplies."""
    params = list(inspect.signature(cls).parameters.values())
    return "[c2" + "".join(f", {p}" for p in params[_n_supplied(cls) :]) + "]"


def _check_rows(rows: list, modules: dict[str, type]) -> None:
    """Validate `from` indices of every row and the arguments of plugin rows before the parser sees them."""
    for i, (f, _, name, args) in enumerate(rows):
        first, last = (-1, 0) if i == 0 else (-i, i - 1)
        for x in [f] if isinstance(f, int) else f:
            if not isinstance(x, int) or not first <= x <= last:
                raise LayerError(
                    f"layer {i} ({name}): 'from' index {x!r} does not name an earlier layer; "
                    f"expected -1 (the previous layer), a negative offset down to {-max(i, 1)}, "
                    f"or a layer index 0..{max(i - 1, 0)}"
                )
        if name in modules:
            cls = modules[name]
            expected = _yaml_signature(cls)
            if not isinstance(args, list) or not args:
                raise LayerError(f"layer {i} ({name}): arguments {args!r} are missing c2; expected {expected}")
            if args[0] is None and (_stand_in(cls) is not Conv or f != -1):
                raise LayerError(
                    f"layer {i} ({name}): c2 null (keep the input's channels) works for the attention layers "
                    f"({', '.join(INSERTABLE)}) reading the previous layer (from -1); expected an int c2"
                )
            try:
                inspect.signature(cls).bind(*[0] * _n_supplied(cls), *args[1:])
            except TypeError as e:
                raise LayerError(
                    f"layer {i} ({name}): arguments {args} do not fit ({e}); expected {expected}"
                ) from None


def _substitute(rows: list, modules: dict[str, type]) -> list:
    """Return the rows with every plugin module replaced by its stand-in."""
    out = []
    for f, n, name, args in rows:
        if name in modules:
            stand_in = _stand_in(modules[name])
            if args[0] is None:  # the parser gives BatchNorm2d its input's channels and keeps them
                name, args = "nn.BatchNorm2d", []
            else:
                name, args = stand_in.__name__, [args[0]] if stand_in is Conv else list(args)
        out.append([f, n, name, args])
    return out


def _build(
    cls: type, stand_in: nn.Module, yaml_args: list, i: int, act: nn.Module, layer_scale: Optional[float]
) -> tuple[nn.Module, list, int]:
    """Build the plugin module for layer `i` from what the parser gave its stand-in.

    Args:
        cls (type): The plugin module.
        stand_in (nn.Module): What the stock parser built for the row.
        yaml_args (list): The row's YAML arguments.
        i (int): Layer index.
        act (nn.Module): The YAML's `activation:` (Ultralytics' default when it has none).
        layer_scale (float | None): The YAML's top-level `layer_scale:`, for the attention layers.

    Returns:
        (nn.Module, list, int): The module (an `nn.Sequential` for repeats), its constructor arguments and repeats.
    """
    name = cls.__name__
    if isinstance(stand_in, (Conv, nn.BatchNorm2d, nn.Sequential)):  # attention layer; repeats: a Sequential
        first = stand_in[0] if isinstance(stand_in, nn.Sequential) else stand_in
        if isinstance(first, nn.BatchNorm2d):  # c2 null: the input's channels
            c1 = c2 = first.num_features
        else:
            c1, c2 = first.conv.in_channels, first.conv.out_channels
        repeats = len(stand_in) if isinstance(stand_in, nn.Sequential) else 1
        if c1 != c2:
            raise LayerError(
                f"layer {i} ({name}): {name} keeps the channel count, but its input has {c1} channels and its "
                f"argument c2={yaml_args[0]} becomes {c2} after width scaling; expected a c2 that scales to {c1} "
                f"(write the input layer's unscaled channel count)"
            )
        args = [c1, c2, *yaml_args[1:]]
        if layer_scale is not None:  # a row's own layer_scale argument wins over the YAML's top-level key
            bound = inspect.signature(cls).bind(*args)
            bound.arguments.setdefault("layer_scale", layer_scale)
            bound.apply_defaults()
            args = list(bound.args)
    else:  # CoT version of a stock block, stand-in is that block with the same arguments
        c1, c2, repeats = stand_in.cv1.conv.in_channels, stand_in.cv2.conv.out_channels, len(stand_in.m)
        args = [c1, c2, repeats, *yaml_args[1:]]
        if isinstance(stand_in, C3k2):  # the parser switches C3k blocks on for scales m/l/x
            args[3:4] = [isinstance(stand_in.m[0], C3k)]
        repeats = 1
    default_act = Conv.default_act
    Conv.default_act = act  # a YAML `activation:` holds only while the stock parser runs
    try:
        blocks = [cls(*args) for _ in range(repeats)]
    except (ValueError, TypeError) as e:
        raise LayerError(f"layer {i} ({name}{args}): {e}") from None
    finally:
        Conv.default_act = default_act
    return (nn.Sequential(*blocks) if repeats > 1 else blocks[0]), args, repeats


def _parse_model(d, ch, verbose=True):
    """Ultralytics' `parse_model` with plugin modules; the stock parser unchanged for YAMLs without them."""
    modules = plugin_modules()
    rows = [*d["backbone"], *d["head"]]
    plugin_rows = {i: row for i, row in enumerate(rows) if row[2] in modules}
    if not plugin_rows:
        return _originals["parse_model"](d, ch, verbose)
    act = _yaml_activation(d.get("activation"))
    _check_rows(rows, modules)
    stand_in_rows = _substitute(rows, modules)
    nb = len(d["backbone"])
    d = {**d, "backbone": stand_in_rows[:nb], "head": stand_in_rows[nb:]}

    held = []  # the parser's summary rows, re-emitted with the plugin layers' true rows
    LOGGER.addFilter(held.append)  # list.append returns None: the record is held back, not emitted
    true_rows = {}
    try:
        model, save = _originals["parse_model"](d, ch, verbose)
        for i, (f, _, name, args) in plugin_rows.items():
            module, module_args, repeats = _build(modules[name], model[i], args, i, act, d.get("layer_scale"))
            module.np = sum(p.numel() for p in module.parameters())
            module.i, module.f, module.type = i, f, f"{modules[name].__module__}.{name}"
            model[i] = module
            lead = f"{i:>3}{f!s:>20}"  # how the parser's row for layer i starts
            true_rows[lead] = f"{lead}{repeats:>3}{module.np:10.0f}  {module.type:<45}{module_args!s:<30}"
    finally:
        LOGGER.removeFilter(held.append)
        for record in held:
            message = record.getMessage()
            record.msg = next((row for lead, row in true_rows.items() if message.startswith(lead)), message)
            record.args = None
            LOGGER.handle(record)
    return model, save


def _yaml_activation(spec: Optional[str]) -> nn.Module:
    """Return the module a YAML's top-level `activation:` names, resolved as the stock parser resolves it."""
    import ultralytics.nn.tasks as tasks

    if not spec:
        return Conv.default_act
    return tasks._SafeLoad.activation(spec) if tasks._SafeLoad.restricted() else eval(spec, vars(tasks))


def _yaml_model_load(path):
    """Ultralytics' `yaml_model_load` that expands YAMLs written by reference and records plugin layer maps."""
    d = _originals["yaml_model_load"](path)
    if is_reference(d):
        expanded = expand(d, _originals["yaml_model_load"], plugin_modules())
        d = {**expanded, "scale": d["scale"], "yaml_file": d["yaml_file"]}
    return with_layer_map(d)


def _check_file(file, *args, **kwargs):
    """Ultralytics' `check_file` that also finds the plugin's shipped YAMLs by bare name."""
    return _originals["check_file"](find_shipped(file) or file, *args, **kwargs)


def _rebind(name: str, old: Callable, new: Callable) -> None:
    """Point every loaded Ultralytics module's reference to function `old`, under `name`, at `new`."""
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("ultralytics") and getattr(module, name, None) is old:
            setattr(module, name, new)


def _wrapped(tasks, checks) -> tuple:
    """Return (name, wrapper, home module) of every Ultralytics function the plugin wraps."""
    return (
        ("parse_model", _parse_model, tasks),
        ("yaml_model_load", _yaml_model_load, tasks),
        ("check_file", _check_file, checks),
    )


def register() -> None:
    """Make plugin modules usable in model YAMLs and shipped YAMLs findable by name. Idempotent."""
    if _originals:
        return
    import ultralytics.nn.tasks as tasks
    import ultralytics.utils.checks as checks

    modules = plugin_modules()
    for name, wrapper, home in _wrapped(tasks, checks):
        _originals[name] = getattr(home, name)
        _rebind(name, _originals[name], wrapper)
    transfer.patch(tasks.BaseModel)
    for name, cls in modules.items():  # for code that resolves names in the parser's namespace (task guessing)
        setattr(tasks, name, cls)
    # Checkpoints hold pickled plugin modules; restricted (weights_only) loading needs them on its allow-list.
    torch.serialization.add_safe_globals(
        [
            obj
            for module in {sys.modules[cls.__module__] for cls in modules.values()}
            for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__module__ == module.__name__
        ]
    )


def unregister() -> None:
    """Undo `register()` and cancel a pending autoload, so Ultralytics behaves as if the plugin were absent."""
    from yolo_attn import autoload

    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, autoload._RegisterOnImport)]
    if not _originals:
        return
    import ultralytics.nn.tasks as tasks
    import ultralytics.utils.checks as checks

    for name, wrapper, _ in _wrapped(tasks, checks):
        _rebind(name, wrapper, _originals[name])
    transfer.unpatch(tasks.BaseModel)
    for name in plugin_modules():
        if hasattr(tasks, name):
            delattr(tasks, name)
    _originals.clear()
