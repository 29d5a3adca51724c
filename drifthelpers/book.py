"""A static HTML book of the executed notebooks, built with nbconvert's HTML exporter.

``python -m drifthelpers book`` (and ``./drift book``) executes the notebooks as
``run`` does and builds the book from that run's executed notebooks;
``--from RUN_DIR`` builds from an earlier run without executing anything. The book
is a folder of plain HTML pages that opens from disk or any static web server:

- ``index.html``: the README, with links to notebooks rewritten to their pages;
- ``<notebook>.html``: one page per executed notebook, with its outputs;
- ``<notebook>_files/``: every figure of that page as an image file (PNG, and SVG
  when the kernel rendered one; the page shows the SVG when there is one);
- a navigation bar on every page, and ``.drifthelpers-book.json`` naming the run
  the book was built from.

The book is built in a temporary folder beside the target and renamed into place,
so the target is either the previous book or the complete new one. A target that
exists and is not a book built here is refused.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .fileio import default_file_mode
from .runreport import figure_outputs

__all__ = ["BOOK_MARKER", "DEFAULT_BOOK_DIR", "BookError", "Book", "executed_notebooks", "check_book_target",
           "build_book", "run_cli"]

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BOOK_DIR = REPO / "build" / "book"
BOOK_MARKER = ".drifthelpers-book.json"

_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block body_header -%}{{ super() }}{{ resources.book_nav }}{%- endblock body_header -%}
{% block data_svg scoped -%}
{%- if 'image/svg+xml' in output.metadata.get('filenames', {}) -%}
<div class="jp-RenderedSVG jp-OutputArea-output {{ extra_class }}" data-mime-type="image/svg+xml">
<img src="{{ output.metadata.filenames['image/svg+xml'] | posix_path | escape_html }}">
</div>
{%- else -%}{{ super() }}{%- endif -%}
{%- endblock data_svg %}
"""
_NAV_STYLE = ("position:sticky;top:0;z-index:10;background:#f5f5f5;border-bottom:1px solid #ddd;"
              "padding:0.5em 1em;font-family:sans-serif;font-size:14px")


class BookError(ValueError):
    """A run folder that cannot make a book, or a target folder that must not be replaced."""


@dataclass
class Book:
    """A built book: its folder, its pages by notebook stem, and each page's figure count."""

    folder: Path
    pages: dict[str, Path]
    figures: dict[str, int]
    seconds: float


def executed_notebooks(run_dir: str | os.PathLike) -> list[Path]:
    """The executed notebooks of a run folder, in file-name order.

    Raises:
        BookError: the folder is missing, holds no ``.ipynb``, or holds a notebook that
            cannot be read, was not executed (no code cell ran) or stopped with an error.
    """
    import nbformat

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BookError(f"run folder {run_dir} does not exist or is not a folder")
    found = sorted(p for p in run_dir.glob("*.ipynb") if not p.name.startswith("."))
    if not found:
        raise BookError(f"{run_dir} holds no executed notebooks (*.ipynb); give a folder written by "
                        "`python -m drifthelpers run`")
    for path in found:
        try:
            nb = nbformat.read(str(path), as_version=4)
        except Exception as exc:  # nbformat raises several unrelated types for a bad file
            raise BookError(f"{path} is not a readable notebook: {exc}") from None
        code = [c for c in nb.cells if c.cell_type == "code"]
        if code and all(c.get("execution_count") is None for c in code):
            raise BookError(f"{path} has not been executed (no code cell has run)")
        errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
        if errors or nb.metadata.get("papermill", {}).get("exception"):
            raise BookError(f"{path} stopped with an error; a book shows complete runs only")
    return found


def check_book_target(out_dir: str | os.PathLike) -> Path:
    """Refuse a target that exists and is not a book built here (a book is replaced).

    Raises:
        BookError: ``out_dir`` is a file, or a folder without the book's marker file.
    """
    out = Path(out_dir)
    if out.exists() and not (out.is_dir() and (out / BOOK_MARKER).is_file()):
        raise BookError(f"{out} exists and is not a book built by `drifthelpers book`; "
                        "choose another --out or remove it")
    return out


def _title(nb, fallback: str) -> str:
    """The notebook's first Markdown heading, or ``fallback``."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            match = re.search(r"^#+\s+(.+?)\s*$", cell.source, flags=re.MULTILINE)
            if match:
                return match.group(1)
    return fallback


def _nav(titles: dict[str, str]) -> str:
    links = ['<a href="index.html">Home</a>']
    links += [f'<a href="{html.escape(stem)}.html">{html.escape(title)}</a>' for stem, title in titles.items()]
    return f'<nav class="drifthelpers-book-nav" style="{_NAV_STYLE}">' + " &middot; ".join(links) + "</nav>\n"


def _exporter():
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import ExtractOutputPreprocessor

    exporter = HTMLExporter(template_name="lab", extra_loaders=[DictLoader({"book.html.j2": _TEMPLATE})],
                            template_file="book.html.j2", embed_images=True)
    exporter.register_preprocessor(ExtractOutputPreprocessor(), enabled=True)
    return exporter


def _write_page(exporter, nb, stem: str, folder: Path, nav: str, source_dir: Path) -> None:
    """Export one notebook to ``folder/<stem>.html`` and its figures to ``folder/<stem>_files/``."""
    resources = {"output_files_dir": f"{stem}_files", "book_nav": nav,
                 "metadata": {"name": stem, "path": str(source_dir)}}
    body, resources = exporter.from_notebook_node(nb, resources=resources)
    (folder / f"{stem}.html").write_text(body, encoding="utf-8")
    for name, data in resources.get("outputs", {}).items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _index_notebook(readme: Path, titles: dict[str, str]):
    """The README as a one-cell notebook, its links to the notebooks pointing at their pages."""
    import nbformat

    text = readme.read_text(encoding="utf-8")

    def relink(match: re.Match) -> str:
        stem = Path(match.group(1)).stem
        return f"]({stem}.html{match.group(2) or ''})" if stem in titles else match.group(0)

    text = re.sub(r"\]\(([^)\s#]+\.ipynb)(#[^)\s]*)?\)", relink, text)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(text)]
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def _dir_mode() -> int:
    mode = default_file_mode()
    return mode | ((mode & 0o444) >> 2)  # searchable wherever readable


def _replace_folder(new: Path, out: Path) -> None:
    """Put the finished folder ``new`` in place of ``out`` (an earlier book, or nothing)."""
    if not out.exists():
        os.rename(new, out)
        return
    old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(out, old)
    os.rename(new, out)
    shutil.rmtree(old, ignore_errors=True)


def build_book(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
               readme: str | os.PathLike | None = None) -> Book:
    """Build the book of a run folder's executed notebooks (see the module doc).

    Args:
        run_dir: a folder written by ``python -m drifthelpers run``.
        out_dir: the book folder; ``<repo>/build/book`` by default. An earlier book
            there is replaced; any other existing file or folder is refused.
        readme: the index page's Markdown; the repository's ``README.md`` by default.

    Returns:
        The :class:`Book` built.

    Raises:
        BookError: see :func:`executed_notebooks` and :func:`check_book_target`.
    """
    import nbformat

    start = time.perf_counter()
    out = check_book_target(out_dir or DEFAULT_BOOK_DIR)
    notebooks = executed_notebooks(run_dir)
    readme = Path(readme) if readme else REPO / "README.md"
    nbs = {p.stem: nbformat.read(str(p), as_version=4) for p in notebooks}
    titles = {stem: _title(nb, stem) for stem, nb in nbs.items()}
    nav, exporter = _nav(titles), _exporter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        os.chmod(tmp, _dir_mode())
        for stem, nb in nbs.items():
            _write_page(exporter, nb, stem, tmp, nav, Path(run_dir))
        _write_page(exporter, _index_notebook(readme, titles), "index", tmp, nav, readme.parent)
        figures = {stem: sum(1 for _ in figure_outputs(nb)) for stem, nb in nbs.items()}
        marker = {"run": str(Path(run_dir).resolve()), "pages": [f"{s}.html" for s in nbs], "figures": figures}
        (tmp / BOOK_MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        check_book_target(out)  # again: something may have appeared there meanwhile
        _replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pages = {stem: out / f"{stem}.html" for stem in nbs}
    return Book(out, pages, figures, time.perf_counter() - start)


def run_cli(args) -> int:
    """The ``book`` command: run the notebooks (unless ``--from``), then build the book.

    Returns:
        The exit status: 0 built, 1 a notebook failed, 2 a usage or file error, 130 Ctrl-C.
    """
    import sys

    from .batch import NotebookFailed, ParameterError, RunInterrupted

    def error(message: object, status: int = 2) -> int:
        print(f"error: {message}", file=sys.stderr)
        return status

    run_only = [opt for opt, given in (("NOTEBOOK", args.notebooks), ("-p", args.param), ("--name", args.name),
                                       ("--runs-dir", args.runs_dir), ("--notebook-dir", args.notebook_dir))
                if given]
    if args.from_run and run_only:
        return error(f"--from builds from an existing run and runs nothing; drop {', '.join(run_only)}")
    try:
        check_book_target(args.out or DEFAULT_BOOK_DIR)
        run_dir = args.from_run or _run_for_book(args)
        book = build_book(run_dir, args.out)
    except (BookError, ParameterError, FileNotFoundError, FileExistsError) as exc:
        return error(exc)
    except NotebookFailed as exc:
        return error(exc, 1)
    except RunInterrupted as exc:
        return error(f"interrupted; no book was built (partial run in {exc.run_dir})", 130)
    print(f"Book: {book.folder / 'index.html'}  ({len(book.pages)} notebook pages, "
          f"{sum(book.figures.values())} figures, built in {book.seconds:.1f} s from {run_dir})")
    return 0


def _run_for_book(args) -> Path:
    """Execute the notebooks as ``run`` does; the run folder."""
    from .batch import ParameterError, run_notebooks

    params: dict[str, str] = {}
    for name, value in args.param or []:
        if name in params:
            raise ParameterError(f"-p {name} is given twice; give it once")
        params[name] = value
    results = run_notebooks(select=args.notebooks or None, parameters=params, profile=args.profile,
                            run_name=args.name, runs_dir=args.runs_dir, notebook_dir=args.notebook_dir,
                            progress=not args.no_progress)
    return results[0].output.parent
