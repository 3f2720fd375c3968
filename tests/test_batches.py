import torch

from vaekit.data.batches import TensorBatches


def test_epoch_covers_every_example_once_and_is_reproducible():
    x = torch.arange(103).float().unsqueeze(1)
    b = TensorBatches(x, 10, seed=4)
    seen = torch.cat(list(b.iterate(0))).squeeze(1)
    assert sorted(seen.tolist()) == list(range(103))
    assert torch.equal(torch.cat(list(b.iterate(0))), torch.cat(list(b.iterate(0))))
    assert not torch.equal(torch.cat(list(b.iterate(0))), torch.cat(list(b.iterate(1))))


def test_resume_skips_batches_exactly():
    x = torch.randn(50, 3)
    b = TensorBatches(x, 8, seed=1)
    full = list(b.iterate(2))
    tail = list(b.iterate(2, start_batch=3))
    assert all(torch.equal(u, v) for u, v in zip(full[3:], tail))


def test_rank_shards_are_disjoint_and_union_is_the_global_batch():
    x = torch.arange(40).float().unsqueeze(1)
    single = list(TensorBatches(x, 8, seed=2).iterate(5))
    ranks = [list(TensorBatches(x, 4, seed=2, rank=r, world_size=2).iterate(5)) for r in range(2)]
    for t, global_batch in enumerate(single):
        union = torch.cat([ranks[0][t], ranks[1][t]]).squeeze(1)
        assert sorted(union.tolist()) == sorted(global_batch.squeeze(1).tolist())
    shard0 = set(torch.cat(ranks[0]).squeeze(1).tolist())
    shard1 = set(torch.cat(ranks[1]).squeeze(1).tolist())
    assert not shard0 & shard1 and len(shard0 | shard1) == 40


def test_uneven_shards_are_padded_like_distributed_sampler():
    x = torch.arange(7).float().unsqueeze(1)
    sizes = [sum(len(v) for v in TensorBatches(x, 2, rank=r, world_size=2).iterate(0)) for r in range(2)]
    assert sizes == [4, 4]
