"""Skeletons: which keypoints a pose front end gives, how they connect, mirror and turn into features.

A skeleton is one ``Skeleton`` description registered by name. Everything that depends on the
keypoint layout (the poses-table columns, the keypoint features, the mirror used by flip
augmentation, the limb mask of CAM supervision, the bones drawn by ``explain``) reads it from
here, so a new skeleton is one new module that calls ``register``.
"""
from __future__ import annotations

from ..defaults import DEFAULTS
from ..errors import HybridPoseError
from ..registry import Registry
from .base import VALUES, BoxFn, FeatureFn, Skeleton

__all__ = ["SKELETONS", "VALUES", "BoxFn", "FeatureFn", "Skeleton", "available", "get_skeleton", "register"]

SKELETONS: Registry[Skeleton] = Registry("skeleton", "hybridpose.skeletons",
                                         error=HybridPoseError)
DEFAULT = DEFAULTS.skeleton
register = SKELETONS.register


def get_skeleton(name: str | Skeleton | dict | None = None) -> Skeleton:
    """The registered skeleton of that name (``body`` when None); a description (a dict, as a run's config
    stores it, or a .yaml/.yml file) is read and registered under its own name."""
    if isinstance(name, Skeleton):
        return name
    if isinstance(name, dict) or (isinstance(name, str) and name.lower().endswith((".yaml", ".yml"))):
        from .custom import from_definition, load_yaml

        sk = from_definition(name, "the run's skeleton") if isinstance(name, dict) else load_yaml(name)
        if sk.name in SKELETONS and not SKELETONS[sk.name].custom:
            raise HybridPoseError(f"skeleton {sk.name!r} ({sk.description}) has the name of a built-in skeleton; "
                                  "give it another 'name'.")
        return register(sk)
    return SKELETONS.get(name or DEFAULT)


def available() -> list[str]:
    return SKELETONS.names()
