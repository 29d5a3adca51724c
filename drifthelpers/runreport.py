"""What a run folder holds besides the executed notebooks: figure files and ``summary.md``.

Every figure an executed notebook displays is written as files under
``<run>/<notebook>/figures/`` (``figure-01.png``, ``figure-01.svg``, ...): the PNG and
SVG are the notebook's own outputs, as the kernel rendered them (the runner asks the
kernel's inline backend for both formats, so the SVG is matplotlib's vector output,
not a converted bitmap). ``summary.md`` renders ``summary.json`` for people: each
notebook's status and time, its headline values, the package versions and the git
commit the run was made from.

Headline values are chosen by a fixed rule from each JSON file a notebook writes into
its output folder: the numbers, booleans and short strings at its top level and one
level down (lists and deeper values stay in the JSON file), and every top-level
``claims`` list (entries with ``claim``, ``value``, ``low``, ``high``, ``verdict``)
as a table.
"""

from __future__ import annotations

import base64
import os
import platform
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from .fileio import atomic_write_bytes, atomic_write_text

__all__ = [
    "FIGURE_FORMATS",
    "FigureFiles",
    "figure_outputs",
    "export_figures",
    "headline_values",
    "environment",
    "summary_markdown",
]

#: The formats the runner asks the kernel's inline backend for (file suffix per MIME type).
FIGURE_FORMATS = {"image/png": ".png", "image/svg+xml": ".svg"}
#: Packages whose versions a run records (those that are installed).
VERSION_PACKAGES = ("drifthelpers", "torch", "torchvision", "numpy", "scipy", "matplotlib", "kornia",
                    "numba", "rawpy", "papermill", "nbformat")
MAX_HEADLINES = 25
MAX_STRING = 40


@dataclass
class FigureFiles:
    """The figure files written for one executed notebook."""

    folder: Path
    figures: int
    png: list[Path]
    svg: list[Path]


def figure_outputs(nb) -> Iterator[dict]:
    """The outputs of an executed notebook (an ``nbformat`` node) that display a figure.

    A figure is an output with PNG, SVG or JPEG data; one output holding a figure in
    two formats counts once.
    """
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if any(kind in data for kind in ("image/png", "image/svg+xml", "image/jpeg")):
                yield data


def export_figures(notebook: str | os.PathLike, folder: str | os.PathLike) -> FigureFiles:
    """Write every figure of an executed notebook as ``figure-NN.png`` / ``.svg`` files.

    Args:
        notebook: an executed ``.ipynb``.
        folder: where the files go (created; files of the same names are replaced).

    Returns:
        The folder, the number of figures and the files written. A figure the kernel
        rendered only as PNG (an image shown with ``IPython.display.Image``, say) gets no
        SVG file: no bitmap is passed off as a vector figure.
    """
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    folder = Path(folder)
    files: dict[str, list[Path]] = {".png": [], ".svg": []}
    count = 0
    for count, data in enumerate(figure_outputs(nb), start=1):
        for kind, suffix in FIGURE_FORMATS.items():
            if kind not in data:
                continue
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"figure-{count:02d}{suffix}"
            payload = data[kind]
            if isinstance(payload, list):  # nbformat may keep text split in lines
                payload = "".join(payload)
            raw = base64.b64decode(payload) if suffix == ".png" else payload.encode("utf-8")
            atomic_write_bytes(path, raw)
            files[suffix].append(path)
    return FigureFiles(folder, count, files[".png"], files[".svg"])


def _format(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _is_headline(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) <= MAX_STRING and "\n" not in value
    return isinstance(value, (bool, int, float)) or value is None


def headline_values(results: dict) -> tuple[list[tuple[str, Any]], list[dict]]:
    """The headline values of one results JSON file (the rule is in the module doc).

    Returns:
        ``(scalars, claims)``: ``(dotted key, value)`` pairs in file order, and the
        entries of the top-level ``claims`` list.
    """
    scalars: list[tuple[str, Any]] = []
    for key, value in results.items():
        if _is_headline(value):
            scalars.append((key, value))
        elif isinstance(value, dict):
            scalars += [(f"{key}.{k}", v) for k, v in value.items() if _is_headline(v)]
    claims = results.get("claims")
    claims = [c for c in claims if isinstance(c, dict) and "claim" in c] if isinstance(claims, list) else []
    return scalars, claims


def _git(repo: Path, *args: str) -> str | None:
    try:
        res = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def environment(repo: str | os.PathLike) -> dict[str, Any]:
    """Python and package versions of this environment, and the git state of ``repo``.

    Returns:
        ``{"python": ..., "packages": {name: version}, "git": {"commit": ..., "dirty": ...}}``;
        the commit is ``"unknown"`` and ``dirty`` is ``None`` when git or the repository
        is absent. ``dirty`` means tracked files differ from the commit.
    """
    packages = {}
    for name in VERSION_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    commit = _git(Path(repo), "rev-parse", "HEAD")
    status = _git(Path(repo), "status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "python": platform.python_version(),
        "packages": packages,
        "git": {"commit": commit or "unknown", "dirty": None if status is None else bool(status)},
    }


def _headline_lines(name: str, results: dict) -> list[str]:
    scalars, claims = headline_values(results)
    lines = [f"**{name}.json**", ""]
    if scalars:
        lines += ["| value | |", "|---|---|"]
        lines += [f"| `{k}` | {_format(v)} |" for k, v in scalars[:MAX_HEADLINES]]
        if len(scalars) > MAX_HEADLINES:
            lines.append(f"| ... | {len(scalars) - MAX_HEADLINES} more in {name}.json |")
        lines.append("")
    if claims:
        lines += ["| claim | value [low, high] | verdict | paper |", "|---|---|---|---|"]
        for c in claims:
            interval = f"{_format(c.get('value'))} [{_format(c.get('low'))}, {_format(c.get('high'))}]"
            lines.append(f"| {_format(c['claim'])} | {interval} | {_format(c.get('verdict'))} | "
                         f"{_format(c.get('paper'))} |")
        lines.append("")
    if not scalars and not claims:
        lines += ["(no headline values: see the file)", ""]
    return lines


def _environment_lines(env: dict) -> list[str]:
    git = env.get("git", {})
    dirty = {True: "yes (tracked files differ from the commit)", False: "no", None: "unknown"}[git.get("dirty")]
    lines = ["## Environment", "", "| | version |", "|---|---|", f"| python | {env.get('python', 'unknown')} |"]
    lines += [f"| {name} | {version} |" for name, version in env.get("packages", {}).items()]
    lines += ["", f"git commit: `{git.get('commit', 'unknown')}`; uncommitted changes: {dirty}", ""]
    return lines


def summary_markdown(run_dir: str | os.PathLike, summary: dict) -> str:
    """``summary.md`` of a run, rendered from its ``summary.json`` content.

    Args:
        run_dir: the run folder (its name is the title).
        summary: the ``summary.json`` content: ``profile``, ``status``, ``interrupted``,
            ``notebooks`` (each with ``notebook``, ``status``, ``seconds``, ``results``
            and optionally ``figures``) and ``environment`` (see :func:`environment`).
    """
    interrupted = summary.get("interrupted", False)
    title = f"# Run {Path(run_dir).name} (profile: {summary.get('profile')})"
    lines = [title + (" - INTERRUPTED" if interrupted else ""), ""]
    if interrupted:
        lines += ["Interrupted (Ctrl-C): the notebooks below are all that ran; the last one did not finish.", ""]
    lines += ["| notebook | status | seconds | figures (PNG, SVG) | results |", "|---|---|---|---|---|"]
    for nb in summary.get("notebooks", []):
        fig = nb.get("figures")
        figures = "-" if not fig else (
            f"{fig['figures']} ({fig['png']}, {fig['svg']}) in {fig['folder']}/" if fig["figures"] else "0")
        keys = ", ".join(sorted(nb.get("results", {}))) or "-"
        lines.append(f"| {nb['notebook']} | {nb['status']} | {nb['seconds']:.1f} | {figures} | {keys} |")
    lines += ["", "## Headline values", ""]
    for nb in summary.get("notebooks", []):
        if not nb.get("results"):
            continue
        lines += [f"### {Path(nb['notebook']).stem}", ""]
        for name, results in sorted(nb["results"].items()):
            if isinstance(results, dict):
                lines += _headline_lines(name, results)
    if "environment" in summary:
        lines += _environment_lines(summary["environment"])
    return "\n".join(lines) + "\n"


def write_summary_markdown(run_dir: str | os.PathLike, summary: dict) -> Path:
    """Write :func:`summary_markdown` to ``<run_dir>/summary.md`` atomically."""
    path = Path(run_dir) / "summary.md"
    atomic_write_text(path, summary_markdown(run_dir, summary))
    return path
