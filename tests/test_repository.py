"""``python -m drifthelpers repository URL``: pyproject, install cells and the README's links."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest

from drifthelpers import exercises, repository
from drifthelpers.repository import RepositoryError

REPO = Path(__file__).resolve().parent.parent
GITHUB = "https://github.com/example-org/drift-notebooks"


def _block(readme: str) -> str:
    start = readme.index(repository.BEGIN)
    return readme[start: readme.index(repository.END, start) + len(repository.END)]


@pytest.fixture
def checkout(tmp_path):
    """A copy of what the command edits: pyproject.toml, README.md, notebooks/."""
    root = tmp_path / "checkout"
    root.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return root


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_readme_block_agrees_with_pyproject():
    assert _block((REPO / "README.md").read_text()) == repository.readme_block(REPO)


@pytest.mark.parametrize("url, expected", [
    (GITHUB, ("github.com", "example-org/drift-notebooks")),
    (GITHUB + ".git", ("github.com", "example-org/drift-notebooks")),
    ("https://GitLab.com/a/b/", ("gitlab.com", "a/b")),
])
def test_parse_url_accepts_repository_urls(url, expected):
    assert repository.parse_url(url) == expected


@pytest.mark.parametrize("url", ["http://github.com/a/b", "git@github.com:a/b.git", "https://github.com/a",
                                 "https://github.com/a/b/c", "https://github.com/a/b?x=1", "https://github.com/../b",
                                 "github.com/a/b", ""])
def test_parse_url_refuses_anything_else_naming_the_url(url):
    with pytest.raises(RepositoryError, match="url"):
        repository.parse_url(url)


def test_set_repository_points_everything_at_a_github_repository(checkout):
    before = _snapshot(checkout)
    changed = repository.set_repository(checkout, GITHUB, "teaching")
    notebooks = sorted((checkout / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert len(notebooks) == 5
    assert sorted(changed) == sorted([checkout / "pyproject.toml", checkout / "README.md", *notebooks])

    old, new = (tomllib.loads(before["pyproject.toml"].decode()), tomllib.loads((checkout / "pyproject.toml").read_text()))
    assert new["project"]["urls"]["Repository"] == GITHUB and new["tool"]["drifthelpers"]["branch"] == "teaching"
    del new["project"]["urls"]["Repository"], new["tool"]["drifthelpers"]
    assert new == old  # nothing else changed

    readme = (checkout / "README.md").read_text()
    old_readme = before["README.md"].decode()
    assert readme.replace(_block(readme), "") == old_readme.replace(_block(old_readme), "")
    block = _block(readme)
    assert block == repository.readme_block(checkout)
    assert "https://mybinder.org/v2/gh/example-org/drift-notebooks/teaching?urlpath=lab/tree/notebooks" in block
    for nb in notebooks:
        assert (f"https://colab.research.google.com/github/example-org/drift-notebooks/blob/teaching/"
                f"notebooks/{nb.name})") in block
        cells = nbformat.read(str(nb), as_version=4).cells
        old_cells = nbformat.reads(before[f"notebooks/{nb.name}"].decode(), as_version=4).cells
        install = [i for i, c in enumerate(cells) if "install" in c.metadata.get("tags", [])]
        assert len(install) == 1 and cells[install[0]].source == exercises.install_cell_source(GITHUB)
        assert [c.source for i, c in enumerate(cells) if i not in install] == \
               [c.source for i, c in enumerate(old_cells) if i not in install]

    assert repository.set_repository(checkout, GITHUB, "teaching") == []  # a second run changes nothing


def test_a_repository_outside_github_gets_the_binder_link_alone(checkout):
    url = "https://gitlab.com/example/drift.git"
    repository.set_repository(checkout, url)
    block = _block((checkout / "README.md").read_text())
    assert "https://mybinder.org/v2/git/https%3A%2F%2Fgitlab.com%2Fexample%2Fdrift.git/main?" in block
    assert "colab.research.google.com/github" not in block and "GitHub only" in block


@pytest.mark.parametrize("url, branch, match", [("ftp://github.com/a/b", "main", "url"),
                                                (GITHUB, "bad..name", "branch"), (GITHUB, "-x", "branch"),
                                                (GITHUB, "a b", "branch")])
def test_bad_input_writes_nothing(checkout, url, branch, match):
    before = _snapshot(checkout)
    with pytest.raises(RepositoryError, match=match):
        repository.set_repository(checkout, url, branch)
    assert _snapshot(checkout) == before


def test_a_readme_without_the_block_is_refused_before_anything_is_written(checkout):
    readme = checkout / "README.md"
    readme.write_text(readme.read_text().replace(repository.BEGIN, "<!-- gone -->"))
    before = _snapshot(checkout)
    with pytest.raises(RepositoryError, match="README.md: no block"):
        repository.set_repository(checkout, GITHUB)
    assert _snapshot(checkout) == before


def test_a_notebook_without_its_install_cell_is_refused_before_anything_is_written(checkout):
    path = checkout / "notebooks" / "03_drift_synthesis.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    nb.cells = [c for c in nb.cells if "install" not in c.metadata.get("tags", [])]
    nbformat.write(nb, str(path))
    before = _snapshot(checkout)
    with pytest.raises(RepositoryError, match="03_drift_synthesis.ipynb: 0 cells tagged 'install'"):
        repository.set_repository(checkout, GITHUB)
    assert _snapshot(checkout) == before


def test_set_key_replaces_appends_or_adds_the_table():
    text = '[project]\nname = "x"\n\n[project.urls]\nPaper = "p"\nRepository = "old"\n\n[tool.other]\na = 1\n'
    out = repository._set_key(text, "project.urls", "Repository", "new")
    assert tomllib.loads(out)["project"]["urls"] == {"Paper": "p", "Repository": "new"}
    out = repository._set_key(text, "tool.other", "b", "v")
    assert tomllib.loads(out)["tool"]["other"] == {"a": 1, "b": "v"}
    out = repository._set_key(text, "tool.drifthelpers", "branch", "main")
    assert tomllib.loads(out)["tool"]["drifthelpers"] == {"branch": "main"}


def test_command_line_sets_the_repository_and_reports_errors(checkout):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "drifthelpers", "repository", *args, "--root", str(checkout)],
                              capture_output=True, text=True, cwd=REPO)

    bad = run("https://github.com/only-owner")
    assert bad.returncode == 2 and "error:" in bad.stderr and "only-owner" in bad.stderr
    good = run(GITHUB)
    assert good.returncode == 0 and f"updated {checkout / 'README.md'}" in good.stdout
    again = run(GITHUB)
    assert again.returncode == 0 and "already set" in again.stdout
