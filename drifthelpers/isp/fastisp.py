"""Fused CPU kernels for the static data models (internal): the chain of
:mod:`drifthelpers.isp.chain`, as :func:`drifthelpers.isp.render` runs it for a static preset, in
a few compiled passes instead of about a hundred tensor operations.

Eager PyTorch runs the chain as one memory pass per operation (a Malvar demosaic alone is
some forty shifted-view additions), so on a CPU the render time is mostly spent moving the
same pixels in and out of memory. Here each stage is one loop over rows that reads its inputs
once, compiled with Numba (LLVM vectorises the inner loops; the loops are in
:mod:`drifthelpers.isp.fastkernels`):

1. the mosaic is reflect padded and split into its four CFA planes in one pass;
2. demosaicing, black-level normalisation, white balance, the colour matrix and the luma in
   one pass. For the linear demosaicers (bilinear, Malvar) the loop is generated from the
   taps of :func:`drifthelpers.isp.tables._phase_plan`, the same tables the torch path uses, so
   there is one definition of each demosaicer. Menon's demosaicer (with its refining step)
   runs as nine full-resolution passes written from ``isp.demosaic_menon2007``, the last one
   with the colour matrix and the luma;
3. the luma filters: the 3x3 sharpening kernel or the unsharp mask (separable 9-tap
   Gaussian), then the 3x3 median or the 5x5 Gaussian (separable), each reading a reflect
   padded copy of its input (borders filled like ``F.pad(mode="reflect")``);
4. the luma change added to R, G and B, clip and gamma in one pass. The power law
   ``x ** (1 / gamma)`` is computed as ``2 ** (log2(x) / gamma)`` from the float's exponent
   bits and two short polynomials (``log`` of the mantissa via ``atanh``, ``exp`` of the
   remainder), accurate to about 1e-7 relative, like ``torch.exp(torch.log(x) * inv)`` in
   float32 (tested over all of [1e-6, 1]). This is written by hand because Numba without
   Intel's SVML calls scalar ``libm`` for ``exp``/``log``, which does not vectorise.

Rows are split over ``torch.get_num_threads()`` threads (the kernels release the GIL), so a
process limited to one torch thread (a worker of :mod:`drifthelpers.parallel`) renders on
one thread too. The fast path is taken only where it computes the same function: float32 on
the CPU, no autograd, no stage outputs, even H and W of at least 16, one set of camera values
for the whole batch. Results equal the torch path to float32 rounding (tested for every
preset and CFA pattern against float64); the torch path stays the reference, and runs
everywhere else (GPU, float64, gradients, per-image parameters).

The kernels' parameters (demosaicing tap tables, the sharpening kernel, Gaussian window sizes
and weights, the gamma curve's toe) come from :mod:`drifthelpers.isp.tables`, the module the
torch stages read them from; this module imports nothing else of the ISP, and
:mod:`drifthelpers.isp.static` calls it.

Compiled code is cached on disk (Numba's cache; generated demosaic loops in
``$DRIFTHELPERS_KERNEL_CACHE`` or the user cache folder), so only the first call on a machine
pays the compilation: about 22 s for all twelve presets of one CFA pattern (7 s more for each
further pattern's linear demosaicers); later processes load it in about a second. The
generated loops are compiled from their generated source text (the file in the folder only
anchors Numba's cache, nothing is imported from there), and a folder that is not private to
the user (owned by another user, or writable by group or others) is refused with a warning:
the loops are then compiled in memory in every process. Set
``DRIFTHELPERS_FAST_ISP=0`` to turn the fast path off, or call :func:`set_enabled`.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

import drifthelpers.isp.fastkernels as _k

from ..fileio import atomic_write_text
from ..raw import cfa_channel_indices
from .fastkernels import _FLAGS, _NoAliasCompiler
from .tables import (_BILINEAR_KERNELS, _DENOISE_SIGMA, _GAMMA_EPS, _MALVAR_KERNELS, _UNSHARP_AMOUNT, _UNSHARP_RADIUS,
                     SHARPEN_KERNEL, _gaussian_size, _gaussian_taps, _phase_plan)

__all__ = ["available", "enabled", "set_enabled"]

_ENABLED = os.environ.get("DRIFTHELPERS_FAST_ISP", "1").strip().lower() not in ("0", "false", "no", "off")
_MIN_SIZE = 16  # smaller images (and odd sizes) take the torch path



def available() -> bool:
    """Whether the compiled kernels can run here (Numba importable)."""
    return _k.numba is not None


def enabled() -> bool:
    """Whether :func:`drifthelpers.isp.render` uses the fused kernels where they apply."""
    return _ENABLED and available()


def set_enabled(flag: bool) -> bool:
    """Turn the fast path on or off for this process; returns the previous setting.

    Example:
        >>> previous = set_enabled(False)  # the torch reference path everywhere
        >>> _ = set_enabled(previous)
    """
    global _ENABLED
    if not isinstance(flag, bool):
        raise TypeError(f"flag must be a bool, got {type(flag).__name__}")
    previous, _ENABLED = _ENABLED, flag
    return previous


def applies(raw: torch.Tensor, black: torch.Tensor, white: torch.Tensor, gains: torch.Tensor,
            ccm: torch.Tensor, gamma) -> bool:
    """Whether the fused kernels compute this call (see the module docstring)."""
    if not enabled() or raw.dtype != torch.float32 or raw.device.type != "cpu":
        return False
    h, w = raw.shape[-2:]
    if h % 2 or w % 2 or h < _MIN_SIZE or w < _MIN_SIZE:
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in (raw, black, white, gains, ccm)):
        return False
    if isinstance(gamma, torch.Tensor) and gamma.numel() != 1:
        return False
    return black.dim() <= 1 and white.dim() == 0 and gains.dim() == 1 and ccm.dim() == 2


# --------------------------------------------------------------------------- threads


_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_key: tuple[int, int] = (0, 0)


def _executor(workers: int) -> ThreadPoolExecutor:
    """A thread pool of at least ``workers`` threads, made anew after a fork."""
    global _pool, _pool_key
    with _pool_lock:
        pid = os.getpid()
        if _pool is None or _pool_key[0] != pid or _pool_key[1] < workers:
            # (a replaced pool is not shut down: another thread may still be submitting to it;
            # its idle threads end when it is garbage collected)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="drifthelpers-isp")
            _pool_key = (pid, workers)
        return _pool


def _run_rows(kernel, total: int, *args) -> None:
    """``kernel(*args, start, stop)`` over ``range(total)`` rows, split over the torch thread count."""
    parts = max(1, min(torch.get_num_threads(), total // 8))
    if parts == 1:
        kernel(*args, 0, total)
        return
    bounds = [total * i // parts for i in range(parts + 1)]
    pool = _executor(parts - 1)
    futures = [pool.submit(kernel, *args, bounds[i], bounds[i + 1]) for i in range(1, parts)]
    kernel(*args, bounds[0], bounds[1])
    for f in futures:
        f.result()



# --------------------------------------------------------------------------- generated demosaic loops


def _not_private(folder: Path) -> str | None:
    """Why ``folder`` (or its ``__pycache__``, where Numba keeps compiled code) could hold
    files planted by another user; ``None`` when it is private to this user.

    Private means owned by this user and writable by nobody else. Only checked where POSIX
    owners and modes exist.
    """
    if not hasattr(os, "geteuid"):  # pragma: no cover - Windows: ACLs, not modes
        return None
    for path in (folder, folder / "__pycache__"):
        try:
            info = path.stat()
        except FileNotFoundError:
            continue
        if info.st_uid != os.geteuid():
            return f"{path} belongs to uid {info.st_uid}, not to this user (uid {os.geteuid()})"
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return f"{path} is writable by group or others (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def _kernel_folder() -> Path | None:
    """Where generated kernel modules (and Numba's cache of them) are kept: the user's cache
    folder or ``$DRIFTHELPERS_KERNEL_CACHE``.

    ``None`` (the loops are then compiled from memory in each process, without a disk
    cache) where the folder cannot be written, or, with a warning, where it is not private
    to this user: Numba's cache there holds machine code that would be run.
    """
    if os.environ.get("DRIFTHELPERS_KERNEL_CACHE"):
        folder = Path(os.environ["DRIFTHELPERS_KERNEL_CACHE"])
    else:
        import pooch

        folder = Path(pooch.os_cache("drifthelpers")) / "kernels"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        # made here, private whatever the umask, before Numba makes it with the umask's mode
        (folder / "__pycache__").mkdir(mode=0o700, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
        problem = _not_private(folder)
    except OSError:
        return None
    if problem is not None:
        warnings.warn(f"kernel cache folder refused: {problem}; the demosaic loops are compiled in memory "
                      "instead (make the folder private with 'chmod go-w' or set DRIFTHELPERS_KERNEL_CACHE)",
                      RuntimeWarning, stacklevel=3)
        return None
    return folder


def _demosaic_source(outputs: tuple) -> str:
    """Python source of a demosaic + colour matrix + luma loop for one tap table.

    The weights and constants arrive as arrays (the black level is folded into them at run
    time, see :func:`render_static`); the tap positions are written into the loop, so LLVM
    sees contiguous loads at fixed offsets and vectorises over the columns.
    """
    lines = [
        "# Generated by drifthelpers.isp.fastisp from drifthelpers.isp.tables._phase_plan; do not edit.",
        "import numpy as np",
        "from numba import njit",
        "",
        "from drifthelpers.isp.fastkernels import _NoAliasCompiler" if _NoAliasCompiler else "_NoAliasCompiler = None",
        "",
        "_F = np.float32",
        "",
        "",
        f"@njit(nogil=True, cache=True, fastmath={{{', '.join(map(repr, sorted(_FLAGS)))}}}, error_model='numpy',",
        "      pipeline_class=_NoAliasCompiler)" if _NoAliasCompiler else "      )",
        "def kernel(planes, weights, consts, mat, lin, ypad, p, start, stop):",
        "    h2 = lin.shape[2] // 2",
        "    w2 = lin.shape[3] // 2",
    ]
    n_taps = sum(len(taps) for *_, taps in outputs)
    lines += [f"    w_{k} = weights[{k}]" for k in range(n_taps)]
    lines += [f"    c_{o} = consts[{o}]" for o in range(len(outputs))]
    lines += [f"    m_{a}{b} = mat[{a}, {b}]" for a in range(3) for b in range(3)]
    lines += ["    for t in range(start, stop):",
              "        b = t // h2",
              "        i = t - b * h2"]
    k = 0
    by_site = {}
    for o, (py, px, colour, taps) in enumerate(outputs):
        terms = []
        for ch, y0, x0, _ in taps:
            terms.append(f"w_{k} * planes[b, {ch}, i + {y0}, j + {x0}]")
            k += 1
        by_site.setdefault((py, px), {})[colour] = f"c_{o} + " + " + ".join(terms)
    for (py, px), exprs in sorted(by_site.items()):
        # one loop per cell position: with the stores of two positions in one loop LLVM cannot
        # prove them independent (numba's index arithmetic) and does not vectorise
        lines.append("        for j in range(w2):")
        v = [f"v{c}_{py}{px}" for c in range(3)]
        a = [f"a{c}_{py}{px}" for c in range(3)]
        for c in range(3):
            lines.append(f"            {v[c]} = {exprs[c]}")
        for c in range(3):
            lines.append(f"            {a[c]} = m_{c}0 * {v[0]} + m_{c}1 * {v[1]} + m_{c}2 * {v[2]}")
            lines.append(f"            lin[b, {c}, 2 * i + {py}, 2 * j + {px}] = {a[c]}")
        lines.append(f"            ypad[b, 2 * i + {py} + p, 2 * j + {px} + p] = "
                     f"_F(0.299) * {a[0]} + _F(0.587) * {a[1]} + _F(0.114) * {a[2]}")
    return "\n".join(lines) + "\n"


@lru_cache(maxsize=None)
def _demosaic_kernel(cfa: str, kernels: tuple):
    """The compiled loop for one CFA pattern and demosaicer: ``(kernel, outputs, pad)``."""
    radius = len(kernels[0]) // 2
    pad = 2 * ((radius + 1) // 2)  # even, so the padded mosaic keeps the pattern
    _, outputs = _phase_plan(cfa, kernels, pad // 2)
    source = _demosaic_source(outputs)
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    name = f"drifthelpers_demosaic_{digest}"
    folder = _kernel_folder()
    if folder is None:  # nowhere to write: compile from memory, without a disk cache
        namespace: dict = {}
        exec(compile(source.replace("cache=True", "cache=False"), name, "exec"), namespace)
        return namespace["kernel"], outputs, pad
    # The file on disk is only the anchor of Numba's cache (which keys its entries on the
    # file's path and time stamp); the code run is compiled here from the generated text,
    # never imported from the folder, so no planted bytecode or edited file is executed.
    path = folder / f"{name}.py"
    try:
        current = path.read_text() if path.is_file() else None
    except (OSError, UnicodeDecodeError):
        current = None
    if current != source:
        atomic_write_text(path, source)
    module = ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module.kernel, outputs, pad


# --------------------------------------------------------------------------- the chain


def _site_affine(black: torch.Tensor, white: torch.Tensor) -> tuple[list[float], list[float]]:
    """Black-level normalisation ``x = raw * scale + offset`` per cell position (TL, TR, BL, BR)."""
    black4 = black.double().expand(4).tolist()
    scale = [1.0 / (float(white) - bl) for bl in black4]
    return scale, [-bl * s for bl, s in zip(black4, scale)]


def _menon(raw: np.ndarray, cfa: str, affine, mat, lin, ypad, p: int) -> None:
    """Menon's demosaicer with the refining step, then colour matrix and luma (see the kernels)."""
    n, h, w = raw.shape
    colours = np.array(cfa_channel_indices(cfa)).reshape(2, 2)  # colour index per cell position
    parity = np.arange(w) % 2
    red = (colours[:, parity] == 0).astype(np.uint8)  # (2, W): by row parity
    blue = (colours[:, parity] == 2).astype(np.uint8)
    red_row = red.any(axis=1).astype(np.uint8)
    scale = np.array(affine[0], dtype=np.float32).reshape(2, 2)
    offset = np.array(affine[1], dtype=np.float32).reshape(2, 2)

    def padded():
        return np.empty((n, h + 4, w + 4), dtype=np.float32)

    def fill(*arrays):
        for a in arrays:
            _run_rows(_k._reflect_border, n, a, 2)

    rows = n * h
    xp, ghp, gvp, chp, cvp = padded(), padded(), padded(), padded(), padded()
    _run_rows(_k._menon_normalise, rows, raw, scale, offset, xp)
    fill(xp)
    _run_rows(_k._menon_directional, rows, xp, red, blue, ghp, gvp, chp, cvp)
    fill(chp, cvp)
    dhp, dvp = padded(), padded()
    _run_rows(_k._menon_gradients, rows, chp, cvp, dhp, dvp)
    fill(dhp, dvp)
    hor = np.empty((n, h, w), dtype=np.bool_)
    gp = padded()
    _run_rows(_k._menon_decide, rows, dhp, dvp, ghp, gvp, hor, gp)
    fill(gp)
    r1, b1 = chp, cvp  # (buffers reused once their values are no longer read)
    _run_rows(_k._menon_rb_at_green, rows, xp, gp, red, blue, red_row, r1, b1)
    fill(r1, b1)
    half = np.array((0.5, 0.0, 0.5), dtype=np.float32)
    third = np.full(3, 1.0 / 3.0, dtype=np.float32)
    r2, b2 = dhp, dvp
    _run_rows(_k._menon_rb_at_rb, rows, r1, b1, hor, red, blue, half, r2, b2)
    fill(r2, b2)
    g2 = ghp
    _run_rows(_k._menon_refine_green, rows, r2, b2, gp, hor, red, blue, g2)
    fill(g2)
    r3, b3 = r1, b1
    _run_rows(_k._menon_refine_rb_at_green, rows, r2, b2, g2, red, blue, red_row, r3, b3)
    fill(r3, b3)
    _run_rows(_k._menon_final, rows, r3, b3, g2, hor, red, blue, third, mat, lin, ypad, p)


def render_static(raw: torch.Tensor, cfa: str, demosaic: str, sharpen: str, denoise: str, black: torch.Tensor,
                  white: torch.Tensor, gains: torch.Tensor, ccm: torch.Tensor, gamma) -> torch.Tensor:
    """One static preset on a batch (N, 1, H, W) float32 CPU mosaic; see :func:`applies`."""
    raw = raw.detach()  # (under no_grad a tensor may still require grad; numpy() refuses it)
    n, _, h, w = raw.shape
    mat = (ccm.double() * gains.double().unsqueeze(-2)).float().numpy()  # ccm @ diag(gains)
    sharpen_reach = 1 if sharpen == "s" else _gaussian_size(_UNSHARP_RADIUS) // 2
    lin = torch.empty((n, 3, h, w), dtype=torch.float32)
    ypad = torch.empty((n, h + 2 * sharpen_reach, w + 2 * sharpen_reach), dtype=torch.float32)
    lin_np, ypad_np = lin.numpy(), ypad.numpy()

    if demosaic == "me":
        _menon(raw.reshape(n, h, w).numpy(), cfa, _site_affine(black, white), mat, lin_np, ypad_np, sharpen_reach)
    else:
        kernels = _BILINEAR_KERNELS if demosaic == "bi" else _MALVAR_KERNELS
        kernel, outputs, pad = _demosaic_kernel(cfa, kernels)
        planes = np.empty((n, 4, h // 2 + pad, w // 2 + pad), dtype=np.float32)
        _run_rows(_k._pad_split_rows, n * (h + 2 * pad), raw.reshape(n, h, w).numpy(), pad, planes)
        scale, offset = _site_affine(black, white)
        weights = np.array([wt * scale[ch] for *_, taps in outputs for ch, _, _, wt in taps], dtype=np.float32)
        consts = np.array([sum(wt * offset[ch] for ch, _, _, wt in taps) for *_, taps in outputs], dtype=np.float32)
        _run_rows(kernel, n * (h // 2), planes, weights, consts, mat, lin_np, ypad_np, sharpen_reach)
    _run_rows(_k._reflect_border, n, ypad_np, sharpen_reach)

    # luma filters: sharpen (into a buffer padded for the denoiser), then denoise
    denoise_reach = 1 if denoise == "me" else _gaussian_size(_DENOISE_SIGMA) // 2
    spad = np.empty((n, h + 2 * denoise_reach, w + 2 * denoise_reach), dtype=np.float32)
    if sharpen == "s":
        k = np.array(SHARPEN_KERNEL, dtype=np.float32).reshape(9)
        _run_rows(_k._filter3x3_rows, n * h, ypad_np, k, spad, denoise_reach)
    else:  # unsharp mask: (1 + a) y - a G y, the column taps weighted by -a (as stages._unsharp_op)
        size, amount = _gaussian_size(_UNSHARP_RADIUS), _UNSHARP_AMOUNT
        gauss = np.array(_gaussian_taps(_UNSHARP_RADIUS, size))  # float64, like torch's alphas
        tmp = np.empty((n, h + size - 1, w), dtype=np.float32)
        _run_rows(_k._row_pass, n * (h + size - 1), ypad_np, gauss.astype(np.float32), tmp)
        column = (-amount * gauss).astype(np.float32)
        _run_rows(_k._column_pass, n * h, tmp, column, ypad_np, np.float32(1.0 + amount), sharpen_reach, spad,
                  denoise_reach)
    _run_rows(_k._reflect_border, n, spad, denoise_reach)
    filtered = np.empty((n, h, w), dtype=np.float32)
    if denoise == "me":
        _run_rows(_k._median3x3_rows, n * h, spad, filtered)
    else:
        size = _gaussian_size(_DENOISE_SIGMA)
        taps = np.array(_gaussian_taps(_DENOISE_SIGMA, size), dtype=np.float32)
        tmp = np.empty((n, h + size - 1, w), dtype=np.float32)
        _run_rows(_k._row_pass, n * (h + size - 1), spad, taps, tmp)
        _run_rows(_k._column_pass, n * h, tmp, taps, spad, np.float32(0.0), 0, filtered, 0)

    inv = np.float32(1.0 / float(gamma))
    _run_rows(_k._tail_rows, n * h, lin_np, filtered, ypad_np, sharpen_reach, inv, np.float32(_GAMMA_EPS))
    return lin
