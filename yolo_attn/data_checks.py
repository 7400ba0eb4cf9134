"""Ultralytics' file, data-set and font checks, wrapped: shipped YAMLs by bare name, generated sets built offline.

Installed and removed by the inventory (`yolo_attn.patches`).
"""

from collections.abc import Callable
from pathlib import Path

from ultralytics.utils import USER_CONFIG_DIR

from yolo_attn import compat
from yolo_attn.lookup import find_shipped
from yolo_attn.synth_data import ensure_cls_dataset, ensure_yaml_dataset


def make_check_cls_dataset(original: Callable) -> Callable:
    """Return Ultralytics' `check_cls_dataset` that builds, or rebuilds when damaged, a generated classification set."""

    def check_cls_dataset(dataset, *args, **kwargs):
        """Ultralytics' `check_cls_dataset` (wrapped by yolo_attn: generated sets built offline and checked)."""
        ensure_cls_dataset(dataset)
        return original(dataset, *args, **kwargs)

    check_cls_dataset.__wrapped__ = original
    return check_cls_dataset


def make_check_file(original: Callable) -> Callable:
    """Return Ultralytics' `check_file` that also finds the plugin's shipped YAMLs by bare name."""

    def check_file(file, *args, **kwargs):
        """Ultralytics' `check_file` (wrapped by yolo_attn: shipped YAMLs by bare name, generated sets checked)."""
        return ensure_yaml_dataset(original(find_shipped(file) or file, *args, **kwargs))

    check_file.__wrapped__ = original
    return check_file


def make_check_font(original: Callable) -> Callable:
    """Return Ultralytics' `check_font`, except that with `YOLO_OFFLINE` set it makes no download attempt.

    The stock function ignores `YOLO_OFFLINE` and tries a 3 s request for a missing font, about 10 times per training
    run. Offline, a font that is already there (Ultralytics' config dir, matplotlib's font list) is returned as usual;
    otherwise None, on which Ultralytics' plotting uses PIL's built-in font, as after a failed download.
    """

    def check_font(font: str = "Arial.ttf"):
        """Ultralytics' `check_font` (wrapped by yolo_attn: no download attempt under YOLO_OFFLINE)."""
        if not compat.env_bool("YOLO_OFFLINE"):
            return original(font)
        from matplotlib import font_manager

        file = USER_CONFIG_DIR / Path(font).name
        if file.exists():
            return file
        fonts = font_manager.fontManager.ttflist
        return next((f.fname for f in fonts if font in f.fname and Path(f.fname).exists()), None)

    check_font.__wrapped__ = original
    return check_font
