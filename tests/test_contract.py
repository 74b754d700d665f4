"""The drop-in contract of PerformativeTeacher inside real training loops.

Each test drops the teacher into a loop feature that real code bases use
(copies, EMA, checkpointing, torch.func, parametrized heads, several head
calls, ignored labels) and compares the step with the one the same loop
gives without that feature, in float64 where values are compared.
"""

from __future__ import annotations

import copy
import gc
import io
import pickle
import types
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap
from torch.utils.checkpoint import checkpoint

import torchdht.functional as tf
from torchdht import MissingTargetsError, PerformativeTeacher, TeacherError
from torchdht.errors import HeadTypeError, TorchScriptError
from torchdht.functional.performative import PGD_TOL, greedy_teach
from torchdht.performative import remove_inert_hooks, suspend_teachers
from torchdht.performative.teacher import _InertHook

DT = torch.float64


def _model(seed: int = 0, dtype: torch.dtype = DT) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4)).to(dtype)


def _batch(n: int = 24, seed: int = 1, dtype: torch.dtype = DT) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g, dtype=dtype), torch.randint(0, 4, (n,), generator=g)


def _taught_grads(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, arm: torch.Tensor | None = None, **kw
) -> dict:
    """Gradients of one plainly taught step (the reference); ``arm`` overrides the armed
    targets (the loss always sees ``y``)."""
    with PerformativeTeacher(model[-1], lr=0.5, **kw) as t:
        t.set_targets(y if arm is None else arm)
        F.cross_entropy(model(x), y).backward()
    out = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    return out


def _observe(head: nn.Module) -> list:
    """The inputs the head's forward receives, after the hooks registered before this one
    (so, registered after the teacher, the taught features)."""
    seen: list = []
    head.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    return seen


def _grads(model: nn.Module) -> dict:
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def _assert_same(a: dict, b: dict, atol: float = 1e-12) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=k)


# ------------------------------------------------------------ the cap in float32
@pytest.mark.parametrize("eps", [1e-4, 1e-3, 2e-3, 1e-2, 0.1, 0.3])
@pytest.mark.parametrize("dim", [16, 128])  # 128: the span-coordinate path
def test_cap_holds_in_float32(eps, dim):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(256, dim, generator=g)
    w = torch.randn(10, dim, generator=g)
    y = torch.randint(0, 10, (256,), generator=g)
    out = greedy_teach(z, y, w, None, 0.5, eps=eps)
    chord = tf.chord(out.z.double(), z.double())
    # up to float32 rounding of the returned vectors (a few units of 1.2e-7)
    slack = 2 * torch.finfo(torch.float32).eps
    assert float(chord.max()) <= eps + slack
    assert float(chord.max()) >= 0.5 * eps  # the solver does use the cap


@pytest.mark.parametrize("eps", [1e-4, 1e-3, 0.1])
def test_cap_holds_in_float32_through_the_teacher(eps):
    model = _model(dtype=torch.float32)
    x, y = _batch(256, dtype=torch.float32)
    z = model[:2](x).detach()
    with PerformativeTeacher(model[-1], lr=0.5, eps=eps) as t:
        seen = _observe(model[-1])
        t.set_targets(y)
        model(x)
    chord = tf.chord(seen[0].double(), z.double())
    assert float(chord.max()) <= eps + 2 * torch.finfo(torch.float32).eps
    assert t.stats["angle_max"] <= tf.chord_to_angle(eps) + 4 * torch.finfo(torch.float32).eps


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cap_in_half_precision_within_its_resolution(dtype):
    """Half precision: the solve runs in float32, the result is rounded to the model's
    dtype; the cap holds up to that rounding (one unit of the dtype's machine eps)."""
    model = _model(dtype=dtype)
    x, y = _batch(256, dtype=dtype)
    z = model[:2](x).detach()
    for eps in (0.005, 0.02, 0.1):
        with PerformativeTeacher(model[-1], lr=0.5, eps=eps) as t:
            seen = _observe(model[-1])
            t.set_targets(y)
            model(x)
        chord = tf.chord(seen[-1].double(), z.double())
        assert float(chord.max()) <= eps + torch.finfo(dtype).eps
        assert float(chord.max()) >= 0.5 * eps


@settings(max_examples=40, deadline=None)
@given(
    eps=st.floats(1e-4, 2.0),
    dim=st.integers(2, 40),
    seed=st.integers(0, 2**31 - 1),
)
def test_cap_property_float32(eps, dim, seed):
    g = torch.Generator().manual_seed(seed)
    scale = 10 ** float(torch.empty(()).uniform_(-3, 3, generator=g))
    z = torch.randn(32, dim, generator=g) * scale
    w = torch.randn(5, dim, generator=g)
    y = torch.randint(0, 5, (32,), generator=g)
    out = greedy_teach(z, y, w, torch.randn(5, generator=g), 0.3, eps=eps)
    chord = tf.chord(out.z.double(), z.double())
    assert float(chord.max()) <= eps + 4 * torch.finfo(torch.float32).eps
    ratio = out.z.double().norm(dim=-1) / z.double().norm(dim=-1)
    assert float((ratio - 1).abs().max()) <= 1e-5


# ------------------------------------------------------------ label dtypes
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32])
@pytest.mark.parametrize("policy", ["greedy", "random"])
def test_any_integer_label_dtype_equals_int64(dtype, policy):
    x, y = _batch()
    ref = _taught_grads(_model(), x, y, policy=policy, seed=3)
    got = _taught_grads(_model(), x, y, y.to(dtype), policy=policy, seed=3)
    _assert_same(ref, got, atol=0)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32])
def test_functional_greedy_teach_takes_any_integer_dtype(dtype):
    z, y = _batch()
    w = torch.randn(4, 6, dtype=DT)
    ref = greedy_teach(z, y, w, None, 0.5)
    got = greedy_teach(z, y.to(dtype), w, None, 0.5)
    assert torch.equal(ref.z, got.z) and torch.equal(ref.after, got.after)


# ------------------------------------------------------------ torch.func
def _functional_setup():
    model = _model()
    x, y = _batch()
    # inside a torch.func transform the solver's early exit is off (no host read-back):
    # the eager reference takes the same fixed number of steps
    ref = _taught_grads(_model(), x, y, solve_tol=None)
    params = {k: p.detach() for k, p in model.named_parameters()}

    def loss(p: dict) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, p, (x,)), y)

    return model, y, ref, params, loss


def test_torch_func_grad_equals_eager_autograd():
    model, y, ref, params, loss = _functional_setup()
    with PerformativeTeacher(model[-1], lr=0.5) as t:
        t.set_targets(y)
        got = grad(loss)(params)
    _assert_same(ref, got)


def test_torch_func_jacrev_equals_eager_autograd():
    model, y, ref, params, loss = _functional_setup()
    with PerformativeTeacher(model[-1], lr=0.5) as t:
        t.set_targets(y)
        got = jacrev(loss)(params)
    _assert_same(ref, got)


def test_torch_func_vmap_over_an_ensemble_equals_eager_autograd():
    model, y, ref, params, loss = _functional_setup()
    other = _model(seed=5)
    ref_other = _taught_grads(other, *_batch()[:1], y, solve_tol=None)
    stacked = {
        k: torch.stack([params[k], dict(other.named_parameters())[k].detach()]) for k in params
    }
    with PerformativeTeacher(model[-1], lr=0.5) as t, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # vmap's slow-path notes
        t.set_targets(y)
        got = vmap(grad(loss))(stacked)
    _assert_same(ref, {k: v[0] for k, v in got.items()}, atol=1e-10)
    _assert_same(ref_other, {k: v[1] for k, v in got.items()}, atol=1e-10)


@pytest.mark.parametrize("target", ["ema", "heldout"])
def test_torch_func_grad_with_an_informed_target_equals_eager_autograd(target):
    """Inside a transform an informed target is used, not advanced: its state after equals
    its state before, and the gradients equal eager autograd's first step."""
    model, y, _, params, loss = _functional_setup()
    xh, yh = _batch(40, seed=9)

    def kw(m: nn.Module) -> dict:
        extra = {"heldout": (xh, yh), "heldout_encoder": m[:2], "heldout_batch": 16}
        return {"target": target, "solve_tol": None, **(extra if target == "heldout" else {})}

    ref_model = _model()
    ref = _taught_grads(ref_model, _batch()[0], y, **kw(ref_model))
    with PerformativeTeacher(model[-1], lr=0.5, **kw(model)) as t:
        before = t.state_dict()["target"]
        t.set_targets(y)
        got = grad(loss)(params)
        after = t.state_dict()["target"]
    _assert_same(ref, got)
    assert repr(before) == repr(after)


def test_torch_func_taught_grad_differs_from_untaught():
    model, y, ref, params, loss = _functional_setup()
    with PerformativeTeacher(model[-1], lr=0.5) as t:
        with t.suspended():
            plain = grad(loss)(params)
    assert not torch.allclose(plain["2.weight"], ref["2.weight"])


# ------------------------------------------------------------ copies
def _taught_with_adam(compile: bool = False):
    model = _model(dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    teacher = PerformativeTeacher(model[-1], optimizer=opt, compile=compile)
    x, y = _batch(dtype=torch.float32)
    teacher.set_targets(y)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    return model, opt, teacher, x, y


def _holds(obj: object, kind: type) -> bool:
    """Whether ``obj``'s object graph (module dicts, hook dicts) reaches an instance of kind."""
    leaves = (torch.Tensor, str, bytes, int, float, type, types.ModuleType, types.FunctionType)
    seen, todo = set(), [obj]
    while todo:
        o = todo.pop()
        if id(o) in seen or isinstance(o, leaves):  # instances only, not classes or globals
            continue
        seen.add(id(o))
        if isinstance(o, kind):
            return True
        todo.extend(gc.get_referents(o))
    return False


@pytest.mark.parametrize("how", ["deepcopy", "AveragedModel", "timm ModelEmaV3"])
def test_copies_carry_an_inert_hook_and_no_teacher(how):
    model, opt, teacher, x, y = _taught_with_adam()
    if how == "deepcopy":
        twin = copy.deepcopy(model)
    elif how == "AveragedModel":
        twin = torch.optim.swa_utils.AveragedModel(model).module
    else:
        timm_utils = pytest.importorskip("timm.utils")
        twin = timm_utils.ModelEmaV3(model, decay=0.9).module
    assert [type(h) for h in twin[-1]._forward_pre_hooks.values()] == [_InertHook]
    assert not _holds(twin, PerformativeTeacher)
    assert not _holds(twin, torch.optim.Optimizer)
    twin.train()
    out = twin(x)  # a train-mode forward with grad: passes through, no targets needed
    torch.testing.assert_close(out, F.linear(twin[:2](x), twin[-1].weight, twin[-1].bias))
    # the original still teaches
    teacher.set_targets(y)
    model(x)
    assert teacher.steps_taught == 2


@pytest.mark.parametrize("compile", [False, True])
def test_torch_save_of_a_taught_model(compile):
    model, opt, teacher, x, y = _taught_with_adam(compile=compile)
    buf, plain = io.BytesIO(), io.BytesIO()
    torch.save(model, buf)
    torch.save(model.state_dict(), plain)
    # no teacher, no optimizer (Adam state would double it) in the pickle
    assert buf.tell() < plain.tell() + 4096
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    new = PerformativeTeacher(loaded[-1], lr=0.1)
    new.set_targets(y)
    F.cross_entropy(loaded(x), y).backward()
    assert new.steps_taught == 1 and new.stats["angle_max"] > 0
    new.remove()


def test_a_teacher_cannot_itself_be_pickled_or_copied():
    model, opt, teacher, x, y = _taught_with_adam()
    with pytest.raises(TypeError, match="state_dict"):
        pickle.dumps(teacher)
    with pytest.raises(TypeError, match="state_dict"):
        copy.deepcopy(teacher)


def test_torchscript_gets_a_clear_error_and_a_way_out():
    model, opt, teacher, x, y = _taught_with_adam()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with pytest.raises(TorchScriptError, match="teacher.remove"):
            torch.jit.script(model)
        ema = copy.deepcopy(model)
        with pytest.raises(TorchScriptError, match="remove_inert_hooks"):
            torch.jit.script(ema)
        assert remove_inert_hooks(ema) == 1
        scripted = torch.jit.script(ema.eval())
        torch.testing.assert_close(scripted(x), ema(x))


# ------------------------------------------------------------ lifetime
def test_an_unreferenced_teacher_stops_teaching_and_frees_the_head():
    model = _model()
    x, y = _batch()
    teacher = PerformativeTeacher(model[-1], lr=0.5)
    teacher.set_targets(y)
    del teacher
    gc.collect()
    assert len(model[-1]._forward_pre_hooks) == 0
    model(x).sum().backward()  # no MissingTargetsError: nothing is attached
    again = PerformativeTeacher(model[-1], lr=0.5)  # and a new one may attach
    again.set_targets(y)
    model(x)
    assert again.steps_taught == 1
    again.remove()


# ------------------------------------------------------------ activation checkpointing
@pytest.mark.parametrize("reentrant", [False, True])
@pytest.mark.parametrize("policy", ["greedy", "random", "none"])
def test_activation_checkpointing_gives_the_plain_taught_step(reentrant, policy):
    x, y = _batch()
    ref_model = _model()
    with PerformativeTeacher(ref_model[-1], lr=0.5, policy=policy, seed=1) as t:
        t.set_targets(y)
        ref_loss = F.cross_entropy(ref_model(x), y)
        ref_loss.backward()
    model = _model()
    with PerformativeTeacher(model[-1], lr=0.5, policy=policy, seed=1) as t:
        t.set_targets(y)
        inp = x.clone().requires_grad_(True)  # reentrant checkpoints need an input with grad
        loss = F.cross_entropy(checkpoint(model, inp, use_reentrant=reentrant), y)
        loss.backward()
        assert t.steps_taught == 1
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-12)
    _assert_same(_grads(ref_model), _grads(model))


def test_checkpointing_the_head_alone_with_two_calls():
    """A multi-crop model whose head sits inside a checkpoint and runs twice per step."""
    x, y = _batch()
    x2 = x.flip(0)

    def run(model, ckpt):
        with PerformativeTeacher(model[-1], lr=0.5) as t:
            t.set_targets([y, y.flip(0)])
            feats = [model[:2](v) for v in (x, x2)]
            head = model[-1]
            outs = [
                checkpoint(head, f, use_reentrant=False) if ckpt else head(f) for f in feats
            ]
            sum(F.cross_entropy(o, t_) for o, t_ in zip(outs, (y, y.flip(0)))).backward()
        return _grads(model)

    _assert_same(run(_model(), False), run(_model(), True))


# ------------------------------------------------------------ parametrized heads
def _parametrize(head: nn.Linear, kind: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the old API's deprecation notes
        if kind == "weight_norm":
            nn.utils.parametrizations.weight_norm(head)
        elif kind == "spectral_norm":
            nn.utils.parametrizations.spectral_norm(head)
        elif kind == "old weight_norm":
            nn.utils.weight_norm(head)
        else:
            nn.utils.spectral_norm(head)


KINDS = ["weight_norm", "spectral_norm", "old weight_norm", "old spectral_norm"]


@pytest.mark.parametrize("kind", KINDS)
def test_parametrized_heads_with_optimizer(kind):
    x, y = _batch()
    states = {}
    for policy in ("none", "greedy", None):
        model = _model()
        _parametrize(model[-1], kind)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        teacher = None if policy is None else PerformativeTeacher(
            model[-1], optimizer=opt, policy=policy
        )
        if teacher is not None:
            teacher.set_targets(y)
        F.cross_entropy(model(x), y).backward()
        states[policy] = {k: v.clone() for k, v in model.state_dict().items()}
        if teacher is not None:
            assert teacher._rate() == 0.5
            teacher.remove()
    # the buffers (spectral norm's power iteration) after a taught forward are those of a
    # plain forward: the teacher reads the weight without a power iteration of its own
    for k in states[None]:
        assert torch.equal(states[None][k], states["none"][k]), k
        assert torch.equal(states[None][k], states["greedy"][k]), k


@pytest.mark.parametrize("kind", ["weight_norm", "old weight_norm"])
def test_weight_norm_head_is_taught_with_its_effective_weight(kind):
    x, y = _batch()
    model = _model()
    _parametrize(model[-1], kind)
    plain = _model()
    with torch.no_grad():
        plain[-1].weight.copy_(model[-1].weight)
    ref = _taught_grads(plain, x, y)
    got = _taught_grads(model, x, y)
    for k in ("0.weight", "0.bias", "2.bias"):
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-12)


# ------------------------------------------------------------ several head calls
class _TwoView(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.Tanh())
        self.fc = nn.Linear(16, 4)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(a)) + self.fc(self.body(b))


def test_two_head_calls_per_step():
    x, y = _batch()
    x2 = _batch(seed=7)[0]

    def run(arm):
        torch.manual_seed(0)
        model = _TwoView().to(DT)
        with PerformativeTeacher(model.fc, lr=0.5) as t:
            arm(t)
            F.cross_entropy(model(x, x2), y).backward()
            assert t.steps_taught == 2
            with pytest.raises(MissingTargetsError, match="calls="):
                model.fc(model.body(x))  # a third call was not armed
        return _grads(model)

    a = run(lambda t: t.set_targets(y, calls=2))
    b = run(lambda t: t.set_targets([y, y]))
    _assert_same(a, b, atol=0)
    # each call is taught on its own features: the same as teaching them one at a time
    torch.manual_seed(0)
    model = _TwoView().to(DT)
    with PerformativeTeacher(model.fc, lr=0.5) as t:
        t.set_targets(y)
        first = model.fc(model.body(x))
        t.set_targets(y)
        second = model.fc(model.body(x2))
        F.cross_entropy(first + second, y).backward()
    _assert_same(a, _grads(model), atol=0)


def test_calls_needs_a_single_tensor_and_a_positive_int():
    t = PerformativeTeacher(nn.Linear(3, 2), lr=0.1)
    with pytest.raises(ValueError, match="calls"):
        t.set_targets([torch.tensor([0])], calls=2)
    with pytest.raises(ValueError, match="calls"):
        t.set_targets(torch.tensor([0]), calls=0)
    with pytest.raises(TypeError, match="calls"):
        t.set_targets(torch.tensor([0]), calls=1.5)  # type: ignore[arg-type]
    t.remove()


def test_suspend_teachers_for_forwards_that_are_not_training_steps():
    model = _model()
    x, y = _batch()
    t = PerformativeTeacher(model[-1], lr=0.5)
    with suspend_teachers(model) as found:
        assert found == [t] and not t.enabled
        out = model(x)  # no targets needed
    assert t.enabled
    torch.testing.assert_close(out, F.linear(model[:2](x), model[-1].weight, model[-1].bias))
    t.set_targets(y)
    model(x)
    assert t.steps_taught == 1
    t.remove()


# ------------------------------------------------------------ ignore_index
@pytest.mark.parametrize("policy", ["greedy", "random"])
def test_ignored_rows_pass_through_and_the_rest_are_taught_as_if_absent(policy):
    x, y = _batch()
    drop = torch.zeros(len(y), dtype=torch.bool)
    drop[[2, 5, 11]] = True
    y_ign = y.masked_fill(drop, -100)
    model = _model()
    z = model[:2](x).detach()
    with PerformativeTeacher(model[-1], lr=0.5, policy=policy, seed=2) as t:
        seen = _observe(model[-1])
        t.set_targets(y_ign)
        model(x)
        stats = t.stats
    assert torch.equal(seen[0][drop], z[drop])  # bit for bit
    assert stats["n_ignored"] == 3 and stats["n_skipped"] == 0 and stats["n_rows"] == len(y)
    if policy == "greedy":  # the random policy draws per row; the greedy one must match exactly
        ref = greedy_teach(z[~drop], y[~drop], model[-1].weight.detach(),
                           model[-1].bias.detach(), 0.5, solve_tol=PGD_TOL)
        torch.testing.assert_close(seen[0][~drop], ref.z, rtol=0, atol=1e-12)


def test_ignore_index_on_token_targets_and_a_custom_value():
    torch.manual_seed(0)
    head = nn.Linear(8, 5).to(DT)
    z = torch.randn(3, 7, 8, dtype=DT)
    y = torch.randint(0, 5, (3, 7))
    y[0, 5:] = 4  # padding label chosen by the user
    y[2, 3:] = 4
    with PerformativeTeacher(head, lr=0.5, ignore_index=4) as t:
        seen = _observe(head)
        t.set_targets(y)
        logits = head(z)
    pad = y == 4
    assert torch.equal(seen[0][pad], z[pad])
    assert not torch.equal(seen[0][~pad], z[~pad])
    assert t.stats["n_ignored"] == int(pad.sum())
    F.cross_entropy(logits.reshape(-1, 5), y.reshape(-1), ignore_index=4)  # the user's loss


def test_a_batch_of_only_ignored_rows():
    head = nn.Linear(4, 3)
    z = torch.randn(5, 4)
    with PerformativeTeacher(head, lr=0.5) as t:
        t.set_targets(torch.full((5,), -100))
        out = head(z)
    torch.testing.assert_close(out, F.linear(z, head.weight, head.bias), rtol=0, atol=0)
    assert t.stats["n_ignored"] == 5
    assert all(np.isfinite(v) for v in t.stats.values())


# ------------------------------------------------------------ smaller items
def test_overflowing_rows_are_skipped_and_counted():
    head = nn.Linear(4, 3)
    z = torch.randn(6, 4)
    z[1] = 3e19  # finite in float32, its squared norm is not
    z[4] = 1e38
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    with PerformativeTeacher(head, lr=0.5) as t:
        seen = _observe(head)
        t.set_targets(y)
        head(z)
    assert t.stats["n_skipped"] == 2
    assert all(np.isfinite(v) for v in t.stats.values()), t.stats
    assert torch.equal(seen[0][[1, 4]], z[[1, 4]])


def test_numpy_numbers_are_accepted():
    t = PerformativeTeacher(
        nn.Linear(4, 3),
        lr=np.float32(0.1),
        eps=np.float64(0.05),
        lookahead_steps=np.int64(3),
        solve_steps=np.int32(4),
        solve_lr=np.float32(0.01),
        lookahead_lr=np.float16(0.2),
        seed=np.int64(7),
        ignore_index=np.int16(-1),
    )
    assert (t.lookahead_steps, t.solve_steps, t.seed, t.ignore_index) == (3, 4, 7, -1)
    assert isinstance(t.eps, float) and t.eps == 0.05
    t.remove()


@pytest.mark.parametrize(
    "kw, exc, fragment",
    [
        ({"lr": float("inf")}, ValueError, "lr"),
        ({"lr": 0.1, "lookahead_lr": float("inf")}, ValueError, "lookahead_lr"),
        ({"lr": 0.1, "solve_lr": float("inf")}, ValueError, "solve_lr"),
        ({"lr": 0.1, "ignore_index": 1.0}, TypeError, "ignore_index"),
        ({"lr": 0.1, "ignore_index": True}, TypeError, "ignore_index"),
        ({"lr": 0.1, "seed": 1.0}, TypeError, "seed"),
    ],
)
def test_non_finite_and_wrongly_typed_hyperparameters(kw, exc, fragment):
    with pytest.raises(exc, match=fragment):
        PerformativeTeacher(nn.Linear(4, 3), **kw)


def test_a_callable_lr_returning_inf_is_refused_at_the_forward():
    head = nn.Linear(4, 3)
    with PerformativeTeacher(head, lr=lambda: float("inf")) as t:
        t.set_targets(torch.tensor([0, 1]))
        with pytest.raises(ValueError, match="finite"):
            head(torch.randn(2, 4))


@pytest.mark.parametrize(
    "head, fragment",
    [(nn.Linear(1, 3), "in_features=1"), (nn.Linear(4, 1), "out_features=1")],
)
def test_one_wide_heads_are_refused_at_construction(head, fragment):
    with pytest.raises(HeadTypeError, match=fragment):
        PerformativeTeacher(head, lr=0.1)


def test_tuple_heads_get_a_message_naming_both():
    heads = (nn.Linear(4, 3), nn.Linear(4, 3))
    with pytest.raises(HeadTypeError, match=r"heads\[0\].*heads\[1\]"):
        PerformativeTeacher(heads, lr=0.1)  # type: ignore[arg-type]


def test_timm_distilled_classifier_tuple():
    timm = pytest.importorskip("timm")
    model = timm.create_model(
        "deit_tiny_distilled_patch16_224", pretrained=False, num_classes=3,
        img_size=32, patch_size=16, depth=1,
    )
    heads = model.get_classifier()
    assert isinstance(heads, tuple) and len(heads) == 2
    with pytest.raises(HeadTypeError, match="one teacher to each"):
        PerformativeTeacher(heads, lr=0.1)  # type: ignore[arg-type]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    teachers = [PerformativeTeacher(h, optimizer=opt) for h in heads]
    y = torch.tensor([0, 2])
    for t in teachers:
        t.set_targets(y)
    model.train()
    out = model(torch.randn(2, 3, 32, 32))
    out.sum().backward()
    assert [t.steps_taught for t in teachers] == [1, 1]
    for t in teachers:
        t.remove()


@pytest.mark.parametrize(
    "rng, fragment",
    [
        ("cpu", "rng"),
        (("cpu", torch.zeros(3, dtype=torch.uint8)), "generator state"),
        (("cpu", torch.zeros(5056, dtype=torch.int64)), "uint8"),
        ((1, torch.zeros(5056, dtype=torch.uint8)), "device type"),
    ],
)
def test_corrupt_states_are_refused_at_load(rng, fragment):
    t = PerformativeTeacher(nn.Linear(4, 3), lr=0.1, policy="random", seed=0)
    state = t.state_dict()
    state["rng"] = rng
    with pytest.raises(ValueError, match=fragment):
        t.load_state_dict(state)
    for key, bad in (("steps_taught", -1), ("enabled", "yes"), ("seed", 1.5)):
        state = t.state_dict()
        state[key] = bad
        with pytest.raises(ValueError, match=key):
            t.load_state_dict(state)
    t.remove()


def test_teacher_error_types():
    assert issubclass(TorchScriptError, TeacherError) and issubclass(TorchScriptError,
                                                                      AttributeError)


def test_mixup_hypergradient_step_with_a_performative_teacher_on_the_model():
    from torchdht import MixupTeacher

    x, y = _batch(dtype=torch.float32)
    val = _batch(seed=9, dtype=torch.float32)

    def run(with_teacher: bool) -> dict:
        model = _model(dtype=torch.float32)
        teacher = PerformativeTeacher(model[-1], lr=0.5) if with_teacher else None
        mixup = MixupTeacher(4, "unroll", total_steps=10, learner_lr=0.1, seed=0)
        xm, ym = mixup(x, y)
        stats = mixup.hypergradient_step(model, F.cross_entropy, val)
        if teacher is not None:  # still armed for the real step, which it teaches
            assert teacher.enabled
            teacher.set_targets(ym)
            F.cross_entropy(model(xm), ym).backward()
            assert teacher.steps_taught == 1
            teacher.remove()
        return stats

    assert run(True) == run(False)


@pytest.mark.parametrize("policy", ["greedy", "random"])
@pytest.mark.parametrize("targets", ["hard", "ignored", "soft"])
def test_stats_report_the_loss_on_the_original_and_the_taught_features(policy, targets):
    model = _model()
    x, y = _batch()
    if targets == "ignored":
        y = y.clone()
        y[[1, 4]] = -100
    arm = torch.softmax(torch.randn(len(y), 4, dtype=DT), -1) if targets == "soft" else y
    with PerformativeTeacher(model[-1], lr=0.5, policy=policy, seed=0) as t:
        seen = _observe(model[-1])
        t.set_targets(arm)
        logits = model(x)
        z = model[:2](x).detach()
        untaught = F.cross_entropy(F.linear(z, model[-1].weight, model[-1].bias), arm)
        taught = F.cross_entropy(logits, arm)
        torch.testing.assert_close(seen[0] @ model[-1].weight.T + model[-1].bias, logits)
        assert t.stats["loss_untaught"] == pytest.approx(float(untaught), rel=1e-12)
        assert t.stats["loss_taught"] == pytest.approx(float(taught), rel=1e-12)
        assert t.stats["loss_taught"] != pytest.approx(t.stats["loss_untaught"], rel=1e-6)


class _LabelledModel(nn.Module):
    """A model called the Hugging Face way: ``model(x, labels=y)``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _model()

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)


def test_arming_from_the_models_call_equals_set_targets():
    batches = [_batch(seed=s) for s in range(3)]

    def train(arm_from: bool) -> dict:
        model = _LabelledModel()
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        teacher = PerformativeTeacher(model.net[-1], optimizer=opt)
        if arm_from:
            teacher.arm_from(model, key="labels")
        for x, y in batches:
            if not arm_from:
                teacher.set_targets(y)
            loss = F.cross_entropy(model(x, labels=y), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert teacher.steps_taught == 3
        model.eval()
        model(batches[0][0], labels=batches[0][1])  # eval: nothing armed, nothing taught
        assert teacher.steps_taught == 3
        teacher.remove()
        assert len(model._forward_pre_hooks) == 0
        return {k: v.clone() for k, v in model.state_dict().items()}

    a, b = train(True), train(False)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_arm_from_a_positional_argument_and_a_forward_without_labels():
    model = _LabelledModel()
    x, y = _batch()
    with PerformativeTeacher(model.net[-1], lr=0.5) as t:
        t.arm_from(model, key=1)
        model(x, y)
        assert t.steps_taught == 1
        with pytest.raises(MissingTargetsError):
            model(x)  # labels absent: nothing armed, and the training forward says so
    with PerformativeTeacher(model.net[-1], lr=0.5) as t:
        with pytest.raises(TypeError, match="key"):
            t.arm_from(model, key=1.0)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="nn.Module"):
            t.arm_from("model")  # type: ignore[arg-type]


def test_arm_from_copies_inert_and_dies_with_the_teacher():
    model = _LabelledModel()
    x, y = _batch()
    t = PerformativeTeacher(model.net[-1], lr=0.5)
    t.arm_from(model)
    twin = copy.deepcopy(model)
    assert [type(h) for h in twin._forward_pre_hooks.values()] == [_InertHook]
    twin(x, labels=y)  # neither arms nor teaches
    del t
    gc.collect()
    assert len(model._forward_pre_hooks) == 0
