"""Build a generated data set once, safely, however many processes ask for it at the same time.

Standalone (standard library only), beside the generators that use it (``synth_shapes.py``, ``synth_tasks.py``,
``neon_trees.py``): they hand :func:`build` their arguments and a function that writes the set, and it takes care of
the rest:

* an inter-process lock, the file ``.<set>.lock`` next to the set's folder (:func:`folder_lock`): one process builds,
  the others wait and then use the finished set;
* a record of the finished build (the generator's name and version, its arguments, and for each folder it wrote the
  number of files, their total size and a digest of their names and sizes), written last;
* on every use, a comparison of the folders with that record (:func:`check`: one ``stat`` per file, no file read);
  a set that does not match (files deleted or truncated, a build killed half-way, other arguments) is rebuilt;
* the pieces a writer builds with, so that a build killed at any point leaves nothing that passes for a set:
  :func:`fresh_dir` for hidden ``.partial`` folders, :func:`write_file`, :func:`commit_split` to rename them into place;
* a test hook (:func:`step`): ``$SYNTH_SHAPES_TEST_KILL_AT`` = N kills the process at the N-th step of a build.

See ``docs/data.md``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

__all__ = [
    "Recipe",
    "build",
    "check",
    "listing",
    "folder_lock",
    "lock_file",
    "fresh_dir",
    "write_file",
    "commit_split",
    "remove_partials",
    "step",
    "steps_taken",
]

# The lock file is ``.<set>.lock`` next to the set's folder, not in it: Ultralytics takes an existing classification
# folder for a finished set, so nothing may create the folder before its build is complete.
LOCK_TIMEOUT_ENV = "SYNTH_SHAPES_LOCK_TIMEOUT"  # seconds to wait for another process's build (default 1800)
KILL_ENV = "SYNTH_SHAPES_TEST_KILL_AT"  # test hook: SIGKILL this process at the N-th step of a build
DATA_SUFFIXES = (".jpg", ".txt")  # what the generators write (caches Ultralytics adds, e.g. *.npy, are not counted)
_log = logging.getLogger("ultralytics")  # Ultralytics' logger when it runs us; warnings reach stderr otherwise
_steps = 0


class Recipe(NamedTuple):
    """What a generator records with its arguments, and how it names itself.

    Attributes:
        tag (str): The prefix of its messages (``synth-shapes``).
        generator (str): Its name in the record.
        version (int): Its version; a set recorded by another version is rebuilt.
        names (list): The class names, recorded.
        marker (str): The record's file name in the set's folder.
        describe (Callable[[dict], str]): The set its arguments give, in a few words (for the "building" message).
    """

    tag: str
    generator: str
    version: int
    names: list
    marker: str
    describe: Callable[[dict], str]


def build(root: str | Path, params: dict, write, recipe: Recipe, force: bool = False) -> Path:
    """Build a generated set under ``root`` once, safely with concurrent users; return ``root``.

    A set that matches its record is used at once, without a lock (a finished set may sit on a read-only disk).
    Otherwise the set's lock is taken (waiting for another process's build), the set checked again, and built if
    still needed: the record is deleted first and written last, so a build killed at any point is rebuilt next time.

    Args:
        root (str | Path): The set's folder.
        params (dict): Generator arguments, recorded; a set recorded with others is rebuilt.
        write (Callable[[Path, dict], list[str]]): Writes the set and returns its folders (relative to ``root``).
        recipe (Recipe): The generator's name, version, class names, record file and messages.
        force (bool): Rebuild even a set that matches its record.

    Returns:
        (Path): ``root``.

    Raises:
        OSError: The folder cannot be written (read-only, full disk), naming it.
        TimeoutError: Another process held the lock longer than the timeout, naming the lock file.
    """
    root, tag, marker = Path(root), recipe.tag, recipe.marker
    problem = "a rebuild was asked for" if force else check(root, params, recipe)
    if problem is None:
        return root
    try:
        with folder_lock(root, tag):
            problem = "a rebuild was asked for" if force else check(root, params, recipe)
            if problem is None:  # another process built it while we waited
                return root
            if problem.startswith("not built"):
                _log.info(f"{tag}: building {root.name} ({recipe.describe(params)}) in {root}")
            else:
                _log.warning(f"{tag}: data set {root.name} in {root}: {problem}; rebuilding it")
            try:
                (root / marker).unlink(missing_ok=True)
                folders = write(root, params)
                step()
                record = {"generator": recipe.generator, "version": recipe.version, **params, "names": recipe.names}
                record["folders"] = {f: listing(root / f) for f in folders}
                write_file(root / f".{marker}.partial", (json.dumps(record, indent=1) + "\n").encode())
                os.replace(root / f".{marker}.partial", root / marker)
            except BaseException:
                remove_partials(root)  # frees the space a full disk needs
                raise
    except TimeoutError:
        raise
    except OSError as e:  # cannot write: read-only, full disk, no permission
        raise OSError(
            e.errno,
            f"{tag}: cannot build data set {root.name} in {root} ({problem}): {e.strerror or e}"
            + (f" ({e.filename})" if e.filename else "")
            + "; free space or make the folder writable, or set Ultralytics' datasets_dir to another folder",
        ) from e
    problem = check(root, params, recipe)
    if problem is not None:  # e.g. files deleted while it was being built
        raise RuntimeError(f"{tag}: data set {root.name} in {root} is damaged right after its build: {problem}")
    return root


def check(root: str | Path, params: dict, recipe: Recipe) -> str | None:
    """Compare the set under ``root`` with its record; return None when it matches, else what is wrong.

    Cheap: one ``stat`` per file, no file is read (a set of 2400 files takes a few milliseconds).

    Args:
        root (str | Path): The set's folder.
        params (dict): The generator arguments the set must have been built with.
        recipe (Recipe): The generator (its version and record file).

    Returns:
        (str | None): None for a set that matches its record, else what is wrong, in words.
    """
    root, marker = Path(root), recipe.marker
    try:
        record = json.loads((root / marker).read_text())
    except FileNotFoundError:
        return "not built yet (or its build was interrupted)"
    except (OSError, ValueError) as e:
        return f"its record {root / marker} is unreadable ({e})"
    if not isinstance(record, dict) or not isinstance(record.get("folders"), dict):
        return f"its record {root / marker} lists no files (built by an older version)"
    wanted = {"version": recipe.version, **params}
    changed = [f"{k} {record.get(k)!r} (wanted {v!r})" for k, v in wanted.items() if record.get(k) != v]
    if changed:
        return "built with other arguments: " + ", ".join(changed)
    for folder, want in record["folders"].items():
        have = listing(root / folder)
        if have is None:
            return f"{folder} is missing ({want['files']} files were built)"
        if have["files"] != want["files"]:
            return f"{folder} holds {have['files']} files, the build wrote {want['files']}"
        if have != want:
            return f"{folder}: file names or sizes differ from the build ({have['bytes']} bytes, {want['bytes']} built)"
    return None


def listing(folder: Path) -> dict | None:
    """Count, total size and digest of the names and sizes of the data files under ``folder``; None if missing."""
    if not folder.is_dir():
        return None
    entries, stack = [], [("", str(folder))]
    while stack:  # os.scandir: no path joins, the cheapest walk the standard library offers
        rel, path = stack.pop()
        with os.scandir(path) as it:
            for e in it:
                if e.is_dir():
                    stack.append((f"{rel}{e.name}/", e.path))
                elif e.name.endswith(DATA_SUFFIXES):
                    entries.append((rel + e.name, e.stat().st_size))
    entries.sort()
    digest = hashlib.sha1("".join(f"{n}\t{s}\n" for n, s in entries).encode()).hexdigest()
    return {"files": len(entries), "bytes": sum(s for _, s in entries), "digest": digest}


@contextlib.contextmanager
def folder_lock(root: Path, tag: str, timeout: float | None = None):
    """Hold the inter-process lock of the set in ``root`` (the file ``.<set>.lock`` next to it, created if needed).

    ``fcntl.flock`` (``msvcrt.locking`` on Windows): the system releases it when its holder exits, even on SIGKILL,
    so a stale lock file never blocks anyone. Waits up to ``timeout`` seconds (default: ``$SYNTH_SHAPES_LOCK_TIMEOUT``
    or 1800), then raises a ``TimeoutError`` naming the lock file and its holder; ``tag`` starts the messages.
    """
    timeout = float(os.environ.get(LOCK_TIMEOUT_ENV, 1800)) if timeout is None else timeout
    path, deadline, told = lock_file(root), time.monotonic() + timeout, False
    while True:
        try:
            root.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except PermissionError:  # another user's lock file: flock needs no write access (no pid noted then)
                fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise OSError(e.errno, f"cannot create the lock file: {e.strerror or e}", str(path)) from e
        try:
            while not _try_lock(fd):
                holder = _read_pid(fd)
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{tag}: waited {timeout:.0f} s for the lock file {path}, held by process {holder} "
                        f"building data set {root.name}; set {LOCK_TIMEOUT_ENV} to wait longer"
                    )
                if not told:
                    _log.info(f"{tag}: waiting for process {holder} building {root.name} (lock file {path})")
                    told = True
                time.sleep(0.2)
            try:  # the lock file may have been deleted (the folder removed) while we waited: then it guards nothing
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                with contextlib.suppress(OSError):  # who holds it, for the message of a process that times out
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()}\n".encode())
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield path
    finally:
        os.close(fd)  # releases the lock


def lock_file(root: Path) -> Path:
    """The lock file of the set in ``root``."""
    return root.parent / f".{root.name}.lock"


def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # Windows: lock the first byte
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return True
    except (BlockingIOError, PermissionError):
        return False
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EDEADLK):
            return False
        raise


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode().strip() or "?"
    except (OSError, AttributeError, UnicodeDecodeError):  # os.pread is POSIX only
        return "?"


def fresh_dir(path: Path) -> Path:
    """Empty folder at ``path`` (a leftover of an interrupted build removed first)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def write_file(path: Path, data: bytes) -> None:
    """Write one file of a build (a step of the test hook)."""
    path.write_bytes(data)
    step()


def commit_split(root: Path, split: str, parts: dict[str, Path]) -> None:
    """Rename a split's ``.partial`` folders into place, ``images`` (Ultralytics' sign of a finished set) last."""
    (root / "labels" / f"{split}.cache").unlink(missing_ok=True)  # Ultralytics' cache of the replaced labels
    for _, partial in sorted(parts.items(), key=lambda kv: kv[0] == "images"):
        final = partial.with_name(split)
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        step()


def remove_partials(root: Path) -> None:
    """Remove what an interrupted build left (its hidden ``.partial`` folders and files)."""
    for path in [root.with_name(f".{root.name}.partial"), *root.glob(".*.partial"), *root.glob("*/.*.partial")]:
        with contextlib.suppress(OSError):  # best effort: the error that stopped the build is the one to report
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def step() -> None:
    """Count a step of a build (a file written, a folder renamed, the record about to be written).

    Test hook: with ``$SYNTH_SHAPES_TEST_KILL_AT`` = N, SIGKILL this process at the N-th step, to test that a killed
    build is recovered. Steps are counted only while that variable is set.
    """
    global _steps
    at = os.environ.get(KILL_ENV)
    if at:
        _steps += 1
        if _steps == int(at):
            os.kill(os.getpid(), signal.SIGKILL)


def steps_taken() -> int:
    """The number of build steps this process has counted (while ``$SYNTH_SHAPES_TEST_KILL_AT`` was set)."""
    return _steps
