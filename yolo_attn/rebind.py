"""Rebind a function under every name Ultralytics' loaded modules hold it by (`from x import f` copies the binding)."""

import sys


def rebind(name: str, old: object, new: object) -> list:
    """Point every loaded Ultralytics module's attribute `name` that is `old` at `new`; return those modules' names."""
    done = []
    for module in list(sys.modules.values()):
        mod_name = getattr(module, "__name__", "") or ""
        if mod_name.startswith("ultralytics") and getattr(module, name, None) is old:
            setattr(module, name, new)
            done.append(f"{mod_name}.{name}")
    return done
