"""The training step reads nothing back from the device: host syncs do not grow with steps.

On a GPU every ``tensor.item()``, ``float(tensor)``, ``bool(tensor)`` or ``.tolist()`` waits for
the queued kernels. thelper's training loop keeps its running loss, NaN/inf check and metric
sums on the device and reads them once per epoch. This test counts those calls on the CPU
(where they are cheap but the code path is the same) inside ``Trainer.train_epoch``, for the
same epoch cut into 12 and into 45 steps, and requires the same count. Calls made by
``torch.optim`` are not counted: Adam reads its step counter, a CPU tensor unless
``capturable``, so no device sync.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import pytest
import torch

SYNC_METHODS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


def _syncs_in_one_epoch(config: dict[str, Any], tmp_path, monkeypatch, batch_size: int) -> int:
    from thelper.config import document_from_dict
    from thelper.runner import run_session
    from thelper.train.trainer import Trainer

    cfg = copy.deepcopy(config)
    cfg["name"] = f"syncs-{batch_size}"
    cfg["loaders"]["batch_size"] = batch_size
    cfg["trainer"]["epochs"] = 1
    # every step's loss goes to thelper_log_scalars: still one read-back per epoch
    cfg["trainer"].setdefault("params", {})["log_every_n_steps"] = 1
    counting = {"on": False, "n": 0}

    def counted(name: str):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            if counting["on"] and "torch/optim" not in sys._getframe(1).f_code.co_filename:
                counting["n"] += 1
            return original(self, *args, **kwargs)

        return wrapper

    for name in SYNC_METHODS:
        monkeypatch.setattr(torch.Tensor, name, counted(name))
    train_epoch = Trainer.train_epoch

    def timed_epoch(self, epoch):
        counting["on"] = True
        try:
            return train_epoch(self, epoch)
        finally:
            counting["on"] = False

    monkeypatch.setattr(Trainer, "train_epoch", timed_epoch)
    run_session(document_from_dict(cfg), tmp_path)
    monkeypatch.undo()
    return counting["n"]


@pytest.mark.parametrize("metrics", ["none", "classification"])
def test_host_syncs_per_epoch_do_not_depend_on_the_number_of_steps(mlp_config, tmp_path,
                                                                   monkeypatch, metrics):
    if metrics == "none":
        mlp_config["trainer"]["metrics"] = {}
        mlp_config["trainer"]["monitor"] = "loss"
    else:
        mlp_config["trainer"]["metrics"]["top3"] = {"type": "accuracy", "params": {"top_k": 3}}
    few = _syncs_in_one_epoch(mlp_config, tmp_path / "few", monkeypatch, batch_size=128)
    many = _syncs_in_one_epoch(mlp_config, tmp_path / "many", monkeypatch, batch_size=32)
    assert few == many, (few, many)
    assert few <= 16  # the epoch-end reads: loss, lr, each metric, the NaN/inf check, the
    # logged steps' losses


def test_the_count_sees_per_step_syncs(mlp_config, tmp_path, monkeypatch):
    """``on_nonfinite_loss: skip`` reads every step's loss by design: the counter must see it."""
    mlp_config["trainer"]["on_nonfinite_loss"] = "skip"
    few = _syncs_in_one_epoch(mlp_config, tmp_path / "few", monkeypatch, batch_size=128)
    many = _syncs_in_one_epoch(mlp_config, tmp_path / "many", monkeypatch, batch_size=32)
    assert many - few == 45 - 12  # one bool(isfinite(loss)) per extra step


def _losses(values):
    return [torch.tensor(v) for v in values]


def test_first_nonfinite_step_across_chunks():
    from thelper.train.trainer import _first_nonfinite

    nan, inf = float("nan"), float("inf")
    first = torch.full((), -1, dtype=torch.int64)
    chunk = _losses([0.5, 0.4, 0.3])  # steps 1-3: all finite
    first = _first_nonfinite(first, chunk, step=3)
    assert chunk == [] and int(first) == -1
    first = _first_nonfinite(first, _losses([0.2, inf, nan, 0.1]), step=7)  # steps 4-7
    assert int(first) == 5
    first = _first_nonfinite(first, _losses([nan]), step=8)  # a later one does not replace it
    assert int(first) == 5
    assert int(_first_nonfinite(torch.full((), -1, dtype=torch.int64), _losses([1.0, -inf]),
                                step=1000)) == 1000
    assert int(_first_nonfinite(first, [], step=9)) == 5
    one_element = [torch.tensor([0.1]), torch.tensor([nan]), torch.tensor([nan])]  # (1,) losses
    assert int(_first_nonfinite(torch.full((), -1, dtype=torch.int64), one_element, 3)) == 2


def test_nan_loss_error_names_the_first_bad_step(mlp_config, tmp_path, monkeypatch):
    """The 300 steps of this epoch span two NaN/inf check chunks; the loss turns NaN at step
    270 (the second chunk) and stays so: the error names step 270."""
    from thelper.config import document_from_dict
    from thelper.exceptions import NonFiniteLossError
    from thelper.runner import run_session
    from thelper.train import trainer as trainer_mod

    assert trainer_mod._NONFINITE_CHUNK < 270
    original = trainer_mod.Trainer.forward_step  # the training step's forward seam

    def forward(self, batch):
        outputs, targets, loss = original(self, batch)
        if self.step + 1 >= 270:  # self.step counts the optimizer steps taken so far
            loss = loss * float("nan")
        return outputs, targets, loss

    monkeypatch.setattr(trainer_mod.Trainer, "forward_step", forward)
    mlp_config["loaders"]["batch_size"] = 4
    mlp_config["trainer"]["epochs"] = 1
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 270;"):
        run_session(document_from_dict(mlp_config), tmp_path)
