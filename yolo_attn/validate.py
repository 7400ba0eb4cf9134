"""Build a model YAML the way the `yolo` command would, to find its mistakes before anything else reads it."""

from pathlib import Path

from torch import nn


def build_as_ultralytics(model: str) -> nn.Module:
    """Build the model `yolo train model=MODEL` would build (RT-DETR by its name, else YOLO's task guess); return it.

    Building runs the plugin's checks (rows, options, channels, a probe forward) and Ultralytics' stride forward, so a
    YAML that passes builds in training too. Scale n, the default for an unscaled name, builds in about a second.

    Args:
        model (str): A model YAML name or path.

    Returns:
        (nn.Module): The built model.

    Raises:
        LayerError, InsertionError, UnknownKeyError: For the YAML's mistakes, as in training.
    """
    from ultralytics import RTDETR, YOLO

    # As Ultralytics' `yolo` entry point picks the model class (ultralytics/cfg/__init__.py, 8.4).
    cls = RTDETR if "rtdetr" in Path(model).stem.lower() else YOLO
    return cls(model).model
