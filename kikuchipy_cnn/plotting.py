"""Phase, confidence and per-level maps of a classification, and a summary
table of phase fractions with mean confidence."""

from __future__ import annotations

import numpy as np
from orix.crystal_map import CrystalMap, Phase, PhaseList

from kikuchipy_cnn.crystal_map import DEFAULT_COLOURS, decision
from kikuchipy_cnn.symmetry import JOINT_CLASSES, joint_class_info, level_names

__all__ = ["distinct_colours", "format_summary", "level_map", "plot_maps", "summary"]

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


def distinct_colours(phases: PhaseList) -> PhaseList:
    """Return a copy of a phase list in which every phase has its own colour.

    The first phase with a colour keeps it; later phases with the same colour
    (compared as RGB, so aliases count) get the first matplotlib colour not
    yet used, tableau colours first, as orix picks them. ``"not_indexed"``
    (id -1) keeps its colour. The given list is not modified.

    Parameters
    ----------
    phases
        Phase list, e.g. ``xmap.phases``.

    Returns
    -------
    phases
        A deep copy with distinct colours.
    """
    from matplotlib import colors as mcolors

    out = phases.deepcopy()
    taken = {mcolors.to_rgb(phase.color) for _, phase in out}  # never reused
    claimed = {mcolors.to_rgb(phase.color) for i, phase in out if i == -1}
    spare = (
        c for c in list(mcolors.TABLEAU_COLORS) + list(mcolors.CSS4_COLORS)
        if min(mcolors.to_rgb(c)) < 0.9 and max(mcolors.to_rgb(c)) > 0.1  # not white, black
        and mcolors.to_rgb(c) not in taken
    )
    for i, phase in out:
        if i == -1:
            continue
        rgb = mcolors.to_rgb(phase.color)
        if rgb in claimed:
            phase.color = next(spare)
            rgb = mcolors.to_rgb(phase.color)
            taken.add(rgb)
        claimed.add(rgb)
    return out


def _with_phases(xmap: CrystalMap, phases: PhaseList) -> CrystalMap:
    """A light copy of a map (phase ids, coordinates, scores) with other
    phases; the map itself is left as it is."""
    n_all = xmap.is_in_data.size
    prop = {"scores": np.full(n_all, np.nan, dtype=np.float32)}
    prop["scores"][xmap.is_in_data] = xmap.scores
    coords = {"x": xmap._x, "y": xmap._y} if xmap._y is not None else {"x": xmap._x}
    return CrystalMap(
        rotations=xmap._rotations, phase_id=xmap._phase_id, phase_list=phases, prop=prop,
        scan_unit=xmap.scan_unit, is_in_data=xmap.is_in_data, **coords,
    )


def _scan_extent(xmap: CrystalMap) -> tuple[float, float, float, float]:
    """imshow extent (left, right, bottom, top) of a 2-D map in scan units,
    each pixel centred on its coordinates."""
    x, y = xmap._x, xmap._y
    dx = xmap.dx if xmap.dx else 1.0
    dy = xmap.dy if xmap.dy else 1.0
    return (x.min() - dx / 2, x.max() + dx / 2, y.max() + dy / 2, y.min() - dy / 2)


def _set_scan_ticks(ax, xmap: CrystalMap) -> None:
    """Ticks at the scan points on small maps, at round numbers otherwise."""
    from matplotlib.ticker import MaxNLocator

    for axis, coords in ((ax.xaxis, xmap._x), (ax.yaxis, xmap._y)):
        values = np.unique(coords)
        if values.size <= 6:
            axis.set_ticks(values)
        else:
            axis.set_major_locator(MaxNLocator(nbins=5))


def _unit_label(unit: str) -> str:
    return {"um": "µm", "nm": "nm", "mm": "mm", "px": "px"}.get(unit, unit)


def _phase_legend(ax, m: CrystalMap, label_class: bool = False) -> None:
    """Legend of the phases in a map, outside the map on its right."""
    from matplotlib.patches import Patch

    handles = []
    for i, phase in m.phases_in_data:
        name = "not classified" if i == -1 else phase.name
        if label_class and i != -1 and phase.name not in JOINT_CLASSES:
            from kikuchipy_cnn.crystal_map import _phase_class

            cls = _phase_class(phase)
            name = f"{name} ({cls})" if cls else name
        handles.append(Patch(facecolor=phase.color_rgb, edgecolor="0.6", label=name))
    ax.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0,
        fontsize="small", frameon=False, handlelength=1.0, handletextpad=0.4,
        ncols=int(np.ceil(len(handles) / 9)) or 1,
    )


def plot_maps(xmap: CrystalMap, return_figure: bool = True, **kwargs):
    """Plot the phase map, the confidence (top probability) map and the
    crystal system, Bravais lattice and Laue class maps side by side, with
    orix's map plotting.

    Every panel shows one decision per pattern: the crystal system, Bravais
    lattice and Laue class of its joint class (:func:`~kikuchipy_cnn.labels`).
    Patterns below ``min_score`` have no phase but are shown in their level
    classes; masked or unusable patterns are white (``"not classified"``).
    Axes are in the map's scan units (``xmap.dx``, ``xmap.dy``,
    ``xmap.scan_unit``) and legends are outside the maps. Phases that share
    a colour (e.g. a ``phase_list`` of ``Phase`` objects that all have orix's
    default colour) are drawn in distinct colours; the map and its phase
    list are not modified.

    Parameters
    ----------
    xmap
        Map returned by ``classify_structure()``; must be 2-D.
    return_figure
        Whether to return the figure (default). Kept for compatibility: with
        False, nothing is returned.
    **kwargs
        Passed to :func:`matplotlib.pyplot.figure`; the default size is
        ``(22, 4)`` with the constrained layout.

    Returns
    -------
    fig
        The figure (unless ``return_figure`` is False).
    """
    import matplotlib.pyplot as plt
    import orix.plot.crystal_map_plot  # noqa: F401  (registers "plot_map")

    if len(xmap._original_shape) != 2:
        raise ValueError(
            f"plot_maps() needs a 2-D map, not one of shape {xmap._original_shape}; "
            "summary() and labels() work for any map"
        )
    kwargs.setdefault("figsize", (22, 4))
    if not {"layout", "constrained_layout", "tight_layout"} & set(kwargs):
        kwargs["layout"] = "constrained"
    fig = plt.figure(**kwargs)
    if kwargs.get("layout") == "constrained":
        fig.get_layout_engine().set(w_pad=0.15)
    extent = _scan_extent(xmap)
    unit = _unit_label(xmap.scan_unit)
    panels = [("phase", _with_phases(xmap, distinct_colours(xmap.phases))), ("confidence", None)]
    panels += [
        (level.replace("_", " "), level_map(xmap, level))
        for level in ("crystal_system", "bravais_lattice", "laue_class")
    ]
    for i, (title, m) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1, projection="plot_map")
        if m is None:
            # Not white at 1: white is "no data" (masked, unusable) in every panel
            cmap = plt.get_cmap("viridis").with_extremes(bad="white")
            im = ax.plot_map(xmap, xmap.scores, cmap=cmap, vmin=0, vmax=1, scalebar=False,
                             extent=extent)
            fig.colorbar(im, ax=ax, label="top probability", fraction=0.046, pad=0.04)
        else:
            ax.plot_map(m, scalebar=False, legend=False, extent=extent)
            _phase_legend(ax, m, label_class=title == "phase")
        _set_scan_ticks(ax, xmap)
        ax.set_xlabel(f"x ({unit})")
        ax.set_ylabel(f"y ({unit})")
        ax.set_title(title)
    if return_figure:
        return fig
    return None


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
        For a band model's ``pool="phases"`` map at the joint level, each
        discovered phase's entry also has ``"cell"`` (its reduced-cell shape
        ``(1, b/a, c/a, alpha, beta, gamma)``, NaN where none),
        ``"cell_support"`` (the share of its grains that agree),
        ``"cell_size"`` (the reduced cell's ``a`` in Å, NaN where unknown)
        and ``"conventional_cell"`` (the conventional cell of its class's
        Bravais lattice, lengths in units of the reduced ``a``; NaN where
        the cell's metric does not reach it), from ``xmap.pooled_phases``.
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
    pp = getattr(xmap, "pooled_phases", None)
    if level == "joint" and pp is not None and pp.cells is not None:
        for i, name in enumerate(pp.names):
            if name in out and list(pp.names).count(name) == 1:
                out[name]["cell"] = tuple(float(v) for v in pp.cells[i])
                out[name]["cell_support"] = float(pp.cell_support[i])
                out[name]["cell_size"] = float(pp.cell_size[i])
                out[name]["conventional_cell"] = tuple(float(v) for v in pp.conventional_cells[i])
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["n"]))


def format_summary(table: dict | CrystalMap, level: str = "joint") -> str:
    """Text table of :func:`summary`.

    Parameters
    ----------
    table
        Table returned by :func:`summary`, or a map returned by
        ``classify_structure()``, which is then summarised.
    level
        Level to summarise a map at (see :func:`summary`); only used when
        ``table`` is a map.

    Returns
    -------
    text
        One line per class: count, fraction and mean score (and, where the
        table has it, the phase's conventional and reduced cells).

    Examples
    --------
    >>> import kikuchipy as kp
    >>> import kikuchipy_cnn
    >>> xmap = kp.data.nickel_ebsd_small().classify_structure()  # doctest: +SKIP
    >>> print(kikuchipy_cnn.format_summary(xmap))  # doctest: +SKIP
    """
    if isinstance(table, CrystalMap):
        table = summary(table, level)
    elif not isinstance(table, dict):
        raise TypeError(
            f"format_summary() takes a table from summary() or a CrystalMap, not {type(table)}"
        )
    from kikuchipy_cnn.phases import CELL_COLUMNS_HEADING, cell_columns

    cells = any("cell" in row for row in table.values())
    lines = [f"  {'class':<16} {'n':>8} {'fraction':>9} {'mean score':>11}"
             + (CELL_COLUMNS_HEADING if cells else "")]
    for name, row in table.items():
        cell = ""
        if "cell" in row:
            cell = cell_columns(row["conventional_cell"], row["cell"], row["cell_support"], row["cell_size"])
        lines.append(f"  {name:<16} {row['n']:>8} {row['fraction']:>9.1%} {row['mean_score']:>11.3f}{cell}")
    return "\n".join(lines)
