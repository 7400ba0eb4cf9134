"""The shipped data sets (synth-shapes, neon-trees): built on first use, checked on every use, one build for many users.

The generators in `datasets/` build and check a set themselves (`safe_build.build`: an inter-process lock on the
set's folder, a record of the files written, a rebuild of a set that no longer matches it). Ultralytics runs them
through a detection/segment/pose/OBB dataset YAML's `download:` snippet, but only while the YAML's `val` folder is
missing, and would download a missing classification set; the functions here run them on every use instead, from the
plugin's Ultralytics glue:

- `ensure_yaml_dataset(file)`: for a dataset YAML with a generator's arguments (a `synth:` or `neon_trees:` key; what
  `check_file` returns for `data=`);
- `ensure_cls_dataset(dataset)`: for the classification sets, named by folder (what `check_cls_dataset` is given).

A set that matches its record costs one `stat` per file (a few milliseconds for the 1000/200 sets).
"""

import os
from pathlib import Path

from yolo_attn.by_path import import_file
from yolo_attn.lookup import shipped_dir

CLS_DATASETS = {  # folder name -> generator arguments (the scenes of synth-shapes.yaml / synth-shapes-tiny.yaml)
    "synth-shapes-cls": {"n_train": 1000, "n_val": 200, "imgsz": 320, "seed": 0},
    "synth-shapes-cls-tiny": {"n_train": 16, "n_val": 8, "imgsz": 128, "seed": 0},
}
ARGUMENT_KEYS = ("synth", "neon_trees")  # a dataset YAML's key holding its generator's arguments


def _generator_file(key: str, arguments: dict) -> str:
    """The generator (beside the YAML) whose `ensure(path, **arguments)` builds the set of a YAML with `key`."""
    if key == "neon_trees":
        return "neon_trees.py"
    return "synth_tasks.py" if "task" in arguments else "synth_shapes.py"


def ensure_yaml_dataset(file):
    """Build, or rebuild when damaged, the set of a generated dataset YAML before Ultralytics reads it; return `file`.

    Acts on a `.yaml`/`.yml` file carrying a generator's arguments (`synth:` in the shipped `synth-shapes*.yaml`,
    `neon_trees:` in `neon-trees.yaml`, and copies of them); anything else is returned untouched at the cost of one
    small read. The set's folder is resolved
    as Ultralytics' `check_det_dataset` resolves `path:`, and the generator next to the YAML is used, as its
    `download:` snippet does (the shipped one when the YAML was copied alone).

    Args:
        file (object): What Ultralytics' `check_file` returned (a path string, or a list for a glob).

    Returns:
        (object): `file`, unchanged.
    """
    if not isinstance(file, (str, Path)) or not str(file).endswith((".yaml", ".yml")) or not os.path.isfile(file):
        return file
    with open(file, encoding="utf-8", errors="replace") as f:
        text = f.read()
    if not any(f"\n{key}:" in text for key in ARGUMENT_KEYS):
        return file
    import yaml
    from ultralytics.data import utils as data_utils

    data = yaml.safe_load(text)
    key = next((k for k in ARGUMENT_KEYS if isinstance(data, dict) and isinstance(data.get(k), dict)), None)
    if key is None:
        return file
    path = Path(data.get("path") or Path(file).parent)
    if not path.exists() and not path.is_absolute():  # as check_det_dataset: relative to cwd, else datasets_dir
        path = (Path(data_utils.DATASETS_DIR) / path).resolve()
    name = _generator_file(key, data[key])
    generator = Path(file).with_name(name)
    import_file(generator if generator.is_file() else shipped_dir("datasets") / name).ensure(path, **data[key])
    return file


def ensure_cls_dataset(dataset: object) -> None:
    """Build, or rebuild when damaged, a shipped classification set named by `dataset` (`synth-shapes-cls[-tiny]`).

    The folder is resolved as Ultralytics' `check_cls_dataset` resolves it (an existing folder of that name, else
    under datasets_dir). Other data sets are left alone.

    Args:
        dataset (object): What `data=` names.
    """
    if not isinstance(dataset, (str, Path)) or Path(dataset).name not in CLS_DATASETS:
        return
    from ultralytics.data import utils as data_utils

    folder = Path(dataset) if Path(dataset).is_dir() else Path(data_utils.DATASETS_DIR) / dataset
    arguments = CLS_DATASETS[Path(dataset).name]
    import_file(shipped_dir("datasets") / "synth_tasks.py").ensure(folder.resolve(), "classify", **arguments)
