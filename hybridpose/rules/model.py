"""The rule model: a threshold rule on one keypoint statistic, and a set of rules applied to fused predictions.

The YAML file format is in ``io.py``; how rules are found from a run is in ``calibrate.py``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ..errors import RulesError
from ..registry import Registry

README_HINT = "see rules/README.md for the format"


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
            "threshold": tidy(self.threshold),
            "margin": tidy(self.margin),
            "support": int(self.support),
            "gain": tidy(self.gain),
            "accuracy_before": tidy(self.accuracy_before),
            "accuracy_after": tidy(self.accuracy_after),
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


RULE_KINDS: Registry[type[Rule]] = Registry("rule kind", error=RulesError)
RULE_KINDS.register(Rule, name="threshold")


def describe(rule: Rule) -> str:
    """One plain sentence saying what the rule does."""
    stat = rule.statistic.replace("_", " ")
    t = _fmt(rule.threshold)
    sentence = f"If {stat} is at least {t} it is {rule.if_high}, otherwise {rule.if_low}"
    if rule.margin > 0:
        sentence += f" (no decision between {_fmt(rule.threshold - rule.margin)} and {_fmt(rule.threshold + rule.margin)})"
    return sentence + "."


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

    def _columns(self, features: pd.DataFrame) -> dict[str, np.ndarray]:
        out = {}
        for rule in self.rules:
            if rule.statistic not in features.columns:
                raise RulesError(
                    f"{self.path or 'rules'}: rule {rule.name!r} uses statistic {rule.statistic!r}, "
                    "which the features table does not have; fix the rule or re-run calibrate."
                )
            out[rule.statistic] = as_float(features[rule.statistic])
        return out


def top2(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the largest and second-largest column per row (ties: lower index first)."""
    order = np.argsort(-probs, axis=1, kind="stable")
    return order[:, 0], order[:, 1]


def as_float(column: pd.Series) -> np.ndarray:
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def tidy(x: float) -> float:
    """Round to 4 decimals so the file reads like hand-written; keep 4 significant digits for tiny values."""
    x = float(x)
    if not math.isfinite(x) or x == 0:
        return x
    r = round(x, 4)
    return r if abs(x) >= 0.01 else float(f"{x:.4g}")


def _fmt(x: float) -> str:
    return f"{tidy(x):g}"


def _close_names(name: str, options: set[str]) -> list[str]:
    import difflib

    return difflib.get_close_matches(name, sorted(options), n=3)


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
