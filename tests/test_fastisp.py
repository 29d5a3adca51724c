"""The fused CPU kernels of drifthelpers.isp.fastisp against the torch reference path of isp."""

from __future__ import annotations

import math
import multiprocessing
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from drifthelpers import isp
from drifthelpers.isp import fastisp, fastkernels
from drifthelpers.isp.tables import _BILINEAR_KERNELS, _GAMMA_EPS
from drifthelpers.raw import CFA_PATTERNS

pytestmark = pytest.mark.skipif(not fastisp.available(), reason="numba is not installed")

CCM = ((1.7, -0.5, -0.2), (-0.2, 1.5, -0.3), (0.0, -0.6, 1.6))


def camera(cfa: str, gamma: float = 2.2) -> isp.CameraParams:
    return isp.CameraParams(cfa, (32.0, 30.0, 31.0, 33.0), 1023.0, (1.63, 1.0, 1.6), CCM, gamma)


def mosaic(n: int = 3, h: int = 40, w: int = 52, seed: int = 0) -> torch.Tensor:
    """Random DN from below the black level to above the white level (both clip)."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.rand((n, 1, h, w), generator=g) * 1000 + 10
    raw[0, 0, 5, 5], raw[0, 0, 6, 9], raw[-1, 0, -1, -1] = 0.0, 1100.0, 1023.0
    return raw


@pytest.fixture
def spy(monkeypatch):
    """Counts the calls that the fused kernels serve."""
    calls = []
    real = fastisp.render_static

    def counting(*args, **kwargs):
        calls.append(args[1:5])
        return real(*args, **kwargs)

    monkeypatch.setattr(fastisp, "render_static", counting)
    return calls


def torch_path(raw, preset, cam):
    previous = fastisp.set_enabled(False)
    try:
        return isp.render(raw, preset, cam)
    finally:
        fastisp.set_enabled(previous)


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
@pytest.mark.parametrize("preset", isp.PRESETS)
def test_fused_render_matches_float64(preset, cfa, spy):
    """Every preset and pattern: the fused float32 render agrees with the float64 torch render
    to float32 rounding. With gamma 1 the whole chain agrees to 2e-6. With gamma 2.2 the curve's
    slope, up to ~10^3 near black, magnifies it: each pixel within 1e-6 (a few roundings of
    the O(1) sums before the clip) times the slope at the reference value, plus 1e-6. The
    float32 torch path meets the same bound (checked here too)."""
    raw = mosaic()
    for gamma in (1.0, 2.2):
        cam = camera(cfa, gamma)
        out = isp.render(raw, preset, cam)
        ref = isp.render(raw.double(), preset, cam)
        assert out.dtype == torch.float32 and out.shape == (3, 3, 40, 52)
        slope = ref.clamp_min(1e-3) ** (1 - gamma) / gamma
        bound = 1e-6 + 1e-6 * slope if gamma > 1 else torch.full_like(ref, 2e-6)
        err = (out.double() - ref).abs()
        assert (err <= bound).all(), (gamma, (err / bound).max().item())
        assert ((torch_path(raw, preset, cam).double() - ref).abs() <= bound).all()
    assert len(spy) == 2  # both renders went through the kernels


def encode(values: np.ndarray, gamma: float) -> np.ndarray:
    """The tail kernel (luma change, clip, gamma) with no luma change: the gamma curve alone,
    as a (1, N) array."""
    n = values.size
    lin = np.repeat(values.reshape(1, 1, 1, n), 3, axis=1).astype(np.float32)
    zeros = np.zeros((1, 1, n), dtype=np.float32)
    fastkernels._tail_rows(lin, zeros, zeros, 0, np.float32(1 / gamma), np.float32(_GAMMA_EPS), 0, 1)
    assert np.array_equal(lin[0, 0], lin[0, 2], equal_nan=True)
    return lin[0, 0]


def test_power_law_over_the_unit_interval():
    """The hand-written x ** (1 / gamma) (exponent bits + two polynomials) against float64 on
    200,001 points spread over [1e-6, 1] and the clipped and toe values around it: relative
    error at most 1e-6, as float32 torch.exp(torch.log(x) / gamma)."""
    x = np.logspace(-6, 0, 200_001).astype(np.float32)
    edges = np.array([0.0, -1.0, -np.inf, 1e-7, 5e-7, 1e-6, 1.0, 1.5, np.inf], dtype=np.float32)
    for gamma in (1.0, 1.8, 2.2, 4.0, 0.5, 0.05):
        for values in (x, edges):
            got = encode(values, gamma)
            ref = isp.gamma_encode(torch.from_numpy(values.astype(np.float64)).reshape(1, 1, 1, -1), gamma)
            ref = ref.flatten().numpy()
            normal = ref > 1e-37  # (a gamma below 1 sends small values below float32's range)
            rel = np.abs(got[0] - ref)[normal] / ref[normal]
            # torch's float32 exp(log(x) / gamma) reaches 9e-7 here too: the rounding of log x;
            # the relative error grows with 1 / gamma (the log's rounding is multiplied by it)
            assert rel.max() <= 1e-6 * max(1.0, 1 / gamma), (gamma, rel.max())
            assert values is edges or np.median(rel) <= 2e-7 * max(1.0, 1 / gamma)
            assert np.all(np.abs(got[0][~normal] - ref[~normal]) <= 2e-38)
            assert np.all(got[0][ref == 0] == 0)
    nan = encode(np.array([np.nan, 0.5], dtype=np.float32), 2.2)
    assert np.isnan(nan[0, 0]) and nan[0, 1] == pytest.approx(0.5 ** (1 / 2.2), rel=1e-6)


@pytest.mark.parametrize(
    "case",
    ["float64", "grad", "odd", "small", "per_image_black", "per_image_gamma", "disabled"],
)
def test_other_calls_take_the_torch_path(case, spy, monkeypatch):
    """Only float32 CPU batches without autograd, even and at least 16x16, with one set of
    camera values, take the kernels; everything else renders through the torch path."""
    cam = camera("RGGB")
    raw = mosaic(2, 20, 24)
    if case == "float64":
        raw = raw.double()
    elif case == "grad":
        raw.requires_grad_()
    elif case == "odd":
        raw = raw[..., :19, :]
    elif case == "small":
        raw = raw[..., :14, :16]
    elif case == "disabled":
        monkeypatch.setattr(fastisp, "_ENABLED", False)
    if case.startswith("per_image"):
        model = isp.ParametrizedDataModel(cam)
        if case == "per_image_gamma":
            black, gamma = torch.tensor([32.0, 30, 31, 33]), torch.tensor([2.2, 2.0])
        else:
            black, gamma = torch.tensor([[32.0, 30, 31, 33], [40, 40, 40, 40]]), 2.2
        assert not fastisp.applies(raw, black, torch.tensor(1023.0), torch.tensor(cam.wb_gains),
                                   torch.tensor(cam.ccm), gamma)
        with torch.no_grad():
            model(raw)
    else:
        isp.render(raw, "ma,u,me", cam)
    assert spy == []


def test_results_do_not_depend_on_threads_or_batch():
    """Bit-identical with one or two threads, and an image rendered alone or in a batch."""
    cam = camera("BGGR")
    raw = mosaic(4, 48, 64, seed=1)
    threads = torch.get_num_threads()
    try:
        for preset in ("bi,s,ga", "ma,u,me", "me,s,me"):
            torch.set_num_threads(2)
            two = isp.render(raw, preset, cam)
            torch.set_num_threads(1)
            one = isp.render(raw, preset, cam)
            assert torch.equal(one, two), preset
            assert torch.equal(isp.render(raw[2:3], preset, cam), two[2:3]), preset
    finally:
        torch.set_num_threads(threads)


def test_a_tensor_that_requires_grad_under_no_grad(spy):
    """Under no_grad (or inference mode) autograd records nothing, so the kernels apply."""
    cam = camera("RGGB")
    raw = mosaic(2, 32, 32).requires_grad_()
    with torch.no_grad():
        out = isp.render(raw, "ma,s,ga", cam)
    assert len(spy) == 1 and not out.requires_grad
    torch.testing.assert_close(out, torch_path(raw.detach(), "ma,s,ga", cam), rtol=0, atol=5e-5)


def test_leading_dimensions_and_non_contiguous_input():
    cam = camera("GRBG")
    raw = mosaic(4, 32, 40).reshape(2, 2, 1, 32, 40)
    out = isp.render(raw, "me,u,ga", cam)
    assert out.shape == (2, 2, 3, 32, 40)
    torch.testing.assert_close(out, torch_path(raw, "me,u,ga", cam), rtol=0, atol=5e-5)
    wide = mosaic(2, 32, 80)[..., ::2]  # a strided view
    assert not wide.is_contiguous()
    torch.testing.assert_close(isp.render(wide, "bi,s,me", cam), torch_path(wide, "bi,s,me", cam), rtol=0, atol=5e-5)


def test_set_enabled_and_environment_switch():
    with pytest.raises(TypeError, match="flag must be a bool"):
        fastisp.set_enabled("no")
    previous = fastisp.set_enabled(False)
    try:
        assert not fastisp.enabled()
    finally:
        fastisp.set_enabled(previous)
    code = "from drifthelpers.isp import fastisp; print(fastisp.enabled())"
    env = dict(os.environ, DRIFTHELPERS_FAST_ISP="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_generated_demosaic_module_is_written_once_and_reused(tmp_path, monkeypatch):
    """The demosaic loops are generated from tables._phase_plan into a module file (so Numba can
    cache the compiled code); written atomically, reused, and compiled from memory where no
    folder is writable."""
    monkeypatch.setenv("DRIFTHELPERS_KERNEL_CACHE", str(tmp_path / "kernels"))
    fastisp._demosaic_kernel.cache_clear()
    try:
        kernel, outputs, pad = fastisp._demosaic_kernel("GBRG", _BILINEAR_KERNELS)
        files = list((tmp_path / "kernels").iterdir())
        module = [f for f in files if f.suffix == ".py"]
        assert len(module) == 1 and not [f for f in files if f.name.endswith(".part")]
        assert module[0].read_text() == fastisp._demosaic_source(outputs) and pad == 2
        stamp = module[0].stat().st_mtime_ns
        fastisp._demosaic_kernel.cache_clear()
        fastisp._demosaic_kernel("GBRG", _BILINEAR_KERNELS)
        assert module[0].stat().st_mtime_ns == stamp  # not rewritten
        cam, raw = camera("GBRG"), mosaic(1, 16, 16)
        on_disk = isp.render(raw, "bi,s,me", cam)
        fastisp._demosaic_kernel.cache_clear()
        blocker = tmp_path / "a-file"
        blocker.write_text("")
        monkeypatch.setenv("DRIFTHELPERS_KERNEL_CACHE", str(blocker / "kernels"))  # cannot be made
        assert fastisp._kernel_folder() is None
        assert torch.equal(isp.render(raw, "bi,s,me", cam), on_disk)
    finally:
        fastisp._demosaic_kernel.cache_clear()


def _render_in_child(queue):
    cam = camera("RGGB")
    queue.put(float(isp.render(mosaic(2, 32, 32), "bi,u,ga", cam).double().sum()))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_renders():
    """The row threads are made anew in a forked child (e.g. DataLoader workers)."""
    expected = float(isp.render(mosaic(2, 32, 32), "bi,u,ga", camera("RGGB")).double().sum())
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_render_in_child, args=(queue,))
    child.start()
    got = queue.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0 and math.isclose(got, expected, rel_tol=0, abs_tol=0)


@pytest.mark.slow
def test_without_numba_everything_renders_on_the_torch_path():
    """Numba is a dependency, but a broken or missing install must not break rendering."""
    code = (
        "import sys; sys.modules['numba'] = None\n"
        "import torch\n"
        "from drifthelpers import isp\nfrom drifthelpers.isp import fastisp\n"
        "assert not fastisp.available() and not fastisp.enabled()\n"
        "cam = isp.CameraParams('RGGB', (32.0,) * 4, 1023.0)\n"
        "out = isp.render(torch.full((2, 1, 32, 32), 300.0), 'me,u,ga', cam)\n"
        "print(tuple(out.shape), round(float(out.mean()), 4))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    expected = isp.render(torch.full((2, 1, 32, 32), 300.0), "me,u,ga", isp.CameraParams("RGGB", (32.0,) * 4, 1023.0))
    assert out.stdout.strip() == f"{(2, 3, 32, 32)} {round(float(expected.mean()), 4)}"
