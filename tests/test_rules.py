"""Rule refiner: calibration on synthetic data, application, YAML format, cross-validation,
which test decided each pair, and the backup of hand-edited rules files."""
from __future__ import annotations

import hashlib
import re
import sys

import numpy as np
import pandas as pd
import pytest

from hybridpose.data.hierarchy import Hierarchy
from hybridpose.errors import RulesError
from hybridpose.rules import Rule, RuleSet, calibrate_rules, crossval_rules, read_rules, write_rules
from hybridpose.rules.io import backup_if_edited, is_edited
from hybridpose.rules.model import RULE_KINDS

LEAVES = ["A", "B", "C", "D"]
HIER = Hierarchy(["class", "group"], {"A": ["g1"], "B": ["g1"], "C": ["g2"], "D": ["g2"]})
BOUNDARY = 0.5  # A has ankle ~ 1, B ~ 0


def make_data(seed: int = 0, n: int = 100, fused_acc: float = 0.6, flip: bool = False):
    """A and B (siblings) separable by `ankle`; the fused probs confuse them.

    C and D are never confused. `flip` puts B high and A low instead.
    """
    rng = np.random.default_rng(seed)
    y = ["A"] * n + ["B"] * n + ["C"] * n + ["D"] * n
    hi, lo = rng.normal(1.0, 0.15, n), rng.normal(0.0, 0.15, n)
    ankle = np.r_[lo, hi] if flip else np.r_[hi, lo]
    ankle = np.r_[ankle, rng.normal(0.5, 1.0, 2 * n)]
    probs = np.full((4 * n, 4), 0.02)
    for i in range(2 * n):
        true, other = (0, 1) if i < n else (1, 0)
        right = rng.random() < fused_acc
        probs[i, true], probs[i, other] = (0.52, 0.42) if right else (0.42, 0.52)
    for i in range(2 * n, 4 * n):
        probs[i, 2 if i < 3 * n else 3] = 0.9
    features = pd.DataFrame({"ankle": ankle, "noise": rng.normal(0, 1, 4 * n), "path": [f"p{i}.jpg" for i in range(4 * n)]})
    return features, y, probs


def fused(probs: np.ndarray) -> np.ndarray:
    return np.asarray(LEAVES, dtype=object)[np.argmax(probs, axis=1)]


def rule(threshold: float = 0.5, margin: float = 0.0, stat: str = "ankle") -> Rule:
    return Rule("A_vs_B", ("A", "B"), stat, threshold, margin, 10, 0.1, 0.5, 0.6, 5)


# --------------------------------------------------------------------------- calibration


def test_calibrate_finds_separating_statistic_and_fixes_confusions():
    features, y, probs = make_data()
    rules, table = calibrate_rules(features, y, probs, LEAVES, HIER)
    assert len(rules.rules) == 1
    r = rules.rules[0]
    assert r.statistic == "ankle"
    assert r.pair == ("A", "B")
    assert abs(r.threshold - BOUNDARY) < 0.15
    assert r.gain > 0.2 and r.accuracy_after > r.accuracy_before
    assert r.n_fired >= 3 and r.support == 200
    assert r.description.startswith("If ankle is at least")
    assert list(table["pair"]) == ["A vs B"]  # C, D never confused: not examined
    assert bool(table["kept"].iloc[0]) and table["why"].iloc[0] == ""

    decided, names = rules.apply(probs, LEAVES, features)
    y = np.asarray(y, dtype=object)
    wrong = np.flatnonzero(fused(probs) != y)
    assert len(wrong) > 50
    fixed = sum(decided[i] == y[i] for i in wrong)
    assert fixed / len(wrong) > 0.9
    assert all(decided[i] in (None, y[i]) for i in range(len(y)))
    assert {n for n in names if n} == {"A_vs_B"}


@pytest.mark.parametrize("n, fused_acc", [(40, 0.5), (100, 0.5), (100, 0.6)])
def test_noise_statistic_yields_no_rule(n, fused_acc):
    # A coin-flip fused model is the easy case for a lucky noise threshold to look useful.
    for seed in range(15):
        features, y, probs = make_data(seed=seed, n=n, fused_acc=fused_acc)
        rules, table = calibrate_rules(features, y, probs, LEAVES, HIER, statistics=["noise"])
        assert rules.rules == [], (seed, table.to_dict("records"))
        assert len(table) == 1 and not table["kept"].iloc[0] and table["why"].iloc[0]


def test_noise_among_many_statistics_is_not_chosen():
    features, y, probs = make_data(n=40, fused_acc=0.5)
    rng = np.random.default_rng(7)
    noise = pd.DataFrame(rng.normal(size=(len(y), 200)), columns=[f"noise{i}" for i in range(200)])
    many = pd.concat([features.drop(columns="ankle"), noise], axis=1)
    rules, _ = calibrate_rules(many, y, probs, LEAVES, HIER)
    assert rules.rules == []
    rules, _ = calibrate_rules(pd.concat([many, features[["ankle"]]], axis=1), y, probs, LEAVES, HIER)
    assert [r.statistic for r in rules.rules] == ["ankle"]


def test_pairs_are_examined_most_confused_first():
    features, y, probs = make_data()
    # Confuse two D photos as C: the C-D pair now counts, with fewer confusions than A-B.
    probs[-2:, 2], probs[-2:, 3] = 0.9, 0.05
    _, table = calibrate_rules(features, y, probs, LEAVES, HIER)
    assert list(table["pair"]) == ["A vs B", "C vs D"]
    assert table["n_confused"].tolist()[1] == 2


def test_min_fired_rejects_rare_rule():
    features, y, probs = make_data()
    rules, table = calibrate_rules(features, y, probs, LEAVES, HIER, min_fired=10_000)
    assert rules.rules == [] and "min_fired" in table["why"].iloc[0]


# --------------------------------------------------------------------------- application


def test_rule_fires_only_when_top2_is_the_pair():
    rs = RuleSet([rule()], "class")
    probs = np.array([
        [0.50, 0.40, 0.05, 0.05],  # top-2 A, B
        [0.40, 0.50, 0.05, 0.05],  # top-2 B, A
        [0.40, 0.05, 0.50, 0.05],  # top-2 C, A
        [0.05, 0.40, 0.05, 0.50],  # top-2 D, B
    ])
    features = pd.DataFrame({"ankle": [0.1, 0.9, 0.9, 0.1]})
    decided, names = rs.apply(probs, LEAVES, features)
    assert decided == ["B", "A", None, None]
    assert names == ["A_vs_B", "A_vs_B", "", ""]


def test_margin_and_nan_abstain():
    r = rule(threshold=0.5, margin=0.1)
    assert r.decide(0.61) == "A" and r.decide(0.39) == "B"
    assert r.decide(0.55) is None and r.decide(0.45) is None and r.decide(0.6) is None
    assert r.decide(float("nan")) is None and r.decide(None) is None
    assert rule(margin=0.0).decide(0.5) == "A"
    rs = RuleSet([r], "class")
    probs = np.tile([0.5, 0.4, 0.05, 0.05], (3, 1))
    decided, names = rs.apply(probs, LEAVES, pd.DataFrame({"ankle": [0.52, np.nan, 0.2]}))
    assert decided == [None, None, "B"] and names == ["", "", "A_vs_B"]


def test_calibrated_margin_is_positive_and_abstains_near_threshold():
    features, y, probs = make_data()
    r = calibrate_rules(features, y, probs, LEAVES, HIER)[0].rules[0]
    assert r.margin > 0
    assert r.decide(r.threshold) is None


# --------------------------------------------------------------------------- YAML


def test_save_load_round_trip(tmp_path):
    features, y, probs = make_data()
    rules, _ = calibrate_rules(features, y, probs, LEAVES, HIER)
    rules.meta["source_run"] = "runs/demo"
    path = tmp_path / "rules.yaml"
    write_rules(rules, path)
    loaded = read_rules(path)
    assert loaded == rules
    text = path.read_text()
    assert text.startswith("#") and "if_high: A" in text and "if_low: B" in text
    for key in ("threshold", "margin", "gain", "accuracy_before", "accuracy_after"):
        value = re.search(rf"^\s+{key}: (\S+)$", text, re.M).group(1)
        assert len(value.split(".")[-1]) <= 4, (key, value)
    assert loaded.apply(probs, LEAVES, features) == rules.apply(probs, LEAVES, features)


def test_hand_edited_threshold_changes_decisions(tmp_path):
    features, y, probs = make_data()
    rules, _ = calibrate_rules(features, y, probs, LEAVES, HIER)
    path = tmp_path / "rules.yaml"
    write_rules(rules, path)
    before, _ = read_rules(path).apply(probs, LEAVES, features)
    path.write_text(re.sub(r"threshold: \S+", "threshold: 5.0", path.read_text()))
    after, _ = read_rules(path).apply(probs, LEAVES, features)
    assert before != after
    assert {d for d in after if d is not None} == {"B"}  # everything is now below the threshold


def test_hand_written_rule_without_evidence_loads(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(
        "level: class\nrules:\n- kind: threshold\n  name: mine\n  if_high: A\n  if_low: B\n"
        "  statistic: ankle\n  threshold: 0.5\n  margin: 0\n"
    )
    rs = read_rules(path)
    assert RULE_KINDS["threshold"] is Rule
    assert rs.rules[0].decide(0.7) == "A" and rs.rules[0].description


VALID_RULE = (
    "  - name: A_vs_B\n    if_high: A\n    if_low: B\n    statistic: ankle\n"
    "    threshold: 0.5\n    margin: 0.1\n    support: 10\n    gain: 0.1\n"
    "    accuracy_before: 0.5\n    accuracy_after: 0.6\n    n_fired: 5\n"
)
VALID = "level: class\nmeta: {}\nrules:\n" + VALID_RULE


@pytest.mark.parametrize(
    "text, fragment",
    [
        (VALID.replace("if_low: B\n", "if_low: [B\n"), r"rules\.yaml:\d+: not valid YAML"),
        (VALID.replace("    statistic: ankle\n", ""), "missing key 'statistic'"),
        (VALID.replace("threshold: 0.5", "threshold: high"), "threshold must be a number"),
        (VALID.replace("margin: 0.1", "margin: -0.1"), "margin is -0.1"),
        (VALID.replace("if_low: B", "if_low: A"), "if_high and if_low are both 'A'"),
        ("- level: class\n- rules: []\n", "top level is a list"),
        ("just text\n", "top level is a text"),
        ("", "empty"),
        (VALID.replace("  - name:", "  - kind: fuzzy\n    name:"), "unknown kind 'fuzzy'"),
        (VALID.replace("level: class\n", ""), "missing top-level key 'level'"),
        (VALID.replace("rules:", "rule:"), "unknown top-level key"),
        (VALID + VALID_RULE, "two rules are named"),
    ],
)
def test_malformed_file_raises_rules_error_naming_the_file(tmp_path, text, fragment):
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(RulesError) as info:
        read_rules(path)
    message = str(info.value)
    assert str(path) in message
    assert re.search(fragment, message), message


def test_rule_errors_carry_the_line_of_the_rule(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(VALID + VALID_RULE.replace("A_vs_B", "second").replace("threshold: 0.5", "threshold: x"))
    with pytest.raises(RulesError, match=rf"{re.escape(str(path))}:15: rule #2 \('second'\)"):
        read_rules(path)


def test_missing_file_raises_rules_error(tmp_path):
    with pytest.raises(RulesError, match="cannot read"):
        read_rules(tmp_path / "nope.yaml")


def test_validate_rejects_unknown_class_and_statistic():
    RuleSet([rule()], "class").validate(LEAVES, ["ankle"])
    with pytest.raises(RulesError, match="unknown class"):
        RuleSet([Rule("x", ("A", "Z"), "ankle", 0.5, 0.0, 1, 0, 0, 0, 0)], "class").validate(LEAVES, ["ankle"])
    with pytest.raises(RulesError, match="unknown statistic 'ankel'.*ankle"):
        RuleSet([rule(stat="ankel")], "class").validate(LEAVES, ["ankle", "knee"])


# --------------------------------------------------------------------------- cross-validation


def test_crossval_improves_accuracy_and_returns_one_label_per_row():
    features, y, probs = make_data()
    folds = np.arange(len(y)) % 4
    refined, fired = crossval_rules(features, y, probs, LEAVES, HIER, folds)
    assert len(refined) == len(fired) == len(y)
    y = np.asarray(y, dtype=object)
    assert np.mean(np.asarray(refined, dtype=object) == y) > np.mean(fused(probs) == y) + 0.1
    # Where no rule fired the fused argmax stands.
    quiet = [i for i, f in enumerate(fired) if not f]
    assert all(refined[i] == fused(probs)[i] for i in quiet)


def test_crossval_calibrates_without_the_rows_own_fold():
    # Fold 0: A high / B low. Fold 1: the reverse. A rule fitted on the other
    # fold therefore decides every fired row of a fold wrongly; had a fold's own
    # rows been used, the mixed relation would give a useless rule (or none).
    f0, y0, p0 = make_data(seed=1)
    f1, y1, p1 = make_data(seed=2, flip=True)
    features = pd.concat([f0, f1], ignore_index=True)
    y = np.asarray(y0 + y1, dtype=object)
    probs = np.vstack([p0, p1])
    folds = np.r_[np.zeros(len(y0), int), np.ones(len(y1), int)]
    refined, fired = crossval_rules(features, list(y), probs, LEAVES, HIER, folds)
    hit = np.array([bool(f) for f in fired])
    assert hit.sum() > 150
    assert np.all(np.asarray(refined, dtype=object)[hit] != y[hit])

    rules, _ = calibrate_rules(features, list(y), probs, LEAVES, HIER)
    assert all(r.statistic != "ankle" or r.gain < 0.2 for r in rules.rules)


def test_crossval_with_a_single_fold_keeps_the_fused_prediction():
    features, y, probs = make_data()
    refined, fired = crossval_rules(features, y, probs, LEAVES, HIER, np.zeros(len(y), int))
    assert refined == list(fused(probs)) and fired == [""] * len(y)
    assert crossval_rules(features.iloc[:0], [], probs[:0], LEAVES, HIER, np.zeros(0, int)) == ([], [])


# --------------------------------------------------------------------------- which test decided


def pair_data(n: int = 20, wrong: int = 3, ankle_b: float = 0.0):
    """n photos of A (ankle 0.8..1.2) and n of B (ankle around ``ankle_b``); the fused model's top-2
    is always A, B and it is wrong on ``wrong`` photos. A perfect rule then fixes ``wrong`` photos and
    breaks none: sign-test p = 0.5 ** wrong, gain = wrong / (2 n)."""
    y = ["A"] * n + ["B"] * n
    ankle = np.r_[np.linspace(0.8, 1.2, n), ankle_b + np.linspace(-0.2, 0.2, n)]
    wrong_rows = set(np.linspace(0, 2 * n - 1, wrong).astype(int)) if wrong else set()
    assert len(wrong_rows) == wrong
    probs = np.full((2 * n, 4), 0.02)
    for i in range(2 * n):
        true, other = (0, 1) if i < n else (1, 0)
        probs[i, true], probs[i, other] = (0.42, 0.52) if i in wrong_rows else (0.52, 0.42)
    return pd.DataFrame({"ankle": ankle}), y, probs


def decided(table: pd.DataFrame) -> tuple[str, str]:
    assert list(table["pair"]) == ["A vs B"]
    return table["decided_by"].iloc[0], table["why"].iloc[0]


def test_decided_by_names_the_test_that_settled_the_pair():
    features, y, probs = pair_data(wrong=8)  # p = 0.0039, gain 0.2
    rules, table = calibrate_rules(features, y, probs, LEAVES, HIER)
    assert decided(table) == ("kept", "") and len(rules.rules) == 1 and table["kept"].iloc[0]

    features, y, probs = pair_data(wrong=3)  # gain 0.075 >= min_gain, but p = 0.125 > 0.05: could be luck
    rules, table = calibrate_rules(features, y, probs, LEAVES, HIER)
    by, why = decided(table)
    assert by == "sign_test" and "could be luck" in why and rules.rules == []
    assert table[["n_fixed", "n_broken"]].iloc[0].tolist() == [3, 0] and table["p_value"].iloc[0] == 0.125

    rules, table = calibrate_rules(features, y, probs, LEAVES, HIER, min_gain=0.1)  # gain 0.075: min_gain first
    by, why = decided(table)
    assert by == "min_gain" and why.startswith("gain 0.0750 < min_gain 0.1") and rules.rules == []

    rules, table = calibrate_rules(features, y, probs, LEAVES, HIER, min_fired=1000)
    assert decided(table)[0] == "min_fired" and rules.rules == []


def test_decided_by_when_no_statistic_splits_the_pair_or_no_photo_is_evaluated():
    features, y, probs = pair_data(wrong=3)
    _, table = calibrate_rules(features.assign(ankle=1.0), y, probs, LEAVES, HIER)
    assert decided(table) == ("no_candidate", "no statistic separates the pair (values missing or all equal)")
    # The fused model confuses A for B once, but no photo has A, B as its top-2.
    probs = np.full_like(probs, 0.02)
    probs[:, 2] = 0.1
    probs[np.arange(len(y)), [0 if c == "A" else 1 for c in y]] = 0.8
    probs[0, :2] = 0.02, 0.8
    _, table = calibrate_rules(features, y, probs, LEAVES, HIER)
    assert decided(table) == ("not_evaluated", "no photo of the pair has the pair as fused top-2")


def test_alpha_sets_the_sign_test_level():
    features, y, probs = pair_data(wrong=3)  # p = 0.125, one statistic: no Bonferroni division
    assert decided(calibrate_rules(features, y, probs, LEAVES, HIER, alpha=0.2)[1])[0] == "kept"
    assert decided(calibrate_rules(features, y, probs, LEAVES, HIER, alpha=0.1)[1])[0] == "sign_test"
    features, y, probs = pair_data(wrong=8)  # p = 0.0039
    assert decided(calibrate_rules(features, y, probs, LEAVES, HIER, alpha=0.001)[1])[0] == "sign_test"
    # Bonferroni over the statistics scanned: 0.2 / 2 statistics < 0.125.
    features, y, probs = pair_data(wrong=3)
    two = features.assign(noise=np.random.default_rng(0).normal(size=len(y)))
    assert decided(calibrate_rules(two, y, probs, LEAVES, HIER, alpha=0.2)[1])[0] == "sign_test"
    assert decided(calibrate_rules(two, y, probs, LEAVES, HIER, alpha=0.3)[1])[0] == "kept"


# --------------------------------------------------------------------------- checksum and backups


def saved(tmp_path, name: str = "rules.yaml"):
    features, y, probs = make_data()
    rules, _ = calibrate_rules(features, y, probs, LEAVES, HIER)
    path = tmp_path / name
    write_rules(rules, path)
    return rules, path


def test_save_writes_a_checksum_of_the_body_and_loads_with_it(tmp_path):
    rules, path = saved(tmp_path)
    text = path.read_text(encoding="utf-8")
    header, sep, body = text.partition("\nlevel: ")
    match = re.search(r"^# checksum: sha256:([0-9a-f]{64})$", header, re.M)
    assert match and header.endswith(match.group(0))  # the last header line
    assert match.group(1) == hashlib.sha256((sep.lstrip("\n") + body).encode("utf-8")).hexdigest()
    assert not is_edited(path)
    assert read_rules(path) == rules
    # A one-character edit of the body, or of the checksum, counts as an edit.
    path.write_text(text.replace("threshold: ", "threshold: 1", 1), encoding="utf-8")
    assert is_edited(path)
    path.write_text(text.replace(match.group(1), "0" * 64), encoding="utf-8")
    assert is_edited(path)
    # Without the checksum line (a hand-written file): an edit, and it still loads.
    path.write_text(text.replace(match.group(0) + "\n", ""), encoding="utf-8")
    assert is_edited(path) and read_rules(path) == rules


def test_edited_rules_file_is_backed_up_never_overwriting_a_backup(tmp_path):
    rules, path = saved(tmp_path)
    assert backup_if_edited(path) is None  # as calibrate wrote it: simply replaced
    assert backup_if_edited(tmp_path / "absent.yaml") is None
    first = re.sub(r"threshold: \S+", "threshold: 0.7", path.read_text())
    path.write_text(first)
    assert backup_if_edited(path) == tmp_path / "rules.yaml.bak"
    assert (tmp_path / "rules.yaml.bak").read_text() == first
    write_rules(rules, path)
    assert backup_if_edited(path) is None
    second = path.read_text().replace("threshold: ", "threshold: 2", 1)
    path.write_text(second)
    assert backup_if_edited(path) == tmp_path / "rules.yaml.bak1"
    assert (tmp_path / "rules.yaml.bak").read_text() == first
    assert (tmp_path / "rules.yaml.bak1").read_text() == second


# --------------------------------------------------------------------------- the calibrate job and command


@pytest.fixture
def fake_run(monkeypatch, tmp_path):
    """rules.runs.calibrate on a run folder whose out-of-fold table and features are ``pair_data``."""
    import hybridpose.rules.runs as jobs

    features, y, probs = pair_data(wrong=3)
    oof = pd.DataFrame({"path": [f"p{i}.jpg" for i in range(len(y))], "fold": np.arange(len(y)) % 2, "true_class": y,
                        **{f"fused:class:{c}": probs[:, j] for j, c in enumerate(LEAVES)}})
    monkeypatch.setattr(jobs, "load_oof", lambda run: (oof.copy(), HIER, {}))
    monkeypatch.setattr(jobs, "run_features", lambda run, frame: features)
    run = tmp_path / "run"
    run.mkdir()
    return jobs, run


def test_calibrate_backs_up_an_edited_rules_file_only(fake_run, tmp_path):
    jobs, run = fake_run
    out = tmp_path / "shared" / "mine.yaml"
    res = jobs.calibrate(run, out=out, alpha=0.5)
    assert res["backups"] == [] and len(res["rules"].rules) == 1
    assert (run / "rules.yaml").is_file() and out.is_file()
    res = jobs.calibrate(run, out=out, alpha=0.5)  # unedited: replaced without a backup
    assert res["backups"] == [] and not list(run.glob("*.bak*")) and not list(out.parent.glob("*.bak*"))

    edited = (run / "rules.yaml").read_text().replace("margin: ", "margin: 0", 1)
    (run / "rules.yaml").write_text(edited)
    out.write_text("level: class\nrules: []\n")  # hand-written, no checksum
    res = jobs.calibrate(run, out=out, alpha=0.5)
    assert res["backups"] == [str(run / "rules.yaml.bak"), str(out.parent / "mine.yaml.bak")]
    assert (run / "rules.yaml.bak").read_text() == edited
    assert not is_edited(run / "rules.yaml") and not is_edited(out)

    (run / "rules.yaml").write_text(edited)
    res = jobs.calibrate(run, alpha=0.5)
    assert res["backups"] == [str(run / "rules.yaml.bak1")]
    assert jobs.calibrate(run, dry_run=True)["backups"] == []


def test_alpha_option_of_the_calibrate_command(fake_run, monkeypatch, capsys):
    import hybridpose_cli.main as cli_main

    jobs, run = fake_run

    def cli(*args: str) -> str:
        monkeypatch.setattr(sys, "argv", ["hybridpose", "calibrate", str(run), *args])
        with pytest.raises(SystemExit) as info:
            cli_main.main()
        captured = capsys.readouterr()
        assert info.value.code in (0, None), captured.out + captured.err
        return captured.out + captured.err

    text = cli()  # default alpha 0.05: p = 0.125 is not enough
    assert "0 rule(s)" in text and "sign_test" in text
    assert pd.read_csv(run / "calibration.csv")["decided_by"].tolist() == ["sign_test"]
    text = cli("--alpha", "0.5")
    assert "1 rule(s)" in text and "sign_test at alpha 0.5" in text
    assert pd.read_csv(run / "calibration.csv")["decided_by"].tolist() == ["kept"]
    (run / "rules.yaml").write_text((run / "rules.yaml").read_text() + "# my note\n")
    text = cli("--alpha", "0.5", "--min-gain", "0.5")
    assert "min_gain" in text and f"kept your edited rules.yaml as {run / 'rules.yaml.bak'}" in text.replace("\n", "")
