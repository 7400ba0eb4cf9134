"""Register the plugin when Ultralytics' model parser is imported, without importing it here.

The `yolo_attn.pth` start-up hook imports `yolo_attn` in every interpreter, so this module must stay nearly free: it
only puts a finder on `sys.meta_path` that watches two kinds of import and registers the plugin once both allow it:

- `ultralytics.nn.tasks`: registration must follow its execution at once, before other modules bind names from it;
- `yolo_attn.*`: an operator module imports Ultralytics, so when it is imported first, the parser is loaded while
  that operator is still half-defined; registration then waits until the operator module has finished.

This module imports no other plugin module at module level; at the moment it registers it calls
`yolo_attn.patches.register_safely()`, and nothing imports this module back (`unregister()` removes the finder by its
class name). Registration runs inside `import ultralytics.nn.tasks` of every interpreter, so no exception may escape
from it: a failure leaves Ultralytics stock and is logged in one line.
"""

import sys

TARGET = "ultralytics.nn.tasks"


class _RegisterOnImport:
    """Finds nothing itself; wraps the real loaders of watched modules so registration follows their execution.

    A plain class with `find_spec` is a complete meta path finder; `importlib.abc` would cost ~50 ms at start-up.
    """

    def __init__(self):
        self.plugin_imports_in_flight = 0

    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET and not fullname.startswith("yolo_attn."):
            return None
        others = (f for f in sys.meta_path if f is not self and hasattr(f, "find_spec"))
        spec = next((s for s in (f.find_spec(fullname, path, target) for f in others) if s is not None), None)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module
        is_plugin = fullname != TARGET

        def exec_then_register(module):
            self.plugin_imports_in_flight += is_plugin
            try:
                exec_module(module)
            finally:
                self.plugin_imports_in_flight -= is_plugin
            if TARGET in sys.modules and not self.plugin_imports_in_flight and self in sys.meta_path:
                sys.meta_path.remove(self)
                register()

        spec.loader.exec_module = exec_then_register
        return spec


def register() -> None:
    """Register the plugin (`patches.register_safely`); nothing raised here may reach the importing code."""
    try:
        from yolo_attn.patches import register_safely

        register_safely()
    except Exception as e:  # the plugin's own modules failed to import: Ultralytics must still import
        import logging

        logging.getLogger("ultralytics").warning(
            f"yolo_attn is not active, Ultralytics is left stock: {type(e).__name__}: {e} "
            "(yolo_attn supports ultralytics>=8.3.253,<8.5)"
        )


def activate() -> None:
    """Register now if Ultralytics' parser is loaded, otherwise as soon as it is imported."""
    if TARGET in sys.modules:
        register()
    elif not any(isinstance(finder, _RegisterOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnImport())


def deactivate() -> None:
    """Cancel a pending registration (`yolo_attn.unregister()` does this and undoes a registration made)."""
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _RegisterOnImport)]
