"""``thelper export``: TorchScript, ONNX or ``torch.export`` programs, each verified.

Every export is checked against the original model on sample inputs from the session's data
(or random inputs of a given shape): the largest absolute difference of the outputs must stay
under a tolerance, at the sample batch size and at batch size 1 (batch size is dynamic).
A small metadata checkpoint (``<file>.meta.pt``, plain data, e.g. ``model.onnx.meta.pt``) and
a JSON copy (``<file>.meta.json``) go beside the export: task (class names), input shape and
dtype, base transforms, file decoder (``input_decoder``: how ``thelper infer`` decodes
files, see :mod:`thelper.predict`), format, measured error. Named after the whole export file name, they
let every format of a session sit in one folder.

Models whose input is not one ``(N, ...)`` tensor or whose output is not a tensor (detection
models: lists of images in, lists of variable-size detections out) are refused up front.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from thelper.exceptions import ThelperError
from thelper.tools.loading import load_trained, session_data

__all__ = ["FORMATS", "ExportError", "ExportUnsupportedError", "ExportResult", "export_model",
           "load_exported", "meta_path_for"]

FORMATS = {"torchscript": ".ts.pt", "onnx": ".onnx", "exported-program": ".pt2"}


#: Weights above this size go to ``<file>.onnx.data`` (ONNX files are protobufs, capped at 2 GiB).
_ONNX_EXTERNAL_DATA_BYTES = 1536 * 1024**2


class ExportError(ThelperError):
    """An export failed or did not reproduce the original model within tolerance."""


class ExportUnsupportedError(ExportError):
    """The request cannot be exported as asked (unknown format, detection model, ...).

    A usage error: the command line exits with code 2.
    """

    exit_code = 2


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and measured.

    Attributes:
        path: The exported model.
        meta_path: The metadata checkpoint.
        max_abs_diff: Largest ``|original - exported|`` over the checked inputs.
        input_shape: Shape of the sample batch ``(N, ...)``.
    """

    path: Path
    meta_path: Path
    max_abs_diff: float
    input_shape: tuple[int, ...]


def _outputs(value: Any) -> torch.Tensor:
    if isinstance(value, dict):  # e.g. torchvision segmentation models: {"out": ...}
        value = value.get("out", next(iter(value.values())))
    if isinstance(value, list | tuple):
        value = value[0]
    return value


def meta_path_for(path: str | Path) -> Path:
    """The metadata checkpoint of an export: ``<file>.meta.pt`` (``model.onnx.meta.pt``)."""
    path = Path(path)
    return path.with_name(path.name + ".meta.pt")


def _unsupported(trained: Any, why: str) -> ExportUnsupportedError:
    return ExportUnsupportedError(
        f"cannot export the {trained.task.type_name} model "
        f"{trained.checkpoint.get('model_type')!r} of {str(trained.path)!r}: {why}; run "
        "'thelper infer' on the session or checkpoint instead")


def _sample_inputs(trained: Any, input_shape: tuple[int, ...] | None, batch: int,
                   allow_imports: tuple[str, ...] = ()) -> torch.Tensor:
    if input_shape is not None:
        g = torch.Generator().manual_seed(0)
        return torch.rand((batch, *input_shape), generator=g)
    data = session_data(trained.checkpoint, allow_imports=allow_imports)
    split = next(s for s in ("test", "valid", "train") if s in data.loaders)
    dataset = data.loaders[split].dataset
    samples = [dataset[i] for i in range(min(batch, len(dataset)))]
    from torch.utils.data import default_collate

    collate = trained.task.collate_fn() or default_collate  # e.g. joint image/mask samples
    inputs = trained.task.get_input(collate(samples))
    if not isinstance(inputs, torch.Tensor):
        raise _unsupported(trained, f"its input is a {type(inputs).__name__}, and export "
                           "supports models taking one (N, ...) tensor")
    return inputs.float()


class _Unwrap(torch.nn.Module):
    """Return a tensor (``out`` of dict outputs) so every format sees one output."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _outputs(self.model(x))


def _run_exported(fmt: str, path: Path, x: torch.Tensor) -> torch.Tensor:
    if fmt == "torchscript":
        return torch.jit.load(str(path), map_location="cpu")(x)
    if fmt == "exported-program":
        return torch.export.load(str(path)).module()(x)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return torch.from_numpy(sess.run(None, {name: x.numpy()})[0])


def export_model(source: str | Path, fmt: str, out: str | Path | None = None, *,
                 input_shape: tuple[int, ...] | None = None, batch: int = 4,
                 tolerance: float = 1e-4, allow_imports: tuple[str, ...] = (),
                 stage: Callable[[str], None] | None = None) -> ExportResult:
    """Export the model of a session (best checkpoint) or checkpoint, and verify it.

    Args:
        source: Session directory or checkpoint file.
        fmt: ``torchscript``, ``onnx`` or ``exported-program``.
        out: Output file (default: ``<session>/export/model<ext>``).
        input_shape: Per-sample input shape ``(C, H, W)`` to use random inputs instead of
            the session's data.
        batch: Sample batch size for tracing and verification.
        tolerance: Largest accepted absolute difference between original and export.
        allow_imports: Modules the command line allows the stored config to import.
        stage: Called with the name of each stage as it starts (``load``, ``export``,
            ``verify``, ``metadata``): the command's progress bar.

    Raises:
        ExportUnsupportedError: Unknown format, or a model that cannot be exported (detection
            models, non-tensor inputs or outputs); a usage error (exit code 2).
        ExportError: Export failure, or a difference above ``tolerance`` (exit code 1).
    """
    if fmt not in FORMATS:
        raise ExportUnsupportedError(f"unknown export format {fmt!r}; choose one of "
                                     f"{', '.join(FORMATS)}")
    stage = stage or (lambda name: None)
    stage("load")
    trained = load_trained(source)
    if trained.task.type_name == "detection":
        raise _unsupported(trained, "it takes lists of images and returns lists of "
                           "variable-size detections, which export does not support")
    model = _Unwrap(trained.model).eval()
    x = _sample_inputs(trained, input_shape, batch, allow_imports)
    try:
        with torch.no_grad():
            probe = model(x)
    except Exception as exc:  # noqa: BLE001 - e.g. an --input-shape the model does not take
        raise ExportError(f"model {trained.checkpoint.get('model_type')!r} fails on check inputs "
                          f"of shape {list(x.shape)}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}; check --input-shape"
                          ) from exc
    if not isinstance(probe, torch.Tensor):
        raise _unsupported(trained, f"it returns a {type(probe).__name__}, and export supports "
                           "models returning a tensor (or a dict with an 'out' tensor)")
    if out is None:
        session_dir = trained.path.parent.parent
        out = session_dir / "export" / f"model{FORMATS[fmt]}"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    batch_dim = torch.export.Dim("batch", min=1)
    stage("export")
    try:
        with torch.no_grad():
            if fmt == "torchscript":
                torch.jit.trace(model, x).save(str(out))
            elif fmt == "exported-program":
                ep = torch.export.export(model, (x,), dynamic_shapes=({0: batch_dim},))
                torch.export.save(ep, str(out))
            else:
                Path(str(out) + ".data").unlink(missing_ok=True)  # a previous export's weights
                torch.onnx.export(model, (x,), str(out), input_names=["input"],
                                  output_names=["output"], dynamo=True,
                                  dynamic_shapes=({0: batch_dim},), verbose=False,
                                  **_onnx_external_data(model))
    except Exception as exc:  # noqa: BLE001 - any exporter failure is reported the same way
        raise ExportError(f"{fmt} export of {trained.checkpoint.get('model_type')!r} failed: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    diff = 0.0
    stage("verify")
    with torch.no_grad():
        for inputs in (x, x[:1]):  # the sample batch, and batch size 1 (dynamic batch)
            ref = model(inputs)
            got = _run_exported(fmt, out, inputs)
            if got.shape != ref.shape:
                raise ExportError(f"{fmt} export returns shape {tuple(got.shape)} for input "
                                  f"{tuple(inputs.shape)}; the original returns "
                                  f"{tuple(ref.shape)}")
            diff = max(diff, float((got.float() - ref.float()).abs().max()))
    if diff > tolerance:
        raise ExportError(f"{fmt} export differs from the original model by {diff:.3g} > "
                          f"tolerance {tolerance:g}; {out} is kept for inspection")
    stage("metadata")
    cfg = trained.checkpoint.get("config") or {}
    meta = {
        "format": fmt,
        "model_type": trained.checkpoint.get("model_type"),
        "task": trained.task.to_dict(),
        "input_shape": list(x.shape[1:]),
        "input_dtype": str(x.dtype).replace("torch.", ""),
        "base_transforms": (cfg.get("loaders") or {}).get("base_transforms", []),
        "input_decoder": _input_decoder(cfg, trained.checkpoint.get("input_shape")
                                        or list(x.shape[1:])),
        "max_abs_diff": diff,
        "tolerance": tolerance,
        "source": str(trained.path),
        "epoch": trained.checkpoint.get("epoch"),
    }
    meta_path = meta_path_for(out)
    torch.save(meta, meta_path)
    meta_path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return ExportResult(out, meta_path, diff, tuple(x.shape))


def _input_decoder(config: dict[str, Any], input_shape: list[int]) -> dict[str, Any] | None:
    """How ``thelper infer`` decodes files for this model (:func:`thelper.predict.decoder_spec`):
    ``{"type", "params"}``, or ``None`` when its inputs cannot come from files."""
    from thelper.plugins import get_plugin_manager
    from thelper.predict import decoder_spec

    try:
        return decoder_spec(config, input_shape, get_plugin_manager().registry)
    except ThelperError:  # e.g. feature vectors: such an export refuses files
        return None


def _onnx_external_data(model: torch.nn.Module) -> dict[str, bool]:
    """``external_data`` for ``torch.onnx.export``: only for weights near ONNX's 2 GiB limit.

    Recent torch versions default to writing the weights to ``<file>.onnx.data`` for every
    model; one self-contained file is easier to move for the models that fit in one.
    """
    if "external_data" not in inspect.signature(torch.onnx.export).parameters:
        return {}
    size = sum(t.numel() * t.element_size()
               for t in (*model.parameters(), *model.buffers()))
    return {"external_data": size > _ONNX_EXTERNAL_DATA_BYTES}


def _find_meta(path: Path) -> Path | None:
    """The metadata of the export ``path``: ``<file>.meta.pt``, else ``<stem>.meta.pt``
    (written by earlier versions, shared by every format of one stem)."""
    for candidate in (meta_path_for(path), path.with_name(path.name.split(".")[0] + ".meta.pt")):
        if candidate.is_file():
            return candidate
    return None


def load_exported(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Load an export and its metadata: ``(callable on (N, ...) tensors, meta)``.

    The metadata is ``<file>.meta.pt`` beside the export (``model.onnx.meta.pt``); exports of
    earlier versions used ``<stem>.meta.pt`` (``model.meta.pt``), still read when its format
    matches the file's extension.

    Raises:
        ExportError: The metadata file is missing, or describes another format.
    """
    path = Path(path)
    meta_path = _find_meta(path)
    if meta_path is None:
        raise ExportError(f"{meta_path_for(path)} not found beside {path}; export with "
                          f"'thelper export SESSION --out {path}'")
    meta = torch.load(meta_path, weights_only=True)
    fmt = meta["format"]
    named = next((f for f, ext in FORMATS.items() if path.name.endswith(ext)), fmt)
    if named != fmt:
        raise ExportError(f"{meta_path} describes a {fmt} export, not the {named} file {path}; "
                          f"re-export it with 'thelper export SESSION --format {named} --out "
                          f"{path}'")

    def run(x: torch.Tensor) -> torch.Tensor:
        return _run_exported(fmt, path, x)

    return run, meta
