"""The parser wrapper: plugin module names become usable in model YAMLs.

Ultralytics' `parse_model` injects input channels, width scaling and repeats only for modules on its private list.
Rather than re-implement it, the plugin wraps it: each plugin row is handed to the stock parser as a stand-in it
already understands (the row's `stand_in`: `Conv` for a channel-keeping or plain `(c1, c2)` layer, the stock block for
a CSP twin such as C2f_CoT), and the real module is built from the channels, repeats and activation the parser gave
the stand-in, then swapped in. A YAML that names no plugin module goes straight to the stock parser.

The walk of a YAML: the table's rows for its module names (`operators`), the row checks (`yaml_checks`), the
substitution and the stock parse, the build of each plugin row from its table row, a probe forward. Installed and
removed by the inventory (`yolo_attn.patches`).
"""

import copy
import inspect
from collections.abc import Callable

import torch
from torch import nn
from ultralytics.nn.modules import C3k2, Conv
from ultralytics.nn.modules.block import C3k
from ultralytics.utils import LOGGER
from ultralytics.utils.torch_utils import initialize_weights

from yolo_attn import compat, operators
from yolo_attn.yaml_checks import (
    LayerError,
    check_module_names,
    check_rows,
    check_sections,
    check_shape,
    literal_args,
    name_source,
    parser_names,
    yaml_name,
)


def row_operators(rows: list) -> dict:
    """Return YAML name -> table row (class loaded) of the plugin modules a YAML's rows name.

    Raises:
        LayerError: A row names a table module that cannot be used (its import failed, it is invalid), or a YOLO26
            module on a release without YOLO26.
    """
    import ultralytics.nn.tasks as tasks

    out = {}
    for i, row in enumerate(rows):
        name = row[2] if isinstance(row, (list, tuple)) and len(row) > 2 else None
        if not isinstance(name, str) or name in out:  # a malformed row: `check_shape` names it
            continue
        op = operators.find(name)
        if op is not None:
            try:
                out[name] = operators.load_row(name)
            except operators.RegistrationError as e:
                raise LayerError(f"layer {i} ({name}): {e}") from None
        elif name in compat.YOLO26_MODULES and name not in vars(tasks):
            raise LayerError(f"layer {i} ({name}): {compat.yolo26_message(f'this model ({name} head)')}")
    return out


def _stock_options(op: operators.Operator, options: list) -> list:
    """Return a twin's YAML options as the installed stock block's options (by name; see `compat.bind_to`)."""
    names = list(inspect.signature(op.cls).parameters)[op.n_supplied :]
    return compat.bind_to(op.stand_in, names, list(options))


def _substitute(rows: list, ops: dict) -> list:
    """Return the rows with every plugin module replaced by its stand-in."""
    out = []
    for f, n, name, args in rows:
        if name in ops:
            op = ops[name]
            if args[0] is None:  # the parser gives BatchNorm2d its input's channels and keeps them
                name, args = "nn.BatchNorm2d", []
            elif op.stand_in is Conv:
                name, args = "Conv", [args[0]]
            else:  # a twin: its options, as the installed stock block names them
                name, args = op.stand_in.__name__, [args[0], *_stock_options(op, args[1:])]
        out.append([f, n, name, args])
    return out


def _build(
    op: operators.Operator, stand_in: nn.Module, yaml_args: list, i: int, act: nn.Module, layer_scale: float | None
) -> tuple:
    """Build the plugin module for layer `i` from what the parser gave its stand-in.

    Args:
        op (operators.Operator): The table row of the plugin module (class loaded).
        stand_in (nn.Module): What the stock parser built for the row.
        yaml_args (list): The row's YAML arguments.
        i (int): Layer index.
        act (nn.Module): The YAML's `activation:` (Ultralytics' default when it has none).
        layer_scale (float | None): The YAML's top-level `layer_scale:`, for modules with that option.

    Returns:
        (nn.Module, list, int): The module (an `nn.Sequential` for repeats), its constructor arguments and repeats.
    """
    name, cls = op.name, op.cls
    if isinstance(stand_in, (Conv, nn.BatchNorm2d, nn.Sequential)):  # (c1, c2) layer; repeats: a Sequential
        first = stand_in[0] if isinstance(stand_in, nn.Sequential) else stand_in
        if isinstance(first, nn.BatchNorm2d):  # c2 null: the input's channels
            c1 = c2 = first.num_features
        else:
            c1, c2 = first.conv.in_channels, first.conv.out_channels
        repeats = len(stand_in) if isinstance(stand_in, nn.Sequential) else 1
        keeps = op.keeps_channels
        if keeps and c1 != c2 and c1 % 8:  # widths scale to multiples of 8: no c2 matches (the image at layer 0)
            where = "the input image" if i == 0 else "its input"
            raise LayerError(
                f"layer {i} ({name}): {name} keeps the channel count, but {where} has {c1} channels and every c2 "
                f"scales to a multiple of 8; expected {name} after a layer that sets the width (e.g. a first "
                f"[-1, 1, Conv, [64, 3, 2]]), or a YAML `channels:` that is a multiple of 8"
            )
        if keeps and c1 != c2:
            raise LayerError(
                f"layer {i} ({name}): {name} keeps the channel count, but its input has {c1} channels and its "
                f"argument c2={yaml_args[0]} becomes {c2} after width scaling; expected a c2 that scales to {c1} "
                f"(write the input layer's unscaled channel count)"
            )
        args = [c1, c2, *yaml_args[1:]]
        if layer_scale is not None and "layer_scale" in inspect.signature(cls).parameters:
            bound = inspect.signature(cls).bind(*args)  # a row's own layer_scale argument wins over the YAML's key
            bound.arguments.setdefault("layer_scale", layer_scale)
            bound.apply_defaults()
            args = list(bound.args)
    else:  # CSP twin of a stock block, stand-in is that block with the same arguments
        c1, c2, repeats = stand_in.cv1.conv.in_channels, stand_in.cv2.conv.out_channels, len(stand_in.m)
        args = [c1, c2, repeats, *yaml_args[1:]]
        if isinstance(stand_in, C3k2):  # the parser switches C3k blocks on for scales m/l/x
            args[3:4] = [isinstance(stand_in.m[0], C3k)]
        repeats = 1
    default_act = Conv.default_act
    Conv.default_act = act  # a YAML `activation:` holds only while this row is built
    try:
        blocks = [cls(*args) for _ in range(repeats)]
    except (ValueError, TypeError) as e:
        raise LayerError(f"layer {i} ({name}{args}): {e}") from None
    finally:
        Conv.default_act = default_act
    return (nn.Sequential(*blocks) if repeats > 1 else blocks[0]), args, repeats


def make_parse_model(original: Callable) -> Callable:
    """Return Ultralytics' `parse_model` with plugin modules; the stock parser unchanged for YAMLs without them."""
    default_act = Conv.default_act  # pristine: before 8.4.164 a YAML's `activation:` stays set after parse_model

    def parse_model(d, ch, verbose=True):
        """Ultralytics' `parse_model` (wrapped by yolo_attn: plugin modules in model YAMLs)."""
        try:
            return _parse_model(original, default_act, d, ch, verbose)
        except LayerError as e:  # name the file too: `yolo train` reports the message in one line
            if isinstance(d, dict) and d.get("yaml_file"):
                name_source(e, yaml_name(d))
            raise

    parse_model.__wrapped__ = original
    return parse_model


def _parse_model(original: Callable, default_act: nn.Module, d: dict, ch, verbose: bool = True):
    """Parse a model YAML dict as Ultralytics does, building plugin rows through stand-ins (see the module doc)."""
    import ultralytics.nn.tasks as tasks

    check_sections(d, yaml_name(d))
    rows = [*d["backbone"], *d["head"]]
    check_module_names(rows, vars(tasks))  # else a bare KeyError from the stock parser
    ops = row_operators(rows)
    if not ops:
        return original(d, ch, verbose)
    act = compat.yaml_activation(d.get("activation"), tasks, default_act)
    for i, row in enumerate(rows):
        check_shape(i, row)
    names = parser_names(d)
    rows = [[*row[:3], literal_args(row[3], names)] if row[2] in ops else row for row in rows]
    check_rows(rows, ops)
    plugin_rows = {i: row for i, row in enumerate(rows) if row[2] in ops}
    stand_in_rows = _substitute(rows, ops)
    nb = len(d["backbone"])
    stand_in_d = {**d, "backbone": stand_in_rows[:nb], "head": stand_in_rows[nb:]}
    previous_act = Conv.default_act
    Conv.default_act = default_act  # an earlier YAML's activation must not reach this model (releases < 8.4.164)
    try:
        try:
            model, save = original(copy.deepcopy(stand_in_d), ch, False)
        except LayerError:
            raise
        except Exception as e:  # a stock row the stock parser cannot build: name it, as for plugin rows
            raise _parser_error(original, e, stand_in_d, ch, rows) from e
        built = {}
        for i, (f, _, name, args) in plugin_rows.items():
            op = ops[name]
            module, module_args, repeats = _build(op, model[i], args, i, act, d.get("layer_scale"))
            _yolo_bn_settings(module)
            module.np = sum(p.numel() for p in module.parameters())
            module.i, module.f, module.type = i, f, f"{op.cls.__module__}.{name}"
            model[i] = module
            built[i] = (repeats, module_args)
    finally:
        Conv.default_act = previous_act
    if verbose:
        _summary(model, rows, built, d, names["depth"])
    _probe(model, ch, rows)
    return model, save


def _summary(model: nn.Sequential, rows: list, built: dict, d: dict, depth: float) -> None:
    """Log the model summary as Ultralytics' parser does (its format), plugin rows with their true arguments.

    The stock parser runs with verbose=False: its rows would describe the stand-ins. Stock rows show their YAML
    arguments (the parser's own rows show them after channel inference).
    """
    if d.get("activation"):
        LOGGER.info(f"activation: {d['activation']}")
    LOGGER.info(f"\n{'':>3}{'from':>20}{'n':>3}{'params':>10}  {'module':<45}{'arguments':<30}")
    for i, (m, (f, n, _, args)) in enumerate(zip(model, rows)):
        n = max(round(n * depth), 1) if isinstance(n, int) and n > 1 else n
        n, args = built.get(i, (n, args))
        t = getattr(m, "type", type(m).__name__)
        LOGGER.info(f"{i:>3}{f!s:>20}{n!s:>3}{getattr(m, 'np', 0):10.0f}  {t:<45}{args!s:<30}")


def _parser_error(original: Callable, e: Exception, d: dict, ch, rows: list) -> Exception:
    """Return a `LayerError` naming the row the stock parser failed on (or `e` if no single row is to blame).

    The parser is public only as `parse_model(d, ch, verbose)`, so the row is found through that: the shortest prefix
    of the rows that the parser cannot build ends with the culprit (bisection: a few extra parses, on errors only).
    """

    def fails(k: int) -> bool:
        prefix = {**d, "backbone": copy.deepcopy(rows_in[:k]), "head": []}
        try:
            original(prefix, ch, False)
        except Exception:
            return True
        return False

    rows_in = [*d["backbone"], *d["head"]]
    if fails(0):
        return e
    lo, hi = 1, len(rows_in)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fails(mid) else (mid + 1, hi)
    if not fails(lo):
        return e
    i = lo - 1
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
