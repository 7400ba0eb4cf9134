"""Build the shipped classification data set, `synth-shapes-cls`, offline on first use.

Ultralytics builds the detection, segment, pose and OBB versions of synth-shapes itself: their dataset YAMLs carry a
`download:` snippet that runs the generator in `datasets/`. A classification data set is named by its folder instead
(`data=synth-shapes-cls`), and for a missing folder Ultralytics downloads `<name>.zip` from its asset server; for the
plugin's own names `build_offline` generates the folder there instead.
"""

import importlib.util
from pathlib import Path

from yolo_attn.lookup import shipped_dir

CLS_DATASETS = {  # folder name -> generator arguments (the scenes of synth-shapes.yaml / synth-shapes-tiny.yaml)
    "synth-shapes-cls": {"n_train": 1000, "n_val": 200, "imgsz": 320, "seed": 0},
    "synth-shapes-cls-tiny": {"n_train": 16, "n_val": 8, "imgsz": 128, "seed": 0},
}


def build_offline(url: object, folder: object) -> bool:
    """Build a shipped classification data set where Ultralytics would download it; return whether it did.

    For a missing `data=synth-shapes-cls`, Ultralytics' `check_cls_dataset` downloads `<asset server>/<name>.zip`
    into its datasets_dir. The plugin's `download` wrapper calls this first: for the plugin's own names it writes the
    folder with the generator in `datasets/` instead, and Ultralytics then finds it as if downloaded.

    Args:
        url (object): What Ultralytics asked to download.
        folder (object): The folder the archive would be unpacked into.
    """
    name = Path(str(url)).name
    if isinstance(url, (list, tuple)) or folder is None or not name.endswith(".zip") or name[:-4] not in CLS_DATASETS:
        return False
    from ultralytics.utils import LOGGER

    root = Path(folder) / name[:-4]
    spec = importlib.util.spec_from_file_location("synth_tasks", shipped_dir("datasets") / "synth_tasks.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    LOGGER.info(f"yolo_attn: building {name[:-4]} offline with the synth-shapes generator in {root}")
    generator.generate(root, "classify", **CLS_DATASETS[name[:-4]])
    return True
