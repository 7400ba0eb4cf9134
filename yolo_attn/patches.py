"""The inventory: every change the plugin makes to Ultralytics, torch and the interpreter, installed as one transaction.

Ultralytics has no plugin API, so the plugin's surface is a set of patches on its internals. Each is one `Patch`
below: what it changes (every name it is bound under), why, the Ultralytics behaviour it assumes (checked cheaply at
registration, no model build), how it is installed and undone. `register()` checks every assumption, then installs
every patch; any failure rolls back what was installed, leaving Ultralytics exactly stock, and logs one line
(`yolo_attn.failure`: what failed, the Ultralytics version, the supported range). `unregister()` undoes every patch in
reverse order. `yolo-attn doctor` (`yolo_attn.doctor`) prints the inventory and each check's result.

Nothing here runs at import beyond defining the inventory; the start-up trigger (`autoload.py`) calls
`register_safely()` inside `import ultralytics.nn.tasks`, where no exception may escape.
"""

import importlib
import inspect
import logging
import sys
from collections.abc import Callable

from yolo_attn import failure, import_watch, operators
from yolo_attn.failure import RegistrationFailed
from yolo_attn.rebind import rebind

TASKS = "ultralytics.nn.tasks"
DATA_UTILS = "ultralytics.data.utils"  # may still be executing at registration: it imports the parser halfway through

__all__ = ("INVENTORY", "RegistrationFailed", "check_all", "is_registered", "register", "register_safely", "unregister")


class AssumptionFailed(RuntimeError):
    """An Ultralytics behaviour a patch relies on is not there."""


class Patch:
    """One change to Ultralytics, torch or the interpreter; a kind of change overrides `check` and `install`.

    Args:
        name (str): Short name (shown by `yolo-attn doctor`).
        target (str): What is changed.
        why (str): Why the plugin needs it.
        assumes (str): The Ultralytics behaviour it relies on.
    """

    def __init__(self, name: str, target: str, why: str, assumes: str):
        self.name, self.target, self.why, self.assumes = name, target, why, assumes
        self.bound: list = []  # where the change is bound now (module attribute names), for the doctor
        self.waiting = False  # installed, but waiting for its module's import to finish (`WrapFunction`)

    def check(self) -> None:
        """Raise `AssumptionFailed` (or anything) when the assumption does not hold."""

    def install(self) -> Callable[[], None]:
        """Make the change and return its undo."""
        return lambda: None


class WrapFunction(Patch):
    """Wrap function `home.name` and rebind the wrapper under every name the original is bound to.

    When `home` is `DATA_UTILS`, which may not have finished importing at registration, the check and the wrap wait
    for it (`import_watch`), and a failure there turns this patch off alone, with one line saying what is not done.

    Args:
        home (str): The defining module.
        name (str): The function's name.
        params (tuple): Its leading parameter names, as the wrapper calls it.
        factory (str): "module:function" building the wrapper from the original (imported at install).
        why (str): Why.
    """

    def __init__(self, home: str, name: str, params: tuple, factory: str, why: str):
        super().__init__(name, f"{home}.{name}", why, f"{home}.{name}({', '.join(params)}, ...) exists")
        self.home, self.function, self.params, self.factory = home, name, params, factory
        self.later = home == DATA_UTILS
        self.original = self.wrapper = None  # of the last install: cycles leave identical states
        self.wrapped = False
        self.watch: import_watch.Watch | None = None

    def check(self) -> None:
        if not (self.later and not import_watch.imported(self.home)):  # else checked when it has been imported
            self.check_now()

    def check_now(self) -> None:
        f = getattr(importlib.import_module(self.home), self.function, None)
        if not callable(f):
            raise AssumptionFailed(f"{self.home}.{self.function} is missing")
        f = getattr(f, "__wrapped__", f) if getattr(f, "_yolo_attn_hint", False) else f
        got = tuple(inspect.signature(f).parameters)[: len(self.params)]
        if got != self.params:
            raise AssumptionFailed(
                f"{self.home}.{self.function} takes ({', '.join(got)}), expected ({', '.join(self.params)}, ...)"
            )

    def install(self) -> Callable[[], None]:
        if self.later and not import_watch.imported(self.home):
            self.waiting = True
            self.watch = import_watch.when_imported(self.home, self.install_late)
        else:
            importlib.import_module(self.home)
            self.wrap()
        return self.undo

    def wrap(self) -> None:
        original = getattr(sys.modules[self.home], self.function)
        if self.original is not original:
            module, _, attr = self.factory.partition(":")
            self.original, self.wrapper = original, getattr(importlib.import_module(module), attr)(original)
        self.bound = rebind(self.function, original, self.wrapper)
        self.wrapped = True

    def install_late(self) -> None:
        """Check and wrap once `home` has been imported; never raises (it runs inside that import)."""
        self.waiting, self.watch = False, None
        try:
            self.check_now()
            self.wrap()
        except Exception as e:
            self.bound = []
            logging.getLogger("ultralytics").warning(
                f"yolo_attn: {self.name} is off, the rest of the plugin is active ({type(e).__name__}: {e}); "
                f"not done: {self.why}"
            )

    def undo(self) -> None:
        if self.watch is not None:
            self.watch.cancel()
        if self.wrapped:
            rebind(self.function, self.wrapper, self.original)
        self.bound, self.wrapped, self.waiting, self.watch = [], False, False, None


class WrapMethod(Patch):
    """Wrap method `BaseModel.name` of Ultralytics' model base class (every task's model inherits it).

    Args:
        name (str): The method's name.
        params (tuple): Its leading parameter names, as the wrapper calls it.
        factory (str): "module:function" building the wrapper from the original (imported at install).
        why (str): Why.
        assumes (str): The stock behaviour the wrapper relies on.
    """

    def __init__(self, name: str, params: tuple, factory: str, why: str, assumes: str):
        super().__init__(f"BaseModel.{name}", f"{TASKS}.BaseModel.{name}", why, assumes)
        self.method, self.params, self.factory = name, params, factory

    def check(self) -> None:
        tasks = importlib.import_module(TASKS)
        method = vars(getattr(tasks, "BaseModel", object)).get(self.method)
        if not callable(method) or tuple(inspect.signature(method).parameters)[: len(self.params)] != self.params:
            raise AssumptionFailed(f"{self.target}({', '.join(self.params)}) is missing or changed")

    def install(self) -> Callable[[], None]:
        module, _, attr = self.factory.partition(":")
        base = importlib.import_module(TASKS).BaseModel
        original = vars(base)[self.method]
        setattr(base, self.method, getattr(importlib.import_module(module), attr)(original))
        self.bound = [self.target]

        def undo() -> None:
            setattr(base, self.method, original)
            self.bound = []

        return undo


class ParserNamespace(Patch):
    """The operator classes as attributes of `ultralytics.nn.tasks`, where code resolves layer names; rows that
    become usable later (entry points, `register_module`) are added as the table announces them."""

    def __init__(self):
        super().__init__(
            "tasks namespace",
            f"{TASKS}.<operator name> (new attributes)",
            "Ultralytics resolves a layer's name in this module's namespace (task guessing, summaries)",
            "no Ultralytics module has an operator's name",
        )
        self.added: list = []  # the names this patch set, for the undo

    def check(self) -> None:
        tasks = importlib.import_module(TASKS)
        for op in operators.BUILTINS:
            obj = vars(tasks).get(op.name)
            if obj is not None and not getattr(obj, "__module__", "").startswith("yolo_attn"):
                raise AssumptionFailed(f"Ultralytics has a module named {op.name} of its own ({obj!r})")

    def install(self) -> Callable[[], None]:
        operators.builtin_modules()
        for op in operators.loaded_rows():
            self.changed(op, usable=True)
        operators.subscribe(self.changed)
        return self.undo

    def changed(self, op: operators.Operator, usable: bool) -> None:
        tasks = sys.modules[TASKS]
        if usable and op.name not in vars(tasks):
            setattr(tasks, op.name, op.cls)
            self.added.append(op.name)
        elif not usable and op.name in self.added:
            vars(tasks).pop(op.name, None)
            self.added.remove(op.name)

    def undo(self) -> None:
        operators.unsubscribe(self.changed)
        tasks = sys.modules[TASKS]
        for name in self.added:
            vars(tasks).pop(name, None)
        self.added.clear()


class SafeGlobals(Patch):
    """The operator modules' classes on torch's allow-list for restricted (weights_only) checkpoint loading; rows
    that become usable later are added as the table announces them."""

    def __init__(self):
        super().__init__(
            "torch safe globals",
            "torch.serialization safe globals (+ the operator modules' nn.Module classes)",
            "checkpoints pickle the operators; ULTRALYTICS_SAFE_LOAD=1 (weights_only) loads only allow-listed classes",
            "torch.serialization.add/get/clear_safe_globals exist (torch >= 2.5)",
        )
        self.added: list = []  # the classes this patch allowed
        self.before: list = []  # the allow-list before the install

    def check(self) -> None:
        import torch

        s = torch.serialization
        if not all(hasattr(s, f) for f in ("add_safe_globals", "get_safe_globals", "clear_safe_globals")):
            raise AssumptionFailed("torch.serialization lacks add/get/clear_safe_globals (torch < 2.5)")

    def install(self) -> Callable[[], None]:
        import torch

        self.before = list(torch.serialization.get_safe_globals())
        self.allow(list(operators.builtin_modules().values()))
        operators.subscribe(self.changed)
        return self.undo

    def changed(self, op: operators.Operator, usable: bool) -> None:
        if usable:
            self.allow([op.cls])

    def allow(self, classes: list) -> None:
        """Allow every `nn.Module` class defined in the modules that define `classes`."""
        import torch
        from torch import nn

        new = []
        for module in {sys.modules[cls.__module__] for cls in classes}:
            for obj in vars(module).values():
                if isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__module__ == module.__name__:
                    if not any(obj is g for g in self.added) and obj not in new:
                        new.append(obj)
        self.added.extend(new)
        torch.serialization.add_safe_globals(new)

    def undo(self) -> None:
        import torch

        operators.unsubscribe(self.changed)
        ours = [g for g in self.added if not any(g is b for b in self.before)]
        kept = [g for g in torch.serialization.get_safe_globals() if not any(g is o for o in ours)]
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(kept)
        self.added.clear()


class StartupWatches(Patch):
    """What the start-up hook left waiting (registration on the parser's import, the hook-off load hint's finder):
    dropped by `unregister()`, so Ultralytics stays stock on its next import too."""

    def __init__(self):
        super().__init__(
            "import finders",
            "sys.meta_path: yolo_attn's import watch / the hook-off load hint",
            "registration follows the import of ultralytics.nn.tasks (start-up hook)",
            "the import system calls meta path finders (always)",
        )

    def install(self) -> Callable[[], None]:
        return drop_startup_watches


def drop_startup_watches() -> None:
    """Cancel a registration still waiting for the parser's import; remove the hook-off hint's finder."""
    import_watch.forget(TASKS)
    sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "yolo_attn_hook_off", False)]


class HookOffHint(Patch):
    """The load-hint wrapper `YOLO_ATTN_AUTOLOAD=0` puts on torch_safe_load: removed by `unregister()`."""

    def __init__(self):
        super().__init__(
            "load hint (hook off)",
            f"{TASKS}.torch_safe_load (wrapped by yolo_attn_hook_off when YOLO_ATTN_AUTOLOAD=0)",
            "a plugin checkpoint loaded with the hook off says so",
            "none",
        )

    def install(self) -> Callable[[], None]:
        def undo() -> None:
            f = getattr(sys.modules.get(TASKS), "torch_safe_load", None)
            if getattr(f, "_yolo_attn_hint", False):
                rebind("torch_safe_load", f, f.__wrapped__)

        return undo


class OneLineErrors(Patch):
    """`sys.excepthook`: a plugin user error that nothing caught (under `yolo train`, in a script) prints one line."""

    def __init__(self):
        super().__init__(
            "one-line errors",
            "sys.excepthook",
            "a YAML or checkpoint mistake the plugin names reads as one line under `yolo`, not a 30-line traceback "
            "(YOLO_ATTN_TRACEBACK=1 shows it)",
            "none",
        )

    def install(self) -> Callable[[], None]:
        from yolo_attn.usererrors import make_excepthook

        original = sys.excepthook
        hook = make_excepthook(original)
        sys.excepthook = hook
        self.bound = ["sys.excepthook"]

        def undo() -> None:
            if sys.excepthook is hook:
                sys.excepthook = original
            self.bound = []

        return undo


class PluginImports(Patch):
    """Not a change: the plugin's own modules import on this release (their imports of Ultralytics names)."""

    MODULES = ("yolo_attn.parser", "yolo_attn.yaml_load", "yolo_attn.data_checks", "yolo_attn.transfer")

    def __init__(self):
        super().__init__(
            "plugin modules",
            "(nothing changed)",
            "the plugin's modules and operators import against this release",
            "ultralytics.nn.modules has Conv (default_act), C2f, C3k2, C3k, PSABlock; ultralytics.utils has LOGGER",
        )

    def check(self) -> None:
        for module in (*self.MODULES, "yolo_attn.loadhint"):
            try:
                importlib.import_module(module)
            except Exception as e:
                raise AssumptionFailed(f"{module} cannot be imported: {type(e).__name__}: {e}") from e
        try:
            operators.builtin_modules()
        except Exception as e:
            raise AssumptionFailed(f"a built-in operator cannot be loaded: {e}") from e
        conv = getattr(importlib.import_module(TASKS), "Conv", None)
        if conv is None or not hasattr(conv, "default_act"):
            raise AssumptionFailed(f"{TASKS}.Conv.default_act is missing")


INVENTORY = (
    PluginImports(),
    StartupWatches(),
    HookOffHint(),
    WrapFunction(
        TASKS,
        "parse_model",
        ("d", "ch", "verbose"),
        "yolo_attn.parser:make_parse_model",
        "plugin modules in model YAMLs: rows built through stand-ins the stock parser knows",
    ),
    WrapFunction(
        TASKS,
        "yaml_model_load",
        ("path",),
        "yolo_attn.yaml_load:make_yaml_model_load",
        "YAMLs written by reference (base:/insert:/replace:) are expanded; plugin models get a layer map",
    ),
    WrapFunction(
        "ultralytics.utils.checks",
        "check_file",
        ("file",),
        "yolo_attn.data_checks:make_check_file",
        "the plugin's shipped YAMLs are found by bare name, like Ultralytics' own; a generated data set named by its "
        "YAML is checked against its build record on every use (rebuilt when damaged)",
    ),
    WrapFunction(
        "ultralytics.utils.checks",
        "check_font",
        ("font",),
        "yolo_attn.data_checks:make_check_font",
        "no font download attempt (3 s each, ~10 per run) under YOLO_OFFLINE",
    ),
    WrapFunction(
        DATA_UTILS,
        "check_cls_dataset",
        ("dataset", "split"),
        "yolo_attn.data_checks:make_check_cls_dataset",
        "a generated classification set (named by folder) is built offline where Ultralytics would download it, and "
        "checked against its build record on every use (rebuilt when damaged)",
    ),
    WrapFunction(
        TASKS,
        "torch_safe_load",
        ("weight",),
        "yolo_attn.loadhint:wrap_resolving",
        "a checkpoint naming an entry-point operator resolves it on a safe-load refusal; plugin load errors say what "
        "to do",
    ),
    WrapMethod(
        "load",
        ("self", "weights", "verbose"),
        "yolo_attn.transfer:make_load",
        "stock weights transfer into plugin models across inserted layers (by the layer map)",
        "BaseModel.load(self, weights, verbose) transfers by key and shape",
    ),
    WrapMethod(
        "fuse",
        ("self", "verbose"),
        "yolo_attn.fusion:make_fuse",
        "inference (predict, val, export) folds the operators' own norms and scales, which the stock fuse never "
        "reaches (CoT's dyn_bn, AttnConv's GroupNorm affines, LayerScale γ)",
        "BaseModel.fuse(self, verbose, ...) folds the Conv+BN pairs and returns the model",
    ),
    ParserNamespace(),
    SafeGlobals(),
    OneLineErrors(),
)


# ---- the lifecycle --------------------------------------------------------------------------------------------------

_installed: list = []  # (Patch, undo) in install order; non-empty while registered


def is_registered() -> bool:
    """Return whether the plugin is registered with Ultralytics now."""
    return bool(_installed)


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
    failure.clear()
    problems = [f"{patch.name}: {problem}" for patch, problem in check_all() if problem]
    if problems:
        failure.fail("; ".join(problems))
    patch = None
    try:
        for patch in INVENTORY:
            _installed.append((patch, patch.install()))
    except Exception as e:
        _rollback()
        failure.fail(f"{patch.name}: installing failed: {type(e).__name__}: {e}")


def register_safely() -> bool:
    """`register()` for the start-up hook: never raises (it runs inside `import ultralytics.nn.tasks`)."""
    try:
        register()
        return True
    except RegistrationFailed:
        return False
    except Exception as e:  # a bug of the plugin: Ultralytics must still import
        _rollback()
        failure.fail(f"unexpected {type(e).__name__}: {e}", raise_=False)
        return False


def unregister() -> None:
    """Undo `register()` exactly (reverse order) and cancel a pending start-up registration."""
    drop_startup_watches()
    _rollback()
    failure.clear()


def _rollback() -> None:
    while _installed:
        patch, undo = _installed.pop()
        try:
            undo()
        except Exception as e:  # keep undoing the others; say which one could not be undone
            logging.getLogger("ultralytics").warning(f"yolo_attn: undoing {patch.name} failed: {e}")
