"""yolo_attn: attention operators for Ultralytics YOLO model YAMLs.

Importing the package (which the `yolo_attn.pth` start-up hook does in every interpreter) is cheap: it imports
neither torch nor Ultralytics. It arranges that the plugin registers itself with Ultralytics' model parser the
moment `ultralytics.nn.tasks` is imported. The operators are loaded on first attribute access; their names come from
the operator table (`yolo_attn.operators`).
"""

from yolo_attn.autoload import activate
from yolo_attn.operators import BUILTINS, EXPORTS
from yolo_attn.version import __version__

_LAZY = {
    **{op.name: op.module for op in BUILTINS},
    **EXPORTS,
    "register": "yolo_attn.patches",
    "unregister": "yolo_attn.patches",
    "register_module": "yolo_attn.operators",
    "RegistrationError": "yolo_attn.operators",
    "RegistrationFailed": "yolo_attn.failure",
    "attention_maps": "yolo_attn.maps",
    "AttentionMap": "yolo_attn.maps",
}

__all__ = ["__version__", "activate", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'yolo_attn' has no attribute {name!r}")


activate()
