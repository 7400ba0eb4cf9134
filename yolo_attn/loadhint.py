"""Name the plugin when a checkpoint load fails for it while the plugin is off (`YOLO_ATTN_AUTOLOAD=0`).

A plugin checkpoint pickles its layers by their `yolo_attn.*` import path. Loading one without the plugin active
mostly just works: the unpickler imports `yolo_attn.cot` & co., and importing the package activates the plugin. The
exception is Ultralytics' restricted loading (`ULTRALYTICS_SAFE_LOAD=1`, `weights_only=True`), which never imports a
module a checkpoint names; there Ultralytics reports "references types outside the supported Ultralytics checkpoint
format. Use an official Ultralytics model", which sends the user the wrong way. A module missing from the installed
plugin (a checkpoint from another version) gets Ultralytics' "AutoInstall will run now" warning and a bare
ModuleNotFoundError.

`wrap` gives Ultralytics' `torch_safe_load` a better message for exactly those failures and changes nothing else: on
success it returns what Ultralytics returns; on a failure that is not about `yolo_attn` it re-raises the same exception
object; on a failure caused by `yolo_attn` it raises the same exception type with a message that says what to do.
`yolo_attn_hook_off.py` (next to this file) applies it when `ultralytics.nn.tasks` is imported, loading this file by
path (importing the package would activate the plugin). Only the standard library is imported here.
"""

import sys

PLUGIN = "yolo_attn"


class CheckpointModuleMissing(ModuleNotFoundError):
    """A checkpoint holds a layer whose module this process cannot import; the message says how to provide it."""


def _is_plugin_name(name) -> bool:
    return isinstance(name, str) and (name == PLUGIN or name.startswith(PLUGIN + "."))


def _chain(e: BaseException) -> list:
    """The exception and every exception it was raised from or while handling."""
    seen = []
    while e is not None and e not in seen:
        seen.append(e)
        e = e.__cause__ or e.__context__
    return seen


def _plugin_globals(weight) -> list:
    """The `yolo_attn.*` globals that a checkpoint file references (empty if it can't be read as a torch zip)."""
    try:
        import torch

        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(weight))
        return sorted(n for n in names if _is_plugin_name(n))
    except Exception:
        return []


def explain(e: Exception, weight):
    """Return an exception with a message naming the plugin when `e` is a load failure caused by it, else None."""
    import pickle

    chain = _chain(e)
    missing = next((x.name for x in chain if isinstance(x, ModuleNotFoundError) and _is_plugin_name(x.name)), None)
    active = PLUGIN in sys.modules
    if missing and active:  # the plugin is imported but lacks a module the checkpoint names
        version = getattr(sys.modules[PLUGIN], "__version__", "?")
        return ModuleNotFoundError(
            f"{weight} needs the module '{missing}', which the installed yolo_attn {version} does not have: the "
            "checkpoint was saved with another version of the plugin. Install that one (pip install yolo-attn==...)",
            name=missing,
        )
    names = [missing] if missing else []
    if not names and any(isinstance(x, pickle.UnpicklingError) for x in chain):  # weights_only refused a global
        names = _plugin_globals(weight)
    if not names or active:
        return None
    held = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    msg = (
        f"{weight} needs the yolo_attn plugin (it holds {held}), which is installed but not active in this process: "
        "YOLO_ATTN_AUTOLOAD=0 turned its start-up hook off. `import yolo_attn` before loading the checkpoint, or unset "
        "YOLO_ATTN_AUTOLOAD"
    )
    return ModuleNotFoundError(msg, name=PLUGIN) if isinstance(e, ModuleNotFoundError) else type(e)(msg)


def wrap(torch_safe_load, on_refused=None):
    """Ultralytics' `torch_safe_load`, with load failures caused by `yolo_attn` explained (see `explain`).

    Args:
        torch_safe_load (Callable): The function to wrap.
        on_refused (Callable[[list], bool] | None): Called with the globals a checkpoint names when restricted loading
            refused it; returning True retries the load once (the plugin resolves operators from other packages).
    """
    if on_refused is None and getattr(torch_safe_load, "_yolo_attn_hint", False):
        return torch_safe_load

    def torch_safe_load_with_hint(weight, *args, **kwargs):
        try:
            return torch_safe_load(weight, *args, **kwargs)
        except Exception as e:
            if on_refused is not None and _refused(e) and on_refused(_checkpoint_globals(weight)):
                return torch_safe_load(weight, *args, **kwargs)
            hint = explain(e, weight)
            if hint is None:
                raise
            raise hint from e

    torch_safe_load_with_hint.__wrapped__ = torch_safe_load
    torch_safe_load_with_hint.__doc__ = torch_safe_load.__doc__
    torch_safe_load_with_hint._yolo_attn_hint = on_refused is None
    return torch_safe_load_with_hint


def _refused(e: BaseException) -> bool:
    import pickle

    return any(isinstance(x, pickle.UnpicklingError) for x in _chain(e))


def _checkpoint_globals(weight) -> list:
    try:
        import torch

        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(weight)))
    except Exception:
        return []


def patch(tasks) -> None:
    """Wrap `tasks.torch_safe_load` (Ultralytics' `ultralytics.nn.tasks` module). Idempotent."""
    if getattr(tasks, "torch_safe_load", None) is not None:
        tasks.torch_safe_load = wrap(tasks.torch_safe_load)


def wrap_resolving(torch_safe_load):
    """`wrap` for the registered plugin: a safe-load refusal naming operator-table rows (entry points) loads them and
    retries, and a checkpoint holding a layer whose module this process cannot import says which and how to provide
    it before Ultralytics would try to pip-install a package of that name. Only the plugin's inventory calls this; the
    hook-off copy of this file never does."""
    from yolo_attn import operators

    hinted = wrap(torch_safe_load, on_refused=operators.resolve_classes)

    def torch_safe_load_checked(weight, *args, **kwargs):
        missing = missing_layers(weight)
        if missing:
            raise CheckpointModuleMissing(_missing_message(weight, missing), name=missing[0][1].rpartition(".")[0])
        return hinted(weight, *args, **kwargs)

    torch_safe_load_checked.__wrapped__ = torch_safe_load
    torch_safe_load_checked.__doc__ = torch_safe_load.__doc__
    return torch_safe_load_checked


def missing_layers(weight) -> list:
    """Return (layer index, class path, YAML name) for each model layer of checkpoint `weight` whose class this
    process cannot import; empty when every class resolves (the usual case: one read of the pickle's globals).

    A layer built from a YAML name that is not Ultralytics' own came through the plugin (`register_module` or an entry
    point), so such a class is a plugin module the process lacks, not a missing pip requirement.
    """
    try:
        import torch

        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(weight))
    except Exception:
        return []
    absent = {n.rpartition(".")[0] for n in names if not _resolves(*n.rpartition(".")[::2])}
    if not absent:
        return []
    try:
        ckpt = _load_with_stand_ins(weight, absent)
    except Exception:
        return []
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
    layers = getattr(getattr(model, "_modules", {}).get("model"), "_modules", {})
    out = []
    for i, layer in layers.items():
        cls = type(layer)
        if cls.__module__ in absent:
            yaml_name = str(getattr(layer, "type", cls.__name__)).rpartition(".")[2]
            out.append((int(i), f"{cls.__module__}.{cls.__qualname__}", yaml_name))
    return out


def _resolves(module: str, name: str) -> bool:
    """Whether `module.name` can be imported here without importing anything new but `module`'s finder lookup."""
    import importlib.util

    if module == "__main__":
        return hasattr(sys.modules.get("__main__"), name)
    try:
        return module in sys.modules or importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class _StandIn:
    """An object of a class the process cannot import, with its pickled state (read, never run)."""

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {})


def _load_with_stand_ins(weight, absent: set):
    """Load a checkpoint with `_StandIn` subclasses for the classes of the modules in `absent`."""
    import pickle
    import types

    import torch

    made = {}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if module in absent:
                return made.setdefault((module, name), type(name, (_StandIn,), {"__module__": module}))
            return super().find_class(module, name)

    module = types.SimpleNamespace(Unpickler=Unpickler, load=pickle.load, __name__="pickle")
    return torch.load(str(weight), map_location="cpu", weights_only=False, pickle_module=module)


def _missing_message(weight, missing: list) -> str:
    i, path, yaml_name = missing[0]
    module, _, cls = path.rpartition(".")
    more = f" (and {len(missing) - 1} more layers)" if len(missing) > 1 else ""
    return (
        f"{weight}: layer {i} ({yaml_name}) is {path}{more}, a module added to yolo_attn where the model was built, "
        f"and this process cannot import {module!r}. Provide it before loading: install the package that declares "
        f"{yaml_name} in the `yolo_attn.modules` entry points, or import {module!r} and call "
        f"yolo_attn.register_module({cls}) first"
    )
