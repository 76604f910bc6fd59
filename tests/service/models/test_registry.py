"""The zoo's loading paths: packaged MNIST weights, local CIFAR-10 data and weights, ResNet-50
from a local file; weights_only loading; no silent downloads."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from service.model_settings import ModelSettings
from service.models import ZOO, WeightsError, get_spec
from service.offline.datasets import cifar10_local
from service.offline.train import main as train_main
from service.serving.local import LocalHost
from tests.servers import ServiceProcess


def write_cifar_batches(directory: Path, per_batch: int = 20, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, per_batch).tolist(),
            b"batch_label": name.encode(),
        }
        with (directory / name).open("wb") as fh:
            pickle.dump(batch, fh)


def test_registry_entries() -> None:
    assert {"resnet20-mnist", "resnet20-cifar10", "resnet50-imagenet"} <= set(ZOO)
    assert {"resnet20-mnist-rse", "resnet20-mnist-pni", "resnet20-mnist-pgdat"} <= set(ZOO)
    assert get_spec("resnet50-imagenet").num_classes == 1000
    assert get_spec("resnet20-cifar10").classes[0] == "airplane"
    with pytest.raises(KeyError, match="known"):
        get_spec("vgg")


def test_packaged_mnist_model_takes_unit_pixels() -> None:
    model = get_spec("resnet20-mnist").build()
    # normalization inside the model
    assert model.get_buffer("mean").item() == pytest.approx(0.1307)
    with torch.inference_mode():
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_cifar10_local_batches(tmp_path: Path) -> None:
    write_cifar_batches(tmp_path)
    train, test = cifar10_local(tmp_path, True), cifar10_local(tmp_path, False)
    assert train.images.shape == (100, 3, 32, 32) and test.images.shape == (20, 3, 32, 32)
    assert train.images.dtype == np.float32 and 0 <= train.images.min() <= train.images.max() <= 1
    with pytest.raises(FileNotFoundError):
        cifar10_local(tmp_path / "missing", False)


def test_cifar10_train_then_serve(tmp_path: Path) -> None:
    write_cifar_batches(tmp_path)
    weights, card = tmp_path / "resnet20-cifar10.pt", tmp_path / "card.md"
    train_main(
        [
            "--model",
            "resnet20-cifar10",
            "--data-dir",
            str(tmp_path),
            "--epochs",
            "1",
            "--batch-size",
            "50",
            "--out",
            str(weights),
            "--card",
            str(card),
        ]
    )
    assert "sha256" in card.read_text()
    with ServiceProcess(
        {"model": "resnet20-cifar10", "weights": str(weights), "defense": "snd", "sigma": 0.01}
    ) as server:
        info = httpx.get(server.url + "/models").json()["models"][0]
        assert info["input_shape"] == [3, 32, 32] and info["classes"][9] == "truck"
        x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
        buf = io.BytesIO()
        np.save(buf, x)
        r = httpx.post(
            server.url + "/predict",
            content=buf.getvalue(),
            headers={"Content-Type": "application/x-npy"},
            timeout=30,
        )
        assert r.status_code == 200 and len(r.json()["scores"][0]) == 10


def test_resnet50_from_a_local_file(tmp_path: Path) -> None:
    from torchvision.models import resnet50

    torch.manual_seed(0)
    path = tmp_path / "resnet50.pth"
    torch.save(resnet50(weights=None).state_dict(), path)  # torchvision's plain format
    host = LocalHost.load(
        ModelSettings(
            name="resnet50-imagenet", weights=path, defense={"kind": "snd", "sigma": 0.01}
        ),
        torch.device("cpu"),
        allow_download=False,
    )
    probs = host.forward(np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32))
    assert probs.shape == (1, 1000) and probs.sum() == pytest.approx(1.0, abs=1e-4)


def test_resnet50_without_weights_does_not_download() -> None:
    with pytest.raises(WeightsError, match="local weights"):
        get_spec("resnet50-imagenet").build(None, allow_download=False)


class NotAWeight:
    pass


def test_checkpoints_load_weights_only(tmp_path: Path) -> None:
    spec = get_spec("resnet20-mnist")
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": spec.build_net().state_dict(), "payload": NotAWeight()}, path)
    with pytest.raises(WeightsError, match="cannot load"):
        spec.build(path)
    wrong = tmp_path / "wrong.pt"
    torch.save(get_spec("resnet20-cifar10").build_net().state_dict(), wrong)
    with pytest.raises(WeightsError, match="does not fit"):
        spec.build(wrong)
    with pytest.raises(WeightsError, match="not found"):
        spec.build(tmp_path / "absent.pt")


def test_sigma_zero_snd_equals_the_undefended_model() -> None:
    x = np.random.default_rng(1).random((8, 1, 28, 28), dtype=np.float32)
    device = torch.device("cpu")
    plain = LocalHost.load(ModelSettings(defense={"kind": "none"}), device, False)
    zero = LocalHost.load(ModelSettings(defense={"kind": "snd", "sigma": 0.0}), device, False)
    noisy = LocalHost.load(ModelSettings(defense={"kind": "snd", "sigma": 0.01}), device, False)
    np.testing.assert_array_equal(plain.forward(x), zero.forward(x))
    assert not np.array_equal(plain.forward(x), noisy.forward(x))


def test_bf16_autocast_keeps_the_answers() -> None:
    """The reduced-precision path (CUDA fp16/bf16; bf16 checked here on the CPU) answers like
    fp32, and the noise still reaches the model (answers to one query differ)."""
    from service.offline.datasets import mnist_subset

    test = mnist_subset("test")
    x, y = test.images[:200], test.labels[:200]
    device = torch.device("cpu")
    fp32 = LocalHost.load(ModelSettings(defense={"kind": "none"}), device, False)
    bf16 = LocalHost.load(ModelSettings(defense={"kind": "none"}), device, False, "bf16")
    a, b = fp32.forward(x), bf16.forward(x)
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.98
    assert np.abs(a - b).max() < 0.1 and (b.argmax(1) == y).mean() >= 0.95
    tiny = LocalHost.load(
        ModelSettings(defense={"kind": "snd", "sigma": 0.01}), device, False, "bf16"
    )
    assert not np.array_equal(tiny.forward(x[:4]), tiny.forward(x[:4]))
    with pytest.raises(ValueError, match="CUDA"):
        LocalHost.load(ModelSettings(), device, False, "fp16")
