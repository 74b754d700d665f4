"""Linear learners as pure functions: least squares, logistic and softmax regression.

Three learners, as in section 3.4 of the DHT paper, none with a bias (append a
constant feature to get one):

========= ===================================== ============ =================
learner   loss of one example                   ``w``         labels ``y``
========= ===================================== ============ =================
``LSR``   ``0.5 * (<w, x> - y)^2``              (D,)         real; +-1 on
                                                             classification
``LR``    ``log(1 + exp(-y <w, x>))``           (D,)         -1 or +1 (data);
                                                             any real (synthesised)
Softmax   ``sum(y) logsumexp(W x) - <y, W x>``  (C, D)       class index in
                                                             [0, C), or soft
                                                             labels (C,) >= 0
========= ===================================== ============ =================

Every function is batched over examples: ``x`` has shape (N, D) (a single
(D,) row is read as N = 1) and the result has a leading N. ``loss`` gives
(N,), ``grad`` the per-example gradients (N, *w.shape) and ``sgd_step`` one
SGD step on the mean loss of the batch (the teachers feed one example per
step, N = 1). The greedy objective of eq. 4,

    f(x, y) = lr^2 |grad l(x, y | w)|^2 - 2 lr <w - w*, grad l(x, y | w)>,

which equals ``|w - lr grad - w*|^2 - |w - w*|^2``, is given in closed form
together with its exact gradient in ``x`` and in ``y`` (no autograd). In those
(``objective``, ``objective_and_grad``, ``label_objective_and_grad``) ``w``
and ``w_star`` may also carry a leading N, one learner per example, which is
what the batched DHT solve uses.

All of them share one structure: the gradient of one example is ``a x^T``
with ``a = d l / d logits`` (K = 1 logit for LSR and LR, C for softmax), so
with ``h = (W - W*) x``, ``n = |x|^2`` and ``H = d a / d logits``::

    f      = lr^2 |a|^2 n - 2 lr <a, h>
    df/dx  = W^T H (2 lr^2 n a - 2 lr h) + 2 lr^2 |a|^2 x - 2 lr (W - W*)^T a
    df/dy  = (d a / d y)^T (2 lr^2 n a - 2 lr h)

The unchecked batched kernel every learner is built from (``matrix``,
``matrix_logits``, ``target_rows``, ``logit_loss``, ``logit_grad``,
``logit_hvp``, ``label_vjp``, ``label_fg``) is public: :func:`fit_w_star`,
label synthesis and the unrolled teachers (:mod:`torchdht.linear.unrolled`)
use it, and a new learner defines the four ``logit_*``/``label_vjp`` hooks.

Labels given as data (teachers' pools, test sets, :func:`fit_w_star`) are
checked strictly with :meth:`LinearLearner.check_labels`: LR needs -1/+1,
softmax needs class indices in range, LSR needs finite reals. ``loss`` and
friends also accept the real-valued labels that label synthesis produces.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._checks import check_int, check_positive
from ...errors import TargetsError, TeacherError, TeacherTypeError

__all__ = [
    "LinearLearner",
    "LeastSquares",
    "Logistic",
    "Softmax",
    "LSR",
    "LR",
    "check_lr",
    "check_x",
    "stable_softmax",
]


def check_lr(lr: float, name: str = "lr") -> float:
    """Return ``lr`` as a float after checking it is a finite number > 0.

    Example:
        >>> check_lr(1e-3)
        0.001
        >>> check_lr(0.0)
        Traceback (most recent call last):
        ...
        torchdht.errors.TeacherError: lr must be a positive float, got 0.0
    """
    return float(check_positive(lr, name))


def check_x(x: Tensor, name: str = "x") -> Tensor:
    """``x`` as (N, D): a floating-point tensor, a single (D,) row read as N = 1.

    Example:
        >>> check_x(torch.ones(3)).shape
        torch.Size([1, 3])
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TeacherTypeError(f"{name} must be a floating-point tensor of shape (N, D) or (D,)")
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2:
        raise TeacherError(f"{name} must have shape (N, D) or (D,), got {tuple(x.shape)}")
    return x


def stable_softmax(z: Tensor) -> Tensor:
    """Softmax over the last dimension, written out (max-shifted exponentials).

    Example:
        >>> stable_softmax(torch.zeros(1, 2))
        tensor([[0.5000, 0.5000]])
    """
    # Written out: on small tensors torch.softmax can pay a multi-thread barrier (milliseconds
    # on a busy machine), which dominates the iterative solvers' many tiny steps.
    e = (z - z.amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


class LinearLearner:
    """Base class of the linear learners; the instances hold no state but the class count.

    Subclasses define the loss through its logits: ``logit_loss``, ``logit_grad``
    (``a``), ``logit_hvp`` (``H v``) and ``label_vjp`` (``(da/dy)^T v``); the rest
    (shapes, checks, the greedy objective and its gradients) lives here. The
    kernel methods (``matrix`` ... ``label_fg``) do not check their arguments.
    """

    name: str = "linear"
    """Short name used in tables and error messages."""
    num_outputs: int = 1
    """Number of logits K (1 for LSR and LR)."""

    # ----------------------------------------------------------------- shapes
    def weight_shape(self, dim: int) -> tuple[int, ...]:
        """Shape of ``w`` for ``dim`` input features.

        Example:
            >>> LR.weight_shape(3), Softmax(4).weight_shape(3)
            ((3,), (4, 3))
        """
        return (dim,)

    def init(
        self,
        dim: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Xavier-uniform initial weights, ``U(-b, b)`` with ``b = sqrt(6 / (D + K))``.

        Example:
            >>> LR.init(5, torch.Generator().manual_seed(0)).shape
            torch.Size([5])
        """
        dim = check_int(dim, "dim", 1)
        bound = math.sqrt(6.0 / (dim + self.num_outputs))
        u = torch.rand(self.weight_shape(dim), generator=generator, dtype=dtype)
        return (2.0 * u - 1.0) * bound

    def matrix(self, w: Tensor) -> Tensor:
        """``w`` as (K, D) or, batched, (N, K, D)."""
        return w.unsqueeze(-2)

    def check_w(self, w: Tensor, n: int | None, dim: int, name: str = "w") -> Tensor:
        """``w`` checked (``weight_shape(dim)``, or (n, *shape) with ``n``) as :meth:`matrix`."""
        if not isinstance(w, Tensor) or not w.is_floating_point():
            raise TeacherTypeError(f"{name} must be a floating-point tensor")
        base = self.weight_shape(dim)
        if tuple(w.shape) == base:
            return self.matrix(w)
        if n is not None and tuple(w.shape) == (n, *base):
            return self.matrix(w)
        expect = f"{base}" + (f" or {(n, *base)}" if n is not None else "")
        raise TeacherError(
            f"{name} has shape {tuple(w.shape)} but x has D={dim} features; the {self.name} "
            f"learner expects {name} of shape {expect}"
        )

    def matrix_logits(self, wm: Tensor, x: Tensor) -> Tensor:
        """Logits (N, K) of ``x`` (N, D) for ``wm`` (K, D) or, one per row, (N, K, D)."""
        if wm.dim() == 2:
            return x @ wm.T
        return torch.einsum("nkd,nd->nk", wm, x)

    @staticmethod
    def _wt(wm: Tensor, u: Tensor) -> Tensor:
        """``W^T u`` per example: (N, K) -> (N, D)."""
        if wm.dim() == 2:
            return u @ wm
        return torch.einsum("nk,nkd->nd", u, wm)

    # ----------------------------------------------------------------- labels
    def check_labels(self, y: Tensor, n: int | None = None, name: str = "y") -> Tensor:
        """Check data labels strictly and return them; subclasses say what is allowed.

        Example:
            >>> LR.check_labels(torch.tensor([1.0, -1.0]))
            tensor([ 1., -1.])
        """
        raise NotImplementedError

    def check_y(self, y: Tensor, n: int, name: str = "y") -> Tensor:
        """Lenient check used by ``loss`` & co.: shape, finiteness, and the label set."""
        raise NotImplementedError

    def targets(self, classes: Tensor) -> Tensor:
        """Labels in this learner's label set from binary class indices 0/1 (or C classes).

        Example:
            >>> LR.targets(torch.tensor([0, 1]))
            tensor([-1.,  1.])
        """
        classes = torch.as_tensor(classes)
        if classes.is_floating_point() or classes.dim() != 1:
            raise TeacherTypeError("classes must be an integer tensor of shape (N,)")
        if classes.numel() and not bool(((classes == 0) | (classes == 1)).all()):
            raise TargetsError(f"classes must be 0 or 1 for the {self.name} learner")
        return classes.to(torch.get_default_dtype()) * 2.0 - 1.0

    def sample_labels(
        self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """``n`` labels drawn uniformly from the (hard) label set.

        Example:
            >>> LR.sample_labels(4, torch.Generator().manual_seed(0)).abs().tolist()
            [1.0, 1.0, 1.0, 1.0]
        """
        return torch.randint(0, 2, (n,), generator=generator).to(dtype) * 2.0 - 1.0

    def project_label(self, y: Tensor, norm: float) -> Tensor:
        """Project labels onto the label-synthesis set (``|y| <= norm`` for scalar labels).

        Example:
            >>> LR.project_label(torch.tensor([3.0, -0.5]), 2.0)
            tensor([ 2.0000, -0.5000])
        """
        return y.clamp(-norm, norm)

    def target_rows(self, y: Tensor, dtype: torch.dtype) -> Tensor:
        """Labels as (N, K) float."""
        return y.to(dtype).unsqueeze(-1)

    # ----------------------------------------------------------- the learner
    def _prep(self, w: Tensor, x: Tensor, y: Tensor, batched_w: bool) -> tuple[Tensor, ...]:
        x = check_x(x)
        n, d = x.shape
        wm = self.check_w(w, n if batched_w else None, d)
        if wm.dtype != x.dtype:
            raise TeacherTypeError(f"w ({wm.dtype}) and x ({x.dtype}) must have the same dtype")
        y = self.check_y(y, n)
        return wm, x, self.target_rows(y, x.dtype)

    def logit_loss(self, logits: Tensor, t: Tensor) -> Tensor:
        """The loss per row from logits (..., K) and targets ``t`` (:meth:`target_rows`)."""
        raise NotImplementedError

    def logit_grad(self, logits: Tensor, t: Tensor) -> Tensor:
        """``a = dl/dlogits``, shaped like ``logits``."""
        raise NotImplementedError

    def logit_hvp(self, logits: Tensor, t: Tensor, v: Tensor) -> Tensor:
        """``H v`` with ``H = d a / d logits``."""
        raise NotImplementedError

    def label_vjp(self, logits: Tensor, t: Tensor, v: Tensor) -> Tensor:
        """``(d a / d y)^T v``, shaped like the label."""
        raise NotImplementedError

    def logits(self, w: Tensor, x: Tensor) -> Tensor:
        """The logits ``W x``, shape (N, K) (K = 1 for LSR and LR).

        Example:
            >>> LR.logits(torch.tensor([1.0, 2.0]), torch.tensor([[1.0, 1.0]]))
            tensor([[3.]])
        """
        x = check_x(x)
        return self.matrix_logits(self.check_w(w, x.shape[0], x.shape[1]), x)

    def loss(self, w: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """Per-example loss, shape (N,).

        Args:
            w: weights (see the table in the module docstring).
            x: inputs of shape (N, D) or (D,).
            y: labels of shape (N,) (softmax: (N,) indices or (N, C) soft labels).

        Example:
            >>> LR.loss(torch.zeros(2), torch.ones(1, 2), torch.tensor([1.0]))
            tensor([0.6931])
        """
        wm, x, t = self._prep(w, x, y, batched_w=False)
        return self.logit_loss(self.matrix_logits(wm, x), t)

    def grad(self, w: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """Per-example gradient of the loss with respect to ``w``, shape (N, *w.shape).

        Example:
            >>> LSR.grad(torch.zeros(2), torch.tensor([[1.0, 2.0]]), torch.tensor([1.0]))
            tensor([[-1., -2.]])
        """
        wm, x, t = self._prep(w, x, y, batched_w=False)
        a = self.logit_grad(self.matrix_logits(wm, x), t)
        g = a.unsqueeze(-1) * x.unsqueeze(-2)
        return g.reshape(x.shape[0], *w.shape)

    def sgd_step(self, w: Tensor, x: Tensor, y: Tensor, lr: float) -> Tensor:
        """One SGD step on the mean loss of the batch: ``w - lr * mean_j grad_j``.

        Example:
            >>> LSR.sgd_step(torch.zeros(2), torch.tensor([[1.0, 2.0]]), torch.tensor([1.0]), 0.1)
            tensor([0.1000, 0.2000])
        """
        lr = check_lr(lr)
        return w - lr * self.grad(w, x, y).mean(0)

    def predict(self, w: Tensor, x: Tensor) -> Tensor:
        """Predicted labels: the sign (+1 for a zero logit) for LSR and LR.

        Example:
            >>> LR.predict(torch.tensor([1.0, -1.0]), torch.tensor([[2.0, 1.0], [0.0, 1.0]]))
            tensor([ 1., -1.])
        """
        z = self.logits(w, x).squeeze(-1)
        return torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))

    def accuracy(self, w: Tensor, x: Tensor, y: Tensor) -> float:
        """Fraction of examples whose predicted label equals ``y`` (hard labels).

        Example:
            >>> LR.accuracy(torch.tensor([1.0, 0.0]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]),
            ...             torch.tensor([1.0, -1.0]))
            0.5
        """
        x = check_x(x)
        y = self.check_labels(y, x.shape[0])
        pred = self.predict(w, x)
        return float((pred == y.to(pred.dtype)).double().mean())

    # -------------------------------------------------- the greedy objective
    def objective(
        self, w: Tensor, w_star: Tensor, x: Tensor, y: Tensor, lr: float
    ) -> Tensor:
        """The greedy teaching objective of eq. 4 per example, shape (N,).

        ``lr^2 |grad|^2 - 2 lr <w - w*, grad>``: how much one SGD step on
        that single example changes ``|w - w*|^2`` (negative is closer).

        Args:
            w: weights, shape ``weight_shape(D)`` or (N, *weight_shape(D)).
            w_star: the target, same shape as ``w``.
            x: candidate inputs (N, D).
            y: their labels (N,) or, for softmax soft labels, (N, C).
            lr: the learner's learning rate.

        Example:
            >>> w, ws = torch.zeros(2), torch.ones(2)
            >>> x, y = torch.tensor([[1.0, 0.0]]), torch.tensor([1.0])
            >>> f = LSR.objective(w, ws, x, y, 0.1)
            >>> step = LSR.sgd_step(w, x, y, 0.1)
            >>> bool(torch.isclose(f, (step - ws).pow(2).sum() - (w - ws).pow(2).sum()))
            True
        """
        return self.objective_and_grad(w, w_star, x, y, lr, with_grad=False)[0]

    def objective_and_grad(
        self,
        w: Tensor,
        w_star: Tensor,
        x: Tensor,
        y: Tensor,
        lr: float,
        with_grad: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """Eq. 4 and its exact gradient with respect to ``x``: ``(f (N,), df/dx (N, D))``.

        Example:
            >>> f, g = LR.objective_and_grad(torch.zeros(3), torch.ones(3), torch.ones(2, 3),
            ...                              torch.tensor([1.0, -1.0]), 0.1)
            >>> f.shape, g.shape
            (torch.Size([2]), torch.Size([2, 3]))
        """
        lr = check_lr(lr)
        wm, x, t = self._prep(w, x, y, batched_w=True)
        dm = wm - self.check_w(w_star, x.shape[0], x.shape[1], name="w_star")
        logits = self.matrix_logits(wm, x)
        a = self.logit_grad(logits, t)
        h = self.matrix_logits(dm, x)
        n = x.pow(2).sum(-1)
        a_sq = a.pow(2).sum(-1)
        f = lr * lr * a_sq * n - 2.0 * lr * (a * h).sum(-1)
        if not with_grad:
            return f, torch.empty(0)
        v = (2.0 * lr * lr) * n.unsqueeze(-1) * a - (2.0 * lr) * h
        dx = (
            self._wt(wm, self.logit_hvp(logits, t, v))
            + (2.0 * lr * lr) * a_sq.unsqueeze(-1) * x
            - (2.0 * lr) * self._wt(dm, a)
        )
        return f, dx

    def label_objective_and_grad(
        self, w: Tensor, w_star: Tensor, x: Tensor, y: Tensor, lr: float
    ) -> tuple[Tensor, Tensor]:
        """Eq. 4 and its exact gradient with respect to the label ``y`` (x fixed).

        ``y`` is real-valued here: (N,) for LSR/LR, (N, C) soft labels for
        softmax. Returns ``(f (N,), df/dy)`` with ``df/dy`` shaped like ``y``.

        Example:
            >>> f, gy = LR.label_objective_and_grad(torch.zeros(2), torch.ones(2),
            ...                                     torch.ones(3, 2), torch.zeros(3), 0.1)
            >>> gy.shape
            torch.Size([3])
        """
        lr = check_lr(lr)
        wm, x, t = self._prep(w, x, y, batched_w=True)
        dm = wm - self.check_w(w_star, x.shape[0], x.shape[1], name="w_star")
        return self.label_fg(wm, dm, x, t, lr)

    def label_fg(
        self, wm: Tensor, dm: Tensor, x: Tensor, t: Tensor, lr: float
    ) -> tuple[Tensor, Tensor]:
        """Unchecked core of :meth:`label_objective_and_grad` (``t`` as (N, K) floats)."""
        logits = self.matrix_logits(wm, x)
        a = self.logit_grad(logits, t)
        h = self.matrix_logits(dm, x)
        n = x.pow(2).sum(-1)
        f = lr * lr * a.pow(2).sum(-1) * n - 2.0 * lr * (a * h).sum(-1)
        v = (2.0 * lr * lr) * n.unsqueeze(-1) * a - (2.0 * lr) * h
        return f, self.label_vjp(logits, t, v)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _ScalarLabels(LinearLearner):
    """Shared label handling of LSR and LR: one real label per example."""

    def check_y(self, y: Tensor, n: int, name: str = "y") -> Tensor:
        if not isinstance(y, Tensor):
            raise TeacherTypeError(f"{name} must be a tensor of shape ({n},)")
        if y.dim() == 0:
            y = y.reshape(1)
        if tuple(y.shape) != (n,):
            raise TargetsError(
                f"{name} must have shape ({n},) (one scalar label per row of x), got "
                f"{tuple(y.shape)}"
            )
        if y.is_floating_point():
            if not bool(torch.isfinite(y).all()):
                raise TargetsError(f"{name} contains NaN or inf")
        elif self.name == "LR" and not bool(((y == 1) | (y == -1)).all()):
            raise TargetsError(
                f"{name}: integer labels for the LR learner must be -1 or +1 "
                "(convert 0/1 class indices with learner.targets(classes))"
            )
        return y


class LeastSquares(_ScalarLabels):
    """Least-squares regression, ``l = 0.5 (<w, x> - y)^2``; on classification data y = +-1.

    Example:
        >>> LSR.loss(torch.tensor([1.0, 0.0]), torch.tensor([[2.0, 5.0]]), torch.tensor([1.0]))
        tensor([0.5000])
    """

    name = "LSR"

    def check_labels(self, y: Tensor, n: int | None = None, name: str = "y") -> Tensor:
        """Finite real labels of shape (N,).

        Example:
            >>> LSR.check_labels(torch.tensor([0.5, float("nan")]))
            Traceback (most recent call last):
            ...
            torchdht.errors.TargetsError: y contains NaN or inf
        """
        if not isinstance(y, Tensor) or not y.is_floating_point() or y.dim() != 1:
            raise TeacherTypeError(f"{name} must be a floating-point tensor of shape (N,) for LSR")
        return self.check_y(y, y.shape[0] if n is None else n, name)

    def logit_loss(self, logits: Tensor, t: Tensor) -> Tensor:
        return 0.5 * (logits - t).pow(2).sum(-1)

    def logit_grad(self, logits: Tensor, t: Tensor) -> Tensor:
        return logits - t

    def logit_hvp(self, logits: Tensor, t: Tensor, v: Tensor) -> Tensor:
        return v

    def label_vjp(self, logits: Tensor, t: Tensor, v: Tensor) -> Tensor:
        return -v.squeeze(-1)


class Logistic(_ScalarLabels):
    """Binary logistic regression, ``l = log(1 + exp(-y <w, x>))`` with labels +-1.

    Example:
        >>> LR.grad(torch.zeros(2), torch.tensor([[1.0, 2.0]]), torch.tensor([-1.0]))
        tensor([[0.5000, 1.0000]])
    """

    name = "LR"

    def check_labels(self, y: Tensor, n: int | None = None, name: str = "y") -> Tensor:
        """Labels of shape (N,) with every value -1 or +1.

        Example:
            >>> LR.check_labels(torch.tensor([0.0, 1.0]))  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            torchdht.errors.TargetsError: y: labels for the LR learner must be -1 or +1, ...
        """
        if not isinstance(y, Tensor) or y.dim() != 1:
            raise TeacherTypeError(f"{name} must be a tensor of shape (N,) with values -1 or +1")
        y = self.check_y(y, y.shape[0] if n is None else n, name)
        bad = y[(y != 1) & (y != -1)]
        if bad.numel():
            raise TargetsError(
                f"{name}: labels for the LR learner must be -1 or +1, found "
                f"{sorted(set(bad.tolist()))[:5]}; convert 0/1 class indices with "
                "learner.targets(classes)"
            )
        return y

    def logit_loss(self, logits: Tensor, t: Tensor) -> Tensor:
        return F.softplus(-t * logits).sum(-1)

    def logit_grad(self, logits: Tensor, t: Tensor) -> Tensor:
        return -t * torch.sigmoid(-t * logits)

    def logit_hvp(self, logits: Tensor, t: Tensor, v: Tensor) -> Tensor:
        s = torch.sigmoid(-t * logits)
        return t * t * s * (1.0 - s) * v

    def label_vjp(self, logits: Tensor, t: Tensor, v: Tensor) -> Tensor:
        s = torch.sigmoid(-t * logits)
        da_dy = -s + t * logits * s * (1.0 - s)
        return (da_dy * v).squeeze(-1)


class Softmax(LinearLearner):
    """Multiclass softmax regression without bias: ``W`` (C, D), cross-entropy loss.

    Labels are class indices (N,) in ``[0, C)`` or soft labels (N, C) >= 0;
    for soft labels the loss is ``sum(y) logsumexp(W x) - <y, W x>`` (the
    cross-entropy against unnormalised targets, as label synthesis needs).

    Args:
        num_classes: C >= 2.

    Example:
        >>> sm = Softmax(3)
        >>> sm.loss(torch.zeros(3, 2), torch.ones(1, 2), torch.tensor([2]))
        tensor([1.0986])
    """

    name = "softmax"

    def __init__(self, num_classes: int = 2) -> None:
        num_classes = check_int(num_classes, "num_classes", 2)
        self.num_outputs = num_classes

    def __repr__(self) -> str:
        return f"Softmax(num_classes={self.num_outputs})"

    def weight_shape(self, dim: int) -> tuple[int, ...]:
        return (self.num_outputs, dim)

    def matrix(self, w: Tensor) -> Tensor:
        return w

    def targets(self, classes: Tensor) -> Tensor:
        """Class indices, checked to lie in ``[0, C)``.

        Example:
            >>> Softmax(2).targets(torch.tensor([0, 1]))
            tensor([0, 1])
        """
        return self.check_labels(torch.as_tensor(classes), name="classes")

    def sample_labels(
        self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """``n`` class indices drawn uniformly from ``[0, C)`` (``dtype`` is ignored).

        Example:
            >>> Softmax(3).sample_labels(2, torch.Generator().manual_seed(0)).dtype
            torch.int64
        """
        return torch.randint(0, self.num_outputs, (n,), generator=generator)

    def project_label(self, y: Tensor, norm: float) -> Tensor:
        """Project soft labels onto ``{y >= 0, |y|_2 <= norm}`` (clamp, then shrink).

        That is the exact Euclidean projection onto the intersection of the
        orthant and the ball.

        Example:
            >>> Softmax(2).project_label(torch.tensor([[3.0, -1.0]]), 2.0)
            tensor([[2., 0.]])
        """
        y = y.clamp_min(0.0)
        scale = (norm / y.norm(dim=-1, keepdim=True).clamp_min(1e-30)).clamp(max=1.0)
        return y * scale

    def check_labels(self, y: Tensor, n: int | None = None, name: str = "y") -> Tensor:
        """Class indices (N,) in ``[0, C)`` or soft labels (N, C), finite and >= 0.

        Example:
            >>> Softmax(2).check_labels(torch.tensor([0, 2]))  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            torchdht.errors.TargetsError: y: class indices ... must lie in [0, 2), found [2]
        """
        if not isinstance(y, Tensor) or y.dim() not in (1, 2):
            raise TeacherTypeError(f"{name} must be class indices (N,) or soft labels (N, C)")
        return self.check_y(y, y.shape[0] if n is None else n, name)

    def check_y(self, y: Tensor, n: int, name: str = "y") -> Tensor:
        c = self.num_outputs
        if not isinstance(y, Tensor):
            raise TeacherTypeError(f"{name} must be a tensor")
        if y.is_floating_point():
            if tuple(y.shape) != (n, c):
                raise TargetsError(
                    f"{name}: soft labels for the softmax learner must have shape ({n}, {c}), "
                    f"got {tuple(y.shape)}"
                )
            if not bool(torch.isfinite(y).all()):
                raise TargetsError(f"{name} contains NaN or inf")
            if bool((y < 0).any()):
                raise TargetsError(f"{name}: soft labels must be >= 0")
            return y
        if y.dtype == torch.bool or tuple(y.shape) != (n,):
            raise TargetsError(
                f"{name}: class indices must be an integer tensor of shape ({n},), got "
                f"{y.dtype} {tuple(y.shape)}"
            )
        bad = y[(y < 0) | (y >= c)]
        if bad.numel():
            raise TargetsError(
                f"{name}: class indices for the softmax learner must lie in [0, {c}), found "
                f"{sorted(set(bad.tolist()))[:5]}"
            )
        return y

    def target_rows(self, y: Tensor, dtype: torch.dtype) -> Tensor:
        if y.is_floating_point():
            return y.to(dtype)
        return F.one_hot(y, self.num_outputs).to(dtype)

    def logit_loss(self, logits: Tensor, t: Tensor) -> Tensor:
        return t.sum(-1) * torch.logsumexp(logits, -1) - (t * logits).sum(-1)

    def logit_grad(self, logits: Tensor, t: Tensor) -> Tensor:
        return stable_softmax(logits) * t.sum(-1, keepdim=True) - t

    def logit_hvp(self, logits: Tensor, t: Tensor, v: Tensor) -> Tensor:
        p = stable_softmax(logits)
        return t.sum(-1, keepdim=True) * (p * v - p * (p * v).sum(-1, keepdim=True))

    def label_vjp(self, logits: Tensor, t: Tensor, v: Tensor) -> Tensor:
        p = stable_softmax(logits)
        return (p * v).sum(-1, keepdim=True) - v

    def predict(self, w: Tensor, x: Tensor) -> Tensor:
        """Predicted class indices (argmax of the logits).

        Example:
            >>> Softmax(2).predict(torch.tensor([[1.0], [-1.0]]), torch.tensor([[2.0], [-2.0]]))
            tensor([0, 1])
        """
        return self.logits(w, x).argmax(-1)

    def accuracy(self, w: Tensor, x: Tensor, y: Tensor) -> float:
        """Fraction of examples whose argmax equals the class index (or soft label's argmax).

        Example:
            >>> Softmax(2).accuracy(torch.eye(2), torch.eye(2), torch.tensor([0, 0]))
            0.5
        """
        x = check_x(x)
        y = self.check_labels(y, x.shape[0])
        if y.is_floating_point():
            y = y.argmax(-1)
        return float((self.predict(w, x) == y).double().mean())


LSR = LeastSquares()
"""The least-squares regression learner."""
LR = Logistic()
"""The binary logistic regression learner (labels -1/+1)."""
