"""Report figures a user looks at: segmentation overlays with a legend, image panels,
readable detection captions, titles naming split and epoch."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from skimage import data as skdata

from thelper_vision import draw
from thelper_vision.consumers import DetectionOverlays, ImagePanels, SegmentationMasks


class _SegTask:
    class_names = ["background", "coin"]
    ignore_index = 255

    @staticmethod
    def palette():
        return [(0, 0, 0), (255, 160, 0)]


def _coins(size: int = 64) -> torch.Tensor:
    img = np.asarray(Image.fromarray(skdata.coins()).resize((size, size)), dtype=np.float32)
    return torch.from_numpy(img / 255.0)[None].repeat(3, 1, 1)  # (3, H, W) in [0, 1]


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().texts]


def test_segmentation_overlays_on_the_input_with_a_legend(tmp_path):
    metric = SegmentationMasks(max_images=4, grid_images=2, task=_SegTask())
    image = _coins()
    inputs = torch.stack([image, image.flip(-1)])  # (2, 3, H, W), normalised floats
    mask = (image[0] > 0.5).long()
    logits = torch.stack([torch.stack([1 - mask, mask]).float()] * 2)  # perfect prediction
    metric.observe_inputs((inputs - 0.5) / 0.25)  # as after a normalize transform
    metric.update(logits, torch.stack([mask, mask]))
    metric.report_context = {"split": "valid", "epoch": 7}
    report = metric.report(tmp_path, "masks")
    grid = np.asarray(Image.open(tmp_path / "masks" / "grid.png"))
    assert grid.ndim == 3 and grid.shape[1] > grid.shape[0] / 3
    assert _legend_texts(report.figure) == ["background", "coin", "ignored (255)"]
    assert report.figure.axes[0].get_title() == "masks: input | true | predicted [valid, epoch 7]"
    # the overlay keeps the input where the class is the background and tints coin pixels
    rgb = draw.to_rgb_uint8(metric._inputs[0][0])
    over = draw.overlay_mask(rgb, mask, _SegTask.palette())
    assert torch.equal(over[:, mask == 0], rgb[:, mask == 0])
    assert not torch.equal(over[:, mask == 1], rgb[:, mask == 1])
    # the index PNGs stay class indices
    assert np.array_equal(np.asarray(Image.open(tmp_path / "masks" / "0000_pred.png")),
                          mask.numpy())


def test_image_panels_show_input_output_target(tmp_path):
    metric = ImagePanels(max_images=3)
    low = torch.rand(4, 3, 8, 8)
    target = torch.rand(4, 3, 16, 16)
    metric.observe_inputs(low)
    metric.update(target * 0.5, target)
    metric.report_context = {"split": "test", "epoch": 3}
    report = metric.report(tmp_path, "panels")
    files = sorted(p.name for p in (tmp_path / "panels").iterdir())
    assert files == ["0000.png", "0001.png", "0002.png", "grid.png"]
    row = np.asarray(Image.open(tmp_path / "panels" / "0000.png"))
    # three 16x16 panels side by side (the 8x8 input upscaled), make_grid padding 2
    assert row.shape[:2] == (16 + 4, 3 * 16 + 4 * 2)
    assert np.array_equal(row[2:18, 2 + 2 * 18:18 + 2 * 18],
                          draw.to_rgb_uint8(target[0]).permute(1, 2, 0).numpy())
    assert "input | output | target [test, epoch 3]" in report.figure.axes[0].get_title()


def test_detection_captions_scale_with_the_image():
    _, small = draw.label_font(100, 120)
    _, large = draw.label_font(1200, 1600)
    assert small == 10 and large == 40
    image = torch.zeros(3, 600, 600, dtype=torch.uint8)
    boxes = torch.tensor([[50.0, 200.0, 300.0, 400.0]])
    plain = draw.draw_boxes(image, boxes, torch.tensor([0]), ["coin"], [(255, 0, 0)],
                            torch.tensor([0.9]))
    scaled = draw.draw_boxes(image, boxes, torch.tensor([0]), ["coin"], [(255, 0, 0)],
                             torch.tensor([0.9]), width=None, scaled=True)
    # the caption (drawn inside the box's top-left corner) covers more pixels with a 20 px
    # font than with PIL's fixed 11 px one; inside the box, away from its outline
    inside = (slice(None), slice(206, 260), slice(56, 294))
    lit_plain, lit_scaled = int((plain[inside] > 0).sum()), int((scaled[inside] > 0).sum())
    assert lit_plain > 0 and lit_scaled > 2 * lit_plain


def test_detection_overlays_have_a_legend(tmp_path):
    task = type("T", (), {"class_names": ["coin", "hole"],
                          "palette": staticmethod(lambda: [(255, 0, 0), (0, 0, 255)])})()
    metric = DetectionOverlays(max_images=1, min_score=0.5, task=task)
    image = _coins(128)
    out = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 60.0]]), "scores": torch.tensor([0.9]),
            "labels": torch.tensor([1])}]
    tgt = [{"boxes": torch.tensor([[12.0, 12.0, 58.0, 58.0]]), "labels": torch.tensor([1]),
            "image": image}]
    metric.update(out, tgt)
    report = metric.report(tmp_path, "overlays")
    assert _legend_texts(report.figure) == ["ground truth", "hole"]
