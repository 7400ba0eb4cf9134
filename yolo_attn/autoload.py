"""Register the plugin when Ultralytics' model parser is imported, without importing it here.

The `yolo_attn.pth` start-up hook imports `yolo_attn` in every interpreter, so this module must stay nearly free: it
only puts a finder on `sys.meta_path` that watches two kinds of import and registers the plugin once both allow it:

- `ultralytics.nn.tasks`: registration must follow its execution at once, before other modules bind names from it;
- `yolo_attn.*`: an operator module imports Ultralytics, so when it is imported first, the parser is loaded while
  that operator is still half-defined; registration then waits until the operator module has finished.

Imports run one way: `registry` imports this module (its `unregister()` calls `deactivate()`); this module imports
`registry` only at the moment it registers, since importing it means importing torch and Ultralytics.
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
                from yolo_attn.registry import register

                register()

        spec.loader.exec_module = exec_then_register
        return spec


def activate() -> None:
    """Register now if Ultralytics' parser is loaded, otherwise as soon as it is imported."""
    if TARGET in sys.modules:
        from yolo_attn.registry import register

        register()
    elif not any(isinstance(finder, _RegisterOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnImport())


def deactivate() -> None:
    """Cancel a pending registration (`yolo_attn.unregister()` calls this; it also undoes a registration made)."""
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _RegisterOnImport)]
