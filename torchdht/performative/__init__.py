"""Performative teaching for neural learners (Algorithm 1 of the DHT paper)."""

from .teacher import PerformativeTeacher, remove_inert_hooks, suspend_teachers

__all__ = ["PerformativeTeacher", "remove_inert_hooks", "suspend_teachers"]
