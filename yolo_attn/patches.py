"""The inventory: every change the plugin makes to Ultralytics, torch and the interpreter, installed as one transaction.

Ultralytics has no plugin API, so the plugin's surface is a set of patches on its internals. Each is one `Patch`
below: what it changes (every name it is bound under), why, the Ultralytics behaviour it assumes (checked cheaply at
registration, no model build), how it is installed and undone. `register()` checks every assumption, then installs
every patch; any failure rolls back what was installed, leaving Ultralytics exactly stock, and logs one line (what
failed, the Ultralytics version, the supported range). A plugin YAML or checkpoint then fails with that same message.
`unregister()` undoes every patch in reverse order. `yolo-attn doctor` prints the inventory and each check's result.

Nothing here runs at import beyond defining the inventory; the start-up hook (`autoload.py`) calls `register_safely()`
inside `import ultralytics.nn.tasks`, where no exception may escape.
"""

import importlib
import inspect
import logging
import sys
from collections.abc import Callable

from yolo_attn import autoload, compat, operators

TASKS = "ultralytics.nn.tasks"


class RegistrationFailed(RuntimeError):
    """The plugin could not register with the installed Ultralytics, which stays stock; the message says why."""


class AssumptionFailed(RuntimeError):
    """An Ultralytics behaviour a patch relies on is not there."""


class Patch:
    """One change to Ultralytics, torch or the interpreter.

    Args:
        name (str): Short name (shown by `yolo-attn doctor`).
        target (str): What is changed.
        why (str): Why the plugin needs it.
        assumes (str): The Ultralytics behaviour it relies on.
        check (Callable[[], None]): Raises `AssumptionFailed` (or anything) when the assumption does not hold.
        install (Callable[[], Callable[[], None]]): Makes the change and returns its undo.
    """

    def __init__(self, name: str, target: str, why: str, assumes: str, check: Callable, install: Callable):
        self.name, self.target, self.why, self.assumes = name, target, why, assumes
        self.check, self.install = check, install
        self.bound: list = []  # where the change is bound now (module attribute names), for the doctor


_installed: list = []  # (Patch, undo) in install order; non-empty while registered
_failure: list = []  # the failure message of the last registration attempt (empty: none)


# ---- patch kinds ----------------------------------------------------------------------------------------------------


def _rebind(name: str, old: object, new: object) -> list:
    """Point every loaded Ultralytics module's attribute `name` that is `old` at `new`; return those modules' names."""
    done = []
    for module in list(sys.modules.values()):
        mod_name = getattr(module, "__name__", "") or ""
        if mod_name.startswith("ultralytics") and getattr(module, name, None) is old:
            setattr(module, name, new)
            done.append(f"{mod_name}.{name}")
    return done


def _function(home: str, name: str, params: tuple, factory: str, why: str) -> Patch:
    """A patch that wraps function `home.name` and rebinds the wrapper under every name the original is bound to.

    When `home` is `autoload.LATER`, which may not have finished importing at registration, the check and the wrap
    wait for it (`later_module_imported`), and a failure there turns this patch off alone.

    Args:
        home (str): The defining module.
        name (str): The function's name.
        params (tuple): Its leading parameter names, as the wrapper calls it.
        factory (str): "module:function" building the wrapper from the original (imported at install).
        why (str): Why.
    """
    later = home == autoload.LATER

    def check() -> None:
        if later and not autoload.imported(home):
            return  # checked when it has been imported
        check_now()

    def check_now() -> None:
        f = getattr(importlib.import_module(home), name, None)
        if not callable(f):
            raise AssumptionFailed(f"{home}.{name} is missing")
        f = getattr(f, "__wrapped__", f) if getattr(f, "_yolo_attn_hint", False) else f
        got = tuple(inspect.signature(f).parameters)[: len(params)]
        if got != params:
            raise AssumptionFailed(f"{home}.{name} takes ({', '.join(got)}), expected ({', '.join(params)}, ...)")

    def wrap() -> None:
        original = getattr(sys.modules[home], name)
        module, _, attr = factory.partition(":")
        if patch.last[0] is not original:  # the same wrapper for the same original: cycles leave identical states
            patch.last = (original, getattr(importlib.import_module(module), attr)(original))
        patch.bound = _rebind(name, original, patch.last[1])
        patch.wrapped = True

    def install() -> Callable:
        if later and not autoload.imported(home):
            patch.waiting = True
            autoload.watch_later()
        else:
            importlib.import_module(home)
            wrap()

        def undo() -> None:
            if patch.wrapped:
                _rebind(name, patch.last[1], patch.last[0])
            patch.bound, patch.wrapped, patch.waiting = [], False, False

        return undo

    def install_later() -> None:
        patch.waiting = False
        check_now()
        wrap()

    patch = Patch(name, f"{home}.{name}", why, f"{home}.{name}({', '.join(params)}, ...) exists", check, install)
    patch.last = (None, None)  # (original, wrapper) of the last install
    patch.wrapped = patch.waiting = False
    patch.install_later = install_later if later else None
    return patch


def _base_model_load() -> Patch:
    def check() -> None:
        tasks = importlib.import_module(TASKS)
        load = vars(getattr(tasks, "BaseModel", object)).get("load")
        if not callable(load) or tuple(inspect.signature(load).parameters)[:3] != ("self", "weights", "verbose"):
            raise AssumptionFailed(f"{TASKS}.BaseModel.load(self, weights, verbose) is missing or changed")

    def install() -> Callable:
        from yolo_attn.transfer import make_load

        base = importlib.import_module(TASKS).BaseModel
        original = vars(base)["load"]
        base.load = make_load(original)
        patch.bound = [f"{TASKS}.BaseModel.load"]

        def undo() -> None:
            base.load = original
            patch.bound = []

        return undo

    patch = Patch(
        "BaseModel.load",
        f"{TASKS}.BaseModel.load",
        "stock weights transfer into plugin models across inserted layers (by the layer map)",
        "BaseModel.load(self, weights, verbose) transfers by key and shape",
        check,
        install,
    )
    return patch


class _Collection:
    """State of a patch that grows after registration (operators resolved later): what it added, for the undo."""

    def __init__(self):
        self.added: list = []


def _namespace() -> Patch:
    """The operator classes as attributes of `ultralytics.nn.tasks`, where code resolves layer names."""
    state = _Collection()

    def check() -> None:
        tasks = importlib.import_module(TASKS)
        for op in operators.BUILTINS:
            obj = vars(tasks).get(op.name)
            if obj is not None and not getattr(obj, "__module__", "").startswith("yolo_attn"):
                raise AssumptionFailed(f"Ultralytics has a module named {op.name} of its own ({obj!r})")

    def install() -> Callable:
        tasks = importlib.import_module(TASKS)
        for name, cls in {**operators.builtin_modules(), **operators.loaded()}.items():
            _add_name(tasks, state, name, cls)

        def undo() -> None:
            for name in state.added:
                if name in vars(tasks):
                    delattr(tasks, name)
            state.added.clear()
            patch.bound = []

        return undo

    patch = Patch(
        "tasks namespace",
        f"{TASKS}.<operator name> (new attributes)",
        "Ultralytics resolves a layer's name in this module's namespace (task guessing, summaries)",
        "no Ultralytics module has an operator's name",
        check,
        install,
    )
    patch.state = state
    return patch


def _add_name(tasks, state: _Collection, name: str, cls: type) -> None:
    if name not in vars(tasks):
        setattr(tasks, name, cls)
        state.added.append(name)


def _safe_globals() -> Patch:
    """The operator classes on torch's allow-list for restricted (weights_only) checkpoint loading."""
    state = _Collection()

    def check() -> None:
        import torch

        s = torch.serialization
        if not all(hasattr(s, f) for f in ("add_safe_globals", "get_safe_globals", "clear_safe_globals")):
            raise AssumptionFailed("torch.serialization lacks add/get/clear_safe_globals (torch < 2.5)")

    def install() -> Callable:
        import torch

        before = list(torch.serialization.get_safe_globals())
        _allow_classes(state, before, [cls for cls in operators.builtin_modules().values()])

        def undo() -> None:
            ours = [g for g in state.added if g not in before]
            kept = [g for g in torch.serialization.get_safe_globals() if not any(g is o for o in ours)]
            torch.serialization.clear_safe_globals()
            torch.serialization.add_safe_globals(kept)
            state.added.clear()

        state.before = before
        return undo

    patch = Patch(
        "torch safe globals",
        "torch.serialization safe globals (+ the operator modules' nn.Module classes)",
        "checkpoints pickle the operators; ULTRALYTICS_SAFE_LOAD=1 (weights_only) loads only allow-listed classes",
        "torch.serialization.add/get/clear_safe_globals exist (torch >= 2.5)",
        check,
        install,
    )
    patch.state = state
    return patch


def _allow_classes(state: _Collection, before: list, classes: list) -> None:
    import torch
    from torch import nn

    new = []
    for module in {sys.modules[cls.__module__] for cls in classes}:
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__module__ == module.__name__:
                if not any(obj is g for g in state.added) and obj not in new:
                    new.append(obj)
    state.added.extend(new)
    torch.serialization.add_safe_globals(new)


def _torch_safe_load() -> Patch:
    def install() -> Callable:
        from yolo_attn.loadhint import wrap

        tasks = importlib.import_module(TASKS)
        original = tasks.torch_safe_load
        wrapper = wrap(original, on_refused=_resolve_checkpoint_modules)
        patch.bound = _rebind("torch_safe_load", original, wrapper)

        def undo() -> None:
            _rebind("torch_safe_load", wrapper, original)
            patch.bound = []

        return undo

    check = _function(TASKS, "torch_safe_load", ("weight",), "", "").check
    patch = Patch(
        "torch_safe_load",
        f"{TASKS}.torch_safe_load",
        "a checkpoint naming an entry-point operator resolves it on a safe-load refusal; plugin load errors say what "
        "to do",
        f"{TASKS}.torch_safe_load(weight, ...) exists",
        check,
        install,
    )
    return patch


def _resolve_checkpoint_modules(names: list) -> bool:
    """Resolve the table rows whose classes a refused checkpoint names; return whether any became allowed."""
    if not _installed:
        return False
    operators.scan_entry_points() if not operators._scanned else None
    found = False
    for op in operators.rows():
        if op.cls is None and op.error is None and op.target.replace(":", ".") in names:
            try:
                operators.load(op.name)
                found = True
            except operators.RegistrationError:
                pass
    return found


def _finders() -> Patch:
    """The start-up hook's import finders (autoload, hook-off hint): removed by `unregister()`."""

    def install() -> Callable:
        return _remove_finders

    return Patch(
        "import finders",
        "sys.meta_path: yolo_attn's _RegisterOnImport / _HintOnImport",
        "registration follows the import of ultralytics.nn.tasks (start-up hook)",
        "the import system calls meta path finders (always)",
        lambda: None,
        install,
    )


def _remove_finders() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ not in ("_RegisterOnImport", "_HintOnImport")]


def _hook_off_hint() -> Patch:
    """The load-hint wrapper `YOLO_ATTN_AUTOLOAD=0` puts on torch_safe_load: removed by `unregister()`."""

    def install() -> Callable:
        def undo() -> None:
            tasks = sys.modules.get(TASKS)
            f = getattr(tasks, "torch_safe_load", None)
            if getattr(f, "_yolo_attn_hint", False):
                _rebind("torch_safe_load", f, f.__wrapped__)

        return undo

    return Patch(
        "load hint (hook off)",
        f"{TASKS}.torch_safe_load (wrapped by yolo_attn_hook_off when YOLO_ATTN_AUTOLOAD=0)",
        "a plugin checkpoint loaded with the hook off says so",
        "none",
        lambda: None,
        install,
    )


def _plugin_imports() -> Patch:
    """Not a change: the plugin's own modules import on this release (their imports of Ultralytics names)."""

    def check() -> None:
        for module in ("yolo_attn.registry", "yolo_attn.transfer", "yolo_attn.loadhint"):
            try:
                importlib.import_module(module)
            except Exception as e:
                raise AssumptionFailed(f"{module} cannot be imported: {type(e).__name__}: {e}") from e
        try:
            operators.builtin_modules()
        except Exception as e:
            raise AssumptionFailed(f"a built-in operator cannot be loaded: {e}") from e
        tasks = importlib.import_module(TASKS)
        conv = getattr(tasks, "Conv", None)
        if conv is None or not hasattr(conv, "default_act"):
            raise AssumptionFailed(f"{TASKS}.Conv.default_act is missing")

    return Patch(
        "plugin modules",
        "(nothing changed)",
        "the plugin's modules and operators import against this release",
        "ultralytics.nn.modules has Conv (default_act), C2f, C3k2, C3k, PSABlock; ultralytics.utils has LOGGER",
        check,
        lambda: lambda: None,
    )


INVENTORY = (
    _plugin_imports(),
    _finders(),
    _hook_off_hint(),
    _function(
        TASKS,
        "parse_model",
        ("d", "ch", "verbose"),
        "yolo_attn.registry:make_parse_model",
        "plugin modules in model YAMLs: rows built through stand-ins the stock parser knows",
    ),
    _function(
        TASKS,
        "yaml_model_load",
        ("path",),
        "yolo_attn.registry:make_yaml_model_load",
        "YAMLs written by reference (base:/insert:/replace:) are expanded; plugin models get a layer map",
    ),
    _function(
        "ultralytics.utils.checks",
        "check_file",
        ("file",),
        "yolo_attn.registry:make_check_file",
        "the plugin's shipped YAMLs are found by bare name, like Ultralytics' own; a generated data set named by its "
        "YAML is checked against its build record on every use (rebuilt when damaged)",
    ),
    _function(
        "ultralytics.utils.checks",
        "check_font",
        ("font",),
        "yolo_attn.registry:make_check_font",
        "no font download attempt (3 s each, ~10 per run) under YOLO_OFFLINE",
    ),
    _function(
        autoload.LATER,
        "check_cls_dataset",
        ("dataset", "split"),
        "yolo_attn.registry:make_check_cls_dataset",
        "a generated classification set (named by folder) is built offline where Ultralytics would download it, and "
        "checked against its build record on every use (rebuilt when damaged)",
    ),
    _torch_safe_load(),
    _base_model_load(),
    _namespace(),
    _safe_globals(),
)


# ---- the lifecycle --------------------------------------------------------------------------------------------------


def is_registered() -> bool:
    """Return whether the plugin is registered with Ultralytics now."""
    return bool(_installed)


def failure() -> str | None:
    """Return the message of the last failed registration (None when none failed)."""
    return _failure[0] if _failure else None


def check_all() -> list:
    """Run every patch's assumption check; return (patch, None or the failure text) for each."""
    out = []
    for patch in INVENTORY:
        try:
            patch.check()
            out.append((patch, None))
        except Exception as e:
            out.append((patch, f"{type(e).__name__}: {e}" if not isinstance(e, AssumptionFailed) else str(e)))
    return out


def register() -> None:
    """Check every patch, then install every one; on any failure roll back and raise. Idempotent.

    Raises:
        RegistrationFailed: Registration could not complete; Ultralytics is stock (the message names what failed,
            the Ultralytics version and the supported range).
    """
    if _installed:
        return
    _undo_reporters()
    _failure.clear()
    problems = [f"{patch.name}: {problem}" for patch, problem in check_all() if problem]
    if problems:
        _fail("; ".join(problems))
    patch = None
    try:
        for patch in INVENTORY:
            _installed.append((patch, patch.install()))
    except Exception as e:
        _rollback()
        _fail(f"{patch.name}: installing failed: {type(e).__name__}: {e}")


def register_safely() -> bool:
    """`register()` for the start-up hook: never raises (it runs inside `import ultralytics.nn.tasks`)."""
    try:
        register()
        return True
    except RegistrationFailed:
        return False
    except Exception as e:  # a bug of the plugin: Ultralytics must still import
        _rollback()
        _fail(f"unexpected {type(e).__name__}: {e}", raise_=False)
        return False


def later_module_imported() -> None:
    """`autoload.LATER` has executed: install the registered patches that waited for it.

    Registration has been committed by then, so a patch whose assumption fails here is left off alone, with one
    line saying what no longer happens; the rest of the plugin stays active.
    """
    for patch, _ in list(_installed):
        if getattr(patch, "waiting", False):
            try:
                patch.install_later()
            except Exception as e:
                patch.bound = []
                logging.getLogger("ultralytics").warning(
                    f"yolo_attn: {patch.name} is off, the rest of the plugin is active ({type(e).__name__}: {e}); "
                    f"not done: {patch.why}"
                )


def unregister() -> None:
    """Undo `register()` exactly (reverse order) and cancel a pending start-up registration."""
    _remove_finders()
    _rollback()
    _undo_reporters()
    _failure.clear()


def _rollback() -> None:
    while _installed:
        patch, undo = _installed.pop()
        try:
            undo()
        except Exception as e:  # keep undoing the others; say which one could not be undone
            logging.getLogger("ultralytics").warning(f"yolo_attn: undoing {patch.name} failed: {e}")


def extend_operator(cls: type) -> None:
    """Give a table row resolved after registration what the built-ins got at registration (namespace, allow-list)."""
    if not _installed:
        return
    for patch in INVENTORY:
        if patch.name == "tasks namespace":
            _add_name(sys.modules[TASKS], patch.state, _name_of(cls), cls)
        elif patch.name == "torch safe globals":
            _allow_classes(patch.state, patch.state.before, [cls])


def retract_operator(name: str) -> None:
    """Remove the parser-namespace name a row removed from the table had got from `extend_operator`."""
    for patch in INVENTORY:
        if patch.name == "tasks namespace" and name in patch.state.added:
            vars(sys.modules[TASKS]).pop(name, None)
            patch.state.added.remove(name)


def _name_of(cls: type) -> str:
    return next((op.name for op in operators.rows() if op.cls is cls), cls.__name__)


# ---- failure: one line, and plugin YAMLs/checkpoints fail with it ----------------------------------------------------


def _message(what: str) -> str:
    try:
        version = compat.version()
    except Exception:
        version = "?"
    from yolo_attn import __version__

    return (
        f"yolo_attn {__version__} is not active, Ultralytics is left stock: {what} "
        f"(Ultralytics {version}; yolo_attn supports ultralytics{compat.SUPPORTED})"
    )


def _fail(what: str, raise_: bool = True) -> None:
    message = _message(what)
    _failure[:] = [message]
    logging.getLogger("ultralytics").warning(message)
    try:
        _install_reporters(message)
    except Exception:  # the reporters are a courtesy; Ultralytics must stay importable
        _undo_reporters()
    if raise_:
        raise RegistrationFailed(message)


_reporters: list = []  # undo callables of the failure reporters (installed only after a failed registration)


class _Unavailable:
    """Stands in `ultralytics.nn.tasks` for an operator name after a failed registration: building it raises why."""

    def __init__(self, name: str, message: str):
        self.name, self.message = name, message

    def __call__(self, *args, **kwargs):
        raise RegistrationFailed(f"{self.name}: {self.message}")

    def __repr__(self) -> str:
        return f"<{self.name}: yolo_attn not active>"


def _install_reporters(message: str) -> None:
    """After a failed registration: plugin YAMLs (rows or `base:`) and plugin checkpoints fail with `message`.

    Additions only (names Ultralytics does not have, a wrapper that returns what the stock function returns for
    everything that is not the plugin's): stock YAMLs and checkpoints behave exactly as without the plugin.
    """
    tasks = sys.modules.get(TASKS)
    if tasks is None:
        return
    for op in operators.BUILTINS:
        if op.name not in vars(tasks):
            setattr(tasks, op.name, _Unavailable(op.name, message))
            _reporters.append(lambda n=op.name: vars(tasks).pop(n, None))
    load = getattr(tasks, "yaml_model_load", None)
    if callable(load):

        def yaml_model_load(path):
            d = load(path)
            if isinstance(d, dict) and "base" in d and "backbone" not in d:
                raise RegistrationFailed(f"{path} is written by reference (base:): {message}")
            return d

        yaml_model_load._yolo_attn_reporter = True
        bound = _rebind("yaml_model_load", load, yaml_model_load)
        _reporters.append(lambda: _rebind("yaml_model_load", yaml_model_load, load))
        del bound
    safe_load = getattr(tasks, "torch_safe_load", None)
    if callable(safe_load):

        def torch_safe_load(weight, *args, **kwargs):
            try:
                out = safe_load(weight, *args, **kwargs)
            except Exception as e:
                if "yolo_attn" in str(e):
                    raise RegistrationFailed(f"{weight} holds yolo_attn modules: {message}") from e
                raise
            ckpt = out[0] if isinstance(out, tuple) else out
            model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
            if hasattr(model, "modules") and any(type(m).__module__.startswith("yolo_attn.") for m in model.modules()):
                raise RegistrationFailed(f"{weight} holds yolo_attn modules: {message}")
            return out

        _rebind("torch_safe_load", safe_load, torch_safe_load)
        _reporters.append(lambda: _rebind("torch_safe_load", torch_safe_load, safe_load))


def _undo_reporters() -> None:
    while _reporters:
        _reporters.pop()()


# ---- the doctor ----------------------------------------------------------------------------------------------------


def report() -> str:
    """Return the versions, the registration state, the inventory with each check's result, and the operators."""
    import platform

    lines = []
    from yolo_attn import __version__

    try:
        import torch

        torch_version = torch.__version__
    except Exception as e:
        torch_version = f"not importable ({e})"
    try:
        version = compat.version()
        where = "inside" if compat.in_range(version) else "OUTSIDE"
    except Exception as e:
        version, where = f"not importable ({e})", "?"
    lines.append(
        f"yolo_attn {__version__}, Ultralytics {version} ({where} the supported ultralytics{compat.SUPPORTED})"
    )
    lines.append(f"torch {torch_version}, Python {platform.python_version()}")
    try:  # so that the patches waiting for it are installed and checked too
        importlib.import_module(autoload.LATER)
    except Exception as e:
        lines.append(f"{autoload.LATER} not importable ({e})")
    state = "registered" if _installed else f"NOT registered: {failure()}" if failure() else "not registered"
    lines.append(f"state: {state}")
    lines.append("")
    lines.append("inventory (check: the Ultralytics behaviour each patch assumes):")
    for patch, problem in check_all():
        lines.append(f"  [{'ok' if problem is None else 'FAIL'}] {patch.name}: {patch.target}")
        lines.append(f"        why: {patch.why}")
        lines.append(f"        assumes: {patch.assumes}")
        if patch.bound:
            lines.append(f"        bound as: {', '.join(patch.bound)}")
        if getattr(patch, "waiting", False):
            lines.append(f"        installed when {autoload.LATER} has been imported (not yet)")
        if problem:
            lines.append(f"        problem: {problem}")
    return "\n".join(lines)
