"""Progress lines with the time left of a whole job, printed on each step and at least every half minute between.

A long job (the finetune mode: a pretraining run, then fine-tuning runs in worker processes) reports its steps in
units of work it knows in advance (epochs). The time left is the measured seconds per unit times the units left, the
rate measured from the first step reported to the latest (so start-up costs before the first step, such as reading
the data into memory, do not inflate it); until two steps are known, an estimate given up front stands in. A ticker
thread repeats the latest line while a step takes long (a fine-tuning run, a validation), so the console never goes
quiet for more than `every` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from yolo_attn.bench.text import duration


class Progress:
    """Report progress through a job of `total` units of work.

    Args:
        total (float): Units of work of the whole job (e.g. epochs).
        expected_seconds (float | None): Estimated duration of the job, used until a unit is measured.
        every (float): Longest quiet time between two lines, in seconds.
        echo (Callable[[str], None]): Where lines go (default: printed and flushed).
        clock (Callable[[], float]): Monotonic time in seconds (tests pass a fake one).
    """

    def __init__(
        self,
        total: float,
        expected_seconds: float | None = None,
        every: float = 30.0,
        echo: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.expected, self.every, self.clock = total, expected_seconds, every, clock
        self.echo = echo or (lambda line: print(line, flush=True))
        self.started = self.last_line = clock()
        self.done, self.done_at, self.what = 0.0, self.started, "starting"
        self.first: tuple[float, float] | None = None  # (units, time) of the first step reported
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def left(self) -> float | None:
        """Return the estimated seconds left: from the measured rate, else from `expected_seconds`, else None."""
        now = self.clock()
        if self.first is not None and self.done > self.first[0]:  # measured: the finish predicted at the last step
            rate = (self.done_at - self.first[1]) / (self.done - self.first[0])
            return max(0.0, self.done_at + rate * (self.total - self.done) - now)
        return None if self.expected is None else max(0.0, self.started + self.expected - now)

    def line(self) -> str:
        """Return the progress line for now: what the job is doing, time so far and time left."""
        left = self.left()
        if left is None:
            tail = "estimating the time left"
        elif left > 0 or self.done < self.total:
            tail = f"about {duration(left)} left"
        else:
            tail = "finishing"
        return f"benchmark: {self.what} ({duration(self.clock() - self.started)}, {tail})"

    def update(self, done: float, what: str, announce: bool = False) -> None:
        """Record `done` units finished and what the job does now; print the line if `announce` or overdue."""
        with self._lock:
            now = self.clock()
            first_rate = False
            if done != self.done:
                first_rate = self.first is not None and self.done == self.first[0]  # the second step: a rate at last
                self.done, self.done_at = done, now
                self.first = self.first or (done, now)
            self.what = what
            if announce or first_rate or now - self.last_line >= self.every:
                self._print()

    def tick(self) -> None:
        """Print the current line if nothing was printed for `every` seconds (the ticker thread calls this)."""
        with self._lock:
            if self.clock() - self.last_line >= self.every:
                self._print()

    def _print(self) -> None:
        self.last_line = self.clock()
        self.echo(self.line())

    def __enter__(self) -> Progress:
        """Start the ticker thread."""

        def run() -> None:
            while not self._stop.wait(min(self.every, 5.0) / 5):
                self.tick()

        self._ticker = threading.Thread(target=run, name="benchmark-progress", daemon=True)
        self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the ticker thread (also when the job is interrupted)."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
