"""Import a Python file by its path: the shipped data generators, which live outside the package in a checkout.

The generators in `datasets/` import their siblings (`synth_tasks.py` imports `synth_shapes.py` and `safe_build.py`)
relatively when they are a module of a package, and by name when run as a script. A file imported here becomes a
module of a package made for its folder, so its relative imports find the files beside it, wherever that folder is
(the checkout's `datasets/`, the wheel's `yolo_attn/datasets/`, a copy next to a user's dataset YAML).
"""

import hashlib
import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PREFIX = "yolo_attn_files_"  # the packages made for folders are named this plus a digest of the folder's path


def import_file(file: str | Path) -> ModuleType:
    """Import the Python file `file` as a module of a package for its folder; return the module.

    Once per process and folder: a second call, or a sibling's relative import of the file, gets the same module (so
    module state, such as a build's step counter, is shared).

    Args:
        file (str | Path): A `.py` file.

    Returns:
        (ModuleType): The module, named `yolo_attn_files_<digest of the folder>.<file stem>`.
    """
    file = Path(file).resolve()
    if not file.is_file():
        raise FileNotFoundError(f"no Python file {file}")
    package = PREFIX + hashlib.sha1(str(file.parent).encode()).hexdigest()[:16]
    if package not in sys.modules:
        spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
        spec.submodule_search_locations = [str(file.parent)]  # a namespace package over this one folder
        sys.modules[package] = importlib.util.module_from_spec(spec)
    return importlib.import_module(f"{package}.{file.stem}")
