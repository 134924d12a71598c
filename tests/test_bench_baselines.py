"""benchmarks/bench_baselines.py's paired comparison of a baseline with the run's fused labels."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

_SPEC = importlib.util.spec_from_file_location(
    "bench_baselines", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_baselines.py")
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def test_paired_counts_the_discordant_photos():
    fused = np.array([True] * 12 + [False] * 2 + [True] * 80)
    base = np.array([False] * 12 + [True] * 2 + [True] * 80)
    r = bench.paired(fused, base)
    assert (r["fused_only"], r["baseline_only"]) == (12, 2)
    assert r["mcnemar_p"] == pytest.approx(2 * sum(math.comb(14, k) for k in range(3)) / 2 ** 14, abs=1e-4)


def test_paired_level_models_are_chance():
    right = np.array([True, False] * 20)
    assert bench.paired(right, ~right) == {"fused_only": 20, "baseline_only": 20, "mcnemar_p": 1.0}
    assert bench.paired(right, right)["mcnemar_p"] == 1.0  # no discordant photo: nothing to tell apart
