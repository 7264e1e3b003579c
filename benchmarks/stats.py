"""Seed statistics the benchmarks report: sample mean +- std, and "A beats B" only when
the seeds say so.

`spread` gives the mean and the sample standard deviation (ddof 1) with the per-seed values.
`compare` states that A beats B only when A is better on every seed, or when a paired
t-test over the seeds (scipy.stats.ttest_rel, two-sided) gives p < `LEVEL`; otherwise the two
are "within noise". (With 3 seeds a Wilcoxon signed-rank test cannot go below p = 0.25, so
the paired t-test is the test used.)

Example:
>>> spread([0.80, 0.82, 0.84])["std"]
0.02
>>> compare("FedAP", [0.88, 0.87, 0.86], "FedAvg", [0.84, 0.83, 0.85])["statement"]
'FedAP beats FedAvg (better on every one of 3 seeds)'
>>> compare("GRU", [1.10, 1.08, 1.12], "AdaRNN", [1.09, 1.13, 1.11], higher_is_better=False)["verdict"]
'within noise'
"""

from __future__ import annotations

import math

import numpy as np

LEVEL = 0.05


def spread(values) -> dict:
    """Mean, sample std (ddof 1; None for one value) and the values themselves."""
    values = [float(v) for v in values]
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return {"mean": float(np.mean(values)), "std": None if std is None else round(std, 12), "n": len(values),
            "values": values}


def plus_minus(values, scale: float = 1.0, digits: int = 2, sign: str = "±") -> str:
    """`mean ± std` (sample std) of `values` times `scale`; the mean alone for one value."""
    summary = spread(values)
    if summary["std"] is None:
        return f"{scale * summary['mean']:.{digits}f}"
    return f"{scale * summary['mean']:.{digits}f} {sign} {scale * summary['std']:.{digits}f}"


def compare(a_name: str, a_values, b_name: str, b_values, higher_is_better: bool = True,
            level: float = LEVEL, over: str = "seeds") -> dict:
    """Whether A beats B over paired seeds (the i-th values of both come from seed i; `over`
    names the pairing when it is something else, e.g. "targets").

    The verdict is "beats" (A better on every seed, or paired t-test p < level with A's mean
    better), "loses" (the same for B) or "within noise"; `statement` says it in words with
    the reason. One seed gives no verdict ("one seed").
    """
    a, b = np.asarray(a_values, float), np.asarray(b_values, float)
    if a.shape != b.shape:
        raise ValueError(f"compare needs paired values, got {a.shape} and {b.shape}")
    sign = 1.0 if higher_is_better else -1.0
    better = sign * (a - b)  # > 0 where A is better
    result = {"a": a_name, "b": b_name, "higher_is_better": higher_is_better, "n": int(a.size),
              "over": over, "a_values": a.tolist(), "b_values": b.tolist(), "mean_difference": float(np.mean(a - b)),
              "test": "paired t-test (scipy.stats.ttest_rel, two-sided)", "level": level, "p_value": None}
    if a.size < 2:
        return {**result, "verdict": "one seed",
                "statement": f"{a_name} vs {b_name}: one of the {over}, no comparison"}
    if np.all(better > 0):
        return {**result, "verdict": "beats",
                "statement": f"{a_name} beats {b_name} (better on every one of {a.size} {over})"}
    if np.all(better < 0):
        return {**result, "verdict": "loses",
                "statement": f"{b_name} beats {a_name} (better on every one of {a.size} {over})"}
    from scipy import stats  # noqa: PLC0415  (only needed when the seeds disagree)

    p = float(stats.ttest_rel(a, b).pvalue)
    p = 1.0 if math.isnan(p) else p  # identical differences on every seed
    result["p_value"] = p
    if p < level:
        winner, loser, verdict = (a_name, b_name, "beats") if np.mean(better) > 0 else (b_name, a_name, "loses")
        return {**result, "verdict": verdict,
                "statement": f"{winner} beats {loser} (paired t-test p = {p:.3f} < {level})"}
    return {**result, "verdict": "within noise",
            "statement": f"{a_name} and {b_name} within noise (paired t-test p = {p:.2f}, level {level})"}
