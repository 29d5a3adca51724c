"""Task models, built by name: the classifier and the segmenter the paper trains.

* ``"resnet18"`` — torchvision ResNet18 with a new head for the 9 leukocyte classes
  (the paper's classifier).
* ``"unet"`` — segmentation_models_pytorch U-Net with a ResNet18 encoder (the quick
  profile's segmenter); ``"unetplusplus"`` — U-Net++ with a ResNet34 encoder (the
  paper's segmenter, paper profile).
* ``"small_cnn"`` — a four-block CNN classifier, and ``"small_unet"`` — a three-level
  U-Net segmenter, both for teaching runs on a laptop CPU (the quick profile).

Weights default to ``None`` (random initialisation): nothing is downloaded unless
``weights="imagenet"`` is asked for explicitly, which needs network access (or a
populated torch/timm cache) and fails with a clear message otherwise.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TASK_MODELS", "build_task_model", "count_parameters"]

TASK_MODELS = {
    "resnet18": "classification",
    "small_cnn": "classification",
    "unet": "segmentation",
    "unetplusplus": "segmentation",
    "small_unet": "segmentation",
}


def _norm(channels: int) -> nn.Module:
    # GroupNorm, not BatchNorm: the small models train with small batches on a CPU, where
    # BatchNorm's running statistics make the last epoch's evaluation erratic.
    return nn.GroupNorm(min(4, channels), channels)


class _SmallCNN(nn.Module):
    """Four conv blocks (conv-GroupNorm-ReLU-pool) and a linear head; ~0.1 M parameters."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 16):
        super().__init__()
        layers, c = [], in_channels
        for k in range(4):
            out = width * 2**k
            layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), _norm(out), nn.ReLU(inplace=True)]
            layers += [nn.MaxPool2d(2)]
            c = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(-2, -1)))


class _SmallUNet(nn.Module):
    """A three-level U-Net (conv-GroupNorm-ReLU blocks, max-pool down, bilinear up); ~0.1 M parameters."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 12):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), _norm(cout), nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), _norm(cout), nn.ReLU(inplace=True),
            )

        w = width
        self.enc1, self.enc2, self.enc3 = block(in_channels, w), block(w, 2 * w), block(2 * w, 4 * w)
        self.dec2, self.dec1 = block(6 * w, 2 * w), block(3 * w, w)
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.head = nn.Conv2d(w, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"small_unet needs height and width divisible by 4, got {tuple(x.shape[-2:])}")
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up(e3), e2], 1))
        d1 = self.dec1(torch.cat([self.up(d2), e1], 1))
        return self.head(d1)


def _weights_error(name: str, exc: Exception) -> RuntimeError:
    return RuntimeError(
        f"could not load pretrained weights for {name!r} ({type(exc).__name__}: {exc}). "
        "Pretrained weights need network access or a filled torch/timm cache; "
        "use weights=None (the default) to train from scratch."
    )


def build_task_model(name: str, num_classes: int = 9, in_channels: int = 3, weights: str | None = None) -> nn.Module:
    """Build a task model by name.

    Args:
        name: one of :data:`TASK_MODELS`.
        num_classes: classes of a classifier, or output channels of a segmenter (1 = binary mask logits).
        in_channels: input channels (3 for RGB; 4 for a packed raw mosaic).
        weights: ``None`` (default, random init) or ``"imagenet"``.

    Returns:
        The model; a classifier returns logits (B, num_classes), a segmenter (B, num_classes, H, W).

    Example:
        >>> m = build_task_model("small_cnn", num_classes=9)
        >>> m(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 9])
    """
    if name not in TASK_MODELS:
        raise ValueError(f"unknown task model {name!r}; choose one of {sorted(TASK_MODELS)}")
    if weights not in (None, "imagenet"):
        raise ValueError(f"weights must be None or 'imagenet', got {weights!r}")
    if num_classes < 1 or in_channels < 1:
        raise ValueError(f"num_classes and in_channels must be >= 1, got {num_classes}, {in_channels}")

    if name in ("small_cnn", "small_unet"):
        if weights is not None:
            raise ValueError(f"{name} has no pretrained weights; use weights=None")
        return (_SmallCNN if name == "small_cnn" else _SmallUNet)(num_classes, in_channels)

    if name == "resnet18":
        from torchvision.models import ResNet18_Weights, resnet18

        try:
            model = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1 if weights else None)
        except Exception as exc:  # download failures surface as URLError/OSError/RuntimeError
            raise _weights_error(name, exc) from exc
        if in_channels != 3:
            model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        model.fc = nn.Linear(model.fc.in_features, num_classes)
        return model

    import segmentation_models_pytorch as smp

    cls, encoder = (smp.Unet, "resnet18") if name == "unet" else (smp.UnetPlusPlus, "resnet34")
    try:
        return cls(encoder, encoder_weights=weights, in_channels=in_channels, classes=num_classes)
    except Exception as exc:
        if weights is None:
            raise
        raise _weights_error(name, exc) from exc


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) scalars in a model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
