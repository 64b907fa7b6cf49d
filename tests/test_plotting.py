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


def _map_axes(fig):
    return [ax for ax in fig.axes if ax.name == "plot_map" and ax.images
            and ax.images[0].get_array().ndim >= 2 and ax.get_title()]


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.fixture
def candidate_map():
    """A 6 x 8 map of two candidate phases that share orix's default colour."""
    from types import SimpleNamespace

    from orix.crystal_map import Phase, PhaseList

    from kikuchipy_cnn.crystal_map import DEFAULT_COLOURS, build_crystal_map
    from kikuchipy_cnn.symmetry import JOINT_CLASSES

    card = SimpleNamespace(classes=JOINT_CLASSES,
                           colours=[DEFAULT_COLOURS[c] for c in JOINT_CLASSES])
    p = np.full((48, 23), 0.01)
    p[:24, JOINT_CLASSES.index("cI m-3m")] = 0.8
    p[24:, JOINT_CLASSES.index("cF m-3m")] = 0.8
    p /= p.sum(axis=1, keepdims=True)
    pl = PhaseList(phases=[Phase("fe", space_group=229), Phase("ni", space_group=225)])
    assert pl[0].color == pl[1].color  # the paper cut: both tab:blue
    xmap = build_crystal_map(p.astype(np.float32), np.ones(48, bool), card, (6, 8), (0.5, 0.5),
                             "um", 0.3, None, pl)
    return xmap, pl


def test_format_summary_accepts_a_map(xmap):
    assert kikuchipy_cnn.format_summary(xmap) == kikuchipy_cnn.format_summary(
        kikuchipy_cnn.summary(xmap))
    text = kikuchipy_cnn.format_summary(xmap, "crystal_system")
    assert text == kikuchipy_cnn.format_summary(kikuchipy_cnn.summary(xmap, "crystal_system"))
    with pytest.raises(TypeError, match="CrystalMap"):
        kikuchipy_cnn.format_summary([1, 2])


def test_plot_maps_returns_its_figure(xmap):
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    fig = kikuchipy_cnn.plot_maps(xmap)
    assert isinstance(fig, Figure) and len(_map_axes(fig)) == 5
    assert isinstance(kikuchipy_cnn.plot_maps(xmap, return_figure=True), Figure)
    assert kikuchipy_cnn.plot_maps(xmap, return_figure=False) is None
    plt.close("all")


def test_plot_maps_axes_in_scan_units(xmap, candidate_map):
    import matplotlib.pyplot as plt

    for m in (xmap, candidate_map[0]):
        fig = kikuchipy_cnn.plot_maps(m)
        fig.canvas.draw()
        x, y = np.unique(m._x), np.unique(m._y)
        for ax in _map_axes(fig):
            assert ax.get_xlabel() == "x (µm)" and ax.get_ylabel() == "y (µm)"
            left, right, bottom, top = ax.images[0].get_extent()
            np.testing.assert_allclose([left, right], [x[0] - m.dx / 2, x[-1] + m.dx / 2])
            np.testing.assert_allclose([top, bottom], [y[0] - m.dy / 2, y[-1] + m.dy / 2])
            # Ticks on scan points or round numbers of µm within the map, never
            # on pixel edges
            ticks = [t for t in ax.get_xticks() if left <= t <= right]
            assert len(ticks) >= 2
            assert not np.any(np.isclose(np.mod(np.array(ticks) - x[0], m.dx), m.dx / 2))
        plt.close("all")


def test_plot_maps_legends_outside_the_maps(xmap, candidate_map):
    import matplotlib.pyplot as plt

    for m in (xmap, candidate_map[0]):
        fig = kikuchipy_cnn.plot_maps(m)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        map_axes = _map_axes(fig)
        legends = [ax.get_legend() for ax in map_axes if ax.get_legend() is not None]
        assert len(legends) == 4  # phase and the three levels
        for legend in legends:
            for ax in map_axes:
                assert not _overlap(legend.get_window_extent(renderer), ax.get_window_extent(renderer))
        plt.close("all")


def test_plot_maps_colour_bar_label_clear_of_ticks(xmap, candidate_map):
    import matplotlib.pyplot as plt

    for m in (xmap, candidate_map[0]):
        fig = kikuchipy_cnn.plot_maps(m)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        cbar_ax = _map_axes(fig)[1].images[0].colorbar.ax
        label = cbar_ax.yaxis.label
        assert label.get_text().lower() == "top probability"
        label_box = label.get_window_extent(renderer)
        for ax in fig.axes:
            for tick in ax.get_xticklabels() + ax.get_yticklabels():
                if tick.get_text():
                    assert not _overlap(label_box, tick.get_window_extent(renderer)), tick
            for text in (ax.xaxis.label, ax.yaxis.label):
                if text is not label and text.get_text():
                    assert not _overlap(label_box, text.get_window_extent(renderer)), text
        plt.close("all")


def test_plot_maps_distinct_phase_colours(candidate_map):
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb

    xmap, pl = candidate_map
    before_map = [p.color for _, p in xmap.phases]
    fig = kikuchipy_cnn.plot_maps(xmap)
    phase_ax = _map_axes(fig)[0]
    handles = phase_ax.get_legend().legend_handles
    colours = [tuple(h.get_facecolor()[:3]) for h in handles]
    assert len(set(colours)) == 2
    names = [t.get_text() for t in phase_ax.get_legend().get_texts()]
    assert names == ["fe (cI m-3m)", "ni (cF m-3m)"]
    # The drawn pixels use them: fe fills the first three rows, ni the rest
    rgb = np.asarray(phase_ax.images[0].get_array())
    np.testing.assert_allclose(rgb[0, 0, :3], colours[0], atol=1e-6)
    np.testing.assert_allclose(rgb[-1, -1, :3], colours[1], atol=1e-6)
    assert to_rgb(pl[0].color) == to_rgb(pl[1].color)  # the user's list is untouched
    assert [p.color for _, p in xmap.phases] == before_map  # and so is the map
    plt.close("all")


def test_distinct_colours_keeps_first_and_not_indexed():
    from orix.crystal_map import Phase, PhaseList

    from kikuchipy_cnn.plotting import distinct_colours

    pl = PhaseList(phases=[Phase("a", color="tab:red"), Phase("b", color="tab:red"),
                           Phase("c", color="r"), Phase("d", color="tab:blue")])
    pl.add_not_indexed()
    out = distinct_colours(pl)
    assert out[-1].color == "white" and out[0].color == "tab:red" and out[3].color == "tab:blue"
    rgbs = [p.color_rgb for i, p in out if i != -1]
    assert len(set(rgbs)) == 4
    assert pl[1].color == "tab:red"


def test_plot_maps_slice_and_1d(xmap, candidate_map):
    """A slice of a 2-D map plots on the full grid (orix's convention); a 1-D
    map is refused with a clear message."""
    import matplotlib.pyplot as plt

    fig = kikuchipy_cnn.plot_maps(xmap[0, :])
    assert _map_axes(fig)[0].images[0].get_array().shape[:2] == (3, 3)
    plt.close("all")
    from types import SimpleNamespace

    from kikuchipy_cnn.crystal_map import DEFAULT_COLOURS, build_crystal_map
    from kikuchipy_cnn.symmetry import JOINT_CLASSES

    card = SimpleNamespace(classes=JOINT_CLASSES,
                           colours=[DEFAULT_COLOURS[c] for c in JOINT_CLASSES])
    line = build_crystal_map(np.full((4, 23), 1 / 23, np.float32), np.ones(4, bool), card, (4,),
                             (1.0,), "um", 0.0, None)
    with pytest.raises(ValueError, match="2-D"):
        kikuchipy_cnn.plot_maps(line)
