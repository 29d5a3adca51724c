"""Tests of the procedural scenes (drifthelpers.scenes)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage

from drifthelpers.scenes import (
    AERIAL_LAYERS,
    CLASS_COUNTS_PAPER,
    LEUKOCYTE_CLASSES,
    aerial_tile,
    blood_smear,
    class_frequencies,
    sample_classes,
)

N_PER_CLASS = 6  # renders per class for the morphology statistics


@pytest.fixture(scope="module")
def smears():
    """A few renders of every class with their ground-truth geometry (one seed per class)."""
    out = {}
    for k, cls in enumerate(LEUKOCYTE_CLASSES):
        rng = np.random.default_rng(100 + k)
        out[cls] = [blood_smear(cls, rng, return_info=True) for _ in range(N_PER_CLASS)]
    return out


def _cytoplasm(info):
    """Cell pixels away from the nucleus (2 px margin)."""
    return info["cell_mask"] & ~ndimage.binary_dilation(info["nucleus_mask"], iterations=2)


def _n_lobes(nucleus_mask):
    """Nuclear lobes: components left after eroding away thin chromatin strands."""
    er = ndimage.binary_erosion(nucleus_mask, iterations=2)
    lab, n = ndimage.label(er)
    sizes = ndimage.sum(er, lab, range(1, n + 1))
    return int(np.sum(np.asarray(sizes) >= 10))


# --------------------------------------------------------------------------- classes


def test_class_constants():
    assert tuple(CLASS_COUNTS_PAPER) == LEUKOCYTE_CLASSES
    assert sum(CLASS_COUNTS_PAPER.values()) == 940
    f = class_frequencies()
    assert sum(f.values()) == pytest.approx(1.0)
    assert f["LYT"] > f["NGB"]


def test_sample_classes_paper_imbalance_with_minimum():
    labels = sample_classes(200, np.random.default_rng(0), "paper", min_per_class=3)
    counts = {c: labels.count(c) for c in LEUKOCYTE_CLASSES}
    assert len(labels) == 200
    assert min(counts.values()) >= 3
    assert counts["LYT"] > counts["MON"] > counts["EOS"] > counts["NGB"]
    assert labels != sorted(labels)  # shuffled
    assert sample_classes(200, np.random.default_rng(0), "paper", 3) == labels


def test_sample_classes_balanced_and_errors():
    labels = sample_classes(90, 1, "balanced", min_per_class=0)
    assert all(labels.count(c) == 10 for c in LEUKOCYTE_CLASSES)
    with pytest.raises(ValueError, match="imbalance"):
        sample_classes(90, 1, "skewed")
    with pytest.raises(ValueError, match="min_per_class"):
        sample_classes(10, 1, min_per_class=2)


def test_bad_class_name_lists_valid_classes():
    with pytest.raises(ValueError, match="NGS") as err:
        blood_smear("XYZ", 0)
    assert all(c in str(err.value) for c in LEUKOCYTE_CLASSES)


# --------------------------------------------------------------------------- blood smear


@pytest.mark.parametrize("cls", LEUKOCYTE_CLASSES)
def test_every_class_renders(smears, cls):
    for img, info in smears[cls]:
        assert img.shape == (256, 256, 3) and img.dtype == np.float32
        assert 0.0 <= img.min() and img.max() <= 1.0
        assert info["cls"] == cls
        assert info["cell_mask"].sum() > 500
        assert info["nucleus_mask"].any()
        # bright-field background: the corners far from the cell are mostly bright
        bg = np.median(img[~ndimage.binary_dilation(info["cell_mask"], iterations=10)], axis=0)
        assert np.all(bg > 0.55)
        # the leukocyte is stained: darker than the background in green (UNC: poorly stained)
        factor = 0.93 if cls == "UNC" else 0.8
        assert img[info["nucleus_mask"], 1].mean() < factor * bg[1]


def test_blood_smear_determinism_and_size():
    a = blood_smear("MON", np.random.default_rng(3))
    b = blood_smear("MON", np.random.default_rng(3))
    c = blood_smear("MON", np.random.default_rng(4))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert blood_smear("LYT", 0, size=128).shape == (128, 128, 3)
    with pytest.raises(ValueError, match="size"):
        blood_smear("LYT", 0, size=16)


def test_eosinophil_granules_redder_than_neutrophil(smears):
    def redness(cls):
        return np.mean([np.median(img[_cytoplasm(i), 0] / img[_cytoplasm(i), 1])
                        for img, i in smears[cls]])

    assert redness("EOS") > redness("NGS") + 0.4


def test_lymphocyte_cytoplasm_blue_neutrophil_not(smears):
    def blueness(cls):
        return np.mean([np.median(img[_cytoplasm(i), 2] / img[_cytoplasm(i), 0])
                        for img, i in smears[cls]])

    assert blueness("LYA") > blueness("NGS") + 0.3
    assert blueness("LYT") > blueness("NGS")


def test_lymphocyte_nucleus_to_cell_ratio_exceeds_monocyte(smears):
    lyt = [i["nc_ratio"] for _, i in smears["LYT"]]
    mon = [i["nc_ratio"] for _, i in smears["MON"]]
    assert min(lyt) > max(mon)
    # and the lymphocyte is the smaller cell
    assert max(i["cell_mask"].sum() for _, i in smears["LYT"]) < min(
        i["cell_mask"].sum() for _, i in smears["MON"])


def test_segmented_neutrophil_has_more_lobes_than_band(smears):
    ngs = [_n_lobes(i["nucleus_mask"]) for _, i in smears["NGS"]]
    ngb = [_n_lobes(i["nucleus_mask"]) for _, i in smears["NGB"]]
    eos = [_n_lobes(i["nucleus_mask"]) for _, i in smears["EOS"]]
    assert min(ngs) >= 3 and max(ngs) <= 5
    assert ngb == [1] * N_PER_CLASS
    assert eos == [2] * N_PER_CLASS


def test_basophil_darkest_granular_cell(smears):
    def cell_green(cls):
        return np.mean([img[i["cell_mask"], 1].mean() for img, i in smears[cls]])

    assert cell_green("BAS") < cell_green("NGS") - 0.15
    assert cell_green("BAS") < cell_green("EOS")


def test_smudge_cell_is_pale_and_diffuse(smears):
    for img, info in smears["KSC"]:
        assert np.array_equal(info["cell_mask"], info["nucleus_mask"])  # no cytoplasm
    ksc = np.mean([img[i["nucleus_mask"], 1].mean() for img, i in smears["KSC"]])
    lyt = np.mean([img[i["nucleus_mask"], 1].mean() for img, i in smears["LYT"]])
    assert ksc > lyt + 0.2


def test_unclear_cell_is_blurred(smears):
    """UNC cells are out of focus: weaker gradients than the sharp class they degrade."""

    def edge_energy(img, mask):
        g = np.hypot(*np.gradient(img[..., 1]))
        return g[ndimage.binary_dilation(mask, iterations=3)].mean()

    unc = np.mean([edge_energy(img, i["cell_mask"]) for img, i in smears["UNC"]])
    sharp = np.mean([edge_energy(img, i["cell_mask"]) for c in ("LYT", "NGS", "MON")
                     for img, i in smears[c]])
    assert unc < 0.6 * sharp
    assert all(i["base_class"] in LEUKOCYTE_CLASSES for _, i in smears["UNC"])


def test_blood_smear_speed():
    rng = np.random.default_rng(0)
    t = time.process_time()
    for cls in LEUKOCYTE_CLASSES:
        blood_smear(cls, rng)
    per_scene = (time.process_time() - t) / len(LEUKOCYTE_CLASSES)
    assert per_scene < 0.1  # budget 50 ms; generous bound for loaded CI machines


# --------------------------------------------------------------------------- aerial tiles


def _raster_cars(cars, size):
    """Independent rasterisation of the car rectangles (pixel centres inside)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    union = np.zeros((size, size), bool)
    for car in cars:
        cx, cy = car["center_xy"]
        c, s = np.cos(car["angle_rad"]), np.sin(car["angle_rad"])
        u = (xx - cx) * c + (yy - cy) * s
        v = -(xx - cx) * s + (yy - cy) * c
        r = car["corner_radius_px"]
        hl, hw = car["length_px"] / 2, car["width_px"] / 2
        # rounded rectangle = points within r of the inner rectangle
        du = np.maximum(np.abs(u) - (hl - r), 0.0)
        dv = np.maximum(np.abs(v) - (hw - r), 0.0)
        union |= du**2 + dv**2 <= r**2 + 1e-6
    return union


@pytest.fixture(scope="module")
def tiles():
    rng = np.random.default_rng(11)
    return [aerial_tile(rng, min_cars=1, return_info=True) for _ in range(8)]


def test_aerial_shapes_and_range(tiles):
    for img, mask, info in tiles:
        assert img.shape == (256, 256, 3) and img.dtype == np.float32
        assert mask.shape == (256, 256) and mask.dtype == bool
        assert 0.0 <= img.min() and img.max() <= 1.0
        assert info["layer"].dtype == np.uint8
    assert len({info["kind"] for _, _, info in tiles}) >= 2  # varied scenes


def test_aerial_mask_is_exact(tiles):
    car, tree = AERIAL_LAYERS["car"], AERIAL_LAYERS["tree"]
    for img, mask, info in tiles:
        assert np.array_equal(mask, info["layer"] == car)
        assert np.array_equal(mask, info["car_id"] >= 0)
        union = _raster_cars(info["cars"], 256)
        # every mask pixel lies on a car; car pixels not in the mask are hidden by trees
        assert np.all(union[mask])
        assert np.array_equal(union & ~mask, union & (info["layer"] == tree))
        # mask pixels show the car layer's colour (under tree shade), nothing else
        expected = info["car_paint"] * info["shade"][..., None]
        assert np.allclose(img[mask], np.clip(expected[mask], 0, 1), atol=1e-6)
        hidden = union & ~mask
        if hidden.any():
            assert not np.allclose(img[hidden], info["car_paint"][hidden])


def test_aerial_car_size_matches_gsd(tiles):
    cars = [c for _, _, i in tiles for c in i["cars"]]
    assert cars
    for c in cars:
        assert 4.0 / 0.06 - 1 <= c["length_px"] <= 5.0 / 0.06 + 1  # ~67-83 px
        assert 1.7 / 0.06 - 1 <= c["width_px"] <= 1.95 / 0.06 + 1  # ~28-33 px


@pytest.mark.parametrize("min_cars", [1, 3])
def test_aerial_min_cars_honoured(min_cars):
    rng = np.random.default_rng(5)
    for _ in range(4):
        _, mask, info = aerial_tile(rng, car_density=0.0, min_cars=min_cars, return_info=True)
        assert mask.any()
        assert len(np.unique(info["car_id"][info["car_id"] >= 0])) >= min_cars


def test_aerial_determinism_and_errors():
    a, ma = aerial_tile(np.random.default_rng(9))
    b, mb = aerial_tile(np.random.default_rng(9))
    c, _ = aerial_tile(np.random.default_rng(10))
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert not np.array_equal(a, c)
    with pytest.raises(ValueError, match="car_density"):
        aerial_tile(0, car_density=2.0)
    with pytest.raises(ValueError, match="min_cars"):
        aerial_tile(0, min_cars=-1)


def test_aerial_speed():
    rng = np.random.default_rng(0)
    t = time.process_time()
    for _ in range(8):
        aerial_tile(rng, min_cars=1)
    assert (time.process_time() - t) / 8 < 0.1  # budget 50 ms; generous bound
