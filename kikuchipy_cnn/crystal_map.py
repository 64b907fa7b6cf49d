"""Class probabilities → orix crystal map, and back to per-level labels."""

from __future__ import annotations

import re

import numpy as np
from orix.crystal_map import CrystalMap, Phase, PhaseList, create_coordinate_arrays
from orix.quaternion import Rotation

from kikuchipy_cnn.card import ModelCard
from kikuchipy_cnn.symmetry import (
    JOINT_CLASSES,
    LEVELS,
    NOT_CLASSIFIED,
    Decision,
    decide,
    decision_for_index,
    joint_class_info,
    level_names,
    marginalise,
    space_group_class,
)
from kikuchipy_cnn._warnings import user_stacklevel

__all__ = ["decision", "labels", "phase_list_from_card", "probabilities", "prop_name"]

#: Default phase colour of each joint class (matplotlib names, as orix needs),
#: hues grouped by crystal system
DEFAULT_COLOURS = {
    "aP -1": "tab:gray",
    "mP 2/m": "tab:olive", "mC 2/m": "yellowgreen",
    "oP mmm": "tab:brown", "oC mmm": "peru", "oF mmm": "sandybrown", "oI mmm": "chocolate",
    "tP 4/m": "tab:purple", "tI 4/m": "mediumorchid",
    "tP 4/mmm": "indigo", "tI 4/mmm": "violet",
    "hP -3": "tab:pink", "hR -3": "hotpink", "hP -3m": "crimson", "hR -3m": "palevioletred",
    "hP 6/m": "tab:cyan", "hP 6/mmm": "teal",
    "cP m-3": "khaki", "cF m-3": "lightskyblue", "cI m-3": "salmon",
    "cP m-3m": "gold", "cF m-3m": "tab:blue", "cI m-3m": "tab:red",
}  # fmt: skip


def prop_name(label: str) -> str:
    """Name of the crystal map property holding one class's probability,
    e.g. ``"p_hP_6mmm"`` for ``"hP 6/mmm"`` (no slashes: HDF5-safe)."""
    return "p_" + label.replace(" ", "_").replace("/", "")


def phase_list_from_card(card: ModelCard) -> PhaseList:
    """Return one :class:`~orix.crystal_map.Phase` per class of a model, named
    ``"<Bravais lattice> <Laue class>"`` with the Laue class as point group
    and explicit ids in the model's output order."""
    phases = [
        Phase(name=label, point_group=joint_class_info(label)["laue_class"], color=c)
        for label, c in zip(card.classes, card.colours)
    ]
    return PhaseList(phases=phases, ids=list(range(len(phases))))


def build_crystal_map(
    probs: np.ndarray,
    classified: np.ndarray,
    card: ModelCard,
    nav_shape: tuple[int, ...],
    step_sizes: tuple[float, ...],
    scan_unit: str,
    min_score: float,
    navigation_mask: np.ndarray | None,
    phase_list: PhaseList | None = None,
) -> CrystalMap:
    """Build the phase map from per-pattern joint class probabilities.

    ``probs`` is ``(n, n_classes)`` with NaN rows where ``classified`` is
    False (masked or unusable patterns). With candidate phases
    (``phase_list``), the scores are over the candidates' classes,
    renormalised, and the map uses the candidates' phases and ids.
    """
    phases, ids, restricted, restricted_classes = _restrict(probs, card, phase_list)
    # One decision per pattern (the joint argmax) gives the phase and the
    # score of every level, so the levels never contradict the phase
    dec = decide(np.where(classified[:, None], restricted, np.nan), restricted_classes)
    prop, score = _pattern_props(probs, classified, card.classes, restricted, dec)
    top1 = np.where(classified, dec.index, 0)
    phase_id = np.where(classified & (score >= min_score), ids[top1], -1).astype(int)
    return _make_map(phase_id, phases, prop, nav_shape, step_sizes, scan_unit, navigation_mask)


def _restrict(probs, card, phase_list):
    """The map's phases, the phase id of every column, the probabilities
    over the columns (the candidates' classes, renormalised, with
    ``phase_list``) and the class of every column."""
    classes = card.classes
    if phase_list is None:
        phases = phase_list_from_card(card)
        return phases, np.array(phases.ids), probs, classes
    ids, columns = candidate_columns(phase_list, classes)
    restricted = probs[:, columns]
    restricted = restricted / restricted.sum(axis=1, keepdims=True)
    return phase_list.deepcopy(), ids, restricted, tuple(classes[c] for c in columns)


def _pattern_props(probs, classified, classes, restricted, dec, assigned=False):
    """Per-pattern properties: score, margin, the level scores of the
    decision ``dec`` and every class's probability; and the scores.

    The score is the probability of the pattern's own most probable class,
    or with ``assigned`` that of the class ``dec`` assigns it (pooled maps),
    so the joint score is never above a level's; the margin is the score
    less the most probable other class's probability (negative where the
    assigned class is not the pattern's own top class). With ``assigned``,
    ``"pattern_score"`` is the pattern's own top probability."""
    n = probs.shape[0]
    own = np.nanargmax(np.where(classified[:, None], restricted, -1), axis=1)
    top1 = np.where(dec.index >= 0, dec.index, own) if assigned else own
    score = np.take_along_axis(restricted, top1[:, None], axis=1)[:, 0]
    if restricted.shape[1] > 1:
        others = np.nan_to_num(restricted, nan=-1)
        np.put_along_axis(others, top1[:, None], -np.inf, axis=1)
        second = others.max(axis=1)
    else:
        second = np.zeros(n, dtype=probs.dtype)
    score = np.where(classified, score, np.nan)
    prop = {"scores": score, "margin": score - second}
    if assigned:
        own_score = np.take_along_axis(restricted, own[:, None], axis=1)[:, 0]
        prop["pattern_score"] = np.where(classified, own_score, np.nan)
    for level in LEVELS:
        prop[f"{level}_score"] = dec.scores[level]
    for i, label in enumerate(classes):
        prop[prop_name(label)] = probs[:, i]
    return {k: v.astype(np.float32) for k, v in prop.items()}, score


def _make_map(phase_id, phases, prop, nav_shape, step_sizes, scan_unit, navigation_mask):
    n = phase_id.size
    if len(nav_shape) == 0:
        coords = {"x": np.zeros(1)}
    else:
        coords, _ = create_coordinate_arrays(nav_shape, step_sizes)
    kw = {}
    if navigation_mask is not None:
        kw["is_in_data"] = ~np.asarray(navigation_mask).ravel()
    xmap = CrystalMap(
        rotations=Rotation.identity((n,)),
        phase_id=phase_id,
        phase_list=phases,
        prop=prop,
        scan_unit=scan_unit,
        **coords,
        **kw,
    )
    # orix drops the phases absent from the data; keep every phase
    if -1 in xmap.phases.ids and -1 not in phases.ids:
        phases.add_not_indexed()
    xmap.phases = phases
    return xmap


#: Colours of discovered phases whose class's colour is taken by another
#: phase (matplotlib names, none of them a class's default colour)
EXTRA_COLOURS = (
    "black", "lime", "magenta", "navy", "orange", "darkgreen", "aqua", "maroon",
    "yellow", "slategray", "deeppink", "darkkhaki",
)  # fmt: skip


def _numbered_names(labels: list[str]) -> list[str]:
    """Phase names from class names, numbered ``"cF m-3m (1)"``,
    ``"cF m-3m (2)"`` where several phases share a class."""
    out, seen = [], {}
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
        out.append(f"{lab} ({seen[lab]})" if labels.count(lab) > 1 else lab)
    return out


def build_pooled_crystal_map(
    probs: np.ndarray,
    classified: np.ndarray,
    discovery,
    card: ModelCard,
    nav_shape: tuple[int, ...],
    step_sizes: tuple[float, ...],
    scan_unit: str,
    min_score: float,
    navigation_mask: np.ndarray | None,
    phase_list: PhaseList | None = None,
    tempering: float = 0.0,
    evidence: tuple | None = None,
    cells: np.ndarray | None = None,
    cell_scales: np.ndarray | None = None,
) -> CrystalMap:
    """Build the phase map of discovered phases, each with one class pooled
    from all its patterns (``classify_structure(pool="phases")``).

    ``cells``, if given (band models), is ``(n, 3, 3)`` each pattern's
    lattice rebuilt from its band directions and ``cell_scales`` ``(n,)``
    the factors that take them to Å (NaN where unknown): each phase then
    gets the consensus reduced cell of its grains and its size
    (:func:`~kikuchipy_cnn.phases.phase_cells`), and the conventional cell
    of its pooled class's Bravais lattice where the reduced cell's metric
    reaches it (:func:`~kikuchipy_cnn.lattice.conventional_cell`), in
    ``xmap.pooled_phases``. Without candidates, a phase whose conventional
    cell and size are both known has that lattice (Å) as its
    ``structure.lattice`` in the map's phase list.

    ``evidence``, if given, is ``(labels, pooled, counts)`` of
    :func:`~kikuchipy_cnn.phases.pool_evidence` over the model's classes
    for the phases of ``discovery``: the phases' probabilities then come from
    it (restricted to the candidates' classes and renormalised with
    ``phase_list``) instead of from pooling ``probs``.

    ``discovery`` is a :class:`~kikuchipy_cnn.phases.PhaseDiscovery` of the
    patterns. Each discovered phase gets the argmax of its patterns' pooled
    probabilities (:func:`~kikuchipy_cnn.phases.pool_probabilities` with
    ``tempering``, each grain one view: its patterns count once), over the
    model's classes, or over the candidates' classes (renormalised) with
    ``phase_list``; its patterns get phase id -1
    where the pooled top probability is below ``min_score``. Without
    candidates, phase ``i`` has id ``i`` and is named by its pooled class
    (numbered when two phases share one); every discovered phase is in the
    map's phase list, also one below ``min_score``; with candidates, the candidate
    phase of the pooled class (ids and names the user's). Properties: those
    of :func:`build_crystal_map` (the patterns' own class probabilities), but
    ``"scores"`` is each pattern's probability of the class it is assigned
    (its phase's pooled class where it has a phase, else, below
    ``min_score``, its own most probable class as in :func:`decision`),
    ``"margin"`` is measured from it and the level scores are those of that
    class (so no level's score is below the joint score); ``"pattern_score"``
    is the pattern's own top probability (``"scores"`` of ``pool="none"``);
    plus
    ``"phase_index"`` and ``"grain_index"`` (the discovered phase and grain
    of each pattern, -1 where not classified) and ``"pooled_score"`` (its
    phase's pooled top probability). ``xmap.pooled_phases`` is a
    :class:`~kikuchipy_cnn.phases.PooledPhases`.
    """
    from kikuchipy_cnn.phases import PooledPhases, pool_probabilities

    phases, ids, restricted, restricted_classes = _restrict(probs, card, phase_list)
    group = np.where(classified, discovery.phase, -1)
    if evidence is None:
        labels_, pooled, counts = pool_probabilities(restricted, group, tempering=tempering,
                                                     views=discovery.grain)
        method = "probabilities"
    else:
        labels_, pooled, counts = evidence
        if phase_list is not None:
            pooled = pooled[:, [card.classes.index(c) for c in restricted_classes]]
            pooled = pooled / pooled.sum(axis=1, keepdims=True)
        tempering, method = float("nan"), "evidence"
    k = len(labels_)
    top = pooled.argmax(axis=1)
    pscore = pooled[np.arange(k), top]
    keep = pscore >= min_score
    if phase_list is None:
        names = _numbered_names([restricted_classes[c] for c in top])
        colours, used = [], set()
        for c in top:
            colour = card.colours[c]
            if colour in used:
                colour = next(x for x in EXTRA_COLOURS if x not in used)
            used.add(colour)
            colours.append(colour)
        phase_ids = np.where(keep, np.arange(k), -1)
        # every discovered phase stays in the phase list, also below
        # min_score (as build_crystal_map keeps every class): a map whose
        # patterns are all -1 still saves and reads back
        phases = PhaseList(
            phases=[Phase(name=names[i], point_group=joint_class_info(restricted_classes[top[i]])["laue_class"],
                          color=colours[i]) for i in range(k)],
            ids=list(range(k)),
        ) if k else PhaseList()
    else:
        phase_ids = np.where(keep, ids[top], -1)
        names = [phases[int(ids[c])].name for c in top]
    # each pattern: its phase's pooled class where it has a phase (a
    # discovered phase at or above min_score), else its own decision, as
    # decision() and labels() read the map
    row = np.full(group.shape, -1)
    row[group >= 0] = np.searchsorted(labels_, group[group >= 0])
    phase_id = np.where(row >= 0, phase_ids[np.maximum(row, 0)], -1).astype(int)
    masked = np.where(classified[:, None], restricted, np.nan)
    own = decide(masked, restricted_classes).index
    index = np.where(phase_id >= 0, top[np.maximum(row, 0)], own)
    dec = decision_for_index(masked, restricted_classes, index)
    prop, _ = _pattern_props(probs, classified, card.classes, restricted, dec, assigned=True)
    prop["phase_index"] = np.where(row >= 0, labels_[np.maximum(row, 0)], -1).astype(np.int32)
    prop["grain_index"] = np.where(classified, discovery.grain, -1).astype(np.int32)
    prop["pooled_score"] = np.where(row >= 0, pscore[np.maximum(row, 0)], np.nan).astype(np.float32)
    xmap = _make_map(phase_id, phases, prop, nav_shape, step_sizes, scan_unit, navigation_mask)
    grains = np.array([len(np.unique(discovery.grain[group == g])) for g in labels_])
    shape = support = size = conventional = None
    if cells is not None:
        from kikuchipy_cnn.phases import phase_cells

        cell_labels, phase_shape, phase_support, phase_size = phase_cells(
            cells, group, discovery.grain, cell_scales)
        # line the cells up with the pooled phases (NaN for a phase without one)
        shape, support, size = np.full((k, 6), np.nan), np.zeros(k), np.full(k, np.nan)
        if len(cell_labels):
            at = np.minimum(np.searchsorted(cell_labels, labels_), len(cell_labels) - 1)
            found = cell_labels[at] == labels_
            shape[found], support[found] = phase_shape[at[found]], phase_support[at[found]]
            size[found] = phase_size[at[found]]
        conventional = _conventional_cells(shape, [restricted_classes[c] for c in top])
        if phase_list is None:
            for i in range(k):
                if np.isfinite(conventional[i]).all() and np.isfinite(size[i]):
                    _set_lattice(xmap.phases[i], conventional[i], size[i])
    xmap.pooled_phases = PooledPhases(
        names=names, phase_ids=phase_ids.astype(int), classes=tuple(restricted_classes),
        probabilities=pooled, scores=pscore, n_patterns=counts, n_grains=grains,
        tempering=float(tempering), method=method, cells=shape, cell_support=support,
        cell_size=size, conventional_cells=conventional,
    )
    return xmap


def _conventional_cells(shape: np.ndarray, classes: list[str]) -> np.ndarray:
    """``(k, 6)`` conventional cell ``(a, b, c, alpha, beta, gamma)`` of each
    phase's class's Bravais lattice from its reduced-cell shape (lengths in
    units of the reduced cell's ``a``), NaN where there is no shape or its
    metric does not reach the lattice (:func:`~kikuchipy_cnn.lattice.conventional_cell`)."""
    from kikuchipy_cnn.lattice import cell_parameters, conventional_cell, lattice_matrix

    out = np.full((len(classes), 6), np.nan)
    for i, label in enumerate(classes):
        if not np.isfinite(shape[i]).all():
            continue
        found = conventional_cell(lattice_matrix(*shape[i]), joint_class_info(label)["bravais_lattice"])
        if found is not None:
            out[i] = cell_parameters(found[1])
    return out


def _set_lattice(phase: Phase, conventional: np.ndarray, size: float) -> None:
    """Give a discovered phase its conventional lattice in Å (``conventional``
    in units of the reduced cell's ``a``, ``size`` that ``a`` in Å).

    A monoclinic cell in spglib's standard setting (b unique: alpha = gamma =
    90) is turned cyclically to c unique, ``(c, a, b, 90, 90, beta)``, as
    orix's ``2/m`` has its 2-fold axis along z, which is c in diffpy's
    Cartesian frame."""
    from diffpy.structure import Lattice, Structure

    a, b, c = (float(v) * float(size) for v in conventional[:3])
    alpha, beta, gamma = (float(v) for v in conventional[3:])
    if phase.point_group is not None and phase.point_group.name == "2/m" and np.isclose(alpha, 90) \
            and np.isclose(gamma, 90) and not np.isclose(beta, 90):
        a, b, c, alpha, beta, gamma = c, a, b, 90.0, 90.0, beta
    phase.structure = Structure(lattice=Lattice(a, b, c, alpha, beta, gamma))


#: Per-pattern properties of the reduced cell rebuilt from a pattern's band
#: directions (band models; :func:`add_cell_props`)
CELL_PROPS = ("cell_a", "cell_b_over_a", "cell_c_over_a", "cell_alpha", "cell_beta", "cell_gamma")


def add_cell_props(xmap: CrystalMap, cells: np.ndarray, scales: np.ndarray) -> None:
    """Add each pattern's reduced cell to a map as properties
    :data:`CELL_PROPS`: ``a`` in Å, b/a, c/a and the angles (degrees) of the
    Niggli cell (a <= b <= c) of the lattice rebuilt from its band directions;
    NaN where no lattice was found or the pattern was not classified (and
    ``a`` also where fewer than three indexed bands have a width).

    ``cells`` is ``(n, 3, 3)`` and ``scales`` ``(n,)`` (the factors that take
    the cells to Å) over all navigation points (numpy order).
    """
    from kikuchipy_cnn.lattice import cell_shape

    shape = cell_shape(cells)  # (1, b/a, c/a, angles) of the Niggli cell: a is the shortest vector
    a = np.linalg.norm(np.asarray(cells, dtype=np.float64)[:, 0], axis=1) * np.asarray(scales, np.float64)
    out = np.column_stack([a, shape[:, 1:]])
    for j, name in enumerate(CELL_PROPS):
        xmap.prop[name] = out[xmap.is_in_data, j].astype(np.float32)


def candidate_columns(
    phase_list: PhaseList, classes: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Map candidate phases to the model's classes through their space
    groups.

    Returns the candidates' phase ids and, for each, the column of its class
    in the model output. Candidates sharing a class cannot be told apart by
    the classifier: a warning names them, and the first listed takes the
    class.
    """
    import warnings

    from kikuchipy_cnn.symmetry import space_group_class

    ids, columns, owner = [], [], {}
    for pid, phase in phase_list:
        if pid == -1:
            continue
        if phase.space_group is None:
            raise ValueError(
                f"Candidate phase {phase.name!r} has no space group; set it, e.g. "
                "Phase(name=..., space_group=225), or read it with Phase.from_cif()"
            )
        label = space_group_class(phase.space_group.number).joint_class
        if label not in classes:
            raise ValueError(
                f"Candidate phase {phase.name!r} is of class {label!r}, which the "
                f"model does not know; its classes are {list(classes)}"
            )
        if label in owner:
            warnings.warn(
                f"Candidate phases {owner[label]!r} and {phase.name!r} are both "
                f"{label!r}: the classifier cannot tell them apart, so patterns of "
                f"that class are assigned to {owner[label]!r}. Index with both "
                "phases to separate them",
                UserWarning,
                stacklevel=user_stacklevel(),
            )
            continue
        owner[label] = phase.name
        ids.append(pid)
        columns.append(classes.index(label))
    if not ids:
        raise ValueError("The candidate phase list is empty")
    return np.array(ids), np.array(columns)


def _classes_of(xmap: CrystalMap) -> tuple[str, ...]:
    classes = tuple(c for c in JOINT_CLASSES if prop_name(c) in xmap.prop)
    if not classes:
        raise ValueError(
            "The crystal map has no class probabilities: pass a map returned by "
            "classify_structure()"
        )
    return classes


def probabilities(xmap: CrystalMap, level: str = "joint") -> tuple[np.ndarray, tuple[str, ...]]:
    """Return per-pattern probabilities of a map from
    :func:`~kikuchipy_cnn.classify_structure`.

    Parameters
    ----------
    xmap
        Crystal map returned by ``classify_structure()``.
    level
        ``"joint"``, ``"crystal_system"``, ``"bravais_lattice"`` or
        ``"laue_class"``.

    Returns
    -------
    probs
        Array ``(n, n_classes)`` over all map points in data, NaN where not
        classified.
    names
        Class names of the columns.
    """
    classes = _classes_of(xmap)
    probs = np.stack([xmap.prop[prop_name(c)] for c in classes], axis=1)
    if level == "joint":
        return probs, classes
    nan = np.isnan(probs).any(axis=1)
    marg = marginalise(np.nan_to_num(probs), classes, level)
    marg[nan] = np.nan
    return marg, level_names(level)


def _class_of_name(name: str) -> str | None:
    """The joint class a phase name is (``"cF m-3m"``), or is numbered from
    (``"cF m-3m (2)"``, discovered phases sharing a class); else None."""
    if name in JOINT_CLASSES:
        return name
    numbered = re.fullmatch(r"(.+) \(\d+\)", name)
    if numbered and numbered.group(1) in JOINT_CLASSES:
        return numbered.group(1)
    return None


def _phase_class(phase: Phase) -> str | None:
    """Joint class of a map's phase: that of its space group (candidate
    phases), else its name if that is a class name (maps without candidates,
    also numbered); None if unknown."""
    if phase.space_group is not None:
        return space_group_class(phase.space_group.number).joint_class
    return _class_of_name(phase.name)


def decision(xmap: CrystalMap) -> Decision:
    """Return the one decision per pattern of a map from
    :func:`~kikuchipy_cnn.classify_structure`: its joint class, and that
    class's crystal system, Bravais lattice and Laue class, with the
    probability of each (see :func:`kikuchipy_cnn.symmetry.decide`).

    A pattern's joint class is its phase's class where it has a phase (with
    ``pool="phases"`` the pooled class of its discovered phase, which can
    differ from the pattern's own most probable class), else (score below
    ``min_score``) its most probable class; with candidate phases the most
    probable of their classes, with the probabilities renormalised over them
    as ``classify_structure()`` does. Masked or unusable patterns have no
    decision.

    Parameters
    ----------
    xmap
        Crystal map returned by ``classify_structure()``.

    Returns
    -------
    decision
        Arrays over the map points in data.
    """
    probs, classes = probabilities(xmap)
    phase_classes = {
        int(i): _phase_class(phase) for i, phase in xmap.phases if i != -1
    }
    allowed = None
    # Restricted to the map's classes only when its phases are candidates
    # (with a space group, whatever their names); maps of phases named by
    # class without a space group (one phase per class, or discovered phases,
    # "cF m-3m (2)") decide over all classes
    named_by_class = all(_class_of_name(phase.name) and phase.space_group is None
                         for i, phase in xmap.phases if i != -1)
    if phase_classes and None not in phase_classes.values() and not named_by_class:
        allowed = np.isin(classes, list(phase_classes.values()))
        if not allowed.any():
            allowed = None
    result = decide(probs, classes, allowed)
    # Where a pattern has a phase, that is its decision (also on exact ties)
    index = result.index.copy()
    for pid, label in phase_classes.items():
        if label in classes:
            index[(xmap.phase_id == pid) & (index >= 0)] = classes.index(label)
    if np.array_equal(index, result.index):
        return result
    if allowed is not None and not allowed.all():
        probs = np.where(allowed, np.nan_to_num(probs), 0)
        probs = probs / np.where(probs.sum(axis=1, keepdims=True) > 0,
                                 probs.sum(axis=1, keepdims=True), 1)
    return decision_for_index(probs, classes, index)


def labels(xmap: CrystalMap) -> dict[str, np.ndarray]:
    """Return per-pattern class names at every level, all from one decision.

    A pattern's joint class is the map's decision (its phase, the joint
    argmax; see :func:`decision`), and its crystal system, Bravais lattice
    and Laue class are those of that joint class, so the levels never
    contradict each other or the phase map. A pattern whose score is below
    ``min_score`` (``phase_id`` -1) still has labels, those of its most
    probable class; the level scores (``xmap.prop["crystal_system_score"]``,
    ...) say how probable each is. Patterns that were masked or unusable are
    ``"not classified"``.

    Parameters
    ----------
    xmap
        Crystal map returned by ``classify_structure()``.

    Returns
    -------
    labels
        Dictionary with keys ``"joint"``, ``"crystal_system"``,
        ``"bravais_lattice"`` and ``"laue_class"`` of string arrays over the
        map points in data.
    """
    return decision(xmap).labels
