"""Pure functions behind :class:`~torchdht.mixup.MixupTeacher` (no state).

Shapes: ``x`` is a batch of inputs ``(B, ...)``; targets are class indices
``(B,)`` or soft targets ``(B, C)``; a permutation ``perm`` is a ``(B,)``
integer tensor that pairs row ``i`` with row ``perm[i]``; ``lam`` is one
mixing coefficient in ``[0, 1]`` for the whole batch (a float, or a 0-d tensor
when it must carry a gradient). Nothing here modifies its inputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor

from .._checks import check_float, check_targets
from ..errors import TeacherError, TeacherTypeError
from ..typing import Targets

__all__ = [
    "check_actions",
    "mix_batch",
    "sample_beta",
    "sample_permutation",
    "to_soft_targets",
]


def _soft_dtype(x_dtype: torch.dtype | None) -> torch.dtype:
    if x_dtype is None or not x_dtype.is_floating_point:
        return torch.get_default_dtype()
    return torch.promote_types(x_dtype, torch.float32)  # fp16/bf16 inputs get fp32 targets


def to_soft_targets(
    y: Targets,
    num_classes: int,
    *,
    batch_size: int | None = None,
    dtype: torch.dtype | None = None,
    validate: bool = False,
    ignore_index: int | None = None,
) -> Tensor:
    """Targets as soft targets ``(B, num_classes)``; one-hot for class indices.

    Class indices of any integer dtype give the same result as int64 (they
    are widened before anything is compared). With ``ignore_index``, rows
    whose class index equals it become all-zero rows (a soft cross-entropy
    gives them zero loss); soft targets have no ignored rows.

    Args:
        y: class indices ``(B,)`` (an integer tensor) or soft targets
            ``(B, num_classes)`` (a floating tensor, returned as is).
        num_classes: the number of classes ``C``.
        batch_size: the batch size ``B`` the targets must have (default:
            None, not checked).
        dtype: dtype of the one-hot targets (default: None, meaning float32
            for half-precision or integer ``dtype`` hints and the default
            dtype otherwise).
        validate: check the values on the host even on CUDA, which costs a
            device sync (default: False: on CUDA, out-of-range indices are
            caught by ``torch._assert_async``; on the CPU values are always
            checked).
        ignore_index: a class index that marks rows to ignore, as in
            ``F.cross_entropy`` (default: None, every row must hold a class in
            ``[0, num_classes)``). Any int; a value in ``[0, num_classes)``
            makes that class's rows ignored.

    Returns:
        A floating tensor of shape ``(B, num_classes)`` on ``y``'s device.

    Raises:
        TypeError: ``y`` is not a tensor, or is boolean or complex.
        TargetsError: a shape, class count or value does not fit.

    Example:
        >>> to_soft_targets(torch.tensor([2, 0]), 3)
        tensor([[0., 0., 1.],
                [1., 0., 0.]])
        >>> to_soft_targets(torch.tensor([2, -100]), 3, ignore_index=-100)
        tensor([[0., 0., 1.],
                [0., 0., 0.]])
    """
    y = check_targets(
        y,
        num_classes,
        rows=batch_size,
        ignore_index=ignore_index,
        host_check=validate or (isinstance(y, Tensor) and y.device.type == "cpu"),
    )
    if y.is_floating_point():
        return y
    ignored = None if ignore_index is None else y == ignore_index
    out_dtype = _soft_dtype(dtype)
    out = torch.zeros(y.shape[0], num_classes, dtype=out_dtype, device=y.device)
    if ignored is None:
        return out.scatter_(1, y.unsqueeze(1), 1.0)
    # Ignored rows scatter a 0 into column 0: all-zero rows, and no host sync.
    idx = y.masked_fill(ignored, 0).unsqueeze(1)
    return out.scatter_(1, idx, (~ignored).to(out_dtype).unsqueeze(1))


def mix_batch(
    x: Tensor,
    y_soft: Tensor,
    lam: float | Tensor,
    perm: Tensor,
    *,
    keep: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Mix a batch with a permutation of itself: ``lam * a + (1 - lam) * a[perm]``.

    The same coefficient mixes the inputs and the soft targets, so each target
    row still sums to what the rows it mixes sum to (1 for probabilities).
    ``lam = 1`` returns exact copies of ``x`` and ``y_soft``, ``lam = 0``
    exact copies of ``x[perm]`` and ``y_soft[perm]``. Differentiable in
    ``lam`` when it is a tensor that requires grad.

    Args:
        x: floating inputs ``(B, ...)``.
        y_soft: soft targets ``(B, C)`` (see :func:`to_soft_targets`).
        lam: the mixing coefficient in ``[0, 1]``: a float or a 0-d tensor.
        perm: ``(B,)`` integer tensor, a permutation of ``range(B)`` (moved to
            ``x``'s device if it is elsewhere).
        keep: optional boolean ``(B,)`` tensor: rows where it is True come
            back exactly as they are in ``x`` and ``y_soft`` (copies, bit for
            bit), whatever ``lam`` and ``perm`` say (default: None, every row
            is mixed). No host sync.

    Returns:
        ``(x_mixed, y_mixed)``, new tensors of the shapes of ``x`` and
        ``y_soft``.

    Example:
        >>> x = torch.tensor([[1.0], [3.0]])
        >>> y = to_soft_targets(torch.tensor([0, 1]), 2)
        >>> xm, ym = mix_batch(x, y, 0.25, torch.tensor([1, 0]))
        >>> xm.flatten().tolist(), ym.tolist()
        ([2.5, 1.5], [[0.25, 0.75], [0.75, 0.25]])
    """
    if keep is not None:
        x_mixed, y_mixed = mix_batch(x, y_soft, lam, perm)
        kx = keep.to(x.device, non_blocking=True).view(-1, *([1] * (x.dim() - 1)))
        ky = keep.to(y_soft.device, non_blocking=True).view(-1, 1)
        return torch.where(kx, x, x_mixed), torch.where(ky, y_soft, y_mixed)
    if not isinstance(lam, Tensor) and float(lam) == 1.0:
        return x.clone(), y_soft.clone()
    perm = perm.to(x.device, non_blocking=True)
    x_perm = x.index_select(0, perm)  # = x[perm], and faster than advanced indexing
    y_perm = y_soft.index_select(0, perm.to(y_soft.device, non_blocking=True))
    if isinstance(lam, Tensor):
        lx = lam.to(x.dtype)
        ly = lam.to(y_soft.dtype)
        return lx * x + (1 - lx) * x_perm, ly * y_soft + (1 - ly) * y_perm
    lam = float(lam)
    if lam == 0.0:
        return x_perm, y_perm
    # In place on the fresh gathered copy (one allocation fewer than the plain
    # expression, and bit-identical to it: the same two products, the same sum).
    x_mixed = x_perm.mul_(1.0 - lam).add_(x * lam)
    y_mixed = y_perm.mul_(1.0 - lam).add_(y_soft * lam)
    return x_mixed, y_mixed


def sample_permutation(
    n: int,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    *,
    valid: Tensor | None = None,
) -> Tensor:
    """A uniform random permutation of ``range(n)`` drawn with ``generator``.

    The permutation is drawn on the generator's device (the CPU for the
    teacher's generator) and then moved to ``device``.

    With ``valid``, the valid rows are paired among themselves only (a
    uniform random permutation of them) and every other row with itself.
    The generator makes the same draw either way (one ``randperm(n)``), so
    the teacher's stream does not depend on which rows are valid, and with
    every row valid the result is the plain permutation. No host sync.

    Args:
        n: its length.
        generator: the source of randomness.
        device: where the result goes (default: "cpu").
        valid: optional boolean tensor of shape ``(n,)`` (default: None, all
            rows valid).

    Returns:
        An int64 tensor of shape ``(n,)``.

    Example:
        >>> p = sample_permutation(5, torch.Generator().manual_seed(0))
        >>> sorted(p.tolist())
        [0, 1, 2, 3, 4]
        >>> valid = torch.tensor([True, False, True, True, False])
        >>> p = sample_permutation(5, torch.Generator().manual_seed(0), valid=valid)
        >>> p[~valid].tolist(), sorted(p[valid].tolist())
        ([1, 4], [0, 2, 3])
    """
    perm = torch.randperm(n, generator=generator, device=generator.device)
    perm = perm.to(device, non_blocking=True)
    if valid is None:
        return perm
    if not isinstance(valid, Tensor) or valid.dtype != torch.bool or tuple(valid.shape) != (n,):
        raise TeacherError(f"valid must be a boolean tensor of shape ({n},)")
    valid = valid.to(perm.device, non_blocking=True)
    # Valid rows in index order (then the others), and valid rows in the random
    # order of perm (then the others); pair the j-th of the first with the j-th
    # of the second. With every row valid this is perm itself.
    rows = torch.argsort((~valid).to(torch.uint8), stable=True)
    partners = perm.index_select(
        0, torch.argsort((~valid.index_select(0, perm)).to(torch.uint8), stable=True)
    )
    paired = torch.empty_like(perm).scatter_(0, rows, partners)
    return torch.where(valid, paired, torch.arange(n, device=perm.device))


def _log_gamma_sample(shape: float, generator: torch.Generator) -> float:
    """log of one Gamma(shape, 1) draw (Marsaglia and Tsang, 2000), all from ``generator``."""
    log_boost = 0.0
    if shape < 1.0:  # Gamma(a) = Gamma(a + 1) * U^(1/a)
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        log_boost = math.log(max(u, 1e-300)) / shape
        shape += 1.0
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        z = float(torch.randn((), generator=generator, dtype=torch.float64))
        v = 1.0 + c * z
        if v <= 0.0:
            continue
        v = v * v * v
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        if u > 0.0 and math.log(u) < 0.5 * z * z + d - d * v + d * math.log(v):
            return math.log(d * v) + log_boost


def sample_beta(alpha: float, generator: torch.Generator) -> float:
    """One draw of ``Beta(alpha, alpha)`` using only ``generator``.

    ``torch.distributions.Beta`` cannot take a generator, so the draw is made
    from two Gamma draws (Marsaglia-Tsang, computed in log space so that very
    small ``alpha`` does not underflow to 0/0).

    Args:
        alpha: the concentration, > 0 (1 is uniform on [0, 1]).
        generator: a CPU ``torch.Generator``.

    Returns:
        A float in ``[0, 1]``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> 0.0 <= sample_beta(0.4, g) <= 1.0
        True
    """
    if not (alpha > 0 and math.isfinite(alpha)):
        raise TeacherError(f"alpha must be a positive float, got {alpha!r}")
    la = _log_gamma_sample(alpha, generator)
    lb = _log_gamma_sample(alpha, generator)
    return 1.0 / (1.0 + math.exp(min(lb - la, 700.0)))


def check_actions(actions: Sequence[float], name: str = "actions") -> tuple[float, ...]:
    """Return a non-empty action set of mixing coefficients in ``[0, 1]`` as floats.

    Args:
        actions: the mixing coefficients a discrete policy may choose from.
        name: the argument's name for the error message.

    Returns:
        The coefficients as a tuple of floats, in the given order.

    Raises:
        TypeError: not a sequence of numbers.
        ValueError: empty, repeated, or a value outside ``[0, 1]``.

    Example:
        >>> check_actions([0, 0.5, 1])
        (0.0, 0.5, 1.0)
    """
    if isinstance(actions, Tensor):
        values = actions.flatten().tolist()
    elif isinstance(actions, (str, bytes, Mapping)) or not isinstance(actions, Iterable):
        raise TeacherTypeError(f"{name} must be a sequence of floats in [0, 1], got {actions!r}")
    else:
        values = list(actions)
    if not values:
        raise TeacherError(f"{name} must hold at least one mixing coefficient in [0, 1], got []")
    out = [check_float(a, f"each of {name}", 0.0, 1.0) for a in values]
    if len(set(out)) != len(out):
        raise TeacherError(f"{name} must not repeat a coefficient, got {out}")
    return tuple(out)
