"""The parser wrapper: plugin module names become usable in model YAMLs.

Ultralytics' `parse_model` injects input channels, width scaling and repeats only for modules on its private list.
Rather than re-implement it, the plugin wraps it: each plugin row is handed to the stock parser as a stand-in it
already understands (`Conv` for a channel-keeping or plain `(c1, c2)` layer, the stock block for a CSP twin such as
C2f_CoT), and the real module is built from the channels, repeats and activation the parser gave the stand-in, then
swapped in. A YAML that names no plugin module goes straight to the stock parser.

The wrappers here are installed and removed by `yolo_attn.patches` (the inventory); the row checks live in
`yolo_attn.yaml_checks`, the operator table in `yolo_attn.operators`. `register`, `unregister`, `LayerError` and
`plugin_modules` stay importable from here.
"""

import copy
import inspect
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from ultralytics.nn.modules import C3k2, Conv
from ultralytics.nn.modules.block import C3k
from ultralytics.utils import LOGGER, USER_CONFIG_DIR
from ultralytics.utils.torch_utils import initialize_weights

from yolo_attn import compat, operators
from yolo_attn.lookup import find_shipped
from yolo_attn.patches import register, unregister  # noqa: F401  (the public names' old home)
from yolo_attn.reference import InsertionError, expand, is_reference, with_layer_map
from yolo_attn.synth_data import ensure_cls_dataset, ensure_yaml_dataset
from yolo_attn.yaml_checks import (  # noqa: F401  (re-exported: tests and users import them from here)
    LayerError,
    _check_rows,
    _check_shape,
    _is_plugin_row,
    _literal_args,
    _n_supplied,
    _parser_names,
    _stand_in,
    check_plugin_yaml,
)


def plugin_modules() -> dict:
    """Return the YAML name -> class of the built-in modules and of every other table row already loaded."""
    return {**operators.builtin_modules(), **operators.loaded()}


def _row_modules(rows: list) -> dict:
    """Return YAML name -> class of the plugin modules a YAML's rows name (entry points resolved on a miss).

    Raises:
        LayerError: A row names a table module that cannot be used (its import failed, it is invalid), or a YOLO26
            module on a release without YOLO26.
    """
    import ultralytics.nn.tasks as tasks

    out = {}
    stock = vars(tasks)
    for i, row in enumerate(rows):
        name = row[2] if isinstance(row, (list, tuple)) and len(row) > 2 else None
        if not isinstance(name, str) or name in out or name.startswith(("nn.", "torchvision.")):
            continue
        op = operators.get(name) if name in operators._table or name not in stock else None
        if op is not None:
            try:
                out[name] = operators.load(name)
            except operators.RegistrationError as e:
                raise LayerError(f"layer {i} ({name}): {e}") from None
        elif name in compat.YOLO26_MODULES and name not in stock:
            raise LayerError(f"layer {i} ({name}): {compat.yolo26_message(f'this model ({name} head)')}")
    return out


def _stock_options(cls: type, stand_in: type, options: list) -> list:
    """Return a twin's YAML options as the installed stock block's options (by name; see `compat.bind_to`)."""
    names = list(inspect.signature(cls).parameters)[3:]
    return compat.bind_to(stand_in, names, list(options))


def _substitute(rows: list, modules: dict) -> list:
    """Return the rows with every plugin module replaced by its stand-in."""
    out = []
    for f, n, name, args in rows:
        if name in modules:
            cls = modules[name]
            stand_in = _stand_in(cls)
            if args[0] is None:  # the parser gives BatchNorm2d its input's channels and keeps them
                name, args = "nn.BatchNorm2d", []
            elif stand_in is Conv:
                name, args = "Conv", [args[0]]
            else:  # a twin: its options, as the installed stock block names them
                name, args = stand_in.__name__, [args[0], *_stock_options(cls, stand_in, args[1:])]
        out.append([f, n, name, args])
    return out


def _build(cls: type, stand_in: nn.Module, yaml_args: list, i: int, act: nn.Module, layer_scale: float | None) -> tuple:
    """Build the plugin module for layer `i` from what the parser gave its stand-in.

    Args:
        cls (type): The plugin module.
        stand_in (nn.Module): What the stock parser built for the row.
        yaml_args (list): The row's YAML arguments.
        i (int): Layer index.
        act (nn.Module): The YAML's `activation:` (Ultralytics' default when it has none).
        layer_scale (float | None): The YAML's top-level `layer_scale:`, for modules with that option.

    Returns:
        (nn.Module, list, int): The module (an `nn.Sequential` for repeats), its constructor arguments and repeats.
    """
    name = cls.__name__
    if isinstance(stand_in, (Conv, nn.BatchNorm2d, nn.Sequential)):  # (c1, c2) layer; repeats: a Sequential
        first = stand_in[0] if isinstance(stand_in, nn.Sequential) else stand_in
        if isinstance(first, nn.BatchNorm2d):  # c2 null: the input's channels
            c1 = c2 = first.num_features
        else:
            c1, c2 = first.conv.in_channels, first.conv.out_channels
        repeats = len(stand_in) if isinstance(stand_in, nn.Sequential) else 1
        keeps = operators.get(name) is not None and operators.get(name).keeps_channels
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
        return _parse_model(original, default_act, d, ch, verbose)

    parse_model.__wrapped__ = original
    return parse_model


def _parse_model(original: Callable, default_act: nn.Module, d: dict, ch, verbose: bool = True):
    """Parse a model YAML dict as Ultralytics does, building plugin rows through stand-ins (see the module doc)."""
    import ultralytics.nn.tasks as tasks

    rows = [*d["backbone"], *d["head"]]
    modules = _row_modules(rows)
    if not modules:
        return original(d, ch, verbose)
    act = compat.yaml_activation(d.get("activation"), tasks, default_act)
    for i, row in enumerate(rows):
        _check_shape(i, row)
    names = _parser_names(d)
    rows = [[*row[:3], _literal_args(row[3], names)] if row[2] in modules else row for row in rows]
    _check_rows(rows, modules)
    plugin_rows = {i: row for i, row in enumerate(rows) if row[2] in modules}
    stand_in_rows = _substitute(rows, modules)
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
            module, module_args, repeats = _build(modules[name], model[i], args, i, act, d.get("layer_scale"))
            _yolo_bn_settings(module)
            module.np = sum(p.numel() for p in module.parameters())
            module.i, module.f, module.type = i, f, f"{modules[name].__module__}.{name}"
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


def make_yaml_model_load(original: Callable) -> Callable:
    """Return Ultralytics' `yaml_model_load` that expands YAMLs written by reference and records plugin layer maps."""

    def yaml_model_load(path):
        """Ultralytics' `yaml_model_load` (wrapped by yolo_attn: `base:`/`insert:`/`replace:` and layer maps)."""
        d = original(path)
        rows = [row for part in ("backbone", "head") if isinstance(d.get(part), list) for row in d[part]]
        check_plugin_yaml(d, _row_modules(rows))  # a misspelled key (`insrt:`) would silently build another model
        if is_reference(d):
            if compat.is_yolo26_name(d["base"]) and not compat.has_yolo26():
                raise InsertionError(compat.yolo26_message(f"base {d['base']!r} of {Path(str(path)).name}"))
            expanded = expand(d, yaml_model_load, _insertable_modules(d))  # a base may itself be a plugin YAML
            d = {**expanded, "scale": d["scale"], "yaml_file": d["yaml_file"]}
        return with_layer_map(d)

    yaml_model_load.__wrapped__ = original
    return yaml_model_load


def _insertable_modules(d: dict) -> dict:
    """Return YAML name -> class for the modules a by-reference YAML inserts or swaps in (resolved from the table)."""
    names = {e[1] for key in ("insert", "replace") for e in (d.get(key) or []) if isinstance(e, list) and len(e) > 1}
    out = {}
    for name in names:
        if isinstance(name, str) and operators.get(name) is not None:
            try:
                out[name] = operators.load(name)
            except operators.RegistrationError as e:
                raise InsertionError(str(e)) from None
    return out


def make_check_cls_dataset(original: Callable) -> Callable:
    """Return Ultralytics' `check_cls_dataset` that builds, or rebuilds when damaged, a generated classification set."""

    def check_cls_dataset(dataset, *args, **kwargs):
        """Ultralytics' `check_cls_dataset` (wrapped by yolo_attn: generated sets built offline and checked)."""
        ensure_cls_dataset(dataset)
        return original(dataset, *args, **kwargs)

    check_cls_dataset.__wrapped__ = original
    return check_cls_dataset


def make_check_file(original: Callable) -> Callable:
    """Return Ultralytics' `check_file` that also finds the plugin's shipped YAMLs by bare name."""

    def check_file(file, *args, **kwargs):
        """Ultralytics' `check_file` (wrapped by yolo_attn: shipped YAMLs by bare name, generated sets checked)."""
        return ensure_yaml_dataset(original(find_shipped(file) or file, *args, **kwargs))

    check_file.__wrapped__ = original
    return check_file


def make_check_font(original: Callable) -> Callable:
    """Return Ultralytics' `check_font`, except that with `YOLO_OFFLINE` set it makes no download attempt.

    The stock function ignores `YOLO_OFFLINE` and tries a 3 s request for a missing font, about 10 times per training
    run. Offline, a font that is already there (Ultralytics' config dir, matplotlib's font list) is returned as usual;
    otherwise None, on which Ultralytics' plotting uses PIL's built-in font, as after a failed download.
    """

    def check_font(font: str = "Arial.ttf"):
        """Ultralytics' `check_font` (wrapped by yolo_attn: no download attempt under YOLO_OFFLINE)."""
        if not compat.env_bool("YOLO_OFFLINE"):
            return original(font)
        from matplotlib import font_manager

        file = USER_CONFIG_DIR / Path(font).name
        if file.exists():
            return file
        fonts = font_manager.fontManager.ttflist
        return next((f.fname for f in fonts if font in f.fname and Path(f.fname).exists()), None)

    check_font.__wrapped__ = original
    return check_font
