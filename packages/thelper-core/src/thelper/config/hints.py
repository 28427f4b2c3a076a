"""Did-you-mean suggestions and install hints for unknown component names.

``suggest`` compares an unknown ``type:`` with every registered name and alias of its kind;
dotted names (``thelper.nn.resnet.ResNet``) are also compared by their last part, so that
thelper 0.6 class names find their modern equivalents. Each suggestion names the providing
distribution.

``not_installed`` recognises names provided by first-party distributions that may be absent
(thelper-vision, thelper-geo, thelper-gui) from a small static table, and says which
distribution to install, or why its plugin did not load. The table lists names as of this
release; names that a distribution registers but that are missing here only lose the install
hint (``tests/core/test_config_hints.py`` checks the table against the installed plugins).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from thelper.registry import Registry

__all__ = ["suggest", "not_installed", "KNOWN_ELSEWHERE", "KNOWN_PREFIXES",
           "KNOWN_SECTIONS", "LEGACY_TYPES", "legacy_type_hint"]

_VISION_TRANSFORMS = (
    "resize", "center_crop", "random_crop", "random_resized_crop", "random_horizontal_flip",
    "random_vertical_flip", "random_rotation", "random_affine", "color_jitter",
    "gaussian_blur", "normalize", "to_float", "grayscale", "random_grayscale", "pad",
    "random_erasing",
)
_VISION_MODELS = (
    "simple_cnn", "resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_small",
    "mobilenet_v3_large", "efficientnet_b0", "densenet121", "shufflenet_v2_x0_5",
    "squeezenet1_0", "vgg11_bn", "convnext_tiny", "regnet_y_400mf",
)

#: ``{distribution: {kind: names}}`` of first-party components that may not be installed.
KNOWN_ELSEWHERE: dict[str, dict[str, tuple[str, ...]]] = {
    "thelper-vision": {
        "dataset": ("image_folder", "torchvision.datasets.ImageFolder"),
        "transform": _VISION_TRANSFORMS + ("thelper.transforms.Resize",),
        "model": _VISION_MODELS + ("thelper.nn.SimpleCNN",),
    },
}

#: Name prefixes (any kind) that only a first-party distribution provides.
KNOWN_PREFIXES: dict[str, tuple[str, ...]] = {
    "thelper-vision": ("thelper_vision.", "torchvision.transforms.", "torchvision.models."),
    "thelper-geo": ("thelper_geo.", "thelper.data.geo."),
    "thelper-gui": ("thelper_gui.", "thelper.gui."),
}

#: Top-level config sections that a first-party distribution declares.
KNOWN_SECTIONS: dict[str, str] = {"annotator": "thelper-gui"}

#: thelper 0.6 class names with no alias, and what to write instead: ``{(kind, name): hint}``.
LEGACY_TYPES: dict[tuple[str, str], str] = {
    ("model", "thelper.nn.resnet.ResNet"):
        "thelper 0.6's ResNet (ResNet-34 by default) is 'resnet34' (thelper-vision); the "
        "output layer is sized from the task",
    ("model", "thelper.nn.mobilenet.MobileNetV2"):
        "thelper 0.6's MobileNetV2 is 'mobilenet_v2' (thelper-vision)",
    ("transform", "thelper.transforms.NormalizeMinMax"):
        "thelper 0.6's min-max normalisation has no alias: use 'normalize' (thelper-vision), "
        "(x - mean) / std per channel",
    ("transform", "Augmentor.Pipeline"):
        "Augmentor pipelines are not supported: list the torchvision transforms instead "
        "(e.g. 'random_rotation', 'random_horizontal_flip', 'random_vertical_flip'; "
        "'thelper plugins list' shows them all)",
    ("transform", "albumentations.Compose"):
        "albumentations pipelines are not supported: list the torchvision transforms instead "
        "('thelper plugins list' shows them all)",
    ("transform", "thelper.transforms.CenterCrop"):
        "use 'center_crop' (thelper-vision)",
    ("transform", "thelper.transforms.ToGray"): "use 'grayscale' (thelper-vision)",
    ("transform", "thelper.transforms.NoTransform"): "remove the transform",
}


def _numbers(value: Any) -> list[float] | None:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(x, int | float) and not isinstance(x, bool)
                            for x in items):
        return None
    return [float(x) for x in items]


def _minmax_as_normalize(params: Any) -> str | None:
    """``normalize`` params equal to 0.6's ``NormalizeMinMax(min, max)`` on 8-bit images.

    0.6 computed ``(x - min) / (max - min)`` on raw values ``x`` in ``[0, 255]``;
    ``normalize`` sees ``x / 255`` (it scales uint8 images, and ``ToTensor`` does too), so
    ``mean = min / 255`` and ``std = (max - min) / 255`` give the same numbers.
    """
    if not isinstance(params, dict):
        return None
    low, high = _numbers(params.get("min")), _numbers(params.get("max"))
    if low is None or high is None or len(low) != len(high) \
            or any(h <= lo for lo, h in zip(low, high, strict=True)):
        return None
    mean = ", ".join(f"{lo / 255:.6g}" for lo in low)
    std = ", ".join(f"{(h - lo) / 255:.6g}" for lo, h in zip(low, high, strict=True))
    return (f"on 8-bit images, (x - min) / (max - min) is {{type: normalize, params: "
            f"{{mean: [{mean}], std: [{std}]}}}}, placed after "
            "'torchvision.transforms.ToTensor'")


def legacy_type_hint(kind: str, name: str, value: Any = None) -> str | None:
    """Advice for a thelper 0.6 ``type`` that has no alias.

    Args:
        kind: Component kind.
        name: The ``type`` (or 0.6 ``operation``) written.
        value: The whole slot (``{type, params}``), to compute exact replacements (the
            ``normalize`` params of a ``NormalizeMinMax``, params to drop).
    """
    hint = LEGACY_TYPES.get((kind, name))
    if hint is None:
        return None
    params = value.get("params") if isinstance(value, dict) else None
    if name == "thelper.transforms.NormalizeMinMax":
        exact = _minmax_as_normalize(params)
        if exact:
            hint += f"; {exact}"
    elif kind == "model" and isinstance(params, dict) and "input_size" in params:
        hint += ", and remove 'params.input_size' (torchvision models take any input size)"
    return hint


def suggest(registry: Registry, kind: str, name: str) -> str:
    """``did you mean 'x' (dist), ...?`` or the list of registered names of ``kind``
    (:meth:`Registry.suggestion`, the one implementation)."""
    return registry.suggestion(kind, name)


@lru_cache(maxsize=16)
def _installed(distribution: str) -> bool:
    from importlib import metadata

    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def _provider(kind: str, name: str) -> str | None:
    for dist, kinds in KNOWN_ELSEWHERE.items():
        if name in kinds.get(kind, ()):
            return dist
    for dist, prefixes in KNOWN_PREFIXES.items():
        if name.startswith(prefixes):
            return dist
    return None


def _failure_text(distribution: str, failures: Iterable[Any]) -> str | None:
    for f in failures:
        if getattr(f, "distribution", None) == distribution:
            return f"{f.name!r} failed to {f.stage}: {f.error}"
    return None


def not_installed(kind: str, name: str, registry: Registry, failures: Iterable[Any] = (),
                  *, section: bool = False) -> str | None:
    """Install hint for a known first-party ``name`` of ``kind`` that is not registered.

    Args:
        kind: Component kind (ignored with ``section=True``).
        name: The unknown ``type`` (or top-level section name with ``section=True``).
        registry: The registry, to tell which distributions did register components.
        failures: The plugin manager's failures (``PluginFailure`` records).
        section: Look ``name`` up as a top-level config section.
    """
    dist = KNOWN_SECTIONS.get(name) if section else _provider(kind, name)
    if dist is None:
        return None
    loaded = {c.distribution for c in registry.components()}
    failure = _failure_text(dist, failures)
    if failure is not None:
        return f"it is provided by {dist}, whose plugin {failure} (run with --traceback)"
    if dist in loaded:
        return None  # installed and loaded: the name is simply not one of its components
    blocked = sorted(n for n, d in getattr(registry, "blocked", {}).items() if d == dist)
    if blocked:
        flags = " ".join(f"-p no:{n}" for n in blocked)
        return (f"it is provided by {dist}, blocked by {flags} (remove it, or the "
                "THELPER_BLOCK_PLUGINS entry, to load it)")
    if _installed(dist):
        return (f"it is provided by {dist}, which is installed but not loaded (check "
                "THELPER_DISABLE_PLUGIN_AUTOLOAD, THELPER_PLUGINS and -p no:NAME)")
    return f"it is provided by {dist}, which is not installed: pip install {dist}"
