"""pytest plugin for .ci/run: the fast set must test the installed wheel, never the checkout it runs from.

Loaded with `-p installed_wheel` (PYTHONPATH=.ci) in the controller and in every pytest-xdist worker; stops the session
before any test runs if `yolo_attn` or its shipped data would be imported or read from the checkout.
"""

from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    """Fail unless `yolo_attn`, its model YAMLs and its data sets come from site-packages (the wheel's install)."""
    import yolo_attn
    from yolo_attn.lookup import shipped_dir

    package = Path(yolo_attn.__file__).resolve().parent
    data = [shipped_dir("model_yamls").resolve(), shipped_dir("datasets").resolve()]
    for path in (package, *data):
        if path == CHECKOUT or CHECKOUT in path.parents or "site-packages" not in path.parts:
            raise pytest.UsageError(f"installed-wheel check: {path} is not in site-packages (checkout {CHECKOUT})")
    if not hasattr(config, "workerinput"):  # once, in the controller
        print(f"installed-wheel check: yolo_attn {package}, shipped data {data[0].parent}")
