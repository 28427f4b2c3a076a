"""Joint samples: images and their dense targets transformed together.

The core applies the loader transforms (``loaders.base_transforms`` and
``loaders.train_augments``) to the value under the task's ``input_key`` of each sample. The
vision datasets of dense tasks store a *joint sample* there: a dict of
``torchvision.tv_tensors`` such as ::

    {"image": Image (C, H, W), "mask": Mask (H, W)}                      # segmentation
    {"image": Image (C, H, W), "boxes": BoundingBoxes (K, 4), "labels": (K,)}  # detection
    {"image": Image (C, H, W), "target": Image (C, H, W)}                # super-resolution

``torchvision.transforms.v2`` transforms accept such dicts and move every member
consistently: a random crop crops the image, the mask and the boxes at the same place, a
resize uses nearest-neighbour interpolation for masks, colour transforms only touch images.
The task's ``collate_fn`` then unpacks the joint samples into flat batch keys (``input``,
``mask``, ...). Datasets that give plain tensors under separate keys work too, but their
targets are then not transformed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

__all__ = ["IMAGE", "unpack", "plain", "as_float_image", "DenseCollate"]

#: Key of the image inside a joint sample.
IMAGE = "image"


def plain(value: Any) -> Any:
    """A ``tv_tensors`` tensor as a plain ``torch.Tensor`` (other values unchanged)."""
    if isinstance(value, torch.Tensor) and type(value) is not torch.Tensor:
        return value.as_subclass(torch.Tensor)
    return value


def unpack(sample: Mapping[str, Any], input_key: str, members: Mapping[str, str]
           ) -> dict[str, Any]:
    """Flatten one joint sample.

    Args:
        sample: A sample dict; ``sample[input_key]`` is a joint sample (dict) or a tensor.
        input_key: Key of the joint sample; its ``"image"`` becomes ``out[input_key]``.
        members: ``{member of the joint sample: key in the flat sample}``, e.g.
            ``{"mask": "mask"}``.

    Returns:
        A flat sample with plain tensors.
    """
    value = sample[input_key]
    out = {k: v for k, v in sample.items() if k != input_key}
    if isinstance(value, Mapping):
        out[input_key] = plain(value[IMAGE])
        for member, key in members.items():
            if member in value:
                out[key] = plain(value[member])
    else:
        out[input_key] = plain(value)
    return out


def as_float_image(image: torch.Tensor) -> torch.Tensor:
    """Integer images are scaled to float32 in ``[0, 1]`` (as ``to_float`` does); float
    images pass unchanged."""
    if image.is_floating_point():
        return image
    top = float(torch.iinfo(image.dtype).max) if image.dtype != torch.bool else 1.0
    return image.float() / top


class DenseCollate:
    """A picklable collate function for tasks whose targets have the image's size.

    Each sample is unpacked with :func:`unpack`, optionally passed through ``post`` (to fix
    dtypes and shapes), then batched by ``torch.utils.data.default_collate``: tensors are
    stacked, so after the transforms every image of a batch must have the same size.

    Args:
        input_key: Key of the joint sample (and of the batched images).
        members: ``{member of the joint sample: key in the batch}``.
        post: Called on each flat sample before batching.
    """

    def __init__(self, input_key: str, members: Mapping[str, str],
                 post: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        self.input_key = input_key
        self.members = dict(members)
        self.post = post

    def __call__(self, samples: Sequence[Any]) -> dict[str, Any]:
        from torch.utils.data import default_collate

        flat = []
        for s in samples:
            if s is None:
                continue
            f = unpack(s, self.input_key, self.members)
            flat.append(self.post(f) if self.post is not None else f)
        return default_collate(flat)
