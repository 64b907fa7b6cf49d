import kikuchipy as kp
import matplotlib
import numpy as np
import pytest

import kikuchipy_cnn
from kikuchipy_cnn.plotting import level_map

matplotlib.use("Agg")


@pytest.fixture
def xmap(tiny_model):
    s = kp.data.nickel_ebsd_small()
    mask = np.zeros((3, 3), bool)
    mask[2, 2] = True
    return s.classify_structure(model=tiny_model, min_score=0, navigation_mask=mask,
                                verbose=0, show_progressbar=False)


def test_summary(xmap):
    table = kikuchipy_cnn.summary(xmap)
    assert sum(r["n"] for r in table.values()) == 8
    assert abs(sum(r["fraction"] for r in table.values()) - 1) < 1e-9
    for name, row in table.items():
        sel = np.array([xmap.phases[int(i)].name for i in xmap.phase_id]) == name
        assert row["mean_score"] == pytest.approx(xmap.scores[sel].mean(), rel=1e-5)
    sys_table = kikuchipy_cnn.summary(xmap, "crystal_system")
    assert set(sys_table) <= {"triclinic", "monoclinic", "orthorhombic", "tetragonal",
                              "trigonal", "hexagonal", "cubic"}
    text = kikuchipy_cnn.format_summary(table)
    assert "mean score" in text and list(table)[0] in text


def test_level_map(xmap):
    m = level_map(xmap, "bravais_lattice")
    assert m.shape == xmap.shape
    lab = kikuchipy_cnn.labels(xmap)["bravais_lattice"]
    assert [m.phases[int(i)].name for i in m.phase_id] == list(lab)
    np.testing.assert_allclose(m.scores, xmap.prop["bravais_lattice_score"])


def test_plot_maps(xmap, tmp_path):
    import matplotlib.pyplot as plt

    fig = kikuchipy_cnn.plot_maps(xmap, return_figure=True)
    assert len(fig.axes) >= 5
    fig.savefig(tmp_path / "maps.png")
    assert (tmp_path / "maps.png").stat().st_size > 5000
    plt.close("all")
