"""torchdht: data hallucination teaching for PyTorch training loops."""

from . import data, functional, linear, mixup, models
from .errors import (
    HeadTypeError,
    MissingTargetsError,
    TargetsError,
    TeacherError,
    TeacherTypeError,
)
from .mixup import MixupTeacher
from .performative import PerformativeTeacher
from .sampler import TeachingSampler

__version__ = "0.1.0"

__all__ = [
    "HeadTypeError",
    "MissingTargetsError",
    "MixupTeacher",
    "PerformativeTeacher",
    "TargetsError",
    "TeacherError",
    "TeacherTypeError",
    "TeachingSampler",
    "data",
    "functional",
    "linear",
    "mixup",
    "models",
]
