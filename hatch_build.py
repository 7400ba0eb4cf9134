"""Hatchling build hook: an editable install carries the start-up hook but no copy of the shipped data.

A wheel ships `model_yamls/` and `datasets/` inside the package (`force-include` in pyproject.toml). Hatchling's
editable wheel would copy them as well, into a `site-packages/yolo_attn/` folder that goes stale as the checkout
changes and that `pip uninstall` leaves behind, where it imports as an empty namespace package. An editable install
reads the data from the checkout instead (`yolo_attn.lookup.shipped_dir`).
"""

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class EditableWithoutData(BuildHookInterface):
    """For editable builds, force-include only the `.pth` start-up hook."""

    def initialize(self, version: str, build_data: dict) -> None:
        """Replace the forced inclusions of an editable build (a standard wheel keeps pyproject's)."""
        if version == "editable":
            build_data["force_include_editable"] = {"yolo_attn/yolo_attn.pth": "yolo_attn.pth"}
