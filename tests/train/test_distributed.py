"""Two CPU processes (gloo) agree with one process on the same global batch.

PyTorch's SyncBatchNorm runs on CUDA only, so on the CPU each rank's
BatchNorm would see different batch statistics than one process on the whole
batch. The step test therefore gives both ranks the same images: the global
batch is [X; X], whose mean and (biased) variance equal X's, so BN's
train-mode outputs agree exactly and any difference comes from DDP's gradient
averaging or from the in-batch gather. The gather itself is tested
separately with distinct rows per rank.
"""
import io
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cwarp.train import distributed as D
from cwarp.train import config as C
from cwarp.train import trainer as T

WORLD = 2


def _put(q, obj):
    # Plain bytes: tensors sent through a Queue live in shared memory that
    # vanishes when the sending process exits.
    buf = io.BytesIO()
    torch.save(obj, buf)
    q.put(buf.getvalue())


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(rank, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))


def _cfg(in_batch):
    cfg, _ = C.parse_command_line(["--out", "unused", "--arch", C.compact_arch(), "--image-size", "16",
                                 "--batch-size", "8", "--hidden-dim", "32", "--proj-dim", "16",
                                 "--optimizer", "sgd", "--lr", "0.5", "--warmup-epochs", "0"]
                                + (["--in-batch"] if in_batch else []))
    return C.validate(cfg)


def _views(seed=0, b=4, n=2):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 3, 16, 16, generator=g), torch.randn(b, 3, 16, 16, generator=g),
            torch.randn(b, n, 3, 16, 16, generator=g))


def _steps(trainer, views, steps=2):
    losses = [trainer.train_step(*views) for _ in range(steps)]
    return losses, {k: v.detach().clone() for k, v in trainer.model.named_parameters()}


def _worker(rank, port, q):
    """One spawn for every check (starting processes is the slow part)."""
    torch.set_num_threads(1)
    _env(rank, port)
    info = D.init_from_env("cpu")
    out = {"rank": rank}
    x = (torch.arange(6.0).view(3, 2) + 10 * rank).requires_grad_(True)
    g = D.gather_with_grad(x)
    w = torch.arange(12.0).view(6, 2)
    (w * g * g).sum().backward()             # every rank holds the same global loss
    out["gather"] = (g.detach(), x.grad)
    for in_batch in (False, True):
        trainer = T.Trainer(_cfg(in_batch), info, torch.device("cpu"), 3, steps_per_epoch=10)
        losses, params = _steps(trainer, _views())
        # Each rank's loss is on its half; the global mean is their average
        # (in in-batch mode every rank already holds the global loss).
        losses = torch.stack(losses)
        dist.all_reduce(losses)
        out[in_batch] = (losses / WORLD, params)
    _put(q, out)
    D.cleanup()


@pytest.fixture(scope="module")
def ranks():
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, q)) for r in range(WORLD)]
    for p in procs:
        p.start()
    results = [torch.load(io.BytesIO(q.get(timeout=240)), weights_only=True) for _ in range(WORLD)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return sorted(results, key=lambda r: r["rank"])


@pytest.mark.slow
def test_gather_with_grad_sums_gradients_over_ranks(ranks):
    full = torch.cat([torch.arange(6.0).view(3, 2) + 10 * r for r in range(WORLD)])
    w = torch.arange(12.0).view(6, 2)
    for rank, res in enumerate(ranks):
        g, grad = res["gather"]
        assert torch.equal(g, full)
        # d/dx of sum_ranks (w * g^2) = WORLD * 2 w x for this rank's rows.
        assert torch.allclose(grad, WORLD * 2 * w[3 * rank:3 * rank + 3] * full[3 * rank:3 * rank + 3])


def test_gather_is_identity_without_process_group():
    x = torch.randn(3, 2)
    assert D.gather_with_grad(x) is x


@pytest.mark.slow
@pytest.mark.parametrize("in_batch", [False, True])
def test_two_processes_match_one_on_the_same_global_batch(ranks, in_batch):
    dist_losses, dist_params = ranks[0][in_batch]
    torch.set_num_threads(1)
    single = T.Trainer(_cfg(in_batch), D.DistInfo(), torch.device("cpu"), 3, steps_per_epoch=10)
    half = _views()
    glob = tuple(torch.cat([v, v]) for v in half)
    losses, params = _steps(single, glob)
    torch.testing.assert_close(dist_losses, torch.stack(losses), rtol=1e-5, atol=1e-6)
    # (Two SGD steps at lr 0.5, with the online negatives' and in-batch keys'
    # gradients summed in another order across ranks: a few 1e-5 apart.)
    for k, v in params.items():
        torch.testing.assert_close(dist_params[k], v, rtol=1e-4, atol=3e-5, msg=lambda m: f"{k}: {m}")
    # Both ranks end with the same weights.
    for k, v in ranks[1][in_batch][1].items():
        assert torch.equal(v, dist_params[k]), k
