"""Checks of plugin model YAMLs before Ultralytics' parser sees them, so a mistake is an error, not another model.

- Top-level keys (`check_plugin_yaml`): Ultralytics ignores keys it does not read, so `insrt:` for `insert:` builds the
  stock model and `layer_scal: 0.0` drops the identity start without a word. In a YAML that uses the plugin (written
  by reference, or in full with plugin modules) every top-level key must be one Ultralytics or the plugin reads, else
  an `UnknownKeyError` names the closest known key; a YAML without plugin modules keeps Ultralytics' behaviour.
- Rows naming plugin modules: a `LayerError` names the layer, the module and what was expected: the row's shape, its
  `from` indices, `c2`, and every option against the module's constructor annotations. The checks read the operator
  table's row of each module (`operators.Operator`: channel behaviour, arguments the parser supplies).
"""

import ast
import collections.abc
import contextlib
import difflib
import inspect
import sys
import types
import typing
from pathlib import Path

from yolo_attn import operators

# Every top-level model-YAML key Ultralytics 8.4 reads (parse_model, yaml_model_load, guess_model_task, the model
# classes) or writes into `model.yaml` (so a YAML dumped from a checkpoint passes), plus YOLOv5's `anchors`, which
# older YAMLs carry and Ultralytics ignores. Generous on purpose: rejecting a key that means something is worse
# than missing a typo.
ULTRALYTICS_KEYS = (
    "nc", "scales", "scale", "backbone", "head", "activation", "depth_multiple", "width_multiple", "kpt_shape",
    "end2end", "reg_max", "channels", "yaml_file", "inplace", "text_model", "anchors",
)  # fmt: skip
PLUGIN_KEYS = ("base", "insert", "replace", "layer_scale", "layer_map")


class UnknownKeyError(ValueError):
    """A top-level key of a plugin model YAML that neither Ultralytics nor the plugin reads."""


class MissingSectionError(UnknownKeyError, KeyError):
    """A model YAML without its `backbone:` or `head:` section (a `KeyError` too, as Ultralytics raises there)."""

    __str__ = ValueError.__str__  # the message as written, not KeyError's quoted repr


def closest(key: str, known: tuple = ULTRALYTICS_KEYS + PLUGIN_KEYS) -> str | None:
    """Return the known key closest to `key` in spelling, or None when none is close."""
    match = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    return match[0] if match else None


def check_keys(d: dict, source: object = "the model YAML") -> None:
    """Raise `UnknownKeyError` for the first top-level key of `d` that no one reads, naming the closest known one.

    Args:
        d (dict): A plugin model YAML dict (by reference, or with plugin modules), as loaded.
        source (object): What to call the YAML in the message (its file name).

    Raises:
        UnknownKeyError: The message names the key, the closest known spelling (if any) and the known keys.
    """
    known = ULTRALYTICS_KEYS + PLUGIN_KEYS
    for key in d:
        if key not in known:
            guess = closest(key, known)
            hint = f"did you mean {guess!r}? " if guess else ""
            raise UnknownKeyError(
                f"{source}: unknown top-level key {key!r}; {hint}Ultralytics would ignore it silently. Expected "
                f"one of {', '.join(PLUGIN_KEYS)} (yolo_attn) or {', '.join(ULTRALYTICS_KEYS)} (Ultralytics)"
            )


def yaml_name(d: dict, fallback: object = "the model YAML") -> str:
    """Return the file name a model YAML dict was read from (its `yaml_file`), else `fallback`'s, for messages."""
    return Path(str(d.get("yaml_file") or fallback)).name


def name_source(e: Exception, source: str) -> None:
    """Start `e`'s message with `source: ` unless it does already: `yolo train` reports the message alone."""
    if e.args and not str(e.args[0]).startswith(f"{source}: "):
        e.args = (f"{source}: {e.args[0]}", *e.args[1:])


def check_sections(d: dict, source: object = "the model YAML") -> None:
    """Raise `MissingSectionError` when a model YAML written out in full lacks `backbone:` or `head:`, naming the
    closest unknown key (a misspelled `bakbone:`). YAMLs written by reference (`base:`) have neither."""
    if not isinstance(d, dict) or "base" in d:
        return
    for section in ("backbone", "head"):
        if not isinstance(d.get(section), list):
            typo = next((k for k in d if k not in ULTRALYTICS_KEYS + PLUGIN_KEYS and closest(k, (section,))), None)
            hint = f"did you mean {section!r} for {typo!r}? " if typo else ""
            what = "is not a list of rows" if section in d else "is missing"
            raise MissingSectionError(
                f"{source}: the {section!r} section {what}; {hint}expected `{section}:` followed by rows "
                f"[from, repeats, module, args] (or `base:` to write the model by reference)"
            )


def uses_plugin(d: dict, modules: object) -> bool:
    """Return whether a loaded model YAML dict is a plugin YAML: it names a `base:` or a plugin module in a row."""
    rows = [row for part in ("backbone", "head") if isinstance(d.get(part), list) for row in d[part]]
    return "base" in d or any(
        isinstance(row, (list, tuple)) and len(row) > 2 and isinstance(row[2], str) and row[2] in modules
        for row in rows
    )


def check_plugin_yaml(d: dict, modules: object) -> None:
    """Check the top-level keys of `d` when it is a plugin YAML (see `uses_plugin`); leave stock YAMLs alone."""
    if isinstance(d, dict) and uses_plugin(d, modules):
        check_keys(d, yaml_name(d))


# ---- rows naming plugin modules -------------------------------------------------------------------------------------


class LayerError(ValueError):
    """A model YAML row that uses a plugin module wrongly; the message names the layer, module and expectation."""


class UnknownModuleError(LayerError, KeyError):
    """A row names a module neither Ultralytics nor the plugin has (a `KeyError` too, as Ultralytics' parser raises
    there)."""

    __str__ = ValueError.__str__  # the message as written, not KeyError's quoted repr


def check_module_names(rows: list, stock: dict) -> None:
    """Raise `UnknownModuleError` for the first row whose module neither Ultralytics nor the plugin has.

    Args:
        rows (list): The YAML's rows (malformed rows are left to `check_shape`).
        stock (dict): Ultralytics' parser namespace (`vars(ultralytics.nn.tasks)`), where it resolves module names.
    """
    for i, row in enumerate(rows):
        name = row[2] if isinstance(row, (list, tuple)) and len(row) > 2 else None
        if not isinstance(name, str) or name.startswith(("nn.", "torchvision.")) or name in stock:
            continue
        if operators.find(name) is not None:
            continue
        plugin = [op.name for op in operators.rows()]
        ultralytics = sorted(k for k, v in stock.items() if isinstance(v, type) and k[:1].isupper() and k not in plugin)
        guess = closest(name, tuple(plugin + ultralytics))
        hint = f"did you mean {guess!r}? " if guess else ""
        raise UnknownModuleError(
            f"layer {i} ({name}): unknown module {name!r}; {hint}expected an Ultralytics module (Conv, C2f, ...), "
            f"nn.<torch module>, or a yolo_attn module ({', '.join(plugin)}; `yolo-attn modules` lists them)"
        )


def yaml_signature(op: operators.Operator) -> str:
    """Describe the YAML arguments of a row's module: its constructor without what the parser supplies."""
    params = list(inspect.signature(op.cls).parameters.values())
    return "[c2" + "".join(f", {p}" for p in params[op.n_supplied :]) + "]"


def names_module(row, names: object) -> bool:
    """Return whether a YAML row names one of `names` (a malformed row may; `check_rows` then names it)."""
    return isinstance(row, (list, tuple)) and len(row) > 2 and isinstance(row[2], str) and row[2] in names


def parser_names(d: dict) -> dict:
    """Return the parser variables a string argument may name (`"nc"`, `"width"`, ...) with the parser's values."""
    depth, width, max_channels = d.get("depth_multiple", 1.0), d.get("width_multiple", 1.0), float("inf")
    scale = d.get("scale") or next(iter(d.get("scales") or {}), None)
    if d.get("scales"):
        depth, width, max_channels = d["scales"][scale]
    names = {"nc": d.get("nc"), "reg_max": d.get("reg_max", 16), "kpt_shape": d.get("kpt_shape", 1.0)}
    return {**names, "scale": scale, "depth": depth, "width": width, "max_channels": max_channels}


def literal_args(args: list, names: dict) -> list:
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


def _check_options(i: int, op: operators.Operator, args: list) -> None:
    """Raise a `LayerError` naming the option and expected type for a YAML option that does not fit its annotation."""
    name, cls = op.name, op.cls
    hints = _option_types(cls)
    params = list(inspect.signature(cls).parameters.values())[op.n_supplied :]
    for param, value in zip(params, args[1:]):
        annotation = hints.get(param.name, param.annotation)
        if not _fits(value, annotation):
            expected = inspect.formatannotation(annotation)
            raise LayerError(
                f"layer {i} ({name}): option {param.name}={value!r} is a {type(value).__name__}; expected {expected} "
                f"(arguments {yaml_signature(op)})"
            )


def check_shape(i: int, row) -> None:
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


def check_rows(rows: list, ops: dict) -> None:
    """Validate `from` indices of every row and the arguments of plugin rows before the parser sees them.

    Args:
        rows (list): The YAML's rows (backbone then head), each already checked by `check_shape`.
        ops (dict): YAML name -> `operators.Operator` (class loaded) of the plugin modules the rows name.
    """
    for i, (f, _, name, args) in enumerate(rows):
        first, last = (-1, 0) if i == 0 else (-i, i - 1)
        for x in f if isinstance(f, list) else [f]:
            if not isinstance(x, int) or not first <= x <= last:
                raise LayerError(
                    f"layer {i} ({name}): 'from' index {x!r} does not name an earlier layer; "
                    f"expected -1 (the previous layer), a negative offset down to {-max(i, 1)}, "
                    f"or a layer index 0..{max(i - 1, 0)}"
                )
        if name in ops:
            op = ops[name]
            expected = yaml_signature(op)
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
            if args[0] is None and (not op.keeps_channels or f != -1):
                raise LayerError(
                    f"layer {i} ({name}): c2 null (keep the input's channels) works for the channel-keeping modules "
                    f"({', '.join(operators.insertable())}) reading the previous layer (from -1); expected an int c2"
                )
            try:
                inspect.signature(op.cls).bind(*[0] * op.n_supplied, *args[1:])
            except TypeError as e:
                raise LayerError(
                    f"layer {i} ({name}): arguments {args} do not fit ({e}); expected {expected}"
                ) from None
            _check_options(i, op, args)
