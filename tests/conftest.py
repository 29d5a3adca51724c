"""Shared fixtures: paths to the repository and to the real camera files."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REAL_RAW_DIR = REPO.parent / "shared" / "testdata" / "raw"
CANON_CRW = REAL_RAW_DIR / "canon_powershot_g2_CRW_0304.CRW"
KODAK_KDC = REAL_RAW_DIR / "kodak_dc120_P003911.KDC"


def _need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"real camera file {path} is absent (../shared/testdata/raw is optional)")
    return path


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def canon_crw() -> Path:
    return _need(CANON_CRW)


@pytest.fixture(scope="session")
def kodak_kdc() -> Path:
    return _need(KODAK_KDC)


@pytest.fixture(scope="session", params=["canon", "kodak"])
def real_raw_file(request) -> Path:
    return _need(CANON_CRW if request.param == "canon" else KODAK_KDC)


@pytest.fixture(scope="session")
def executed_run(tmp_path_factory):
    """Every notebook of ``notebooks/`` executed once with papermill, as ``./drift run`` does.

    The one execution of the notebooks in the test suite: tests/test_notebooks.py checks it
    and tests/test_book.py builds the book from it. Returns ``(run_dir, failure)``, where
    ``failure`` is the :class:`~drifthelpers.batch.NotebookFailed` that stopped the run, or None.
    """
    from drifthelpers.batch import NotebookFailed, run_notebooks

    runs = tmp_path_factory.mktemp("executed")
    try:
        run_notebooks(run_name="run", runs_dir=runs, progress=False, log=lambda message: None)
    except NotebookFailed as exc:
        return runs / "run", exc
    return runs / "run", None


@pytest.fixture(scope="session")
def tiny_micro(tmp_path_factory):
    """A 27-crop mini microscopy set (64x64, 3 per class) for quick end-to-end experiments."""
    from drifthelpers import datasets

    root = tmp_path_factory.mktemp("tiny_micro")
    paths = datasets.build_mini(root=root, which="microscopy", n_microscopy=27, size=64, min_per_class=3,
                                progress=False, workers=1)
    return datasets.RawMicroscopy(paths["microscopy"])


@pytest.fixture
def one_torch_thread():
    """Tiny models run faster on one thread (and far faster on a shared machine); restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
