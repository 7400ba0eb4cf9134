"""A user's mistake: one line naming it, a non-zero exit status, a traceback only on request.

- `yolo-attn` and `yolo-attn-bench` run their command through `run_command`: a `LayerError`, `InsertionError`,
  unknown YAML key or missing file is printed as `PROG: error: MESSAGE` (as argparse prints a bad option), exit status
  2; `--traceback` anywhere on the command line shows the full traceback instead.
- Under Ultralytics' own `yolo` command and in scripts, the inventory installs `make_excepthook`: the same mistakes,
  uncaught, print `PROG: error: MESSAGE` instead of a traceback (Python's exit status 1); `YOLO_ATTN_TRACEBACK=1`
  shows the traceback.

Any other exception is a bug or Ultralytics' own, and keeps its traceback.
"""

import os
import sys
from collections.abc import Callable

FLAGS = ("--traceback", "--debug")
HELP = "show the full traceback of an error instead of one line (for debugging and bug reports)"
TRACEBACK_ENV = "YOLO_ATTN_TRACEBACK"  # set to 1 for the full traceback of a mistake under `yolo` and in scripts


def user_errors() -> tuple:
    """Return the exception types that report a user's mistake (imported late: they live beside heavy imports)."""
    from yolo_attn.reference import InsertionError
    from yolo_attn.yaml_checks import LayerError, UnknownKeyError

    return LayerError, InsertionError, UnknownKeyError, FileNotFoundError


def plugin_errors() -> tuple:
    """Return the exception types the plugin raises for a user's mistake, reported in one line under `yolo` too."""
    from yolo_attn.failure import RegistrationFailed
    from yolo_attn.loadhint import CheckpointModuleMissing

    return (*user_errors()[:3], RegistrationFailed, CheckpointModuleMissing)


def make_excepthook(original: Callable) -> Callable:
    """Return `sys.excepthook` that prints the plugin's user errors in one line (see the module doc)."""

    def excepthook(kind, value, tb):
        traceback_asked = os.environ.get(TRACEBACK_ENV, "").lower() in ("1", "true", "yes", "on")
        if isinstance(value, plugin_errors()) and not traceback_asked:
            prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] not in ("", "-c") else "python"
            print(f"{prog}: error: {one_line(value)} ({TRACEBACK_ENV}=1 shows the traceback)", file=sys.stderr)
            return
        original(kind, value, tb)

    excepthook.__wrapped__ = original
    return excepthook


def one_line(e: BaseException) -> str:
    """Return the message of `e` on one line."""
    return " ".join(str(e).split()) or type(e).__name__


def run_command(prog: str, command: Callable[[list], int | None], argv: list | None = None) -> int:
    """Run `command(argv)` (argv without the traceback flags); report a user's mistake in one line, return 2.

    Args:
        prog (str): The command's name, for the message.
        command (Callable[[list], int | None]): Parses its arguments and runs; returns an exit status or None (0).
        argv (list | None): The arguments; default the command line's.

    Returns:
        (int): The command's exit status, or 2 after a user's mistake.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = any(flag in argv for flag in FLAGS)
    argv = [a for a in argv if a not in FLAGS]
    if debug:  # the traceback asked for: the one-line excepthook (see above) steps aside too
        os.environ[TRACEBACK_ENV] = "1"
    try:
        return command(argv) or 0
    except Exception as e:
        if debug or not isinstance(e, user_errors()):
            raise
        print(f"{prog}: error: {one_line(e)} (--traceback shows where)", file=sys.stderr)
        return 2
