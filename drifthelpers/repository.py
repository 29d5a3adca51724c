"""The repository's public address: one command sets it wherever the project needs it.

``python -m drifthelpers repository URL [--branch BRANCH]`` records the git URL of the public
repository that serves this checkout and derives from it everything that opens a notebook
online:

* ``pyproject.toml``: ``[project.urls] Repository`` and ``[tool.drifthelpers] branch``;
* every notebook's ``install`` cell (:func:`drifthelpers.exercises.set_install_cell`): on Colab,
  Binder or a bare Jupyter it pip-installs the package from that URL;
* ``README.md``: the block between :data:`BEGIN` and :data:`END` under the notebooks' table, with
  a Binder badge for the collection and a Colab badge per notebook (Colab opens notebooks from
  GitHub only, so a repository elsewhere gets the Binder badge alone).

Every new text is computed and checked (``pyproject.toml`` parses with :mod:`tomllib` and holds
the new values and nothing else changed) before the first file is written; each file is then
replaced atomically. :func:`readme_block` regenerates the block from ``pyproject.toml`` alone, so
a test can require that the README agrees with it. ``pyproject.toml`` is edited as text (one key
per table), not rewritten by a TOML writer: its comments and layout stay as they are.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from urllib.parse import quote, urlsplit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["BEGIN", "END", "RepositoryError", "badge_block", "default_root", "parse_url", "readme_block",
           "set_repository"]

BEGIN = "<!-- begin generated from pyproject.toml by python -m drifthelpers repository -->"
END = "<!-- end generated -->"
DEFAULT_BRANCH = "main"
_BINDER_BADGE = "https://mybinder.org/badge_logo.svg"
_COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
_NOT_SET = ("No public repository is set, so there are no Colab or Binder links yet:\n"
            "`python -m drifthelpers repository https://github.com/OWNER/REPO` adds them here and\n"
            "points each notebook's install cell at that repository.")


class RepositoryError(ValueError):
    """A repository URL, branch or project file that the command cannot use."""


def parse_url(url: str) -> tuple[str, str]:
    """``(host, "owner/name")`` of an ``https://HOST/OWNER/NAME[.git]`` repository URL.

    Raises:
        RepositoryError: naming ``url`` when it is not such a URL.
    """
    parts = urlsplit(url)
    path = parts.path.strip("/")
    path = path[:-4] if path.endswith(".git") else path
    if (parts.scheme != "https" or not parts.netloc or parts.query or parts.fragment
            or not re.fullmatch(r"[\w.-]+/[\w.-]+", path) or any(p in (".", "..") for p in path.split("/"))):
        raise RepositoryError(f"url {url!r} is not a repository URL of the form https://HOST/OWNER/NAME")
    return parts.netloc.lower(), path


def _check_branch(branch: str) -> str:
    if (not re.fullmatch(r"[\w.-]+(/[\w.-]+)*", branch) or ".." in branch or branch.endswith(".lock")
            or branch.startswith(("-", "."))):
        raise RepositoryError(f"branch {branch!r} is not a valid git branch name")
    return branch


def badge_block(url: str, branch: str, notebooks: list[str]) -> str:
    """The README block's body: a Binder badge for the collection, a Colab badge per notebook."""
    host, slug = parse_url(url)
    _check_branch(branch)
    if host == "github.com":
        binder = f"https://mybinder.org/v2/gh/{slug}/{branch}?urlpath=lab/tree/notebooks"
    else:
        binder = f"https://mybinder.org/v2/git/{quote(url, safe='')}/{branch}?urlpath=lab/tree/notebooks"
    lines = [f"[![Binder]({_BINDER_BADGE})]({binder}) all notebooks on Binder (the `binder/` "
             f"environment, quick profile), from {url} at `{branch}`."]
    if host == "github.com":
        lines += ["", "| notebook | Colab |", "|---|---|"]
        lines += [f"| `{nb}` | [![Open in Colab]({_COLAB_BADGE})](https://colab.research.google.com/github/"
                  f"{slug}/blob/{branch}/notebooks/{nb}) |" for nb in notebooks]
    else:
        lines += ["", f"Colab opens notebooks from GitHub only; {host} has the Binder link alone."]
    return "\n".join(lines)


def default_root() -> Path:
    """The source checkout this package runs from.

    Raises:
        RepositoryError: the package is installed elsewhere (then pass the checkout's folder).
    """
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file() or not (root / "notebooks").is_dir():
        raise RepositoryError(f"drifthelpers runs from {root.parent}, not from a checkout: pass --root CHECKOUT")
    return root


def _settings(pyproject_text: str) -> tuple[str | None, str]:
    data = tomllib.loads(pyproject_text)
    url = data.get("project", {}).get("urls", {}).get("Repository")
    branch = data.get("tool", {}).get("drifthelpers", {}).get("branch", DEFAULT_BRANCH)
    return url, branch


def _notebooks(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def readme_block(root: str | os.PathLike) -> str:
    """The README block as ``pyproject.toml`` of ``root`` determines it (markers included)."""
    root = Path(root)
    url, branch = _settings((root / "pyproject.toml").read_text(encoding="utf-8"))
    body = _NOT_SET if url is None else badge_block(url, branch, _notebooks(root))
    return f"{BEGIN}\n{body}\n{END}"


def _replace_block(readme: str, block: str, path: Path) -> str:
    start = readme.find(BEGIN)
    end = readme.find(END, start) if start >= 0 else -1
    if start < 0 or end < 0:
        raise RepositoryError(f"{path}: no block between {BEGIN!r} and {END!r}")
    return readme[:start] + block + readme[end + len(END):]


def _set_key(text: str, table: str, key: str, value: str) -> str:
    """``text`` with ``key = "value"`` in ``[table]``: the key's line replaced, else added at the
    end of the table, else the table appended."""
    line = f'{key} = "{value}"'
    lines = text.splitlines()
    try:
        head = lines.index(f"[{table}]")
    except ValueError:
        return text.rstrip("\n") + f"\n\n[{table}]\n{line}\n"
    end = next((i for i in range(head + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    key_re = re.compile(rf'^\s*"?{re.escape(key)}"?\s*=')
    for i in range(head + 1, end):
        if key_re.match(lines[i]):
            lines[i] = line
            return "\n".join(lines) + "\n"
    last = max((i for i in range(head, end) if lines[i].strip()), default=head)
    lines.insert(last + 1, line)
    return "\n".join(lines) + "\n"


def _new_pyproject(text: str, url: str, branch: str, path: Path) -> str:
    if any(c in url + branch for c in '"\\\n'):
        raise RepositoryError(f"url {url!r} or branch {branch!r} holds a character TOML would need to escape")
    new = _set_key(_set_key(text, "project.urls", "Repository", url), "tool.drifthelpers", "branch", branch)
    try:
        before, after = tomllib.loads(text), tomllib.loads(new)
    except tomllib.TOMLDecodeError as err:
        raise RepositoryError(f"{path}: not valid TOML ({err})") from None
    after["project"]["urls"].pop("Repository")
    after["tool"]["drifthelpers"].pop("branch")
    if not after["tool"]["drifthelpers"]:
        after["tool"].pop("drifthelpers")
    before["project"].setdefault("urls", {}).pop("Repository", None)
    before.get("tool", {}).get("drifthelpers", {}).pop("branch", None)
    if before.get("tool", {}).get("drifthelpers") == {}:
        before["tool"].pop("drifthelpers")
    if before != after or _settings(new) != (url, branch):
        raise RepositoryError(f"{path}: editing it as text would change more than the two keys; "
                              "set [project.urls] Repository and [tool.drifthelpers] branch by hand")
    return new


def set_repository(root: str | os.PathLike, url: str, branch: str = DEFAULT_BRANCH) -> list[Path]:
    """Point the project at its public repository: ``pyproject.toml``, every notebook's install
    cell and the README's Colab/Binder block (see the module docstring).

    Args:
        root: the repository's root folder (``pyproject.toml``, ``README.md``, ``notebooks/``).
        url: ``https://HOST/OWNER/NAME`` (``.git`` optional).
        branch: the branch the links open.

    Returns:
        The files that changed (none when everything already names this URL and branch).

    Raises:
        RepositoryError: a bad URL or branch, a README without the block, or a ``pyproject.toml``
            that cannot be edited safely; nothing is written then.
    """
    from .exercises import set_install_cell

    root = Path(root)
    parse_url(url)
    _check_branch(branch)
    pyproject, readme = root / "pyproject.toml", root / "README.md"
    notebooks = [root / "notebooks" / nb for nb in _notebooks(root)]
    new_pyproject = _new_pyproject(pyproject.read_text(encoding="utf-8"), url, branch, pyproject)
    body = badge_block(url, branch, [p.name for p in notebooks])
    new_readme = _replace_block(readme.read_text(encoding="utf-8"), f"{BEGIN}\n{body}\n{END}", readme)
    _check_install_cells(notebooks)
    from .fileio import atomic_write_text

    changed = []
    for path, text in ((pyproject, new_pyproject), (readme, new_readme)):
        if path.read_text(encoding="utf-8") != text:
            atomic_write_text(path, text)
            changed.append(path)
    changed += [p for p in notebooks if set_install_cell(p, url)]
    return changed


def _check_install_cells(notebooks: list[Path]) -> None:
    """Every notebook has exactly one ``install`` cell (checked before anything is written)."""
    from .exercises import install_cell

    for path in notebooks:
        try:
            install_cell(path)
        except ValueError as err:
            raise RepositoryError(str(err)) from None
