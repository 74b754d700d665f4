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
from typing import Any, Callable, Literal

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .._checks import (
    LearnerRate,
    check_float,
    check_ignore_index,
    check_int,
    check_positive,
    check_saved_state,
    check_seed,
)
from ..errors import (
    MissingTargetsError,
    TeacherError,
)
from ..functional.performative import (
    LINESEARCH_STEPS,
    PGD_STEPS,
    PGD_TOL,
    SOLVERS,
)
from ..functional.sphere import check_eps
from .head import (
    check_armed_targets,
    check_optimizer_holds_head,
    check_rng_state,
    check_target_shapes,
    check_teacher_head,
    read_head,
    row_sums,
    uses_cuda_graphs,
    weight_params,
)
from .hooks import (
    ATTACHED,
    ArmHook,
    InertHook,
    StraightThrough,
    TaughtCall,
    TeacherHook,
    compiling,
    in_backward,
    remove_inert_hooks,
    suspend_teachers,
    under_functorch,
)
from .informed import TARGETS, HeldoutTarget, InformedTarget
from .step import teach_step, working_dtype

# Models saved by torch.save before the hooks had their own module refer to these names.
_InertHook = InertHook

__all__ = ["PerformativeTeacher", "remove_inert_hooks", "suspend_teachers"]

_POLICIES = ("greedy", "random", "none")
_STATE_VERSION = 1



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
        target: where ``theta*`` comes from: ``"lookahead"`` (the paper's:
            ``lookahead_steps`` SGD steps on the batch), ``"ema"`` (a moving
            average of those, decay ``target_decay``) or ``"buffer"`` (the
            head refit every ``refit_every`` steps to its ``refit_l2``-ridge
            optimum on the last ``buffer_batches`` batches' features) or
            ``"heldout"`` (the lookahead run on the next batch of ``heldout``
            instead of the training batch) (default: "lookahead"). Greedy
            policy, eager only; see the method card.
        target_decay, buffer_batches, refit_every, refit_l2: the informed
            targets' settings (defaults: 0.9, 50, 100, 1e-4).
        heldout: for ``target="heldout"``: ``(x, y)`` tensors of held-out
            inputs and targets, cut in order into batches of ``heldout_batch``
            rows and cycled, or an iterable of ``(x, y)`` batches such as a
            ``DataLoader`` (started again when exhausted, and from its start
            after :meth:`load_state_dict`).
        heldout_encoder: for ``target="heldout"``: the ``nn.Module`` mapping
            inputs to the head's features (e.g. ``model[:-1]``). It runs under
            ``torch.no_grad()`` with its modules in eval mode, restored after,
            so BatchNorm statistics and dropout are left alone.
        heldout_batch: rows per held-out batch for tensors (default: 256).

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
        target: str = "lookahead",
        target_decay: float = 0.9,
        buffer_batches: int = 50,
        refit_every: int = 100,
        refit_l2: float = 1e-4,
        heldout: Any = None,
        heldout_encoder: nn.Module | None = None,
        heldout_batch: int = 256,
    ) -> None:
        linear = check_teacher_head(head)
        if head in ATTACHED and ATTACHED[head]() is not None:
            raise TeacherError(
                "this head already has a PerformativeTeacher; call .remove() on it before "
                "attaching another"
            )
        self._rate = LearnerRate(optimizer, lr, weight_params(head), "head.weight")
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
        if not isinstance(target, str) or target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        self.target = target
        self._target: InformedTarget | HeldoutTarget | None = None
        if target != "heldout" and (heldout is not None or heldout_encoder is not None):
            raise ValueError(f"heldout and heldout_encoder are the settings of "
                             f"target='heldout', not of target={target!r}")
        if target == "heldout" and (heldout is None or heldout_encoder is None):
            raise ValueError("target='heldout' needs heldout= (the held-out (x, y) tensors or "
                             "loader) and heldout_encoder= (the module giving the head's "
                             "features)")
        if target != "lookahead":
            if policy != "greedy":
                raise ValueError(f"target={target!r} is a target of the greedy policy; "
                                 f"policy={policy!r} does not solve toward a target")
            if compile is not False:
                raise ValueError(f"target={target!r} keeps state across steps in Python, "
                                 "which a compiled step cannot update; leave compile=False")
            if target == "heldout":
                self._target = HeldoutTarget(heldout_encoder, heldout, heldout_batch,
                                             self.lookahead_steps)
            else:
                self._target = InformedTarget(target, target_decay, buffer_batches,
                                              refit_every, refit_l2)
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
        self._greedy = teach_step
        if self.compile:
            options: dict[str, Any] = {"fullgraph": True, "dynamic": False}
            options.update(compile if isinstance(compile, dict) else {})
            self._greedy = torch.compile(teach_step, **options)
        self._copy_outputs = self.compile and uses_cuda_graphs(
            compile if isinstance(compile, dict) else {}
        )
        self.enabled = True
        self.steps_taught = 0
        self._generator: torch.Generator | None = None
        self._pending_rng: tuple[str, Tensor] | None = None
        self._queue: list[Tensor] = []
        self._taught: list[TaughtCall] = []
        self._stats: dict[str, Tensor] = {}
        self._handle: RemovableHandle | None = head.register_forward_pre_hook(
            TeacherHook(self), with_kwargs=True
        )
        # The hook holds the teacher weakly: when the program drops the teacher,
        # the hook goes too and the head is free for a new one.
        self._finalizer = weakref.finalize(self, self._handle.remove)
        self._arm_handles: list[tuple[RemovableHandle, weakref.finalize]] = []
        ATTACHED[head] = weakref.ref(self)

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
            check_armed_targets(t, self.head.out_features, self.ignore_index, self.validate)
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
        handle = module.register_forward_pre_hook(ArmHook(self, key, calls), with_kwargs=True)
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
            ref = ATTACHED.get(self.head)
            if ref is not None and ref() is self:
                del ATTACHED[self.head]
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
        } | ({} if self._target is None else {"target": self._target.state_dict()})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; a malformed state is refused whole."""
        keys = {"version", "enabled", "steps_taught", "seed", "rng"}
        state = check_saved_state(state, keys, _STATE_VERSION)
        if not isinstance(state["enabled"], bool):
            raise ValueError(f"state['enabled'] must be a bool, got {state['enabled']!r}")
        # the shared checks raise TeacherError / TeacherTypeError, both ValueErrors
        steps = check_int(state["steps_taught"], "state['steps_taught']", 0)
        seed = check_seed(state["seed"], "state['seed']")
        if seed is None:
            raise ValueError("state['seed'] must be an int, got None")
        rng = check_rng_state(state["rng"])
        if self._target is not None:
            if "target" not in state:
                raise ValueError(f"state has no 'target' for target={self.target!r}")
            self._target.load_state_dict(state["target"])
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
    def _check_optimizer(self) -> None:
        group = check_optimizer_holds_head(self._rate.optimizer, self.head, self._rate_weight)
        if group is not None:
            self._rate._group, self._rate_weight = group, self.head._parameters.get("weight")

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
        if self._taught and self.enabled and self.head.training and in_backward():
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
            check_target_shapes(z, targets, self.head.out_features)
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
            fingerprint = row_sums(z)
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
        return StraightThrough.apply(z, entry.z_tilde, entry.extra, self._extra_scale)

    def _solve_tol(self, device: torch.device, record: bool) -> float | None:
        """The early exit of this call: none inside a torch.func transform or a compiled
        region (no host read-back there), and by default none on an accelerator."""
        if not record or compiling() or self.compile:
            return None
        if self.solve_tol == "auto":
            return PGD_TOL if self.solver == "pgd" and device.type == "cpu" else None
        return self.solve_tol

    def _teach(self, z: Tensor, targets: Tensor) -> Tensor:
        record = not under_functorch()
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
                eta = torch.as_tensor(eta, device=z.device, dtype=working_dtype(z))
            weight, bias = read_head(self.head)
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
                    target=self._informed(record, eta),
                    **common,
                )
                if self._copy_outputs:  # CUDA-graph outputs are overwritten by the next replay
                    z_tilde = z_tilde.clone()
                    extra = None if extra is None else extra.clone()
                    stats = {k: v.clone() for k, v in stats.items()}
            else:
                gen = self._rng(z.device)
                z_tilde, extra, stats = teach_step(*args, generator=gen, **common)
        if record:
            self._stats = stats
        self._remember(z, z_tilde, extra)
        self.steps_taught += 1
        return StraightThrough.apply(z, z_tilde, extra, self._extra_scale)

    def _informed(self, record: bool, eta: Any) -> InformedTarget | HeldoutTarget | None:
        if self._target is not None:
            self._target.update = record  # inside torch.func: use the state, change nothing
            if isinstance(self._target, HeldoutTarget):
                self._target.lr = eta if self.lookahead_lr is None else self.lookahead_lr
        return self._target

    def _remember(self, z: Tensor, z_tilde: Tensor | None, extra: Tensor | None) -> None:
        if under_functorch():  # no checkpoint recomputation to serve; keep no wrapped tensors
            return
        self._taught.append(TaughtCall(tuple(z.shape), row_sums(z), z_tilde, extra))

    def _extra_scale(self) -> Any:
        scaler = self.grad_scaler
        if scaler is None or not scaler.is_enabled():
            return 1.0
        # The live scale tensor (no host sync). It is set by the scaler's first
        # scale(loss), which comes after the forward, hence the read at backward.
        scale = getattr(scaler, "_scale", None)
        return 1.0 if scale is None else scale.detach()
