"""EpochSampler sharding over ranks: what each rank of a DDP job iterates."""

from __future__ import annotations

import pytest

from thelper.data.loaders import EpochSampler
from thelper.data.samplers import WeightedEpochSampler


def _shards(make, world: int, **kw) -> list[list[int]]:
    out = []
    for rank in range(world):
        s = make()
        s.set_shard(rank, world, **kw)
        s.set_epoch(3)
        out.append(s.indices())
        assert list(s) == [(3, i) for i in out[-1]]  # each index comes with its epoch
        assert len(s) == len(out[-1]) == s.shard_size()
    return out


@pytest.mark.parametrize("n", [0, 1, 5, 10, 11])
@pytest.mark.parametrize("world", [2, 3])
def test_training_shards_are_strided_padded_and_equal(n, world):
    order = EpochSampler(n, shuffle=True, seed=7)
    order.set_epoch(3)
    full = order.indices()
    shards = _shards(lambda: EpochSampler(n, shuffle=True, seed=7), world)
    assert len({len(s) for s in shards}) == 1  # every rank runs the same number of steps
    if n:
        total = -(-n // world) * world
        padded = (full * world)[:total]
        # position p of the padded order belongs to rank p % world
        assert [shards[p % world][p // world] for p in range(total)] == padded
        assert sorted(set().union(*map(set, shards))) == sorted(full)


@pytest.mark.parametrize("n,world,block", [(10, 2, 3), (11, 3, 2), (4, 3, 4), (7, 2, 1)])
def test_evaluation_shards_are_batch_aligned_blocks_without_padding(n, world, block):
    shards = _shards(lambda: EpochSampler(n, shuffle=False, seed=0), world, contiguous=True,
                     block=block)
    assert sum(shards, []) == list(range(n))  # each sample once, in order
    for rank in range(world - 1):  # a shard followed by samples ends on a whole batch
        if any(shards[rank + 1:]):
            assert len(shards[rank]) % block == 0


def test_resume_start_is_a_position_in_the_rank_shard():
    s = EpochSampler(10, shuffle=True, seed=1)
    s.set_shard(1, 2)
    s.set_epoch(2)
    whole = s.indices()
    s.set_epoch(2, start=2)
    assert s.indices() == whole[2:] and len(s) == len(whole) - 2
    assert list(s) == [(2, i) for i in whole[2:]]


def test_weighted_sampler_inherits_sharding():
    shards = _shards(lambda: WeightedEpochSampler([1.0, 2.0, 3.0], num_samples=7, seed=3), 2)
    assert [len(s) for s in shards] == [4, 4]
