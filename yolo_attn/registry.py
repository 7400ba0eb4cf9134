"""Registration with Ultralytics: plugin module names become usable in model YAMLs.

Ultralytics' `parse_model` injects input channels, width scaling and repeats only for modules on its private list.
Rather than re-implement it, `register()` wraps it: each plugin row is handed to the stock parser as a stand-in it
already understands (`Conv` for the attention layers, the stock block for the CoT versions of C2f/C3k2), and the
real module is built from the channels, repeats and activation the parser gave the stand-in, then swapped in.
A YAML that names no plugin module goes straight to the stock parser.
"""

import ast
import collections.abc
import contextlib
import copy
import inspect
import sys
import types
import typing
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn
from ultralytics.nn.modules import C3k2, Conv
from ultralytics.nn.modules.block import C3k
from ultralytics.utils import LOGGER, USER_CONFIG_DIR, env_bool
from ultralytics.utils.torch_utils import initialize_weights

from yolo_attn import autoload, transfer
from yolo_attn.lookup import find_shipped
from yolo_attn.reference import INSERTABLE, expand, is_reference, with_layer_map
from yolo_attn.synth_data import build_offline
from yolo_attn.yamlkeys import check_plugin_yaml

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


def _is_plugin_row(row, modules: dict[str, type]) -> bool:
    """Return whether a YAML row names a plugin module (a malformed row may; `_check_rows` then names it)."""
    return isinstance(row, (list, tuple)) and len(row) > 2 and isinstance(row[2], str) and row[2] in modules


def _parser_names(d: dict) -> dict:
    """Return the parser variables a string argument may name (`"nc"`, `"width"`, ...) with the parser's values."""
    depth, width, max_channels = d.get("depth_multiple", 1.0), d.get("width_multiple", 1.0), float("inf")
    scale = d.get("scale") or next(iter(d.get("scales") or {}), None)
    if d.get("scales"):
        depth, width, max_channels = d["scales"][scale]
    names = {"nc": d.get("nc"), "reg_max": d.get("reg_max", 16), "kpt_shape": d.get("kpt_shape", 1.0)}
    return {**names, "scale": scale, "depth": depth, "width": width, "max_channels": max_channels}


def _literal_args(args: list, names: dict) -> list:
    """Return a copy of a plugin row's arguments with strings evaluated as the stock parser evaluates them.

    The parser turns a string into the value of a parser variable it names (`"nc"`) or its Python literal (`"None"`,
    `"False"`, `"16"`); a string that is neither stays a string (and then fails the type check with a named error).
    """
    out = list(args)
    for j, a in enumerate(out):
        if isinstance(a, str):
            with contextlib.suppress(ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                out[j] = names[a] if a in names else ast.literal_eval(a)
    return out


def _fits(value, annotation) -> bool:
    """Return whether a YAML value fits a constructor annotation, with the strictness of a typed signature.

    bool takes only booleans; int takes ints but not booleans; float takes ints and floats; `Optional`/unions take any
    member; list/tuple/Sequence take YAML lists (and literal tuples), element types checked. Unannotated: anything.
    """
    if annotation in (inspect.Parameter.empty, typing.Any):
        return True
    if annotation is None or annotation is type(None):
        return value is None
    origin, members = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or (sys.version_info >= (3, 10) and origin is types.UnionType):
        return any(_fits(value, member) for member in members)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    container = origin or annotation
    if isinstance(container, type) and issubclass(container, (list, tuple, collections.abc.Sequence)):
        if container is not str and isinstance(value, (list, tuple)):
            return all(_fits(v, members[0]) for v in value) if members else True
        return False
    return isinstance(value, annotation) if isinstance(annotation, type) else True


def _option_types(cls: type) -> dict:
    """Return the constructor annotations of `cls` (postponed ones evaluated); empty if they cannot be evaluated."""
    try:
        return typing.get_type_hints(cls.__init__)
    except Exception:  # e.g. `int | None` written under `from __future__ import annotations` on Python 3.9
        return {}


def _check_options(i: int, name: str, cls: type, args: list) -> None:
    """Raise a `LayerError` naming the option and expected type for a YAML option that does not fit its annotation."""
    hints = _option_types(cls)
    params = list(inspect.signature(cls).parameters.values())[_n_supplied(cls) :]
    for param, value in zip(params, args[1:]):
        annotation = hints.get(param.name, param.annotation)
        if not _fits(value, annotation):
            expected = inspect.formatannotation(annotation)
            raise LayerError(
                f"layer {i} ({name}): option {param.name}={value!r} is a {type(value).__name__}; expected {expected} "
                f"(arguments {_yaml_signature(cls)})"
            )


def _check_shape(i: int, row) -> None:
    """Raise a `LayerError` naming row `i` unless it is `[from, repeats, module, [args]]`, repeats a positive int."""
    if not isinstance(row, (list, tuple)) or len(row) != 4 or not isinstance(row[2], str):
        raise LayerError(
            f"layer {i}: row {row!r} is malformed; expected [from, repeats, module, args], "
            "e.g. [-1, 1, CoordAtt, [256]]"
        )
    _, n, name, args = row
    if not isinstance(args, list):
        raise LayerError(
            f"layer {i} ({name}): arguments {args!r} are not a list; expected [from, repeats, module, args]"
        )
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise LayerError(f"layer {i} ({name}): repeats {n!r} is not a positive int; expected 1, 2, 3, ...")


def _check_rows(rows: list, modules: dict[str, type]) -> None:
    """Validate `from` indices of every row and the arguments of plugin rows before the parser sees them."""
    for i, (f, _, name, args) in enumerate(rows):
        first, last = (-1, 0) if i == 0 else (-i, i - 1)
        for x in f if isinstance(f, list) else [f]:
            if not isinstance(x, int) or not first <= x <= last:
                raise LayerError(
                    f"layer {i} ({name}): 'from' index {x!r} does not name an earlier layer; "
                    f"expected -1 (the previous layer), a negative offset down to {-max(i, 1)}, "
                    f"or a layer index 0..{max(i - 1, 0)}"
                )
        if name in modules:
            cls = modules[name]
            expected = _yaml_signature(cls)
            if not isinstance(f, int):
                raise LayerError(
                    f"layer {i} ({name}): 'from' {f!r} lists several layers, but {name} takes one input; expected "
                    f"one index such as -1 (to combine layers, add a Concat row first and let {name} read it)"
                )
            if not args:
                raise LayerError(f"layer {i} ({name}): arguments {args!r} are missing c2; expected {expected}")
            if args[0] is not None and (isinstance(args[0], bool) or not isinstance(args[0], int) or args[0] < 1):
                raise LayerError(
                    f"layer {i} ({name}): c2 {args[0]!r} is not a positive int; expected {expected} with c2 the "
                    f"unscaled output channels"
                )
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
            _check_options(i, name, cls, args)


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
        if c1 != c2 and c1 % 8:  # widths scale to multiples of 8: no c2 matches (the image at layer 0)
            where = "the input image" if i == 0 else "its input"
            raise LayerError(
                f"layer {i} ({name}): {name} keeps the channel count, but {where} has {c1} channels and every c2 "
                f"scales to a multiple of 8; expected {name} after a layer that sets the width (e.g. a first "
                f"[-1, 1, Conv, [64, 3, 2]]), or a YAML `channels:` that is a multiple of 8"
            )
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
    if not any(_is_plugin_row(row, modules) for row in rows):
        return _originals["parse_model"](d, ch, verbose)
    act = _yaml_activation(d.get("activation"))
    for i, row in enumerate(rows):
        _check_shape(i, row)
    names = _parser_names(d)
    rows = [[*row[:3], _literal_args(row[3], names)] if row[2] in modules else row for row in rows]
    _check_rows(rows, modules)
    plugin_rows = {i: row for i, row in enumerate(rows) if row[2] in modules}
    stand_in_rows = _substitute(rows, modules)
    nb = len(d["backbone"])
    d = {**d, "backbone": stand_in_rows[:nb], "head": stand_in_rows[nb:]}

    held = []  # the parser's summary rows, re-emitted with the plugin layers' true rows
    LOGGER.addFilter(held.append)  # list.append returns None: the record is held back, not emitted
    true_rows = {}
    try:
        try:
            model, save = _originals["parse_model"](d, ch, verbose)
        except LayerError:
            raise
        except Exception as e:  # a stock row the stock parser cannot build: name it, as for plugin rows
            raise _parser_error(e, rows) from e
        for i, (f, _, name, args) in plugin_rows.items():
            module, module_args, repeats = _build(modules[name], model[i], args, i, act, d.get("layer_scale"))
            _yolo_bn_settings(module)
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
    _probe(model, ch, rows)
    return model, save


def _parser_error(e: Exception, rows: list) -> Exception:
    """Return a `LayerError` naming the row the stock parser was at when it raised `e` (or `e` if it was not in it)."""
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code is not _originals["parse_model"].__code__:
        tb = tb.tb_next
    i = tb.tb_frame.f_locals.get("i") if tb is not None else None
    if not isinstance(i, int) or not 0 <= i < len(rows):
        return e
    return LayerError(
        f"layer {i} ({rows[i][2]}): Ultralytics' parser cannot build row {rows[i]}: {type(e).__name__}: {e}"
    )


def _probe(model: nn.Sequential, ch: int, rows: list, size: int = 128) -> None:
    """Run the built layers once on a small blank image and name the row of a layer that cannot run on its inputs.

    A wrong `from` index or argument in a stock row of a plugin YAML (a Concat of maps of different sizes, a Conv
    kernel written as a list) would otherwise fail deep inside PyTorch during Ultralytics' stride computation.
    The output layer runs as a copy: a Detect head caches its anchors per input shape, and the strides are not set
    yet, so the real head would keep zero strides for the probe's shape and later predict all-zero boxes on it.
    """
    training, y, x = model.training, [], torch.zeros(1, ch, size, size)
    model.eval()
    try:
        with torch.no_grad():
            for m in model:
                if m.f != -1:
                    x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
                try:
                    x = (copy.deepcopy(m) if m is model[-1] else m)(x)
                except Exception as e:
                    shapes = [tuple(t.shape) for t in (x if isinstance(x, list) else [x]) if hasattr(t, "shape")]
                    raise LayerError(
                        f"layer {m.i} ({rows[m.i][2]}): row {rows[m.i]} cannot run on its inputs {shapes} (from "
                        f"{m.f}) on a {size}x{size} image: {type(e).__name__}: {e}"
                    ) from e
                y.append(x)
    finally:
        model.train(training)


def _yolo_bn_settings(module: nn.Module) -> None:
    """Give BatchNorm2d subclasses in `module` the eps/momentum Ultralytics gives every plain BatchNorm2d.

    `initialize_weights` sets them only where `type(m) is nn.BatchNorm2d`; running it on a probe keeps Ultralytics
    the source of the values. Only attributes change, so state dicts and older checkpoints load as before.
    """
    probe = nn.BatchNorm2d(1)
    initialize_weights(probe)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d) and type(m) is not nn.BatchNorm2d:
            m.eps, m.momentum = probe.eps, probe.momentum


def _yaml_activation(spec: Optional[str]) -> nn.Module:
    """Return the module a YAML's top-level `activation:` names, resolved as the stock parser resolves it."""
    import ultralytics.nn.tasks as tasks

    if not spec:
        return Conv.default_act
    return tasks._SafeLoad.activation(spec) if tasks._SafeLoad.restricted() else eval(spec, vars(tasks))


def _yaml_model_load(path):
    """Ultralytics' `yaml_model_load` that expands YAMLs written by reference and records plugin layer maps."""
    d = _originals["yaml_model_load"](path)
    check_plugin_yaml(d, plugin_modules())  # a misspelled key (`insrt:`) would silently build another model
    if is_reference(d):
        expanded = expand(d, _yaml_model_load, plugin_modules())  # a base may itself be a plugin YAML
        d = {**expanded, "scale": d["scale"], "yaml_file": d["yaml_file"]}
    return with_layer_map(d)


def _download(url, dir=None, *args, **kwargs):
    """Ultralytics' `download` that builds the plugin's classification data sets offline instead of fetching them."""
    if not build_offline(url, dir):
        return _originals["download"](url, dir, *args, **kwargs)


def _check_file(file, *args, **kwargs):
    """Ultralytics' `check_file` that also finds the plugin's shipped YAMLs by bare name."""
    return _originals["check_file"](find_shipped(file) or file, *args, **kwargs)


def _check_font(font: str = "Arial.ttf"):
    """Ultralytics' `check_font`, except that with `YOLO_OFFLINE` set it makes no download attempt.

    The stock function ignores `YOLO_OFFLINE` and tries a 3 s request for a missing font, about 10 times per training
    run. Offline, a font that is already there (Ultralytics' config dir, matplotlib's font list) is returned as usual;
    otherwise None, on which Ultralytics' plotting uses PIL's built-in font, as after a failed download.
    """
    if not env_bool("YOLO_OFFLINE"):
        return _originals["check_font"](font)
    from matplotlib import font_manager

    file = USER_CONFIG_DIR / Path(font).name
    if file.exists():
        return file
    return next((f.fname for f in font_manager.fontManager.ttflist if font in f.fname and Path(f.fname).exists()), None)


def _rebind(name: str, old: Callable, new: Callable) -> None:
    """Point every loaded Ultralytics module's reference to function `old`, under `name`, at `new`."""
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("ultralytics") and getattr(module, name, None) is old:
            setattr(module, name, new)


def _wrapped() -> tuple:
    """Return (name, wrapper, home module) of every Ultralytics function the plugin wraps."""
    import ultralytics.nn.tasks as tasks
    import ultralytics.utils.checks as checks
    import ultralytics.utils.downloads as downloads

    return (
        ("parse_model", _parse_model, tasks),
        ("yaml_model_load", _yaml_model_load, tasks),
        ("check_file", _check_file, checks),
        ("check_font", _check_font, checks),
        ("download", _download, downloads),
    )


def register() -> None:
    """Make plugin modules usable in model YAMLs, shipped YAMLs findable by name, font look-ups offline. Idempotent."""
    if _originals:
        return
    import ultralytics.nn.tasks as tasks

    modules = plugin_modules()
    for name, wrapper, home in _wrapped():
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
    autoload.deactivate()
    if not _originals:
        return
    import ultralytics.nn.tasks as tasks

    for name, wrapper, _ in _wrapped():
        _rebind(name, wrapper, _originals[name])
    transfer.unpatch(tasks.BaseModel)
    for name in plugin_modules():
        if hasattr(tasks, name):
            delattr(tasks, name)
    _originals.clear()
