"""The figures the notebooks show, one function per figure kind.

Every function draws with matplotlib, returns the ``Figure`` (or draws into a
given ``Axes``) and never calls ``plt.show()``: notebooks display the returned
figure, headless runs simply save or discard it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = [
    "to_display",
    "mosaic_as_colour",
    "plot_cfa",
    "plot_histogram",
    "image_grid",
    "plot_noise_curve",
    "heatmap",
    "preview_rgb",
]

_CFA_RGB = {"R": (0.85, 0.15, 0.15), "G": (0.15, 0.7, 0.2), "B": (0.15, 0.3, 0.9)}


def to_display(image) -> np.ndarray:
    """An (H, W, 3) or (H, W) float array in [0, 1] from a tensor or array.

    Accepts torch tensors of shape (3, H, W), (1, 3, H, W), (1, H, W) and
    numpy arrays (H, W, 3) / (H, W); values are clipped to [0, 1].
    """
    arr = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    arr = np.asarray(arr, dtype=np.float32)
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise ValueError(f"cannot display an array of shape {arr.shape}")
    return np.clip(arr, 0.0, 1.0)


def mosaic_as_colour(raw: np.ndarray, cfa: str, black: float = 0.0, white: float | None = None) -> np.ndarray:
    """Show a Bayer mosaic as the sensor sees it: each pixel in its filter's colour.

    Args:
        raw: mosaic (H, W) in DN.
        cfa: its pattern string.
        black, white: levels used to scale to [0, 1] (white defaults to the maximum).

    Returns:
        (H, W, 3) float image.
    """
    from .raw import cfa_channel_indices

    raw = np.asarray(raw, dtype=np.float32)
    white = float(raw.max()) if white is None else float(white)
    scaled = np.clip((raw - black) / max(white - black, 1e-12), 0, 1)
    idx = np.array(cfa_channel_indices(cfa)).reshape(2, 2)
    h, w = raw.shape
    chan = np.tile(idx, (h // 2 + 1, w // 2 + 1))[:h, :w]
    out = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        out[..., c] = np.where(chan == c, scaled, 0.0)
    return out


def plot_cfa(cfa: str, ax=None, repeats: int = 2):
    """Draw the colour filter array: the 2x2 cell repeated ``repeats`` times each way."""
    import matplotlib.pyplot as plt

    from .raw import shift_cfa

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(2.6, 2.6))
    n = 2 * repeats
    for i in range(n):
        for j in range(n):
            letter = shift_cfa(cfa, i, j)[0]
            ax.add_patch(plt.Rectangle((j, n - 1 - i), 1, 1, color=_CFA_RGB[letter], ec="white", lw=2))
            ax.text(j + 0.5, n - 0.5 - i, letter, ha="center", va="center", color="white", fontweight="bold")
    ax.set_xlim(0, n)
    ax.set_ylim(0, n)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"CFA {cfa}")
    return fig or ax.figure


def plot_histogram(raw: np.ndarray, black_level, white_level: float, ax=None, bins: int = 256, title: str = ""):
    """Histogram of raw values with the black and white levels marked."""
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3))
    values = np.asarray(raw, dtype=np.float64).ravel()
    ax.hist(values, bins=bins, range=(0, white_level * 1.02), color="0.35", log=True)
    for b in sorted(set(np.atleast_1d(black_level).tolist())):
        ax.axvline(b, color="tab:blue", ls="--", lw=1)
    ax.axvline(white_level, color="tab:red", ls="--", lw=1)
    ax.set_xlabel("raw value (DN)")
    ax.set_ylabel("pixels (log)")
    ax.set_title(title or "raw histogram: black level (blue), white level (red)")
    return fig or ax.figure


def image_grid(images: Sequence, titles: Sequence[str] | None = None, ncols: int = 4, size: float = 2.2, suptitle: str = ""):
    """A grid of images (tensors or arrays), titled, axes off."""
    import matplotlib.pyplot as plt

    n = len(images)
    if n == 0:
        raise ValueError("image_grid needs at least one image")
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.4 if suptitle else 0)), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k >= n:
            continue
        img = to_display(images[k])
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        if titles is not None:
            ax.set_title(str(titles[k]), fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def plot_noise_curve(means, variances, predicted_means=None, predicted_variances=None, ax=None, labels=None):
    """Photon-transfer plot: measured variance against mean, with the model's prediction."""
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.loglog(means, variances, "o", label="measured (flat field)")
    if predicted_means is not None and predicted_variances is not None:
        order = np.argsort(predicted_means)
        ax.loglog(np.asarray(predicted_means)[order], np.asarray(predicted_variances)[order], "-", label="Poisson-Gaussian model")
    if labels is not None:
        for m, v, lab in zip(means, variances, labels):
            ax.annotate(str(lab), (m, v), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.set_xlabel("mean signal above black (DN)")
    ax.set_ylabel("variance (DN²)")
    ax.legend()
    ax.set_title("photon transfer: noise follows the signal")
    return fig or ax.figure


def heatmap(matrix, row_labels, col_labels, ax=None, fmt: str = "{:.2f}", cmap: str = "viridis", title: str = "",
            xlabel: str = "", ylabel: str = "", vmin=None, vmax=None):
    """An annotated heatmap (e.g. a 12x12 cross-evaluation matrix)."""
    import matplotlib.pyplot as plt

    m = np.asarray(matrix, dtype=float)
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(0.55 * m.shape[1] + 2, 0.45 * m.shape[0] + 1.5))
    im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks(range(m.shape[1]), labels=col_labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(m.shape[0]), labels=row_labels, fontsize=8)
    lo, hi = np.nanmin(m), np.nanmax(m)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if np.isfinite(m[i, j]):
                dark = (m[i, j] - lo) / max(hi - lo, 1e-12) < 0.5
                ax.text(j, i, fmt.format(m[i, j]), ha="center", va="center", fontsize=6, color="white" if dark else "black")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, fraction=0.046)
    return fig or ax.figure


def _camera_value(camera, name):
    if isinstance(camera, dict):
        return camera.get(name)
    return getattr(camera, name, None)


def preview_rgb(raw, camera, gamma: float = 2.2) -> np.ndarray:
    """A half-resolution preview of a mosaic *without* demosaicing ("superpixel").

    Each 2x2 CFA cell becomes one RGB pixel (R, mean of the two G, B), then
    black subtraction, white balance, colour matrix, clip and gamma. A quick
    look for notebooks that come before the data model; the data model itself
    (``drifthelpers.isp``) renders full-resolution views.

    Args:
        raw: mosaic (H, W) in DN (array or tensor of shape (1, H, W)).
        camera: anything with ``cfa``, ``black_level``, ``white_level`` and
            optionally ``wb_gains`` / ``ccm`` (a ``RawImage``, a dataset's
            ``DatasetCamera`` or a dict); missing gains/matrix mean identity.

    Returns:
        (H/2, W/2, 3) float array in [0, 1].
    """
    from .raw import cfa_channel_indices

    arr = raw.detach().cpu().numpy() if hasattr(raw, "detach") else np.asarray(raw)
    arr = np.asarray(arr, dtype=np.float64).squeeze()
    if arr.ndim != 2:
        raise ValueError(f"raw must be a 2-D mosaic, got shape {arr.shape}")
    h, w = arr.shape[0] // 2 * 2, arr.shape[1] // 2 * 2
    cells = [arr[i:h:2, j:w:2] for i in (0, 1) for j in (0, 1)]
    black = np.broadcast_to(np.asarray(_camera_value(camera, "black_level"), float), (4,))
    white = float(_camera_value(camera, "white_level"))
    norm = [(c - b) / (white - b) for c, b in zip(cells, black)]
    idx = cfa_channel_indices(_camera_value(camera, "cfa"))
    rgb = np.zeros((h // 2, w // 2, 3))
    for c in range(3):
        rgb[..., c] = np.mean([n for n, k in zip(norm, idx) if k == c], axis=0)
    gains = _camera_value(camera, "wb_gains")
    ccm = _camera_value(camera, "ccm")
    rgb = rgb * (np.ones(3) if gains is None else np.asarray(gains, float))
    if ccm is not None:
        rgb = rgb @ np.asarray(ccm, float).T
    return np.clip(rgb, 0, 1) ** (1.0 / gamma)
