"""What the start-up hook runs instead of `import yolo_attn` when `YOLO_ATTN_AUTOLOAD=0`: the top-level module
`yolo_attn_hook_off`, imported from this folder (so it is byte-compiled like any module), not as part of the package.

The plugin stays off: nothing is registered and the package is not imported, so a later `import yolo_attn` activates
it as usual. One thing is arranged: when `ultralytics.nn.tasks` is imported, its `torch_safe_load` is wrapped so that a
checkpoint which needs the plugin says so (`loadhint.py`, next to this file, loaded then). This runs at every
interpreter start with the hook off, so it stays this small and imports nothing.
"""

import sys

TARGET = "ultralytics.nn.tasks"


class _HintOnImport:
    """Finds nothing itself; wraps the loader of `ultralytics.nn.tasks` so that the patch follows its execution.

    Another finder that wraps loaders (the plugin's autoload finder, once `import yolo_attn` installs it) is asked for
    the spec like any finder; `busy` keeps the two from asking each other in a circle.
    """

    yolo_attn_hook_off = True  # how the plugin's `unregister()` recognises this finder (no import of this module)

    def __init__(self):
        self.busy = False

    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET or self.busy:
            return None
        self.busy = True
        try:
            others = (f for f in sys.meta_path if f is not self and hasattr(f, "find_spec"))
            spec = next((s for s in (f.find_spec(fullname, path, target) for f in others) if s is not None), None)
        finally:
            self.busy = False
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_patch(module):
            exec_module(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            _loadhint().patch(module)

        spec.loader.exec_module = exec_then_patch
        return spec


def _loadhint():
    """`loadhint.py` from this file's folder, as a module of its own (not `yolo_attn.loadhint`: no package import)."""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), "loadhint.py")
    spec = importlib.util.spec_from_file_location("yolo_attn_loadhint", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def install() -> None:
    """Patch now if Ultralytics' tasks module is loaded, otherwise as soon as it is imported. Idempotent."""
    if TARGET in sys.modules:
        _loadhint().patch(sys.modules[TARGET])
    elif not any(isinstance(f, _HintOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _HintOnImport())


if __name__ == "yolo_attn_hook_off":  # imported by the start-up hook (yolo_attn.pth), not as yolo_attn.<this file>
    install()
