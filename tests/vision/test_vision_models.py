"""Vision models: ``simple_cnn`` learns scikit-learn's digits; torchvision models adapt their
input channels and load local state dicts."""

from __future__ import annotations

import pytest
import torch

from thelper.exceptions import ComponentBuildError
from thelper.tasks import Classification
from thelper_vision.params import TORCHVISION_MODELS

TASK = Classification([str(i) for i in range(10)])


def test_curated_names_are_torchvision_classifiers():
    import torchvision

    classifiers = set(torchvision.models.list_models(module=torchvision.models))
    assert set(TORCHVISION_MODELS) <= classifiers


@pytest.mark.parametrize(("params", "shape"), [
    ({}, (4, 1, 8, 8)),
    ({"in_channels": 3, "channels": [16, 32, 64]}, (4, 3, 64, 64)),
    ({"channels": [8, 8, 8, 8]}, (4, 1, 3, 5)),  # maps shrink to 1x1 and stay there
])
def test_simple_cnn_shapes(registry, params, shape):
    model = registry.build("model", "thelper.nn.SimpleCNN", params, task=TASK).eval()
    with torch.no_grad():
        logits = model(torch.rand(shape))
    assert logits.shape == (shape[0], 10) and logits.dtype == torch.float32


def test_simple_cnn_learns_digits(registry):
    """Five epochs of Adam (lr 1e-3, batch 32) reach > 0.9 test accuracy on UCI digits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    torch.manual_seed(0)
    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(digits.target)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.25, stratify=labels, random_state=0)
    model = registry.build("model", "simple_cnn", {}, task=TASK)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: extra threads only add contention on busy machines
    try:
        for _ in range(5):
            model.train()
            order = torch.randperm(len(x_train))
            for start in range(0, len(order), 32):
                batch = order[start:start + 32]
                optimizer.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    with torch.no_grad():
        accuracy = (TASK.decode(model(x_test)) == y_test).float().mean().item()
    assert accuracy > 0.9


def test_model_needs_a_task(registry):
    with pytest.raises(ComponentBuildError, match="needs a classification task"):
        registry.build("model", "simple_cnn", {})
    with pytest.raises(ComponentBuildError, match="needs a classification task"):
        registry.build("model", "squeezenet1_0", {})


def test_pretrained_download_is_refused(registry):
    with pytest.raises(ComponentBuildError, match="weights_path"):
        registry.build("model", "torchvision.models.resnet.resnet18",
                       {"weights": "IMAGENET1K_V1"}, task=TASK)


def test_in_channels_replaces_first_conv(registry):
    model = registry.build("model", "torchvision.models.squeezenet1_0", {"in_channels": 4},
                           task=TASK)
    conv = model.features[0]
    assert conv.in_channels == 4 and conv.out_channels == 96
    assert conv.kernel_size == (7, 7) and conv.stride == (2, 2)
    assert model.eval()(torch.rand(1, 4, 64, 64)).shape == (1, 10)


def test_weights_path_round_trip(registry, tmp_path):
    first = registry.build("model", "shufflenet_v2_x0_5", {"in_channels": 1}, task=TASK)
    path = tmp_path / "weights.pt"
    torch.save({"model": first.state_dict(), "epoch": 3}, path)  # a checkpoint-like dict
    second = registry.build("model", "shufflenet_v2_x0_5",
                            {"in_channels": 1, "weights_path": str(path)}, task=TASK)
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key


def test_rgb_imagenet_like_weights_adapt_to_grey(registry, tmp_path, caplog):
    import torchvision

    rgb = torchvision.models.shufflenet_v2_x0_5(weights=None)  # 3 channels, 1000 classes
    path = tmp_path / "rgb.pt"
    torch.save(rgb.state_dict(), path)
    with pytest.raises(ComponentBuildError, match="weights_strict"):
        registry.build("model", "shufflenet_v2_x0_5",
                       {"in_channels": 1, "weights_path": str(path)}, task=TASK)
    grey = registry.build("model", "shufflenet_v2_x0_5",
                          {"in_channels": 1, "weights_path": str(path),
                           "weights_strict": False}, task=TASK)
    assert torch.allclose(grey.conv1[0].weight, rgb.conv1[0].weight.sum(1, keepdim=True))
    assert torch.equal(grey.stage2[0].branch1[0].weight, rgb.stage2[0].branch1[0].weight)
    assert grey.fc.out_features == 10
    assert "fc.weight" in caplog.text


def test_missing_weights_file(registry, tmp_path):
    with pytest.raises(ComponentBuildError, match="is not a file"):
        registry.build("model", "squeezenet1_0",
                       {"weights_path": str(tmp_path / "missing.pt")}, task=TASK)
