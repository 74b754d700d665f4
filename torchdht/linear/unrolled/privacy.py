"""Privacy-preserving teaching via constrained DHT (paper section 5.3, eq. 10).

:class:`PrivacyTeacher` wraps a teacher and keeps every example it emits at
least ``eps`` away, in the feature space of a fixed network ``phi``, from every
example of a privacy set ``P``::

    min_j |phi(x~) - phi(p_j)|_2 >= eps

(the paper writes the squared distance; use ``eps = sqrt(eps_paper)``).

* Training (:meth:`PrivacyTeacher.fit`, for unrolled teachers): each unrolled
  step adds ``penalty * mean_k relu(eps - min_j |phi(x~_k) - phi(p_j)|)`` to
  the outer loss (eq. 10's hinge).
* Teaching (:meth:`PrivacyTeacher.propose`): a hard check. A violating
  proposal is repaired: the wrapped teacher is asked again (fresh noise /
  pool example) up to ``resamples`` times; then the example is moved away from
  its nearest private example along the line through both (and, if that fails,
  along a few random directions) by a doubling search and bisection on the
  step length until the constraint holds (verified, since ``phi`` is
  arbitrary); else a pool example that satisfies the constraint is returned.
  A violating example is never emitted: if nothing works, ``RuntimeError``.
  ``teacher.repairs`` counts the proposals that needed a repair,
  ``teacher.stats`` how each was fixed.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..._checks import check_float, check_int
from ...errors import TeacherError, TeacherTypeError
from ..omniscient.checks import Pool, check_pool, check_weights, make_generator
from ..omniscient.learners import LinearLearner
from .base import FitHistory, UnrolledTeacher, check_config
from .networks import describe, digest
from .policies import TransformTeacher
from .vae import VAETeacher, vae_phi

__all__ = ["PrivacyTeacher", "private_transform_teacher"]

Phi = Callable[[Tensor], Tensor]

_STATS = ("proposals", "violations", "resampled", "projected", "fallback")


class PrivacyTeacher:
    """Eq. 10: a teacher whose examples stay ``eps`` away from a privacy set in ``phi``-space.

    Args:
        teacher: the wrapped teacher: an unrolled one
            (:class:`~torchdht.linear.TransformTeacher`,
            :class:`~torchdht.linear.BlackBoxTeacher`,
            :class:`~torchdht.linear.GANTeacher`,
            :class:`~torchdht.linear.VAETeacher`), which
            :meth:`fit` trains with the hinge, or any object with
            ``propose(w)`` (then only the hard check applies). The privacy
            teacher owns it from now on (it trains it and draws from it).
        privacy_set: the private examples (M, D), M >= 1, in the learner's
            feature space; copied.
        eps: the minimum distance in ``phi``-space, > 0.
        phi: the fixed feature map, any callable (N, D) -> (N, F) (or (N, ...),
            flattened). Default: the encoder mean of the wrapped VAE teacher's
            VAE (:func:`~torchdht.linear.unrolled.vae.vae_phi`) when its samples
            are the learner's features; otherwise the identity (Euclidean
            distance in input space). An ``nn.Module`` is copied and frozen;
            a plain callable is used as is (keep its parameters frozen).
        penalty: weight of the hinge in training (default 1).
        resamples: fresh proposals to try before repairing (default 5).
        repair_steps: bisection steps of the line repair (default 30).
        directions: random directions tried when the line repair fails (default 8).
        pool: ``(x, y)`` the fallback examples are drawn from (default the
            wrapped teacher's own ``x``, ``y`` when it has them, as the unrolled
            teachers and :class:`~torchdht.linear.SGDTeacher` do).
        seed: seed of the repair's random draws.

    Raises:
        TypeError: ``teacher`` has no ``propose``; ``privacy_set`` is not a
            floating-point tensor; ``phi`` is not callable or returns no tensor.
        ValueError: ``privacy_set`` is empty, not (M, D) for the teacher's D,
            or not finite; ``eps <= 0``; ``phi`` returns another batch size
            than it was given.

    Example:
        >>> from torchdht.linear.omniscient import LR
        >>> from torchdht.linear import TransformTeacher
        >>> x = torch.randn(64, 2); y = torch.where(x[:, 0] > 0, 1.0, -1.0)
        >>> inner = TransformTeacher(LR, (x, y), 0.1, w_star=torch.tensor([3.0, 0.0]),
        ...                          unroll=5, seed=0)
        >>> t = PrivacyTeacher(inner, x[:4], eps=0.5, seed=0)
        >>> h = t.fit(iters=2)
        >>> xt, yt = t.propose(torch.zeros(2))
        >>> bool(t.min_distance(xt) >= 0.5)
        True
    """

    kind = "privacy"

    def __init__(
        self,
        teacher: Any,
        privacy_set: Tensor,
        eps: float,
        *,
        phi: Phi | None = None,
        penalty: float = 1.0,
        resamples: int = 5,
        repair_steps: int = 30,
        directions: int = 8,
        pool: Pool | None = None,
        seed: int | None = None,
    ) -> None:
        if not callable(getattr(teacher, "propose", None)):
            raise TeacherTypeError(
                f"teacher must have a propose(w) method, got {type(teacher).__name__}"
            )
        self.teacher = teacher
        self.eps = check_float(eps, "eps", 0.0, low_open=True)
        self.penalty = check_float(penalty, "penalty", 0.0)
        self.resamples = check_int(resamples, "resamples", 0)
        self.repair_steps = check_int(repair_steps, "repair_steps", 1)
        self.directions = check_int(directions, "directions", 0)
        learner = getattr(teacher, "learner", None)
        tx, ty = getattr(teacher, "x", None), getattr(teacher, "y", None)
        if pool is None and isinstance(tx, Tensor) and isinstance(ty, Tensor) and \
                tx.dim() == 2 and ty.dim() >= 1 and ty.shape[0] == tx.shape[0]:
            pool = (tx, ty)  # the wrapped teacher's own pool (unrolled teachers, SGD, IMT, ...)
        elif pool is not None:
            if isinstance(learner, LinearLearner):
                pool = check_pool(learner, pool)
            elif not isinstance(pool, (tuple, list)) or len(pool) != 2 or \
                    not isinstance(pool[0], Tensor) or pool[0].dim() != 2 or \
                    not pool[0].is_floating_point() or len(pool[1]) != pool[0].shape[0]:
                raise TeacherTypeError("pool must be a pair (x (N, D) floating point, y (N, ...))")
        dim = getattr(teacher, "dim", None)
        if dim is None and pool is not None:
            dim = pool[0].shape[1]
        self.dtype = (pool[0].dtype if pool is not None
                      else getattr(teacher, "dtype", torch.get_default_dtype()))
        self.privacy_set = self._check_privacy_set(privacy_set, dim)
        self.dim = self.privacy_set.shape[1]
        self.learner = learner
        self.phi = self._resolve_phi(phi)
        self._phi_name = describe(phi) if phi is not None else describe(self.phi)
        with torch.no_grad():
            self._private = self._features(self.privacy_set, "privacy_set")
        self._private64 = self._private.double()
        self.generator = make_generator(seed)
        self._pool: Pool | None = None
        self._safe = torch.zeros(0, dtype=torch.long)
        if pool is not None:
            px = pool[0].to(self.dtype)
            if px.shape[1] != self.dim:
                raise TeacherError(f"pool has D={px.shape[1]} features but the privacy set has "
                                   f"D={self.dim}")
            self._pool = (px, pool[1])
            with torch.no_grad():
                d = torch.cat([self._min_distance64(px[i : i + 512])
                               for i in range(0, px.shape[0], 512)])
            self._safe = (d >= self.eps).nonzero().flatten()
        self.repairs = 0
        self.stats = dict.fromkeys(_STATS, 0)

    # ------------------------------------------------------------------ checks
    @staticmethod
    def _check_privacy_set(p: Tensor, dim: int | None) -> Tensor:
        if not isinstance(p, Tensor) or not p.is_floating_point():
            raise TeacherTypeError("privacy_set must be a floating-point tensor of shape (M, D)")
        if p.dim() != 2 or (dim is not None and p.shape[1] != dim):
            want = f"(M, {dim})" if dim is not None else "(M, D)"
            raise TeacherError(
                f"privacy_set must have shape {want} (the learner's D={dim} features), got "
                f"{tuple(p.shape)}"
            )
        if p.shape[0] == 0:
            raise TeacherError(
                "privacy_set is empty: it needs at least one private example (M >= 1)"
            )
        if not bool(torch.isfinite(p).all()):
            raise TeacherError("privacy_set contains NaN or inf")
        return p.detach().clone()

    def _resolve_phi(self, phi: Phi | None) -> Phi:
        if phi is None:
            t = self.teacher
            if isinstance(t, VAETeacher) and t.to_features is None:
                return vae_phi(t.vae)
            return nn.Identity()
        if isinstance(phi, nn.Module):
            m = copy.deepcopy(phi).to(self.dtype)
            m.requires_grad_(False)
            return m.eval()
        if not callable(phi):
            raise TeacherTypeError(
                f"phi must be callable, (N, D) -> (N, F), got {type(phi).__name__}"
            )
        return phi

    def _features(self, x: Tensor, what: str = "x") -> Tensor:
        out = self.phi(x.to(self.dtype))
        if not isinstance(out, Tensor) or not out.is_floating_point():
            raise TeacherTypeError(
                f"phi must return a floating-point tensor, got {type(out).__name__}"
            )
        if out.dim() == 0 or out.shape[0] != x.shape[0]:
            got = out.shape[0] if out.dim() else "a scalar"
            raise TeacherError(
                f"phi must map a batch (N, D) to (N, F) row by row; given {what} with "
                f"N={x.shape[0]} it returned {got} rows (shape {tuple(out.shape)})"
            )
        return out.reshape(out.shape[0], -1)

    # --------------------------------------------------------------- distances
    def _min_distance64(self, x: Tensor) -> Tensor:
        f = self._features(x).double()
        if f.shape[1] != self._private64.shape[1]:
            raise TeacherError(f"phi returned {f.shape[1]} features for x but "
                               f"{self._private64.shape[1]} for the privacy set")
        d = torch.cdist(f, self._private64, compute_mode="donot_use_mm_for_euclid_dist")
        return d.min(dim=1).values

    def min_distance(self, x: Tensor) -> Tensor:
        """``min_j |phi(x_n) - phi(p_j)|`` for each row of ``x`` (N, D), in float64, no gradient.

        Example:
            >>> from torchdht.linear import SGDTeacher
            >>> from torchdht.linear.omniscient import LR
            >>> x = torch.tensor([[0.0, 0.0], [3.0, 4.0]]); y = torch.tensor([1.0, -1.0])
            >>> t = PrivacyTeacher(SGDTeacher(LR, (x, y), seed=0), torch.zeros(1, 2), 1.0)
            >>> t.min_distance(x)
            tensor([0., 5.], dtype=torch.float64)
        """
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != self.dim:
            raise TeacherError(f"x must have shape (N, {self.dim})")
        with torch.no_grad():
            return self._min_distance64(x)

    def satisfies(self, x: Tensor) -> Tensor:
        """Whether each row of ``x`` is at least ``eps`` from the privacy set, (N,) bool.

        Example:
            >>> from torchdht.linear import SGDTeacher
            >>> from torchdht.linear.omniscient import LR
            >>> x = torch.tensor([[0.0, 0.0], [3.0, 4.0]]); y = torch.tensor([1.0, -1.0])
            >>> t = PrivacyTeacher(SGDTeacher(LR, (x, y), seed=0), torch.zeros(1, 2), 1.0)
            >>> t.satisfies(x)
            tensor([False,  True])
        """
        return self.min_distance(x) >= self.eps

    def hinge(self, x: Tensor) -> Tensor:
        """``penalty * relu(eps - min_j |phi(x_k) - phi(p_j)|)`` per row, (N,), differentiable.

        The distance is ``sqrt(|.|^2 + 1e-12)`` so its gradient is finite at 0.

        Example:
            >>> from torchdht.linear import SGDTeacher
            >>> from torchdht.linear.omniscient import LR
            >>> x = torch.tensor([[0.0, 0.0], [3.0, 4.0]]); y = torch.tensor([1.0, -1.0])
            >>> t = PrivacyTeacher(SGDTeacher(LR, (x, y), seed=0), torch.zeros(1, 2), 1.0)
            >>> t.hinge(torch.tensor([[0.6, 0.0]]))
            tensor([0.4000])
        """
        f = self._features(x)
        d2 = (f[:, None, :] - self._private.to(f.dtype)[None, :, :]).pow(2).sum(-1)
        d = (d2 + 1e-12).sqrt().min(dim=1).values
        return self.penalty * F.relu(self.eps - d)

    # ---------------------------------------------------------------- training
    def fit(self, iters: int = 1000, progress: bool = False) -> FitHistory:
        """Train the wrapped teacher's policy with the hinge added to each unrolled step.

        Args:
            iters: outer iterations (default 1000).
            progress: show a tqdm bar.

        Returns:
            A :class:`~torchdht.linear.unrolled.base.FitHistory`
            (``penalty``: the summed hinge per outer iteration).

        Raises:
            TypeError: the wrapped teacher is not an unrolled (trainable) one.
        """
        t = self.teacher
        pen = self.hinge if self.penalty else None
        if isinstance(t, UnrolledTeacher):
            # each outer iteration under a forked, seeded global RNG, whatever the policy
            return t.fit(iters, progress, penalty=pen, isolate_rng=True)
        raise TeacherTypeError(
            f"fit: the wrapped {type(t).__name__} has no trainable policy; wrap a "
            "TransformTeacher, BlackBoxTeacher, GANTeacher or VAETeacher to train with the hinge"
        )

    # ---------------------------------------------------------------- teaching
    def _ok(self, x: Tensor, margin: float = 0.0) -> bool:
        return bool(self._min_distance64(x)[0] >= self.eps * (1.0 + margin))

    def _line_search(self, x: Tensor, direction: Tensor, scale: float) -> Tensor | None:
        """A small ``s`` (doubling, then bisection) with ``x + s d`` satisfying; None if none."""
        target = 1e-4  # repaired examples clear eps by a relative margin (robust to rounding)
        hi = scale
        for _ in range(60):
            cand = x + hi * direction
            if bool(torch.isfinite(cand).all()) and self._ok(cand, target):
                break
            hi *= 2.0
        else:
            return None
        lo = 0.0
        for _ in range(self.repair_steps):
            mid = 0.5 * (lo + hi)
            if self._ok(x + mid * direction, target):
                hi = mid
            else:
                lo = mid
        out = x + hi * direction
        return out if self._ok(out) else None

    def _repair(self, x: Tensor) -> Tensor | None:
        with torch.no_grad():
            f = self._features(x).double()
            j = int((f - self._private64).pow(2).sum(-1).argmin())
            p = self.privacy_set[j : j + 1].to(x.dtype)
            delta = x - p
            norm = float(delta.norm())
            spread = float(self.privacy_set.std()) if self.privacy_set.shape[0] > 1 else 0.0
            scale = max(norm, 1e-3 * max(spread, float(x.abs().max()), 1.0), 1e-6)
            dirs = []
            if norm > 1e-12 and math.isfinite(norm):
                dirs.append(delta / norm)
            for _ in range(self.directions):
                r = torch.randn(x.shape, generator=self.generator, dtype=torch.float64)
                dirs.append((r / r.norm()).to(x.dtype))
            for d in dirs:
                out = self._line_search(x, d, scale)
                if out is not None:
                    return out
        return None

    def _fallback(self, y: Tensor) -> tuple[Tensor, Tensor] | None:
        if self._pool is None or self._safe.numel() == 0:
            return None
        px, py = self._pool
        safe = self._safe
        same = safe
        if py.dim() == 1 and y.numel() == 1:
            same = safe[py[safe] == y.reshape(-1)[0].to(py.dtype)]
        for cand in (same, safe):
            if cand.numel() == 0:
                continue
            for _ in range(4):
                i = int(cand[int(torch.randint(0, cand.numel(), (1,), generator=self.generator))])
                xi = px[i : i + 1]
                if self._ok(xi):
                    return xi.clone(), py[i : i + 1].clone()
        return None

    def _exact(self, x: Tensor) -> Tensor:
        return x.detach().reshape(1, -1).to(self.dtype)

    def propose(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """The wrapped teacher's example for the learner at ``w``, repaired if it violates.

        Raises:
            RuntimeError: no example satisfying the constraint could be found
                (nothing is emitted then).
        """
        if isinstance(self.learner, LinearLearner):
            check_weights(self.learner, w, self.dim, "w")
        self.stats["proposals"] += 1
        x, y = self.teacher.propose(w)
        with torch.no_grad():
            # the example is checked (and emitted) as rounded to the privacy dtype, so what
            # leaves is exactly what was verified
            if self._ok(self._exact(x)):
                return self._exact(x).to(x.dtype).reshape(x.shape), y
            self.repairs += 1
            self.stats["violations"] += 1
            for _ in range(self.resamples):
                x, y = self.teacher.propose(w)
                if self._ok(self._exact(x)):
                    self.stats["resampled"] += 1
                    return self._exact(x).to(x.dtype).reshape(x.shape), y
            fixed = self._repair(self._exact(x))
            if fixed is not None:
                self.stats["projected"] += 1
                return fixed.to(x.dtype).reshape(x.shape), y
            fb = self._fallback(y)
            if fb is not None:
                self.stats["fallback"] += 1
                return fb[0].to(x.dtype).reshape(x.shape), fb[1]
        raise RuntimeError(
            f"PrivacyTeacher: no example at phi-distance >= eps={self.eps:g} from the privacy set "
            "was found (resampling, line repair and the pool all failed); lower eps or pass a "
            "pool with examples far enough from the privacy set"
        )

    # ------------------------------------------------------------------- state
    def config(self) -> dict[str, Any]:
        """The settings a checkpoint must agree on."""
        inner = self.teacher.config() if callable(getattr(self.teacher, "config", None)) \
            else type(self.teacher).__name__
        return {
            "kind": self.kind,
            "eps": self.eps,
            "penalty": self.penalty,
            "resamples": self.resamples,
            "repair_steps": self.repair_steps,
            "directions": self.directions,
            "privacy_set": [list(self.privacy_set.shape), digest(self.privacy_set)],
            "phi": self._phi_name,
            "teacher": inner,
        }

    def state_dict(self) -> dict[str, Any]:
        """The wrapped teacher's state (when it has one), the repair RNG and the counters."""
        sd = getattr(self.teacher, "state_dict", None)
        return {
            "config": self.config(),
            "teacher": sd() if callable(sd) else None,
            "generator": self.generator.get_state(),
            "repairs": self.repairs,
            "stats": dict(self.stats),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a checkpoint of another configuration is refused.

        Raises:
            ValueError: another configuration (the differing keys are named),
                or not a privacy teacher checkpoint.
        """
        if not isinstance(state, dict) or "config" not in state or "generator" not in state:
            raise TeacherError("state must be a dict from PrivacyTeacher.state_dict()")
        mine, theirs = self.config(), state["config"]
        if not isinstance(theirs, dict):
            raise TeacherError("state: malformed checkpoint (config is not a dict)")
        check_config(mine, theirs)
        if state["teacher"] is not None:
            self.teacher.load_state_dict(state["teacher"])
        self.generator.set_state(state["generator"])
        self.repairs = int(state["repairs"])
        self.stats = {k: int(state["stats"].get(k, 0)) for k in _STATS}

    def __repr__(self) -> str:
        return (f"PrivacyTeacher({type(self.teacher).__name__}, M={self.privacy_set.shape[0]}, "
                f"eps={self.eps:g}, repairs={self.repairs})")


def private_transform_teacher(
    learner: LinearLearner,
    pool: Pool,
    lr: float,
    *,
    w_star: Tensor,
    privacy_set: Tensor,
    eps: float,
    phi: Phi | None = None,
    penalty: float = 1.0,
    seed: int | None = None,
    **kwargs: Any,
) -> PrivacyTeacher:
    """The default privacy teacher: a :class:`~torchdht.linear.TransformTeacher` policy, wrapped.

    Args:
        learner, pool, lr, w_star: as for :class:`~torchdht.linear.TransformTeacher`.
        privacy_set, eps, phi, penalty: as for :class:`PrivacyTeacher`.
        seed: seeds the policy and the repairs.
        **kwargs: passed to :class:`~torchdht.linear.TransformTeacher`.

    Example:
        >>> from torchdht.linear.omniscient import LR
        >>> x = torch.randn(32, 2); y = torch.where(x[:, 0] > 0, 1.0, -1.0)
        >>> t = private_transform_teacher(LR, (x, y), 0.1, w_star=torch.ones(2),
        ...                               privacy_set=x[:3], eps=0.3, unroll=4, seed=0)
        >>> type(t.teacher).__name__
        'TransformTeacher'
    """
    inner = TransformTeacher(learner, pool, lr, w_star=w_star, seed=seed, **kwargs)
    return PrivacyTeacher(inner, privacy_set, eps, phi=phi, penalty=penalty, seed=seed)
