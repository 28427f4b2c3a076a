"""Dataset splits and the core dataset adapters, on scikit-learn's digits."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from thelper.data.datasets import SklearnDataset, TorchDatasetAdapter, check_import_allowed
from thelper.data.splits import split_indices
from thelper.exceptions import ConfigError
from thelper.tasks import Classification


@pytest.fixture(scope="module")
def digits():
    return SklearnDataset("digits")


def test_digits_adapter_shapes_and_task(digits):
    assert len(digits) == 1797
    sample = digits[0]
    assert tuple(sample["input"].shape) == (1, 8, 8)
    assert str(sample["input"].dtype) == "torch.float32"
    assert 0.0 <= float(sample["input"].min()) and float(sample["input"].max()) <= 1.0
    assert digits.task.class_names == [str(i) for i in range(10)]


def test_splits_are_disjoint_stratified_and_reproducible(digits):
    ratios = {"train": 0.8, "valid": 0.1, "test": 0.1}
    a = split_indices(len(digits), ratios, seed=3, labels=digits.targets)
    b = split_indices(len(digits), ratios, seed=3, labels=digits.targets)
    c = split_indices(len(digits), ratios, seed=4, labels=digits.targets)
    assert a == b and a != c
    sets = [set(a[s]) for s in ratios]
    assert sum(map(len, sets)) == len(set().union(*sets)) == len(digits)
    assert abs(len(a["train"]) - 0.8 * len(digits)) <= 10
    full = Counter(digits.targets)
    for split in ratios:
        counts = Counter(digits.targets[i] for i in a[split])
        for cls, n in full.items():  # every class keeps its share (±1 sample)
            assert abs(counts[cls] - n * ratios[split]) <= 1.0


def test_partial_splits_leave_samples_out():
    out = split_indices(100, {"train": 0.5, "test": 0.2}, seed=0)
    assert len(out["train"]) == 50 and len(out["test"]) == 20
    assert not set(out["train"]) & set(out["test"])


def test_import_allow_list():
    check_import_allowed("torchvision.datasets.FakeData")
    check_import_allowed("thelper_vision.datasets.ImageFolderDataset")
    with pytest.raises(ConfigError, match=r"--allow-import mydata"):
        check_import_allowed("mydata.Blobs")
    with pytest.raises(ConfigError, match=r"never importable"):
        check_import_allowed("os.system", allow=["os"])
    check_import_allowed("collections.OrderedDict", allow=["collections"])


def test_torch_dataset_adapter_maps_tuples_to_keys():
    task = Classification([str(i) for i in range(10)], input_key="0", label_key="1")
    ds = TorchDatasetAdapter("torchvision.datasets.FakeData",
                             {"size": 12, "image_size": [3, 8, 8], "num_classes": 10,
                              "transform": None}, task=task)
    sample = ds[0]
    assert set(sample) == {"0", "1"}
    assert ds.task is task


def test_split_allocation_respects_ratio_sums():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=57).tolist()
    out = split_indices(57, {"train": 0.7, "valid": 0.3}, seed=1, labels=labels)
    assert len(out["train"]) + len(out["valid"]) == 57


def test_merged_tasks_remap_labels_of_each_dataset():
    """Two datasets with different class lists train one model over the union of classes."""
    import torch

    from thelper.data.loaders import SplitDataset

    class Tiny(torch.utils.data.Dataset):
        def __init__(self, names, labels):
            self.task = Classification(names)
            self.labels = labels

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return {"input": torch.zeros(2), "label": self.labels[i]}

    a = Tiny(["cat", "dog"], [0, 1])
    b = Tiny(["dog", "bird"], [0, 1])
    merged = a.task.merge(b.task)
    assert merged.class_names == ["cat", "dog", "bird"]
    sd = SplitDataset([("a", a, [0, 1]), ("b", b, [0, 1])], "input", label_key="label",
                      label_maps={"b": [1, 2]})
    assert [int(sd[i]["label"]) for i in range(4)] == [0, 1, 1, 2]


def test_class_balanced_sampler_matches_requested_weights(digits):
    """An imbalanced subset (class 0 ten times more frequent) drawn back to balance."""
    from thelper.data.samplers import class_balanced, class_weighted

    labels = [0] * 500 + [1] * 50 + [2] * 50
    s = class_balanced(labels, seed=3, power=1.0, num_samples=6000)
    s.set_epoch(1)
    hist = Counter(labels[i] for i in s.indices())
    for c in (0, 1, 2):  # uniform over classes within 5 %
        assert abs(hist[c] / 6000 - 1 / 3) < 0.05
    half = class_balanced(labels, seed=3, power=0.0, num_samples=6000)
    half.set_epoch(1)
    assert Counter(labels[i] for i in half.indices())[0] / 6000 > 0.75  # natural distribution kept
    w = class_weighted({"a": 1.0, "b": 3.0}, labels, ["a", "b", "c"], seed=1, num_samples=8000)
    w.set_epoch(2)
    hist = Counter(labels[i] for i in w.indices())
    assert hist[2] == 0 and abs(hist[1] / 8000 - 0.75) < 0.03
    again = class_weighted({"a": 1.0, "b": 3.0}, labels, ["a", "b", "c"], seed=1,
                           num_samples=8000)
    again.set_epoch(2)
    assert list(again) == list(w)  # same seed and epoch: same draws (exact resume)
    with pytest.raises(ConfigError, match="unknown class"):
        class_weighted({"z": 1.0}, labels, ["a", "b", "c"])


def test_sampler_in_a_session(tmp_path, mlp_config):
    from thelper.config import document_from_dict
    from thelper.runner import run_session

    mlp_config["loaders"]["train_sampler"] = {"type": "class_weighted",
                                              "params": {"weights": {"0": 1.0, "1": 1.0}}}
    mlp_config["trainer"]["epochs"] = 1
    s = run_session(document_from_dict(mlp_config), tmp_path)
    log = (s.logs_dir / "trainer.log").read_text()
    assert "train sampler class_weighted" in log


class _Noise:
    """A random transform: adds one torch draw and one NumPy draw to the input."""

    def __call__(self, x):
        import torch

        return x + torch.rand(()).item() + float(np.random.rand())


def _noisy_split(n: int = 12):
    import torch

    from thelper.data.loaders import SplitDataset

    base = [{"input": torch.zeros(()), "label": i % 3} for i in range(n)]
    return SplitDataset([("d", base, list(range(n)))], "input", _Noise(), seed=5)


def test_batches_are_seeded_by_epoch_and_indices_and_leave_the_global_rng_alone():
    import torch
    from torch.utils.data import DataLoader

    from thelper.data.loaders import EpochSampler

    sd = _noisy_split()
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    loader = DataLoader(sd, batch_size=4, sampler=EpochSampler(len(sd), True, seed=1),
                        generator=torch.Generator())  # as make_loader does
    loader.sampler.set_epoch(1)
    first = [b["input"].clone() for b in loader]
    assert torch.equal(torch.rand(3), before)  # dropout's generator is untouched
    order = loader.sampler.order()
    # a batch is loaded whole: the loader's batch equals __getitems__ of its indices ...
    direct = torch.stack([s["input"] for s in sd.__getitems__(order[4:8])])
    assert torch.equal(first[1], direct)
    # ... repeats exactly (resume, any worker) and changes with the epoch
    assert torch.equal(torch.stack([s["input"] for s in sd.__getitems__(order[4:8])]), direct)
    sd.epoch = 2
    assert not torch.equal(torch.stack([s["input"] for s in sd.__getitems__(order[4:8])]),
                           direct)
    # every sample of a batch draws its own numbers; dataset[i] is a batch of one
    assert len(set(first[0].tolist())) == 4
    sd.epoch = 1
    assert torch.equal(sd[order[0]]["input"], sd.__getitems__([order[0]])[0]["input"])


def test_batches_sharing_a_first_sample_draw_differently():
    """With a sampler that draws with replacement two batches may start with one sample."""
    sd = _noisy_split()
    a = sd.__getitems__([3, 0, 1])
    b = sd.__getitems__([3, 5, 7])
    assert float(a[0]["input"]) != float(b[0]["input"])


class _PidNoise:
    """Noise samples that record the process that loaded them."""

    def __len__(self):
        return 12

    def __getitem__(self, i):
        import os

        import torch

        return {"input": torch.zeros(()), "label": i % 3, "index": i, "pid": os.getpid()}


def _epochs(workers: int, epochs=(1, 2)):
    """``{epoch: (pids, {index: augmented input})}`` of a shuffled 2-worker-capable loader,
    seeded before each epoch as the trainer does (sampler and ``dataset.epoch``)."""
    from thelper.data.loaders import SplitDataset, make_loader

    sd = SplitDataset([("d", _PidNoise(), list(range(12)))], "input", _Noise(), seed=5)
    loader = make_loader(sd, 4, train=True, workers=workers, shuffle=True, pin_memory=False,
                         drop_last=False, seed=1)
    out = {}
    for epoch in epochs:
        sd.epoch = epoch  # reaches the main process only (a worker holds its own copy)
        loader.sampler.set_epoch(epoch)
        pids, values = set(), {}
        for batch in loader:
            pids |= set(batch["pid"].tolist())
            values |= dict(zip(batch["index"].tolist(), batch["input"].tolist(), strict=True))
        out[epoch] = (pids, values)
    return loader, out


def test_loader_workers_persist_across_epochs():
    import os

    loader, out = _epochs(workers=2)
    assert loader.persistent_workers
    pids1, pids2 = out[1][0], out[2][0]
    assert os.getpid() not in pids1 and len(pids1) == 2
    assert pids2 == pids1  # the same worker processes loaded epoch 2


def test_persistent_workers_see_each_epoch_and_match_the_main_process():
    """The epoch travels with the sampler's indices: kept-alive workers draw the epoch-2
    augmentations (not epoch 1's again), exactly those of a loader without workers."""
    _, main = _epochs(workers=0)
    _, two = _epochs(workers=2)
    assert main[1][1].keys() == main[2][1].keys() == set(range(12))
    assert all(main[1][1][i] != main[2][1][i] for i in range(12))  # epochs differ
    assert two[1][1] == main[1][1] and two[2][1] == main[2][1]  # workers change nothing
    _, again = _epochs(workers=2, epochs=(2,))  # a run resumed at epoch 2
    assert again[2][1] == main[2][1]


def test_epoch_index_pairs_seed_like_the_dataset_epoch():
    sd = _noisy_split()
    sd.epoch = 3
    plain = [s["input"] for s in sd.__getitems__([4, 1, 7])]
    sd.epoch = 1  # the pairs' epoch wins over the attribute
    pairs = [s["input"] for s in sd.__getitems__([(3, 4), (3, 1), (3, 7)])]
    assert pairs == plain and float(sd[(3, 4)]["input"]) != float(sd[4]["input"])
    with pytest.raises(ValueError, match="mixes epochs"):
        sd.__getitems__([(1, 0), (2, 1)])
