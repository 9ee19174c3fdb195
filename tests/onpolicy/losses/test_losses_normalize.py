"""Global token normalization: a step's gradient is the same whatever the micro-batch size, the
number of accumulation steps and the number of processes (simulated, and a real 2-process gloo)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from onpolicy.losses import count_tokens, generalized_jsd, global_token_count, token_normalized

N_SEQ, T, H, V = 6, 5, 4, 7


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N_SEQ, T, H, generator=g)
    teacher = torch.randn(N_SEQ, T, V, generator=g)
    mask = torch.rand(N_SEQ, T, generator=g) > 0.5  # ragged counts per sequence
    mask[2] = False  # a sequence with nothing to learn
    return hidden, teacher, mask


def _model():
    torch.manual_seed(0)
    return torch.nn.Linear(H, V, dtype=torch.float32)


def _step_grad(model, rows_per_process, world_size: int) -> torch.Tensor:
    """One optimizer step's gradient: ``rows_per_process[p]`` = list of micro-batches (row index
    lists) of process p; data-parallel averaging of the per-process gradients (as DDP does)."""
    hidden, teacher, mask = _data()
    n = global_token_count(sum(count_tokens(mask[mb]) for mbs in rows_per_process for mb in mbs))
    grads = []
    for micro_batches in rows_per_process:
        model.zero_grad()
        for mb in micro_batches:
            loss_sum = generalized_jsd(model(hidden[mb]), teacher[mb], 0.5, mask=mask[mb],
                                       reduction="sum")  # fmt: skip
            token_normalized(loss_sum, n, world_size).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    return torch.stack(grads).mean(0)


def test_gradient_independent_of_micro_batches_and_processes():
    model = _model()
    hidden, teacher, mask = _data()
    ref_loss = generalized_jsd(model(hidden), teacher, 0.5, mask=mask, reduction="mean")
    ref = torch.cat([g.flatten() for g in torch.autograd.grad(ref_loss, list(model.parameters()))])
    rows = list(range(N_SEQ))
    splits = {
        "one batch": [[rows]],
        "micro-batch 1": [[[i] for i in rows]],
        "micro-batches 4 + 2": [[rows[:4], rows[4:]]],
        "2 processes x 3 steps": [[[0], [1], [2]], [[3], [4], [5]]],
        "3 processes x 1": [[rows[0:2]], [rows[2:4]], [rows[4:6]]],
    }
    for name, split in splits.items():
        got = _step_grad(model, split, world_size=len(split))
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-7, msg=name)
    # the naive per-micro-batch mean differs (so the test above can fail)
    naive = _naive_mean_grad(model, [[0], [1], [2], [3], [4], [5]])
    assert not torch.allclose(naive, ref, rtol=1e-3)


def _naive_mean_grad(model, micro_batches):
    hidden, teacher, mask = _data()
    model.zero_grad()
    for mb in micro_batches:
        loss = generalized_jsd(model(hidden[mb]), teacher[mb], 0.5, mask=mask[mb])
        (loss / len(micro_batches)).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def test_zero_global_count_gives_zero_without_nan():
    x = torch.tensor(0.0, requires_grad=True)
    out = token_normalized(x * 3.0, 0)
    assert out.item() == 0.0
    out.backward()
    assert x.grad.item() == 0.0
    assert count_tokens([torch.ones(2, 3), torch.tensor([0, 1])]) == 7
    assert global_token_count(5) == 5  # not distributed: the local count


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = _model()
        hidden, teacher, mask = _data()
        shard = [[0, 1, 2], [3, 4, 5]][rank]  # uneven token counts per process
        n = global_token_count(count_tokens(mask[shard]))
        for mb in ([shard[0]], shard[1:]):  # two accumulation steps per process
            loss_sum = generalized_jsd(model(hidden[mb]), teacher[mb], 0.5, mask=mask[mb],
                                       reduction="sum")  # fmt: skip
            token_normalized(loss_sum, n, world).backward()
        for p in model.parameters():  # what DDP does: average gradients across processes
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world
        if rank == 0:
            torch.save([p.grad for p in model.parameters()], os.path.join(out_dir, "grads.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)
def test_real_two_process_gloo_gradient_matches_single_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    got = torch.load(tmp_path / "grads.pt")
    model = _model()
    hidden, teacher, mask = _data()
    loss = generalized_jsd(model(hidden), teacher, 0.5, mask=mask)
    ref = torch.autograd.grad(loss, list(model.parameters()))
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
