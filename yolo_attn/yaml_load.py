"""The YAML-loading wrapper: model YAMLs written by reference are expanded, plugin YAMLs' keys checked, layer maps kept.

Ultralytics' `yaml_model_load` reads a model YAML into a dict; the wrapper checks the top-level keys of a plugin YAML
(`yaml_checks`), expands `base:`/`insert:`/`replace:` (`reference`) and records the layer map that lets stock weights
transfer across inserted layers (`transfer`). Installed and removed by the inventory (`yolo_attn.patches`).
"""

from collections.abc import Callable
from pathlib import Path

from yolo_attn import compat, operators
from yolo_attn.reference import InsertionError, expand, is_reference, with_layer_map
from yolo_attn.yaml_checks import check_plugin_yaml, check_sections, name_source, yaml_name


class _PluginNames:
    """The module names that make a YAML a plugin YAML (table rows), tested without importing their classes."""

    def __contains__(self, name: object) -> bool:
        return operators.find(name) is not None


def make_yaml_model_load(original: Callable) -> Callable:
    """Return Ultralytics' `yaml_model_load` that expands YAMLs written by reference and records plugin layer maps."""

    def yaml_model_load(path):
        """Ultralytics' `yaml_model_load` (wrapped by yolo_attn: `base:`/`insert:`/`replace:` and layer maps)."""
        d = original(path)
        check_plugin_yaml(d, _PluginNames())  # a misspelled key (`insrt:`) would silently build another model
        if is_reference(d):
            if compat.is_yolo26_name(d["base"]) and not compat.has_yolo26():
                raise InsertionError(compat.yolo26_message(f"base {d['base']!r} of {Path(str(path)).name}"))
            try:
                expanded = expand(d, yaml_model_load, _insertable_modules(d))  # a base may itself be a plugin YAML
            except InsertionError as e:  # name the file: `yolo train` reports the message in one line
                name_source(e, yaml_name(d, path))
                raise
            d = {**expanded, "scale": d["scale"], "yaml_file": d["yaml_file"]}
        check_sections(d, yaml_name(d, path))  # `bakbone:` would fail as a bare KeyError
        return with_layer_map(d)

    yaml_model_load.__wrapped__ = original
    return yaml_model_load


def _insertable_modules(d: dict) -> dict:
    """Return YAML name -> class for the modules a by-reference YAML inserts or swaps in (resolved from the table)."""
    names = {e[1] for key in ("insert", "replace") for e in (d.get(key) or []) if isinstance(e, list) and len(e) > 1}
    out = {}
    for name in names:
        if isinstance(name, str) and operators.get(name) is not None:
            try:
                out[name] = operators.load(name)
            except operators.RegistrationError as e:
                raise InsertionError(str(e)) from None
    return out
