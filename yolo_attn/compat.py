"""What differs between the Ultralytics releases the plugin supports, in one place, with the release of each change.

The plugin reads these instead of importing a name that a release may lack. Measured release by release in
`docs/compatibility.md`; the version matrix (`scripts/version_matrix.sh`) tests the range's ends.

| what                                             | from release | before it                                         |
|--------------------------------------------------|--------------|---------------------------------------------------|
| `ultralytics.utils.env_bool`                     | 8.4.93       | absent: `env_bool` below reads the variable itself|
| `ultralytics.nn.tasks._SafeLoad`                 | 8.4.67       | `parse_model` does `Conv.default_act = eval(act)` |
| `parse_model` restores `Conv.default_act`        | 8.4.164      | a YAML's `activation:` stays set process-wide     |
| MuSGD sends only 2-D/4-D parameters to Muon      | 8.4.108      | every ndim >= 2 (LayerScale γ is therefore 1-D)   |
| `C3k2(c1, c2, n, c3k, e, attn, g, shortcut)`     | 8.4.0        | no `attn`: twins bind to the installed signature  |
| YOLO26 (`yolo26*.yaml`, `Segment26`, ...)        | 8.4.0        | absent: such YAMLs fail naming 8.4.0              |
"""

import os
import re

SUPPORTED = ">=8.3.253,<8.5"  # the range pyproject.toml declares and the version matrix tests
FLOOR, CEILING = (8, 3, 253), (8, 5)
YOLO26_RELEASE = "8.4.0"
YOLO26_MODULES = ("Segment26", "Pose26", "OBB26", "YOLOESegment26")  # output modules added with YOLO26


def version() -> str:
    """Return the installed Ultralytics version (its `__version__`), '?' if it cannot be read."""
    import ultralytics

    return str(getattr(ultralytics, "__version__", "?"))


def version_tuple(v: str) -> tuple:
    """Return the leading numeric parts of a version string, e.g. '8.4.190' -> (8, 4, 190)."""
    return tuple(int(p) for p in re.findall(r"\d+", v.split("+")[0])[:3])


def in_range(v: str | None = None) -> bool:
    """Return whether Ultralytics version `v` (default: the installed one) is inside `SUPPORTED`."""
    t = version_tuple(v or version())
    return FLOOR <= t and t[:2] < CEILING


def env_bool(name: str, default: bool = False) -> bool:
    """Read a boolean environment variable as Ultralytics' `env_bool` (8.4.93+) does, on every release."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on", "y", "t"}


def has_yolo26() -> bool:
    """Return whether the installed Ultralytics has YOLO26 (8.4.0+)."""
    import ultralytics.nn.modules as modules

    return hasattr(modules, "Segment26")


def yolo26_message(what: str) -> str:
    """Return the error text for a YOLO26 model on a release without it."""
    return (
        f"{what} is a YOLO26 model, which needs Ultralytics >= {YOLO26_RELEASE}; installed: Ultralytics {version()}. "
        f"Upgrade (pip install 'ultralytics>={YOLO26_RELEASE},<8.5') or use a YOLO11/YOLOv8 model"
    )


def is_yolo26_name(name: str) -> bool:
    """Return whether a model YAML name is a YOLO26 one (`yolo26n.yaml`, `yolo26-seg.yaml`, `yolo26n-cot.yaml`)."""
    return re.match(r"yolo26", os.path.basename(str(name))) is not None


def yaml_activation(spec: str | None, tasks, default):
    """Return the module a YAML's top-level `activation:` names, resolved as the installed parser resolves it.

    Args:
        spec (str | None): The YAML's `activation:` value.
        tasks (module): `ultralytics.nn.tasks`.
        default (nn.Module): The activation when `spec` is empty (Ultralytics' pristine `Conv.default_act`).

    Returns:
        (nn.Module): The activation module.
    """
    if not spec:
        return default
    safe = getattr(tasks, "_SafeLoad", None)  # 8.4.67+: no eval under restricted loading
    if safe is not None and safe.restricted():
        return safe.activation(spec)
    return eval(spec, vars(tasks))  # what every release's parser does without restricted loading


def bind_to(stock: type, names: list, values: list) -> list:
    """Return the positional arguments of `stock` after (c1, c2, n) for a twin's YAML options, matched by name.

    A CoT twin's options follow the newest stock signature (`C3k2`'s `attn` from 8.4.0); the installed stock block may
    lack some. Options it lacks are left out, the others keep their names' positions in the installed signature.

    Args:
        stock (type): The installed stock block (its constructor is read with `inspect`).
        names (list): The twin's option names after (c1, c2, n), in order.
        values (list): The YAML values given for the first `len(values)` of them.

    Returns:
        (list): Positional arguments for `stock` after (c1, c2, n), up to the last one given.
    """
    import inspect

    given = dict(zip(names, values))
    params = list(inspect.signature(stock).parameters)[3:]
    out = []
    for p in params:
        if p not in given:
            break
        out.append(given[p])
    return out
