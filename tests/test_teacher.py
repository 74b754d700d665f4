"""PerformativeTeacher: the hook, its state, its bad inputs."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchdht
from torchdht import MissingTargetsError, PerformativeTeacher, TargetsError, TeacherError
from torchdht.functional import angle, chord_to_angle


class Net(nn.Module):
    def __init__(self, d_in=6, d=16, c=4):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d_in, d), nn.BatchNorm1d(d), nn.ReLU())
        self.head = nn.Linear(d, c)

    def forward(self, x):
        return self.head(self.body(x))


def _batch(n=32, d_in=6, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d_in, generator=g), torch.randint(0, c, (n,), generator=g)


def _capture_head_input(head):
    seen = {}

    def hook(mod, args, out):
        seen["z"] = args[0]

    return seen, head.register_forward_hook(hook)


def test_eval_mode_and_no_grad_are_bit_identical_to_no_teacher():
    net = Net()
    x, y = _batch()
    net.eval()
    ref = net(x)
    with PerformativeTeacher(net.head, lr=0.1) as t:
        assert torch.equal(net(x), ref)  # eval: no targets needed
        net.train()
        with torch.no_grad():
            ref_ng = copy.deepcopy(net)(x)
            assert torch.equal(net(x), ref_ng)
        t.enabled = False
        assert torch.equal(net(x), copy.deepcopy(net)(x))


def test_policy_none_is_bit_identical_and_still_needs_targets():
    net = Net()
    ref_net = copy.deepcopy(net)
    x, y = _batch()
    with PerformativeTeacher(net.head, lr=0.1, policy="none") as t:
        with pytest.raises(MissingTargetsError):
            net(x)
        t.set_targets(y)
        out = net(x)
    assert torch.equal(out, ref_net(x))


@pytest.mark.parametrize("policy", ["greedy", "random"])
def test_head_params_grad_optimizer_state_and_bn_stats_untouched(policy):
    torch.manual_seed(1)
    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x, y = _batch()
    F.cross_entropy(net(x), y).backward()  # give .grad and momentum buffers real values
    opt.step()
    F.cross_entropy(net(x), y).backward()
    snap_params = {k: v.detach().clone() for k, v in net.named_parameters()}
    snap_grads = {k: v.grad.clone() for k, v in net.named_parameters()}
    snap_state = copy.deepcopy(opt.state_dict())
    ref = copy.deepcopy(net)
    with PerformativeTeacher(net.head, optimizer=opt, policy=policy, seed=0) as t:
        t.set_targets(y)
        net(x)
    ref(x)
    for k, v in net.named_parameters():
        assert torch.equal(v, snap_params[k]), k
        assert torch.equal(v.grad, snap_grads[k]), k
    after = opt.state_dict()
    for pid, st in snap_state["state"].items():
        assert torch.equal(after["state"][pid]["momentum_buffer"], st["momentum_buffer"])
    assert after["param_groups"] == snap_state["param_groups"]
    for k, v in net.state_dict().items():
        assert torch.equal(v, ref.state_dict()[k]), k  # BatchNorm running stats too


@pytest.mark.parametrize("policy", ["greedy", "random"])
def test_head_sees_features_on_the_cap_and_encoder_gets_gradients(policy):
    net = Net()
    x, y = _batch()
    seen, h = _capture_head_input(net.head)
    z = net.body(x).detach()
    with PerformativeTeacher(net.head, lr=0.5, policy=policy, eps=0.2, seed=0) as t:
        t.set_targets(y)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        stats = t.stats
    h.remove()
    zt = seen["z"].detach()
    torch.testing.assert_close(zt.norm(dim=-1), z.norm(dim=-1))
    moved = angle(zt, z)
    assert float(moved.max()) <= chord_to_angle(0.2) + 1e-5
    assert float(moved.max()) > 1e-4  # it did move
    assert math.isclose(stats["angle_max"], float(moved.max()), rel_tol=1e-4, abs_tol=1e-6)
    assert stats["n_rows"] == 32 and stats["n_skipped"] == 0
    if policy == "greedy":
        assert stats["objective_after"] <= stats["objective_before"]
    for name, p in net.body.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_straight_through_gradient_is_dl_dz_at_z_tilde():
    net = Net()
    x, y = _batch()
    net.eval()  # freeze BN so the body is a fixed function of x
    z = net.body(x).detach().requires_grad_(True)
    net.train()
    net.body.eval()
    seen, h = _capture_head_input(net.head)
    with PerformativeTeacher(net.head, lr=0.5, seed=0) as t:
        t.set_targets(y)
        out = net.head(z)
        (gz,) = torch.autograd.grad(F.cross_entropy(out, y), z)
    h.remove()
    zt = seen["z"].detach().requires_grad_(True)
    (gzt,) = torch.autograd.grad(F.cross_entropy(net.head(zt), y), zt)
    torch.testing.assert_close(gz, gzt)


def test_user_tensors_are_not_modified():
    net = Net()
    x, y = _batch()
    z = net.body(x).detach()
    z_copy, y_copy = z.clone(), y.clone()
    with PerformativeTeacher(net.head, lr=0.5, seed=0) as t:
        t.set_targets(y)
        net.head(z)
    assert torch.equal(z, z_copy) and torch.equal(y, y_copy)


def test_eta_follows_the_scheduler_and_the_right_group():
    net = Net()
    opt = torch.optim.SGD(
        [{"params": net.body.parameters(), "lr": 9.0}, {"params": net.head.parameters(), "lr": 0.1}]
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x, y = _batch()
    seen = []
    with PerformativeTeacher(net.head, optimizer=opt) as t:
        for _ in range(3):
            t.set_targets(y)
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            seen.append(t.stats["eta"])
    assert seen == pytest.approx([0.1, 0.05, 0.025])


def test_callable_lr_and_lookahead_lr_are_used():
    net = Net()
    x, y = _batch()
    calls = []

    def lr():
        calls.append(1)
        return 0.3

    with PerformativeTeacher(net.head, lr=lr) as t:
        t.set_targets(y)
        net(x)
        assert calls and t.stats["eta"] == pytest.approx(0.3)
        dist_default = t.stats["theta_dist"]
    with PerformativeTeacher(net.head, lr=0.3, lookahead_lr=0.6) as t:
        t.set_targets(y)
        net(x)
        assert t.stats["theta_dist"] > 1.5 * dist_default


def _hand_lookahead_grad(z, y, w, b, lr, k):
    z = z.double()
    w, b = w.double(), b.double()
    total = torch.zeros_like(z)
    for _ in range(k):
        zz = z.clone().requires_grad_(True)
        ww, bb = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
        loss = F.cross_entropy(zz @ ww.T + bb, y)
        gz, gw, gb = torch.autograd.grad(loss, (zz, ww, bb))
        total += gz
        w, b = w - lr * gw, b - lr * gb
    return total


@pytest.mark.parametrize("policy", ["greedy", "random"])
def test_lookahead_encoder_grad_adds_exactly_the_lookahead_feature_gradients(policy):
    net = Net()
    x, y = _batch()
    z0 = net.body(x).detach()

    def grad_at_z(flag):
        z = z0.clone().requires_grad_(True)
        with PerformativeTeacher(
            net.head, lr=0.2, policy=policy, seed=3, lookahead_encoder_grad=flag
        ) as t:
            t.set_targets(y)
            (g,) = torch.autograd.grad(F.cross_entropy(net.head(z), y), z)
        return g

    extra = grad_at_z(True) - grad_at_z(False)
    hand = _hand_lookahead_grad(z0, y, net.head.weight.detach(), net.head.bias.detach(), 0.2, 5)
    torch.testing.assert_close(extra.double(), hand, rtol=1e-4, atol=1e-7)


def test_lookahead_encoder_grad_survives_zero_grad_order_and_reaches_encoder():
    net = Net()
    ref = copy.deepcopy(net)
    x, y = _batch()
    opt = torch.optim.SGD(net.parameters(), lr=0.2)
    with PerformativeTeacher(net.head, optimizer=opt, lookahead_encoder_grad=True) as t:
        t.set_targets(y)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()  # after the forward, as many loops do
        loss.backward()
    with PerformativeTeacher(ref.head, lr=0.2) as t:
        t.set_targets(y)
        F.cross_entropy(ref(x), y).backward()
    diff = (net.body[0].weight.grad - ref.body[0].weight.grad).abs().max()
    assert diff > 1e-4
    # the head's gradient is the same: the extra term only reaches the encoder
    torch.testing.assert_close(net.head.weight.grad, ref.head.weight.grad)


def test_grad_scaler_scales_the_extra_gradient():
    net = Net()
    x, y = _batch()
    z0 = net.body(x).detach()

    def extra(scaler):
        gs = []
        for flag in (True, False):
            z = z0.clone().requires_grad_(True)
            with PerformativeTeacher(
                net.head, lr=0.2, lookahead_encoder_grad=flag, grad_scaler=scaler
            ) as t:
                t.set_targets(y)
                loss = F.cross_entropy(net.head(z), y)
                if scaler is not None:
                    loss = scaler.scale(loss)
                gs.append(torch.autograd.grad(loss, z)[0])
        return gs[0] - gs[1]

    plain = extra(None)
    # a real extra gradient: 8 * 0 == 0 would pass the comparison below for nothing
    assert float(plain.abs().max()) > 1e-3
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    torch.testing.assert_close(extra(scaler), 8.0 * plain, rtol=1e-4, atol=1e-6)


def test_bad_rows_pass_through_and_are_counted():
    net = Net()
    x, y = _batch(8)
    z = net.body(x).detach()
    z[1] = float("nan")
    z[3] = 0.0
    z[5, 2] = float("inf")
    seen, h = _capture_head_input(net.head)
    for policy in ("greedy", "random"):
        with PerformativeTeacher(
            net.head, lr=0.5, policy=policy, seed=0, lookahead_encoder_grad=True
        ) as t:
            t.set_targets(y)
            zz = z.clone().requires_grad_(True)
            out = net.head(zz)
            stats = t.stats
            loss = out[[0, 2, 4, 6, 7]].sum()
            (g,) = torch.autograd.grad(loss, zz)
        zt = seen["z"].detach()
        for j in (1, 3, 5):
            assert torch.equal(zt[j].isnan(), z[j].isnan())
            assert torch.equal(torch.nan_to_num(zt[j]), torch.nan_to_num(z[j]))
        good = [0, 2, 4, 6, 7]
        assert torch.isfinite(zt[good]).all() and float(angle(zt[good], z[good]).max()) > 0
        assert stats["n_skipped"] == 3 and all(math.isfinite(v) for v in stats.values())
        assert torch.isfinite(g).all() and torch.equal(g[[1, 3, 5]], torch.zeros(3, z.shape[1]))
    h.remove()


def test_batch_of_one():
    net = Net()
    net.body.eval()
    x, y = _batch(1)
    with PerformativeTeacher(net.head, lr=0.1) as t:
        t.set_targets(y)
        F.cross_entropy(net(x), y).backward()
        assert t.stats["n_rows"] == 1
    assert torch.isfinite(net.body[0].weight.grad).all()


def test_soft_targets_and_float64_and_autocast():
    net = Net().double()
    x, y = _batch()
    soft = F.one_hot(y, 4).double() * 0.9 + 0.025
    seen, h = _capture_head_input(net.head)
    with PerformativeTeacher(net.head, lr=0.1) as t:
        t.set_targets(soft)
        out = net(x.double())
        assert out.dtype == torch.float64 and seen["z"].dtype == torch.float64
    net = Net()
    with PerformativeTeacher(net.head, lr=0.1) as t, torch.autocast("cpu", dtype=torch.bfloat16):
        t.set_targets(y)
        out = net(x)
        assert torch.isfinite(out.float()).all()
        assert t.stats["objective_after"] <= t.stats["objective_before"]
    h.remove()


def test_random_policy_uses_its_own_generator_and_state_dict_resumes():
    net = Net()
    x, y = _batch()
    seen, h = _capture_head_input(net.head)
    a = PerformativeTeacher(net.head, lr=0.1, policy="random", seed=7)
    a.set_targets(y)
    net(x)
    state = copy.deepcopy(a.state_dict())
    global_state = torch.get_rng_state()
    a.set_targets(y)
    net(x)
    assert torch.equal(torch.get_rng_state(), global_state)
    second = seen["z"].clone()
    a.remove()
    b = PerformativeTeacher(net.head, lr=0.1, policy="random", seed=123)
    b.load_state_dict(state)
    b.set_targets(y)
    net(x)
    assert torch.equal(seen["z"], second)
    assert b.state_dict()["steps_taught"] == 2
    b.remove()
    h.remove()


def test_state_dict_round_trip_and_bad_state():
    net = Net()
    t = PerformativeTeacher(net.head, lr=0.1)
    t.enabled = False
    s = t.state_dict()
    t.enabled = True
    t.load_state_dict(s)
    assert t.enabled is False
    with pytest.raises(ValueError, match="missing"):
        t.load_state_dict({"version": 1})
    with pytest.raises(TypeError):
        t.load_state_dict([1])  # type: ignore[arg-type]
    t.remove()


def test_teacher_does_not_enter_model_state_dict():
    net = Net()
    keys = set(net.state_dict())
    with PerformativeTeacher(net.head, lr=0.1):
        assert set(net.state_dict()) == keys


# ---------------------------------------------------------------- bad input
def test_non_linear_head_is_a_type_error_naming_the_module():
    with pytest.raises(TypeError, match=r"Sequential.*nn\.Linear|nn\.Linear.*Sequential"):
        PerformativeTeacher(Net().body, lr=0.1)
    with pytest.raises(TypeError, match="get_classifier"):
        PerformativeTeacher(nn.Identity(), lr=0.1)


def test_second_teacher_on_same_head_and_remove_twice():
    net = Net()
    t = PerformativeTeacher(net.head, lr=0.1)
    with pytest.raises(TeacherError, match="already"):
        PerformativeTeacher(net.head, lr=0.1)
    t.remove()
    t.remove()  # idempotent
    t2 = PerformativeTeacher(net.head, lr=0.1)  # free again
    t2.remove()
    x, y = _batch()
    net(x)  # no hook left: no targets needed


def test_missing_targets_is_an_error_and_targets_arm_one_forward():
    net = Net()
    x, y = _batch()
    with PerformativeTeacher(net.head, lr=0.1) as t:
        with pytest.raises(MissingTargetsError, match="set_targets"):
            net(x)
        t.set_targets(y)
        net(x)
        with pytest.raises(MissingTargetsError):
            net(x)


@pytest.mark.parametrize(
    "targets,match",
    [
        (torch.zeros(31, dtype=torch.long), "shape"),
        (torch.zeros(32, 1, dtype=torch.long), "shape"),
        (torch.full((32, 5), 0.2), r"\(\.\.\., 4\)"),
        (torch.full((32,), 4, dtype=torch.long), r"\[0, 3\]"),
        (torch.full((32,), -1, dtype=torch.long), r"\[0, 3\]"),
        (torch.full((32, 4), float("nan")), "finite"),
        (torch.tensor(1), "batch"),
    ],
)
def test_bad_targets(targets, match):
    net = Net()
    x, _ = _batch()
    with PerformativeTeacher(net.head, lr=0.1) as t:
        with pytest.raises(TargetsError, match=match):
            t.set_targets(targets)
            net(x)


def test_targets_of_wrong_type():
    net = Net()
    with PerformativeTeacher(net.head, lr=0.1) as t:
        with pytest.raises(TypeError, match="targets"):
            t.set_targets([0, 1])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="targets"):
            t.set_targets(torch.zeros(3, dtype=torch.bool))


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"eps": 0.0}, ValueError, "eps"),
        ({"eps": 2.5}, ValueError, "eps"),
        ({"eps": float("nan")}, ValueError, "eps"),
        ({"lookahead_steps": 0}, ValueError, "lookahead_steps"),
        ({"lookahead_steps": 2.0}, TypeError, "lookahead_steps"),
        ({"solve_steps": -1}, ValueError, "solve_steps"),
        ({"lookahead_lr": 0.0}, ValueError, "lookahead_lr"),
        ({"solve_lr": -0.1}, ValueError, "solve_lr"),
        ({"policy": "best"}, ValueError, "policy"),
        ({"policy": "none", "lookahead_encoder_grad": True}, ValueError, "lookahead_encoder_grad"),
        ({"seed": 1.5}, TypeError, "seed"),
    ],
)
def test_bad_hyperparameters(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        PerformativeTeacher(Net().head, lr=0.1, **kwargs)


@pytest.mark.parametrize(
    "lr,exc", [(0.0, ValueError), (-1.0, ValueError), (float("inf"), ValueError), ("1", TypeError)]
)
def test_bad_lr(lr, exc):
    with pytest.raises(exc, match="lr"):
        PerformativeTeacher(Net().head, lr=lr)


def test_optimizer_and_lr_choice():
    net = Net()
    with pytest.raises(ValueError, match="exactly one"):
        PerformativeTeacher(net.head)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="not both"):
        PerformativeTeacher(net.head, optimizer=opt, lr=0.1)
    with pytest.raises(ValueError, match="head.weight"):
        PerformativeTeacher(net.head, optimizer=torch.optim.SGD(net.body.parameters(), lr=0.1))
    with pytest.raises(TypeError, match="Optimizer"):
        PerformativeTeacher(net.head, optimizer="sgd")  # type: ignore[arg-type]


def test_negative_lr_at_step_time_is_an_error():
    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = _batch()
    with PerformativeTeacher(net.head, optimizer=opt) as t:
        opt.param_groups[0]["lr"] = -0.1
        t.set_targets(y)
        with pytest.raises(ValueError, match="eta"):
            net(x)


def test_zero_lr_teaches_nothing_but_does_not_fail():
    """Warm-up schedules start at lr 0: the greedy objective is then 0 everywhere."""
    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    x, y = _batch()
    seen, h = _capture_head_input(net.head)
    with PerformativeTeacher(net.head, optimizer=opt) as t:
        t.set_targets(y)
        net(x)
    h.remove()
    assert torch.equal(seen["z"], net.body(x))


def test_head_input_of_wrong_rank():
    head = nn.Linear(4, 3)
    with PerformativeTeacher(head, lr=0.1) as t:
        t.set_targets(torch.zeros(2, 2, 2, dtype=torch.long))
        with pytest.raises(ValueError, match=r"\(B, D\) or \(B, T, D\)"):
            head(torch.randn(2, 2, 2, 4))


def test_public_api():
    assert set(torchdht.__all__) >= {"PerformativeTeacher", "functional", "TeacherError"}
    assert issubclass(torchdht.MissingTargetsError, ValueError)
    assert issubclass(torchdht.HeadTypeError, TypeError)
    assert "greedy" in repr(PerformativeTeacher(nn.Linear(2, 2), lr=0.1))


@pytest.mark.parametrize("order", ["teacher_then_compile", "compile_then_teacher"])
def test_torch_compile_does_not_skip_the_hook(order):
    """Dynamo must run the hook (not trace past it) whichever comes first."""
    net = Net()
    x, y = _batch()
    if order == "teacher_then_compile":
        t = PerformativeTeacher(net.head, lr=0.5, eps=0.5)
        cnet = torch.compile(net, backend="eager")
    else:
        cnet = torch.compile(net, backend="eager")
        cnet(x)
        t = PerformativeTeacher(net.head, lr=0.5, eps=0.5)
    seen, h = _capture_head_input(net.head)
    try:
        with pytest.raises(MissingTargetsError):
            cnet(x)
        t.set_targets(y)
        F.cross_entropy(cnet(x), y).backward()
        assert t.steps_taught == 1
        assert float(angle(seen["z"].detach(), net.body(x).detach()).max()) > 1e-3
        assert net.body[0].weight.grad is not None
    finally:
        h.remove()
        t.remove()


@pytest.mark.parametrize("subspace", [False, True])
def test_greedy_step_traces_whole_with_fullgraph(subspace):
    """No graph break, hence no host sync or data-dependent branch, in the greedy step."""
    from torchdht.functional import greedy_teach

    z = torch.randn(16, 24).relu() + 0.1
    z[3] = float("nan")
    y = F.one_hot(torch.randint(0, 4, (16,)), 4).float()
    w, b = torch.randn(4, 24), torch.zeros(4)
    eta = torch.tensor(0.1)
    compiled = torch.compile(greedy_teach, fullgraph=True, backend="eager")
    got = compiled(z, y, w, b, eta, feature_grad=True, subspace=subspace)
    want = greedy_teach(z, y, w, b, eta, feature_grad=True, subspace=subspace)
    assert torch.equal(got.z.nan_to_num(), want.z.nan_to_num())
    assert torch.equal(got.lookahead.feature_grad, want.lookahead.feature_grad)


def test_compile_option_gives_the_eager_result():
    net = Net().double()  # float64: eta as a tensor equals the Python float exactly
    ref = copy.deepcopy(net)
    x, y = _batch()
    x = x.double()
    outs = []
    # a compiled step has no early exit: the eager reference takes the fixed steps too
    for model, kw in ((net, {"compile": {"backend": "eager"}}), (ref, {"solve_tol": None})):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)
        with PerformativeTeacher(model.head, optimizer=opt, **kw) as t:
            for _ in range(3):
                t.set_targets(y)
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        outs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-12, atol=1e-14)
    with pytest.raises(TypeError, match="compile"):
        PerformativeTeacher(nn.Linear(2, 2), lr=0.1, compile="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "compile,copies",
    [
        (False, False),
        (True, False),
        ({"mode": "max-autotune-no-cudagraphs"}, False),
        ({"mode": "reduce-overhead"}, True),
        ({"mode": "max-autotune"}, True),
        ({"options": {"triton.cudagraphs": True}}, True),
    ],
)
def test_outputs_are_copied_out_of_cuda_graphs(compile, copies):
    """A CUDA-graph replay overwrites its outputs; the teacher copies them in those modes."""
    net = Net()
    t = PerformativeTeacher(net.head, lr=0.1, compile=compile)
    assert t._copy_outputs is copies
    t.remove()
