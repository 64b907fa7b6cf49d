"""Random crystal structures over all 230 space groups, balanced over the 23
joint classes, with train/val/test splits disjoint by structure.

Every structure is generated with pyxtal, re-analysed with spglib and labelled
with the space group spglib finds (pyxtal sometimes produces a structure of
higher symmetry than requested). The stored cell is spglib's standardised
conventional cell, written out in P1 (every atom listed).

Command line::

    python -m kikuchipy_cnn.training.structures --per-class 250 --seed 1 \
        --processes 2 --checkpoint-dir structures.parts --out structures.json

Within a class, every try uses the space group with the fewest structures so
far (failed tries count a twentieth), so with enough structures per class every
space group is covered (250 per class cover all 230: the command prints the
coverage).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from kikuchipy_cnn.symmetry import JOINT_CLASSES, space_group_class

__all__ = [
    "ELEMENTS",
    "EXCLUDED_ELEMENTS",
    "generate_structures",
    "load_structures",
    "random_structure",
    "save_structures",
    "space_group_counts",
    "space_groups_of_class",
    "spglib_cell",
]

#: Elements of the validation materials: never in training structures
EXCLUDED_ELEMENTS = ("Ni", "Si", "Fe", "Al", "Ti", "Mg")

# fmt: off
_ALL = (
    "Li", "Be", "B", "C", "N", "O", "F", "Na", "Mg", "Al", "Si", "P", "S", "Cl",
    "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga",
    "Ge", "As", "Se", "Br", "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Ru", "Rh", "Pd",
    "Ag", "Cd", "In", "Sn", "Sb", "Te", "I", "Cs", "Ba", "La", "Ce", "Pr", "Nd",
    "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W",
    "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi",
)
# fmt: on
#: Element pool (Li to Bi without noble gases, Tc, Pm and the excluded ones)
ELEMENTS = tuple(e for e in _ALL if e not in EXCLUDED_ELEMENTS)

#: Conventional cell limits
MAX_ATOMS = 40
MIN_LENGTH, MAX_LENGTH = 2.5, 15.0  # Å
MAX_VOLUME = 1500.0  # Å^3

SPLITS = ("train", "val", "test")

# Space groups whose random structures almost always come out with higher
# symmetry unless one species fills a large orbit of low site symmetry
# (measured: no structure of these groups in 600 tries otherwise): the number
# of atoms of that species
_NEEDS_LARGE_ORBIT = {
    196: 48, 202: 48, 203: 96, 209: 96, 210: 96, 219: 96, 222: 48, 226: 192, 228: 192,
}


def _max_atoms(sg: int) -> int:
    return _NEEDS_LARGE_ORBIT[sg] + 16 if sg in _NEEDS_LARGE_ORBIT else MAX_ATOMS


def _max_volume(sg: int) -> float:
    return MAX_LENGTH**3 if sg in _NEEDS_LARGE_ORBIT else MAX_VOLUME


def space_groups_of_class(joint_class: str) -> list[int]:
    """Return the space group numbers of one joint class."""
    if joint_class not in JOINT_CLASSES:
        raise ValueError(f"Unknown joint class {joint_class!r}")
    return [n for n in range(1, 231) if space_group_class(n).joint_class == joint_class]


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds):
    def handler(signum, frame):
        raise _Timeout()

    use = hasattr(signal, "SIGALRM")
    if use:
        old = signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        if use:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


def _random_lattice(sg: int, n_atoms: int, rng) -> tuple:
    """Lattice parameters (Å, degrees) for a space group, with pseudo-symmetric
    cells sometimes."""
    system = space_group_class(sg).crystal_system
    volume = n_atoms * rng.uniform(12.0, 30.0)
    pseudo = rng.random() < 0.25
    r = lambda lo, hi: rng.uniform(lo, hi)  # noqa: E731
    if system == "cubic":
        shape = (1, 1, 1, 90, 90, 90)
    elif system == "tetragonal":
        ca = r(0.97, 1.03) if pseudo else np.exp(r(np.log(0.4), np.log(2.5)))
        shape = (1, 1, ca, 90, 90, 90)
    elif system in ("trigonal", "hexagonal"):
        if space_group_class(sg).centring == "R" and pseudo:
            # near-cubic rhombohedral (alpha near 60, 90 or 109.47 degrees)
            ideal = rng.choice([np.sqrt(6), np.sqrt(1.5), np.sqrt(3 / 8)])
            ca = ideal * r(0.97, 1.03)
        elif pseudo:
            ca = np.sqrt(8 / 3) * r(0.97, 1.03)  # ideal hcp
        else:
            ca = np.exp(r(np.log(0.5), np.log(3.0)))
        shape = (1, 1, ca, 90, 90, 120)
    elif system == "orthorhombic":
        if pseudo:
            b, c = r(0.97, 1.03), np.exp(r(np.log(0.5), np.log(2.0)))
        else:
            b, c = np.exp(r(np.log(0.5), np.log(2.0), )), np.exp(r(np.log(0.5), np.log(2.0)))
        shape = (1, b, c, 90, 90, 90)
    elif system == "monoclinic":
        b, c = np.exp(r(np.log(0.5), np.log(2.0))), np.exp(r(np.log(0.5), np.log(2.0)))
        beta = r(90.5, 93) if pseudo else r(93, 120)
        shape = (1, b, c, 90, beta, 90)
    else:
        b, c = np.exp(r(np.log(0.6), np.log(1.6))), np.exp(r(np.log(0.6), np.log(1.6)))
        al, be, ga = r(75, 105), r(75, 105), r(75, 105)
        shape = (1, b, c, al, be, ga)
    a, b, c, al, be, ga = shape
    ca_, cb_, cg_ = np.cos(np.deg2rad([al, be, ga]))
    unit_vol = b * c * np.sqrt(1 - ca_**2 - cb_**2 - cg_**2 + 2 * ca_ * cb_ * cg_)
    scale = (volume / unit_vol) ** (1 / 3)
    return (scale, b * scale, c * scale, al, be, ga)


def _random_composition(sg: int, rng) -> tuple[list[str], list[int]]:
    """Species and atom counts compatible with the group's Wyckoff
    multiplicities, 1 to MAX_ATOMS atoms in the conventional cell."""
    from pyxtal.symmetry import Group

    mults = sorted({w.multiplicity for w in Group(sg).Wyckoff_positions})
    n_species = int(rng.choice([1, 1, 2, 2, 2, 3, 3, 4]))
    species = list(rng.choice(ELEMENTS, size=n_species, replace=False))
    # small cells favoured: choose one or two orbits per species
    counts = []
    budget = _max_atoms(sg)
    if sg in _NEEDS_LARGE_ORBIT:
        # one atom type on a large orbit of low site symmetry
        counts.append(_NEEDS_LARGE_ORBIT[sg])
        budget -= counts[0]
        mults = [m for m in mults if m <= 16]
    for _ in species[len(counts):]:
        n_orbits = int(rng.choice([1, 1, 1, 2]))
        n = 0
        for _ in range(n_orbits):
            # favour small multiplicities (special positions)
            ok = [m for m in mults if n + m <= budget]
            if not ok:
                break
            w = 1.0 / np.asarray(ok, float)
            n += int(rng.choice(ok, p=w / w.sum()))
        if n == 0:
            break
        counts.append(n)
        budget -= n
    species = species[: len(counts)]
    return species, counts


def spglib_cell(structure: dict) -> tuple:
    """Return the spglib cell ``(lattice, positions, numbers)`` of a stored
    structure (lattice rows in Å)."""
    from pyxtal.lattice import Lattice

    a, b, c, al, be, ga = structure["lattice"]
    lattice = Lattice.from_para(a, b, c, al, be, ga).matrix
    elements = [s[0] for s in structure["atoms"]]
    numbers = [_ALL.index(e) + 3 for e in elements]
    positions = [s[1] for s in structure["atoms"]]
    return lattice, np.asarray(positions, float), numbers


def _cell_parameters(matrix: np.ndarray) -> list[float]:
    a, b, c = np.linalg.norm(matrix, axis=1)
    al = np.degrees(np.arccos(matrix[1] @ matrix[2] / (b * c)))
    be = np.degrees(np.arccos(matrix[0] @ matrix[2] / (a * c)))
    ga = np.degrees(np.arccos(matrix[0] @ matrix[1] / (a * b)))
    return [float(v) for v in (a, b, c, al, be, ga)]


def random_structure(
    space_group: int, rng: np.random.Generator, symprec: float = 1e-3, timeout: float = 5.0
) -> dict | None:
    """Generate one random structure of a space group.

    Parameters
    ----------
    space_group
        Requested space group (1-230).
    rng
        Random number generator (also seeds pyxtal).
    symprec
        spglib symmetry tolerance in Å.
    timeout
        Seconds allowed for pyxtal.

    Returns
    -------
    structure
        Dictionary with ``lattice`` (a, b, c in Å, alpha, beta, gamma in
        degrees), ``atoms`` (list of ``[element, [x, y, z]]``, the full
        conventional cell), ``space_group`` (spglib's), ``requested_space_group``,
        ``joint_class`` and ``n_atoms``; or None if generation failed or the
        result is outside the limits.
    """
    import spglib
    from pyxtal import pyxtal
    from pyxtal.lattice import Lattice
    from pyxtal.symmetry import Group
    from pyxtal.tolerance import Tol_matrix

    species, counts = _random_composition(space_group, rng)
    if not counts:
        return None
    params = _random_lattice(space_group, sum(counts), rng)
    ltype = Group(space_group).lattice_type
    try:
        state = int(rng.integers(2**31))
        # the lattice draws the random positions: seed it too
        lattice = Lattice.from_para(*params, ltype=ltype, random_state=state)
        # pyxtal also draws from the global generators
        random.seed(state)
        np.random.seed(state)
        xtal = pyxtal()
        with warnings.catch_warnings(), _time_limit(timeout):
            warnings.simplefilter("ignore")
            xtal.from_random(
                3,
                space_group,
                [str(s) for s in species],
                counts,
                lattice=lattice,
                tm=Tol_matrix(prototype="atomic", factor=0.6),
                random_state=state,
                max_count=5,
            )
        if not xtal.valid:
            return None
        coords, elements = xtal._get_coords_and_species(absolute=False)
        matrix = xtal.lattice.matrix
    except _Timeout:
        return None
    except Exception:  # pyxtal raises many kinds of errors
        return None
    numbers = [_ALL.index(e) + 3 for e in elements]
    cell = (matrix, np.mod(coords, 1), numbers)
    std = spglib.standardize_cell(cell, to_primitive=False, no_idealize=False, symprec=symprec)
    if std is None:
        return None
    dataset = spglib.get_symmetry_dataset(std, symprec=symprec)
    if dataset is None:
        return None
    s_lat, s_pos, s_num = std
    number = int(dataset.number)
    if not 1 <= len(s_num) <= _max_atoms(number):
        return None
    params = _cell_parameters(s_lat)
    if min(params[:3]) < MIN_LENGTH or max(params[:3]) > MAX_LENGTH:
        return None
    if abs(np.linalg.det(s_lat)) > _max_volume(number):
        return None
    symbols = [_ALL[n - 3] for n in s_num]
    atoms = [[e, [round(float(v), 6) for v in np.mod(p, 1)]] for e, p in zip(symbols, s_pos)]
    return {
        "lattice": [round(v, 6) for v in params],
        "atoms": atoms,
        "space_group": number,
        "requested_space_group": int(space_group),
        "joint_class": space_group_class(number).joint_class,
        "n_atoms": len(atoms),
    }


def _generate_class(
    joint_class: str, per_class: int, seed: int, max_tries: int
) -> tuple[list[dict], dict]:
    """Generate ``per_class`` structures of one joint class.

    The space group of every try is the one of the class with the fewest
    structures so far (failures count a twentieth), so that the space groups
    of the class are covered evenly, including those where generation often
    fails.
    """
    k = JOINT_CLASSES.index(joint_class)
    groups = space_groups_of_class(joint_class)
    found = dict.fromkeys(groups, 0)
    failed = dict.fromkeys(groups, 0)
    jitter = np.random.default_rng([seed, 7, k])
    items, seen = [], set()
    tries = 0
    while len(items) < per_class and tries < max_tries:
        tries += 1
        score = np.array([found[g] + 0.05 * failed[g] for g in groups])
        score += 1e-3 * jitter.random(score.size)
        sg = groups[int(np.argmin(score))]
        s = random_structure(sg, np.random.default_rng([seed, k, tries]))
        if s is None or s["joint_class"] != joint_class:
            failed[sg] += 1
            continue
        key = json.dumps([s["lattice"], s["atoms"]])
        if key in seen:
            failed[sg] += 1
            continue
        seen.add(key)
        if s["space_group"] != sg:
            failed[sg] += 1
        found[s["space_group"]] += 1
        s["seed"] = [seed, k, tries]
        items.append(s)
    return items, {"tries": tries, "space_groups": {g: n for g, n in found.items()}}


def _generate_class_star(args):
    return args[0], _generate_class(*args)


def generate_structures(
    per_class: int = 40,
    seed: int = 0,
    fractions: tuple = (0.8, 0.1, 0.1),
    max_tries_factor: int = 20,
    verbose: bool = False,
    classes: tuple | None = None,
    processes: int = 1,
    checkpoint_dir=None,
) -> list[dict]:
    """Generate a class-balanced list of random structures.

    Parameters
    ----------
    per_class
        Number of structures per joint class.
    seed
        Global seed; the result is deterministic given it, whatever the number
        of processes (unless a pyxtal call hits its wall-clock time limit on
        an overloaded machine, which changes later choices of that class).
    fractions
        Train, val and test fractions, applied within every class (each class
        gets at least one val and one test structure when ``per_class >= 3``).
    max_tries_factor
        A class stops after ``max_tries_factor * per_class`` attempts, with
        fewer structures if generation keeps failing (reported).
    verbose
        Print progress.
    classes
        Joint classes to generate (default: all 23).
    processes
        Number of worker processes (classes are generated in parallel).
    checkpoint_dir
        If given, every finished class is written there and reused when the
        command is run again (resume after an interruption).

    Returns
    -------
    structures
        List of structure dictionaries (see :func:`random_structure`) with
        ``id``, ``split`` and ``seed`` added.
    """
    classes = tuple(classes or JOINT_CLASSES)
    max_tries = max_tries_factor * per_class
    results = {}
    todo = []
    if checkpoint_dir is not None:
        checkpoint_dir = Path(checkpoint_dir)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
    for jc in classes:
        part = _part_path(checkpoint_dir, jc, per_class, seed, max_tries)
        if part is not None and part.exists():
            results[jc] = json.loads(part.read_text())
        else:
            todo.append((jc, per_class, seed, max_tries))

    def done(jc, res):
        items, info = res
        results[jc] = {"structures": items, "info": info}
        part = _part_path(checkpoint_dir, jc, per_class, seed, max_tries)
        if part is not None:
            tmp = part.with_suffix(".tmp")
            tmp.write_text(json.dumps(results[jc]))
            tmp.replace(part)
        if verbose:
            covered = sum(n > 0 for n in info["space_groups"].values())
            print(
                f"{jc:10s} {len(items):4d} structures, {info['tries']:5d} tries, "
                f"{covered}/{len(info['space_groups'])} space groups",
                file=sys.stderr,
            )

    if processes > 1 and len(todo) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(processes) as pool:
            for jc, res in pool.imap_unordered(_generate_class_star, todo):
                done(jc, res)
    else:
        for args in todo:
            done(args[0], _generate_class(*args))

    structures = []
    for jc in classes:
        items = results[jc]["structures"]
        n = len(items)
        n_val = max(1 if n >= 3 else 0, int(round(fractions[1] * n)))
        n_test = max(1 if n >= 3 else 0, int(round(fractions[2] * n)))
        order = np.random.default_rng([seed, 999, JOINT_CLASSES.index(jc)]).permutation(n)
        for rank, i in enumerate(order):
            s = items[i]
            s["split"] = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
            structures.append(s)
    for i, s in enumerate(structures):
        s["id"] = f"s{seed}-{i:05d}"
    return structures


def _part_path(directory, joint_class, per_class, seed, max_tries):
    if directory is None:
        return None
    k = JOINT_CLASSES.index(joint_class)
    return Path(directory) / f"seed{seed}-n{per_class}-t{max_tries}-class{k:02d}.json"


def save_structures(structures: list[dict], path) -> None:
    """Write structures as JSON (atomically)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"version": 1, "structures": structures}, indent=None))
    tmp.replace(path)


def load_structures(path, split: str | None = None) -> list[dict]:
    """Read structures written by :func:`save_structures`, optionally one
    split only."""
    data = json.loads(Path(path).read_text())
    out = data["structures"]
    if split is not None:
        out = [s for s in out if s["split"] == split]
    return out


def class_counts(structures: list[dict]) -> dict:
    """Number of structures per joint class and split."""
    table = {jc: {sp: 0 for sp in SPLITS} for jc in JOINT_CLASSES}
    for s in structures:
        table[s["joint_class"]][s["split"]] += 1
    return table


def space_group_counts(structures: list[dict]) -> dict:
    """Number of structures per space group (1-230)."""
    counts = dict.fromkeys(range(1, 231), 0)
    for s in structures:
        counts[s["space_group"]] += 1
    return counts


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument(
        "--checkpoint-dir", help="finished classes are kept here; rerun to resume"
    )
    args = p.parse_args(argv)
    t0 = time.time()
    structures = generate_structures(
        args.per_class,
        args.seed,
        verbose=True,
        processes=args.processes,
        checkpoint_dir=args.checkpoint_dir,
    )
    save_structures(structures, args.out)
    counts = class_counts(structures)
    print(f"{len(structures)} structures in {time.time() - t0:.0f} s")
    for jc, c in counts.items():
        print(f"{jc:10s} " + " ".join(f"{k}={v}" for k, v in c.items()))
    groups = space_group_counts(structures)
    missing = [n for n in range(1, 231) if groups[n] == 0]
    print(f"space groups covered: {230 - len(missing)}/230" + (f", missing {missing}" if missing else ""))


if __name__ == "__main__":
    main()
