"""Samplers and loaders: sharding, exactly-once evaluation, resumable streams, nested device moves."""

from __future__ import annotations

import dataclasses
import itertools
from collections import namedtuple

import numpy as np
import pytest
import torch
from conftest import requires_cuda

from lazytrain.config import LazyCall as L
from lazytrain.data import (
    InferenceSampler,
    StreamOrder,
    StreamPositionSampler,
    build_test_loader,
    build_train_loader,
    to_device,
)
from lazytrain.engine.build import build_loader


def take(sampler, n, seed=3):
    order = StreamOrder(sampler.size, seed=seed)
    return [order.index(p) for p in itertools.islice(iter(sampler), n)]


def test_training_stream_shards_are_disjoint_and_cover_each_epoch():
    shards = [take(StreamPositionSampler(10, rank=r, world_size=2), 5) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(10))
    epochs = take(StreamPositionSampler(10), 30)
    assert all(sorted(epochs[i : i + 10]) == list(range(10)) for i in (0, 10, 20))
    assert epochs[:10] != list(range(10)) and epochs[:10] != epochs[10:20]  # shuffled, anew each epoch
    assert take(StreamPositionSampler(10), 10) == take(StreamPositionSampler(10), 10)  # seeded
    assert take(StreamPositionSampler(10), 10, seed=4) != take(StreamPositionSampler(10), 10)


def test_stream_order_batch_lookup_equals_one_by_one_across_epochs():
    order = StreamOrder(7, seed=2)
    for positions in ([3, 4, 5, 6], [5, 6, 7, 8], [1, 4, 7, 10], [0], [20, 22], [0, 1, 3, 3], [4, 2]):
        assert order.indices(positions) == [StreamOrder(7, seed=2).index(p) for p in positions]


def test_training_sampler_start_continues_the_same_stream():
    whole = list(itertools.islice(iter(StreamPositionSampler(7, rank=1, world_size=3)), 20))
    tail = list(itertools.islice(iter(StreamPositionSampler(7, rank=1, world_size=3, start=12)), 8))
    assert whole[12:] == tail


def test_inference_sampler_sees_each_sample_exactly_once_without_padding():
    for size, world in [(10, 3), (2, 4), (0, 2), (7, 1)]:
        parts = [list(InferenceSampler(size, rank=r, world_size=world)) for r in range(world)]
        assert sorted(itertools.chain(*parts)) == list(range(size))


class NoisyRange(torch.utils.data.Dataset):
    """Index plus an augmentation drawn from all three global RNGs."""

    def __len__(self):
        return 6

    def __getitem__(self, i):
        import random

        return torch.tensor([i + torch.rand(()).item(), np.random.rand(), random.random()])


def test_train_loader_resumes_the_same_batches_and_augmentations():
    loader = build_train_loader(NoisyRange(), batch_size=2, seed=5, seed_batches=True)
    it = iter(loader)
    first = [next(it) for _ in range(7)]
    state = loader.state_dict()
    later = [next(it) for _ in range(3)]

    resumed = build_train_loader(NoisyRange(), batch_size=2, seed=5, seed_batches=True)
    resumed.load_state_dict(state)
    again = list(itertools.islice(iter(resumed), 3))
    for a, b in zip(later, again):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], first[3])  # a new epoch draws new noise


def test_seeded_batches_leave_the_torch_rng_of_training_untouched():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    next(iter(build_train_loader(NoisyRange(), batch_size=4, seed_batches=True)))
    assert torch.equal(torch.rand(3), expected)


def test_seeded_batches_are_the_same_with_and_without_workers():
    a = list(itertools.islice(iter(build_train_loader(NoisyRange(), batch_size=3, seed_batches=True)), 4))
    b = list(itertools.islice(iter(build_train_loader(NoisyRange(), batch_size=3, num_workers=2)), 4))
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_worker_batches_resume_exactly():
    loader = build_train_loader(NoisyRange(), batch_size=2, seed=5, num_workers=2)
    it = iter(loader)
    [next(it) for _ in range(5)]
    state = loader.state_dict()
    later = [next(it) for _ in range(3)]
    it.close()
    resumed = build_train_loader(NoisyRange(), batch_size=2, seed=5, num_workers=2)
    resumed.load_state_dict(state)
    for a, b in zip(later, itertools.islice(iter(resumed), 3)):
        assert torch.equal(a, b)


@dataclasses.dataclass
class Sample:
    points: torch.Tensor
    name: str


def test_to_device_moves_tensors_inside_nested_containers():
    Pair = namedtuple("Pair", "a b")
    batch = {
        "x": torch.ones(2),
        "list": [torch.zeros(1), ("s", torch.ones(1))],
        "pair": Pair(torch.ones(1), 3),
        "sample": Sample(torch.ones(3), "scan0"),
    }
    moved = to_device(batch, "meta")
    assert moved["x"].device.type == "meta"
    assert moved["list"][0].device.type == "meta" and moved["list"][1][0] == "s"
    assert moved["list"][1][1].device.type == "meta"
    assert isinstance(moved["pair"], Pair) and moved["pair"].a.device.type == "meta" and moved["pair"].b == 3
    assert isinstance(moved["sample"], Sample) and moved["sample"].points.device.type == "meta"
    assert moved["sample"].name == "scan0"


@requires_cuda
def test_pinned_batches_reach_the_gpu_with_the_same_values():
    loader = build_train_loader(NoisyRange(), batch_size=2, num_workers=2, pin_memory=True)
    it = iter(loader)
    batch = next(it)
    assert batch.is_pinned()
    moved = to_device({"points": batch, "names": ["a", "b"]}, torch.device("cuda"))  # non-blocking: pinned
    torch.cuda.synchronize()
    assert moved["points"].is_cuda and torch.equal(moved["points"].cpu(), batch)
    it.close()


@pytest.mark.parametrize("build", [build_train_loader, build_test_loader])
def test_auto_pin_memory_follows_the_device_the_batches_go_to(build, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine, whichever this one is
    assert build(NoisyRange(), batch_size=2).pin_memory is True  # built alone: CUDA is there
    loader_cfg = L(build)(dataset=L(NoisyRange)(), batch_size=2)
    for device, pinned in (("cpu", False), ("cuda", True)):  # built for a run: the run's device decides
        assert build_loader(loader_cfg, "dataloader.train", torch.device(device)).pin_memory is pinned
    for device, given in (("cpu", True), ("cuda", False)):  # what the config says stays
        loader_cfg.pin_memory = given
        assert build_loader(loader_cfg, "dataloader.train", torch.device(device)).pin_memory is given


def test_a_plain_dataloader_keeps_its_own_pin_memory_default():
    loader_cfg = L(torch.utils.data.DataLoader)(dataset=L(NoisyRange)(), batch_size=2)
    assert build_loader(loader_cfg, "dataloader.test", torch.device("cuda")).pin_memory is False


class BrokenFile(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        from lazytrain.errors import DataError

        raise DataError(f"scan file 'seq/{i:06d}.bin' is corrupt.", hint="Re-extract it.")


@pytest.mark.parametrize("build", [build_train_loader, build_test_loader])
def test_data_error_in_a_worker_stays_one_paragraph(build):
    from lazytrain.errors import DataError

    with pytest.raises(DataError) as info:
        next(iter(build(BrokenFile(), batch_size=2, num_workers=1)))
    assert str(info.value).startswith("scan file 'seq/") and str(info.value).endswith("Re-extract it.")
    assert "Traceback" not in str(info.value) and "Traceback" in info.value.details
