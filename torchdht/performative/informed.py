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
  refit. Memory: the buffer's features; time: one L-BFGS fit per refit;
* ``"heldout"``: the lookahead run on a held-out split of the training data
  instead of the batch (:class:`HeldoutTarget`): each step one held-out batch
  goes through the user's encoder (no grad, eval mode) and the head takes
  ``lookahead_steps`` SGD steps on those features. The training batch is never
  read. Time: one encoder forward of the held-out batch per step.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_float, check_int
from ..errors import TeacherError
from ..functional.informed import ema_target, refit_head
from ..functional.lookahead import LinearLookahead, linear_lookahead

__all__ = ["TARGETS", "HeldoutTarget", "InformedTarget"]

TARGETS = ("lookahead", "ema", "buffer", "heldout")


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
        if kind not in ("ema", "buffer"):
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


class HeldoutTarget:
    """``theta*`` from a lookahead on held-out data: the callable ``greedy_teach`` calls.

    Each call draws the next held-out batch, maps it through ``encoder`` under
    ``torch.no_grad()`` with every module of the encoder in eval mode (their
    modes are restored after, so BatchNorm statistics and dropout are left
    alone), and returns ``steps`` SGD steps of the head, at the lookahead lr
    the teacher sets in :attr:`lr`, on those features. The training batch
    handed to the call is not read.

    Args:
        encoder: the module mapping inputs to the head's input features.
        data: ``(x, y)`` tensors, cut in order into batches of ``batch_size``
            rows and cycled; or an iterable of ``(x, y)`` batches (a
            ``DataLoader``), started again when exhausted.
        batch_size: rows per held-out batch when ``data`` is tensors.
        steps: the lookahead's SGD steps.

    Example:
        >>> enc = nn.Linear(6, 4)
        >>> t = HeldoutTarget(enc, (torch.randn(10, 6), torch.randint(0, 3, (10,))), 4, 5)
        >>> t.lr = 0.1
        >>> w, b = t(None, None, None, None, torch.zeros(3, 4), torch.zeros(3))
        >>> w.shape, t.state_dict()["cursor"]
        (torch.Size([3, 4]), 4)
    """

    def __init__(self, encoder: Any, data: Any, batch_size: int, steps: int) -> None:
        if not isinstance(encoder, nn.Module):
            raise TypeError(
                "heldout_encoder must be the nn.Module that maps inputs to the head's "
                f"features, got {type(encoder).__name__}"
            )
        self.encoder = encoder
        self.batch_size = check_int(batch_size, "heldout_batch", 1)
        self.steps = check_int(steps, "lookahead_steps", 0)
        self.tensors: tuple[Tensor, Tensor] | None = None
        self.loader: Iterable[Any] | None = None
        if (isinstance(data, (tuple, list)) and len(data) == 2
                and all(isinstance(t, Tensor) for t in data)):
            x, y = data
            if x.shape[0] != y.shape[0] or x.shape[0] == 0:
                raise ValueError(
                    "heldout=(x, y) needs the same number of rows (at least one) in x and y, "
                    f"got {x.shape[0]} and {y.shape[0]}"
                )
            self.tensors = (x, y)
        elif isinstance(data, Iterable) and not isinstance(data, (str, bytes, Tensor)):
            self.loader = data
        else:
            raise TypeError(
                "heldout must be (x, y) tensors or an iterable of (x, y) batches, got "
                f"{type(data).__name__}"
            )
        self.lr: float | Tensor = 0.0  # set by the teacher before each call
        self.update = True
        self.cursor = 0
        self._iter: Iterator[Any] | None = None

    def _next_batch(self) -> tuple[Tensor, Tensor]:
        if self.tensors is not None:
            x, y = self.tensors
            n = x.shape[0]
            idx = (self.cursor + torch.arange(min(self.batch_size, n))) % n
            if self.update:
                self.cursor = int((self.cursor + len(idx)) % n)
            return x[idx], y[idx]
        assert self.loader is not None
        if self._iter is None:
            self._iter = iter(self.loader)
        try:
            batch = next(self._iter)
        except StopIteration:
            self._iter = iter(self.loader)
            batch = next(self._iter, None)
            if batch is None:
                raise TeacherError("the heldout loader yields no batches") from None
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TeacherError(
                f"the heldout loader must yield (x, y) batches, got {type(batch).__name__}"
            )
        return batch[0], batch[1]

    def features(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """The next held-out batch's features (eval mode, no grad) and its targets."""
        x, y = self._next_batch()
        modes = [(m, m.training) for m in self.encoder.modules()]
        try:
            self.encoder.eval()
            with torch.no_grad():
                z = self.encoder(x.to(device))
        finally:
            for m, mode in modes:
                m.training = mode
        if not isinstance(z, Tensor) or z.dim() != 2:
            raise TeacherError(
                "heldout_encoder must return the head's (N, D) features, got "
                f"{tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__}"
            )
        y = y.to(device)
        return z, (y if y.is_floating_point() else y.long())

    def __call__(
        self,
        la: LinearLookahead | None,
        z: Tensor | None,
        targets: Tensor | None,
        valid: Tensor | None,
        weight: Tensor,
        bias: Tensor | None,
    ) -> tuple[Tensor, Tensor | None]:
        zh, yh = self.features(weight.device)
        if zh.shape[-1] != weight.shape[-1]:
            raise TeacherError(
                f"heldout_encoder gives {zh.shape[-1]} features; the head takes "
                f"{weight.shape[-1]}"
            )
        out = linear_lookahead(zh.to(weight.dtype), yh, weight, bias, self.lr, self.steps)
        return out.weight, out.bias

    def state_dict(self) -> dict[str, Any]:
        """The held-out cursor (tensors) and nothing for a loader, which starts again."""
        return {"kind": "heldout", "cursor": self.cursor}

    def load_state_dict(self, state: Any) -> None:
        """Restore :meth:`state_dict`'s output; a state of another kind is refused."""
        if not isinstance(state, dict) or state.get("kind") != "heldout":
            raise TeacherError(
                "the saved target state is not one of target='heldout': "
                f"{state.get('kind') if isinstance(state, dict) else type(state).__name__!r}"
            )
        self.cursor = check_int(state["cursor"], "state['target']['cursor']", 0)
        self._iter = None
