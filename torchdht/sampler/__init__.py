"""IMT-style example selection for any model, as a DataLoader batch sampler."""

from .sampler import TeachingSampler

__all__ = ["TeachingSampler"]
