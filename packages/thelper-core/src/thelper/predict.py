"""One prediction path: a trained model, its task and its training-time preprocessing.

A :class:`Predictor` is loaded from a session directory, a checkpoint or an export written by
``thelper export``. It holds the model (or the exported program), the task, and the input
preprocessing of training: a *file decoder* that reads a file into what the training
dataset's samples held under the task's ``input_key``, then the config's
``loaders.base_transforms``, then the task's collation. :meth:`Predictor.predict` turns a
batch of model inputs into predictions in the task's own units; ``thelper infer``
(:func:`thelper.tools.infer.infer`) hands them to the task type's output writer
(:mod:`thelper.writers`).

How a file is decoded: the decoder is the registered component of kind ``decoder`` named
after the training dataset's type (its canonical name; the first dataset of
``loaders.train_split``). It is built with that dataset's params and keeps the ones it needs
(e.g. ``mode``), so it decodes a file exactly as the dataset decodes its own: an
``image_folder`` gives a uint8 ``(C, H, W)`` image, scikit-learn's digits a float32
``(1, H, W)`` image in ``[0, 1]``. A dataset type without a decoder gets ``image_file``: the
image as float32 in ``[0, 1]``, grey or RGB after the model's input channels. Exports record
the decoder (``input_decoder`` in ``<file>.meta.pt``) beside the base transforms, so an
export decodes like its session without the training data.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thelper.exceptions import ConfigError, DataError, ThelperError
from thelper.writers import OutputWriter, Source, writer_class

__all__ = ["Predictor", "ImageFileDecoder", "SklearnDecoder", "read_image", "image_file_decoder",
           "sklearn_decoder", "decoder_spec", "build_decoder", "FALLBACK_DECODER"]

log = logging.getLogger("thelper.predict")

#: The decoder of dataset types that register none: an image as float32 in ``[0, 1]``.
FALLBACK_DECODER = "image_file"

_MODES = {1: "L", 3: "RGB"}


# ------------------------------------------------------------------------- decoders
def read_image(path: str | os.PathLike[str], mode: str = "RGB") -> torch.Tensor:
    """Decode an image file with Pillow into a ``(C, H, W)`` tensor of its own bit depth.

    Args:
        path: The image file (a regular file; FIFOs and devices are refused).
        mode: ``"L"`` (grey, C = 1; 16-bit grey files stay 16-bit), ``"RGB"`` (C = 3) or
            ``"unchanged"`` (the file's channels).

    Returns:
        uint8 ``(C, H, W)`` (uint16, or int32 for 32-bit grey files).

    Raises:
        DataError: The file is missing, not a regular file, or not a decodable image.
    """
    from PIL import Image, UnidentifiedImageError

    from thelper.data.files import open_regular

    try:
        with open_regular(path) as f, Image.open(f) as img:
            if mode == "RGB" or (mode == "L" and img.mode not in ("L", "I;16", "I;16B",
                                                                    "I;16L", "I")):
                img = img.convert(mode)
            arr = np.array(img)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"cannot decode image {os.fspath(path)!r}: {exc}") from None
    if arr.dtype == np.int32 and arr.size and 0 <= arr.min() and arr.max() <= 65535:
        arr = arr.astype(np.uint16)  # Pillow reads 16-bit grey PNGs as 32-bit 'I'
    if arr.dtype == np.uint16:
        t = torch.from_numpy(arr.astype(np.int32)).to(torch.uint16)
    else:
        t = torch.from_numpy(np.ascontiguousarray(arr))
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


def _as_unit_float(image: torch.Tensor) -> torch.Tensor:
    """Integer images divided by their dtype's maximum (float32 in ``[0, 1]``)."""
    if image.is_floating_point():
        return image.float()
    return image.to(torch.float32) / float(torch.iinfo(image.dtype).max)


class ImageFileDecoder:
    """An image file as float32 ``(C, H, W)`` in ``[0, 1]`` (8-bit values / 255, 16-bit
    / 65535): the decoder of dataset types that register none.

    Args:
        mode: ``"L"``, ``"RGB"`` or ``"unchanged"``.

    Attributes:
        params: Plain data that rebuilds the decoder (``{"mode": ...}``).
    """

    def __init__(self, mode: str = "RGB") -> None:
        if mode not in ("L", "RGB", "unchanged"):
            raise ConfigError(f"image_file decoder: mode must be L, RGB or unchanged (got "
                              f"{mode!r})")
        self.params = {"mode": mode}

    def __call__(self, path: Path) -> torch.Tensor:
        return _as_unit_float(read_image(path, self.params["mode"]))

    def __repr__(self) -> str:
        return f"ImageFileDecoder(mode={self.params['mode']!r})"


def image_file_decoder(dataset_params: Mapping[str, Any]) -> ImageFileDecoder:
    """The ``image_file`` decoder (``dataset_params``: ``{"mode": ...}``, default RGB)."""
    return ImageFileDecoder(str(dataset_params.get("mode", "RGB")))


class SklearnDecoder:
    """A grey image file as a sample of scikit-learn's digits (``sklearn`` dataset).

    The dataset's pixels are ``0..16``: divided by 16 (``scale: true``) they are float32 in
    ``[0, 1]``, which an 8-bit grey image gives as ``value / 255`` (16-bit: ``/ 65535``);
    with ``scale: false`` the image is brought to ``[0, 16]``. ``as_image: true`` gives
    ``(1, H, W)``, ``false`` the flat ``(H * W,)`` vector (64 values for 8x8 images).

    Args:
        as_image: The dataset's ``as_image``.
        scale: The dataset's ``scale``.

    Attributes:
        params: Plain data that rebuilds the decoder.
    """

    def __init__(self, as_image: bool = True, scale: bool = True) -> None:
        self.params = {"name": "digits", "as_image": bool(as_image), "scale": bool(scale)}

    def __call__(self, path: Path) -> torch.Tensor:
        x = _as_unit_float(read_image(path, "L"))
        if not self.params["scale"]:
            x = x * 16.0
        return x if self.params["as_image"] else x.reshape(-1)

    def __repr__(self) -> str:
        return f"SklearnDecoder(as_image={self.params['as_image']}, scale={self.params['scale']})"


def sklearn_decoder(dataset_params: Mapping[str, Any]) -> SklearnDecoder:
    """The decoder of the ``sklearn`` dataset type (digits only).

    Raises:
        ConfigError: The data set is not ``digits`` (its samples are feature vectors, not
            images).
    """
    name = dataset_params.get("name", "digits")
    if name != "digits":
        raise ConfigError(f"scikit-learn's {name!r} samples are feature vectors, not images; "
                          "files cannot be decoded into them")
    return SklearnDecoder(dataset_params.get("as_image", True), dataset_params.get("scale", True))


def _dataset_params(registry: Any, type_name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """A dataset's params with their defaults (validated by its params model when it can)."""
    try:
        model = registry.get("dataset", type_name).params_model
        return model.model_validate(dict(params)).model_dump()
    except Exception:  # noqa: BLE001 - e.g. paths of another machine: the raw params do
        return dict(params)


def decoder_spec(config: Mapping[str, Any] | None, input_shape: Sequence[int] | None,
                 registry: Any) -> dict[str, Any] | None:
    """``{"type": decoder, "params": {...}}``: how files become inputs of this session.

    The decoder named after the (canonical) type of the first dataset of
    ``loaders.train_split`` (else the first dataset), built with its params; else
    :data:`FALLBACK_DECODER` with the channels of ``input_shape`` (``(C, H, W)``: 1 grey,
    3 RGB).

    Args:
        config: The session's config (a checkpoint's ``config``), or ``None``.
        input_shape: Per-sample model input shape seen in training.
        registry: The component registry.

    Returns:
        The spec (plain data), or ``None`` when the model's inputs are not images and the
        dataset type has no decoder.

    Raises:
        ConfigError: The dataset's decoder refuses its params (e.g. scikit-learn's iris).
        ComponentBuildError: The decoder's factory fails otherwise.
    """
    datasets = dict((config or {}).get("datasets") or {})
    train = dict(((config or {}).get("loaders") or {}).get("train_split") or {})
    names = [n for n, r in train.items() if r and n in datasets] or list(datasets)
    if names:
        spec = datasets[names[0]] or {}
        type_name = str(spec.get("type"))
        canonical = registry.canonical("dataset", type_name) or type_name
        decoder = registry.canonical("decoder", canonical)
        if decoder is not None:
            params = _dataset_params(registry, type_name, spec.get("params") or {})
            built = registry.build("decoder", decoder, None, dataset_params=params)
            return {"type": decoder, "params": dict(getattr(built, "params", {}) or {})}
    shape = list(input_shape or [])
    if len(shape) != 3:
        return None
    return {"type": FALLBACK_DECODER,
            "params": {"mode": _MODES.get(int(shape[0]), "unchanged")}}


def build_decoder(spec: Mapping[str, Any], registry: Any) -> Callable[[Path], Any]:
    """The decoder of a :func:`decoder_spec` spec.

    Raises:
        ComponentNotFoundError: No decoder of that name is registered (a plugin is missing).
    """
    return registry.build("decoder", str(spec["type"]), None,
                          dataset_params=dict(spec.get("params") or {}))


# ------------------------------------------------------------------------- predictor
def _transforms(specs: Sequence[Mapping[str, Any]], registry: Any) -> Any:
    from thelper.data.loaders import Compose

    built = [registry.build("transform", s["type"], s.get("params") or {}) for s in specs]
    return Compose(built) if built else None


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, Mapping):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v) for v in value)
    return value


def _shape_key(value: Any) -> Any:
    """What must agree for samples to be batched together: the image's shape."""
    if isinstance(value, Mapping):
        value = value.get("image", next(iter(value.values()), None))
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Predictor:
    """A trained model with its task and the input preprocessing of its training.

    Build it with :meth:`load`. Per-sample preprocessing (:meth:`preprocess`) decodes a file
    as the training dataset did, then applies ``loaders.base_transforms``; :meth:`collate`
    batches samples with the task's collation; :meth:`predict` runs the model and returns
    predictions in the task's units (see :meth:`predict`).

    Args:
        task: The task the model was trained for.
        forward: Callable on a batch of model inputs (the model, or the exported program).
        transform_specs: ``loaders.base_transforms`` of the session (``[{type, params}]``).
        decoder_spec: How files are decoded (:func:`decoder_spec`), or ``None`` when the
            inputs cannot come from files.
        decoder_error: Why files cannot be decoded (said when files are given).
        input_shape: Per-sample input shape seen in training (``(C, H, W)`` for images).
        device: Where the model runs (exports run on the CPU).
        batch_size: Samples per forward pass.
        source: The session directory, checkpoint or export it was loaded from.
        config: The session's config (``None`` for exports).
        checkpoint: The loaded checkpoint (``None`` for exports).
        export_meta: The export's metadata (``None`` for checkpoints).
        model: The ``torch.nn.Module`` (``None`` for exports).
        registry: The component registry (default: the process's).

    Attributes:
        task, device, batch_size, input_shape, source, config, checkpoint, export_meta,
        model, transform_specs, decoder_spec, registry: As given.
        transform: The built base transforms (``None`` when there are none).

    Raises:
        ConfigError: ``batch_size`` below 1.
        ComponentNotFoundError, ComponentBuildError: A base transform cannot be built (its
            plugin is missing).
    """

    def __init__(self, task: Any, forward: Callable[[Any], Any], *,
                 transform_specs: Sequence[Mapping[str, Any]] = (),
                 decoder_spec: Mapping[str, Any] | None = None, decoder_error: str = "",
                 input_shape: Sequence[int] | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 32, source: str | Path = "",
                 config: Mapping[str, Any] | None = None,
                 checkpoint: Mapping[str, Any] | None = None,
                 export_meta: Mapping[str, Any] | None = None,
                 model: torch.nn.Module | None = None, registry: Any = None) -> None:
        if registry is None:
            from thelper.plugins import get_plugin_manager

            registry = get_plugin_manager().registry
        if int(batch_size) < 1:
            raise ConfigError(f"batch size must be >= 1 (got {batch_size})")
        self.task = task
        self._forward = forward
        self.transform_specs = [dict(s) for s in transform_specs]
        self.decoder_spec = dict(decoder_spec) if decoder_spec else None
        self.decoder_error = decoder_error
        self.input_shape = list(input_shape) if input_shape else None
        self.device = _resolve_device(device)
        self.batch_size = int(batch_size)
        self.source = Path(source)
        self.config = dict(config) if config else None
        self.checkpoint = checkpoint
        self.export_meta = export_meta
        self.model = model
        self.registry = registry
        self.transform = _transforms(self.transform_specs, registry)
        self._decoder: Callable[[Path], Any] | None = None
        self._output: type | None = None

    # ---------------------------------------------------------------- loading
    @property
    def is_export(self) -> bool:
        """Whether the model is an export (no session data, CPU only)."""
        return self.export_meta is not None

    @classmethod
    def load(cls, source: str | Path, *, device: str | torch.device = "cpu",
             batch_size: int = 32) -> Predictor:
        """Load a session directory (its ``ckpt.best.pt``), a checkpoint, or an export.

        An export is a file with a known extension (``.ts.pt``, ``.pt2``, ``.onnx``) or with
        its own ``<file>.meta.pt`` beside it.

        Args:
            source: Session directory, checkpoint file, or export file.
            device: ``cpu``, ``cuda``, ``cuda:1``, ``auto`` (exports always run on the CPU).
            batch_size: Samples per forward pass.

        Raises:
            CheckpointError: No loadable checkpoint there.
            ExportError: An export without its metadata.
        """
        from thelper.plugins import get_plugin_manager
        from thelper.tools.export import FORMATS, load_exported, meta_path_for

        registry = get_plugin_manager().registry
        source = Path(source)
        is_export = source.is_file() and (source.name.endswith(tuple(FORMATS.values()))
                                          or meta_path_for(source).is_file())
        if is_export:
            from thelper.tasks import task_from_dict

            run, meta = load_exported(source)
            shape = meta.get("input_shape")
            if "input_decoder" in meta:
                spec = meta["input_decoder"]
            else:  # exports of earlier versions: the image default
                spec = decoder_spec(None, shape, registry)
            return cls(task_from_dict(meta["task"]), run,
                       transform_specs=meta.get("base_transforms") or [], decoder_spec=spec,
                       input_shape=shape, device="cpu", batch_size=batch_size, source=source,
                       export_meta=meta, registry=registry)
        from thelper.tools.loading import load_trained

        target = _resolve_device(device)
        trained = load_trained(source, map_location="cpu")
        model = trained.model.to(target).eval()
        ckpt = trained.checkpoint
        config = ckpt.get("config") or {}
        shape = ckpt.get("input_shape")
        spec, why = None, ""
        try:
            spec = decoder_spec(config, shape, registry)
        except ThelperError as exc:  # e.g. feature vectors: files are refused when given
            why = str(exc)
        return cls(trained.task, model,
                   transform_specs=(config.get("loaders") or {}).get("base_transforms") or [],
                   decoder_spec=spec, decoder_error=why, input_shape=shape, device=target,
                   batch_size=batch_size, source=trained.path, config=config,
                   checkpoint=ckpt, model=model, registry=registry)

    # ------------------------------------------------------------ preprocessing
    @property
    def decoder(self) -> Callable[[Path], Any]:
        """The file decoder of the training dataset (built on first use).

        Raises:
            ConfigError: The session's inputs cannot come from files (feature vectors).
        """
        if self._decoder is None:
            if self.decoder_spec is None:
                why = self.decoder_error or (
                    f"the model takes {tuple(self.input_shape or ())} inputs, not images, and "
                    "its dataset type registers no file decoder")
                raise ConfigError(f"cannot predict files with {self.source}: {why}; predict "
                                  "a split of its session (--split) instead")
            self._decoder = build_decoder(self.decoder_spec, self.registry)
        return self._decoder

    def preprocess(self, path: str | Path) -> dict[str, Any]:
        """One file as a training sample: ``{input_key: decoded and transformed, "path"}``.

        Raises:
            DataError: The file is missing or cannot be decoded (the message names it).
            ConfigError: Files cannot be decoded for this model (see :attr:`decoder`).
        """
        path = Path(path)
        decoder = self.decoder
        if not path.is_file():
            raise DataError(f"input {str(path)!r} does not exist or is not a file")
        try:
            value = decoder(path)
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - any decoder failure names the file
            raise DataError(f"cannot decode {str(path)!r}: {type(exc).__name__}: {exc}"
                            ) from exc
        return self.prepare(value, str(path))

    def prepare(self, value: Any, path: str = "") -> dict[str, Any]:
        """A decoded input as a training sample: ``{input_key: base_transforms(value),
        "path": path}``.

        For readers that decode parts of a file themselves (e.g. the windows of a raster in
        thelper-geo's sliding-window inference): ``value`` is what the training dataset's
        samples held under the task's ``input_key`` before the base transforms.
        """
        if self.transform is not None:
            value = self.transform(value)
        return {self.task.input_key: value, "path": path}

    def collate(self, samples: Sequence[Mapping[str, Any]]) -> Any:
        """The model input of a list of samples (the task's collation, then its input key);
        on :attr:`device` for checkpoints, float32 for exports."""
        from torch.utils.data import default_collate

        collate = self.task.collate_fn() or default_collate
        batch = collate(list(samples))
        if self.is_export:
            x = self.task.get_input(batch)
            return torch.as_tensor(x).float()
        batch = self.task.to_device(batch, self.device)
        return self.task.get_input(batch)

    # -------------------------------------------------------------- prediction
    @property
    def output_class(self) -> type:
        """The task's output writer class (:func:`thelper.writers.writer_class`), or
        :class:`~thelper.writers.OutputWriter` when none is registered (its predictions
        are the task's ``decode``)."""
        if self._output is None:
            found = writer_class(self.task, self.registry)
            self._output = found[1] if found is not None else OutputWriter
        return self._output

    def predict(self, inputs: Any) -> Any:
        """Predictions for a batch of model inputs, in the task's units, on the CPU.

        The model's outputs go through the output writer's ``predictions`` (default: the
        task's ``decode``): classification gives softmax probabilities ``(N, C)`` float32;
        regression values ``(N, *target_shape)`` in target units (de-standardised, clamped
        to the task's range); segmentation class maps ``(N, H, W)`` int64; image-to-image
        tasks images ``(N, C, H, W)`` float32 clamped to the task's range; detection
        ``[{"boxes": (K, 4) XYXY pixels, "scores": (K,), "labels": (K,) in 0..K-1}]``.

        Args:
            inputs: What :meth:`collate` returns (e.g. ``(N, C, H, W)`` float32).
        """
        with torch.inference_mode():
            outputs = self._forward(inputs)
            return _to_cpu(self.output_class.predictions(self.task, outputs))

    def forward(self, inputs: Any) -> Any:
        """The model's raw outputs for a batch of model inputs (no decoding), on the model's
        device, under ``torch.inference_mode``.

        Args:
            inputs: What :meth:`collate` returns (e.g. ``(N, C, H, W)`` float32).
        """
        with torch.inference_mode():
            return self._forward(inputs)

    @property
    def runner(self) -> Callable[..., list[Path]] | None:
        """The infer runner registered for the session's file decoder, or ``None``.

        A component of kind ``infer_runner`` named after the decoder (that is, after the
        training dataset's type) predicts whole files itself instead of one sample per file:
        thelper-geo's sliding window over a raster. ``thelper infer`` hands it the files
        (:func:`thelper.tools.infer.infer`); it is called as ``runner(predictor, files,
        out, **options)`` and returns the files it wrote.
        """
        if self.decoder_spec is None:
            return None
        name = self.registry.canonical("infer_runner", str(self.decoder_spec["type"]))
        return None if name is None else self.registry.get("infer_runner", name).load()

    def _batches(self, items: Iterable[tuple[Source, Mapping[str, Any]]]
                 ) -> Iterator[tuple[list[Source], Any]]:
        """``(sources, predictions)`` per batch of at most :attr:`batch_size` samples of one
        input shape."""
        chunk: list[tuple[Source, Mapping[str, Any]]] = []
        key = None
        for item in items:
            k = _shape_key(item[1].get(self.task.input_key))
            if chunk and (len(chunk) >= self.batch_size or k != key):
                yield self._run(chunk)
                chunk = []
            chunk.append(item)
            key = k
        if chunk:
            yield self._run(chunk)

    def _run(self, chunk: list[tuple[Source, Mapping[str, Any]]]) -> tuple[list[Source], Any]:
        sources = [s for s, _ in chunk]
        x = self.collate([sample for _, sample in chunk])
        try:
            return sources, self.predict(x)
        except (RuntimeError, ValueError) as exc:
            shape = tuple(x.shape[1:]) if isinstance(x, torch.Tensor) else None
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise DataError(f"the model fails on {sources[0].name} (input "
                            f"{shape if shape is not None else type(x).__name__}, trained on "
                            f"{tuple(self.input_shape or ())}): {type(exc).__name__}: {first}"
                            ) from exc

    def predict_files(self, paths: Sequence[str | Path]) -> Iterator[tuple[list[Source], Any]]:
        """Predict files, preprocessed as in training: ``(sources, predictions)`` per batch.

        Raises:
            DataError: A file is missing or undecodable, or the model fails on it.
            ConfigError: Files cannot be decoded for this model.
        """
        def items() -> Iterator[tuple[Source, dict[str, Any]]]:
            for p in map(Path, paths):
                yield Source(str(p), p.stem), self.preprocess(p)

        return self._batches(items())

    def session_data(self, allow_imports: tuple[str, ...] = (), sets: Sequence[str] = ()
                     ) -> Any:
        """The session's datasets and splits, rebuilt with its seeds.

        Raises:
            ConfigError: An export (no data), or the stored config is invalid or imports
                what ``allow_imports`` does not allow.
        """
        if self.checkpoint is None:
            raise ConfigError("--split needs a session or checkpoint (an export has no data)")
        from thelper.tools.loading import session_data

        return session_data(dict(self.checkpoint), tuple(sets), allow_imports=allow_imports)

    def predict_split(self, data: Any, split: str) -> Iterator[tuple[list[Source], Any]]:
        """Predict a split of the session (its samples as the test pass sees them).

        Sources are named ``<split>/<dataset>/<index>``; files written per sample take the
        stem of the sample's ``path`` where it has one.

        Args:
            data: :meth:`session_data`.
            split: ``train``, ``valid`` or ``test``.

        Raises:
            ConfigError: The split is empty or undefined.
        """
        if split not in data.splits:
            raise ConfigError(f"split {split!r} is empty or undefined in the session "
                              f"(available: {', '.join(data.splits)})")
        ds = data.splits[split]

        def items() -> Iterator[tuple[Source, Any]]:
            for i in range(len(ds)):
                name, _, idx = ds.locate(i)
                sample = ds[i]
                if sample is None:  # skip_bad_samples
                    continue
                label = f"{split}/{name}/{idx}"
                path = sample.get("path")
                stem = Path(path).stem if isinstance(path, str) and path else \
                    label.replace("/", "_")
                yield Source(label, stem), sample

        return self._batches(items())

    def writer(self, out: str | Path, **options: Any) -> OutputWriter:
        """The task's output writer, writing under ``out``.

        Args:
            out: Output directory (created).
            **options: Passed to writers whose constructor names them (``top_k``).

        Raises:
            ConfigError: No writer is registered for the task's type.
        """
        found = writer_class(self.task, self.registry)
        if found is None:
            raise ConfigError(
                f"no output writer is registered for task type {self.task.type_name!r} "
                f"(registered: {', '.join(self.registry.names('writer')) or 'none'}); a plugin "
                "adds one as ComponentInfo(kind='writer', name=<task type>, ...)")
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        return self.registry.build("writer", found[0], None, out=out, task=self.task,
                                   **options)
