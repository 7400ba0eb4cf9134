"""Top-level keys of a plugin model YAML: a misspelled key is an error, not a silently different model.

Ultralytics ignores top-level keys it does not read, so `insrt:` for `insert:` builds the stock model and
`layer_scal: 0.0` drops the identity start without a word. For YAMLs that use the plugin (written by reference, or in
full with plugin modules) every top-level key must be one Ultralytics or the plugin reads; a YAML without plugin
modules keeps Ultralytics' behaviour.
"""

import difflib
from typing import Optional

# Every top-level model-YAML key Ultralytics 8.4 reads (parse_model, yaml_model_load, guess_model_task, the model
# classes) or writes into `model.yaml` (so a YAML dumped from a checkpoint passes), plus YOLOv5's `anchors`, which
# older YAMLs carry and Ultralytics ignores. Generous on purpose: rejecting a key that means something is worse
# than missing a typo.
ULTRALYTICS_KEYS = (
    "nc", "scales", "scale", "backbone", "head", "activation", "depth_multiple", "width_multiple", "kpt_shape",
    "end2end", "reg_max", "channels", "yaml_file", "inplace", "text_model", "anchors",
)  # fmt: skip
PLUGIN_KEYS = ("base", "insert", "replace", "layer_scale", "layer_map")


class UnknownKeyError(ValueError):
    """A top-level key of a plugin model YAML that neither Ultralytics nor the plugin reads."""


def closest(key: str, known: tuple = ULTRALYTICS_KEYS + PLUGIN_KEYS) -> Optional[str]:
    """Return the known key closest to `key` in spelling, or None when none is close."""
    match = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    return match[0] if match else None


def check_keys(d: dict, source: object = "the model YAML") -> None:
    """Raise `UnknownKeyError` for the first top-level key of `d` that no one reads, naming the closest known one.

    Args:
        d (dict): A plugin model YAML dict (by reference, or with plugin modules), as loaded.
        source (object): What to call the YAML in the message (its file name).

    Raises:
        UnknownKeyError: The message names the key, the closest known spelling (if any) and the known keys.
    """
    known = ULTRALYTICS_KEYS + PLUGIN_KEYS
    for key in d:
        if key not in known:
            guess = closest(key, known)
            hint = f"did you mean {guess!r}? " if guess else ""
            raise UnknownKeyError(
                f"{source}: unknown top-level key {key!r}; {hint}Ultralytics would ignore it silently. Expected "
                f"one of {', '.join(PLUGIN_KEYS)} (yolo_attn) or {', '.join(ULTRALYTICS_KEYS)} (Ultralytics)"
            )


def uses_plugin(d: dict, modules: object) -> bool:
    """Return whether a loaded model YAML dict is a plugin YAML: it names a `base:` or a plugin module in a row."""
    rows = [row for part in ("backbone", "head") if isinstance(d.get(part), list) for row in d[part]]
    return "base" in d or any(
        isinstance(row, (list, tuple)) and len(row) > 2 and isinstance(row[2], str) and row[2] in modules
        for row in rows
    )


def check_plugin_yaml(d: dict, modules: object) -> None:
    """Check the top-level keys of `d` when it is a plugin YAML (see `uses_plugin`); leave stock YAMLs alone."""
    if isinstance(d, dict) and uses_plugin(d, modules):
        check_keys(d, d.get("yaml_file") or "the model YAML")
