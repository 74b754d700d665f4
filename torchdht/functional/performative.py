"""One step of performative teaching (Algorithm 1, steps 3-6) as pure functions.

:class:`~torchdht.PerformativeTeacher` is a thin hook around these: it casts
the head's input and weights to the working dtype, calls one of them, and
hands the result to the head with a straight-through gradient. They contain
no host-device sync and no data-dependent Python branch, so
``torch.compile(greedy_teach, fullgraph=True)`` traces them whole.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_int
from ..errors import TeacherError
from ..typing import Targets
from .chunks import block_rows
from .gram import GramLookahead, gram_head_ops, gram_is_cheaper, gram_lookahead, weight_star_dist
from .linesearch import (
    dense_head_ops,
    head_ops_closure,
    linesearch_grid,
    solve_cap_linesearch,
)
from .lookahead import LinearLookahead, linear_lookahead
from .objective import check_linear_args, linear_ce_closure, linear_ce_objective
from .solve import SolveResult, solve_cap
from .sphere import normalize, sample_cap

__all__ = ["TeachStep", "greedy_teach", "random_teach", "SOLVERS", "PGD_TOL"]

SOLVERS = ("linesearch", "pgd")
LINESEARCH_STEPS = 3
"""Default line searches of the ``"linesearch"`` solver: the first, then two on the rim."""
PGD_STEPS = 15
"""Default iterations of the ``"pgd"`` solver (the paper's ``m``)."""
PGD_TOL = 1e-3
"""The teacher's default early exit of the ``"pgd"`` solver (``solve_tol``): on features of
three models at three points of training and three caps it keeps at least 99.7 % of the
15-step objective decrease in about half the time (``benchmarks/RESULTS.md``)."""


class TeachStep(NamedTuple):
    """Result of :func:`greedy_teach` and :func:`random_teach`."""

    z: Tensor
    """Features to train on, (N, D): moved rows where ``valid``, the input elsewhere."""
    before: Tensor
    """Per-row objective (eq. 9) at the input, (N,); 0 on invalid rows."""
    after: Tensor
    """Per-row objective at the returned features, (N,); 0 on invalid rows."""
    valid: Tensor
    """Boolean (N,): rows that were taught: finite, non-zero, not masked out, and whose
    objective did not overflow."""
    lookahead: LinearLookahead | GramLookahead
    """``theta*`` and, when asked for, the lookahead losses' feature gradient
    (zero on invalid rows): ``W*`` itself, or in the Gram form (wide heads)
    its coefficients, ``W* = W - coef^T z``."""
    theta_dist: Tensor
    """``|theta - theta*|`` (0-d): weights and bias together."""


def _prepare(
    z: Tensor,
    targets: Targets,
    weight: Tensor,
    bias: Tensor | None,
    lookahead_lr: float | Tensor,
    lookahead_steps: int,
    feature_grad: bool,
    mask: Tensor | None,
    gram: bool = False,
) -> tuple[Tensor, Tensor, LinearLookahead | GramLookahead]:
    norm = z.norm(dim=-1)
    # A row takes part when it is finite, non-zero and its squared norm (which the objective's
    # gradient term carries) does not overflow the working dtype.
    valid = torch.isfinite(z).all(-1) & (norm > 0) & torch.isfinite(norm * norm)
    if mask is not None:
        valid = valid & mask
    # Invalid rows get a harmless stand-in: masked out of the lookahead, and
    # given back unchanged at the end.
    stand_in = torch.zeros_like(z)
    stand_in[:, 0] = 1.0
    zs = torch.where(valid.unsqueeze(-1), z, stand_in)
    look = gram_lookahead if gram else linear_lookahead
    la = look(
        zs,
        targets,
        weight,
        bias,
        lookahead_lr,
        lookahead_steps,
        feature_grad=feature_grad,
        mask=valid,
    )
    return zs, valid, la


def _theta_dist(
    weight: Tensor, bias: Tensor | None, zs: Tensor, la: LinearLookahead | GramLookahead
) -> Tensor:
    if isinstance(la, GramLookahead):
        dist_sq = weight_star_dist(la.coef, zs).square()
    else:
        dist_sq = (weight - la.weight).pow(2).sum()
    if bias is not None:
        assert la.bias is not None
        dist_sq = dist_sq + (bias - la.bias).pow(2).sum()
    return dist_sq.sqrt()


def _finish(
    z: Tensor,
    zs: Tensor,
    solved: Tensor,
    before: Tensor,
    after: Tensor,
    valid: Tensor,
    la: LinearLookahead | GramLookahead,
    theta_dist: Tensor,
) -> TeachStep:
    # A row whose objective or solution overflowed is given back unmoved and not counted.
    valid = valid & torch.isfinite(before) & torch.isfinite(after) & torch.isfinite(solved).all(-1)
    keep = valid.unsqueeze(-1)
    zero = before.new_zeros(())
    return TeachStep(
        torch.where(keep, solved, z),
        torch.where(valid, before, zero),
        torch.where(valid, after, zero),
        valid,
        la,
        theta_dist,
    )


def _index_targets(targets: Tensor) -> Tensor:
    """Class indices of any integer dtype as int64 (soft targets unchanged)."""
    return targets if targets.is_floating_point() else targets.long()


def greedy_teach(
    z: Tensor,
    targets: Targets,
    weight: Tensor,
    bias: Tensor | None,
    eta: float | Tensor,
    *,
    eps: float = 0.1,
    lookahead_steps: int = 5,
    lookahead_lr: float | Tensor | None = None,
    solve_steps: int | None = None,
    solve_lr: float | None = None,
    feature_grad: bool = False,
    subspace: bool | None = None,
    mask: Tensor | None = None,
    solver: str = "pgd",
    gram: bool | None = None,
    solve_tol: float | None = None,
    target: tuple[Tensor, Tensor | None] | Callable[..., tuple[Tensor, Tensor | None]]
    | None = None,
) -> TeachStep:
    """Lookahead ``theta*`` then solve eq. 9 in the cap around every row.

    Two solvers: ``"pgd"`` (:func:`~torchdht.functional.solve_cap`: Riemannian
    projected gradient steps with a step halved on failure) and
    ``"linesearch"`` (:func:`~torchdht.functional.solve_cap_linesearch`:
    projected line searches in exponential coordinates of the cap, each over
    many step sizes for the price of one matrix product; with the lookahead
    through the batch's Gram matrix for wide heads).

    For ``"pgd"``: the objective sees a row ``z`` only through ``W z``,
    ``W* z`` and ``|z|``, so every solver iterate stays in the span of ``z``,
    the rows of ``W`` and those of ``W - W*``. With ``subspace=True`` the solver runs in
    orthonormal coordinates of that span (``1 + 2C`` numbers per row instead
    of ``D``): the same iterates up to rounding, for a fraction of the
    arithmetic when the head is much wider than twice its class count (a
    128-wide MLP with 10 classes: 21 coordinates instead of 128).

    Args:
        z: head inputs of shape (N, D); non-finite or zero rows are passed
            through and take no part.
        targets: class indices (N,) or soft targets (N, C).
        weight: the head's ``W`` (C, D).
        bias: the head's ``b`` (C,) or None.
        eta: the learner's learning rate.
        eps: chord radius of the cap, in (0, 2] (default: 0.1).
        lookahead_steps: SGD steps estimating ``theta*`` (default: 5).
        lookahead_lr: their step size (default: None, meaning ``eta``).
        solve_steps: line searches of ``"linesearch"`` (default: None,
            meaning 3) or iterations of ``"pgd"`` (default: None, meaning 15).
        solve_lr: initial angular step of ``"pgd"`` (default: None, see
            :func:`~torchdht.functional.default_solve_lr`); not used by
            ``"linesearch"``.
        feature_grad: also return the lookahead losses' gradient in ``z``.
        subspace: solve in the coordinates described above (default: None,
            meaning on a CPU when ``2 (1 + 2C) <= D``; on a GPU the
            arithmetic saved is not worth the extra QR factorisation's
            kernels). Ignored when ``2C >= D`` and by ``"linesearch"``, which
            does few products and gains nothing from it.
        mask: optional boolean (N,); rows where it is False pass through
            unmoved and take no part in the lookahead, exactly as if they
            were absent (e.g. labels equal to an ``ignore_index``; give those
            rows any valid class index).
        solver: ``"pgd"`` or ``"linesearch"`` (default: "pgd").
        gram: run the lookahead and the solver through the batch's Gram
            matrix (``W - W*`` never formed; cheaper and smaller when the head
            is much wider than the batch, e.g. 10,000 classes on 128 rows)
            (default: None, meaning
            :func:`~torchdht.functional.gram.gram_is_cheaper` decides from the
            shapes and the solver's number of evaluations).
        solve_tol: ``"pgd"`` stops early once two steps in a row lowered the
            summed objective by at most this fraction of the decrease so far
            (see :func:`~torchdht.functional.solve_cap`; one host sync per
            step) (default: None, meaning all ``solve_steps`` steps).

        target: ``(W*, b*)`` to teach toward instead of the lookahead's
            (e.g. from :mod:`~torchdht.functional.informed`), or a callable
            ``fn(lookahead, z, targets, valid, weight, bias) -> (W*, b*)``
            that makes one from this step's lookahead; the lookahead still
            runs for ``feature_grad`` and the statistics, and the dense form
            is used (default: None, meaning the lookahead's).

    Wide heads (more than :data:`~torchdht.functional.chunks.ROW_BLOCK`
    numbers in ``N x C``) are solved in blocks of rows, so that the solver's
    temporaries stay small; the result is the same up to rounding (and, with
    ``solve_tol``, each block stops on its own).

    Returns:
        A :class:`TeachStep`.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> z = torch.randn(6, 4, generator=g).relu() + 0.1
        >>> W = torch.randn(3, 4, generator=g)
        >>> out = greedy_teach(z, torch.tensor([0, 1, 2, 0, 1, 2]), W, None, 0.5)
        >>> bool((out.after <= out.before).all())
        True
    """
    la_lr = eta if lookahead_lr is None else lookahead_lr
    targets = _index_targets(targets)
    if solver not in SOLVERS:
        raise TeacherError(f"solver must be 'linesearch' or 'pgd', got {solver!r}")
    linesearch = solver == "linesearch"
    if linesearch and solve_tol is not None:
        raise TeacherError("solve_tol applies to solver='pgd' only; the line search's cost is "
                           "fixed by its number of searches (solve_steps)")
    if linesearch:
        steps = LINESEARCH_STEPS if solve_steps is None else solve_steps
        steps = check_int(steps, "solve_steps (line searches)", 1)
        evals = steps
    else:
        solve_steps = PGD_STEPS if solve_steps is None else solve_steps
        evals = 1 + check_int(solve_steps, "solve_steps", 0)
    if target is not None:
        gram = False  # W* is given: the dense form
    if target is not None and not callable(target):
        w_t, b_t = target
        if tuple(w_t.shape) != tuple(weight.shape) or (b_t is None) != (bias is None) or (
            b_t is not None and bias is not None and tuple(b_t.shape) != tuple(bias.shape)
        ):
            raise TeacherError(
                "target must be (W*, b*) shaped like the head's (weight, bias): "
                f"{tuple(weight.shape)} and {None if bias is None else tuple(bias.shape)}"
            )
    if gram is None:
        gram = gram_is_cheaper(
            z.shape[0], weight.shape[0], weight.shape[-1], steps=lookahead_steps,
            evals=evals, feature_grad=feature_grad,
        )
    use_gram = bool(gram)
    zs, valid, la = _prepare(
        z, targets, weight, bias, la_lr, lookahead_steps, feature_grad, mask, use_gram
    )

    check_linear_args(zs, targets, weight, bias)
    if callable(target):
        assert isinstance(la, LinearLookahead)
        target = target(la, zs, targets, valid, weight, bias)
    if target is not None:
        assert isinstance(la, LinearLookahead)
        la = la._replace(weight=target[0].to(weight.dtype),
                         bias=None if target[1] is None else target[1].to(weight.dtype))
    dist = _theta_dist(weight, bias, zs, la)
    # rows do not interact in the solve: a wide head's rows are solved in blocks
    rows = block_rows(zs.shape[0], weight.shape[0])
    if linesearch:
        if isinstance(la, GramLookahead):
            ops = gram_head_ops(weight, bias, zs, la, eta)
        else:
            ops = dense_head_ops(weight, bias, la.weight, la.bias, eta)
        grid = linesearch_grid(zs.shape[0], weight.shape[0])  # from the whole batch's shape
        res = _by_blocks(
            lambda x, t, _: solve_cap_linesearch(x, t, ops, eta, eps, grid=grid,
                                                 refine=steps - 1),
            zs, targets, valid, rows,
        )
        return _finish(z, zs, res.z, res.before, res.after, valid, la, dist)
    c, d = weight.shape
    if subspace is None:
        subspace = zs.device.type == "cpu" and 2 * (1 + 2 * c) <= d
    assert solve_steps is not None
    if isinstance(la, GramLookahead) or rows < zs.shape[0]:
        # a wide head: the head's products built once for all blocks (through the Gram
        # matrix where that is cheaper: W - W* is then never formed)
        if isinstance(la, GramLookahead):
            ops = gram_head_ops(weight, bias, zs, la, eta)
        else:
            ops = dense_head_ops(weight, bias, la.weight, la.bias, eta)
        res = _by_blocks(
            lambda x, t, v: solve_cap(
                head_ops_closure(t, ops, eta, zs.dtype), x, eps, solve_steps, solve_lr,
                tol=solve_tol, rows=v,
            ),
            zs, targets, valid, rows,
        )
        return _finish(z, zs, res.z, res.before, res.after, valid, la, dist)
    assert isinstance(la, LinearLookahead)
    if not subspace or 2 * c >= d:  # the span may be the whole space: nothing to reduce
        fn = linear_ce_closure(targets, weight, bias, la.weight, la.bias, eta)
        res = solve_cap(
            fn, zs, eps, solve_steps, solve_lr, tol=solve_tol, rows=valid  # type: ignore[arg-type]
        )
        return _finish(z, zs, res.z, res.before, res.after, valid, la, dist)

    x, basis, e = _span_coordinates(zs, weight, la.weight)
    pad = weight.new_zeros(c, 1)
    w_sub = torch.cat([pad, weight @ basis], -1)
    w_star_sub = torch.cat([pad, la.weight @ basis], -1)
    fn = linear_ce_closure(targets, w_sub, bias, w_star_sub, la.bias, eta)
    res = solve_cap(
        fn, x, eps, solve_steps, solve_lr, tol=solve_tol, rows=valid  # type: ignore[arg-type]
    )
    back = res.z[:, :1] * e + res.z[:, 1:] @ basis.T
    # Unmoved rows come back bit-identical, as on the direct path.
    solved = torch.where((res.after < res.before).unsqueeze(-1), back, zs)
    return _finish(z, zs, solved, res.before, res.after, valid, la, dist)


def _by_blocks(
    solve: Callable[[Tensor, Tensor, Tensor], SolveResult],
    x: Tensor,
    targets: Tensor,
    valid: Tensor,
    rows: int,
) -> SolveResult:
    """``solve(x, targets, valid)``, over blocks of ``rows`` rows when there are more."""
    if rows >= x.shape[0]:
        return solve(x, targets, valid)
    blocks = zip(x.split(rows), targets.split(rows), valid.split(rows))
    parts = [solve(xb, tb, vb) for xb, tb, vb in blocks]
    return SolveResult(*(torch.cat(list(t)) for t in zip(*parts)))


def _span_coordinates(
    z: Tensor, weight: Tensor, weight_star: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Rows of ``z`` as ``(z . e, z Q)``: coordinates in span(z, rows of W and W - W*).

    ``Q`` (D, 2C) has orthonormal columns spanning the rows of ``W`` and
    ``W - W*`` (a Householder QR copes with a rank-deficient head, e.g. one
    initialised at zero) and ``e`` (N, D) is each row's unit direction
    outside ``span(Q)``. In these coordinates norms and angles are those of
    ``z``, ``W z = (W Q) (z Q)``, and ``e`` is invisible to both heads; a
    point ``x`` maps back as ``x[0] e + x[1:] Q^T``. Needs ``2C < D``.
    """
    span = torch.cat([weight, weight - weight_star]).T
    if span.dtype not in (torch.float32, torch.float64):  # no QR in half precision
        basis = torch.linalg.qr(span.float()).Q.to(span.dtype)
    else:
        basis = torch.linalg.qr(span).Q
    inside = z @ basis
    outside = z - inside @ basis.T
    outside = outside - (outside @ basis) @ basis.T  # twice is enough: orthogonal to rounding
    rho = outside.norm(dim=-1, keepdim=True)
    # A row inside the span has no direction of its own; it gets a unit vector orthogonal to
    # the span (the one nearest the coordinate axis the span covers least; 2C < D makes its
    # norm at least sqrt(1 - 2C/D)), so the solver's fallback directions still map back.
    axis = F.one_hot(basis.pow(2).sum(-1).argmin(), z.shape[-1]).to(z.dtype)
    spare = axis - basis @ (basis.T @ axis)
    spare = normalize(spare - basis @ (basis.T @ spare))
    tiny = torch.finfo(z.dtype).tiny
    e = torch.where(rho > tiny, outside / rho.clamp_min(tiny), spare)
    return torch.cat([rho, inside], -1), basis, e


def random_teach(
    z: Tensor,
    targets: Targets,
    weight: Tensor,
    bias: Tensor | None,
    eta: float | Tensor,
    *,
    eps: float = 0.1,
    lookahead_steps: int = 5,
    lookahead_lr: float | Tensor | None = None,
    feature_grad: bool = False,
    generator: torch.Generator | None = None,
    mask: Tensor | None = None,
) -> TeachStep:
    """The paper's random policy: a uniform draw from the same cap per row.

    The lookahead still runs, for the objective figures in the result (and
    for ``feature_grad``). Arguments as in :func:`greedy_teach`, plus the
    random ``generator`` and the row ``mask``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> z = torch.randn(6, 4, generator=g) + 0.1
        >>> out = random_teach(z, torch.zeros(6, dtype=torch.long), torch.randn(2, 4), None, 0.1,
        ...                    generator=g)
        >>> torch.allclose(out.z.norm(dim=-1), z.norm(dim=-1))
        True
    """
    la_lr = eta if lookahead_lr is None else lookahead_lr
    targets = _index_targets(targets)
    zs, valid, la = _prepare(
        z, targets, weight, bias, la_lr, lookahead_steps, feature_grad, mask
    )
    assert isinstance(la, LinearLookahead)
    radius = zs.norm(dim=-1, keepdim=True)
    solved = radius * sample_cap(normalize(zs), eps, generator=generator)
    before = linear_ce_objective(zs, targets, weight, bias, la.weight, la.bias, eta)
    after = linear_ce_objective(solved, targets, weight, bias, la.weight, la.bias, eta)
    return _finish(z, zs, solved, before, after, valid, la, _theta_dist(weight, bias, zs, la))
