"""Mixup-based black-box teaching: :class:`MixupTeacher`, its policies and its pure functions."""

from .functional import (
    check_actions,
    mix_batch,
    sample_beta,
    sample_permutation,
    to_soft_targets,
)
from .policies import (
    BetaPolicy,
    DiscretePolicy,
    MixupPolicy,
    ReinforcePolicy,
    UnrollPolicy,
)
from .teacher import MixupTeacher

__all__ = [
    "MixupTeacher",
    "MixupPolicy",
    "BetaPolicy",
    "DiscretePolicy",
    "ReinforcePolicy",
    "UnrollPolicy",
    "check_actions",
    "mix_batch",
    "sample_beta",
    "sample_permutation",
    "to_soft_targets",
]
