"""Backbones: output shapes, small-image stems, and the errors for bad arguments."""
import pytest
import torch

from cwarp.models import ARCHS, build_backbone

FEATURE_DIMS = {"resnet18": 512, "resnet50": 2048, "resnet18-small": 256, "convnet-small": 256,
                "convnet-small-s2": 256}


@pytest.mark.parametrize("arch, in_channels, image_size", [(arch, 3, 32) for arch in ARCHS if arch != "resnet50"] +
                         [(arch, 1, 16 if arch != "convnet-small-s2" else 32) for arch in ARCHS])
def test_forward_gives_features(arch, in_channels, image_size):
    torch.manual_seed(0)
    model = build_backbone(arch, in_channels, image_size).eval()
    assert model.feature_dim == FEATURE_DIMS[arch]
    assert (model.arch, model.in_channels, model.image_size) == (arch, in_channels, image_size)
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, image_size, image_size))
    assert out.shape == (2, model.feature_dim) and torch.isfinite(out).all()


def test_stem_adapts_to_image_size():
    small = build_backbone("resnet18", 3, 64)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, torch.nn.Identity)
    large = build_backbone("resnet18", 3, 112)
    assert large.conv1.kernel_size == (7, 7) and isinstance(large.maxpool, torch.nn.MaxPool2d)
    with torch.no_grad():
        assert large.eval()(torch.randn(1, 3, 112, 112)).shape == (1, 512)


def test_stride_two_stem_quarters_every_map():
    full, s2 = build_backbone("convnet-small", 3, 48), build_backbone("convnet-small-s2", 3, 48)
    assert full.trunk[0].stride == (1, 1) and s2.trunk[0].stride == (2, 2)
    assert full.state_dict().keys() == s2.state_dict().keys()
    with torch.no_grad():
        x = torch.randn(1, 3, 48, 48)
        assert full.trunk(x).shape[-1] == 6 and s2.trunk(x).shape[-1] == 3
    with pytest.raises(ValueError, match="image_size 16 is too small for convnet-small-s2.*at least 32.*by 16"):
        build_backbone("convnet-small-s2", 3, 16)


def test_resnet_state_dict_keeps_torchvision_names():
    keys = build_backbone("resnet18", 3, 64).state_dict().keys()
    assert "conv1.weight" in keys and "layer4.1.bn2.running_var" in keys
    assert not any(key.startswith("fc.") for key in keys)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown arch 'vit'.*resnet18, resnet50, resnet18-small, convnet-small"):
        build_backbone("vit")
    with pytest.raises(ValueError, match="image_size 15 is too small for resnet18.*at least 16"):
        build_backbone("resnet18", 3, 15)
    with pytest.raises(ValueError, match="image_size must be an int"):
        build_backbone("convnet-small", 3, 64.0)
    with pytest.raises(ValueError, match="in_channels must be a positive int"):
        build_backbone("convnet-small", 0, 64)
