"""``thelper export``: TorchScript, ONNX or ``torch.export`` programs, each verified.

Every export is checked against the original model on sample inputs from the session's data
(or random inputs of a given shape): the largest absolute difference of the outputs must stay
under a tolerance, at the sample batch size and at batch size 1 (batch size is dynamic).
A small metadata checkpoint (``<stem>.meta.pt``, plain data) and a JSON copy go beside the
export: task (class names), input shape and dtype, base transforms, format, measured error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from thelper.exceptions import ThelperError
from thelper.tools.loading import load_trained, session_data

__all__ = ["FORMATS", "ExportError", "ExportResult", "export_model", "load_exported"]

FORMATS = {"torchscript": ".ts.pt", "onnx": ".onnx", "exported-program": ".pt2"}


class ExportError(ThelperError):
    """An export failed or did not reproduce the original model within tolerance."""


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
    return torch.as_tensor(trained.task.get_input(collate(samples))).float()


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
                 tolerance: float = 1e-4, allow_imports: tuple[str, ...] = ()
                 ) -> ExportResult:
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

    Raises:
        ExportError: Unknown format, export failure, or a difference above ``tolerance``.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    trained = load_trained(source)
    model = _Unwrap(trained.model).eval()
    x = _sample_inputs(trained, input_shape, batch, allow_imports)
    if out is None:
        session_dir = trained.path.parent.parent
        out = session_dir / "export" / f"model{FORMATS[fmt]}"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    batch_dim = torch.export.Dim("batch", min=1)
    try:
        with torch.no_grad():
            if fmt == "torchscript":
                torch.jit.trace(model, x).save(str(out))
            elif fmt == "exported-program":
                ep = torch.export.export(model, (x,), dynamic_shapes=({0: batch_dim},))
                torch.export.save(ep, str(out))
            else:
                torch.onnx.export(model, (x,), str(out), input_names=["input"],
                                  output_names=["output"], dynamo=True,
                                  dynamic_shapes=({0: batch_dim},), verbose=False)
    except Exception as exc:  # noqa: BLE001 - any exporter failure is reported the same way
        raise ExportError(f"{fmt} export of {trained.checkpoint.get('model_type')!r} failed: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    diff = 0.0
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
    cfg = trained.checkpoint.get("config") or {}
    meta = {
        "format": fmt,
        "model_type": trained.checkpoint.get("model_type"),
        "task": trained.task.to_dict(),
        "input_shape": list(x.shape[1:]),
        "input_dtype": str(x.dtype).replace("torch.", ""),
        "base_transforms": (cfg.get("loaders") or {}).get("base_transforms", []),
        "max_abs_diff": diff,
        "tolerance": tolerance,
        "source": str(trained.path),
        "epoch": trained.checkpoint.get("epoch"),
    }
    meta_path = out.with_name(out.name.split(".")[0] + ".meta.pt")
    torch.save(meta, meta_path)
    meta_path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return ExportResult(out, meta_path, diff, tuple(x.shape))


def load_exported(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Load an export and its metadata: ``(callable on (N, ...) tensors, meta)``.

    Raises:
        ExportError: The metadata file is missing.
    """
    path = Path(path)
    meta_path = path.with_name(path.name.split(".")[0] + ".meta.pt")
    if not meta_path.is_file():
        raise ExportError(f"{meta_path} not found beside {path}; export with 'thelper export'")
    meta = torch.load(meta_path, weights_only=True)
    fmt = meta["format"]

    def run(x: torch.Tensor) -> torch.Tensor:
        return _run_exported(fmt, path, x)

    return run, meta
