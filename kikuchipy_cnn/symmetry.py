"""Space group → crystal system, Bravais lattice, Laue class and joint class.

Kinematically a Kikuchi pattern obeys Friedel's law: it shows the crystal's Laue
class and, through systematic absences, its lattice centring. The joint label
``"<Bravais lattice> <Laue class>"`` (23 classes) determines the Bravais lattice
(14), the crystal system (7) and the Laue class (11), so probabilities of the
coarser levels are sums of joint probabilities. Each pattern gets one decision,
a joint class (:func:`decide`), and its crystal system, Bravais lattice and Laue
class are those of that class, so the levels reported never contradict each other.
Point groups within one Laue class cannot be told apart from kinematical data.

This module is the only place that knows the label tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "BRAVAIS_LATTICES",
    "CRYSTAL_SYSTEMS",
    "Decision",
    "JOINT_CLASSES",
    "LAUE_CLASSES",
    "LEVELS",
    "NOT_CLASSIFIED",
    "SpaceGroupClass",
    "decide",
    "decision_for_index",
    "joint_class_info",
    "marginalise",
    "space_group_class",
]

CRYSTAL_SYSTEMS = (
    "triclinic",
    "monoclinic",
    "orthorhombic",
    "tetragonal",
    "trigonal",
    "hexagonal",
    "cubic",
)
BRAVAIS_LATTICES = (
    "aP", "mP", "mC", "oP", "oC", "oI", "oF", "tP", "tI", "hR", "hP", "cP", "cI", "cF",
)  # fmt: skip
LAUE_CLASSES = (
    "-1", "2/m", "mmm", "4/m", "4/mmm", "-3", "-3m", "6/m", "6/mmm", "m-3", "m-3m",
)  # fmt: skip

# (first space group number, last number, crystal system, Laue class)
_LAUE_RANGES = (
    (1, 2, "triclinic", "-1"),
    (3, 15, "monoclinic", "2/m"),
    (16, 74, "orthorhombic", "mmm"),
    (75, 88, "tetragonal", "4/m"),
    (89, 142, "tetragonal", "4/mmm"),
    (143, 148, "trigonal", "-3"),
    (149, 167, "trigonal", "-3m"),
    (168, 176, "hexagonal", "6/m"),
    (177, 194, "hexagonal", "6/mmm"),
    (195, 206, "cubic", "m-3"),
    (207, 230, "cubic", "m-3m"),
)

# First letter of the Hermann-Mauguin symbol (standard setting) of every space
# group that is not primitive; all others are "P"
_CENTRING = {
    5: "C", 8: "C", 9: "C", 12: "C", 15: "C",
    20: "C", 21: "C", 22: "F", 23: "I", 24: "I",
    35: "C", 36: "C", 37: "C", 38: "A", 39: "A", 40: "A", 41: "A",
    42: "F", 43: "F", 44: "I", 45: "I", 46: "I",
    63: "C", 64: "C", 65: "C", 66: "C", 67: "C", 68: "C",
    69: "F", 70: "F", 71: "I", 72: "I", 73: "I", 74: "I",
    79: "I", 80: "I", 82: "I", 87: "I", 88: "I", 97: "I", 98: "I",
    107: "I", 108: "I", 109: "I", 110: "I", 119: "I", 120: "I", 121: "I", 122: "I",
    139: "I", 140: "I", 141: "I", 142: "I",
    146: "R", 148: "R", 155: "R", 160: "R", 161: "R", 166: "R", 167: "R",
    196: "F", 197: "I", 199: "I", 202: "F", 203: "F", 204: "I", 206: "I",
    209: "F", 210: "F", 211: "I", 214: "I", 216: "F", 217: "I", 219: "F", 220: "I",
    225: "F", 226: "F", 227: "F", 228: "F", 229: "I", 230: "I",
}  # fmt: skip

_SYSTEM_LETTER = {
    "triclinic": "a",
    "monoclinic": "m",
    "orthorhombic": "o",
    "tetragonal": "t",
    "trigonal": "h",
    "hexagonal": "h",
    "cubic": "c",
}

# Representative space group per joint class: the symmorphic, centrosymmetric
# group of the Laue class with that centring (the holohedry where possible)
_REPRESENTATIVE = {
    "aP -1": 2, "mP 2/m": 10, "mC 2/m": 12,
    "oP mmm": 47, "oC mmm": 65, "oI mmm": 71, "oF mmm": 69,
    "tP 4/m": 83, "tI 4/m": 87, "tP 4/mmm": 123, "tI 4/mmm": 139,
    "hP -3": 147, "hR -3": 148, "hP -3m": 164, "hR -3m": 166,
    "hP 6/m": 175, "hP 6/mmm": 191,
    "cP m-3": 200, "cI m-3": 204, "cF m-3": 202,
    "cP m-3m": 221, "cI m-3m": 229, "cF m-3m": 225,
}  # fmt: skip


@dataclass(frozen=True)
class SpaceGroupClass:
    """Symmetry labels of one space group.

    Attributes
    ----------
    space_group
        International number, 1-230.
    crystal_system
        One of :data:`CRYSTAL_SYSTEMS`.
    bravais_lattice
        Pearson-style Bravais lattice symbol, one of :data:`BRAVAIS_LATTICES`
        (A, B and C centring are all reported as C).
    laue_class
        One of :data:`LAUE_CLASSES`.
    centring
        First letter of the Hermann-Mauguin symbol: P, A, C, I, F or R.
    joint_class
        ``"<Bravais lattice> <Laue class>"``, one of :data:`JOINT_CLASSES`.
    """

    space_group: int
    crystal_system: str
    bravais_lattice: str
    laue_class: str
    centring: str
    joint_class: str


def space_group_class(number: int) -> SpaceGroupClass:
    """Return the crystal system, Bravais lattice, Laue class, centring and
    joint class of a space group.

    Parameters
    ----------
    number
        International space group number, 1-230.

    Returns
    -------
    labels
        The space group's symmetry labels.

    Examples
    --------
    >>> from kikuchipy_cnn import space_group_class
    >>> space_group_class(225).joint_class
    'cF m-3m'
    >>> space_group_class(166).bravais_lattice
    'hR'
    """
    if isinstance(number, (bool, np.bool_)) or not isinstance(
        number, (int, np.integer)
    ):
        raise TypeError(f"Space group number must be an integer, not {number!r}")
    number = int(number)
    if not 1 <= number <= 230:
        raise ValueError(f"Space group number must be in 1-230, not {number}")
    for first, last, system, laue in _LAUE_RANGES:
        if first <= number <= last:
            break
    centring = _CENTRING.get(number, "P")
    lattice_letter = {"A": "C", "B": "C"}.get(centring, centring)
    if lattice_letter == "R":
        bravais = "hR"
    else:
        bravais = _SYSTEM_LETTER[system] + lattice_letter
    return SpaceGroupClass(
        space_group=number,
        crystal_system=system,
        bravais_lattice=bravais,
        laue_class=laue,
        centring=centring,
        joint_class=f"{bravais} {laue}",
    )


def _joint_classes() -> tuple[str, ...]:
    seen = []
    for n in range(1, 231):
        name = space_group_class(n).joint_class
        if name not in seen:
            seen.append(name)
    return tuple(seen)


#: The 23 joint classes, ordered by the first space group number they contain
JOINT_CLASSES = _joint_classes()

LEVELS = ("crystal_system", "bravais_lattice", "laue_class")


def joint_class_info(name: str) -> dict:
    """Return the labels of a joint class.

    Parameters
    ----------
    name
        Joint class name, e.g. ``"cF m-3m"``.

    Returns
    -------
    info
        Dictionary with keys ``"label"``, ``"crystal_system"``,
        ``"bravais_lattice"``, ``"laue_class"`` and
        ``"representative_space_group"``.
    """
    if name not in JOINT_CLASSES:
        raise ValueError(
            f"Unknown joint class {name!r}; known classes are {list(JOINT_CLASSES)}"
        )
    sg = space_group_class(_REPRESENTATIVE[name])
    return {
        "label": name,
        "crystal_system": sg.crystal_system,
        "bravais_lattice": sg.bravais_lattice,
        "laue_class": sg.laue_class,
        "representative_space_group": sg.space_group,
    }


def level_names(level: str) -> tuple[str, ...]:
    """Return the class names of one level: ``"joint"``, ``"crystal_system"``,
    ``"bravais_lattice"`` or ``"laue_class"``."""
    names = {
        "joint": JOINT_CLASSES,
        "crystal_system": CRYSTAL_SYSTEMS,
        "bravais_lattice": BRAVAIS_LATTICES,
        "laue_class": LAUE_CLASSES,
    }
    if level not in names:
        raise ValueError(f"Unknown level {level!r}; choose from {list(names)}")
    return names[level]


def marginalise(
    probabilities: np.ndarray, classes: tuple[str, ...] | list[str], level: str
) -> np.ndarray:
    """Sum joint-class probabilities to one coarser level.

    Parameters
    ----------
    probabilities
        Array of shape ``(..., len(classes))``.
    classes
        Joint class name of each entry of the last axis.
    level
        ``"crystal_system"``, ``"bravais_lattice"`` or ``"laue_class"``.

    Returns
    -------
    marginal
        Array of shape ``(..., n)`` with the ``n`` classes of
        :func:`level_names` ``(level)``, in that order.
    """
    names = level_names(level)
    probabilities = np.asarray(probabilities)
    if probabilities.shape[-1] != len(classes):
        raise ValueError(
            f"Last axis of probabilities has {probabilities.shape[-1]} entries, "
            f"but {len(classes)} classes were given"
        )
    matrix = np.zeros((len(classes), len(names)), dtype=probabilities.dtype)
    for i, name in enumerate(classes):
        matrix[i, names.index(joint_class_info(name)[level])] = 1
    return probabilities @ matrix


#: Label of a pattern without a decision (masked or unusable)
NOT_CLASSIFIED = "not classified"


@dataclass(frozen=True)
class Decision:
    """One decision per pattern, consistent across levels (see :func:`decide`).

    Attributes
    ----------
    index
        Integer array ``(n,)``: column of the chosen joint class in the
        ``classes`` given to :func:`decide`, -1 where there is no decision.
    labels
        ``{"joint", "crystal_system", "bravais_lattice", "laue_class"}`` →
        string array ``(n,)``: the chosen joint class and its crystal system,
        Bravais lattice and Laue class; :data:`NOT_CLASSIFIED` where there is
        no decision.
    scores
        Same keys → float array ``(n,)``: the probability of the label at that
        level (``"joint"``: of the joint class; ``"crystal_system"``: the sum
        over the joint classes of that crystal system, ...), NaN where there
        is no decision. A level's score is never below the joint score.
    """

    index: np.ndarray
    labels: dict
    scores: dict


def decide(
    probabilities: np.ndarray,
    classes: tuple[str, ...] | list[str],
    allowed: np.ndarray | None = None,
) -> Decision:
    """Choose one joint class per pattern and report every level from it.

    The rule is the joint argmax: the most probable joint class, and *its*
    crystal system, Bravais lattice and Laue class. Taking each level's own
    argmax instead can give a combination no class has (joint ``mC 2/m``,
    crystal system ``cubic``, Bravais lattice ``hP``, Laue class ``mmm``).

    The joint argmax is the phase of the crystal map returned by
    ``classify_structure()`` (what orix saves, what ``min_score`` and
    ``index_phases()`` act on), so the level labels always agree with the
    phase map, and it is the most likely joint class. A hierarchical decision
    (crystal system argmax, then Bravais lattice, then Laue class within it)
    keeps each coarse level's own best guess but gives a joint class other
    than the phase map's. The cost of the joint argmax: a coarse level can be
    less accurate than that level's own argmax. On the 126 patterns of
    ``../shared/data`` with ``kcnn-resnet-s`` 0.2.0 (level from joint argmax
    / level's own argmax / hierarchical): crystal system 0.64 / 0.89 / 0.89,
    Bravais lattice 0.52 / 0.25 / 0.38, Laue class 0.56 / 0.77 / 0.78, joint
    0.52 / 0.52 / 0.37. A level's own marginal probabilities are still
    available (:func:`marginalise`, ``kikuchipy_cnn.probabilities(xmap,
    level)``), but they answer a question of their own.

    Parameters
    ----------
    probabilities
        Array ``(n, len(classes))`` of joint class probabilities; rows with
        a NaN get no decision.
    classes
        Joint class name of each column.
    allowed
        Boolean array ``(len(classes),)``: only these classes may be chosen
        (candidate phases). The probabilities are renormalised over them
        before the scores are computed. All classes if not given.

    Returns
    -------
    decision
        The chosen class, labels and scores of every pattern.

    Examples
    --------
    >>> import numpy as np
    >>> from kikuchipy_cnn.symmetry import JOINT_CLASSES, decide
    >>> p = np.zeros((1, 23))
    >>> p[0, JOINT_CLASSES.index("mC 2/m")] = 0.3
    >>> for c in ("cP m-3", "cI m-3", "cF m-3", "cP m-3m", "cI m-3m"):
    ...     p[0, JOINT_CLASSES.index(c)] = 0.14
    >>> d = decide(p, JOINT_CLASSES)
    >>> [str(d.labels[level][0]) for level in ("joint", "crystal_system", "laue_class")]
    ['mC 2/m', 'monoclinic', '2/m']
    >>> round(float(d.scores["crystal_system"][0]), 2)  # cubic has 0.7 in all
    0.3
    """
    classes = tuple(classes)
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(classes):
        raise ValueError(
            f"probabilities must have shape (n, {len(classes)}) for {len(classes)} "
            f"classes, not {p.shape}"
        )
    usable = ~np.isnan(p).any(axis=1)
    p = np.where(usable[:, None], p, 0.0)
    if allowed is not None:
        allowed = np.asarray(allowed, dtype=bool)
        if allowed.shape != (len(classes),):
            raise ValueError(f"allowed must have shape ({len(classes)},), not {allowed.shape}")
        if not allowed.any():
            raise ValueError("allowed excludes every class")
        if not allowed.all():
            p = np.where(allowed, p, 0.0)
            total = p.sum(axis=1, keepdims=True)
            p = p / np.where(total > 0, total, 1.0)
        masked = np.where(allowed, p, -np.inf)
    else:
        masked = p
    index = np.argmax(masked, axis=1) if len(p) else np.zeros(0, dtype=int)
    return decision_for_index(p, classes, np.where(usable, index, -1))


def decision_for_index(
    probabilities: np.ndarray, classes: tuple[str, ...] | list[str], index: np.ndarray
) -> Decision:
    """Labels and scores of every level for joint classes already chosen.

    Parameters
    ----------
    probabilities
        Array ``(n, len(classes))`` of joint class probabilities (already
        renormalised over the allowed classes, if any).
    classes
        Joint class name of each column.
    index
        Integer array ``(n,)``: the chosen column per row, -1 for none.

    Returns
    -------
    decision
        See :class:`Decision`.
    """
    classes = tuple(classes)
    p = np.nan_to_num(np.asarray(probabilities, dtype=np.float64))
    index = np.asarray(index, dtype=int)
    usable = index >= 0
    safe = np.where(usable, index, 0)
    rows = np.arange(len(p))
    infos = [joint_class_info(c) for c in classes]
    labels, scores = {}, {}
    for level in ("joint",) + LEVELS:
        if level == "joint":
            col_label = np.array(classes, dtype=object)
            level_p, level_col = p, np.arange(len(classes))
        else:
            names = level_names(level)
            col_label = np.array([info[level] for info in infos], dtype=object)
            level_p = marginalise(p, classes, level)
            level_col = np.array([names.index(v) for v in col_label])
        lab = np.where(usable, col_label[safe], NOT_CLASSIFIED)
        score = level_p[rows, level_col[safe]]
        labels[level] = lab.astype(str)
        scores[level] = np.where(usable, score, np.nan)
    return Decision(index=index, labels=labels, scores=scores)
