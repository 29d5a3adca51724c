"""The project's promises about itself: layout, dependency lists in step, CI = README test command,
clean notebooks."""

from __future__ import annotations

import re
import sys

import nbformat
import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# conda-forge names that differ from the PyPI names
CONDA_TO_PYPI = {"pytorch": "torch"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_layout():
    for path in ("notebooks", "drifthelpers", "data/README.md", "tests", "environment.yml", "README.md", "pyproject.toml", ".ci/run"):
        assert (REPO / path).exists(), path


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        wanted |= {_name(r) for r in extra}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda, pip = set(), set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip |= {_name(r) for r in dep["pip"] if not r.startswith("-e")}
        else:
            conda.add(CONDA_TO_PYPI.get(_name(dep), _name(dep)))
    conda -= {"python", "pip"}
    listed = conda | pip
    assert listed == wanted, f"only in environment.yml: {listed - wanted}; only in pyproject.toml: {wanted - listed}"
    assert not conda & pip, "a package is listed twice"
    assert "-e ." in next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert commands == ["./drift test"]
    assert "./drift test" in readme and "./drift run" in readme


def _notebooks():
    return sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_notebook_is_clean(path):
    """Committed notebooks carry no stray outputs, execution counts or volatile metadata."""
    from drifthelpers.batch import hygiene_problems

    assert hygiene_problems(path) == []


#: Notebooks whose code lines must fit NOTEBOOK_LINE_LIMIT characters (readable on a projector):
#: every notebook.
LINE_LIMIT_NOTEBOOKS = _notebooks()
NOTEBOOK_LINE_LIMIT = 100


def _long_code_lines(path: Path, limit: int = NOTEBOOK_LINE_LIMIT) -> list[str]:
    nb = nbformat.read(str(path), as_version=4)
    return [f"cell {i}, line {j + 1}: {len(line)} characters"
            for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            for j, line in enumerate(cell.source.splitlines()) if len(line) > limit]


@pytest.mark.parametrize("path", LINE_LIMIT_NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_code_lines_fit_the_limit(path):
    assert _long_code_lines(path) == []


def test_line_limit_check_catches_a_long_line(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("m" * 150),  # prose wraps: not checked
                nbformat.v4.new_code_cell("x = 1\n" + "y = " + "1" * 97 + "\nz = 2")]
    nbformat.write(nb, str(tmp_path / "long.ipynb"))
    assert _long_code_lines(tmp_path / "long.ipynb") == ["cell 1, line 2: 101 characters"]


def test_hygiene_check_catches_a_dirty_notebook(tmp_path):
    """The check can fail: outputs, counts and metadata of an executed notebook are caught, and cleaned."""
    from drifthelpers.batch import clean_notebook, hygiene_problems

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("seed = 0")
    params.metadata["tags"] = ["parameters"]
    dirty = nbformat.v4.new_code_cell("print(1)", execution_count=3)
    dirty.outputs = [nbformat.v4.new_output("stream", text="1\n")]
    dirty.metadata["collapsed"] = True
    nb.cells = [params, dirty]
    nb.metadata["widgets"] = {"state": {}}
    path = tmp_path / "dirty.ipynb"
    nbformat.write(nb, str(path))
    problems = " | ".join(hygiene_problems(path))
    assert "execution count 3" in problems and "stray outputs" in problems
    assert "collapsed" in problems and "widgets" in problems
    assert clean_notebook(path) is True
    assert hygiene_problems(path) == []
    assert clean_notebook(path) is False


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_papermill_sees_every_parameter(path):
    """papermill's own inspector (``papermill --help-notebook``) skips a line it cannot read,
    e.g. one whose comment holds a second '=': every parameter must be visible to it."""
    import papermill

    from drifthelpers.batch import notebook_parameters

    assert set(papermill.inspect_notebook(str(path))) == set(notebook_parameters(path))


def _kernel_training_off_job_threads(path: Path) -> list[str]:
    """Cells that train a cached task model (``synthesis.trained_model``) in the kernel on its own
    thread count, outside ``with parallel.intra_op_threads(...)``, in a notebook whose set-up
    does not put the kernel on ``job_threads_`` (such a model, reused by the full run, would
    follow the machine's cores)."""
    import ast

    nb = nbformat.read(str(path), as_version=4)
    sources = [c.source for c in nb.cells if c.cell_type == "code"]
    if any("torch.set_num_threads(job_threads_)" in s for s in sources):
        return []
    out = []
    for i, src in enumerate(sources):
        tree = ast.parse("\n".join(line for line in src.splitlines() if not line.lstrip().startswith(("%", "!"))))
        inside = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.With) and any(
                    isinstance(item.context_expr, ast.Call) and getattr(item.context_expr.func, "attr", "")
                    == "intra_op_threads" for item in node.items):
                inside |= {id(n) for n in ast.walk(node)}
        out += [f"code cell {i}, line {node.lineno}" for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "trained_model"
                and id(node) not in inside]
    return out


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_models_trained_in_the_kernel_use_the_job_threads(path):
    assert _kernel_training_off_job_threads(path) == []


def test_job_threads_check_catches_a_model_trained_on_the_kernels_threads(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("with parallel.intra_op_threads(job_threads_):\n"
                                          "    m = synthesis.trained_model(ds, cfg, preset=p)"),
                nbformat.v4.new_code_cell("m = synthesis.trained_model(ds, cfg, preset=p)")]
    nbformat.write(nb, str(tmp_path / "t.ipynb"))
    assert _kernel_training_off_job_threads(tmp_path / "t.ipynb") == ["code cell 1, line 1"]
    nb.cells.insert(0, nbformat.v4.new_code_cell("torch.set_num_threads(job_threads_)"))
    nbformat.write(nb, str(tmp_path / "t.ipynb"))
    assert _kernel_training_off_job_threads(tmp_path / "t.ipynb") == []


# --------------------------------------------------------------------------- conventions


def test_license_file_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"  # an SPDX expression, not the deprecated table
    assert project["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "the drifthelpers authors" in text
    assert "WITHOUT WARRANTY OF ANY KIND" in text


def test_version_has_one_source():
    """pyproject reads the version from ``drifthelpers.__version__``; CITATION.cff repeats it."""
    import drifthelpers

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and pyproject["project"]["dynamic"] == ["version"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "drifthelpers.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", drifthelpers.__version__)
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert str(cff["version"]) == drifthelpers.__version__


def test_project_urls_name_the_paper_and_the_data():
    urls = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["urls"]
    assert all(u.startswith("https://") for u in urls.values())
    assert any("2211.02578" in u for u in urls.values())
    assert any("10.5281/zenodo.5235536" in u for u in urls.values())


def _cff_person_ok(person: dict) -> bool:
    return bool(person.get("family-names") or person.get("name"))


def test_citation_cff_has_the_required_keys():
    """CITATION.cff (Citation File Format 1.2.0): the software, the paper it reproduces as the
    preferred citation, and the paper and the data set as references."""
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text(encoding="utf-8"))
    for key in ("cff-version", "message", "title", "authors", "type", "license", "preferred-citation", "references"):
        assert key in cff, key
    assert cff["cff-version"] == "1.2.0"
    assert cff["type"] == "software" and cff["license"] == "MIT"
    assert cff["authors"] and all(_cff_person_ok(p) for p in cff["authors"])

    paper = cff["preferred-citation"]
    assert paper["type"] == "article"
    assert paper["title"] == "Data Models for Dataset Drift Controls in Machine Learning With Optical Images"
    assert paper["journal"] == "Transactions on Machine Learning Research" and paper["year"] == 2023
    assert paper["authors"][0]["family-names"] == "Oala" and len(paper["authors"]) == 13
    assert all(_cff_person_ok(p) for p in paper["authors"])
    assert "2211.02578" in paper["url"]

    refs = {r["type"]: r for r in cff["references"]}
    assert {"data", "article"} <= set(refs)
    data = refs["data"]
    assert data["doi"] == "10.5281/zenodo.5235536" and data["license"] == "CC-BY-4.0"
    assert data["title"] and data["authors"] and all(_cff_person_ok(p) for p in data["authors"])
    assert refs["article"]["title"] == paper["title"]


# --------------------------------------------------------------------------- ./drift


def _drift_source() -> str:
    return (REPO / "drift").read_text()


def test_notebooks_name_the_kernel_that_drift_registers():
    """JupyterLab opens each notebook with the kernel the set-up registers."""
    source = _drift_source()
    match = re.search(r'^KERNEL_NAME="?([\w.-]+)"?', source, flags=re.M)
    assert match, "./drift defines no KERNEL_NAME"
    install = re.search(r"ipykernel install\b.*?--name\s+(\S+)", source, flags=re.S)
    assert install and install.group(1) == '"$KERNEL_NAME"', "./drift registers a kernel by another name"
    for path in _notebooks():
        kernelspec = nbformat.read(str(path), as_version=4).metadata.get("kernelspec", {})
        assert kernelspec.get("name") == match.group(1), f"{path.name} names kernel {kernelspec.get('name')!r}"


def test_drift_help_prints_only_the_help():
    import subprocess

    result = subprocess.run(["bash", str(REPO / "drift"), "help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith("drift:")
    for command in ("./drift run", "./drift test", "./drift test --fast", "./drift lab", "./drift setup"):
        assert any(line.strip().startswith(command) for line in lines), command
    assert not any(word in result.stdout for word in ("set -euo", "#!/", "ROOT=", "PYTHON=\"$"))


def test_drift_needs_no_sha256sum():
    """macOS has no ``sha256sum``: the environment's fingerprint comes from Python."""
    import hashlib
    import shutil
    import subprocess

    source = _drift_source()
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("#"))
    assert "sha256sum" not in code
    function = re.search(r"^fingerprint\(\) \{\n.*?^\}\n", source, flags=re.M | re.S)
    assert function, "./drift has no fingerprint() function"
    pyproject = REPO / "pyproject.toml"
    script = f'{function.group(0)}\nfingerprint "$1" "$2"\n'
    bash = shutil.which("bash")
    result = subprocess.run([bash, "-c", script, "drift", sys.executable, str(pyproject)],  # no PATH: no sha256sum
                            capture_output=True, text=True, timeout=60, env={"PATH": "/nonexistent"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == hashlib.sha256(pyproject.read_bytes()).hexdigest()[:16]


# --------------------------------------------------------------------------- the fast subset


def _package_modules() -> set[str]:
    modules = set()
    for path in (REPO / "drifthelpers").rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules.add(".".join(parts))
    return modules


def _imported_names(node, package: str | None = None) -> set[str]:
    """Dotted names an import statement (or ``python -m NAME`` strings) may bring in."""
    import ast

    names = set()
    if isinstance(node, ast.Import):
        names |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level and package:
            parent = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(parent + ([base] if base else []))
        names.add(base)
        names |= {f"{base}.{a.name}" for a in node.names}
    return names


def _expand(names: set[str], modules: set[str]) -> set[str]:
    """The package modules these dotted names import (a name ``a.b.c`` imports ``a``, ``a.b``
    and ``a.b.c`` where each is a module)."""
    out = set()
    for name in names:
        parts = name.split(".")
        out |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & modules
    return out


def _module_imports(module: str, modules: set[str]) -> set[str]:
    """Package modules that ``module`` imports when it is imported (module-level statements)."""
    import ast

    path = REPO / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for stmt in tree.body:  # module-level statements only: imports inside functions run on a call
        if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for node in ast.walk(stmt):
                names |= _imported_names(node, package)
    return _expand(names, modules)


def _is_slow(decorators) -> bool:
    import ast

    return any("mark.slow" in ast.unparse(d) for d in decorators)


def _fast_test_imports(path: Path, modules: set[str]) -> set[str]:
    """Package modules a test file imports or runs (``-m drifthelpers``) outside slow tests."""
    import ast

    tree = ast.parse(path.read_text())
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in stmt.targets):
            if "mark.slow" in ast.unparse(stmt.value):
                return set()
    scopes = []  # (statements, counted)
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            scopes.append((stmt, not _is_slow(stmt.decorator_list)))
        elif isinstance(stmt, ast.ClassDef):
            slow_class = _is_slow(stmt.decorator_list)
            for item in stmt.body:
                fast = not slow_class and not _is_slow(getattr(item, "decorator_list", []))
                scopes.append((item, fast))
        else:
            scopes.append((stmt, True))
    names = set()
    for scope, fast in scopes:
        if not fast:
            continue
        for node in ast.walk(scope):
            names |= _imported_names(node)
        text = ast.unparse(scope)
        names |= set(re.findall(r"\bdrifthelpers(?:\.\w+)+", text))
        if re.search(r"""-m['"]?,?\s*['"]?drifthelpers\b""", text):
            names.add("drifthelpers.__main__")
    return _expand(names, modules)


def test_every_module_is_imported_by_a_fast_test():
    """``./drift test --fast`` (the tests not marked slow) reaches every module of the package:
    each is imported by a fast test, directly or through a module it imports."""
    modules = _package_modules()
    reached = set()
    for path in sorted((REPO / "tests").glob("*.py")):
        reached |= _fast_test_imports(path, modules)
    frontier = set(reached)
    while frontier:
        new = set()
        for module in frontier:
            new |= _module_imports(module, modules) - reached
        reached |= new
        frontier = new
    missing = sorted(modules - reached)
    assert not missing, f"no fast test imports {missing}"


def test_module_scan_sees_imports_and_slow_marks(tmp_path):
    """The scan above can fail: a module imported only by a slow test does not count."""
    modules = {"drifthelpers", "drifthelpers.isp", "drifthelpers.raw", "drifthelpers.sweep", "drifthelpers.__main__"}
    test = tmp_path / "test_x.py"
    test.write_text(
        "import pytest\nfrom drifthelpers import raw\n\n"
        "@pytest.mark.slow\ndef test_a():\n    from drifthelpers import isp\n\n"
        "def test_b():\n    import drifthelpers.sweep\n    run(['-m', 'drifthelpers'])\n"
    )
    assert _fast_test_imports(test, modules) == {"drifthelpers", "drifthelpers.raw", "drifthelpers.sweep",
                                                 "drifthelpers.__main__"}
    test.write_text("import pytest\npytestmark = pytest.mark.slow\nfrom drifthelpers import raw\n")
    assert _fast_test_imports(test, modules) == set()


# --------------------------------------------------------------------------- no development log

# A word for a unit of development work followed by a number ("session" and a digit, say), or
# "round(s) of work": the repository describes the software as it is, not how it was made.
_HISTORY = re.compile(r"\b(?:issues?|tickets?|sessions?|stops?)\s*#?\s*\d+\b|\brounds? of work\b", re.I)
_TEXT_SUFFIXES = {".py", ".md", ".ipynb", ".toml", ".yml", ".yaml", ".cff", ".txt", ".cfg", ".json", ".sh", ""}


def _tracked_text_files() -> list[Path]:
    import subprocess

    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, timeout=60, check=True).stdout
        paths = [REPO / line for line in out.splitlines() if line]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk the sources
        paths = [p for p in REPO.rglob("*") if not any(part.startswith(".") or part in ("data", "runs")
                                                         for part in p.relative_to(REPO).parts[:-1])]
    return [p for p in paths if p.is_file() and p.suffix in _TEXT_SUFFIXES]


def _history_hits(text: str) -> list[str]:
    return [m.group(0) for m in _HISTORY.finditer(text)]


def test_history_pattern_catches_ticket_numbers():
    # (the numbers are formatted in, so that this file holds no such phrase itself)
    for phrase in (f"see issue {14}", f"in Session {3}", f"stop {12} changed", f"ticket #{7}", "a round " "of work"):
        assert _history_hits(phrase), phrase
    for phrase in ("median of 7 rounds", "scope='session'", "JPY_SESSION_NAME", "issues a warning at 3 dB"):
        assert not _history_hits(phrase), phrase


def test_no_development_history_wording():
    """No ticket or session numbers anywhere in the tracked text files."""
    hits = []
    for path in _tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            hits += [f"{path.relative_to(REPO)}:{lineno}: {h}" for h in _history_hits(line)]
    assert not hits, "development-history wording:\n" + "\n".join(hits)


def test_relative_links_in_the_docs_exist():
    """Every relative link in the README, the changelog and docs/ points to a file that exists."""
    pages = [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL or an anchor on the same page
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken, "broken links: " + ", ".join(broken)
