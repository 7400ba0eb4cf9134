"""A user's mistake on the plugin's own commands: one line naming it, exit status 2, a traceback only on request.

`yolo-attn` and `yolo-attn-bench` run their command through `run_command`: a `LayerError`, `InsertionError`, unknown
YAML key or missing file is printed as `PROG: error: MESSAGE` (as argparse prints a bad option); `--traceback`
anywhere on the command line shows the full traceback instead. Any other exception is a bug and keeps its traceback.
"""

import sys
from collections.abc import Callable

FLAGS = ("--traceback", "--debug")
HELP = "show the full traceback of an error instead of one line (for debugging and bug reports)"


def user_errors() -> tuple:
    """Return the exception types that report a user's mistake (imported late: they live beside heavy imports)."""
    from yolo_attn.reference import InsertionError
    from yolo_attn.yaml_checks import LayerError, UnknownKeyError

    return LayerError, InsertionError, UnknownKeyError, FileNotFoundError


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
    try:
        return command(argv) or 0
    except Exception as e:
        if debug or not isinstance(e, user_errors()):
            raise
        print(f"{prog}: error: {one_line(e)} (--traceback shows where)", file=sys.stderr)
        return 2
