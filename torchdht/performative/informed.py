"""Informed teaching targets for :class:`~torchdht.PerformativeTeacher` (``target=``).

The paper's target ``theta*`` is a few SGD steps of the head on the batch
being taught. An :class:`InformedTarget` is handed to
:func:`~torchdht.functional.greedy_teach` as its ``target`` and turns each
step's lookahead into a target that carries information from beyond the
batch:

* ``"ema"``: an exponential moving average of the successive lookahead
  targets (no extra cost);
* ``"buffer"``: the head refit, every ``refit_every`` steps, to the optimum of
  its L2-regularised cross-entropy on a ring buffer of the last
  ``buffer_batches`` batches' detached features and labels
  (:func:`~torchdht.functional.informed.refit_head`), used until the next
  refit. Memory: the buffer's features; time: one L-BFGS fit per refit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._checks import check_float, check_int
from ..errors import TeacherError
from ..functional.informed import ema_target, refit_head
from ..functional.lookahead import LinearLookahead

__all__ = ["TARGETS", "InformedTarget"]

TARGETS = ("lookahead", "ema", "buffer")


class InformedTarget:
    """The state of an informed target and the callable ``greedy_teach`` calls each step.

    Args:
        kind: ``"ema"`` or ``"buffer"``.
        decay: the EMA's decay, in [0, 1).
        buffer_batches: batches the ring buffer keeps.
        refit_every: teaching steps between refits (the first step refits).
        l2: the refit's ridge coefficient.
        refit_iters: the refit's L-BFGS iterations at most.

    Example:
        >>> t = InformedTarget("ema", decay=0.5)
        >>> t.state_dict()["steps"]
        0
    """

    def __init__(
        self,
        kind: str,
        decay: float = 0.9,
        buffer_batches: int = 50,
        refit_every: int = 100,
        l2: float = 1e-4,
        refit_iters: int = 200,
    ) -> None:
        if kind not in TARGETS[1:]:
            raise TeacherError(f"kind must be 'ema' or 'buffer', got {kind!r}")
        self.kind = kind
        self.decay = check_float(decay, "target_decay", 0.0, 1.0, high_open=True)
        self.buffer_batches = check_int(buffer_batches, "buffer_batches", 1)
        self.refit_every = check_int(refit_every, "refit_every", 1)
        self.l2 = check_float(l2, "refit_l2", 0.0, low_open=True)
        self.refit_iters = check_int(refit_iters, "refit_iters", 1)
        self.update = True  # False inside torch.func transforms: use, do not change, the state
        self.steps = 0
        self.current: tuple[Tensor, Tensor | None] | None = None
        self.buffer: list[tuple[Tensor, Tensor]] = []

    def __call__(
        self,
        la: LinearLookahead,
        z: Tensor,
        targets: Tensor,
        valid: Tensor,
        weight: Tensor,
        bias: Tensor | None,
    ) -> tuple[Tensor, Tensor | None]:
        if not self.update:
            return self.current if self.current is not None else (la.weight, la.bias)
        if self.kind == "ema":
            self.current = ema_target(self.current, (la.weight, la.bias), self.decay)
        else:
            self.buffer.append((z[valid].detach().clone(), targets[valid].detach().clone()))
            del self.buffer[: -self.buffer_batches]
            if self.current is None or self.steps % self.refit_every == 0:
                start = self.current if self.current is not None else (weight, bias)
                zb = torch.cat([b[0] for b in self.buffer])
                yb = torch.cat([b[1] for b in self.buffer])
                self.current = refit_head(zb, yb, start[0], start[1], l2=self.l2,
                                          max_iter=self.refit_iters)
        self.steps += 1
        return self.current

    def state_dict(self) -> dict[str, Any]:
        """The target's state: its step count, the current target and the buffer."""
        return {"kind": self.kind, "steps": self.steps, "current": self.current,
                "buffer": list(self.buffer)}

    def load_state_dict(self, state: Any) -> None:
        """Restore :meth:`state_dict`'s output; a state of another kind is refused."""
        if not isinstance(state, dict) or state.get("kind") != self.kind:
            raise TeacherError(
                f"the saved target state is not one of target={self.kind!r}: "
                f"{state.get('kind') if isinstance(state, dict) else type(state).__name__!r}"
            )
        self.steps = check_int(state["steps"], "state['target']['steps']", 0)
        self.current = state["current"]
        self.buffer = list(state["buffer"])
