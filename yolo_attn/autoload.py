"""The start-up trigger: register the plugin when Ultralytics' model parser is imported, without importing it here.

The `yolo_attn.pth` start-up hook imports `yolo_attn` in every interpreter, which calls `activate()`: registration
(`yolo_attn.patches.register_safely`) then runs right after `ultralytics.nn.tasks` has executed, before other modules
bind names from it, and once no plugin module is half-imported (`import_watch`). Registration runs inside
`import ultralytics.nn.tasks` of every interpreter, so no exception may escape from it: a failure leaves Ultralytics
stock and is logged in one line. `yolo_attn.unregister()` cancels a registration still waiting.
"""

from yolo_attn.import_watch import when_imported

TASKS = "ultralytics.nn.tasks"


def activate() -> None:
    """Register now if Ultralytics' parser is loaded, otherwise as soon as it is imported."""
    when_imported(TASKS, register, not_during="yolo_attn.")


def register() -> None:
    """Register the plugin (`patches.register_safely`); nothing raised here may reach the importing code."""
    try:
        from yolo_attn.patches import register_safely

        register_safely()
    except Exception as e:  # the plugin's own modules failed to import: Ultralytics must still import
        import logging

        from yolo_attn.compat import SUPPORTED

        logging.getLogger("ultralytics").warning(
            f"yolo_attn is not active, Ultralytics is left stock: {type(e).__name__}: {e} "
            f"(yolo_attn supports ultralytics{SUPPORTED})"
        )
