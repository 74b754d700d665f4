"""Performative teaching for neural learners (Algorithm 1 of the DHT paper)."""

from .teacher import PerformativeTeacher

__all__ = ["PerformativeTeacher"]
