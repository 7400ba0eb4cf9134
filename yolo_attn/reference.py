"""Insertion by reference: a model YAML that names a base model and lists changes, instead of repeating it.

```yaml
base: yolo26.yaml          # any model YAML that Ultralytics or the plugin finds by name
insert:                    # [after_layer, module, args]; indices are the base's own
  - [6, CoTAttention, []]
  - [8, CoordAtt, {reduction: 16}]
replace:                   # [layer, module]: the base row's args, the module's CoT twin
  - [4, C3k2_CoT]
```

`expand()` turns it into ordinary Ultralytics YAML before anything else reads it (task guessing reads the head):
each inserted layer reads its base layer's output, and every consumer of that layer (later rows, Concat and head
inputs, relative or absolute `from`) reads the last layer inserted after it instead. An inserted layer's `c2` is
written `null`: the plugin then gives it its input's channel count at every scale, which also works after rows
whose width no single unscaled number describes (a Concat).

Every plugin model carries a layer map, `layer_map: [base index or null per layer]` (null: a layer the plugin
inserted), relative to the stock model without plugin layers. Weight transfer reads it, and since it is part of
`model.yaml`, it survives checkpoints. YAMLs written out in full get it derived by `with_layer_map()`.
"""

import inspect
from collections.abc import Callable

from yolo_attn import operators
from yolo_attn.yaml_checks import closest

# The built-in rows of the operator table (`yolo_attn.operators`); rows added by other packages are read live through
# `operators.insertable()` and `operators.twins()`.
INSERTABLE = tuple(op.name for op in operators.BUILTINS if op.keeps_channels)  # channel-keeping: insert anywhere
TWINS = {op.twin_of: op.name for op in operators.BUILTINS if op.twin_of}  # stock block -> its CoT twin
OUTPUT_MODULES = {"Detect", "Segment", "Pose", "OBB", "Classify", "v10Detect", "Segment26", "Pose26", "OBB26"}
MULTI_OUTPUT_MODULES = {"CBLinear"}  # layers whose output is a list of feature maps, not one
REFERENCE_KEYS = ("base", "insert", "replace")


class InsertionError(ValueError):
    """A `base:`/`insert:`/`replace:` entry that cannot be expanded; the message names the entry."""


def is_reference(d: dict) -> bool:
    """Return True for a YAML dict written by reference (`base:` and no `backbone:`/`head:` of its own)."""
    return "base" in d and "backbone" not in d and "head" not in d


def _rows(d: dict) -> list:
    return [*d["backbone"], *d["head"]]


def _entry(kind: str, k: int, entry: object) -> str:
    return f"{kind}[{k}] {entry!r}"


def _check_index(kind: str, k: int, entry: list, i: object, rows: list, base: str) -> int:
    if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(rows):
        raise InsertionError(
            f"{_entry(kind, k, entry)}: layer {i!r} is not a layer of {base}; expected an index 0..{len(rows) - 1}"
        )
    return i


def _insert_args(k: int, entry: list, module: type, args: object) -> list:
    """Return the YAML args of an inserted layer: `[c2, *options]` with c2 null (keep the input's channels)."""
    if args is None or args == []:
        return [None]
    if isinstance(args, list):
        return args
    if isinstance(args, dict):  # options by name, c2 implied
        params = list(inspect.signature(module).parameters)[2:]  # after (c1, c2)
        unknown = sorted(set(args) - set(params))
        if unknown:
            raise InsertionError(
                f"{_entry('insert', k, entry)}: {module.__name__} has no option {', '.join(unknown)}; "
                f"expected some of {', '.join(params)}"
            )
        defaults = {n: p.default for n, p in inspect.signature(module).parameters.items()}
        last = max(params.index(name) for name in args) if args else -1
        return [None, *(args.get(name, defaults[name]) for name in params[: last + 1])]
    raise InsertionError(
        f"{_entry('insert', k, entry)}: args must be a list [c2, *options], [] or a mapping of options, got {args!r}"
    )


def _did_you_mean(name: object) -> str:
    guess = closest(name, tuple(op.name for op in operators.rows()))
    return f"did you mean {guess!r}? " if guess else ""


def expand(d: dict, load_base: Callable[[str], dict], modules: dict[str, type]) -> dict:
    """Expand a YAML dict written by reference into ordinary Ultralytics YAML with its layer map.

    Args:
        d (dict): The YAML dict with `base`, optional `insert` and `replace`, and any top-level overrides
            (`nc`, `kpt_shape`, `end2end`, `reg_max`, `scales`, `layer_scale`, ...).
        load_base (Callable[[str], dict]): Loads a model YAML dict by name, as Ultralytics finds model YAMLs.
        modules (dict[str, type]): The plugin's YAML name -> class.

    Returns:
        (dict): The expanded dict: the base's keys, overridden by the file's, with `backbone`, `head` and `layer_map`.

    Raises:
        InsertionError: For an entry that cannot be applied; the message names the entry and what was expected.
    """
    base_name = d["base"]
    try:
        base = load_base(str(base_name))
    except (FileNotFoundError, OSError) as e:
        raise InsertionError(
            f"base {base_name!r} was not found ({e}); expected a model YAML that Ultralytics or yolo_attn finds by "
            f"name (e.g. yolo26.yaml, yolo11-seg.yaml) or a path to one"
        ) from None
    rows, nb = _rows(base), len(base["backbone"])
    base_map = base.get("layer_map") or list(range(len(rows)))
    inserts: dict[int, list] = {}
    for k, entry in enumerate(d.get("insert") or []):
        if not isinstance(entry, list) or len(entry) not in (2, 3):
            raise InsertionError(f"{_entry('insert', k, entry)}: expected [after_layer, module, args]")
        i = _check_index("insert", k, entry, entry[0], rows, base_name)
        name = entry[1]
        if name not in modules or name not in operators.insertable():
            known = name in modules or (isinstance(name, str) and operators.get(name) is not None)
            raise InsertionError(
                f"{_entry('insert', k, entry)}: "
                + (
                    f"{name} does not keep its input's channel count, so it cannot be inserted by reference; "
                    if known
                    else f"unknown module {name!r}; " + _did_you_mean(name)
                )
                + f"expected one of {', '.join(operators.insertable())}"
            )
        if i == len(rows) - 1 or rows[i][2] in OUTPUT_MODULES:
            raise InsertionError(
                f"{_entry('insert', k, entry)}: layer {i} is the output layer ({rows[i][2]}) of {base_name}; "
                f"expected a backbone or neck layer before it"
            )
        if rows[i][2] in MULTI_OUTPUT_MODULES:
            raise InsertionError(
                f"{_entry('insert', k, entry)}: layer {i} ({rows[i][2]}) of {base_name} outputs a list of feature "
                f"maps; expected a layer with one feature map"
            )
        inserts.setdefault(i, []).append([-1, 1, name, _insert_args(k, entry, modules[name], entry[2:] and entry[2])])
    replaced: dict[int, str] = {}
    for k, entry in enumerate(d.get("replace") or []):
        if not isinstance(entry, list) or len(entry) != 2:
            raise InsertionError(f"{_entry('replace', k, entry)}: expected [layer, module]")
        i = _check_index("replace", k, entry, entry[0], rows, base_name)
        stock, twins = rows[i][2], operators.twins()
        if twins.get(stock) != entry[1]:
            pairs = ", ".join(f"{a} -> {b}" for a, b in twins.items())
            raise InsertionError(
                f"{_entry('replace', k, entry)}: layer {i} of {base_name} is {stock}"
                + (f", whose plugin twin is {twins[stock]}" if stock in twins else ", which has no plugin twin")
                + f"; replace supports {pairs}"
            )
        replaced[i] = entry[1]

    new_index, last_of, out, layer_map = {}, {}, [], []
    for i, (f, n, m, args) in enumerate(rows):
        new_index[i] = len(out)
        out.append([f, n, replaced.get(i, m), args])
        layer_map.append(base_map[i])
        for row in inserts.get(i, []):
            out.append(row)
            layer_map.append(None)
        last_of[i] = len(out) - 1

    def rewire(i: int, x: int) -> int:
        if i == 0 and x == -1:  # the image
            return -1
        target = last_of[i + x if x < 0 else x]
        return target - new_index[i] if x < 0 else target

    for i, (f, *_) in enumerate(rows):
        row = out[new_index[i]]
        row[0] = [rewire(i, x) for x in f] if isinstance(f, list) else rewire(i, f)
    head_start = last_of[nb - 1] + 1  # layers inserted after the last backbone row stay in the backbone

    expanded = {k: v for k, v in base.items() if k not in ("backbone", "head", "layer_map", "yaml_file", "scale")}
    expanded.update({k: v for k, v in d.items() if k not in REFERENCE_KEYS})
    expanded.update(base=base_name, backbone=out[:head_start], head=out[head_start:], layer_map=layer_map)
    return expanded


def with_layer_map(d: dict) -> dict:
    """Return `d` with a `layer_map` derived from its rows when it has plugin layers and none is recorded.

    A YAML written out in full is a stock model plus inserted channel-keeping layers (and CoT twins in place of stock
    blocks), so the stock index of every other row is its rank among them. A YAML without plugin rows is returned
    unchanged.
    """
    rows = _rows(d)
    insertable, twins = operators.insertable(), operators.twins().values()
    if "layer_map" in d or not any(row[2] in insertable or row[2] in twins for row in rows):
        return d
    layer_map, base_i = [], 0
    for row in rows:
        layer_map.append(None if row[2] in insertable else base_i)
        base_i += row[2] not in insertable
    return {**d, "layer_map": layer_map}


def layer_map_of(d: dict | None) -> list | None:
    """Return the layer map of a model YAML dict, derived if not recorded; None for a model without plugin layers."""
    if not isinstance(d, dict) or "backbone" not in d:
        return None
    return with_layer_map(d).get("layer_map")
