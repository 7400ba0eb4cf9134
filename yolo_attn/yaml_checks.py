"""Checks of model YAML rows that name plugin modules, before Ultralytics' parser sees them.

Each check raises a `LayerError` naming the layer, the module and what was expected: the row's shape, its `from`
indices, `c2`, and every option against the module's constructor annotations.
"""

import ast
import collections.abc
import contextlib
import inspect
import sys
import types
import typing

from ultralytics.nn.modules import Conv

from yolo_attn import operators


class LayerError(ValueError):
    """A model YAML row that uses a plugin module wrongly; the message names the layer, module and expectation."""


def _stand_in(cls: type) -> type:
    """Return the stock module the parser builds in place of `cls`: its Ultralytics base block, else `Conv`."""
    return next((base for base in cls.__mro__[1:] if base.__module__.startswith("ultralytics.")), Conv)


def _keeps_channels(name: str) -> bool:
    """Return whether the operator table says module `name` keeps its input's channel count."""
    op = operators.get(name)
    return bool(op and op.keeps_channels)


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
    except Exception:  # a hint naming what its module cannot resolve: the unevaluated annotations are checked as given
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
            if args[0] is None and (not _keeps_channels(name) or f != -1):
                raise LayerError(
                    f"layer {i} ({name}): c2 null (keep the input's channels) works for the channel-keeping modules "
                    f"({', '.join(operators.insertable())}) reading the previous layer (from -1); expected an int c2"
                )
            try:
                inspect.signature(cls).bind(*[0] * _n_supplied(cls), *args[1:])
            except TypeError as e:
                raise LayerError(
                    f"layer {i} ({name}): arguments {args} do not fit ({e}); expected {expected}"
                ) from None
            _check_options(i, name, cls, args)
