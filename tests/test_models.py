"""Task models with a local weights file for the backbone (offline pretrained encoders)."""

from __future__ import annotations

import pytest
import torch
import torchvision

from drifthelpers.models import build_task_model, split_model_name, with_encoder_weights


@pytest.fixture(scope="module")
def r34_file(tmp_path_factory):
    net = torchvision.models.resnet34()
    with torch.no_grad():
        net.layer1[0].conv1.weight.fill_(0.25)
    path = tmp_path_factory.mktemp("w") / "resnet34.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.mark.slow
def test_unetplusplus_encoder_from_a_file(r34_file):
    name = with_encoder_weights("unetplusplus", r34_file)
    base, path, digest = split_model_name(name)
    assert base == "unetplusplus" and path == str(r34_file.resolve()) and len(digest) == 16
    model = build_task_model(name, num_classes=1)
    assert torch.all(model.encoder.layer1[0].conv1.weight == 0.25)
    assert not torch.all(build_task_model("unetplusplus", num_classes=1).encoder.layer1[0].conv1.weight == 0.25)
    packed = build_task_model(name, num_classes=1, in_channels=4)  # first conv stays random, the rest loads
    assert packed.encoder.conv1.weight.shape[1] == 4 and torch.all(packed.encoder.layer1[0].conv1.weight == 0.25)
    assert build_task_model(name, num_classes=1)(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_weights_file_errors(r34_file, tmp_path):
    with pytest.raises(ValueError, match="does not fit the resnet18 backbone"):
        build_task_model("resnet18", weights=str(r34_file))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with_encoder_weights("unetplusplus", tmp_path / "absent.pth")
    with pytest.raises(ValueError, match="no pretrained backbone"):
        with_encoder_weights("small_unet", r34_file)
    changed = tmp_path / "w.pth"
    changed.write_bytes(r34_file.read_bytes())
    name = with_encoder_weights("unetplusplus", changed)
    torch.save({"conv1.weight": torch.zeros(1)}, changed)
    with pytest.raises(ValueError, match="changed"):
        build_task_model(name, num_classes=1)
    assert with_encoder_weights("unetplusplus", "") == "unetplusplus"
