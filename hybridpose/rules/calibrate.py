"""Rule refiner: settle confused sibling classes with readable threshold rules.

The fused model sometimes mixes up two leaves that share a parent (e.g. two
standing poses). For such a pair we look for one interpretable keypoint
statistic and a threshold that separates the two classes, like a person would
write by hand: "max_ankle_height_ratio >= 0.41 -> Vrukshasana, else
UtkataKonasana". A rule only acts on photos whose fused top-2 leaves are its
pair, and abstains within ``margin`` of the threshold or where the statistic is
missing (no person found). Rules are data: ``RuleSet.save`` writes a YAML file
(format in ``rules/README.md``) that a user can read and edit. The rule and its
application are in ``model.py``, the file format in ``io.py``; this module finds
the rules.

How a rule is calibrated for a pair (A, B):

* threshold: over all training photos of A and B with a finite value
  (``support``), the cut that maximises balanced accuracy, placed midway between
  neighbouring sorted values (equal cuts: the one with the widest gap wins).
* margin: the half-width of the no-decision band. It is the distance from the
  threshold within which the ``margin_quantile`` fraction of the support lies
  (the photos the threshold separates least surely), capped at
  ``MARGIN_IQR_FRACTION`` x the within-class spread (mean of the two classes'
  interquartile ranges): a band about as wide as the statistic's typical
  wobble within one pose, so the rule does not flip on noise, yet a wide empty
  gap between well separated classes does not become a wide blind band.
* gain: accuracy with the rule minus fused accuracy, on the pair's out-of-fold
  photos whose fused top-2 is the pair. The threshold used for each photo is
  fitted without that photo (``inner_folds``-fold cross-fitting over the pair's
  photos), so a statistic that fits noise does not look useful.
* choice: the ``top_k`` statistics with the best support balanced accuracy
  compete on gain (ties: higher balanced accuracy); the rule is kept if
  ``gain >= min_gain``, it decided at least ``min_fired`` photos, and it fixed
  significantly more photos than it broke: one-sided exact sign (McNemar) test
  on the photos where rule and fused model disagree in correctness,
  p <= ``alpha`` / (number of statistics scanned: those that can split the
  pair at all). The Bonferroni division is over all of them, not just the
  ``top_k``, because the ranking looked at all of them: among hundreds of
  noise columns one fits a small pair by luck. So on a small data set the bar
  is high (with 1000 statistics a pair needs about 15 fixes and no break);
  naming the statistics to consider (``statistics``, globs allowed, as the
  seed named its fingertip's motion by hand) lowers it to what was named.
  (The reported gain of the chosen statistic stays somewhat optimistic for the
  same reason; ``crossval_rules`` gives the honest figure.) The table's
  ``decided_by`` names the test that settled each pair: ``kept`` (all passed),
  else the first that failed, in the order ``not_evaluated`` (no photo of the
  pair has it as fused top-2), ``min_fired``, ``min_gain``, ``sign_test``; or
  ``no_candidate`` when no statistic can split the pair at all.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from ..data.hierarchy import Hierarchy
from ..defaults import DEFAULTS
from ..errors import RulesError
from ..run.crossfit import cross_fitted
from .model import Rule, RuleSet, as_float, tidy, top2

MARGIN_IQR_FRACTION = 0.25


@dataclass
class _Fit:
    threshold: float
    a_high: bool  # True: the first class of the pair is the high side
    margin: float
    balanced_accuracy: float
    support: int


@dataclass
class _Eval:
    accuracy_before: float
    accuracy_after: float
    n_fired: int
    n_eval: int
    n_fixed: int = 0  # fused wrong, rule right
    n_broken: int = 0  # fused right, rule wrong

    @property
    def gain(self) -> float:
        return self.accuracy_after - self.accuracy_before

    @property
    def p_value(self) -> float:
        """One-sided exact sign test: chance of this many fixes or more if the rule were no better."""
        n = self.n_fixed + self.n_broken
        if n == 0:
            return 1.0
        return sum(math.comb(n, k) for k in range(self.n_fixed, n + 1)) / 2**n


def calibrate_rules(
    features: pd.DataFrame,
    y_true: list[str],
    leaf_probs: np.ndarray,
    leaves: list[str],
    hierarchy: Hierarchy,
    *,
    statistics: list[str] | None = None,
    min_gain: float = DEFAULTS.min_gain,
    min_fired: int = DEFAULTS.min_fired,
    margin_quantile: float = 0.05,
    top_k: int = 10,
    inner_folds: int = 5,
    alpha: float = DEFAULTS.alpha,
    seed: int = 0,
) -> tuple[RuleSet, pd.DataFrame]:
    """Fit one rule per confusable sibling pair; keep those that help out of fold.

    ``leaf_probs`` are the fused out-of-fold probabilities (columns = ``leaves``),
    rows aligned with ``features`` and ``y_true``. Returns the kept rules and a
    table with one row per confusable pair examined.
    """
    y = np.asarray([str(v) for v in y_true], dtype=object)
    probs = np.asarray(leaf_probs, dtype=float)
    _check_inputs(features, y, probs, leaves)
    stats = _statistic_names(features, statistics)
    X = np.column_stack([as_float(features[s]) for s in stats]) if stats else np.zeros((len(y), 0))
    first, second = top2(probs) if len(leaves) >= 2 else (np.zeros(len(y), int), np.zeros(len(y), int))
    pred = np.asarray(leaves, dtype=object)[first]
    top_pair = [frozenset((leaves[a], leaves[b])) for a, b in zip(first, second)]
    settings = dict(min_gain=min_gain, min_fired=min_fired, margin_quantile=margin_quantile,
                    top_k=top_k, inner_folds=inner_folds, alpha=alpha, seed=seed)
    rows, rules = [], []
    for a, b, n_confused, n_top2 in confusable_pairs(y, pred, top_pair, leaves, hierarchy, min_fired):
        rule, row = _calibrate_pair(a, b, X, stats, y, pred, top_pair, settings)
        rows.append({"pair": f"{a} vs {b}", "n_confused": n_confused, "n_top2": n_top2,
                     "n_statistics": len(stats), **row})
        if rule is not None:
            rules.append(rule)
    meta = {
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "n_photos": int(len(y)),
        "n_statistics": len(stats),
        **settings,
    }
    return RuleSet(rules=rules, level=hierarchy.leaf_level, meta=meta), _table(rows)


def crossval_rules(
    features: pd.DataFrame,
    y_true: list[str],
    leaf_probs: np.ndarray,
    leaves: list[str],
    hierarchy: Hierarchy,
    folds: np.ndarray,
    **kw: Any,
) -> tuple[list[str], list[str]]:
    """Honest evaluation: rules calibrated on the other folds, applied to each fold.

    Returns the refined leaf per row (fused argmax where no rule fires) and the
    name of the rule that fired per row ("" where none did).
    """
    probs = np.asarray(leaf_probs, dtype=float)
    folds = np.asarray(folds)
    y = list(y_true)
    if len(folds) != len(probs) or len(y) != len(probs) or len(features) != len(probs):
        raise ValueError("features, y_true, leaf_probs and folds must have one entry per row")
    if len(probs) == 0:
        return [], []

    def fit_predict(train: np.ndarray, test: np.ndarray) -> tuple[list[str], list[str]]:
        fused = [leaves[i] for i in np.argmax(probs[test], axis=1)]
        if len(train) == 0:  # a single fold: nothing to calibrate on, the fused argmax stands
            return fused, [""] * len(test)
        ruleset, _ = calibrate_rules(features.iloc[train], [y[i] for i in train], probs[train], leaves, hierarchy, **kw)
        decided, names = ruleset.apply(probs[test], leaves, features.iloc[test])
        return [f if d is None else d for d, f in zip(decided, fused)], names

    return cross_fitted(folds, fit_predict)


def confusable_pairs(
    y: np.ndarray,
    pred: np.ndarray,
    top_pair: list[frozenset[str]],
    leaves: list[str],
    hierarchy: Hierarchy,
    min_fired: int,
) -> list[tuple[str, str, int, int]]:
    """Sibling pairs the fused model mixes up, most confused first: (a, b, n_confused, n_top2)."""
    known = set(leaves)
    found = []
    for a, b in hierarchy.siblings():
        if a not in known or b not in known:
            continue
        n_confused = int(np.sum((y == a) & (pred == b)) + np.sum((y == b) & (pred == a)))
        pair = frozenset((a, b))
        n_top2 = sum(1 for yi, tp in zip(y, top_pair) if tp == pair and yi in pair)
        if n_confused >= 1 or n_top2 >= min_fired:
            found.append((a, b, n_confused, n_top2))
    return sorted(found, key=lambda t: (-t[2], -t[3], t[0], t[1]))


def _calibrate_pair(
    a: str, b: str, X: np.ndarray, stats: list[str], y: np.ndarray, pred: np.ndarray,
    top_pair: list[frozenset[str]], s: dict[str, Any],
) -> tuple[Rule | None, dict[str, Any]]:
    in_pair = (y == a) | (y == b)
    idx = np.flatnonzero(in_pair)
    is_a = y[idx] == a
    pair = frozenset((a, b))
    evaluated = np.array([top_pair[i] == pair for i in idx], dtype=bool)
    correct_before = pred[idx] == y[idx]
    row: dict[str, Any] = {"n_pair": int(len(idx))}
    Xp = np.asfortranarray(X[idx])  # column slices below are then contiguous
    # Rank on the cut alone; the margin is only needed for the few candidates.
    fits = [(j, f) for j in range(len(stats)) if (f := fit_threshold(Xp[:, j], is_a, None)) is not None]
    if not fits:
        return None, {**row, **_empty_row("no statistic separates the pair (values missing or all equal)")}
    fits.sort(key=lambda jf: -jf[1].balanced_accuracy)
    folds = _inner_folds(is_a, s["inner_folds"], s["seed"])
    best = None
    candidates = fits[: max(1, s["top_k"])]
    for j, fit in candidates:
        fit.margin = _finite_margin(Xp[:, j], is_a, fit.threshold, s["margin_quantile"])
        ev = _cross_fitted_eval(Xp[:, j], is_a, folds, evaluated, correct_before, s["margin_quantile"])
        key = (round(ev.gain, 9), fit.balanced_accuracy)
        if best is None or key > best[0]:
            best = (key, j, fit, ev)
    _, j, fit, ev = best
    high, low = (a, b) if fit.a_high else (b, a)
    rule = Rule(
        name=f"{high}_vs_{low}", pair=(high, low), statistic=stats[j],
        threshold=tidy(fit.threshold), margin=tidy(fit.margin), support=fit.support,
        gain=tidy(ev.gain), accuracy_before=tidy(ev.accuracy_before),
        accuracy_after=tidy(ev.accuracy_after), n_fired=ev.n_fired,
    )
    decided_by, why = _why_not(ev, s["min_gain"], s["min_fired"], s["alpha"] / len(fits))
    row.update(n_scanned=len(fits), max_p=float(f"{s['alpha'] / len(fits):.3g}"),
        n_fired=ev.n_fired, n_evaluated=ev.n_eval, n_fixed=ev.n_fixed, n_broken=ev.n_broken,
        p_value=float(f"{ev.p_value:.3g}"), statistic=stats[j], threshold=rule.threshold, margin=rule.margin,
        balanced_accuracy=round(fit.balanced_accuracy, 4), accuracy_before=rule.accuracy_before,
        accuracy_after=rule.accuracy_after, gain=rule.gain, kept=not why, decided_by=decided_by, why=why,
    )
    return (None if why else rule), row


def _why_not(ev: _Eval, min_gain: float, min_fired: int, max_p: float) -> tuple[str, str]:
    """(decided_by, why): the test that settled the pair, and in words why the rule is not kept ("" if kept)."""
    if ev.n_eval == 0:
        return "not_evaluated", "no photo of the pair has the pair as fused top-2"
    if ev.n_fired < min_fired:
        return "min_fired", f"decides {ev.n_fired} photo(s) < min_fired {min_fired}"
    if not ev.gain >= min_gain:
        return "min_gain", f"gain {ev.gain:.4f} < min_gain {min_gain}"
    if ev.p_value > max_p:
        return "sign_test", (f"fixes {ev.n_fixed} and breaks {ev.n_broken} photos: could be luck "
                             f"(p = {ev.p_value:.3g} > {max_p:.3g})")
    return "kept", ""


def fit_threshold(values: np.ndarray, is_a: np.ndarray, margin_quantile: float | None) -> _Fit | None:
    """Best balanced-accuracy cut between two classes on one statistic (None if impossible).

    With ``margin_quantile`` None the margin is left NaN (cheaper, for ranking).
    """
    ok = np.isfinite(values)
    v, lab = values[ok], is_a[ok]
    n_a, n_b = int(lab.sum()), int((~lab).sum())
    if n_a == 0 or n_b == 0:
        return None
    order = np.argsort(v, kind="stable")
    v, lab = v[order], lab[order]
    cuts = np.flatnonzero(np.diff(v) > 0)  # cut after position i: between v[i] and v[i+1]
    if len(cuts) == 0:
        return None
    a_below = np.cumsum(lab)[cuts]
    b_below = (cuts + 1) - a_below
    bal_a_high = 0.5 * ((n_a - a_below) / n_a + b_below / n_b)
    score = np.maximum(bal_a_high, 1.0 - bal_a_high)
    gaps = v[cuts + 1] - v[cuts]
    best = np.lexsort((-gaps, -score))[0]  # best score; among equals, the widest gap
    c = cuts[best]
    threshold = 0.5 * (v[c] + v[c + 1])
    return _Fit(
        threshold=float(threshold),
        a_high=bool(bal_a_high[best] >= 0.5),
        margin=float("nan") if margin_quantile is None else margin_for(v, lab, threshold, margin_quantile),
        balanced_accuracy=float(score[best]),
        support=int(len(v)),
    )


def margin_for(values: np.ndarray, is_a: np.ndarray, threshold: float, margin_quantile: float) -> float:
    """Half-width of the no-decision band (see the module docstring)."""
    if margin_quantile <= 0 or len(values) == 0:
        return 0.0
    near = float(np.quantile(np.abs(values - threshold), min(margin_quantile, 1.0)))
    spread = np.mean([_iqr(values[is_a]), _iqr(values[~is_a])])
    return max(0.0, min(near, MARGIN_IQR_FRACTION * float(spread)))


def _finite_margin(values: np.ndarray, is_a: np.ndarray, threshold: float, margin_quantile: float) -> float:
    ok = np.isfinite(values)
    return margin_for(values[ok], is_a[ok], threshold, margin_quantile)


def _iqr(values: np.ndarray) -> float:
    q1, q3 = np.quantile(values, [0.25, 0.75])
    return float(q3 - q1)


def _cross_fitted_eval(
    values: np.ndarray, is_a: np.ndarray, folds: np.ndarray, evaluated: np.ndarray,
    correct_before: np.ndarray, margin_quantile: float,
) -> _Eval:
    """Fused vs rule accuracy on the evaluated photos, each judged by a threshold fitted without it."""
    correct_after = correct_before.copy()
    fired = np.zeros(len(values), dtype=bool)
    for f in np.unique(folds):
        held = folds == f
        targets = np.flatnonzero(held & evaluated)
        if len(targets) == 0:
            continue
        fit = fit_threshold(values[~held], is_a[~held], margin_quantile)
        if fit is None:
            continue
        rule = _bare_rule(fit)
        for i in targets:
            choice = rule.decide(values[i])
            if choice is not None:
                fired[i] = True
                correct_after[i] = (choice == "a") == bool(is_a[i])
    n = int(evaluated.sum())
    if n == 0:
        return _Eval(float("nan"), float("nan"), 0, 0)
    before, after = correct_before[evaluated], correct_after[evaluated]
    return _Eval(
        accuracy_before=float(before.mean()),
        accuracy_after=float(after.mean()),
        n_fired=int(fired[evaluated].sum()),
        n_eval=n,
        n_fixed=int(np.sum(after & ~before)),
        n_broken=int(np.sum(before & ~after)),
    )


def _bare_rule(fit: _Fit) -> Rule:
    pair = ("a", "b") if fit.a_high else ("b", "a")
    return Rule("", pair, "", fit.threshold, fit.margin, fit.support, 0.0, 0.0, 0.0, 0, "-")


def _inner_folds(is_a: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Stratified fold index per photo of the pair, reproducible from ``seed``."""
    k = max(2, int(k))
    rng = np.random.default_rng(seed)
    folds = np.empty(len(is_a), dtype=int)
    for cls in (True, False):
        members = np.flatnonzero(is_a == cls)
        folds[rng.permutation(members)] = np.arange(len(members)) % k
    return folds


# --------------------------------------------------------------------------- helpers


def _check_inputs(features: pd.DataFrame, y: np.ndarray, probs: np.ndarray, leaves: list[str]) -> None:
    if probs.ndim != 2 or probs.shape[1] != len(leaves):
        raise ValueError(f"leaf_probs has shape {probs.shape}, expected (n, {len(leaves)})")
    if not (len(features) == len(y) == len(probs)):
        raise ValueError(f"features ({len(features)}), y_true ({len(y)}) and leaf_probs ({len(probs)}) differ in length")


def select_statistics(columns: list[str], patterns: list[str] | None, exclude: tuple[str, ...] = (),
                      source: str = "the features table") -> list[str]:
    """The statistics named by ``patterns`` (exact names or globs: ``net_path_index_tip_*``), in the table's order;
    None: every column but those matching ``exclude``. A pattern that names none is a RulesError."""
    columns = [str(c) for c in columns]
    if patterns is None:
        return [c for c in columns if not any(fnmatch.fnmatchcase(c, e) for e in exclude)]
    chosen: set[str] = set()
    for pat in patterns:
        hits = [c for c in columns if fnmatch.fnmatchcase(c, pat)]
        if not hits:
            close = sorted({c for c in columns if pat.strip("*?[]").split("_")[0] in c})[:5]
            hint = f" (some that exist: {', '.join(close)})" if close else ""
            raise RulesError(f"--statistics {pat!r}: no statistic of {source} has that name{hint}; "
                             "name one it has (globs like 'net_*' allowed).")
        chosen.update(hits)
    return [c for c in columns if c in chosen]


def _statistic_names(features: pd.DataFrame, statistics: list[str] | None) -> list[str]:
    if statistics is None:
        return [str(c) for c in features.columns if pd.api.types.is_numeric_dtype(features[c])]
    missing = [s for s in statistics if s not in features.columns]
    if missing:
        raise ValueError(f"statistics {missing} are not columns of the features table")
    return list(statistics)


_TABLE_COLUMNS = [
    "pair", "n_pair", "n_confused", "n_top2", "n_evaluated", "n_fired", "statistic", "threshold", "margin",
    "balanced_accuracy", "accuracy_before", "accuracy_after", "gain", "n_fixed", "n_broken", "p_value",
    "n_statistics", "n_scanned", "max_p", "kept", "decided_by", "why",
]


def _empty_row(why: str) -> dict[str, Any]:
    return {"n_fired": 0, "n_evaluated": 0, "n_fixed": 0, "n_broken": 0, "p_value": np.nan, "n_scanned": 0,
            "max_p": np.nan, "statistic": "", "threshold": np.nan, "margin": np.nan,
            "balanced_accuracy": np.nan, "accuracy_before": np.nan, "accuracy_after": np.nan,
            "gain": np.nan, "kept": False, "decided_by": "no_candidate", "why": why}


def _table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=_TABLE_COLUMNS)
    return table.astype({"kept": bool}) if len(table) else table
