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
def tiny_micro(tmp_path_factory):
    """A 27-crop mini microscopy set (64x64, 3 per class) for quick end-to-end experiments."""
    from drifthelpers import datasets

    root = tmp_path_factory.mktemp("tiny_micro")
    paths = datasets.build_mini(root=root, which="microscopy", n_microscopy=27, size=64, min_per_class=3,
                                progress=False, workers=1)
    return datasets.RawMicroscopy(paths["microscopy"])
