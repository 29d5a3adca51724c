"""The book (drifthelpers.book): pages, figures, navigation, atomic replacement, typed errors.

Most tests build from a small run folder made here (executed notebooks written with
nbformat, with real PNG and SVG outputs); one builds from the notebooks the suite executes
once (the ``executed_run`` fixture) and checks that every page shows its figures.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from PIL import Image

from drifthelpers.book import BOOK_MARKER, BookError, build_book, executed_notebooks
from drifthelpers.runreport import figure_outputs

SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><rect width="4" height="4"/></svg>'


def _png() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _figure(svg: bool = True):
    data = {"image/png": _png(), "text/plain": "<Figure size 4x4>"}
    if svg:
        data["image/svg+xml"] = SVG
    return nbformat.v4.new_output("display_data", data=data)


def write_executed(path: Path, title: str, figures: int, svg: bool = True, executed: bool = True, error=False):
    """An executed notebook: a heading, and one code cell per figure (or one without)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\nText with $x^2$.")]
    for i in range(max(figures, 1)):
        cell = nbformat.v4.new_code_cell(f"plot({i})", execution_count=i + 1 if executed else None)
        cell.outputs = [_figure(svg)] if i < figures else []
        nb.cells.append(cell)
    if error:
        nb.cells[-1].outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="bad", traceback=[])]
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def fake_run(tmp_path):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    write_executed(run / "01_first.ipynb", "First lesson", figures=2)
    write_executed(run / "02_second.ipynb", "Second lesson", figures=1, svg=False)
    write_executed(run / "03_third.ipynb", "Third lesson", figures=0)
    readme = tmp_path / "README.md"
    readme.write_text("# The project\n\nStart with [the first](notebooks/01_first.ipynb#top); "
                      "see [docs](docs/x.md).\n")
    return run, readme


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.src: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.src.append(attrs.get("src", ""))
        elif tag == "a":
            self.links.append(attrs.get("href", ""))


def parse(page: Path) -> _Images:
    parser = _Images()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def assert_page_shows_its_figures(book_dir: Path, notebook: Path) -> int:
    """Each figure output of ``notebook`` is an <img> on its page whose file lies beside it."""
    n_figures = len(list(figure_outputs(nbformat.read(str(notebook), as_version=4))))
    page = book_dir / f"{notebook.stem}.html"
    assert page.is_file(), page
    sources = parse(page).src
    assert len(sources) == n_figures, (page, sources)
    for src in sources:
        assert src.startswith(f"{notebook.stem}_files/") and (book_dir / src).is_file(), src
    return n_figures


def test_book_has_a_page_per_notebook_with_its_figures(fake_run, tmp_path):
    run, readme = fake_run
    book = build_book(run, tmp_path / "book", readme=readme)
    assert sorted(book.pages) == ["01_first", "02_second", "03_third"]
    assert book.figures == {"01_first": 2, "02_second": 1, "03_third": 0}
    for nb in sorted(run.glob("*.ipynb")):
        assert_page_shows_its_figures(book.folder, nb)
    first = parse(book.folder / "01_first.html").src
    assert all(src.endswith(".svg") for src in first)  # the vector figure where there is one
    assert parse(book.folder / "02_second.html").src[0].endswith(".png")


def test_index_is_the_readme_with_links_to_the_pages(fake_run, tmp_path):
    run, readme = fake_run
    book = build_book(run, tmp_path / "book", readme=readme)
    index = book.folder / "index.html"
    text = index.read_text(encoding="utf-8")
    assert "The project" in text
    links = parse(index).links
    assert "01_first.html#top" in links  # the README's link to the notebook, rewritten
    for stem in ("01_first", "02_second", "03_third"):  # the navigation on every page
        assert f"{stem}.html" in links
        assert {"index.html", "01_first.html", "03_third.html"} <= set(parse(book.folder / f"{stem}.html").links)
    assert "Second lesson" in text  # page titles from the notebooks' headings
    marker = json.loads((book.folder / BOOK_MARKER).read_text())
    assert marker["run"] == str(run.resolve()) and marker["figures"]["01_first"] == 2


def test_rebuild_replaces_a_book_and_leaves_no_temporary_folder(fake_run, tmp_path):
    run, readme = fake_run
    out = tmp_path / "book"
    build_book(run, out, readme=readme)
    (run / "03_third.ipynb").unlink()
    build_book(run, out, readme=readme)
    assert not (out / "03_third.html").exists() and (out / "01_first.html").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "book", "runs"]


def test_refuses_to_replace_a_folder_that_is_not_a_book(fake_run, tmp_path):
    run, readme = fake_run
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(BookError, match="mine exists and is not a book"):
        build_book(run, out, readme=readme)
    assert (out / "notes.txt").read_text() == "keep me" and sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_failed_build_leaves_the_earlier_book(fake_run, tmp_path):
    run, readme = fake_run
    out = tmp_path / "book"
    build_book(run, out, readme=readme)
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(FileNotFoundError):
        build_book(run, out, readme=tmp_path / "no_readme.md")
    assert sorted(p.name for p in out.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "book", "runs"]


@pytest.mark.parametrize("case,message", [
    ("missing", "does not exist"),
    ("empty", "holds no executed notebooks"),
    ("unexecuted", "has not been executed"),
    ("error", "stopped with an error"),
    ("corrupt", "is not a readable notebook"),
])
def test_run_folder_without_executed_notebooks_is_refused(tmp_path, case, message):
    run = tmp_path / "run"
    if case != "missing":
        run.mkdir()
    if case == "unexecuted":
        write_executed(run / "01_x.ipynb", "X", figures=1, executed=False)
    elif case == "error":
        write_executed(run / "01_x.ipynb", "X", figures=1, error=True)
    elif case == "corrupt":
        (run / "01_x.ipynb").write_text("{not json")
    with pytest.raises(BookError, match=message) as info:
        executed_notebooks(run)
    assert str(run) in str(info.value)
    with pytest.raises(BookError, match=message):
        build_book(run, tmp_path / "book")
    assert not (tmp_path / "book").exists()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "drifthelpers", "book", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def test_cli_builds_from_a_run_folder(fake_run, tmp_path):
    run, _ = fake_run
    res = _cli("--from", run, "--out", tmp_path / "site")
    assert res.returncode == 0, res.stderr
    assert f"Book: {tmp_path / 'site' / 'index.html'}" in res.stdout and "3 figures" in res.stdout
    assert (tmp_path / "site" / "02_second.html").is_file()


def test_cli_errors_are_one_line_with_status_2(fake_run, tmp_path):
    run, _ = fake_run
    res = _cli("--from", tmp_path / "nowhere", "--out", tmp_path / "site")
    assert res.returncode == 2 and "nowhere does not exist" in res.stderr and "Traceback" not in res.stderr
    res = _cli("--from", run, "--out", run)  # an existing folder that is not a book
    assert res.returncode == 2 and "is not a book" in res.stderr
    res = _cli("--from", run, "01", "--name", "x")
    assert res.returncode == 2 and "drop NOTEBOOK, --name" in res.stderr


def test_cli_without_from_runs_the_notebooks_then_builds(tmp_path):
    """The whole path on a small notebook that plots: run folder with PNG and SVG, then the book."""
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("n = 3")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Plotting"), params,
                nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\nplt.plot(range(n))\nplt.show()")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(nbs / "01_plot.ipynb"))
    res = _cli("--notebook-dir", nbs, "--runs-dir", tmp_path / "runs", "--name", "r", "--no-progress",
               "--out", tmp_path / "site")
    assert res.returncode == 0, res.stderr
    figures = tmp_path / "runs" / "r" / "01_plot" / "figures"
    assert sorted(p.name for p in figures.iterdir()) == ["figure-01.png", "figure-01.svg"]
    assert b"<path" in (figures / "figure-01.svg").read_bytes()  # matplotlib's vector output
    assert assert_page_shows_its_figures(tmp_path / "site", tmp_path / "runs" / "r" / "01_plot.ipynb") == 1


@pytest.mark.slow
def test_book_of_the_executed_notebooks_shows_every_figure(executed_run, tmp_path):
    """The book CI builds: from the notebooks the suite executed once, without running them again."""
    run_dir, failure = executed_run
    if failure is not None:
        pytest.fail(f"the notebooks did not all run, so no book: {failure}")
    book = build_book(run_dir, tmp_path / "book")
    notebooks = sorted(run_dir.glob("*.ipynb"))
    assert [nb.stem for nb in notebooks] == sorted(book.pages) and len(notebooks) >= 5
    for nb in notebooks:
        n = assert_page_shows_its_figures(book.folder, nb)
        assert n > 0, f"{nb.name} shows no figure"  # every notebook of the collection plots
    assert "drifthelpers" in (book.folder / "index.html").read_text(encoding="utf-8")


def test_os_error_while_building_is_one_line_with_status_2(fake_run, tmp_path, capsys, monkeypatch):
    from drifthelpers import book
    from drifthelpers.__main__ import main

    def unwritable(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "site"))

    monkeypatch.setattr(book, "build_book", unwritable)
    assert main(["book", "--from", str(fake_run[0]), "--out", str(tmp_path / "site")]) == 2
    assert capsys.readouterr().err == f"error: [Errno 13] Permission denied: '{tmp_path / 'site'}'\n"
