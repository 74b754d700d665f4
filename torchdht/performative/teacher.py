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

import contextlib
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, Callable, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.utils.hooks import RemovableHandle

from .._checks import (
    LearnerRate,
    check_float,
    check_head,
    check_ignore_index,
    check_int,
    check_positive,
    check_seed,
)
from ..errors import (
    HeadTypeError,
    MissingTargetsError,
    TargetsError,
    TeacherError,
    TorchScriptError,
)
from ..functional.chunks import block_rows
from ..functional.gram import GramLookahead
from ..functional.lookahead import LinearLookahead
from ..functional.objective import cross_entropy_rows
from ..functional.performative import (
    LINESEARCH_STEPS,
    PGD_STEPS,
    PGD_TOL,
    SOLVERS,
    TeachStep,
    greedy_teach,
    random_teach,
)
from ..functional.sphere import angle, check_eps

__all__ = ["PerformativeTeacher", "remove_inert_hooks", "suspend_teachers"]

_POLICIES = ("greedy", "random", "none")
_STATE_VERSION = 1

# Heads that carry a teacher; a weak map so that a dropped model frees its entry.
_ATTACHED: weakref.WeakKeyDictionary[nn.Module, weakref.ref] = weakref.WeakKeyDictionary()


class _StraightThrough(torch.autograd.Function):
    """Forward: ``z~``. Backward: the incoming gradient goes to ``z`` unchanged,
    plus ``scale() * extra`` when the released-code behaviour is on. ``scale``
    is read at backward time, when a GradScaler has set its current scale.

    Written with ``setup_context`` and a generated vmap rule, so that
    ``torch.func`` transforms (``grad``, ``vjp``, ``jacrev``, ``vmap``) of a
    taught model work."""

    generate_vmap_rule = True

    @staticmethod
    def forward(
        z: Tensor, z_tilde: Tensor, extra: Tensor | None, scale: Callable[[], Any]
    ) -> Tensor:
        return z_tilde.view_as(z_tilde)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.extra = inputs[2]
        ctx.scale = inputs[3]

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, None, None, None]:
        grad = grad_out
        if ctx.extra is not None:
            grad = grad_out + (ctx.extra * ctx.scale()).to(grad_out.dtype)
        return grad, None, None, None


class _Hook:
    """The forward pre-hook on the head. It holds its teacher weakly, so the
    teacher's lifetime owns the hook, and a copy of it (``copy.deepcopy``,
    EMA copies, pickling by ``torch.save(model)``) is an inert hook that
    carries neither the teacher nor its optimizer."""

    __slots__ = ("_ref", "__weakref__")

    def __init__(self, teacher: PerformativeTeacher) -> None:
        self._ref = weakref.ref(teacher)

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        teacher = self._ref()
        if teacher is None or module is not teacher.head:  # a shallow copy of the head
            return None
        return teacher._hook(module, args, kwargs)

    def __deepcopy__(self, memo: dict) -> _InertHook:
        return _InertHook()

    def __reduce__(self) -> tuple[type, tuple]:
        return (_InertHook, ())

    @property
    def __name__(self) -> str:  # what torch.jit.script reads first of a hook
        raise TorchScriptError(
            "torch.jit.script cannot compile a PerformativeTeacher's hook; call "
            "teacher.remove() before scripting (torch.compile handles the teacher)"
        )


class _InertHook:
    """What a copy of a taught head carries in place of the teacher's hook: it
    passes the features through. A new teacher can attach beside it."""

    __slots__ = ()

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        return None

    def __repr__(self) -> str:
        return "torchdht inert hook (a copy of a taught head; passes features through)"

    @property
    def __name__(self) -> str:  # what torch.jit.script reads first of a hook
        raise TorchScriptError(
            "torch.jit.script cannot compile the inert torchdht hook that a copy of a taught "
            "model carries; call torchdht.performative.remove_inert_hooks(model) before "
            "scripting"
        )


class _ArmHook:
    """A forward pre-hook on the model that arms its teacher from the model's own
    arguments; holds the teacher weakly and copies as an inert hook, like :class:`_Hook`."""

    __slots__ = ("_ref", "key", "calls", "__weakref__")

    def __init__(self, teacher: PerformativeTeacher, key: str | int, calls: int) -> None:
        self._ref = weakref.ref(teacher)
        self.key, self.calls = key, calls

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        teacher = self._ref()
        if teacher is None or not (teacher.enabled and teacher.head.training):
            return None
        if isinstance(self.key, str):
            targets = kwargs.get(self.key)
        else:
            targets = args[self.key] if len(args) > self.key else None
        if targets is not None:  # a forward without labels arms nothing
            teacher.set_targets(targets, calls=self.calls)
        return None

    def __deepcopy__(self, memo: dict) -> _InertHook:
        return _InertHook()

    def __reduce__(self) -> tuple[type, tuple]:
        return (_InertHook, ())

    @property
    def __name__(self) -> str:
        raise TorchScriptError(
            "torch.jit.script cannot compile a PerformativeTeacher's arming hook; call "
            "teacher.remove() before scripting"
        )


def remove_inert_hooks(module: nn.Module) -> int:
    """Remove the inert hooks that copies of taught heads carry (from ``copy.deepcopy``,
    EMA copies or ``torch.save(model)``), e.g. before ``torch.jit.script``.

    Returns:
        How many were removed.

    Example:
        >>> import copy
        >>> model = nn.Sequential(nn.Linear(4, 3))
        >>> teacher = PerformativeTeacher(model[0], lr=0.1)
        >>> ema = copy.deepcopy(model)
        >>> remove_inert_hooks(ema), len(ema[0]._forward_pre_hooks)
        (1, 0)
        >>> teacher.remove()
    """
    removed = 0
    for m in module.modules():
        for key, hook in list(m._forward_pre_hooks.items()):
            if isinstance(hook, _InertHook):
                del m._forward_pre_hooks[key]
                m._forward_pre_hooks_with_kwargs.pop(key, None)
                removed += 1
    return removed


class _Taught(NamedTuple):
    """One taught call of this step, kept so that a recomputation (activation
    checkpointing) hands the head the very same features."""

    shape: tuple[int, ...]
    fingerprint: Tensor
    z_tilde: Tensor | None
    extra: Tensor | None


def _in_backward() -> bool:
    """Whether this thread is running an autograd backward (where activation
    checkpointing recomputes its forward)."""
    return torch._C._current_graph_task_id() != -1


def _compiling() -> bool:
    """Whether dynamo is tracing (a user's ``torch.compile`` around the model)."""
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and getattr(compiler, "is_compiling", lambda: False)())


def _under_functorch() -> bool:
    """Whether a ``torch.func`` transform is running."""
    return torch._C._functorch.peek_interpreter_stack() is not None


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
            and ``lr``. With FSDP2 build the teacher after ``fully_shard`` and
            the optimizer (``fully_shard`` replaces the parameters), or attach
            it before with ``lr=lambda: opt.param_groups[0]["lr"]``.
        lr: ``eta`` as a positive float or a zero-argument callable.
        eps: chord radius of the cap on the unit sphere, in ``(0, 2]``; the
            angle moved is at most ``2 * asin(eps / 2)`` (default: 0.1).
        lookahead_steps: SGD steps of the head that estimate ``theta*``
            (default: 5).
        lookahead_lr: step size of the lookahead (default: None, meaning
            ``eta``).
        solve_steps: line searches of the ``"linesearch"`` solver (default:
            None, meaning 3) or iterations of the ``"pgd"`` solver (default:
            None, meaning 15).
        solve_lr: the ``"pgd"`` solver's initial angular step in radians
            (default: None, meaning
            :func:`~torchdht.functional.default_solve_lr`, with which the rim
            of the cap is reachable); refused with ``"linesearch"``.
        solve_tol: stop the ``"pgd"`` solver before ``solve_steps`` once two
            steps in a row lowered the batch's summed objective by at most
            this fraction of the decrease reached so far; None: always
            ``solve_steps`` steps (default: "auto", meaning 1e-3 for the
            eager ``"pgd"`` solver on the CPU and None elsewhere). It reads
            one number back to the host per solver step: free on the CPU, a
            pipeline stall on a GPU, impossible in a compiled step or inside
            a ``torch.func`` transform (there it is always off); the line
            search's cost is fixed by its number of searches. Pass None for
            results that do not depend on the device or on ``compile``.
        solver: ``"pgd"`` (Riemannian projected gradient steps,
            :func:`~torchdht.functional.solve_cap`) or ``"linesearch"``
            (projected line searches along the gradient in exponential
            coordinates of the cap, each over many step sizes at the price of
            one matrix product, through the batch's Gram matrix for wide
            heads; :func:`~torchdht.functional.solve_cap_linesearch`)
            (default: "pgd"). See the method card's cost section for what
            each attains and costs.
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

    head: nn.Linear
    enabled: bool
    steps_taught: int
    seed: int
    validate: bool
    ignore_index: int
    compile: bool
    _copy_outputs: bool
    _finalizer: weakref.finalize

    def __init__(
        self,
        head: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        lr: float | Callable[[], float] | None = None,
        eps: float = 0.1,
        lookahead_steps: int = 5,
        lookahead_lr: float | None = None,
        solve_steps: int | None = None,
        solve_lr: float | None = None,
        solve_tol: float | Literal["auto"] | None = "auto",
        solver: str = "pgd",
        policy: str = "greedy",
        lookahead_encoder_grad: bool = False,
        grad_scaler: Any | None = None,
        ignore_index: int = -100,
        seed: int | None = None,
        validate: bool = False,
        compile: bool | dict[str, Any] = False,
    ) -> None:
        linear = _check_head(head)
        if head in _ATTACHED and _ATTACHED[head]() is not None:
            raise TeacherError(
                "this head already has a PerformativeTeacher; call .remove() on it before "
                "attaching another"
            )
        self._rate = LearnerRate(optimizer, lr, _weight_params(head), "head.weight")
        self._rate_weight = head._parameters.get("weight")  # what the group was found by
        self.head = linear
        self.eps = check_eps(eps)
        self.lookahead_steps = check_positive(lookahead_steps, "lookahead_steps", integer=True)
        self.lookahead_lr = (
            None if lookahead_lr is None else check_positive(lookahead_lr, "lookahead_lr")
        )
        if not isinstance(solver, str) or solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        self.solver = solver
        if solve_steps is None:
            solve_steps = LINESEARCH_STEPS if solver == "linesearch" else PGD_STEPS
        self.solve_steps = check_positive(solve_steps, "solve_steps", integer=True)
        if solve_lr is not None and solver != "pgd":
            raise ValueError(
                "solve_lr is the angular step of solver='pgd'; solver='linesearch' searches "
                "its step sizes itself"
            )
        self.solve_lr = None if solve_lr is None else check_positive(solve_lr, "solve_lr")
        if isinstance(solve_tol, str):
            if solve_tol != "auto":
                raise ValueError(f"solve_tol must be 'auto', None or a number, got {solve_tol!r}")
        elif solve_tol is not None:
            if solver != "pgd":
                raise ValueError(
                    "solve_tol is the early exit of solver='pgd'; solver='linesearch' runs a "
                    "fixed number of searches (solve_steps)"
                )
            if compile is not False:
                raise ValueError(
                    "solve_tol reads the objective back to the host at every solver step, "
                    "which a compiled step (compile=...) cannot do; leave it 'auto' or None"
                )
            solve_tol = check_float(solve_tol, "solve_tol", low=0.0, high=1.0, high_open=True)
        self.solve_tol = solve_tol
        if not isinstance(policy, str) or policy not in _POLICIES:
            raise ValueError(f"policy must be one of {_POLICIES}, got {policy!r}")
        if lookahead_encoder_grad and policy == "none":
            raise ValueError("lookahead_encoder_grad=True needs policy 'greedy' or 'random'")
        self.policy = policy
        self.lookahead_encoder_grad = bool(lookahead_encoder_grad)
        self.grad_scaler = grad_scaler
        self.ignore_index = check_ignore_index(ignore_index)
        seed = check_seed(seed)
        self.seed = seed if seed is not None else int(torch.Generator().seed())
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
        self._queue: list[Tensor] = []
        self._taught: list[_Taught] = []
        self._stats: dict[str, Tensor] = {}
        self._handle: RemovableHandle | None = head.register_forward_pre_hook(
            _Hook(self), with_kwargs=True
        )
        # The hook holds the teacher weakly: when the program drops the teacher,
        # the hook goes too and the head is free for a new one.
        self._finalizer = weakref.finalize(self, self._handle.remove)
        self._arm_handles: list[tuple[RemovableHandle, weakref.finalize]] = []
        _ATTACHED[head] = weakref.ref(self)

    # ------------------------------------------------------------------ API
    def set_targets(self, targets: Tensor | Sequence[Tensor], calls: int = 1) -> None:
        """Arm the teacher with the targets of the next training forward(s).

        Each taught forward of the head consumes one armed target tensor;
        arming again replaces whatever was not consumed.

        Args:
            targets: class indices (a tensor of any integer dtype with the
                features' leading shape, ``(B,)`` or ``(B, T)``; entries equal
                to ``ignore_index`` mark rows that pass through untaught) or
                soft targets (floating tensor with that shape plus
                ``num_classes``); or a sequence of such tensors, one per head
                call of the step (e.g. two crops of different sizes). Not
                modified.
            calls: how many forwards of the head this step makes with the same
                ``targets`` (e.g. a model that calls its head on two views)
                (default: 1). Only with a single tensor.

        Example:
            >>> head = nn.Linear(4, 3)
            >>> teacher = PerformativeTeacher(head, lr=0.1)
            >>> z, y = torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, -100, 1])
            >>> teacher.set_targets(y, calls=2)
            >>> out = head(z) + head(z.flip(0))   # two calls, both taught
            >>> int(teacher.stats["n_ignored"]), teacher.steps_taught
            (1, 2)
            >>> teacher.remove()
        """
        if isinstance(targets, Tensor):
            calls = check_positive(calls, "calls", integer=True)
            queue = [targets] * calls
        elif isinstance(targets, Sequence) and not isinstance(targets, (str, bytes)):
            if calls != 1:
                raise ValueError("give calls= with a single targets tensor, not with a sequence")
            queue = list(targets)
            if not queue:
                raise ValueError("targets must hold at least one tensor")
        else:
            raise TypeError(
                f"targets must be a torch.Tensor or a sequence of them, got "
                f"{type(targets).__name__}"
            )
        for t in queue:
            self._check_targets(t)
        self._check_optimizer()
        self._queue = queue
        self._taught = []

    def arm_from(self, module: nn.Module, key: str | int = "labels", calls: int = 1) -> None:
        """Read the targets of every training forward from ``module``'s own arguments.

        For models called with their labels, e.g. the Hugging Face convention
        ``model(**batch)`` with ``labels=``: a forward pre-hook on ``module``
        calls :meth:`set_targets` with that argument, so the loop needs no
        line of its own. A forward without it (``labels=None``, inference)
        arms nothing; nothing is armed while the head is in eval mode or the
        teacher is disabled. :meth:`set_targets` still works and the last
        call wins. :meth:`remove` removes this hook too.

        Args:
            module: the module called with the targets, usually the model
                itself (the one wrapped by DDP, or the wrapper).
            key: the keyword argument holding the targets, or the index of a
                positional one (default: "labels").
            calls: head calls per forward of ``module`` (default: 1).

        Example:
            >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
            >>> class WithLabels(nn.Module):
            ...     def __init__(self):
            ...         super().__init__()
            ...         self.net = model
            ...     def forward(self, x, labels=None):
            ...         return self.net(x)
            >>> wrapped = WithLabels()
            >>> teacher = PerformativeTeacher(model[-1], lr=0.1)
            >>> teacher.arm_from(wrapped, key="labels")
            >>> out = wrapped(torch.randn(5, 4), labels=torch.tensor([0, 1, 2, 0, 1]))
            >>> teacher.steps_taught
            1
            >>> teacher.remove()
        """
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise TypeError(
                f"key must be a keyword name (str) or a positional index (int), got "
                f"{type(key).__name__}"
            )
        if isinstance(key, int) and key < 0:
            raise ValueError(f"key must be a non-negative positional index, got {key}")
        if self._handle is None:
            raise TeacherError("this teacher was removed; build a new one")
        calls = check_positive(calls, "calls", integer=True)
        handle = module.register_forward_pre_hook(_ArmHook(self, key, calls), with_kwargs=True)
        self._arm_handles.append((handle, weakref.finalize(self, handle.remove)))

    @property
    def active(self) -> bool:
        """Whether the next forward of the head would be taught: the teacher is
        enabled, the head is in training mode, and grad is enabled or targets
        are armed (an armed forward under ``torch.no_grad()``, as a reentrant
        activation checkpoint runs its first pass, is taught too)."""
        return (
            self.enabled and self.head.training and (torch.is_grad_enabled() or bool(self._queue))
        )

    def clear_targets(self) -> None:
        """Drop whatever is armed and not yet consumed (e.g. after a step whose head never
        ran in training mode), so the next training forward needs new targets."""
        self._queue = []

    @property
    def stats_tensors(self) -> dict[str, Tensor]:
        """:attr:`stats` as 0-d tensors on the features' device, without a host sync (for
        loggers that take tensors)."""
        return dict(self._stats)

    @property
    def stats(self) -> dict[str, float]:
        """Figures of the last taught call (empty before the first one).

        Keys: ``angle_mean`` and ``angle_max`` (radians moved on the sphere),
        ``objective_before``, ``objective_after`` and ``objective_drop``
        (means over the taught rows of eq. 9), ``theta_dist``
        (``|theta - theta*|``), ``eta``, ``n_rows`` (rows reaching the head),
        ``n_skipped`` (rows passed through because they were non-finite,
        zero or overflowed the working dtype), ``n_ignored`` (rows whose
        label is ``ignore_index``), ``loss_untaught`` (the softmax
        cross-entropy of the head on the original features) and
        ``loss_taught`` (on the taught features, which is what the training
        loss sees), both means over the taught rows: when every labelled row
        is finite and non-zero, ``loss_untaught`` equals
        ``F.cross_entropy(head(z), y)`` of the untouched batch. With
        ``policy="none"`` only the angles (zero) and the counts. Not updated
        inside ``torch.func`` transforms. Reading them syncs with the device.
        """
        return {k: float(v) for k, v in self._stats.items()}

    def remove(self) -> None:
        """Detach the hook from the head (and those of :meth:`arm_from`). Safe to call more
        than once."""
        for handle, finalizer in self._arm_handles:
            finalizer.detach()
            handle.remove()
        self._arm_handles = []
        if self._handle is not None:
            self._finalizer.detach()
            self._handle.remove()
            self._handle = None
            ref = _ATTACHED.get(self.head)
            if ref is not None and ref() is self:
                del _ATTACHED[self.head]
        self._queue = []
        self._taught = []

    @contextlib.contextmanager
    def suspended(self) -> Iterator[PerformativeTeacher]:
        """Within the block the head sees its input unchanged (``enabled`` is
        restored afterwards, whatever it was)."""
        enabled = self.enabled
        self.enabled = False
        try:
            yield self
        finally:
            self.enabled = enabled

    def __enter__(self) -> PerformativeTeacher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def __getstate__(self) -> Any:
        raise TypeError(
            "a PerformativeTeacher cannot be pickled or copied (it holds the optimizer and a "
            "hook on the head); save teacher.state_dict() and build a new teacher on the "
            "copy's head instead"
        )

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
        """Restore what :meth:`state_dict` returned; a malformed state is refused whole."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        missing = {"version", "enabled", "steps_taught", "seed", "rng"} - set(state)
        if missing:
            raise ValueError(f"state is missing keys {sorted(missing)}")
        if state["version"] != _STATE_VERSION:
            raise ValueError(f"unsupported state version {state['version']!r}")
        if not isinstance(state["enabled"], bool):
            raise ValueError(f"state['enabled'] must be a bool, got {state['enabled']!r}")
        # the shared checks raise TeacherError / TeacherTypeError, both ValueErrors
        steps = check_int(state["steps_taught"], "state['steps_taught']", 0)
        seed = check_seed(state["seed"], "state['seed']")
        if seed is None:
            raise ValueError("state['seed'] must be an int, got None")
        rng = _check_rng_state(state["rng"])
        self.enabled = state["enabled"]
        self.steps_taught = steps
        self.seed = seed
        self._generator = None
        self._pending_rng = rng

    def __repr__(self) -> str:
        return (
            f"PerformativeTeacher(policy={self.policy!r}, eps={self.eps}, "
            f"lookahead_steps={self.lookahead_steps}, solver={self.solver!r}, "
            f"solve_steps={self.solve_steps}, "
            + (f"solve_tol={self.solve_tol!r}, " if self.solver == "pgd" else "")
            + f"lookahead_encoder_grad={self.lookahead_encoder_grad}, enabled={self.enabled})"
        )

    # ------------------------------------------------------------ internals
    def _check_targets(self, targets: Any) -> None:
        if not isinstance(targets, Tensor):
            raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
        num_classes = self.head.out_features
        # Value checks on the host where that is free (CPU) or asked for; on CUDA
        # an asynchronous device assert, so no sync is added to the step. Tensors
        # inside a torch.func transform cannot be read on the host.
        wrapped = torch._C._functorch.is_functorch_wrapped_tensor(targets)
        host_check = (self.validate or targets.device.type == "cpu") and not wrapped
        if targets.is_floating_point():
            if targets.dim() < 2 or targets.shape[-1] != num_classes:
                raise TargetsError(
                    f"soft targets must have shape (..., {num_classes}) for a head with "
                    f"{num_classes} outputs, got {tuple(targets.shape)}"
                )
            if host_check:
                if not bool(torch.isfinite(targets).all()) or bool((targets < 0).any()):
                    raise TargetsError("soft targets must be finite and non-negative")
        elif targets.dtype == torch.bool or targets.is_complex():
            raise TypeError(
                f"targets must hold class indices or probabilities, got {targets.dtype}"
            )
        else:
            if targets.dim() == 0:
                raise TargetsError("targets must have a batch dimension, got a 0-d tensor")
            ok = ((targets >= 0) & (targets < num_classes)) | (targets == self.ignore_index)
            if host_check:
                if targets.numel() and not bool(ok.all()):
                    bad = targets[~ok]
                    lo, hi = int(bad.min()), int(bad.max())
                    raise TargetsError(
                        f"class indices must lie in [0, {num_classes - 1}] for a head with "
                        f"{num_classes} outputs (or equal ignore_index={self.ignore_index}), "
                        f"got values in [{lo}, {hi}]"
                    )
            elif targets.device.type == "cuda" and not wrapped:
                torch._assert_async(ok.all())

    def _check_optimizer(self) -> None:
        """Refuse an optimizer that lost the head: ``fully_shard`` (FSDP2) replaces
        ``head.weight`` by a DTensor parameter, which an optimizer built before does
        not hold. Checked between steps, where FSDP2's parameters are the sharded
        ones (inside its forward they are plain unsharded tensors no optimizer holds)."""
        opt, w = self._rate.optimizer, self.head._parameters.get("weight")
        if opt is None or w is None or w is self._rate_weight or not _is_dtensor(w):
            return
        for i, group in enumerate(opt.param_groups):
            if any(p is w for p in group["params"]):
                self._rate._group, self._rate_weight = i, w
                return
        raise TeacherError(
            "head.weight was replaced by a sharded (DTensor) parameter, as fully_shard does, "
            "after the teacher was built, and the teacher's optimizer does not hold the new "
            "one, so eta would be read from an optimizer that no longer trains the head. "
            "Build the teacher after fully_shard and the optimizer, or pass "
            "lr=lambda: opt.param_groups[0]['lr']"
        )

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
        if args:
            z, rest, key = args[0], args[1:], None
        elif "input" in kwargs:
            z, rest, key = kwargs["input"], (), "input"
        else:
            return None
        if self._taught and self.enabled and self.head.training and _in_backward():
            # Activation checkpointing recomputes the head's forward inside the backward:
            # hand it the features its first pass was taught with.
            z_new = self._recompute(z)
        elif self.active:
            if not self._queue:
                raise MissingTargetsError(
                    "a training forward reached the taught head without targets: call "
                    "teacher.set_targets(y) before each training forward (set_targets(y, "
                    "calls=n) for a step that calls the head n times), or set "
                    "teacher.enabled = False, use model.eval(), or torch.no_grad()"
                )
            targets = self._queue.pop(0)
            if not isinstance(z, Tensor) or not z.is_floating_point():
                raise TypeError("the head's input must be a floating-point tensor")
            self._check_shapes(z, targets)
            z_new = self._teach(z, targets)
        else:
            return None
        if z_new is z:
            return None
        if key is None:
            return (z_new, *rest), kwargs
        return args, {**kwargs, key: z_new}

    def _recompute(self, z: Tensor) -> Tensor:
        shape = tuple(z.shape)
        found = [t for t in self._taught if t.shape == shape]
        if len(found) > 1:  # several calls of this shape: tell them apart by their rows' sums
            fingerprint = _fingerprint(z)
            found = [t for t in found if torch.equal(t.fingerprint, fingerprint)]
        if not found:
            raise TeacherError(
                f"activation checkpointing recomputed the taught head on features of shape "
                f"{shape} that its first pass did not see; the recomputation must repeat the "
                f"forward exactly (same inputs, deterministic layers)"
            )
        entry = found[0]
        if entry.z_tilde is None:
            return z
        return _StraightThrough.apply(z, entry.z_tilde, entry.extra, self._extra_scale)

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

    def _solve_tol(self, device: torch.device, record: bool) -> float | None:
        """The early exit of this call: none inside a torch.func transform or a compiled
        region (no host read-back there), and by default none on an accelerator."""
        if not record or _compiling() or self.compile:
            return None
        if self.solve_tol == "auto":
            return PGD_TOL if self.solver == "pgd" and device.type == "cpu" else None
        return self.solve_tol

    def _teach(self, z: Tensor, targets: Tensor) -> Tensor:
        record = not _under_functorch()
        if self.policy == "none":
            rows = z.numel() // max(z.shape[-1], 1)
            zero = torch.zeros((), device=z.device)
            ignored = (
                torch.zeros((), dtype=torch.long, device=z.device)
                if targets.is_floating_point()
                else (targets == self.ignore_index).sum()
            )
            if record:
                self._stats = {
                    "angle_mean": zero,
                    "angle_max": zero,
                    "n_rows": torch.tensor(rows),
                    "n_skipped": torch.tensor(0),
                    "n_ignored": ignored,
                }
            self._remember(z, None, None)
            self.steps_taught += 1
            return z
        with torch.no_grad(), torch.autocast(device_type=z.device.type, enabled=False):
            eta = self._rate()
            if isinstance(eta, Tensor) or self.compile:
                # A tensor, so a scheduler's new lr does not trigger a recompile.
                eta = torch.as_tensor(eta, device=z.device, dtype=_work_dtype(z))
            weight, bias = _read_head(self.head)
            args = (
                z.detach(),
                targets,
                weight.detach(),
                None if bias is None else bias.detach(),
                eta,
            )
            common = dict(
                n_classes=self.head.out_features,
                eps=self.eps,
                lookahead_steps=self.lookahead_steps,
                lookahead_lr=self.lookahead_lr,
                feature_grad=self.lookahead_encoder_grad,
                ignore_index=self.ignore_index,
            )
            if self.policy == "greedy":
                z_tilde, extra, stats = self._greedy(
                    *args,
                    solve_steps=self.solve_steps,
                    solve_lr=self.solve_lr,
                    solve_tol=self._solve_tol(z.device, record),
                    solver=self.solver,
                    **common,
                )
                if self._copy_outputs:  # CUDA-graph outputs are overwritten by the next replay
                    z_tilde = z_tilde.clone()
                    extra = None if extra is None else extra.clone()
                    stats = {k: v.clone() for k, v in stats.items()}
            else:
                gen = self._rng(z.device)
                z_tilde, extra, stats = _teach_step(*args, generator=gen, **common)
        if record:
            self._stats = stats
        self._remember(z, z_tilde, extra)
        self.steps_taught += 1
        return _StraightThrough.apply(z, z_tilde, extra, self._extra_scale)

    def _remember(self, z: Tensor, z_tilde: Tensor | None, extra: Tensor | None) -> None:
        if _under_functorch():  # no checkpoint recomputation to serve; keep no wrapped tensors
            return
        self._taught.append(_Taught(tuple(z.shape), _fingerprint(z), z_tilde, extra))

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
    z: Tensor,
    targets: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    n_classes: int,
    ignore_index: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor]:
    """The head's input as (N, D) rows, everything in the working dtype, and the rows
    whose label is ``ignore_index``."""
    work_dtype = _work_dtype(z)
    flat = z.reshape(-1, z.shape[-1])
    if targets.is_floating_point():
        tgt = targets.reshape(-1, targets.shape[-1]).to(work_dtype)
        ignored = torch.zeros(flat.shape[0], dtype=torch.bool, device=z.device)
    else:  # any integer dtype
        idx = targets.reshape(-1).long()
        ignored = idx == ignore_index
        idx = idx.masked_fill(ignored, 0)
        # one-hot once, not in every solver iteration; a wide head keeps the indices (an
        # (N, C) one-hot would be as large as its logits)
        narrow = block_rows(flat.shape[0], n_classes) == flat.shape[0]
        tgt = F.one_hot(idx, n_classes).to(work_dtype) if narrow else idx
    b = None if bias is None else bias.to(work_dtype)
    return flat, flat.to(work_dtype), tgt, weight.to(work_dtype), b, ignored


def _outputs(
    z: Tensor,
    flat: Tensor,
    zf: Tensor,
    tgt: Tensor,
    step: TeachStep,
    weight: Tensor,
    bias: Tensor | None,
    eta: Any,
    ignored: Tensor,
) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
    """``z~`` in the input's shape and dtype, the released-code extra gradient, the stats."""
    valid, la = step.valid, step.lookahead
    z_tilde = torch.where(valid.unsqueeze(-1), step.z.to(z.dtype), flat).reshape(z.shape)
    extra = None
    if la.feature_grad is not None:
        extra = la.feature_grad.to(z.dtype).reshape(z.shape)
    count = valid.to(zf.dtype).sum().clamp_min(1.0)
    moved = torch.where(valid, angle(step.z, zf), 0.0)
    b_mean = step.before.sum() / count
    a_mean = step.after.sum() / count
    # cross-entropy on the original features (the lookahead's first logits: free) and on the
    # taught ones (one product), means over the taught rows
    ce = _losses(zf, step.z, tgt, weight, bias, la)
    loss_untaught, loss_taught = (torch.where(valid, x, 0.0).sum() / count for x in ce)
    stats = {
        "angle_mean": moved.sum() / count,
        "angle_max": moved.max() if moved.numel() else moved.sum(),
        "objective_before": b_mean,
        "objective_after": a_mean,
        "objective_drop": b_mean - a_mean,
        "theta_dist": step.theta_dist,
        "eta": torch.as_tensor(eta, dtype=zf.dtype, device=zf.device),
        "n_rows": torch.tensor(valid.numel()),
        "n_skipped": (~valid & ~ignored).sum(),
        "n_ignored": ignored.sum(),
        "loss_untaught": loss_untaught,
        "loss_taught": loss_taught,
    }
    return z_tilde, extra, stats


def _losses(
    zf: Tensor,
    taught: Tensor,
    tgt: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    la: LinearLookahead | GramLookahead,
) -> tuple[Tensor, Tensor]:
    """Per-row cross-entropy on the original features (the lookahead's first logits or losses:
    free) and on the taught ones (one product; over blocks of rows for a wide head)."""

    def logits_of(x: Tensor) -> Tensor:
        return x @ weight.T if bias is None else torch.addmm(bias, x, weight.T)

    rows = block_rows(zf.shape[0], weight.shape[0])
    if rows == zf.shape[0] and tgt.is_floating_point():
        logits = la.logits if la.logits is not None else logits_of(zf)
        return (-(tgt * torch.log_softmax(logits, -1)).sum(-1),
                -(tgt * torch.log_softmax(logits_of(taught), -1)).sum(-1))

    def blocked(x: Tensor) -> Tensor:
        return torch.cat([cross_entropy_rows(logits_of(xb), tb)
                          for xb, tb in zip(x.split(rows), tgt.split(rows))])

    if la.logits is not None:
        untaught = cross_entropy_rows(la.logits, tgt)
    elif isinstance(la, LinearLookahead) and la.loss is not None:
        untaught = la.loss
    else:
        untaught = blocked(zf)
    return untaught, blocked(taught)


def _teach_step(
    z: Tensor,
    targets: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    eta: Any,
    *,
    n_classes: int,
    generator: torch.Generator | None = None,
    solve_steps: int | None = None,
    solve_lr: float | None = None,
    solve_tol: float | None = None,
    solver: str = "pgd",
    ignore_index: int = -100,
    **common: Any,
) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
    """Everything of one teaching step between the detached input and ``z~``.

    The greedy policy without ``generator``, the random one with it. One pure
    function, so that ``compile=True`` traces the casts, the solve and the
    statistics of the greedy step as one graph.
    """
    flat, zf, tgt, w, b, ignored = _inputs(z, targets, weight, bias, n_classes, ignore_index)
    keep = ~ignored
    if generator is None:
        step = greedy_teach(
            zf, tgt, w, b, eta, solve_steps=solve_steps, solve_lr=solve_lr, solve_tol=solve_tol,
            solver=solver, mask=keep, **common,
        )
    else:
        step = random_teach(zf, tgt, w, b, eta, generator=generator, mask=keep, **common)
    return _outputs(z, flat, zf, tgt, step, w, b, eta, ignored)


def _is_dtensor(t: Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a build without torch.distributed
        return False
    return isinstance(t, DTensor)


def _fingerprint(z: Tensor) -> Tensor:
    """Row sums of ``z``: enough to tell apart the calls of one step."""
    return z.detach().sum(-1)


def _check_head(head: Any) -> nn.Linear:
    """Refuse, at construction, a head the teacher cannot work with."""
    if isinstance(head, (tuple, list)):
        names = ", ".join(type(h).__name__ for h in head)
        raise HeadTypeError(
            f"head must be one nn.Linear, got a {type(head).__name__} of {len(head)} modules "
            f"({names}), as timm's get_classifier() returns for distilled models (DeiT, "
            f"LeViT). Attach one teacher to each head that should be taught, e.g. "
            f"t0 = PerformativeTeacher(heads[0], optimizer=opt); t1 = "
            f"PerformativeTeacher(heads[1], optimizer=opt), and arm both each step "
            f"(t0.set_targets(y); t1.set_targets(y))"
        )
    head = check_head(head)
    if head.in_features < 2:
        raise HeadTypeError(
            f"head must take at least 2 input features (a 1-wide feature has no sphere to move "
            f"on), got in_features={head.in_features}"
        )
    if head.out_features < 2:
        raise HeadTypeError(
            f"head must have at least 2 outputs (softmax cross-entropy over one class is "
            f"constant), got out_features={head.out_features}"
        )
    return head


def _old_style_hooks(head: nn.Module) -> list[Any]:
    """The hooks of ``torch.nn.utils.weight_norm`` / ``spectral_norm`` (the old API) on ``head``."""
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    return [
        h for h in head._forward_pre_hooks.values() if isinstance(h, (WeightNorm, SpectralNorm))
    ]


def _weight_params(head: nn.Module) -> list[Tensor]:
    """The parameters an optimizer holds for the head's weight: ``weight`` itself, or the
    originals of a parametrization (``weight_norm``, ``spectral_norm``, old and new API)."""
    params: list[Tensor] = [p for name, p in head.named_parameters() if "bias" not in name]
    weight = head._parameters.get("weight")
    if weight is not None:  # the plain case first
        params.remove(weight)
        params.insert(0, weight)
    return params


def _read(head: nn.Module, name: str) -> Tensor | None:
    """``head.<name>`` as the head's next forward will use it, with no side effect: a
    parametrization (e.g. spectral norm's power iteration) is evaluated in eval mode, so
    its buffers are exactly as without the teacher."""
    if parametrize.is_parametrized(head, name):
        plist: nn.Module = head.parametrizations[name]  # type: ignore[index,assignment]
        modes = [(m, m.training) for m in plist.modules()]
        plist.train(False)
        try:
            return getattr(head, name)
        finally:
            for m, mode in modes:
                m.training = mode
    for hook in _old_style_hooks(head):
        if hook.name == name:
            from torch.nn.utils.spectral_norm import SpectralNorm

            if isinstance(hook, SpectralNorm):
                return hook.compute_weight(head, do_power_iteration=False)
            return hook.compute_weight(head)
    return getattr(head, name)


def _read_head(head: nn.Linear) -> tuple[Tensor, Tensor | None]:
    return _read(head, "weight"), _read(head, "bias")  # type: ignore[return-value]


def _check_rng_state(rng: Any) -> tuple[str, Tensor] | None:
    """A saved random-policy state, checked whole (a corrupt one is refused at load)."""
    if rng is None:
        return None
    if (
        not isinstance(rng, (tuple, list))
        or len(rng) != 2
        or not isinstance(rng[0], str)
        or not isinstance(rng[1], Tensor)
        or rng[1].dtype != torch.uint8
        or rng[1].dim() != 1
    ):
        raise ValueError(
            "state['rng'] must be None or (device type, uint8 generator state) as "
            "state_dict() returns it"
        )
    dev_type, state = rng[0], rng[1].cpu()
    if dev_type == "cpu" or (dev_type == "cuda" and torch.cuda.is_available()):
        try:  # on a scratch generator, so a bad state fails here and not at a later forward
            torch.Generator(device=dev_type).set_state(state)
        except (RuntimeError, ValueError) as err:
            raise ValueError(
                f"state['rng'] is not a valid {dev_type!r} generator state: {err}"
            ) from None
    return dev_type, state


@contextlib.contextmanager
def suspend_teachers(module: nn.Module) -> Iterator[list[PerformativeTeacher]]:
    """Within the block every :class:`PerformativeTeacher` on a submodule of
    ``module`` passes features through (each teacher's ``enabled`` is restored
    afterwards); yields the teachers found.

    For forwards that are not training steps of the learner, e.g. the virtual
    step of :meth:`torchdht.MixupTeacher.hypergradient_step`.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> teacher = PerformativeTeacher(model[-1], lr=0.1)
        >>> with suspend_teachers(model) as found:
        ...     out = model(torch.randn(2, 4))  # no targets needed
        >>> len(found), teacher.enabled
        (1, True)
        >>> teacher.remove()
    """
    with contextlib.ExitStack() as stack:
        teachers = []
        for m in module.modules():
            ref = _ATTACHED.get(m)
            teacher = ref() if ref is not None else None
            if teacher is not None:
                teachers.append(stack.enter_context(teacher.suspended()))
        yield teachers
