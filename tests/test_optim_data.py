"""The paper's recipe without training: Muon's parameter groups (model.configure_optimizers) and the epoch data order."""
import re

import pytest
import torch

from data_order import EpochOrder, epoch_windows
from model import GPT, GPTConfig


def make(**kw):
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=64, bias=False, **kw))


@pytest.mark.parametrize("residual", ["gd", "nesterov"])
def test_muon_takes_exactly_the_block_matrices(residual):
    model = make(residual=residual)
    muon, adamw = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), "cpu", optimizer="muon", muon_lr=0.02)
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    in_muon = {names[id(p)] for g in muon.param_groups for p in g["params"]}
    assert in_muon == {f"transformer.h.{i}.{m}.weight" for i in range(2)
                       for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    g = muon.param_groups[0]
    assert (g["lr"], g["lr_scale"], g["weight_decay"], g["momentum"], g["nesterov"]) == \
        (0.02, pytest.approx(0.02 / 6e-4), 0.0, 0.95, True)
    # AdamW keeps everything else, in the same groups as without Muon
    in_adamw = {names[id(p)]: g for g in adamw.param_groups for p in g["params"]}
    assert set(in_adamw) | in_muon == set(names.values()) and not set(in_adamw) & in_muon
    for name, g in in_adamw.items():
        if re.search(r"\.substeps\.\w+\.(mu|beta|gamma\.\w+)$", name):
            assert (g["lr_scale"], g["weight_decay"]) == (5.0, 0.0), name
        elif "wte" in name or "wpe" in name or "vte" in name or "vpe" in name:
            assert (g["lr_scale"], g["weight_decay"]) == (1.0, 0.1), name
        else:  # norm gains
            assert (g["lr_scale"], g["weight_decay"]) == (1.0, 0.0), name


def test_unknown_optimizer_is_rejected():
    with pytest.raises(ValueError, match="optimizer='sgd' is not known"):
        make().configure_optimizers(0.1, 6e-4, (0.9, 0.95), "cpu", optimizer="sgd")


def test_an_epoch_visits_every_window_once():
    n, T = 1000, 32
    for epoch in range(4):
        starts = epoch_windows(n, T, seed=7, epoch=epoch)
        shift = starts.min()
        assert 0 <= shift < T
        # non-overlapping, back to back from the shift, each with its next-token target inside the data
        assert sorted(starts.tolist()) == list(range(shift, n - T, T))
        assert starts.max() + T + 1 <= n
    a, b = epoch_windows(n, T, 7, 0), epoch_windows(n, T, 7, 1)
    assert a.min() != b.min()  # the boundaries move between epochs
    assert (epoch_windows(n, T, 7, 0) == a).all() and (epoch_windows(n, T, 8, 0) != a).any()  # seeded
    c, d = epoch_windows(n, 1, 7, 0), epoch_windows(n, 1, 7, 1)  # block 1: no shift, only the order changes
    assert sorted(c) == sorted(d) and (c != d).any()


def test_processes_take_disjoint_shares_covering_each_epoch():
    n, T, W = 1000, 32, 3
    orders = [EpochOrder(n, T, seed=7, rank=r, world_size=W) for r in range(W)]
    for epoch in range(2):
        full = epoch_windows(n, T, 7, epoch).tolist()
        per_rank = len(full) // W
        shares = [o.next(per_rank) for o in orders]
        assert sorted(sum(shares, [])) == sorted(full[:per_rank * W])  # disjoint, and all but len % W windows
        assert all(o.state_dict() == {'epoch': epoch, 'position': per_rank * W} for o in orders)


def test_epoch_order_resumes_where_it_stopped():
    n, T = 1000, 32
    whole = EpochOrder(n, T, seed=3).next(100)  # ~3 epochs of 30 windows, crossing epoch boundaries in a batch
    first = EpochOrder(n, T, seed=3)
    head = first.next(45)
    rest = EpochOrder(n, T, seed=3)
    rest.load_state_dict(first.state_dict())
    assert head + rest.next(55) == whole
    assert len(set(whole[:30])) == 30 and set(whole[:30]) != set(whole[30:60])


def test_epoch_order_continues_on_another_number_of_processes():
    """Two processes for 5 rounds, then three from the saved position: every window of the epoch once, none
    twice, until the last (fewer than three) are left out; a checkpoint of the earlier layout (each process's index
    into its share) gives the same position."""
    n, T = 1000, 32
    full = epoch_windows(n, T, 5, 0).tolist()
    assert len(full) == 30
    two = [EpochOrder(n, T, seed=5, rank=r, world_size=2) for r in range(2)]
    before = [o.next(5) for o in two]
    assert two[0].state_dict() == {'epoch': 0, 'position': 10}
    three = [EpochOrder(n, T, seed=5, rank=r, world_size=3) for r in range(3)]
    for o in three:
        o.load_state_dict(two[0].state_dict())
    after = [o.next(6) for o in three]
    seen = sum(before + after, [])
    assert sorted(seen) == sorted(full[:28]) and len(set(seen)) == 28
    assert [o.state_dict() for o in three] == [{'epoch': 0, 'position': 28}] * 3
    assert three[0].next(1) == [epoch_windows(n, T, 5, 1)[0]]  # on into the next epoch
    old = EpochOrder(n, T, seed=5, rank=1, world_size=2)
    old.load_state_dict({'epoch': 0, 'index': 5}, world_size=2)
    assert old.state_dict() == {'epoch': 0, 'position': 10} and old.next(2) == two[1].next(2)
