"""PerformativeTeacher under FSDP2 (``torch.distributed.fsdp.fully_shard``): two gloo ranks on CPU.

The expected parameters are those of the DDP test's per-rank reference: each
rank teaches on its own local batch with the full (unsharded) head weights and
the gradients are averaged over the ranks. FSDP2 registers its all-gathering
forward pre-hook with ``prepend=True``, so on a sharded head it runs before the
teacher's hook whichever was attached first, and with ``fully_shard`` on the
root only the whole model is unsharded before any submodule runs: the teacher
sees ``head.weight`` as a plain, full ``nn.Parameter``. Everything is float64;
a reduce-scatter of two addends and the division by 2 are exact, so the
tolerance is the DDP test's.

One worker run (both ranks) covers every configuration; see
``tests/workers/fsdp_worker.py``.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import torch

from conftest import REPO, worker_env
from workers import ddp_worker, fsdp_worker

WORKER = REPO / "tests" / "workers" / "fsdp_worker.py"


def _fsdp_available() -> str | None:
    """None if FSDP2 on CPU with gloo can run here, else why not."""
    if not torch.distributed.is_available():
        return "torch.distributed is not available in this build"
    if not torch.distributed.is_gloo_available():
        return "the gloo backend is not available in this build"
    try:
        from torch.distributed.device_mesh import init_device_mesh  # noqa: F401
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError as exc:
        return f"torch.distributed.fsdp.fully_shard is not available: {exc}"
    return None


_SKIP = _fsdp_available()
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    """Run the worker once on two ranks; ``{config: result}`` as rank 0 saved it."""
    out = tmp_path_factory.mktemp("fsdp") / "results.pt"
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(r), "2", port, str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=worker_env(),
        )
        for r in range(2)
    ]
    try:
        logs = [p.communicate(timeout=180)[0].decode() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    return torch.load(out, weights_only=True)


@pytest.fixture(scope="module")
def references() -> dict[str, torch.Tensor]:
    return {optim: fsdp_worker.reference(2, optim) for optim in fsdp_worker.OPTIMS}


def _check_error_free(result: dict) -> None:
    if "error" in result:
        pytest.fail(f"the configuration raised on the ranks:\n{result['error']}")


def test_sgd_reference_is_the_ddp_reference(references):
    ref = ddp_worker.reference(2, fsdp_worker.POLICY)
    torch.testing.assert_close(references["sgd"], ref, rtol=0, atol=0)


# Each configuration: shard ("head": fully_shard(head) then fully_shard(model);
# "model": fully_shard(model) only) / attach ("before": teacher on the plain model
# with lr= reading the post-shard optimizer; "after": teacher after fully_shard
# and the optimizer, optimizer=opt) / optim ("sgd"; "adam" with a LambdaLR).
@pytest.mark.parametrize("shard", fsdp_worker.SHARDS)
@pytest.mark.parametrize("attach", fsdp_worker.ATTACHES)
@pytest.mark.parametrize("optim", fsdp_worker.OPTIMS)
def test_fsdp_two_ranks_match_per_rank_reference(results, references, shard, attach, optim):
    result = results[f"{shard}/{attach}/{optim}"]
    _check_error_free(result)
    assert result["steps_taught"] == [fsdp_worker.STEPS] * 2  # both ranks taught every step
    params = result["params"]
    assert torch.equal(params[0], params[1])  # ranks stay in sync
    torch.testing.assert_close(params[0], references[optim], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shard", fsdp_worker.SHARDS)
def test_fsdp_gradient_accumulation_matches_per_rank_reference(results, shard):
    """Between micro-batches FSDP2 leaves the unsharded parameters in place
    (``set_reshard_after_backward(False)``); the teacher must neither see a shard
    nor take that for a lost optimizer."""
    result = results[f"{shard}/after/sgd/accum"]
    _check_error_free(result)
    assert result["steps_taught"] == [fsdp_worker.STEPS * fsdp_worker.MICRO] * 2
    params = result["params"]
    assert torch.equal(params[0], params[1])
    ref = fsdp_worker.reference(2, "sgd", micro=fsdp_worker.MICRO)
    torch.testing.assert_close(params[0], ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shard", fsdp_worker.SHARDS)
def test_fsdp_teacher_bound_to_pre_shard_optimizer_is_refused(results, shard):
    result = results[f"{shard}/before-stale/adam"]
    assert "error" in result, "the teacher trained with eta read from an orphaned optimizer"
    assert result["error_type"] in ("TeacherError", "ValueError"), result["error"]
    assert "optimizer" in result["error_message"], result["error"]
