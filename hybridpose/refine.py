"""Rule refiner: settle confused sibling classes with readable threshold rules.

The fused model sometimes mixes up two leaves that share a parent (e.g. two
standing poses). For such a pair we look for one interpretable keypoint
statistic and a threshold that separates the two classes, like a person would
write by hand: "max_ankle_height_ratio >= 0.41 -> Vrukshasana, else
UtkataKonasana". A rule only acts on photos whose fused top-2 leaves are its
pair, and abstains within ``margin`` of the threshold or where the statistic is
missing (no person found). Rules are data: ``RuleSet.save`` writes a YAML file
(format in ``rules/README.md``) that a user can read and edit.

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
  p <= ``alpha`` / (number of statistics scanned). The Bonferroni division is
  over all statistics, not just the ``top_k``, because the ranking looked at
  all of them: among hundreds of noise columns one fits a small pair by luck.
  (The reported gain of the chosen statistic stays somewhat optimistic for the
  same reason; ``crossval_rules`` gives the honest figure.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import yaml

from .atomic import write_text
from .errors import RulesError
from .hierarchy import Hierarchy

MARGIN_IQR_FRACTION = 0.25
README_HINT = "see rules/README.md for the format"


# --------------------------------------------------------------------------- rules


@dataclass
class Rule:
    name: str
    pair: tuple[str, str]  # (class_if_high, class_if_low)
    statistic: str
    threshold: float
    margin: float
    support: int
    gain: float
    accuracy_before: float
    accuracy_after: float
    n_fired: int
    description: str = ""

    kind: ClassVar[str] = "threshold"
    REQUIRED: ClassVar[tuple[str, ...]] = ("name", "if_high", "if_low", "statistic", "threshold", "margin")
    # Evidence written by `calibrate`; a rule written by hand may leave them out.
    EVIDENCE_INT: ClassVar[tuple[str, ...]] = ("support", "n_fired")
    EVIDENCE_FLOAT: ClassVar[tuple[str, ...]] = ("gain", "accuracy_before", "accuracy_after")

    def __post_init__(self) -> None:
        self.pair = (self.pair[0], self.pair[1])
        if not self.description:
            self.description = describe(self)

    @property
    def if_high(self) -> str:
        return self.pair[0]

    @property
    def if_low(self) -> str:
        return self.pair[1]

    def decide(self, value: float | None) -> str | None:
        """The class for a statistic value, or None inside the margin band or for NaN."""
        if value is None:
            return None
        v = float(value)
        if not math.isfinite(v):
            return None
        if self.margin == 0:
            return self.if_high if v >= self.threshold else self.if_low
        if v > self.threshold + self.margin:
            return self.if_high
        if v < self.threshold - self.margin:
            return self.if_low
        return None

    def to_mapping(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "if_high": self.if_high,
            "if_low": self.if_low,
            "statistic": self.statistic,
            "threshold": _tidy(self.threshold),
            "margin": _tidy(self.margin),
            "support": int(self.support),
            "gain": _tidy(self.gain),
            "accuracy_before": _tidy(self.accuracy_before),
            "accuracy_after": _tidy(self.accuracy_after),
            "n_fired": int(self.n_fired),
            "description": self.description,
        }

    @classmethod
    def from_mapping(cls, d: dict[str, Any], where: str) -> "Rule":
        """Build from a YAML mapping; ``where`` prefixes error messages (file, line, rule)."""
        known = set(cls.REQUIRED) | set(cls.EVIDENCE_INT) | set(cls.EVIDENCE_FLOAT) | {"description", "kind"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise RulesError(f"{where}: unknown key(s) {unknown}; allowed keys are {sorted(known)} ({README_HINT}).")
        for key in cls.REQUIRED:
            if key not in d:
                raise RulesError(f"{where}: missing key {key!r}; add it ({README_HINT}).")
        name = _text(d, "name", where)
        if_high, if_low = _text(d, "if_high", where), _text(d, "if_low", where)
        if if_high == if_low:
            raise RulesError(
                f"{where}: if_high and if_low are both {if_high!r}; a rule must choose between two different classes."
            )
        threshold = _number(d, "threshold", where)
        margin = _number(d, "margin", where)
        if margin < 0:
            raise RulesError(f"{where}: margin is {margin}, it must be 0 or positive (half-width of the no-decision band).")
        ints = {k: _count(d, k, where) for k in cls.EVIDENCE_INT}
        floats = {k: _number(d, k, where, allow_nan=True) for k in cls.EVIDENCE_FLOAT}
        description = d.get("description") or ""
        if not isinstance(description, str):
            raise RulesError(f"{where}: description must be text, found {description!r}.")
        return cls(
            name=name,
            pair=(if_high, if_low),
            statistic=_text(d, "statistic", where),
            threshold=threshold,
            margin=margin,
            description=description,
            **ints,
            **floats,
        )


RULE_KINDS: dict[str, type[Rule]] = {"threshold": Rule}


def describe(rule: Rule) -> str:
    """One plain sentence saying what the rule does."""
    stat = rule.statistic.replace("_", " ")
    t = _fmt(rule.threshold)
    sentence = f"If {stat} is at least {t} it is {rule.if_high}, otherwise {rule.if_low}"
    if rule.margin > 0:
        sentence += f" (no decision between {_fmt(rule.threshold - rule.margin)} and {_fmt(rule.threshold + rule.margin)})"
    return sentence + "."


# --------------------------------------------------------------------------- rule sets


@dataclass
class RuleSet:
    rules: list[Rule]
    level: str
    meta: dict[str, Any] = field(default_factory=dict)
    path: str = field(default="", compare=False, repr=False)  # the file it was loaded from, for messages

    def apply(
        self, leaf_probs: np.ndarray, leaves: list[str], features: pd.DataFrame
    ) -> tuple[list[str | None], list[str]]:
        """Per row: (decided leaf, rule name) where a rule fires, else (None, "").

        A rule fires when the row's fused top-2 leaves (either order) are its pair
        and its statistic is outside the margin band. If several rules share a
        pair, the first one in file order that decides wins.
        """
        probs = np.asarray(leaf_probs, dtype=float)
        if probs.ndim != 2 or probs.shape[1] != len(leaves):
            raise ValueError(f"leaf_probs has shape {probs.shape}, expected (n, {len(leaves)})")
        if len(features) != len(probs):
            raise ValueError(f"features has {len(features)} rows, leaf_probs {len(probs)}")
        n = len(probs)
        decided: list[str | None] = [None] * n
        names = [""] * n
        if n == 0 or len(leaves) < 2 or not self.rules:
            return decided, names
        columns = self._columns(features)
        by_pair: dict[frozenset[str], list[Rule]] = {}
        for rule in self.rules:
            by_pair.setdefault(frozenset(rule.pair), []).append(rule)
        first, second = top2(probs)
        for i in range(n):
            for rule in by_pair.get(frozenset((leaves[first[i]], leaves[second[i]])), []):
                choice = rule.decide(columns[rule.statistic][i])
                if choice is not None:
                    decided[i], names[i] = choice, rule.name
                    break
        return decided, names

    def validate(self, leaves: list[str], feature_names: list[str]) -> None:
        """Raise RulesError if a rule names a class or statistic this model does not know."""
        leaf_set, feat_set = set(leaves), set(feature_names)
        where = self.path or "rules"
        for rule in self.rules:
            unknown = [c for c in rule.pair if c not in leaf_set]
            if unknown:
                raise RulesError(
                    f"{where}: rule {rule.name!r} names unknown class(es) {unknown}; "
                    f"use classes of level {self.level!r} of this model ({', '.join(sorted(leaf_set))})."
                )
            if rule.statistic not in feat_set:
                close = _close_names(rule.statistic, feat_set)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise RulesError(
                    f"{where}: rule {rule.name!r} uses unknown statistic {rule.statistic!r}{hint}; "
                    "use a column of the keypoint features table."
                )

    def save(self, path: str | Path) -> None:
        body = {"level": self.level, "meta": _plain(self.meta), "rules": [_rule_mapping(r) for r in self.rules]}
        text = yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=120)
        write_text(path, _HEADER + text)

    @classmethod
    def load(cls, path: str | Path) -> "RuleSet":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
            raise RulesError(f"{path}: cannot read rules file ({why}); check the path or re-run calibrate.") from None
        try:
            data = yaml.safe_load(text)
            root = yaml.compose(text)
        except yaml.YAMLError as e:
            raise RulesError(f"{_yaml_where(path, e)}: not valid YAML ({_yaml_problem(e)}); fix the syntax ({README_HINT}).") from None
        return cls._from_data(data, path, _rule_lines(root))

    @classmethod
    def _from_data(cls, data: Any, path: Path, lines: list[int]) -> "RuleSet":
        if data is None:
            raise RulesError(f"{path}: the rules file is empty; re-run calibrate or write level/meta/rules ({README_HINT}).")
        if not isinstance(data, dict):
            raise RulesError(
                f"{path}: the top level is a {_yaml_type(data)}, expected a mapping with keys level, meta, rules ({README_HINT})."
            )
        unknown = sorted(set(map(str, data)) - {"level", "meta", "rules"})
        if unknown:
            raise RulesError(f"{path}: unknown top-level key(s) {unknown}; allowed are level, meta, rules ({README_HINT}).")
        for key in ("level", "rules"):
            if key not in data:
                raise RulesError(f"{path}: missing top-level key {key!r}; add it ({README_HINT}).")
        if not isinstance(data["level"], str) or not data["level"]:
            raise RulesError(f"{path}: level must be the name of the leaf level (e.g. class), found {data['level']!r}.")
        meta = data.get("meta") or {}
        if not isinstance(meta, dict):
            raise RulesError(f"{path}: meta must be a mapping, found a {_yaml_type(meta)}.")
        items = data["rules"] or []
        if not isinstance(items, list):
            raise RulesError(f"{path}: rules must be a list of rules (each starting with '- name:'), found a {_yaml_type(items)}.")
        rules = [_rule_from(item, i, path, lines) for i, item in enumerate(items)]
        _check_unique_names(rules, path)
        return cls(rules=rules, level=data["level"], meta=meta, path=str(path))

    def _columns(self, features: pd.DataFrame) -> dict[str, np.ndarray]:
        out = {}
        for rule in self.rules:
            if rule.statistic not in features.columns:
                raise RulesError(
                    f"{self.path or 'rules'}: rule {rule.name!r} uses statistic {rule.statistic!r}, "
                    "which the features table does not have; fix the rule or re-run calibrate."
                )
            out[rule.statistic] = _as_float(features[rule.statistic])
        return out


_HEADER = """\
# hybridpose rules: settle confused sibling classes by one keypoint statistic each.
# A rule acts only on a photo whose two most likely classes (fused model) are
# if_high and if_low, in either order. Then, with v the photo's statistic:
#   v > threshold + margin  -> if_high
#   v < threshold - margin  -> if_low
#   otherwise, or no person -> no decision (the fused prediction stands)
# (with margin 0: v >= threshold -> if_high, else if_low.)
# support, gain, accuracy_before, accuracy_after and n_fired are the evidence
# from calibration (out-of-fold); editing them changes nothing. You may edit
# threshold and margin, delete rules, or add rules by hand: see rules/README.md.
"""


def _rule_mapping(rule: Rule) -> dict[str, Any]:
    d = rule.to_mapping()
    if rule.kind != "threshold":
        d = {"kind": rule.kind, **d}
    return d


def _rule_from(item: Any, i: int, path: Path, lines: list[int]) -> Rule:
    line = f":{lines[i]}" if i < len(lines) else ""
    label = f"rule #{i + 1}"
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        label += f" ({item['name']!r})"
    where = f"{path}{line}: {label}"
    if not isinstance(item, dict):
        raise RulesError(f"{where} is a {_yaml_type(item)}, expected a mapping of keys ({README_HINT}).")
    kind = item.get("kind", "threshold")
    if kind not in RULE_KINDS:
        raise RulesError(f"{where}: unknown kind {kind!r}; known kinds are {sorted(RULE_KINDS)}.")
    return RULE_KINDS[kind].from_mapping(item, where)


def _check_unique_names(rules: list[Rule], path: Path) -> None:
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            raise RulesError(f"{path}: two rules are named {rule.name!r}; give each rule its own name.")
        seen.add(rule.name)


# --------------------------------------------------------------------------- calibration


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
    min_gain: float = 0.02,
    min_fired: int = 3,
    margin_quantile: float = 0.05,
    top_k: int = 10,
    inner_folds: int = 5,
    alpha: float = 0.05,
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
    X = np.column_stack([_as_float(features[s]) for s in stats]) if stats else np.zeros((len(y), 0))
    first, second = top2(probs) if len(leaves) >= 2 else (np.zeros(len(y), int), np.zeros(len(y), int))
    pred = np.asarray(leaves, dtype=object)[first]
    top_pair = [frozenset((leaves[a], leaves[b])) for a, b in zip(first, second)]
    settings = dict(min_gain=min_gain, min_fired=min_fired, margin_quantile=margin_quantile,
                    top_k=top_k, inner_folds=inner_folds, alpha=alpha, seed=seed)
    rows, rules = [], []
    for a, b, n_confused, n_top2 in confusable_pairs(y, pred, top_pair, leaves, hierarchy, min_fired):
        rule, row = _calibrate_pair(a, b, X, stats, y, pred, top_pair, settings)
        rows.append({"pair": f"{a} vs {b}", "n_confused": n_confused, "n_top2": n_top2, **row})
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
    refined = [leaves[i] for i in np.argmax(probs, axis=1)] if len(probs) else []
    fired = [""] * len(probs)
    for f in pd.unique(folds):
        test = folds == f
        train = ~test
        if not train.any():
            continue
        ruleset, _ = calibrate_rules(
            features[train], [y[i] for i in np.flatnonzero(train)], probs[train], leaves, hierarchy, **kw
        )
        decided, names = ruleset.apply(probs[test], leaves, features[test])
        for i, d, name in zip(np.flatnonzero(test), decided, names):
            if d is not None:
                refined[i], fired[i] = d, name
    return refined, fired


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
        threshold=_tidy(fit.threshold), margin=_tidy(fit.margin), support=fit.support,
        gain=_tidy(ev.gain), accuracy_before=_tidy(ev.accuracy_before),
        accuracy_after=_tidy(ev.accuracy_after), n_fired=ev.n_fired,
    )
    why = _why_not(ev, s["min_gain"], s["min_fired"], s["alpha"] / len(fits))
    row.update(
        n_fired=ev.n_fired, n_evaluated=ev.n_eval, n_fixed=ev.n_fixed, n_broken=ev.n_broken,
        p_value=float(f"{ev.p_value:.3g}"), statistic=stats[j], threshold=rule.threshold, margin=rule.margin,
        balanced_accuracy=round(fit.balanced_accuracy, 4), accuracy_before=rule.accuracy_before,
        accuracy_after=rule.accuracy_after, gain=rule.gain, kept=not why, why=why,
    )
    return (None if why else rule), row


def _why_not(ev: _Eval, min_gain: float, min_fired: int, max_p: float) -> str:
    if ev.n_eval == 0:
        return "no photo of the pair has the pair as fused top-2"
    if ev.n_fired < min_fired:
        return f"decides {ev.n_fired} photo(s) < min_fired {min_fired}"
    if not ev.gain >= min_gain:
        return f"gain {ev.gain:.4f} < min_gain {min_gain}"
    if ev.p_value > max_p:
        return (f"fixes {ev.n_fixed} and breaks {ev.n_broken} photos: could be luck "
                f"(p = {ev.p_value:.3g} > {max_p:.3g})")
    return ""


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


def top2(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the largest and second-largest column per row (ties: lower index first)."""
    order = np.argsort(-probs, axis=1, kind="stable")
    return order[:, 0], order[:, 1]


def _check_inputs(features: pd.DataFrame, y: np.ndarray, probs: np.ndarray, leaves: list[str]) -> None:
    if probs.ndim != 2 or probs.shape[1] != len(leaves):
        raise ValueError(f"leaf_probs has shape {probs.shape}, expected (n, {len(leaves)})")
    if not (len(features) == len(y) == len(probs)):
        raise ValueError(f"features ({len(features)}), y_true ({len(y)}) and leaf_probs ({len(probs)}) differ in length")


def _statistic_names(features: pd.DataFrame, statistics: list[str] | None) -> list[str]:
    if statistics is None:
        return [str(c) for c in features.columns if pd.api.types.is_numeric_dtype(features[c])]
    missing = [s for s in statistics if s not in features.columns]
    if missing:
        raise ValueError(f"statistics {missing} are not columns of the features table")
    return list(statistics)


def _as_float(column: pd.Series) -> np.ndarray:
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


_TABLE_COLUMNS = [
    "pair", "n_pair", "n_confused", "n_top2", "n_evaluated", "n_fired", "statistic", "threshold", "margin",
    "balanced_accuracy", "accuracy_before", "accuracy_after", "gain", "n_fixed", "n_broken", "p_value", "kept", "why",
]


def _empty_row(why: str) -> dict[str, Any]:
    return {"n_fired": 0, "n_evaluated": 0, "n_fixed": 0, "n_broken": 0, "p_value": np.nan, "statistic": "", "threshold": np.nan, "margin": np.nan,
            "balanced_accuracy": np.nan, "accuracy_before": np.nan, "accuracy_after": np.nan,
            "gain": np.nan, "kept": False, "why": why}


def _table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=_TABLE_COLUMNS)
    return table.astype({"kept": bool}) if len(table) else table


def _tidy(x: float) -> float:
    """Round to 4 decimals so the file reads like hand-written; keep 4 significant digits for tiny values."""
    x = float(x)
    if not math.isfinite(x) or x == 0:
        return x
    r = round(x, 4)
    return r if abs(x) >= 0.01 else float(f"{x:.4g}")


def _fmt(x: float) -> str:
    return f"{_tidy(x):g}"


def _plain(obj: Any) -> Any:
    """numpy scalars and containers -> plain Python, so safe_dump can write them."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return _tidy(obj)
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return str(obj)


def _text(d: dict[str, Any], key: str, where: str) -> str:
    v = d[key]
    if not isinstance(v, str) or not v.strip():
        raise RulesError(f"{where}: {key} must be a non-empty name, found {v!r}.")
    return v.strip()


def _number(d: dict[str, Any], key: str, where: str, allow_nan: bool = False) -> float:
    if key not in d:
        return float("nan")
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise RulesError(f"{where}: {key} must be a number (e.g. 0.41), found {v!r}.")
    v = float(v)
    if not allow_nan and not math.isfinite(v):
        raise RulesError(f"{where}: {key} must be a finite number, found {v}.")
    return v


def _count(d: dict[str, Any], key: str, where: str) -> int:
    v = d.get(key, 0)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise RulesError(f"{where}: {key} must be a whole number >= 0, found {v!r}.")
    return v


def _yaml_type(v: Any) -> str:
    return {dict: "mapping", list: "list", str: "text"}.get(type(v), type(v).__name__)


def _yaml_where(path: Path, e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    return f"{path}:{mark.line + 1}" if mark is not None else str(path)


def _yaml_problem(e: yaml.YAMLError) -> str:
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    mark = getattr(e, "problem_mark", None)
    return f"{problem}, column {mark.column + 1}" if mark is not None else problem


def _rule_lines(root: Any) -> list[int]:
    """Line number (1-based) of each item of the top-level ``rules`` list, for messages."""
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if getattr(key, "value", None) == "rules" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def _close_names(name: str, options: set[str]) -> list[str]:
    import difflib

    return difflib.get_close_matches(name, sorted(options), n=3)
