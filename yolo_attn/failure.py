"""A failed registration: one line that says why, and plugin YAMLs and checkpoints that fail with that line.

When the inventory (`yolo_attn.patches`) cannot register, Ultralytics stays stock. So that a plugin model then fails
with the reason instead of a confusing stock error, `install_reporters` adds names and wrappers that raise
`RegistrationFailed` for the plugin's YAMLs and checkpoints only; `undo_reporters` removes them.
"""

import logging
import sys

from yolo_attn import compat, operators
from yolo_attn.rebind import rebind
from yolo_attn.version import __version__

TASKS = "ultralytics.nn.tasks"


class RegistrationFailed(RuntimeError):
    """The plugin could not register with the installed Ultralytics, which stays stock; the message says why."""


_failure: list = []  # the failure message of the last registration attempt (empty: none)
_reporters: list = []  # undo callables of the failure reporters (installed only after a failed registration)


def last() -> str | None:
    """Return the message of the last failed registration (None when none failed)."""
    return _failure[0] if _failure else None


def clear() -> None:
    """Forget the last failure and remove its reporters (a new registration attempt, or `unregister()`)."""
    undo_reporters()
    _failure.clear()


def message(what: str) -> str:
    """Return the one-line failure message: what failed, the Ultralytics version and the supported range."""
    try:
        version = compat.version()
    except Exception:
        version = "?"
    return (
        f"yolo_attn {__version__} is not active, Ultralytics is left stock: {what} "
        f"(Ultralytics {version}; yolo_attn supports ultralytics{compat.SUPPORTED})"
    )


def fail(what: str, raise_: bool = True) -> None:
    """Record and log the failure, install the reporters, and raise `RegistrationFailed` (unless `raise_` is False)."""
    line = message(what)
    _failure[:] = [line]
    logging.getLogger("ultralytics").warning(line)
    try:
        install_reporters(line)
    except Exception:  # the reporters are a courtesy; Ultralytics must stay importable
        undo_reporters()
    if raise_:
        raise RegistrationFailed(line)


class Unavailable:
    """Stands in `ultralytics.nn.tasks` for an operator name after a failed registration: building it raises why."""

    def __init__(self, name: str, message: str):
        self.name, self.message = name, message

    def __call__(self, *args, **kwargs):
        raise RegistrationFailed(f"{self.name}: {self.message}")

    def __repr__(self) -> str:
        return f"<{self.name}: yolo_attn not active>"


def install_reporters(message: str) -> None:
    """After a failed registration: plugin YAMLs (rows or `base:`) and plugin checkpoints fail with `message`.

    Additions only (names Ultralytics does not have, a wrapper that returns what the stock function returns for
    everything that is not the plugin's): stock YAMLs and checkpoints behave exactly as without the plugin.
    """
    tasks = sys.modules.get(TASKS)
    if tasks is None:
        return
    for op in operators.BUILTINS:
        if op.name not in vars(tasks):
            setattr(tasks, op.name, Unavailable(op.name, message))
            _reporters.append(lambda n=op.name: vars(tasks).pop(n, None))
    load = getattr(tasks, "yaml_model_load", None)
    if callable(load):

        def yaml_model_load(path):
            d = load(path)
            if isinstance(d, dict) and "base" in d and "backbone" not in d:
                raise RegistrationFailed(f"{path} is written by reference (base:): {message}")
            return d

        yaml_model_load._yolo_attn_reporter = True
        rebind("yaml_model_load", load, yaml_model_load)
        _reporters.append(lambda: rebind("yaml_model_load", yaml_model_load, load))
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

        rebind("torch_safe_load", safe_load, torch_safe_load)
        _reporters.append(lambda: rebind("torch_safe_load", torch_safe_load, safe_load))


def undo_reporters() -> None:
    """Remove the failure reporters (no-op when none are installed)."""
    while _reporters:
        _reporters.pop()()
