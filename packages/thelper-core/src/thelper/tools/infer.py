"""``thelper infer``: run a trained model (checkpoint or export) on files, folders or a split.

Outputs by task type: classification → ``predictions.csv`` (top-k class names and softmax
scores); regression → ``predictions.csv``; segmentation → ``masks/<input stem>.png`` (class
index per pixel); detection → ``detections.json`` (boxes ``[x1, y1, x2, y2]`` in pixels,
labels, scores). ``inference.yaml`` (the command's settings) and ``training-config.yaml``
(the session's config) are written beside them.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from thelper.exceptions import ConfigError, DataError
from thelper.logs import console, is_interactive

__all__ = ["IMAGE_EXTENSIONS", "infer", "find_inputs"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def find_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Image files given directly or found (recursively, sorted) in folders.

    Raises:
        DataError: A path does not exist, or no image was found.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"input {str(p)!r} does not exist")
    if not files:
        raise DataError(f"no image found in {', '.join(map(str, paths))} "
                        f"(extensions: {', '.join(IMAGE_EXTENSIONS)})")
    return files


def _read_image(path: Path, channels: int) -> torch.Tensor:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("L" if channels == 1 else "RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"cannot decode image {str(path)!r}: {exc}") from None
    t = torch.from_numpy(arr.copy())
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)


def _transforms(specs: list[dict[str, Any]]) -> Any:
    from thelper.data.loaders import Compose
    from thelper.plugins import get_plugin_manager

    registry = get_plugin_manager().registry
    return Compose([registry.build("transform", s["type"], s.get("params") or {})
                    for s in specs])


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def infer(model_path: str | Path, inputs: Sequence[str | Path], out: str | Path, *,
          split: str | None = None, batch_size: int = 32, top_k: int = 3,
          allow_imports: tuple[str, ...] = ()) -> Path:
    """Run inference and write predictions under ``out``.

    Args:
        model_path: Session directory, thelper checkpoint, or an export from
            ``thelper export`` (``.ts.pt``, ``.pt2``, ``.onnx`` with its ``.meta.pt``).
        inputs: Image files or folders (may be empty when ``split`` is given).
        out: Output directory (created).
        split: Also/instead predict this split (``train``, ``valid``, ``test``) of the
            session's config (needs a checkpoint, not an export).
        batch_size: Images per forward pass.
        top_k: Classes listed per image (classification).
        allow_imports: Modules the command line allows the stored config to import.

    Returns:
        The output directory.

    Raises:
        DataError: Missing or undecodable inputs.
        ConfigError: Nothing to predict, or a split requested from an export.
    """
    from thelper.tasks import task_from_dict

    model_path = Path(model_path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    is_export = model_path.is_file() and model_path.name.endswith((".ts.pt", ".pt2", ".onnx"))
    if is_export:
        from thelper.tools.export import load_exported

        run, meta = load_exported(model_path)
        task = task_from_dict(meta["task"])
        transform_specs = meta.get("base_transforms") or []
        channels = int(meta["input_shape"][0])
        config = None
    else:
        from thelper.tools.loading import load_trained

        trained = load_trained(model_path)
        task = trained.task
        config = trained.checkpoint.get("config") or {}
        transform_specs = (config.get("loaders") or {}).get("base_transforms") or []
        shape = trained.checkpoint.get("input_shape") or [3]  # (C, H, W) seen in training
        channels = int(shape[0]) if len(shape) == 3 else 1

        def run(x: torch.Tensor) -> Any:
            with torch.inference_mode():
                return trained.model(x)

    samples: list[tuple[str, Any]] = []
    if inputs:
        transform = _transforms(transform_specs)
        samples += [(str(p), lambda p=p: transform(_read_image(p, channels)))
                    for p in find_inputs(inputs)]
    if split is not None:
        if is_export:
            raise ConfigError("--split needs a session or checkpoint (an export has no data)")
        from thelper.tools.loading import session_data

        data = session_data(trained.checkpoint, allow_imports=allow_imports)
        if split not in data.splits:
            raise ConfigError(f"split {split!r} is empty or undefined in the session "
                              f"(available: {', '.join(data.splits)})")
        ds = data.splits[split]
        from torch.utils.data import default_collate

        collate = task.collate_fn() or default_collate  # e.g. joint image/mask samples
        for i in range(len(ds)):
            name, _, idx = ds.locate(i)
            samples.append((f"{split}/{name}/{idx}",
                            lambda i=i: torch.as_tensor(task.get_input(collate([ds[i]]))[0])))
    if not samples:
        raise ConfigError("nothing to predict: give image files/folders or --split")
    rows: list[dict[str, Any]] = []
    kind = task.type_name
    progress = None
    if is_interactive():
        from rich.progress import Progress

        progress = Progress(console=console, transient=True)
        progress.start()
        bar = progress.add_task("inference", total=len(samples))
    try:
        for chunk in _batches(samples, batch_size):
            x = torch.stack([load() for _, load in chunk]).float()
            outputs = run(x)
            if isinstance(outputs, dict) and "out" in outputs:
                outputs = outputs["out"]
            rows += _decode(kind, task, [n for n, _ in chunk], outputs, out, top_k)
            if progress is not None:
                progress.update(bar, advance=len(chunk))
    finally:
        if progress is not None:
            progress.stop()
    _write_rows(kind, rows, out)
    settings = {"model": str(model_path), "inputs": [str(p) for p in inputs], "split": split,
                "batch_size": batch_size, "top_k": top_k, "task": task.to_dict(),
                "base_transforms": transform_specs, "predictions": len(samples)}
    (out / "inference.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    if config:
        (out / "training-config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def _decode(kind: str, task: Any, names: list[str], outputs: Any, out: Path,
            top_k: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if kind == "classification":
        probs = torch.softmax(outputs.float(), dim=1)
        k = min(top_k, probs.shape[1])
        scores, idx = probs.topk(k, dim=1)
        for name, s, i in zip(names, scores.tolist(), idx.tolist(), strict=True):
            row: dict[str, Any] = {"input": name, "prediction": task.class_names[i[0]],
                                   "score": round(s[0], 6)}
            for r in range(k):
                row[f"top{r + 1}"] = task.class_names[i[r]]
                row[f"top{r + 1}_score"] = round(s[r], 6)
            rows.append(row)
    elif kind == "segmentation":
        import numpy as np
        from PIL import Image

        masks = outputs.argmax(dim=1).to(torch.uint8).cpu().numpy()
        (out / "masks").mkdir(exist_ok=True)
        for name, mask in zip(names, masks, strict=True):
            stem = Path(name).stem if "/" not in name or Path(name).suffix else \
                name.replace("/", "_")
            path = out / "masks" / f"{stem}.png"
            Image.fromarray(np.ascontiguousarray(mask)).save(path)
            rows.append({"input": name, "mask": str(path.relative_to(out))})
    elif kind == "detection" or isinstance(outputs, list):
        names_list = getattr(task, "class_names", None)
        for name, det in zip(names, outputs, strict=True):
            labels = det["labels"].tolist()
            rows.append({"input": name, "boxes": det["boxes"].tolist(),
                         "labels": [names_list[i] if names_list and 0 <= i < len(names_list)
                                    else i for i in labels],
                         "scores": det["scores"].tolist()})
    else:  # regression and other tensor outputs
        flat = outputs.float().reshape(outputs.shape[0], -1).tolist()
        for name, values in zip(names, flat, strict=True):
            row = {"input": name}
            row.update({f"y{j}": round(v, 6) for j, v in enumerate(values)})
            rows.append(row)
    return rows


def _write_rows(kind: str, rows: list[dict[str, Any]], out: Path) -> None:
    if kind == "detection" or (rows and "boxes" in rows[0]):
        (out / "detections.json").write_text(json.dumps(rows, indent=1))
        return
    path = out / ("masks.csv" if kind == "segmentation" else "predictions.csv")
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
