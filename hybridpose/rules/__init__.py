"""Rule refiner: readable threshold rules on keypoint statistics that settle confused sibling classes.

``model``: the rule and the rule set (application, validation); ``io``: the YAML rules file;
``calibrate``: finding rules from a run's out-of-fold predictions (the method is described there).
"""
from .calibrate import calibrate_rules, confusable_pairs, crossval_rules, fit_threshold, margin_for
from .io import read_rules, write_rules
from .model import Rule, RuleSet, describe, top2

__all__ = [
    "Rule", "RuleSet", "calibrate_rules", "crossval_rules", "fit_threshold", "margin_for", "confusable_pairs",
    "top2", "describe", "read_rules", "write_rules",
]
