"""Mixup-based black-box teaching: :class:`MixupTeacher` and its pure functions."""

from .functional import (
    check_actions,
    mix_batch,
    sample_beta,
    sample_permutation,
    to_soft_targets,
)
from .teacher import MixupTeacher

__all__ = [
    "MixupTeacher",
    "check_actions",
    "mix_batch",
    "sample_beta",
    "sample_permutation",
    "to_soft_targets",
]
