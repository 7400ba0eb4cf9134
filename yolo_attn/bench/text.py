"""Wording the reports and progress lines share: counts, durations and the "Machine: ..." header."""

from __future__ import annotations

from typing import Any


def plural(count: int, noun: str) -> str:
    """Return `count noun` with the noun in the plural unless the count is 1 ("1 seed", "3 seeds")."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def duration(seconds: float) -> str:
    """Return a duration for progress lines: 45 s, 3.2 min, 1.5 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def machine_line(machine: dict[str, Any]) -> str:
    """Return the header every report starts with: CPU, cores, memory, OS, versions and the load average.

    Args:
        machine (dict): What `timing.machine_info()` returns, with `loadavg_end` added when the run is over.

    Returns:
        (str): One sentence or two, e.g. "Machine: ..., 2 cores, 8 GiB RAM, Linux-...; torch 2.9.0, ... Load average
            at start 1.02, at end 1.85."
    """
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    text = f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory']} RAM, {machine['os']}; {versions}."
    start, end = machine.get("loadavg_start"), machine.get("loadavg_end")
    if start:  # the load is what makes timings on a shared machine comparable or not
        text += f" Load average at start {start[0]:.2f}" + (f", at end {end[0]:.2f}." if end else ".")
    return text
