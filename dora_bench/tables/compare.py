"""Differences to a reference method, with a 95 % interval: is a gap between two methods more than seed noise?

- Reference: the reference method's row at the same budget; a row without one (Full FT and BitFit have no
  budget; a budget the reference did not run) takes the reference at the large budget, else the one there is
  (the rule Table 9's ratios use).
- Paired by seed when both cells have the same seeds (the per-seed differences share the seed's data order and
  shared initial weights, so the seed's own luck cancels): a t-interval of the mean difference,
  mean ± t(0.975, n-1) · sd / sqrt(n) (scipy.stats.ttest_rel). Otherwise unpaired, Welch's interval
  (scipy.stats.ttest_ind, equal_var=False). Fewer than 2 seeds on a side: a difference without an interval.
- Why t and not a bootstrap: over 3 seeds a bootstrap has 3^3 = 27 resamples (10 distinct), its percentile
  interval ignores that the spread itself is estimated from 3 values and comes out far too narrow (about the
  normal 1.96 instead of t's 4.30 at 2 degrees of freedom; 2.78 at 5 seeds). The t-interval is exact when the per-seed
  differences are independent and normal, and wide where 3 seeds say little, which is honest. It assumes
  independent seeds and roughly normal differences (a seed stuck at the majority class breaks that).
- Not corrected for the many cells compared (1 in 20 intervals excludes 0 by chance alone), and each cell's
  configuration was itself chosen on these dev scores, which favours a method with a larger grid.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

from dora_bench.tables.runs import Key

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Difference:
    reference: Key
    mean: float                 # this cell minus the reference, mean over (paired) seeds
    low: float | None           # the 95 % interval; None with fewer than 2 seeds on a side
    high: float | None
    test: str                   # "paired" | "Welch" | "none"
    n: tuple[int, int]          # seeds of this cell and of the reference (paired: the common seeds, twice)

    def verdict(self, lower_better: bool) -> str | None:
        """'better' / 'worse' when the interval excludes 0 (direction of the metric applied); None otherwise."""
        if self.low is None or self.high is None or self.low <= 0 <= self.high:
            return None
        above = self.low > 0
        return "better" if above != lower_better else "worse"


def difference(values: dict[int, float], reference: dict[int, float], reference_key: Key) -> Difference | None:
    """This cell's per-seed values minus the reference's: paired when the seeds are the same, else Welch."""
    if not values or not reference:
        return None
    if set(values) == set(reference):
        seeds = sorted(values)
        ours, theirs = np.array([values[s] for s in seeds]), np.array([reference[s] for s in seeds])
        mean = float(np.mean(ours - theirs))
        if len(seeds) < 2:
            return Difference(reference_key, mean, None, None, "none", (1, 1))
        with warnings.catch_warnings():   # identical differences: scipy warns, and the interval is that one point
            warnings.simplefilter("ignore", RuntimeWarning)
            interval = stats.ttest_rel(ours, theirs).confidence_interval(CONFIDENCE)
        return Difference(reference_key, mean, float(interval.low), float(interval.high), "paired",
                          (len(seeds), len(seeds)))
    ours, theirs = np.array(list(values.values())), np.array(list(reference.values()))
    mean = float(ours.mean() - theirs.mean())
    if len(ours) < 2 or len(theirs) < 2:
        return Difference(reference_key, mean, None, None, "none", (len(ours), len(theirs)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        interval = stats.ttest_ind(ours, theirs, equal_var=False).confidence_interval(CONFIDENCE)
    return Difference(reference_key, mean, float(interval.low), float(interval.high), "Welch",
                      (len(ours), len(theirs)))


def reference_row(key: Key, keys: list[Key], reference: str) -> Key | None:
    """The reference method's row for `key`: at its budget, else at the large one, else any; None for the
    reference's own rows and where it has none."""
    if key[0] == reference:
        return None
    rows = [k for k in keys if k[0] == reference]
    for budget in (key[1] if len(key) > 1 else None, "large"):
        if (reference, budget) in rows:
            return reference, budget
    return rows[0] if rows else None
