"""Declared states of the vision metrics (``Metric.add_state``): the base class resets and
checkpoints them, and ``merge_states`` reduces several ranks' states into what one process
that saw every batch (in rank order) would hold."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from thelper.metrics import Metric, merge_states
from thelper_vision.det_metrics import MeanAveragePrecision
from thelper_vision.detection import Detection
from thelper_vision.metrics import PSNR, SSIM, MeanIoU, PixelAccuracy, SegmentationConfusion
from thelper_vision.tasks import Segmentation

SEG = Segmentation(["background", "coin", "edge"], ignore_index=255)
DET = Detection(["coin", "ring"])


# ----------------------------------------------------------------------------- batches
def _seg_batches() -> list[tuple[Any, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    batches = []
    for n in (2, 3, 1):
        logits = torch.randn(n, 3, 6, 7, generator=g)
        targets = torch.randint(0, 3, (n, 6, 7), generator=g)
        targets[0, 0] = 255  # ignored
        targets[-1, :, :2] = logits[-1].argmax(0)[:, :2]  # some agreement
        batches.append((logits, targets))
    batches[1] = ({"out": batches[1][0]}, batches[1][1])  # torchvision-style outputs
    return batches


def _image_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    batches = []
    for n in (2, 1, 3):
        clean = torch.rand(n, 3, 16, 18, generator=g)
        noisy = (clean + 0.1 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
        noisy[0, :, :4] = clean[0, :, :4]
        batches.append((noisy, clean))
    return batches


def _random_boxes(g: torch.Generator, n: int) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * 40
    wh = 4 + torch.rand(n, 2, generator=g) * 16
    return torch.cat([xy, xy + wh], dim=1)


def _det_batches() -> list[tuple[Any, list[dict[str, torch.Tensor]]]]:
    g = torch.Generator().manual_seed(2)
    batches: list[tuple[Any, list[dict[str, torch.Tensor]]]] = []
    for n in (2, 3, 2):
        outputs, targets = [], []
        for _ in range(n):
            num_gt = int(torch.randint(0, 4, (1,), generator=g))
            gt_boxes = _random_boxes(g, num_gt)
            gt_labels = torch.randint(0, 2, (num_gt,), generator=g)
            found = torch.rand(num_gt, generator=g) < 0.7
            jitter = torch.randn(num_gt, 4, generator=g) * 1.5
            num_fp = int(torch.randint(0, 3, (1,), generator=g))
            boxes = torch.cat([(gt_boxes + jitter)[found], _random_boxes(g, num_fp)])
            labels = torch.cat([gt_labels[found], torch.randint(0, 2, (num_fp,), generator=g)])
            scores = torch.rand(boxes.shape[0], generator=g)
            outputs.append({"boxes": boxes, "scores": scores, "labels": labels})
            targets.append({"boxes": gt_boxes, "labels": gt_labels})
        batches.append((outputs, targets))
    batches.insert(1, (None, batches[0][1]))  # a training step: no predictions, skipped
    return batches


# ----------------------------------------------------------------------------- metrics
# (id, factory, batches, declared states {name: reduction}, exact)
CASES: list[tuple[str, Callable[[], Metric], Callable[[], list], dict[str, str], bool]] = [
    ("confusion", lambda: SegmentationConfusion(task=SEG), _seg_batches,
     {"_counts": "sum"}, True),
    ("pixel_accuracy", lambda: PixelAccuracy(task=SEG), _seg_batches, {"_counts": "sum"}, True),
    ("miou", lambda: MeanIoU(task=SEG), _seg_batches, {"_counts": "sum"}, True),
    ("psnr", lambda: PSNR(), _image_batches, {"_sum": "sum", "_count": "sum"}, False),
    ("psnr_border", lambda: PSNR(data_range=1.0, border=2), _image_batches,
     {"_sum": "sum", "_count": "sum"}, False),
    ("ssim", lambda: SSIM(), _image_batches, {"_sum": "sum", "_count": "sum"}, False),
    ("ssim_small_window", lambda: SSIM(border=1, window=7, sigma=1.0), _image_batches,
     {"_sum": "sum", "_count": "sum"}, False),
    ("map_coco", lambda: MeanAveragePrecision(task=DET), _det_batches,
     {"_preds": "cat", "_targets": "cat"}, True),
    ("map_50", lambda: MeanAveragePrecision(iou=0.5, max_detections=2, task=DET), _det_batches,
     {"_preds": "cat", "_targets": "cat"}, True),
]
IDS = [c[0] for c in CASES]


def _fed(factory: Callable[[], Metric], batches: list) -> Metric:
    m = factory()
    for outputs, targets in batches:
        m.update(outputs, targets)
    return m


def _gathered(m: Metric) -> dict[str, Any]:
    """What the trainer gathers from a rank: a copy of its state dict, on the CPU."""
    def cpu(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.detach().cpu().clone()
        if isinstance(v, list):
            return [cpu(x) for x in v]
        if isinstance(v, dict):
            return {k: cpu(x) for k, x in v.items()}
        return v
    return {k: cpu(v) for k, v in m.state_dict().items()}


def _merged(factory: Callable[[], Metric], *ranks: Metric) -> Metric:
    m = factory()
    m.load_state_dict(merge_states(m, [_gathered(r) for r in ranks]))
    return m


def _values(m: Metric, out_dir: Path) -> dict[str, Any]:
    """Everything a metric gives the trainer: its value, matrix, table and report files."""
    values: dict[str, Any] = {"compute": m.compute()}
    if isinstance(m, SegmentationConfusion):
        values["matrix"] = m.matrix.tolist()
        values["iou"] = [None if v != v else v for v in m.iou().tolist()]
    if isinstance(m, MeanAveragePrecision):
        table, classes = m._table(m.thresholds)
        values["table"] = [[None if v != v else v for v in row] for row in table.tolist()]
        values["classes"] = classes
        values["images"] = len(m._targets)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = m.report(out_dir, "metric")
    if report is not None:
        values["files"] = {p.name: (json.loads(p.read_text()) if p.suffix == ".json"
                                    else p.read_text()) for p in report.files}
    return values


def _assert_same(actual: dict[str, Any], expected: dict[str, Any], exact: bool) -> None:
    assert actual.keys() == expected.keys()
    if exact or expected["compute"] is None:
        assert actual == expected
    else:
        assert actual["compute"] == pytest.approx(expected["compute"], rel=1e-12)


# ------------------------------------------------------------------------------- tests
@pytest.mark.parametrize(("name", "factory", "batches", "declared", "exact"), CASES, ids=IDS)
def test_merge_of_two_ranks_equals_one_process(tmp_path, name, factory, batches, declared,
                                               exact):
    data = batches()
    single = _fed(factory, data)
    rank0, rank1 = _fed(factory, data[:1]), _fed(factory, data[1:])
    merged = _merged(factory, rank0, rank1)
    expected = _values(single, tmp_path / "single")
    assert expected["compute"] is not None or name == "confusion"
    _assert_same(_values(merged, tmp_path / "merged"), expected, exact)
    if not exact:  # float64 sums: equal up to the order of additions; counts exactly
        assert merged._count == single._count == sum(o.shape[0] for o, _ in data)
        assert merged._sum.dtype == torch.float64
        assert float(merged._sum) == pytest.approx(float(single._sum), rel=1e-12)
    # three ranks, one of them empty (a rank can hold no samples of a short split)
    three = _merged(factory, _fed(factory, data[:2]), factory(), _fed(factory, data[2:]))
    _assert_same(_values(three, tmp_path / "three"), expected, exact)


@pytest.mark.parametrize(("name", "factory", "batches", "declared", "exact"),
                         [c for c in CASES if c[0].startswith("map")],
                         ids=[i for i in IDS if i.startswith("map")])
def test_map_keeps_every_image_through_a_merge(name, factory, batches, declared, exact):
    data = batches()
    single = _fed(factory, data)
    merged = _merged(factory, _fed(factory, data[:2]), _fed(factory, data[2:]))
    assert len(merged._preds) == len(merged._targets) == len(single._targets) == sum(
        len(o) for o, _ in data if o is not None)
    for got, want in zip(merged._preds + merged._targets, single._preds + single._targets,
                         strict=True):
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize(("name", "factory", "batches", "declared", "exact"), CASES, ids=IDS)
def test_reset_restores_a_fresh_state(tmp_path, name, factory, batches, declared, exact):
    data = batches()
    m = _fed(factory, data)
    fresh = factory()
    m.reset()
    assert _values(m, tmp_path / "reset") == _values(fresh, tmp_path / "fresh")
    assert m.state_dict() == fresh.state_dict()
    assert type(m).reset is Metric.reset  # no hand-written reset left
    # and it accumulates from scratch again
    for outputs, targets in data[1:]:
        m.update(outputs, targets)
    _assert_same(_values(m, tmp_path / "again"), _values(_fed(factory, data[1:]),
                                                          tmp_path / "expected"), True)


@pytest.mark.parametrize(("name", "factory", "batches", "declared", "exact"), CASES, ids=IDS)
def test_state_dict_holds_the_declared_states(name, factory, batches, declared, exact):
    m = factory()
    assert {k: fx for k, (_, fx) in m.declared_states().items()} == declared
    assert set(m.state_dict()) == set(declared)
    m = _fed(factory, batches())
    assert set(m.state_dict()) == set(declared)
    with pytest.raises(KeyError):
        m.load_state_dict({"_not_a_state": 0})


@pytest.mark.parametrize(("name", "factory", "batches", "declared", "exact"), CASES, ids=IDS)
def test_merge_with_an_empty_rank_is_the_updated_rank(tmp_path, name, factory, batches,
                                                      declared, exact):
    updated = _fed(factory, batches())
    expected = _values(updated, tmp_path / "updated")
    for i, ranks in enumerate([(factory(), updated), (updated, factory())]):
        merged = _merged(factory, *ranks)
        assert _values(merged, tmp_path / f"merged{i}") == expected  # exactly
    empty = _merged(factory, factory(), factory())
    assert _values(empty, tmp_path / "empty") == _values(factory(), tmp_path / "fresh")


@pytest.mark.parametrize(("name", "factory", "batches", "declared", "exact"), CASES, ids=IDS)
def test_updates_continue_after_a_checkpointed_state(tmp_path, name, factory, batches,
                                                     declared, exact):
    """A mid-epoch checkpoint (``torch.save`` of the state dict) restored into a fresh
    instance goes on accumulating as if never interrupted."""
    data = batches()
    first = _fed(factory, data[:1])
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = factory()
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for outputs, targets in data[1:]:
        resumed.update(outputs, targets)
    _assert_same(_values(resumed, tmp_path / "resumed"),
                 _values(_fed(factory, data), tmp_path / "single"), exact)
    # the checkpointed instance is left alone (no state shared with the restored one)
    assert _values(first, tmp_path / "first") == _values(_fed(factory, data[:1]),
                                                         tmp_path / "first_again")
