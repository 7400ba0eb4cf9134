"""The operator table: every module a model YAML may name beyond Ultralytics' own, built-in or from other packages.

One row per YAML name is the one description of how a module is built: where the class lives (imported only when
needed), where the row comes from, whether the module keeps its input's channel count (then it may be inserted by
reference with `[]` args and `c2` left out), which stock block it is a CSP twin of (then `replace:` may swap it in),
and, derived once when the class is loaded, the stock module the parser builds in its place (`stand_in`) and how many
leading constructor arguments the parser supplies (`n_supplied`). The checks, the substitution and the build receive
the row itself, so a module registered under another YAML name is treated exactly as under its own.

The built-ins are rows like any other; other packages add rows with `register_module(cls)` in-process, or with an
entry point in the group `yolo_attn.modules` (`SEBlock = "se_pkg.blocks:SEBlock"`), which is scanned only when a YAML
or checkpoint names a module the table does not hold, so start-up costs nothing. Exports, insertion, twins, the
safe-load allow-list and the benchmark read it. Whoever must act when a row becomes usable or is removed (the parser
namespace, torch's allow-list) subscribes (`subscribe`); the table calls no one by name.

Only the standard library is imported at module level: `yolo_attn/__init__.py` reads `BUILTINS` at every start-up.
"""

import sys

TYPE_CHECKING = False  # `typing`, `collections` and `contextlib` would cost ~10 ms at every interpreter start
if TYPE_CHECKING:
    from collections.abc import Callable

GROUP = "yolo_attn.modules"  # entry-point group: name = YAML name, value = "package.module:Class"
BUILTIN = "yolo_attn (built-in)"


class RegistrationError(ValueError):
    """A module that cannot be added to the table; the message names the module and the package it came from."""


class Operator:
    """One row of the table.

    Args:
        name (str): The YAML name.
        target (str): "package.module:Class", imported on first use.
        origin (str): Where the row comes from (built-in, a distribution's entry point, `register_module`).
        keeps_channels (bool | None): Output channels == input channels (None: inferred when loaded).
        twin_of (str | None): The stock block this is a CSP twin of (None: inferred from its bases when loaded).
    """

    def __init__(
        self, name: str, target: str, origin: str, keeps_channels: bool | None = None, twin_of: str | None = None
    ):
        self.name, self.target, self.origin = name, target, origin
        self.keeps_channels, self.twin_of = keeps_channels, twin_of
        self.cls: type | None = None
        self.error: str | None = None  # why the row cannot be used; raised when a YAML or checkpoint names it
        # Derived once when the class is loaded (`load`, `register_module`):
        self.stand_in: type | None = None  # the stock module the parser builds in its place (`Conv` or the twin)
        self.n_supplied = 2  # leading constructor arguments the parser supplies: (c1, c2), or (c1, c2, n) for a twin

    @property
    def module(self) -> str:
        """The Python module that defines the class."""
        return self.target.partition(":")[0]

    def __repr__(self) -> str:
        return f"Operator({self.name!r}, {self.target!r}, {self.origin!r})"


BUILTINS = (  # the built-in rows; their classes' import paths are pickled in checkpoints (an interface)
    Operator("CoordAtt", "yolo_attn.coord_att:CoordAtt", BUILTIN, keeps_channels=True),
    Operator("CoTAttention", "yolo_attn.cot:CoTAttention", BUILTIN, keeps_channels=True),
    Operator("AttnConv", "yolo_attn.attn_conv:AttnConv", BUILTIN, keeps_channels=True),
    Operator("C2f_CoT", "yolo_attn.cot:C2f_CoT", BUILTIN, keeps_channels=False, twin_of="C2f"),
    Operator("C3k2_CoT", "yolo_attn.cot:C3k2_CoT", BUILTIN, keeps_channels=False, twin_of="C3k2"),
)
EXPORTS = {"CoTBottleneck": "yolo_attn.cot"}  # public classes that are parts of operators, not YAML names

_table: dict = {op.name: op for op in BUILTINS}  # YAML name -> Operator
_scanned: list = []  # non-empty once the entry points were read (one bookkeeping style: module-level containers)
_listeners: list = []  # called with (row, usable) when a row becomes usable (True) or is removed (False)


def rows() -> list:
    """Return every row the table holds now (entry points only once something asked for an unknown name)."""
    return list(_table.values())


def holds(name: object) -> bool:
    """Return whether the table holds a row named `name` now (no entry-point scan)."""
    return isinstance(name, str) and name in _table


def get(name: str) -> Operator | None:
    """Return the row of a YAML name, reading the entry points once on a miss; None for a name no row has."""
    if name not in _table and isinstance(name, str):
        scan_entry_points()
    return _table.get(name)


def find(name: object) -> Operator | None:
    """Return the row a model YAML's module name refers to, or None (Ultralytics' own modules, unknown names).

    A row the table holds wins (after registration the built-ins are in Ultralytics' namespace too); a name Ultralytics
    does not define is looked up among the entry points (scanned once per process); `nn.*`/`torchvision.*` are stock.
    """
    if not isinstance(name, str) or name.startswith(("nn.", "torchvision.")):
        return None
    if name in _table:
        return _table[name]
    import ultralytics.nn.tasks as tasks

    return None if name in vars(tasks) else get(name)


def scan_entry_points() -> None:
    """Add a row for each entry point of the group `yolo_attn.modules` (once per process; imports nothing of the
    packages)."""
    if _scanned:
        return
    from importlib.metadata import entry_points

    _scanned.append(True)
    for ep in entry_points(group=GROUP):
        dist = getattr(ep, "dist", None)
        origin = f"{dist.name} {dist.version} (entry point)" if dist is not None else f"entry point {ep.value}"
        if ep.name in _table:
            if _table[ep.name].target != ep.value:
                _warn(
                    f"module {ep.name} from {origin} ({ep.value}) clashes with {ep.name} from "
                    f"{_table[ep.name].origin}; the latter is kept"
                )
            continue
        _table[ep.name] = Operator(ep.name, ep.value, origin)


def load(name: str) -> type:
    """Return the class of a row, importing and validating it on first use.

    Raises:
        RegistrationError: The name has no row, or its class cannot be imported or is not a valid module; the message
            names the module and the package it came from (a broken row fails only when something names it).
    """
    op = get(name)
    if op is None:
        raise RegistrationError(f"module {name!r} is not in the yolo_attn operator table")
    if op.cls is None and op.error is None:
        import importlib

        module, _, attr = op.target.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except Exception as e:
            op.error = f"module {op.name} from {op.origin} could not be imported ({op.target}): {type(e).__name__}: {e}"
        else:
            try:
                _validate(op, cls)
                op.cls = cls
            except RegistrationError as e:
                op.error = str(e)
        if op.cls is not None:
            _notify(op, usable=True)
    if op.error:
        raise RegistrationError(op.error)
    return op.cls


def load_row(name: str) -> Operator:
    """Return the row of a YAML name with its class loaded (see `load`)."""
    load(name)
    return _table[name]


def loaded() -> dict:
    """Return YAML name -> class of every row already imported (no import, no entry-point scan)."""
    return {op.name: op.cls for op in _table.values() if op.cls is not None}


def loaded_rows() -> list:
    """Return every row whose class is already imported (no import, no entry-point scan)."""
    return [op for op in _table.values() if op.cls is not None]


def builtin_modules() -> dict:
    """Return YAML name -> class of the built-in rows (imports the operator modules)."""
    return {op.name: load(op.name) for op in BUILTINS}


def plugin_modules() -> dict:
    """Return YAML name -> class of the built-in modules and of every other row already loaded."""
    return {**builtin_modules(), **loaded()}


def resolve_classes(class_paths: list) -> bool:
    """Load the rows whose classes are named by `class_paths` ("package.module.Class", as a checkpoint pickles them);
    return whether any became usable (a safe-load refusal then retries)."""
    scan_entry_points()
    found = False
    for op in rows():
        if op.cls is None and op.error is None and op.target.replace(":", ".") in class_paths:
            try:
                load(op.name)
                found = True
            except RegistrationError:
                pass
    return found


class isolated:  # noqa: N801  (used as a function: `with operators.isolated():`)
    """Run a block against a table of the built-in rows only, restored afterwards (for tests and tools that must not
    depend on what else is installed).

    Rows registered inside the block are removed at its end (their listeners told so); the entry points of installed
    packages are not read inside unless `entry_points` is True.
    """

    def __init__(self, entry_points: bool = False):
        self.entry_points = entry_points

    def __enter__(self) -> None:
        self.table, self.scanned = dict(_table), list(_scanned)
        _table.clear()
        _table.update({op.name: op for op in BUILTINS})
        _scanned[:] = [] if self.entry_points else [True]

    def __exit__(self, *exc) -> None:
        for op in [op for name, op in _table.items() if self.table.get(name) is not op]:
            _notify(op, usable=False)
        _table.clear()
        _table.update(self.table)
        _scanned[:] = self.scanned


def subscribe(listener: "Callable") -> None:
    """Call `listener(row, usable)` whenever a row becomes usable (its class loaded or registered: True) or is
    removed (False). The patches that give rows a place in Ultralytics (parser namespace, allow-list) subscribe."""
    if listener not in _listeners:
        _listeners.append(listener)


def unsubscribe(listener: "Callable") -> None:
    """Stop calling `listener`."""
    if listener in _listeners:
        _listeners.remove(listener)


def _notify(op: Operator, usable: bool) -> None:
    for listener in list(_listeners):
        listener(op, usable)


def insertable() -> tuple:
    """Return the YAML names that may be inserted by reference (channel-keeping rows known to the table)."""
    return tuple(op.name for op in _table.values() if op.keeps_channels and not op.error)


def twins() -> dict:
    """Return stock block name -> YAML name of its CSP twin, for every twin row known to the table."""
    return {op.twin_of: op.name for op in _table.values() if op.twin_of and not op.error}


def register_module(
    cls: type, name: str | None = None, keeps_channels: bool | None = None, twin_of: str | None = None
) -> type:
    """Add a module to the table in this process, so model YAMLs may name it like a built-in.

    The class follows Ultralytics' `(c1, c2, *options)` convention. What can be inferred is: the YAML name (the class
    name), whether it keeps channels (a probe on a small tensor), the stock block it is a twin of (its Ultralytics
    base class). Usable as a decorator.

    Args:
        cls (type): An `nn.Module` subclass taking `(c1, c2, ...)`.
        name (str | None): YAML name; default the class name.
        keeps_channels (bool | None): Declare that the output keeps the input's channels (checked by the probe).
        twin_of (str | None): Stock block name this module is a CSP twin of (default: inferred from its bases).

    Returns:
        (type): `cls`, unchanged.

    Raises:
        RegistrationError: The name clashes with Ultralytics' or a registered module, the class is not an `nn.Module`
            or lacks `(c1, c2)`, or it is declared channel-keeping but changes the channel count.
    """
    name = name or getattr(cls, "__name__", repr(cls))
    origin = f"register_module (module {getattr(cls, '__module__', '?')})"
    op = Operator(name, f"{getattr(cls, '__module__', '?')}:{getattr(cls, '__qualname__', name)}", origin)
    op.keeps_channels, op.twin_of = keeps_channels, twin_of
    existing = get(name)
    if existing is not None and existing.cls is not cls:
        raise RegistrationError(f"module {name} from {origin}: the name is already registered by {existing.origin}")
    _validate(op, cls)
    op.cls = cls
    _table[name] = op
    _notify(op, usable=True)
    return cls


def unregister_module(name: str) -> None:
    """Remove a row added by `register_module` (built-in rows stay)."""
    if name in _table and _table[name].origin.startswith("register_module"):
        _notify(_table.pop(name), usable=False)


def _validate(op: Operator, cls: type) -> None:
    """Check a class for row `op` and fill in what can be inferred; raise `RegistrationError` naming the module."""
    who = f"module {op.name} from {op.origin}"
    import inspect

    from torch import nn

    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise RegistrationError(f"{who}: {cls!r} is not an nn.Module subclass; expected a class taking (c1, c2, ...)")
    if op.origin != BUILTIN:
        clash = _ultralytics_has(op.name)
        if clash:
            raise RegistrationError(
                f"{who}: the name clashes with Ultralytics' {clash}; register it under another name"
            )
    try:
        params = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):
        params = []
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 2 or any(p.default is not p.empty for p in positional[:2]):
        sig = "(" + ", ".join(str(p) for p in params) + ")"
        raise RegistrationError(
            f"{who}: {cls.__name__}{sig} does not take (c1, c2) first; Ultralytics builds every layer as "
            f"cls(c1, c2, *options) with c1 the input and c2 the output channels"
        )
    _derive_stand_in(op, cls)
    if op.origin == BUILTIN or op.twin_of:
        op.keeps_channels = bool(op.keeps_channels)
        return
    keeps = _probe_keeps_channels(cls)
    if op.keeps_channels and keeps is not True:
        raise RegistrationError(
            f"{who}: declared channel-keeping, but {cls.__name__}(16, 16) "
            + (f"maps 16 input channels to {keeps}" if isinstance(keeps, int) else f"cannot run: {keeps}")
        )
    if op.keeps_channels is None:
        op.keeps_channels = keeps is True


def _derive_stand_in(op: Operator, cls: type) -> None:
    """Fill in the stock module the parser builds for the row (`stand_in`), its twin and `n_supplied`.

    A declared twin names the stock block; otherwise the class's first Ultralytics base is the twin, unless that is
    `Conv` (a plain `(c1, c2)` layer, like any class without an Ultralytics base).
    """
    from ultralytics.nn.modules import Conv

    if op.twin_of is None:
        stock = next((b for b in cls.__mro__[1:] if b.__module__.startswith("ultralytics.")), None)
        op.twin_of = stock.__name__ if stock is not None and stock is not Conv else None
    if op.twin_of:
        import ultralytics.nn.tasks as tasks

        twin = vars(tasks).get(op.twin_of)
        if not isinstance(twin, type):
            raise RegistrationError(
                f"module {op.name} from {op.origin}: twin_of={op.twin_of!r} names no Ultralytics block; expected the "
                f"name of the stock block it is a CSP twin of (e.g. 'C2f')"
            )
        op.stand_in, op.n_supplied = twin, 3
    else:
        op.stand_in, op.n_supplied = Conv, 2


def _probe_keeps_channels(cls: type):
    """Return True when `cls(16, 16)` keeps 16 channels on a (1, 16, 8, 8) tensor, else its channels or the error."""
    import torch

    try:
        with torch.no_grad():
            m = cls(16, 16).eval()
            y = m(torch.zeros(1, 16, 8, 8))
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return True if getattr(y, "shape", (0, 0))[1] == 16 and y.shape[2:] == (8, 8) else int(y.shape[1])


def _ultralytics_has(name: str) -> str:
    """Return a description of the Ultralytics module of that name ('' if none)."""
    import torch  # noqa: F401  (Ultralytics' modules import it)

    tasks = sys.modules.get("ultralytics.nn.tasks")
    if tasks is None:
        import ultralytics.nn.tasks as tasks
    obj = vars(tasks).get(name)
    if obj is not None and not getattr(obj, "__module__", "").startswith("yolo_attn"):
        return f"{getattr(obj, '__module__', 'ultralytics.nn.tasks')}.{name}"
    return ""


def _warn(message: str) -> None:
    import logging

    logging.getLogger("ultralytics").warning(f"yolo_attn: {message}")
