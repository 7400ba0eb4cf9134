"""Find the YAMLs shipped with the plugin by bare name, as Ultralytics finds its own."""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(name: str) -> Path:
    """Return a shipped data folder (`model_yamls` or `datasets`).

    A wheel carries it inside the package; a source checkout (or editable install) has it at the repository root.
    """
    packaged = _PACKAGE / name
    return packaged if packaged.is_dir() else _PACKAGE.parent / name


def find_shipped(file: str | Path) -> Path | None:
    """Return the shipped YAML named by a bare file name, or None.

    Anything that is not a bare `*.yaml` name, or that exists in the working directory, is left to Ultralytics: the
    user's own file takes precedence. Scale letters (`yolov8n-ca.yaml`) need no handling here because Ultralytics
    retries with the scale-free name (`yolov8-ca.yaml`) itself.
    """
    name = str(file).strip()
    if not name.endswith((".yaml", ".yml")) or Path(name).name != name or Path(name).exists():
        return None
    for folder in ("model_yamls", "datasets"):
        path = shipped_dir(folder) / name
        if path.is_file():
            return path
    return None
