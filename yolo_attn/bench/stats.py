"""Statistics of the benchmark: ratios to a reference over interleaved rounds, and mean, spread and tests over seeds."""

from __future__ import annotations

import math
import statistics

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
"""Two-sided 95 % quantile of Student's t by degrees of freedom (beyond the table: 2.0 below 60 df, then 1.96)."""


def median_of_all(rounds: list[list[float]]) -> float:
    """Return the median over every sample of every round."""
    return statistics.median(t for r in rounds for t in r)


def round_ratios(rounds: list[list[float]], ref: list[list[float]], scale: float = 1.0) -> list[float]:
    """Return, per round, the median of `rounds` over the median of `ref` in the same round, divided by `scale`.

    Interleaved rounds put both in the same machine state, so drift on a shared machine cancels in each ratio.
    """
    return [statistics.median(a) / statistics.median(b) / scale for a, b in zip(rounds, ref)]


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Return the mean and the sample standard deviation (NaN for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def noise_test(a: list[float], b: list[float]) -> tuple[float, float, bool | None]:
    """Difference of means a - b, its 95% half-width (Welch's t), and whether it is inside that noise band.

    The band is t(0.975, df) x sqrt(sd_a^2 / n_a + sd_b^2 / n_b), with Welch-Satterthwaite df; None with fewer than
    two seeds per side (no spread to compare with).
    """
    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return diff, float("nan"), None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, 0.0, diff == 0
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if va and vb else len(a) + len(b) - 2
    t = T975.get(max(1, int(df)), 2.0 if df < 60 else 1.96)
    return diff, t * se, abs(diff) <= t * se


def paired_test(a: list[float], b: list[float]) -> tuple[float, float, bool | None]:
    """Mean of the per-seed differences a[i] - b[i], its 95% half-width (paired t), and whether it is inside it.

    For runs that share everything but the model (same seed, data order, augmentation and starting weights), the
    seed-to-seed spread cancels in the differences, so this band is much tighter than Welch's. None with fewer than
    two pairs.
    """
    diffs = [x - y for x, y in zip(a, b)]
    diff = statistics.fmean(diffs)
    if len(diffs) < 2:
        return diff, float("nan"), None
    band = T975.get(len(diffs) - 1, 1.96) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return diff, band, abs(diff) <= band


def format_delta(diff: float, band: float, inside: bool | None, digits: int = 3) -> str:
    """Return a difference with its 95% band and verdict; with one seed (`inside` None) the difference alone.

    One seed gives no spread, so no band and no better/worse: the difference could be noise of any size.
    """
    if inside is None:
        return f"{diff:+.{digits}f} (1 seed: no band, no verdict)"
    verdict = "inside the noise" if inside else ("better" if diff > 0 else "worse")
    return f"{diff:+.{digits}f} ± {band:.{digits}f}: {verdict}"
