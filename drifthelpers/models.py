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
populated torch/timm cache) and fails with a clear message otherwise. A local weights
file works offline: ``weights=PATH`` (a torchvision-style ResNet state dict, e.g. the
ImageNet ResNet34 the paper's U-Net++ encoder started from), or a model name made by
:func:`with_encoder_weights` (``"unetplusplus@/abs/path.pth#sha256=..."``), which carries
the file and its checksum through configurations and checkpoint-cache keys.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

__all__ = ["TASK_MODELS", "build_task_model", "count_parameters", "with_encoder_weights", "split_model_name"]

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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def with_encoder_weights(name: str, path: str | os.PathLike | None) -> str:
    """A model name that starts the encoder (the backbone) from a local weights file.

    Returns ``name`` unchanged when ``path`` is empty or ``None``; otherwise
    ``"<name>@<absolute path>#sha256=<first 16 hex digits>"``. :func:`build_task_model`
    checks the checksum when it loads the file, so a replaced file is noticed and a cached
    model trained from other weights is never mistaken for this one.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: ``name`` is not a model with a ResNet backbone.
    """
    if not path:
        return name
    base = split_model_name(name)[0]
    if base not in ("resnet18", "unet", "unetplusplus"):
        raise ValueError(f"{base!r} has no pretrained backbone; encoder weights fit resnet18, unet, unetplusplus")
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise FileNotFoundError(f"encoder weights file {file} does not exist")
    return f"{base}@{file}#sha256={_sha256(file)[:16]}"


def split_model_name(name: str) -> tuple[str, str | None, str | None]:
    """``(model, weights file or None, sha256 prefix or None)`` of a model name."""
    if "@" not in name:
        return name, None, None
    base, rest = name.split("@", 1)
    path, _, digest = rest.partition("#sha256=")
    return base, path, digest or None


def _load_backbone(module: nn.Module, path: str, digest: str | None, what: str) -> None:
    """Load a ResNet state dict into ``module`` (its ``fc`` head and a mismatched first conv skipped)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"encoder weights file {file} does not exist")
    if digest and not _sha256(file).startswith(digest):
        raise ValueError(f"encoder weights file {file} changed: its SHA-256 no longer starts with {digest}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{file} is not a PyTorch state dict ({type(exc).__name__}: {exc})") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{file} holds a {type(state).__name__}, not a state dict")
    state = {k.removeprefix("module.").removeprefix("encoder."): v for k, v in state.items()}
    own = module.state_dict()
    skip = [k for k in state if k.startswith("fc.") or (k in own and own[k].shape != state[k].shape)]
    state = {k: v for k, v in state.items() if k not in skip}
    missing = [k for k in own if k not in state and k not in skip and not k.startswith("fc.")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ValueError(f"{file} does not fit the {what} backbone: {len(missing)} missing key(s) "
                         f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}")
    module.load_state_dict(state, strict=False)


def build_task_model(name: str, num_classes: int = 9, in_channels: int = 3, weights: str | None = None) -> nn.Module:
    """Build a task model by name.

    Args:
        name: one of :data:`TASK_MODELS`, or such a name with a weights file from
            :func:`with_encoder_weights`.
        num_classes: classes of a classifier, or output channels of a segmenter (1 = binary mask logits).
        in_channels: input channels (3 for RGB; 4 for a packed raw mosaic; with a weights
            file the first convolution then stays randomly initialised).
        weights: ``None`` (default, random init), ``"imagenet"`` (download), or the path
            of a local ResNet state dict for the backbone.

    Returns:
        The model; a classifier returns logits (B, num_classes), a segmenter (B, num_classes, H, W).

    Example:
        >>> m = build_task_model("small_cnn", num_classes=9)
        >>> m(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 9])
    """
    name, file, digest = split_model_name(name)
    if weights not in (None, "imagenet"):
        file, digest = str(weights), None
        weights = None
    if name not in TASK_MODELS:
        raise ValueError(f"unknown task model {name!r}; choose one of {sorted(TASK_MODELS)}")
    if file is not None:
        if weights is not None:
            raise ValueError("give either weights='imagenet' or a weights file, not both")
        model = build_task_model(name, num_classes, in_channels)
        _load_backbone(model.encoder if hasattr(model, "encoder") else model, file, digest, name)
        return model
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
