"""Run a callback when a module has finished importing, without importing it: `when_imported(name, callback)`.

The plugin must act right after Ultralytics' parser module executes (registration) and after one data module
executes (a late patch), in every interpreter, without importing either itself. A meta path finder, present only while
something waits, wraps the loaders of the modules of the watched packages (`ultralytics.*` for a watch of
`ultralytics.nn.tasks`), so a callback follows its module's execution, even one registered while that module is still
executing (the data module imports the parser halfway through). A callback may also wait until no module of a package
is still executing (`not_during="yolo_attn."`): an operator module that imports Ultralytics loads the parser while
that operator is half-defined, and registration, which imports the operators, must wait until it has finished.

A leaf: only the standard library, imported at every interpreter start (the `.pth` hook imports the package), so it
stays nearly free. Callbacks must not raise; whoever registers one wraps it accordingly.
"""

import sys

TYPE_CHECKING = False  # `typing` and `collections` would cost ~10 ms at every interpreter start
if TYPE_CHECKING:
    from collections.abc import Callable


def imported(name: str) -> bool:
    """Return whether module `name` has finished importing (not absent, not still executing).

    The import system marks a module whose code is still running with `__spec__._initializing` (CPython's own test
    for a partially initialised module); where that mark is absent the module counts as finished.
    """
    spec = getattr(sys.modules.get(name), "__spec__", None)
    return name in sys.modules and not getattr(spec, "_initializing", False)


class Watch:
    """One pending callback; `cancel()` drops it (a no-op once it has run)."""

    def __init__(self, name: str, callback: "Callable[[], None]", not_during: str):
        self.name, self.callback, self.not_during = name, callback, not_during

    def ready(self) -> bool:
        done = imported(self.name) or self.name in _finder.executed
        return done and not (self.not_during and _finder.executing(self.not_during))

    def cancel(self) -> None:
        if self in _finder.watches:
            _finder.watches.remove(self)
            _finder.leave_if_idle()


class _Finder:
    """Finds nothing itself; wraps the real loaders of watched modules so the callbacks follow their execution.

    A plain class with `find_spec` is a complete meta path finder; `importlib.abc` would cost ~50 ms at start-up.
    """

    def __init__(self):
        self.watches: list = []
        self.in_flight: list = []  # names of wrapped modules whose code is running now
        # A wrapped module whose code has just run: the import system still marks it as initialising until our
        # wrapper has returned, so `imported()` alone would miss it.
        self.executed: set = set()

    def watched(self, fullname: str) -> bool:
        """Whether to wrap this module's loader: a watched module, or any module of a watched package."""
        for w in self.watches:
            package = w.name.partition(".")[0] + "."
            if (
                fullname == w.name
                or fullname.startswith(package)
                or (w.not_during and fullname.startswith(w.not_during))
            ):
                return True
        return False

    def executing(self, prefix: str) -> bool:
        return any(name.startswith(prefix) for name in self.in_flight)

    def find_spec(self, fullname, path, target=None):
        if not self.watched(fullname):
            return None
        others = (f for f in sys.meta_path if f is not self and hasattr(f, "find_spec"))
        spec = next((s for s in (f.find_spec(fullname, path, target) for f in others) if s is not None), None)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_notify(module):
            self.in_flight.append(fullname)
            try:
                exec_module(module)
            finally:
                self.in_flight.remove(fullname)
            self.executed.add(fullname)
            try:
                self.run_ready()
            finally:
                self.executed.discard(fullname)

        spec.loader.exec_module = exec_then_notify
        return spec

    def run_ready(self) -> None:
        for watch in [w for w in self.watches if w.ready()]:
            if watch in self.watches:  # an earlier callback may have cancelled it
                self.watches.remove(watch)
                watch.callback()
        self.leave_if_idle()

    def leave_if_idle(self) -> None:
        if not self.watches and self in sys.meta_path:
            sys.meta_path.remove(self)


_finder = _Finder()


def when_imported(name: str, callback: "Callable[[], None]", not_during: str = "") -> Watch:
    """Call `callback()` once module `name` has finished importing: now if it has, else right after it has.

    Args:
        name (str): The module to wait for.
        callback (Callable[[], None]): Called once, with no arguments; must not raise.
        not_during (str): A package prefix ("yolo_attn."): the call also waits until no module under it that was
            imported while waiting is still executing.

    Returns:
        (Watch): The pending call (`cancel()` drops it); already done when the condition held on the call.
    """
    watch = Watch(name, callback, not_during)
    _finder.watches.append(watch)
    if watch.ready():
        _finder.run_ready()
    elif _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
    return watch


def forget(name: str) -> None:
    """Drop every callback still waiting for module `name` (the plugin's `unregister()` cancels its registration)."""
    for watch in [w for w in _finder.watches if w.name == name]:
        watch.cancel()
