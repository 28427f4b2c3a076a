"""One prediction path (`thelper.predict.Predictor` + output writers): `thelper infer`
predicts what the session's own test pass computed, on its split and on its files.

Every example is trained for one short epoch (`prepare.py` writes the vision examples' data
to a temporary folder), then `infer --split test` must reproduce the test pass (run.json's
metrics, or the per-sample outputs its test metrics wrote) and, where the data are image
files, `infer` on those files must give the same predictions.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from thelper.cli import main
from thelper.exceptions import ConfigError
from thelper.tools.infer import infer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _prepare(example: str, out: Path) -> Any:
    path = EXAMPLES / example / "prepare.py"
    spec = importlib.util.spec_from_file_location(f"prepare_{example.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.prepare(out)


def _train(example: str, save_dir: Path, sets: list[str], epochs: int = 1
           ) -> tuple[Path, dict[str, Any]]:
    """`thelper run` the example for ``epochs``; return its session folder and run.json."""
    args = ["run", str(EXAMPLES / example / "config.yaml"), "--save-dir", str(save_dir),
            "--set", "trainer.device=cpu", "--set", "trainer.progress=false",
            "--set", f"trainer.epochs={epochs}"]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 0
    session = save_dir / example
    run = json.loads((session / "run.json").read_text())
    assert run["status"] == "completed"
    return session, run


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _test_outputs(session: Path) -> Path:
    return session / "output" / session.name / "test"


def _test_indices(session: Path, dataset: str) -> list[int]:
    splits = json.loads((session / "logs" / "splits.json").read_text())
    return splits["datasets"][dataset]["indices"]["test"]


# ------------------------------------------------------------------ classification
@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    return _train("digits-classification", tmp_path_factory.mktemp("digits"), [])


def _digit_pngs(folder: Path, indices: list[int]) -> list[Path]:
    """Test digits as 8-bit grey PNGs (0..16 mapped to 0..255), as a user would save them."""
    from PIL import Image
    from sklearn.datasets import load_digits

    images = load_digits().images
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in indices:
        path = folder / f"{i:04d}.png"
        Image.fromarray(np.round(images[i] * 255 / 16).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def test_digit_images_are_scaled_like_the_dataset(digits, tmp_path):
    """8-bit digit images reach the model in [0, 1], like scikit-learn's digits samples
    (they were fed as 0..255: every score 1.0, about half of them wrong)."""
    session, run = digits
    indices = _test_indices(session, "digits")
    split = {r["input"]: r for r in _rows(infer(session, [], tmp_path / "split", split="test")
                                         / "predictions.csv")}
    from sklearn.datasets import load_digits

    labels = load_digits().target
    correct = sum(split[f"test/digits/{i}"]["prediction"] == str(labels[i]) for i in indices)
    assert correct / len(indices) == pytest.approx(run["test"]["accuracy"], abs=1e-6)

    files = _digit_pngs(tmp_path / "pngs", indices)
    rows = _rows(infer(session, files, tmp_path / "files") / "predictions.csv")
    assert len(rows) == len(indices)
    for row, i in zip(rows, indices, strict=True):
        expected = split[f"test/digits/{i}"]
        assert row["prediction"] == expected["prediction"], (i, row, expected)
        # 8-bit files round k/16 to the nearest 1/255: scores move by a few thousandths
        assert float(row["score"]) == pytest.approx(float(expected["score"]), abs=0.01)
    assert max(float(r["score"]) for r in rows) < 0.999


def test_an_export_decodes_files_like_its_session(digits, tmp_path):
    from thelper.tools.export import export_model

    session, _ = digits
    files = _digit_pngs(tmp_path / "pngs", _test_indices(session, "digits")[:24])
    result = export_model(session, "torchscript", tmp_path / "digits.ts.pt")
    meta = torch.load(result.meta_path, weights_only=True)
    assert meta["input_decoder"] == {"type": "sklearn", "params": {
        "name": "digits", "as_image": True, "scale": True}}
    expected = _rows(infer(session, files, tmp_path / "ckpt") / "predictions.csv")
    rows = _rows(infer(result.path, files, tmp_path / "export", top_k=3) / "predictions.csv")
    assert [r["prediction"] for r in rows] == [r["prediction"] for r in expected]
    for r, e in zip(rows, expected, strict=True):
        assert float(r["score"]) == pytest.approx(float(e["score"]), abs=1e-4)


def test_predictor_gives_probabilities_and_batches_files(digits, tmp_path):
    from thelper.predict import Predictor

    session, _ = digits
    files = _digit_pngs(tmp_path / "pngs", _test_indices(session, "digits")[:5])
    predictor = Predictor.load(session, batch_size=2)
    sample = predictor.preprocess(files[0])
    x = sample["input"]
    assert x.dtype == torch.float32 and x.shape == (1, 8, 8) and 0 <= x.min() <= x.max() <= 1
    batches = list(predictor.predict_files(files))
    assert [len(s) for s, _ in batches] == [2, 2, 1]
    probs = torch.cat([p for _, p in batches])
    assert probs.shape == (5, 10) and torch.allclose(probs.sum(dim=1), torch.ones(5))
    assert [s.stem for s in batches[0][0]] == [files[0].stem, files[1].stem]


# ---------------------------------------------------------------------- regression
@pytest.fixture(scope="module")
def diabetes(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    return _train("diabetes-regression", tmp_path_factory.mktemp("diabetes"), [])


def test_regression_predictions_are_in_target_units(diabetes, tmp_path):
    """Standardised outputs (y0 = -0.505) are brought back to target units (113.2)."""
    session, run = diabetes
    rows = _rows(infer(session, [], tmp_path / "pred", split="test") / "predictions.csv")
    logged = _rows(_test_outputs(session) / "predictions.csv")  # the test pass's own
    assert len(rows) == len(logged) == len(_test_indices(session, "diabetes"))
    predicted = np.array([float(r["y0"]) for r in rows])
    np.testing.assert_allclose(predicted, [float(r["prediction_0"]) for r in logged],
                               rtol=1e-5, atol=1e-3)
    targets = np.array([float(r["target_0"]) for r in logged])
    assert float(np.abs(predicted - targets).mean()) == pytest.approx(run["test"]["mae"],
                                                                     rel=1e-4)
    assert predicted.mean() > 50  # standardised values are near 0


def test_files_are_refused_for_feature_vector_models(diabetes, tmp_path, capsys):
    session, _ = diabetes
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (8, 8)).save(image)
    with pytest.raises(ConfigError, match="not images.*--split"):
        infer(session, [image], tmp_path / "pred")
    assert main(["infer", str(session), str(image), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------- autoencoder
def test_autoencoder_writes_images_not_csv_columns(tmp_path):
    """Reconstructions are images/<stem>.png (was: one CSV column per pixel)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    session, run = _train("digits-autoencoder", tmp_path / "runs", [])
    out = infer(session, [], tmp_path / "pred", split="test")
    assert not (out / "predictions.csv").exists()
    index = _rows(out / "images.csv")
    indices = _test_indices(session, "digits")
    assert [r["input"] for r in index] == [f"test/digits/{i}" for i in indices]
    x = load_digits().images[indices] / 16.0
    y = np.stack([np.asarray(Image.open(out / r["image"]), dtype=np.float64) / 255
                  for r in index])
    assert y.shape == x.shape
    # the 8-bit PNGs carry the test pass's reconstructions (up to 1/510 per pixel)
    assert float(((y - x) ** 2).mean()) == pytest.approx(run["test"]["mse"], abs=2e-4)

    from thelper.predict import Predictor

    predictor = Predictor.load(session)
    data = predictor.session_data()
    predictions = torch.cat([p for _, p in predictor.predict_split(data, "test")])
    assert predictions.shape == (len(indices), 1, 8, 8)
    mse = float(((predictions.double()[:, 0] - torch.from_numpy(x)) ** 2).mean())
    assert mse == pytest.approx(run["test"]["mse"], rel=1e-4)


def test_image_writer_keeps_float_data_in_tiff(tmp_path):
    from PIL import Image

    from thelper.writers import Source
    from thelper_vision.tasks import Autoencoding
    from thelper_vision.writers import ImageWriter

    writer = ImageWriter(tmp_path, Autoencoding())  # no range: float32 TIFF
    grey, rgb = torch.randn(2, 1, 5, 6) * 100, torch.randn(1, 3, 4, 4)
    writer.write([Source("a.png", "a"), Source("b.png", "a")], grey)
    writer.write([Source("c.png", "c")], rgb)
    files = writer.close()
    assert {p.name for p in files} == {"a.tif", "a_2.tif", "c.tif", "images.csv"}
    with Image.open(tmp_path / "images" / "a_2.tif") as img:
        np.testing.assert_array_equal(np.asarray(img), grey[1, 0].numpy())
    with Image.open(tmp_path / "images" / "c.tif") as img:
        pages = []
        for k in range(img.n_frames):
            img.seek(k)
            pages.append(np.asarray(img).copy())
    np.testing.assert_array_equal(np.stack(pages), rgb[0].numpy())


# ------------------------------------------------------------------ writer registry
class CountWriter:
    """A third-party writer (registered in-process below)."""

    def __init__(self, out: Path, task: Any) -> None:
        self.out, self.task = out, task


def test_a_plugin_adds_the_writer_of_its_task():
    from thelper.plugins import ThelperPluginManager, hookimpl
    from thelper.registry import ComponentInfo
    from thelper.tasks import Regression
    from thelper.writers import RegressionWriter, writer_class

    class Counting(Regression):
        type_name = "counting"

    pm = ThelperPluginManager(autoload=False)
    assert writer_class(Counting(), pm.registry) == ("regression", RegressionWriter)

    class Plugin:
        @hookimpl
        def thelper_register_components(self) -> list[ComponentInfo]:
            return [ComponentInfo("writer", "counting", f"{__name__}:CountWriter")]

    pm.register(Plugin(), "counting")
    assert writer_class(Counting(), pm.registry) == ("counting", CountWriter)


def test_every_task_and_file_dataset_has_its_writer_and_decoder(tmp_path):
    from PIL import Image

    from thelper.plugins import get_plugin_manager
    from thelper.predict import build_decoder

    registry = get_plugin_manager().registry
    assert set(registry.names("writer")) >= {
        "classification", "regression", "segmentation", "detection", "super_resolution",
        "autoencoding", "multilabel_classification"}
    assert set(registry.names("decoder")) >= {
        "sklearn", "image_file", "image_folder", "segmentation_folder", "coco_detection",
        "super_resolution_folder"}
    path = tmp_path / "x.png"
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8)).save(path)
    for name in ("image_folder", "segmentation_folder", "coco_detection"):
        decoder = registry.build("decoder", name, None, dataset_params={"mode": "L"})
        value = decoder(path)
        image = value["image"] if isinstance(value, dict) else value
        assert image.dtype == torch.uint8 and image.shape == (1, 6, 8), name
        # the params it keeps rebuild it (what an export's metadata stores)
        again = build_decoder({"type": name, "params": decoder.params}, registry)(path)
        assert torch.equal(image, again["image"] if isinstance(again, dict) else again)
    sr = registry.build("decoder", "super_resolution_folder", None,
                        dataset_params={"mode": "L", "scale": 3, "root": "elsewhere"})
    assert sr.params == {"mode": "L", "scale": 3, "upsample": True}
    assert sr(path)["image"].shape == (1, 18, 24)
    digits = registry.build("decoder", "sklearn", None,
                            dataset_params={"name": "digits", "as_image": False, "scale": False})
    x = digits(path)
    assert x.shape == (48,) and float(x.max()) == pytest.approx(47 * 16 / 255)
    with pytest.raises(ConfigError, match="feature vectors"):
        registry.build("decoder", "sklearn", None, dataset_params={"name": "iris"})


# -------------------------------------------------------------------- segmentation
@pytest.mark.slow
def test_segmentation_masks_match_the_test_pass(tmp_path):
    from PIL import Image

    data = tmp_path / "data"
    _prepare("coins-segmentation", data)
    paths = [f"datasets.coins_{s}.params.{k}={data / s / k}" for s in ("train", "test")
             for k in ("images", "masks")]
    # three epochs: after one, every pixel is still predicted as a coin
    session, _ = _train("coins-segmentation", tmp_path / "runs",
                        [*paths, "trainer.optimization.scheduler.params.T_max=3"], epochs=3)
    out = infer(session, [], tmp_path / "split", split="test")
    index = _rows(out / "masks.csv")
    assert len(index) == 6
    logged = _test_outputs(session) / "masks"
    classes = set()
    for i, row in enumerate(index):
        mine = np.asarray(Image.open(out / row["mask"]))
        theirs = np.asarray(Image.open(logged / f"{i:04d}_pred.png"))
        np.testing.assert_array_equal(mine, theirs)
        classes |= set(np.unique(mine).tolist())
    assert classes == {0, 1}
    files = sorted((data / "test" / "images").iterdir())
    by_file = infer(session, files, tmp_path / "files")
    for row in _rows(by_file / "masks.csv"):
        stem = Path(row["input"]).stem
        np.testing.assert_array_equal(np.asarray(Image.open(by_file / row["mask"])),
                                      np.asarray(Image.open(out / "masks" / f"{stem}.png")))
    from thelper.tools.export import export_model

    result = export_model(session, "onnx", tmp_path / "seg.onnx")
    exported = infer(result.path, files, tmp_path / "export")
    for row in _rows(exported / "masks.csv"):
        np.testing.assert_array_equal(np.asarray(Image.open(exported / row["mask"])),
                                      np.asarray(Image.open(by_file / row["mask"])))


# ----------------------------------------------------------------------- detection
def _kept(detections: dict[str, Any], min_score: float = 0.05) -> list[tuple]:
    return [(tuple(round(v, 2) for v in b), lab, round(s, 5))
            for b, lab, s in zip(detections["boxes"], detections["labels"],
                                 detections["scores"], strict=True) if s >= min_score]


@pytest.mark.slow
def test_detections_match_the_test_pass(tmp_path):
    data = tmp_path / "data"
    _prepare("coins-detection", data)
    paths = []
    for s in ("train", "test"):
        paths += [f"datasets.coins_{s}.params.images={data / s / 'images'}",
                  f"datasets.coins_{s}.params.annotations={data / s / 'annotations.json'}"]
    # one epoch detects little above the default 0.05: keep every detection, on both sides
    session, _ = _train("coins-detection", tmp_path / "runs",
                        [*paths, "trainer.optimization.scheduler.params.T_max=1",
                         "model.params.score_threshold=0.0",
                         "trainer.test_metrics.detections.params.min_score=0.0"])
    out = infer(session, [], tmp_path / "split", split="test")
    [mine] = json.loads((out / "detections.json").read_text())
    [theirs] = json.loads((_test_outputs(session) / "detections.json").read_text())
    expected = [(tuple(d["box"]), d["class"], d["score"]) for d in theirs["detections"]]
    got = _kept(mine, min_score=0.0)
    assert len(got) == len(expected) > 0
    for (box, label, score), (ebox, elabel, escore) in zip(got, expected, strict=True):
        assert label == elabel and score == pytest.approx(escore, abs=2e-5)
        np.testing.assert_allclose(box, ebox, atol=0.011)
    files = sorted((data / "test" / "images").iterdir())
    [by_file] = json.loads((infer(session, files, tmp_path / "files") / "detections.json"
                            ).read_text())
    assert by_file["input"] == str(files[0])
    assert by_file["labels"] == mine["labels"]
    np.testing.assert_allclose(by_file["boxes"], mine["boxes"], atol=1e-3)
    np.testing.assert_allclose(by_file["scores"], mine["scores"], atol=1e-5)


# ---------------------------------------------------------------- super-resolution
@pytest.mark.slow
def test_super_resolution_writes_the_test_pass_images(tmp_path):
    from PIL import Image

    from thelper_vision.dense_datasets import SuperResolutionFolder
    from thelper_vision.metrics import PSNR

    data = tmp_path / "data"
    _prepare("super-resolution", data)
    session, run = _train("super-resolution", tmp_path / "runs", [
        f"datasets.photos.params.root={data / 'train'}",
        f"datasets.held_out.params.root={data / 'test'}",
        "datasets.photos.params.stride=128", "trainer.optimization.scheduler.params.T_max=1"])
    out = infer(session, [], tmp_path / "split", split="test")
    assert not (out / "predictions.csv").exists()
    index = _rows(out / "images.csv")
    held_out = SuperResolutionFolder(str(data / "test"), scale=3, mode="L")
    assert [Path(r["image"]).name for r in index] == [f"{p.stem}.png" for p in held_out.files]
    from thelper.predict import Predictor

    predictor = Predictor.load(session)
    predictions = torch.cat([p for _, p in predictor.predict_split(predictor.session_data(),
                                                                   "test")])
    targets = torch.stack([held_out[i]["input"]["target"].as_subclass(torch.Tensor)
                           for i in range(len(held_out))])
    psnr = PSNR(border=3)
    psnr.update(predictions, targets.float() / 255)
    assert psnr.compute() == pytest.approx(run["test"]["psnr"], abs=1e-3)
    for row, prediction in zip(index, predictions, strict=True):  # 8-bit PNGs of them
        image = np.asarray(Image.open(out / row["image"]))
        expected = (prediction[0] * 255).round().to(torch.uint8).numpy()
        assert image.shape == expected.shape
        assert np.abs(image.astype(int) - expected).max() <= 1  # batch-size float noise

    # low-resolution files (the dataset's inputs before upsampling) give the same images
    low = SuperResolutionFolder(str(data / "test"), scale=3, mode="L", upsample=False)
    (tmp_path / "lr").mkdir()
    files = []
    for i, path in enumerate(low.files):
        lr = low[i]["input"]["image"].as_subclass(torch.Tensor)[0].numpy()
        files.append(tmp_path / "lr" / path.name)
        Image.fromarray(lr).save(files[-1])
    by_file = infer(session, files, tmp_path / "files")
    for row in _rows(by_file / "images.csv"):
        np.testing.assert_array_equal(np.asarray(Image.open(by_file / row["image"])),
                                      np.asarray(Image.open(out / row["image"])))
