"""Task models, augmentation, metrics, the fit loop and the checkpoint cache."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from torch import nn

from drifthelpers.models import TASK_MODELS, build_task_model, count_parameters
from drifthelpers.training import (
    CheckpointCache,
    TrainConfig,
    accuracy,
    config_key,
    confusion_matrix,
    evaluate,
    fit,
    iou,
    macro_f1,
    resolve_device,
    loss_function,
    seed_everything,
    train_epoch,
    weak_augment,
)


# ----------------------------------------------------------------------------- models


@pytest.mark.parametrize("name", sorted(TASK_MODELS))
def test_models_build_and_run(name):
    seg = TASK_MODELS[name] == "segmentation"
    model = build_task_model(name, num_classes=1 if seg else 9).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 64))
    assert out.shape == ((2, 1, 64, 64) if seg else (2, 9))
    assert torch.isfinite(out).all()


def test_resnet18_is_torchvision_with_new_head():
    import torchvision

    m = build_task_model("resnet18", num_classes=9)
    assert isinstance(m, torchvision.models.ResNet) and m.fc.out_features == 9
    assert count_parameters(m) == pytest.approx(11.18e6, rel=0.01)


def test_four_channel_input():
    m = build_task_model("resnet18", num_classes=9, in_channels=4).eval()
    assert m(torch.rand(1, 4, 64, 64)).shape == (1, 9)


@pytest.mark.parametrize("kw,error,match", [
    (dict(name="vgg"), ValueError, "unknown task model"),
    (dict(name="resnet18", weights="x"), FileNotFoundError, "weights file .*x does not exist"),  # a local file
])
def test_model_errors(kw, error, match):
    with pytest.raises(error, match=match):
        build_task_model(**kw)


# ----------------------------------------------------------------------------- augmentation


def test_weak_augment_applies_same_symmetry_to_mask():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 8, 8)
    m = x[:, :1].clone()  # the mask is the image's first channel
    xa, ma = weak_augment(x, m, generator=g)
    torch.testing.assert_close(xa[:, :1], ma)


def test_weak_augment_uses_all_eight_symmetries():
    g = torch.Generator().manual_seed(1)
    x = torch.arange(4.0).reshape(1, 1, 2, 2).repeat(200, 1, 1, 1)
    xa, _ = weak_augment(x, generator=g)
    distinct = {tuple(v.flatten().tolist()) for v in xa}
    assert len(distinct) == 8
    # every output is a permutation of the input (a symmetry, not a resampling)
    assert all(sorted(v) == [0.0, 1.0, 2.0, 3.0] for v in distinct)


def test_weak_augment_errors():
    with pytest.raises(ValueError, match="square"):
        weak_augment(torch.rand(1, 3, 4, 6))
    with pytest.raises(ValueError, match="B, C, H, W"):
        weak_augment(torch.rand(3, 4, 4))


# ----------------------------------------------------------------------------- metrics


def test_metrics_hand_checked():
    pred = torch.tensor([0, 1, 1, 2, 2, 2])
    target = torch.tensor([0, 1, 2, 2, 2, 0])
    assert accuracy(pred, target) == pytest.approx(4 / 6)
    cm = confusion_matrix(pred, target, 3)
    assert cm.tolist() == [[1, 0, 1], [0, 1, 0], [0, 1, 2]]
    # F1: class0 2*1/(2+1)=2/3; class1 2*1/(1+2)=2/3; class2 2*2/(3+3)=2/3
    assert macro_f1(pred, target, 3) == pytest.approx(2 / 3)
    # absent classes do not count
    assert macro_f1(pred, target, 9) == pytest.approx(2 / 3)


def test_iou_hand_checked():
    a = torch.tensor([[1, 1, 0, 0]])
    b = torch.tensor([[0, 1, 1, 0]])
    assert iou(a, b) == pytest.approx(1 / 3)
    assert iou(torch.zeros(4), torch.zeros(4)) == 1.0


# ----------------------------------------------------------------------------- fit + cache


class _ColourDataset(torch.utils.data.Dataset):
    """Raw 'mosaics' whose stripe orientation encodes the class: learnable in a few steps.

    (Orientation, not mean level: the small models use GroupNorm, which removes per-image
    mean and scale by design.)
    """

    def __init__(self, n=48, classes=3, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % classes
        yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
        patterns = torch.stack([torch.sin(xx), torch.sin(yy), torch.sin(xx + yy)])[:classes]
        self.raw = 0.5 + 0.3 * patterns[self.labels][:, None] + 0.05 * torch.randn(n, 1, 16, 16, generator=g)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"raw": self.raw[i], "label": self.labels[i]}


class _Replicate(nn.Module):
    """A trivial data model: grey mosaic -> RGB."""

    def forward(self, raw):
        return raw.repeat(1, 3, 1, 1)


@pytest.mark.slow
def test_fit_learns_and_is_deterministic():
    ds = _ColourDataset()
    results = []
    for _ in range(2):
        seed_everything(0)
        model = build_task_model("small_cnn", num_classes=3)
        loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
        cfg = TrainConfig(epochs=8, batch_size=8, lr=2e-3, seed=0, augment="none")  # rotations would mix the stripe classes
        hist = fit(model, _Replicate(), loader, loader, cfg, num_classes=3, progress=False)
        results.append((hist.train_loss, hist.val[-1]))
    assert results[0] == results[1]
    assert results[0][1]["accuracy"] > 0.9  # separable classes: learnt
    assert results[0][0][-1] < results[0][0][0]


def test_fit_val_every_scores_less_often_and_trains_the_same_weights():
    ds = _ColourDataset(n=24)
    runs = {}
    for every in (1, 3):
        seed_everything(0)
        model = build_task_model("small_cnn", num_classes=3)
        loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
        val = torch.utils.data.DataLoader(ds, batch_size=8)  # its own loader: iterating it draws nothing from the training's
        cfg = TrainConfig(epochs=4, batch_size=8, lr=2e-3, seed=0, augment="weak")
        hist = fit(model, _Replicate(), loader, val, cfg, num_classes=3, progress=False, val_every=every)
        runs[every] = (hist, model.state_dict())
    assert len(runs[1][0].val) == 4 and len(runs[3][0].val) == 2  # epochs 3 and 4 (the last one)
    assert runs[1][0].train_loss == runs[3][0].train_loss
    assert runs[1][0].val[-1] == runs[3][0].val[-1]
    assert all(torch.equal(runs[1][1][k], v) for k, v in runs[3][1].items())
    with pytest.raises(ValueError, match="val_every"):
        fit(build_task_model("small_cnn", 3), _Replicate(), loader, None, cfg, num_classes=3, progress=False,
            val_every=0)


class _Gain(nn.Module):
    """A data model with one learnable gain, kept inside [0.5, 2] by ``project_``."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(1.0))
        self.projected = 0

    def forward(self, raw):
        return raw.repeat(1, 3, 1, 1) * self.gain

    @torch.no_grad()
    def project_(self):
        self.projected += 1
        self.gain.clamp_(0.5, 2.0)


def _raw_batches(ds, size):
    return [(ds.raw[i:i + size], ds.labels[i:i + size], True) for i in range(0, len(ds), size)]


@pytest.mark.parametrize("render_grad", [False, True])
def test_train_epoch_one_step_per_batch(render_grad):
    ds = _ColourDataset(n=10)
    seed_everything(0)
    model, dm = build_task_model("small_cnn", num_classes=3), _Gain()
    opt = torch.optim.Adam([{"params": model.parameters()}, {"params": dm.parameters(), "lr": 0.5}], lr=1e-2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    train_epoch(model, dm, _raw_batches(ds, 4), opt, loss_function("classification"), "classification", "weak",
                torch.Generator().manual_seed(0), render_grad=render_grad, project=dm.project_,
                after_step=lambda loss, n: seen.append((loss, n)))
    assert [n for _, n in seen] == [4, 4, 2] and all(loss > 0 for loss, _ in seen)
    assert dm.projected == 3 and model.training and not dm.training
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    # the data model moves only when rendered with gradients, and stays inside its bounds
    assert (dm.gain.grad is not None) == render_grad
    assert (dm.gain.item() != 1.0) == render_grad and 0.5 <= dm.gain.item() <= 2.0


def test_fit_learns_the_data_model_only_with_a_data_learning_rate():
    ds = _ColourDataset(n=12)
    gains = {}
    for data_lr in (0.0, 0.5):
        seed_everything(0)
        model, dm = build_task_model("small_cnn", num_classes=3), _Gain()
        cfg = TrainConfig(epochs=2, batch_size=4, lr=1e-2, data_lr=data_lr, seed=0)
        fit(model, dm, [{"raw": r, "label": t} for r, t, _ in _raw_batches(ds, 4)], None, cfg, num_classes=3,
            progress=False)
        gains[data_lr] = (dm.gain.item(), dm.projected)
    assert gains[0.0] == (1.0, 0)  # frozen: rendered under no_grad, never projected
    assert gains[0.5][0] != 1.0 and 0.5 <= gains[0.5][0] <= 2.0 and gains[0.5][1] == 2 * 3


def test_resolve_device():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(" CPU ") == "cpu"
    assert resolve_device(torch.device("cpu")) == "cpu"
    for bad in ("gpu", "mps", ""):
        with pytest.raises(ValueError, match="device must be"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no usable GPU"):
            resolve_device("cuda:0")


def test_evaluate_rejects_bad_task():
    ds = _ColourDataset(n=6)
    loader = torch.utils.data.DataLoader(ds, batch_size=3)
    with pytest.raises(ValueError, match="task"):
        evaluate(build_task_model("small_cnn", 3), _Replicate(), loader, task="detection")


def test_config_validation_and_key():
    with pytest.raises(ValueError, match="task"):
        TrainConfig(task="detect")
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    a, b = TrainConfig(seed=1), TrainConfig(seed=2)
    assert config_key(a) != config_key(b)
    assert config_key(a) == config_key(TrainConfig(seed=1))


def test_checkpoint_cache_round_trip(tmp_path):
    cache = CheckpointCache(tmp_path)
    m1 = build_task_model("small_cnn", 3)
    key = config_key(TrainConfig())
    assert cache.load(key, {"task": m1}) is None
    cache.save(key, {"task": m1}, {"history": [1, 2]})
    m2 = build_task_model("small_cnn", 3)
    meta = cache.load(key, {"task": m2})
    assert meta == {"history": [1, 2]}
    for p1, p2 in zip(m1.state_dict().values(), m2.state_dict().values()):
        torch.testing.assert_close(p1, p2)
    assert not list(tmp_path.glob("*.part"))


def test_checkpoint_cache_ignores_damaged_entry(tmp_path):
    cache = CheckpointCache(tmp_path)
    key = "abc"
    cache.save(key, {"task": build_task_model("small_cnn", 3)}, {})
    (tmp_path / "abc.pt").write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match="abc.pt"):
        assert cache.load(key, {"task": build_task_model("small_cnn", 3)}) is None


def test_checkpoint_refuses_pickled_code(tmp_path):
    """Entries load with weights_only=True: a pickle that would run code is rejected."""

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    torch.save({"task": Evil()}, tmp_path / "k.pt")
    digest = hashlib.sha256((tmp_path / "k.pt").read_bytes()).hexdigest()  # a valid checksum
    (tmp_path / "k.json").write_text(json.dumps({"format": 2, "checkpoint_sha256": digest, "meta": {}}))
    with pytest.warns(RuntimeWarning, match="weights_only|Unsupported|WeightsUnpickler"):
        assert CheckpointCache(tmp_path).load("k", {"task": build_task_model("small_cnn", 3)}) is None
