"""The hand-written rules/example.yaml loads, names real statistics, and decides sample photos right."""
from pathlib import Path

import numpy as np

from hybridpose.pose.frontend import keypoints_array
from hybridpose.rules import read_rules
from hybridpose.skeletons.body import feature_names, features

EXAMPLE = Path(__file__).resolve().parents[1] / "rules" / "example.yaml"


def test_example_rules_validate_against_the_sample_classes(sample_dataset):
    rules = read_rules(EXAMPLE)
    rules.validate(sample_dataset.hierarchy.leaves, feature_names())
    assert {r.statistic for r in rules.rules} <= set(feature_names())
    assert all(r.description for r in rules.rules)


def test_example_rules_settle_their_pairs_on_real_keypoints(sample_dataset, sample_poses):
    rules = read_rules(EXAMPLE)
    leaves = sample_dataset.hierarchy.leaves
    feats = features(keypoints_array(sample_poses))
    labels = np.array(sample_dataset.labels)
    for rule in rules.rules:
        rows = np.flatnonzero(np.isin(labels, rule.pair) & (sample_poses["status"] == "ok").to_numpy())
        # a fused model torn between the pair, leaning to the wrong class of each photo
        probs = np.full((len(rows), len(leaves)), 0.01)
        for i, r in enumerate(rows):
            wrong = rule.pair[1] if labels[r] == rule.pair[0] else rule.pair[0]
            probs[i, leaves.index(wrong)], probs[i, leaves.index(labels[r])] = 0.5, 0.4
        decided, names = rules.apply(probs, leaves, feats.iloc[rows].reset_index(drop=True))
        made = [(d, labels[r]) for d, r in zip(decided, rows) if d is not None]
        assert len(made) >= 0.8 * len(rows), rule.name
        assert np.mean([d == t for d, t in made]) >= 0.9, rule.name
        assert set(n for n in names if n) == {rule.name}
