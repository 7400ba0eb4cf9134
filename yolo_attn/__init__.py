"""yolo_attn: attention operators for Ultralytics YOLO model YAMLs.

Importing the package (which the `yolo_attn.pth` start-up hook does in every interpreter) is cheap: it imports
neither torch nor Ultralytics. It arranges that the plugin registers itself with Ultralytics' model parser the
moment `ultralytics.nn.tasks` is imported. The operators are loaded on first attribute access.
"""

from yolo_attn.autoload import activate

__version__ = "0.1.0"

_LAZY = {
    "CoordAtt": "yolo_attn.coord_att",
    "CoTAttention": "yolo_attn.cot",
    "CoTBottleneck": "yolo_attn.cot",
    "C2f_CoT": "yolo_attn.cot",
    "C3k2_CoT": "yolo_attn.cot",
    "AttnConv": "yolo_attn.attn_conv",
    "attention_maps": "yolo_attn.maps",
    "AttentionMap": "yolo_attn.maps",
    "register": "yolo_attn.registry",
    "unregister": "yolo_attn.registry",
}

__all__ = ["activate", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'yolo_attn' has no attribute {name!r}")


activate()
