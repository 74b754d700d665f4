"""PerformativeTeacher: Algorithm 1 of the DHT paper as a forward pre-hook.

The hook sits on the network's final ``nn.Linear`` (the head). On every
training forward it takes the batch features ``z`` reaching the head and

1. estimates ``theta*`` by ``lookahead_steps`` SGD steps of the head on the
   detached features (:func:`~torchdht.functional.linear_lookahead`);
2. solves the greedy problem of eq. 9 for every row at once, inside the cap
   of chord ``eps`` on the sphere of radius ``|z_j|``
   (:func:`~torchdht.functional.solve_cap`);
3. hands the head ``z~`` in place of ``z``, with a straight-through gradient:
   the encoder receives ``dL/dz`` evaluated at ``z~``.

The head's parameters, their ``.grad``, the optimizer's state and the body's
BatchNorm statistics are exactly as without the teacher.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .._checks import LearnerRate, check_positive
from ..errors import HeadTypeError, MissingTargetsError, TargetsError, TeacherError
from ..functional.performative import TeachStep, greedy_teach, random_teach
from ..functional.sphere import angle, check_eps

__all__ = ["PerformativeTeacher"]

_POLICIES = ("greedy", "random", "none")
_STATE_VERSION = 1

# Heads that carry a teacher; a weak map so that a dropped model frees its entry.
_ATTACHED: weakref.WeakKeyDictionary[nn.Module, weakref.ref] = weakref.WeakKeyDictionary()


class _StraightThrough(torch.autograd.Function):
    """Forward: ``z~``. Backward: the incoming gradient goes to ``z`` unchanged,
    plus ``scale() * extra`` when the released-code behaviour is on. ``scale``
    is read at backward time, when a GradScaler has set its current scale."""

    @staticmethod
    def forward(
        ctx: Any, z: Tensor, z_tilde: Tensor, extra: Tensor | None, scale: Callable[[], Any]
    ) -> Tensor:
        ctx.extra = extra
        ctx.scale = scale
        return z_tilde

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, None, None, None]:
        grad = grad_out
        if ctx.extra is not None:
            grad = grad_out + (ctx.extra * ctx.scale()).to(grad_out.dtype)
        return grad, None, None, None


class PerformativeTeacher:
    """Performative teaching (Algorithm 1 of the DHT paper) on a linear head.

    Add it to an existing training loop: build it once on the model's final
    ``nn.Linear``, call :meth:`set_targets` before each training forward, and
    train as before. The teacher is active only while the head is in training
    mode, grad is enabled and :attr:`enabled` is True; otherwise the head
    sees its input unchanged.

    Args:
        head: the final ``nn.Linear`` of the network (for timm models
            ``model.get_classifier()``).
        optimizer: the optimizer that trains ``head.weight``; the learner's
            ``eta`` is read each step from the ``lr`` of the group holding it,
            so LR schedulers are followed. Give exactly one of ``optimizer``
            and ``lr``.
        lr: ``eta`` as a positive float or a zero-argument callable.
        eps: chord radius of the cap on the unit sphere, in ``(0, 2]``; the
            angle moved is at most ``2 * asin(eps / 2)`` (default: 0.1).
        lookahead_steps: SGD steps of the head that estimate ``theta*``
            (default: 5).
        lookahead_lr: step size of the lookahead (default: None, meaning
            ``eta``).
        solve_steps: iterations of the batched cap solver (default: 15).
        solve_lr: the solver's initial angular step in radians (default:
            None, meaning :func:`~torchdht.functional.default_solve_lr`, with
            which the rim of the cap is reachable).
        policy: ``"greedy"`` (the paper's teacher), ``"random"`` (a uniform
            draw from the same cap, the paper's ablation) or ``"none"``
            (targets are still checked, features pass through untouched)
            (default: "greedy").
        lookahead_encoder_grad: reproduce the authors' released code, where
            the encoder also receives ``sum_{i<k} d CE(head_theta_i(z), y)/dz``
            from the lookahead iterates ``theta_i`` (default: False, the clean
            algorithm).
        grad_scaler: the ``torch.amp.GradScaler`` scaling the loss, if any;
            the released-code extra gradient is multiplied by its scale so it
            keeps its size relative to the loss gradient (default: None).
        seed: seed of the teacher's own ``torch.Generator`` for the random
            policy (default: None, a fresh non-deterministic seed). The global
            RNG is never used.
        compile: run the greedy step through ``torch.compile(fullgraph=True,
            dynamic=False)``; a dict is passed on as further ``torch.compile``
            keyword arguments, e.g. ``{"mode": "reduce-overhead"}`` on CUDA
            (default: False). It pays after a one-off compile of tens of
            seconds; each new batch shape compiles again. See
            ``benchmarks/RESULTS.md`` for what it saves. With a mode that uses
            CUDA graphs the outputs are copied out of the graph's memory, so a
            head called twice before a backward keeps both inputs.
        validate: check target values on the host even on CUDA, which costs a
            device sync (default: False: on CUDA, out-of-range labels are
            caught by ``torch._assert_async``).

    Example:
        >>> import torch.nn.functional as F
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> teacher = PerformativeTeacher(model[-1], optimizer=opt, eps=0.1)
        >>> x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
        >>> teacher.set_targets(y)
        >>> loss = F.cross_entropy(model(x), y)
        >>> opt.zero_grad(); loss.backward(); opt.step()
        >>> teacher.stats["angle_max"] <= 0.1001
        True
        >>> teacher.remove()
    """

    def __init__(
        self,
        head: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        lr: float | Callable[[], float] | None = None,
        eps: float = 0.1,
        lookahead_steps: int = 5,
        lookahead_lr: float | None = None,
        solve_steps: int = 15,
        solve_lr: float | None = None,
        policy: str = "greedy",
        lookahead_encoder_grad: bool = False,
        grad_scaler: Any | None = None,
        seed: int | None = None,
        validate: bool = False,
        compile: bool | dict[str, Any] = False,
    ) -> None:
        if not isinstance(head, nn.Linear):
            raise HeadTypeError(
                f"head must be an nn.Linear (the network's final linear layer), got "
                f"{type(head).__module__}.{type(head).__qualname__}. Pass the last nn.Linear, "
                f"e.g. model.fc, model.head or, for timm models, model.get_classifier()."
            )
        if head in _ATTACHED and _ATTACHED[head]() is not None:
            raise TeacherError(
                "this head already has a PerformativeTeacher; call .remove() on it before "
                "attaching another"
            )
        self._rate = LearnerRate(optimizer, lr, head.weight, "head.weight")
        self.head = head
        self.eps = check_eps(eps)
        self.lookahead_steps = check_positive(lookahead_steps, "lookahead_steps", integer=True)
        self.lookahead_lr = (
            None if lookahead_lr is None else check_positive(lookahead_lr, "lookahead_lr")
        )
        self.solve_steps = check_positive(solve_steps, "solve_steps", integer=True)
        self.solve_lr = None if solve_lr is None else check_positive(solve_lr, "solve_lr")
        if policy not in _POLICIES:
            raise ValueError(f"policy must be one of {_POLICIES}, got {policy!r}")
        if lookahead_encoder_grad and policy == "none":
            raise ValueError("lookahead_encoder_grad=True needs policy 'greedy' or 'random'")
        self.policy = policy
        self.lookahead_encoder_grad = bool(lookahead_encoder_grad)
        self.grad_scaler = grad_scaler
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
        self.seed = int(seed) if seed is not None else int(torch.Generator().seed())
        self.validate = bool(validate)
        if not isinstance(compile, (bool, dict)):
            raise TypeError(f"compile must be a bool or a dict, got {type(compile).__name__}")
        self.compile = compile is not False
        self._greedy: Callable[..., tuple[Tensor, Tensor | None, dict[str, Tensor]]]
        self._greedy = _teach_step
        if self.compile:
            options: dict[str, Any] = {"fullgraph": True, "dynamic": False}
            options.update(compile if isinstance(compile, dict) else {})
            self._greedy = torch.compile(_teach_step, **options)
        self._copy_outputs = self.compile and _uses_cuda_graphs(
            compile if isinstance(compile, dict) else {}
        )
        self.enabled = True
        self.steps_taught = 0
        self._generator: torch.Generator | None = None
        self._pending_rng: tuple[str, Tensor] | None = None
        self._targets: Tensor | None = None
        self._stats: dict[str, Tensor] = {}
        self._handle: RemovableHandle | None = head.register_forward_pre_hook(
            self._hook, with_kwargs=True
        )
        _ATTACHED[head] = weakref.ref(self)

    # ------------------------------------------------------------------ API
    def set_targets(self, targets: Tensor) -> None:
        """Arm the teacher with the targets of the next training forward.

        Args:
            targets: class indices (integer tensor with the features' leading
                shape, ``(B,)`` or ``(B, T)``) or soft targets (floating tensor
                with that shape plus ``num_classes``). Not modified.
        """
        if not isinstance(targets, Tensor):
            raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
        num_classes = self.head.out_features
        # Value checks on the host where that is free (CPU) or asked for; on CUDA
        # an asynchronous device assert, so no sync is added to the step.
        host_check = self.validate or targets.device.type == "cpu"
        if targets.is_floating_point():
            if targets.dim() < 2 or targets.shape[-1] != num_classes:
                raise TargetsError(
                    f"soft targets must have shape (..., {num_classes}) for a head with "
                    f"{num_classes} outputs, got {tuple(targets.shape)}"
                )
            if host_check:
                if not bool(torch.isfinite(targets).all()) or bool((targets < 0).any()):
                    raise TargetsError("soft targets must be finite and non-negative")
        elif (
            targets.dtype in (torch.bool, torch.complex64, torch.complex128) or targets.is_complex()
        ):
            raise TypeError(
                f"targets must hold class indices or probabilities, got {targets.dtype}"
            )
        else:
            if targets.dim() == 0:
                raise TargetsError("targets must have a batch dimension, got a 0-d tensor")
            if host_check:
                if targets.numel() and bool(((targets < 0) | (targets >= num_classes)).any()):
                    lo, hi = int(targets.min()), int(targets.max())
                    raise TargetsError(
                        f"class indices must lie in [0, {num_classes - 1}] for a head with "
                        f"{num_classes} outputs, got values in [{lo}, {hi}]"
                    )
            elif targets.device.type == "cuda":
                torch._assert_async(((targets >= 0) & (targets < num_classes)).all())
        self._targets = targets

    @property
    def active(self) -> bool:
        """Whether the next forward of the head would be taught."""
        return self.enabled and self.head.training and torch.is_grad_enabled()

    @property
    def stats(self) -> dict[str, float]:
        """Figures of the last taught step (empty before the first one).

        Keys: ``angle_mean`` and ``angle_max`` (radians moved on the sphere),
        ``objective_before``, ``objective_after`` and ``objective_drop``
        (batch means of eq. 9), ``theta_dist`` (``|theta - theta*|``),
        ``eta``, ``n_rows`` and ``n_skipped`` (rows passed through because
        they were non-finite or zero). With ``policy="none"`` only the angles
        (zero) and the counts. Reading them syncs with the device.
        """
        return {k: float(v) for k, v in self._stats.items()}

    def remove(self) -> None:
        """Detach the hook from the head. Safe to call more than once."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
            ref = _ATTACHED.get(self.head)
            if ref is not None and ref() is self:
                del _ATTACHED[self.head]
        self._targets = None

    def __enter__(self) -> PerformativeTeacher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def state_dict(self) -> dict[str, Any]:
        """The teacher's own state (its hyperparameters live in the constructor)."""
        rng: tuple[str, Tensor] | None = None
        if self._generator is not None:
            rng = (self._generator.device.type, self._generator.get_state())
        elif self._pending_rng is not None:
            rng = self._pending_rng
        return {
            "version": _STATE_VERSION,
            "enabled": self.enabled,
            "steps_taught": self.steps_taught,
            "seed": self.seed,
            "rng": rng,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        missing = {"version", "enabled", "steps_taught", "seed", "rng"} - set(state)
        if missing:
            raise ValueError(f"state is missing keys {sorted(missing)}")
        if state["version"] != _STATE_VERSION:
            raise ValueError(f"unsupported state version {state['version']!r}")
        self.enabled = bool(state["enabled"])
        self.steps_taught = int(state["steps_taught"])
        self.seed = int(state["seed"])
        self._generator = None
        self._pending_rng = state["rng"]

    def __repr__(self) -> str:
        return (
            f"PerformativeTeacher(policy={self.policy!r}, eps={self.eps}, "
            f"lookahead_steps={self.lookahead_steps}, solve_steps={self.solve_steps}, "
            f"lookahead_encoder_grad={self.lookahead_encoder_grad}, enabled={self.enabled})"
        )

    # ------------------------------------------------------------ internals
    def _rng(self, device: torch.device) -> torch.Generator:
        if self._generator is not None and self._generator.device.type == device.type:
            return self._generator
        gen = torch.Generator(device=device)
        if self._pending_rng is not None:
            dev_type, state = self._pending_rng
            if dev_type != device.type:
                raise TeacherError(
                    f"the random-policy state was saved on {dev_type!r} and cannot be "
                    f"restored on {device.type!r}"
                )
            gen.set_state(state)
            self._pending_rng = None
        else:
            gen.manual_seed(self.seed)
        self._generator = gen
        return gen

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if not self.active:
            return None
        if args:
            z, rest, key = args[0], args[1:], None
        elif "input" in kwargs:
            z, rest, key = kwargs["input"], (), "input"
        else:
            return None
        targets = self._targets
        if targets is None:
            raise MissingTargetsError(
                "a training forward reached the taught head without targets: call "
                "teacher.set_targets(y) before each training forward (or set "
                "teacher.enabled = False, use model.eval(), or torch.no_grad())"
            )
        self._targets = None
        if not isinstance(z, Tensor) or not z.is_floating_point():
            raise TypeError("the head's input must be a floating-point tensor")
        self._check_shapes(z, targets)
        if self.policy == "none":
            n = z.numel() // max(z.shape[-1], 1)
            zero = torch.zeros((), device=z.device)
            self._stats = {
                "angle_mean": zero,
                "angle_max": zero,
                "n_rows": torch.tensor(n),
                "n_skipped": torch.tensor(0),
            }
            return None
        z_new = self._teach(z, targets)
        if key is None:
            return (z_new, *rest), kwargs
        return args, {**kwargs, key: z_new}

    def _check_shapes(self, z: Tensor, targets: Tensor) -> None:
        lead = tuple(z.shape[:-1])
        if z.dim() not in (2, 3):
            raise ValueError(
                f"the head's input must have shape (B, D) or (B, T, D), got {tuple(z.shape)}"
            )
        if targets.device != z.device:
            raise TargetsError(
                f"targets are on {targets.device} but the features reaching the head are on "
                f"{z.device}; pass targets on the model's device (y.to(device))"
            )
        shape = tuple(targets.shape)
        want = lead + (self.head.out_features,) if targets.is_floating_point() else lead
        if shape != want:
            raise TargetsError(
                f"targets have shape {shape} but the features reaching the head have shape "
                f"{tuple(z.shape)}; expected targets of shape {want}"
            )

    def _teach(self, z: Tensor, targets: Tensor) -> Tensor:
        with torch.no_grad(), torch.autocast(device_type=z.device.type, enabled=False):
            eta = self._rate()
            if isinstance(eta, Tensor) or self.compile:
                # A tensor, so a scheduler's new lr does not trigger a recompile.
                eta = torch.as_tensor(eta, device=z.device, dtype=_work_dtype(z))
            bias = self.head.bias
            args = (
                z.detach(),
                targets,
                self.head.weight.detach(),
                None if bias is None else bias.detach(),
                eta,
            )
            common = dict(
                n_classes=self.head.out_features,
                eps=self.eps,
                lookahead_steps=self.lookahead_steps,
                lookahead_lr=self.lookahead_lr,
                feature_grad=self.lookahead_encoder_grad,
            )
            if self.policy == "greedy":
                z_tilde, extra, self._stats = self._greedy(
                    *args, solve_steps=self.solve_steps, solve_lr=self.solve_lr, **common
                )
                if self._copy_outputs:  # CUDA-graph outputs are overwritten by the next replay
                    z_tilde = z_tilde.clone()
                    extra = None if extra is None else extra.clone()
                    self._stats = {k: v.clone() for k, v in self._stats.items()}
            else:
                gen = self._rng(z.device)
                z_tilde, extra, self._stats = _teach_step(*args, generator=gen, **common)
        self.steps_taught += 1
        return _StraightThrough.apply(z, z_tilde, extra, self._extra_scale)

    def _extra_scale(self) -> Any:
        scaler = self.grad_scaler
        if scaler is None or not scaler.is_enabled():
            return 1.0
        # The live scale tensor (no host sync). It is set by the scaler's first
        # scale(loss), which comes after the forward, hence the read at backward.
        scale = getattr(scaler, "_scale", None)
        return 1.0 if scale is None else scale.detach()


def _uses_cuda_graphs(options: dict[str, Any]) -> bool:
    """Whether ``torch.compile(**options)`` may run the graph as a CUDA graph."""
    if options.get("mode") in ("reduce-overhead", "max-autotune"):
        return True
    return bool((options.get("options") or {}).get("triton.cudagraphs", False))


def _work_dtype(z: Tensor) -> torch.dtype:
    """The teacher computes in float64 for float64 inputs, else in float32."""
    return torch.float64 if z.dtype == torch.float64 else torch.float32


def _inputs(
    z: Tensor, targets: Tensor, weight: Tensor, bias: Tensor | None, n_classes: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """The head's input as (N, D) rows and everything in the working dtype."""
    work_dtype = _work_dtype(z)
    flat = z.reshape(-1, z.shape[-1])
    if targets.is_floating_point():
        tgt = targets.reshape(-1, targets.shape[-1]).to(work_dtype)
    else:  # one-hot once, not in every solver iteration
        tgt = F.one_hot(targets.reshape(-1), n_classes).to(work_dtype)
    b = None if bias is None else bias.to(work_dtype)
    return flat, flat.to(work_dtype), tgt, weight.to(work_dtype), b


def _outputs(
    z: Tensor, flat: Tensor, zf: Tensor, step: TeachStep, weight: Tensor, bias: Tensor | None,
    eta: Any,
) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
    """``z~`` in the input's shape and dtype, the released-code extra gradient, the stats."""
    valid, la = step.valid, step.lookahead
    z_tilde = torch.where(valid.unsqueeze(-1), step.z.to(z.dtype), flat).reshape(z.shape)
    extra = None
    if la.feature_grad is not None:
        extra = la.feature_grad.to(z.dtype).reshape(z.shape)
    count = valid.to(zf.dtype).sum().clamp_min(1.0)
    moved = torch.where(valid, angle(step.z, zf), 0.0)
    dist_sq = (weight - la.weight).pow(2).sum()
    if bias is not None:
        assert la.bias is not None
        dist_sq = dist_sq + (bias - la.bias).pow(2).sum()
    b_mean = step.before.sum() / count
    a_mean = step.after.sum() / count
    stats = {
        "angle_mean": moved.sum() / count,
        "angle_max": moved.max() if moved.numel() else moved.sum(),
        "objective_before": b_mean,
        "objective_after": a_mean,
        "objective_drop": b_mean - a_mean,
        "theta_dist": dist_sq.sqrt(),
        "eta": torch.as_tensor(eta),
        "n_rows": torch.tensor(valid.numel()),
        "n_skipped": (~valid).sum(),
    }
    return z_tilde, extra, stats


def _teach_step(
    z: Tensor,
    targets: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    eta: Any,
    *,
    n_classes: int,
    generator: torch.Generator | None = None,
    solve_steps: int = 15,
    solve_lr: float | None = None,
    **common: Any,
) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
    """Everything of one teaching step between the detached input and ``z~``.

    The greedy policy without ``generator``, the random one with it. One pure
    function, so that ``compile=True`` traces the casts, the solve and the
    statistics of the greedy step as one graph.
    """
    flat, zf, tgt, w, b = _inputs(z, targets, weight, bias, n_classes)
    if generator is None:
        step = greedy_teach(
            zf, tgt, w, b, eta, solve_steps=solve_steps, solve_lr=solve_lr, **common
        )
    else:
        step = random_teach(zf, tgt, w, b, eta, generator=generator, **common)
    return _outputs(z, flat, zf, step, w, b, eta)
