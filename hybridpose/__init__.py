"""hybridpose: which pose is the person in the photo holding, at every level of a class hierarchy.

Heavy parts (torch, MediaPipe) load on first use, so `import hybridpose` stays fast.
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "HybridPoseClassifier": "hybridpose.inference.classifier",
    "KeypointClassifier": "hybridpose.branches.keypoint",
    "Hierarchy": "hybridpose.data.hierarchy",
    "load_dataset": "hybridpose.data.datasets",
    "extract": "hybridpose.pose.frontend",
    "fit": "hybridpose.train.fit",
    "calibrate": "hybridpose.rules.runs",
    "predict": "hybridpose.inference.api",
    "explain": "hybridpose.explanation",
    "evaluate": "hybridpose.evaluation.evaluate",
    "RuleSet": "hybridpose.rules",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hybridpose' has no attribute {name!r}")
