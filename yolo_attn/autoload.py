"""Register the plugin when Ultralytics' model parser is imported, without importing it here.

The `yolo_attn.pth` start-up hook imports `yolo_attn` in every interpreter, so this module must stay nearly free: it
only puts a finder on `sys.meta_path` that watches three kinds of import:

- `ultralytics.nn.tasks`: registration must follow its execution at once, before other modules bind names from it;
- `yolo_attn.*`: an operator module imports Ultralytics, so when it is imported first, the parser is loaded while
  that operator is still half-defined; registration then waits until the operator module has finished;
- `ultralytics.data.utils` (`LATER`): one patch wraps a function defined there, and that module may still be
  executing when the parser registers (it imports the parser halfway through), so that patch is installed when the
  module has finished (`patches.later_module_imported`). The finder leaves once both have happened.

This module imports no other plugin module at module level; at the moment it registers it calls
`yolo_attn.patches.register_safely()`. `patches` reads `LATER`/`imported` from here, and `unregister()` removes the
finder by its class name. Registration runs inside `import ultralytics.nn.tasks` of every interpreter, so no exception
may escape from it: a failure leaves Ultralytics stock and is logged in one line.
"""

import sys

TARGET = "ultralytics.nn.tasks"
LATER = "ultralytics.data.utils"


def imported(name: str) -> bool:
    """Return whether module `name` has finished importing (not absent, not still executing).

    The import system marks a module whose code is still running with `__spec__._initializing` (CPython's own test
    for a partially initialised module); where that mark is absent the module counts as finished.
    """
    spec = getattr(sys.modules.get(name), "__spec__", None)
    return name in sys.modules and not getattr(spec, "_initializing", False)


class _RegisterOnImport:
    """Finds nothing itself; wraps the real loaders of watched modules so registration follows their execution.

    A plain class with `find_spec` is a complete meta path finder; `importlib.abc` would cost ~50 ms at start-up.
    """

    def __init__(self):
        self.plugin_imports_in_flight = 0
        self.registered = False

    def find_spec(self, fullname, path, target=None):
        if fullname not in (TARGET, LATER) and not fullname.startswith("yolo_attn."):
            return None
        others = (f for f in sys.meta_path if f is not self and hasattr(f, "find_spec"))
        spec = next((s for s in (f.find_spec(fullname, path, target) for f in others) if s is not None), None)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module
        is_plugin = fullname.startswith("yolo_attn.")

        def exec_then_register(module):
            self.plugin_imports_in_flight += is_plugin
            try:
                exec_module(module)
            finally:
                self.plugin_imports_in_flight -= is_plugin
            if self not in sys.meta_path:  # unregistered meanwhile
                return
            if not self.registered and TARGET in sys.modules and not self.plugin_imports_in_flight:
                self.registered = True
                register()
            if fullname == LATER:
                later_imported()
            if self.registered and (fullname == LATER or imported(LATER)):
                sys.meta_path.remove(self)

        spec.loader.exec_module = exec_then_register
        return spec


def register() -> None:
    """Register the plugin (`patches.register_safely`); nothing raised here may reach the importing code."""
    try:
        from yolo_attn.patches import register_safely

        register_safely()
    except Exception as e:  # the plugin's own modules failed to import: Ultralytics must still import
        _warn(
            f"yolo_attn is not active, Ultralytics is left stock: {type(e).__name__}: {e} "
            "(yolo_attn supports ultralytics>=8.3.253,<8.5)"
        )


def later_imported() -> None:
    """`LATER` has executed: install what waited for it, if the plugin is registered; never raises."""
    patches = sys.modules.get("yolo_attn.patches")
    if patches is not None:
        try:
            patches.later_module_imported()
        except Exception as e:  # a plugin bug must not break the import of an Ultralytics module
            _warn(f"yolo_attn: a patch waiting for {LATER} could not be installed: {type(e).__name__}: {e}")


def _warn(message: str) -> None:
    import logging

    logging.getLogger("ultralytics").warning(message)


def activate() -> None:
    """Register now if Ultralytics' parser is loaded, otherwise as soon as it is imported."""
    if TARGET in sys.modules:
        register()  # a patch waiting for LATER puts the finder on itself (`watch_later`)
    else:
        _insert_finder(registered=False)


def watch_later() -> None:
    """Make sure `LATER`'s import is watched (a registered patch waits for it)."""
    _insert_finder(registered=True)


def _insert_finder(registered: bool) -> None:
    if not any(isinstance(finder, _RegisterOnImport) for finder in sys.meta_path):
        finder = _RegisterOnImport()
        finder.registered = registered
        sys.meta_path.insert(0, finder)
