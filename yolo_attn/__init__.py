"""yolo_attn: attention operators for Ultralytics YOLO model YAMLs.

Importing the package (which the `yolo_attn.pth` start-up hook does in every interpreter) is cheap: it imports
neither torch nor Ultralytics, nor the operator table. It arranges that the plugin registers itself with Ultralytics'
model parser the moment `ultralytics.nn.tasks` is imported. Every other public name is loaded on first access; the
operators' names come from the operator table (`yolo_attn.operators`).
"""

from yolo_attn.autoload import activate

_ALSO = {  # public names that are not operators: name -> defining module
    "__version__": "yolo_attn.version",
    "register": "yolo_attn.patches",
    "unregister": "yolo_attn.patches",
    "register_module": "yolo_attn.operators",
    "RegistrationError": "yolo_attn.operators",
    "RegistrationFailed": "yolo_attn.failure",
    "attention_maps": "yolo_attn.maps",
    "AttentionMap": "yolo_attn.maps",
}


def _public() -> dict:
    """Return public name -> defining module: the built-in operators, their public parts, and `_ALSO`."""
    from yolo_attn.operators import BUILTINS, EXPORTS

    return {**{op.name: op.module for op in BUILTINS}, **EXPORTS, **_ALSO}


def __getattr__(name: str):
    if name == "__all__":  # `from yolo_attn import *`, computed when asked so start-up does not read the table
        return ["activate", *_public()]
    public = _public()
    if name in public:
        from importlib import import_module

        return getattr(import_module(public[name]), name)
    raise AttributeError(f"module 'yolo_attn' has no attribute {name!r}")


activate()
