"""Classification models: a small CNN and ``torchvision.models`` architectures.

Every factory takes the ``task`` (a :class:`thelper.tasks.Classification`, or any task with
``num_classes``) and returns an ``nn.Module`` mapping images ``(N, C, H, W)`` (float) to logits
``(N, num_classes)`` (float).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from thelper_vision.params import TORCHVISION_MODELS

__all__ = ["SimpleCNN", "simple_cnn", "torchvision_model", "torchvision_zoo"]

logger = logging.getLogger(__name__)


def _num_classes(task: Any, model: str) -> int:
    num = getattr(task, "num_classes", None)
    if not isinstance(num, int) or num < 1:
        raise ValueError(
            f"model {model!r} needs a classification task to size its output (got task="
            f"{task!r}); give the datasets a task or add a 'task:' block to the config"
        )
    return num


class SimpleCNN(nn.Module):
    """A small CNN for small images (8x8 digits up to about 64x64 photos).

    Stages of ``3x3 conv (padding 1) -> batch norm -> ReLU -> 2x2 max pooling`` (ceil mode, so
    a 1x1 map stays 1x1), then global average pooling and a ``Linear -> ReLU -> Dropout ->
    Linear`` head. Any input size works.

    Args:
        num_classes: Number of output logits ``K``.
        in_channels: Input channels ``C``.
        channels: Output channels of each stage.
        hidden: Width of the hidden linear layer.
        dropout: Dropout probability before the last linear layer.

    Shape:
        Input ``(N, C, H, W)`` float; output logits ``(N, K)`` float.
    """

    def __init__(self, num_classes: int, in_channels: int = 1,
                 channels: Sequence[int] = (32, 64), hidden: int = 128,
                 dropout: float = 0.25) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for width in channels:
            layers += [
                nn.Conv2d(prev, width, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=2, ceil_mode=True),
            ]
            prev = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(prev, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K)`` of images ``(N, C, H, W)``."""
        return self.classifier(self.pool(self.features(x)))


def simple_cnn(*, task: Any = None, in_channels: int = 1, channels: Sequence[int] = (32, 64),
               hidden: int = 128, dropout: float = 0.25) -> SimpleCNN:
    """Build :class:`SimpleCNN` with ``num_classes`` taken from ``task``.

    Raises:
        ValueError: ``task`` has no ``num_classes``.
    """
    return SimpleCNN(_num_classes(task, "simple_cnn"), in_channels=in_channels,
                     channels=list(channels), hidden=hidden, dropout=dropout)


# ---------------------------------------------------------------- torchvision models
def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ValueError(f"{type(model).__name__} has no Conv2d layer to adapt to in_channels")


def _replace_first_conv(model: nn.Module, in_channels: int) -> str:
    """Swap the first ``Conv2d`` for one with ``in_channels`` inputs; return its name."""
    name, conv = _first_conv(model)
    if conv.groups != 1:
        raise ValueError(f"the first convolution ({name}) is grouped; cannot change its inputs")
    new = nn.Conv2d(in_channels, conv.out_channels, kernel_size=conv.kernel_size,
                    stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                    bias=conv.bias is not None, padding_mode=conv.padding_mode)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)
    return name


def _adapt_conv_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt ``(O, 3, k, k)`` RGB conv weights to ``in_channels`` inputs.

    One channel gets the sum over RGB; more channels repeat RGB cyclically, scaled by
    ``3 / in_channels`` so activations keep their magnitude (timm's ``adapt_input_conv``).
    """
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_channels // weight.shape[1])
    return weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (weight.shape[1] / in_channels)


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights_path {path!r} is not a file; give a state dict "
                                "saved with torch.save(model.state_dict(), path)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot load weights_path {path!r} with torch.load(weights_only="
                         f"True): {type(exc).__name__}: {exc}") from exc
    for key in ("model", "state_dict"):
        if isinstance(data, Mapping) and isinstance(data.get(key), Mapping):
            data = data[key]
            break
    if not isinstance(data, Mapping) or not all(
            isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"weights_path {path!r} does not hold a state dict (a mapping of "
                         "parameter names to tensors)")
    state = dict(data)
    if state and all(k.startswith("module.") for k in state):  # saved from DDP
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _adapt_and_load(model: nn.Module, in_channels: int, weights_path: str | None,
                    strict: bool) -> nn.Module:
    """Give ``model`` a first convolution with ``in_channels`` inputs if it has another
    number, then load ``weights_path`` (adapting that convolution's weights; see
    :func:`_load_weights`). Returns ``model``."""
    first_conv = None
    if in_channels != _first_conv(model)[1].in_channels:
        first_conv = _replace_first_conv(model, in_channels)
    if weights_path is not None:
        _load_weights(model, os.path.expanduser(weights_path),
                      first_conv or _first_conv(model)[0], in_channels, strict)
    return model


def _load_weights(model: nn.Module, path: str, first_conv: str | None, in_channels: int,
                  strict: bool) -> None:
    state = _read_state_dict(path)
    key = f"{first_conv}.weight"
    if first_conv is not None and key in state and state[key].shape[1] != in_channels:
        state[key] = _adapt_conv_weight(state[key], in_channels)
    if not strict:
        own = model.state_dict()
        skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        for k in skipped:
            del state[k]
        result = model.load_state_dict(state, strict=False)
        ignored = sorted(set(skipped) | set(result.missing_keys) | set(result.unexpected_keys))
        if ignored:
            logger.warning("weights %s: %d entries not loaded (mismatched, missing or "
                           "unexpected): %s", path, len(ignored), ", ".join(ignored[:10]))
        return
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"weights_path {path!r} does not match the model: {exc}; set "
                         "'weights_strict: false' to skip mismatched entries (e.g. a "
                         "classifier head with another number of classes)") from exc


def torchvision_model(name: str, *, task: Any = None, in_channels: int = 3,
                      weights: None = None, weights_path: str | None = None,
                      weights_strict: bool = True) -> nn.Module:
    """Build a ``torchvision.models`` classifier sized for ``task``.

    Args:
        name: Architecture name, one of :data:`thelper_vision.params.TORCHVISION_MODELS`
            (any name of ``torchvision.models.list_models()`` works too).
        task: Classification task; its ``num_classes`` sizes the head.
        in_channels: Input channels ``C``; when not 3 the first ``Conv2d`` is replaced.
        weights: Must be ``None`` (nothing is downloaded).
        weights_path: Local state dict loaded after the model is built.
        weights_strict: Fail on mismatched entries instead of skipping them.

    Returns:
        ``nn.Module`` mapping ``(N, C, H, W)`` float images to logits ``(N, num_classes)``.

    Raises:
        ValueError: No task, ``weights`` given, unknown name, or weights that do not load.
        FileNotFoundError: ``weights_path`` is not a file.
    """
    import torchvision

    num_classes = _num_classes(task, name)
    if weights is not None:
        raise ValueError("pretrained weights cannot be downloaded; use 'weights_path'")
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(f"{name!r} is not a torchvision classification model")
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    return _adapt_and_load(model, in_channels, weights_path, weights_strict)


class _TorchvisionZoo:
    """``torchvision_zoo.<name>`` is the factory of one curated torchvision model.

    Lets each model be registered with a lazy ``"thelper_vision.models:torchvision_zoo.<name>"``
    factory string while the signature (``task``, ``in_channels``, ...) stays inspectable.
    """

    def __getattr__(self, name: str) -> Callable[..., nn.Module]:
        if name not in TORCHVISION_MODELS:
            raise AttributeError(f"no curated torchvision model named {name!r}")
        return functools.partial(torchvision_model, name)

    def __dir__(self) -> list[str]:
        return sorted(TORCHVISION_MODELS)


torchvision_zoo = _TorchvisionZoo()
