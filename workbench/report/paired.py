"""Paired comparisons of arms over seeds: mean ± std, paired t intervals, plain verdicts.

Two arms fine-tuned with the same seed share the head initialisation and the data order,
so their difference at that seed removes most of the fine-tuning noise; the interval is
taken over those paired differences (Student t with n-1 degrees of freedom). With one pair
there is no interval and the verdict says so.
"""

from __future__ import annotations

import math
from typing import Sequence


def mean_std(values: Sequence[float]) -> dict:
    """mean, sample std (ddof=1; 0 for one value), n, min, max (`tasks.metrics.mean_std` plus
    the count and range; None for no values)."""
    from workbench.tasks.metrics import mean_std as _mean_std

    v = [float(x) for x in values]
    if not v:
        return {"mean": None, "std": None, "n": 0, "min": None, "max": None}
    s = _mean_std(v)
    return {"mean": s["mean"], "std": s["std"], "n": len(v), "min": min(v), "max": max(v)}


def _t(q: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(q, df))


def paired_interval(diffs: Sequence[float], confidence: float = 0.95, power: float = 0.8) -> dict:
    """Mean paired difference with its t interval, and the smallest effect this many pairs
    with this spread would detect (two-sided test at 1 - confidence, the given power):
    (t_{1-a/2} + t_{power}) x sd / sqrt(n), the usual approximation."""
    s = mean_std(diffs)
    n = s["n"]
    out = {"mean": s["mean"], "std": s["std"], "n": n, "low": None, "high": None, "detectable": None,
           "confidence": confidence, "method": "paired t"}
    if n >= 2:
        se = s["std"] / math.sqrt(n)
        half = _t(0.5 + confidence / 2, n - 1) * se
        out.update(low=s["mean"] - half, high=s["mean"] + half,
                   detectable=(_t(0.5 + confidence / 2, n - 1) + _t(power, n - 1)) * se)
    return out


def verdict(iv: dict, *, scale: float = 100.0, unit: str = "points") -> str:
    """'helps' / 'hurts' when the interval excludes 0, else 'no detectable effect at this
    budget' with the smallest detectable effect; 'one seed: no interval' below two pairs."""
    if iv["n"] < 2 or iv["low"] is None:
        return "one pair: no interval (add seeds)"
    if iv["std"] == 0:  # every pair differs by exactly the same amount: no spread to test against
        if iv["mean"] == 0:
            return "no difference at any seed"
        return ("helps" if iv["mean"] > 0 else "hurts") + f" (the same {abs(iv['mean']) * scale:.1f} {unit} at every seed)"
    if iv["low"] > 0:
        return "helps"
    if iv["high"] < 0:
        return "hurts"
    return (f"no detectable effect at this budget (would detect ≥ {iv['detectable'] * scale:.1f} {unit})"
            if iv["detectable"] is not None else "no detectable effect at this budget")
