"""Phase, confidence and per-level maps of a classification, and a summary
table of phase fractions with mean confidence."""

from __future__ import annotations

import numpy as np
from orix.crystal_map import CrystalMap, Phase, PhaseList

from kikuchipy_cnn.crystal_map import DEFAULT_COLOURS, decision
from kikuchipy_cnn.symmetry import JOINT_CLASSES, joint_class_info, level_names

__all__ = ["level_map", "plot_maps", "summary"]

# One colour per class of a level: the colour of its first joint class
_LEVEL_COLOUR = {
    level: {
        name: DEFAULT_COLOURS[next(j for j in JOINT_CLASSES if joint_class_info(j)[level] == name)]
        for name in level_names(level)
    }
    for level in ("crystal_system", "bravais_lattice", "laue_class")
}


def level_map(xmap: CrystalMap, level: str) -> CrystalMap:
    """Return a copy of a classification map whose phases are the classes of
    one level (``"crystal_system"``, ``"bravais_lattice"`` or
    ``"laue_class"``), each point in that level's class of its joint class
    (:func:`~kikuchipy_cnn.labels`), with that class's probability as
    ``"scores"``."""
    names = level_names(level)
    dec = decision(xmap)
    lab = dec.labels[level]
    n_all = xmap.is_in_data.size
    full = np.full(n_all, -1)
    ids = np.array([names.index(v) if v in names else -1 for v in lab])
    full[xmap.is_in_data] = ids
    used = sorted(set(ids) - {-1})
    phases = PhaseList(
        phases=[Phase(name=names[i], color=_LEVEL_COLOUR[level][names[i]]) for i in used],
        ids=used,
    ) if used else PhaseList()
    prop = {"scores": np.full(n_all, np.nan, dtype=np.float32)}
    prop["scores"][xmap.is_in_data] = dec.scores[level]
    coords = {"x": xmap._x, "y": xmap._y} if xmap._y is not None else {"x": xmap._x}
    return CrystalMap(
        rotations=xmap._rotations, phase_id=full, phase_list=phases, prop=prop,
        scan_unit=xmap.scan_unit, is_in_data=xmap.is_in_data, **coords,
    )


def plot_maps(xmap: CrystalMap, return_figure: bool = False, **kwargs):
    """Plot the phase map, the confidence (top probability) map and the
    crystal system, Bravais lattice and Laue class maps side by side, with
    orix's map plotting.

    Parameters
    ----------
    xmap
        Map returned by ``classify_structure()``; must be 2-D.
    return_figure
        Whether to return the figure.
    **kwargs
        Passed to :func:`matplotlib.pyplot.figure`.

    Returns
    -------
    fig
        The figure, if ``return_figure`` is True.
    """
    import matplotlib.pyplot as plt
    import orix.plot.crystal_map_plot  # noqa: F401  (registers "plot_map")

    kwargs.setdefault("figsize", (20, 4))
    fig = plt.figure(**kwargs)
    panels = [("phase", xmap), ("confidence", xmap)] + [
        (level.replace("_", " "), level_map(xmap, level))
        for level in ("crystal_system", "bravais_lattice", "laue_class")
    ]
    for i, (title, m) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1, projection="plot_map")
        if title == "confidence":
            ax.plot_map(m, m.scores, cmap="gray", vmin=0, vmax=1, scalebar=False)
            ax.add_colorbar("Top probability")
        else:
            ax.plot_map(m, scalebar=False, legend_properties={"fontsize": 7})
        ax.set_title(title)
    if return_figure:
        return fig


def summary(xmap: CrystalMap, level: str = "joint") -> dict:
    """Phase fractions and mean confidence of a classification.

    Parameters
    ----------
    xmap
        Map returned by ``classify_structure()``.
    level
        ``"joint"`` (the map's phases, phase_id -1 as ``"not classified"``)
        or ``"crystal_system"``, ``"bravais_lattice"``, ``"laue_class"``
        (each point's class of that level: that of its joint class, see
        :func:`~kikuchipy_cnn.labels`; points below ``min_score`` are counted
        in it too, masked or unusable ones as ``"not classified"``).

    Returns
    -------
    table
        ``{class: {"n": int, "fraction": float, "mean_score": float}}``,
        most frequent first. ``print(format_summary(table))`` prints it.
    """
    if level == "joint":
        ids = xmap.phase_id
        names = np.array(
            [xmap.phases[int(i)].name if i != -1 else "not classified" for i in ids], dtype=object
        )
        scores = xmap.scores
    else:
        dec = decision(xmap)
        names, scores = dec.labels[level], dec.scores[level]
    out = {}
    for name in np.unique(names):
        sel = names == name
        finite = scores[sel][np.isfinite(scores[sel])]
        out[str(name)] = {
            "n": int(sel.sum()),
            "fraction": float(sel.mean()),
            "mean_score": float(finite.mean()) if finite.size else float("nan"),
        }
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["n"]))


def format_summary(table: dict) -> str:
    """Text table of :func:`summary`."""
    lines = [f"  {'class':<16} {'n':>8} {'fraction':>9} {'mean score':>11}"]
    for name, row in table.items():
        lines.append(f"  {name:<16} {row['n']:>8} {row['fraction']:>9.1%} {row['mean_score']:>11.3f}")
    return "\n".join(lines)
