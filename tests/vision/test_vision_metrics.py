"""Vision metrics against their reference definitions (scikit-learn, scikit-image, hand-worked
detection cases) and the consumers' files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from thelper_vision.consumers import DetectionLogger, DetectionOverlays, SegmentationMasks
from thelper_vision.det_metrics import MeanAveragePrecision
from thelper_vision.detection import Detection
from thelper_vision.metrics import PSNR, SSIM, MeanIoU, PixelAccuracy
from thelper_vision.tasks import Segmentation

SEG = Segmentation(["background", "coin", "edge"], color_map={"coin": [255, 170, 0]})
DET = Detection(["coin", "ring"])


def _seg_batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 3, 10, 12, generator=g)
    targets = torch.randint(0, 3, (3, 10, 12), generator=g)
    targets[0, :2] = 255  # ignored
    targets[1, :, :3] = logits[1].argmax(0)[:, :3]  # some agreement
    return logits, targets


def test_miou_and_pixel_accuracy_match_scikit_learn():
    from sklearn.metrics import accuracy_score, jaccard_score

    miou, acc = MeanIoU(task=SEG), PixelAccuracy(task=SEG)
    preds, trues = [], []
    for seed in (0, 1):
        logits, targets = _seg_batch(seed)
        miou.update(logits, targets)
        acc.update(logits, targets)
        keep = targets != 255
        preds.append(logits.argmax(1)[keep])
        trues.append(targets[keep])
    y_pred, y_true = torch.cat(preds).numpy(), torch.cat(trues).numpy()
    assert miou.compute() == pytest.approx(jaccard_score(y_true, y_pred, average="macro"))
    assert acc.compute() == pytest.approx(accuracy_score(y_true, y_pred))


def test_miou_skips_absent_classes_and_writes_csv(tmp_path):
    miou = MeanIoU(task=SEG)
    assert miou.compute() is None and miou.report(tmp_path, "miou") is None
    targets = torch.tensor([[[0, 0, 1, 1]]])
    logits = torch.nn.functional.one_hot(torch.tensor([[[0, 1, 1, 1]]]), 3).permute(0, 3, 1, 2)
    miou.update(logits.float(), targets)
    assert miou.compute() == pytest.approx((1 / 2 + 2 / 3) / 2)  # 'edge' is absent
    rows = (tmp_path / "miou.csv").read_text().splitlines() if miou.report(
        tmp_path, "miou") else []
    assert rows[0] == "class,iou,pixels" and rows[3] == "edge,,0"


def test_psnr_and_ssim_match_scikit_image(astronaut):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    clean = astronaut[:, :96, :128].float() / 255
    g = torch.Generator().manual_seed(0)
    noisy = (clean + 0.05 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    psnr, ssim = PSNR(), SSIM()
    psnr.update(noisy[None], clean[None])
    ssim.update(noisy[None], clean[None])
    assert psnr.compute() == pytest.approx(
        peak_signal_noise_ratio(clean.numpy(), noisy.numpy(), data_range=1.0), rel=1e-5)
    expected = np.mean([structural_similarity(
        clean[c].numpy().astype(np.float64), noisy[c].numpy().astype(np.float64),
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
        for c in range(3)])
    assert ssim.compute() == pytest.approx(expected, abs=2e-4)
    same = SSIM()
    same.update(clean[None], clean[None])
    assert same.compute() == pytest.approx(1.0, abs=1e-5)
    shaved = PSNR(border=4)
    shaved.update(noisy[None], clean[None])
    assert shaved.compute() == pytest.approx(peak_signal_noise_ratio(
        clean[:, 4:-4, 4:-4].numpy(), noisy[:, 4:-4, 4:-4].numpy(), data_range=1.0), rel=1e-5)


def _det(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.int64)}


def _gt(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64)}


A, B = [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]


@pytest.mark.parametrize(("dets", "gts", "iou", "expected"), [
    # every object found, nothing else: AP 1
    ([_det([A, B], [0.9, 0.8], [0, 0])], [_gt([A, B], [0, 0])], 0.5, 1.0),
    # one of two objects found: precision 1 up to recall 0.5 -> 51 of 101 recall points
    ([_det([A], [0.9], [0])], [_gt([A, B], [0, 0])], 0.5, 51 / 101),
    # a false positive scores above the true one: precision 0.5 at every recall
    ([_det([B, A], [0.9, 0.8], [0, 0])], [_gt([A], [0])], 0.5, 0.5),
    # duplicate detections: the second is a false positive, ranked after the match
    ([_det([A, A], [0.9, 0.8], [0, 0])], [_gt([A], [0])], 0.5, 1.0),
    # IoU 0.6 (box [0, 0, 10, 6] vs A) counts at 0.5, not at 0.75
    ([_det([[0, 0, 10, 6]], [0.9], [0])], [_gt([A], [0])], 0.5, 1.0),
    ([_det([[0, 0, 10, 6]], [0.9], [0])], [_gt([A], [0])], 0.75, 0.0),
    # wrong class: a false positive of 'ring' (no ground truth: not averaged), 'coin' missed
    ([_det([A], [0.9], [1])], [_gt([A], [0])], 0.5, 0.0),
    # two images, two classes, averaged over classes
    ([_det([A], [0.9], [0]), _det([B], [0.7], [1])],
     [_gt([A], [0]), _gt([B, A], [1, 1])], 0.5, (1.0 + 51 / 101) / 2),
])
def test_average_precision_cases(dets, gts, iou, expected):
    m = MeanAveragePrecision(iou=iou, task=DET)
    m.update(None, gts)  # training steps: ignored
    m.update(dets, gts)
    assert m.compute() == pytest.approx(expected)


def test_coco_map_averages_thresholds_and_reports(tmp_path):
    m = MeanAveragePrecision(task=DET)
    assert m.compute() is None
    m.update([_det([[0, 0, 10, 8]], [0.9], [0])], [_gt([A], [0])])  # IoU 0.8
    assert m.compute() == pytest.approx(7 / 10)  # thresholds 0.50 .. 0.80 of ten
    report = m.report(tmp_path, "map")
    data = json.loads(report.files[0].read_text())
    assert data["map_50"] == 1.0 and data["map_75"] == 1.0 and data["map"] == pytest.approx(0.7)
    assert data["per_class"]["coin"]["0.85"] == 0.0


def test_segmentation_masks_are_palette_pngs(tmp_path):
    writer = SegmentationMasks(max_images=2, task=Segmentation(["bg", "coin"], ignore_index=255))
    logits = torch.zeros(3, 2, 4, 5)
    logits[:, 1, :2] = 1.0
    targets = torch.zeros(3, 4, 5, dtype=torch.int64)
    targets[:, 0, 0] = 255
    writer.update(logits, targets)
    report = writer.report(tmp_path, "masks")
    assert report.figure is not None
    pred = Image.open(tmp_path / "masks" / "0000_pred.png")
    assert pred.mode == "P" and np.array(pred)[:2].min() == 1 and np.array(pred)[2:].max() == 0
    assert np.array(Image.open(tmp_path / "masks" / "0001_true.png"))[0, 0] == 255
    assert not (tmp_path / "masks" / "0002_pred.png").exists()
    assert (tmp_path / "masks" / "grid.png").is_file()


def test_detection_logger_and_overlays(tmp_path):
    dets = [_det([A, B], [0.9, 0.01], [0, 1])]
    gts = [{**_gt([A], [0]), "image": torch.rand(3, 32, 40)}]
    logger, overlays = DetectionLogger(min_score=0.05, task=DET), DetectionOverlays(task=DET)
    for m in (logger, overlays):
        m.update(None, gts)
        m.update(dets, gts)
    logger.report(tmp_path, "detections")
    rows = json.loads((tmp_path / "detections.json").read_text())
    assert rows == [{"index": 0, "detections": [
        {"box": A, "label": 0, "class": "coin", "score": 0.9}],
        "targets": [{"box": A, "label": 0, "class": "coin"}]}]
    report = overlays.report(tmp_path, "overlays")
    assert report.figure is not None
    drawn = np.array(Image.open(tmp_path / "overlays" / "0000.png"))
    assert drawn.shape == (32, 40, 3)


def test_core_confusion_matrix_counts_pixels():
    from thelper.metrics import ConfusionMatrix

    logits, targets = _seg_batch(0)
    cm, miou = ConfusionMatrix(task=SEG), MeanIoU(task=SEG)
    cm.update(logits, targets)
    miou.update(logits, targets)
    assert torch.equal(cm.matrix, miou.matrix) and int(cm.matrix.sum()) == 3 * 10 * 12 - 24
