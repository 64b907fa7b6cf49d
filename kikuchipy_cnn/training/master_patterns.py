"""Dynamical master patterns of the random structures with de-ebsd, cached as
compressed float16 ``.npz`` files.

Settings
--------
Every structure is passed to de-ebsd as its full conventional cell in P1 (all
atoms listed, ``space_group=1``), so de-ebsd's own Wyckoff expansion (origin
choices, unique axes, rhombohedral axes) is never used. de-ebsd folds the
beam directions with orix's point group of ``crystal.space_group``; orix's
point groups are in one fixed orientation that does not match the standard
setting of monoclinic (unique axis b), -4m2, 312, 31m, -31m and -6m2 groups.
So the folding group is chosen per structure here (:func:`fold_space_group`):
the largest orix point group whose every operation is an operation of the
crystal in de-ebsd's Cartesian frame; monoclinic cells are first permuted
cyclically to unique axis c, which keeps the handedness, so that 2/m folds.

Command line (resumable: finished structures are skipped; files are written
atomically)::

    python -m kikuchipy_cnn.training.master_patterns \
        --structures models/training-data/structures_seed0.json --out models/training-data/masters
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from kikuchipy_cnn.symmetry import JOINT_CLASSES, space_group_class

__all__ = [
    "DEFAULT_CACHE",
    "crystal_from_structure",
    "fold_space_group",
    "interleaved_order",
    "load_master",
    "simulate_master_pattern",
]

#: Master patterns committed with the repository (so anyone can retrain
#: without re-simulating), beside the structure list they were made from
TRAINING_DATA = Path(__file__).resolve().parents[2] / "models" / "training-data"
DEFAULT_CACHE = TRAINING_DATA / "masters"

# One space group per point group (standard setting); orix's point group of
# each is tried as a folding group
_POINT_GROUP_REPRESENTATIVES = (
    1, 2, 3, 6, 10, 16, 25, 47, 75, 81, 83, 89, 99, 111, 115, 123,
    143, 147, 149, 150, 156, 157, 162, 164, 168, 174, 175, 177, 183, 187,
    189, 191, 195, 200, 207, 215, 221,
)  # fmt: skip


def _p1_cell(structure: dict) -> tuple[list, list]:
    """Lattice parameters (Å, deg) and atoms of a structure in the setting
    passed to de-ebsd: monoclinic cells permuted to unique axis c."""
    a, b, c, al, be, ga = structure["lattice"]
    atoms = [(e, tuple(p)) for e, p in structure["atoms"]]
    if space_group_class(structure["space_group"]).crystal_system == "monoclinic":
        # (a, b, c) -> (c, a, b): cyclic, so right-handed; unique axis b -> c
        a, b, c, al, be, ga = c, a, b, ga, al, be
        atoms = [(e, (p[2], p[0], p[1])) for e, p in atoms]
    return [a, b, c, al, be, ga], atoms


def crystal_from_structure(structure: dict, debye_waller: float = 0.005):
    """Return a de-ebsd ``Crystal`` in P1 with every atom of the conventional
    cell (lattice in nm)."""
    from de_ebsd import Crystal

    params, atoms = _p1_cell(structure)
    a, b, c, al, be, ga = params
    return Crystal.from_parameters(
        a=a / 10, b=b / 10, c=c / 10, alpha=al, beta=be, gamma=ga,
        space_group=1, atoms=atoms, debye_waller=debye_waller,
    )  # fmt: skip


def _cartesian_operations(structure: dict, crystal, symprec: float = 1e-3):
    """Point-group operations of the crystal as Cartesian matrices in
    de-ebsd's frame."""
    import spglib

    from kikuchipy_cnn.training.structures import _ALL

    params, atoms = _p1_cell(structure)
    A = crystal.direct_structure_matrix  # columns a, b, c
    lattice = A.T * 10  # rows, Å
    numbers = [_ALL.index(e) + 3 for e, _ in atoms]
    positions = np.array([p for _, p in atoms], float)
    sym = spglib.get_symmetry((lattice, positions, numbers), symprec=symprec)
    W = np.unique(sym["rotations"], axis=0)
    Ainv = np.linalg.inv(A)
    return np.array([A @ w @ Ainv for w in W])


def fold_space_group(
    structure: dict, crystal=None, friedel: bool = True, tol: float = 1e-4
) -> int:
    """Return the space group number whose orix point group de-ebsd may use to
    fold the beam directions of this structure.

    It is the representative space group of the largest point group whose
    every operation (in orix's fixed orientation) is an operation of the
    crystal in de-ebsd's Cartesian frame. 1 means no folding. With
    ``friedel``, inversion is added to the crystal's operations (fold with
    the Laue group): dynamical master patterns of non-centrosymmetric
    crystals break Friedel's law only weakly, and the labels are Laue classes;
    it halves the cost of non-centrosymmetric structures.
    """
    from orix.quaternion.symmetry import get_point_group

    crystal = crystal if crystal is not None else crystal_from_structure(structure)
    ops = _cartesian_operations(structure, crystal)
    if friedel:
        ops = np.unique(np.round(np.concatenate([ops, -ops]), 8), axis=0)
    best, best_order = 1, 1
    for sg in _POINT_GROUP_REPRESENTATIVES:
        pg = get_point_group(sg)
        m = np.asarray(pg.to_matrix()) * np.where(np.asarray(pg.improper), -1, 1)[:, None, None]
        if len(m) <= best_order or len(m) > len(ops):
            continue
        if all(np.abs(ops - mi).reshape(len(ops), -1).max(1).min() < tol for mi in m):
            best, best_order = sg, len(m)
    return best


def simulate_master_pattern(
    structure: dict,
    energy_kev: float = 20.0,
    npx: int = 80,
    dmin: float = 0.06,
    n_electrons: int = 30_000,
    sample_tilt: float = 70.0,
    seed: int = 0,
    fold: bool = True,
    bethe: tuple = (4.0, 8.0, 50.0),
    device: str = "cpu",
) -> tuple[np.ndarray, dict]:
    """Compute one dynamical master pattern with de-ebsd.

    Parameters
    ----------
    structure
        Structure dictionary (see :mod:`kikuchipy_cnn.training.structures`).
    energy_kev
        Beam energy.
    npx
        Half-width of the square Lambert grid.
    dmin
        Smallest d-spacing of the reflections, in nm.
    n_electrons
        Monte Carlo electrons.
    sample_tilt
        Sample tilt in degrees.
    seed
        Monte Carlo seed.
    fold
        Fold the beam directions with :func:`fold_space_group`.
    bethe
        Bethe-potential thresholds (strong, weak, cutoff). The default is
        EMsoft's (4, 8, 50); de-ebsd's own (8, 50, 100) is several times
        slower.
    device
        Torch device for the Monte Carlo and the Bloch-wave solution
        (``"cuda"`` on a GPU; fine grids of low-symmetry cells take about
        15 min each on one CPU core at ``npx=200``).

    Returns
    -------
    data
        Square Lambert master pattern, float32, shape
        ``(2, 2 npx + 1, 2 npx + 1)``, north hemisphere first, in the
        crystal frame of the structure's standard setting, except monoclinic
        cells, whose frame has the unique axis along z.
    info
        Timings and the folding group.
    """
    import torch
    import de_ebsd as de
    from de_ebsd.sim.montecarlo.depth import DepthDistribution

    crystal = crystal_from_structure(structure)
    fold_sg = fold_space_group(structure, crystal) if fold else 1
    # Only de-ebsd's fold reads crystal.space_group; the P1 symmetry
    # operations used for the atoms were expanded in the constructor
    crystal.space_group = fold_sg
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mc = DepthDistribution.from_simulation(
            crystal, energy_kev, tilt_deg=sample_tilt, n_electrons=n_electrons,
            device=device, seed=seed,
        )  # fmt: skip
        t1 = time.perf_counter()
        mic = de.Microscope(energy=energy_kev * 1e3, sample_tilt=sample_tilt)
        from de_ebsd.diffraction.bethe import BetheParameters

        sim = de.MasterPatternSimulator(
            crystal, mic, npx=npx, dmin=dmin, monte_carlo=mc,
            bethe=BetheParameters(*bethe),
        )  # fmt: skip
        with torch.no_grad():
            mp = sim.compute(device=device)
    t2 = time.perf_counter()
    data = mp.data[0].cpu().numpy().astype(np.float32)
    info = {
        "fold_space_group": fold_sg,
        "time_monte_carlo": t1 - t0,
        "time_master": t2 - t1,
        "n_reflections": int(len(sim.structure_factors().hkl)),
    }
    return data, info


def interleaved_order(structures: list[dict]) -> list[dict]:
    """Order structures so that every joint class and every split gets
    master patterns early: round-robin over classes, and within a class
    train, val and test alternate (four train for each val/test pair, since
    the network learns from train while val and test only need enough
    structures to measure on) until val and test run out."""
    queues = {}
    for jc in JOINT_CLASSES:
        items = [s for s in structures if s["joint_class"] == jc]
        by_split = {sp: [s for s in items if s["split"] == sp] for sp in ("val", "test", "train")}
        q = []
        while any(by_split.values()):
            for sp in ("train", "train", "val", "train", "train", "test"):
                if by_split[sp]:
                    q.append(by_split[sp].pop(0))
        queues[jc] = q
    out = []
    while any(queues.values()):
        for jc in JOINT_CLASSES:
            if queues[jc]:
                out.append(queues[jc].pop(0))
    return out


def cell_volume(structure: dict) -> float:
    """Conventional cell volume in nm^3."""
    a, b, c, al, be, ga = structure["lattice"]
    ca, cb, cg = np.cos(np.deg2rad([al, be, ga]))
    return a * b * c * np.sqrt(1 - ca**2 - cb**2 - cg**2 + 2 * ca * cb * cg) / 1000


def choose_resolution(
    structure: dict, npx: int, dmin_range, rng, max_reflections: int = 1000
) -> tuple[float, int]:
    """Return (dmin in nm, npx) for a structure, bounding the cost.

    The number of reflections within 1/dmin is about
    ``4 pi / 3 V / dmin^3``; dmin is raised until it is at most
    ``max_reflections`` (big cells still have many bands: their reciprocal
    lattice is dense). Low Laue symmetry folds less, so it gets a coarser
    Lambert grid.
    """
    v = cell_volume(structure)
    dmin = float(rng.uniform(*dmin_range))
    dmin = max(dmin, (4 * np.pi / 3 * v / max_reflections) ** (1 / 3))
    laue = space_group_class(structure["space_group"]).laue_class
    scale = {"-1": 0.6, "2/m": 0.75, "mmm": 0.85, "-3": 0.8, "4/m": 0.85}.get(laue, 1.0)
    return dmin, int(round(npx * scale))


def master_path(out_dir, structure: dict) -> Path:
    """Path of a structure's cached master pattern."""
    return Path(out_dir) / structure["split"] / f"{structure['id']}.npz"


def save_master(path, data: np.ndarray, meta: dict) -> None:
    """Write a master pattern as compressed float16 with JSON metadata,
    atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    scale = float(np.abs(data).max()) or 1.0
    np.savez_compressed(
        tmp,
        data=(data / scale).astype(np.float16),
        scale=np.float32(scale),
        meta=np.array(json.dumps(meta)),
    )
    os.replace(tmp, path)


def load_master(path) -> tuple[np.ndarray, dict]:
    """Read a cached master pattern: float32 data ``(2, n, n)`` and metadata."""
    with np.load(path) as f:
        data = f["data"].astype(np.float32) * float(f["scale"])
        meta = json.loads(str(f["meta"]))
    return data, meta


def _versions() -> dict:
    import de_ebsd

    import kikuchipy_cnn

    return {
        "de_ebsd": getattr(de_ebsd, "__version__", "?"),
        "kikuchipy_cnn": getattr(kikuchipy_cnn, "__version__", "?"),
    }


def run(
    structures_file,
    out_dir=DEFAULT_CACHE,
    npx: int = 80,
    dmin_range=(0.05, 0.07),
    energy_range=(10.0, 30.0),
    n_electrons: int = 30_000,
    max_seconds: float = 60.0,
    limit: int | None = None,
    log=sys.stdout,
    shard: tuple[int, int] = (0, 1),
    device: str = "cpu",
) -> None:
    """Compute and cache master patterns of all structures in a file,
    skipping finished ones and ones logged as too slow or failed."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from kikuchipy_cnn.training.structures import load_structures

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    skip_file = out_dir / "skipped.jsonl"
    skipped = set()
    if skip_file.exists():
        skipped = {json.loads(line)["id"] for line in skip_file.read_text().splitlines() if line}
    structures = interleaved_order(load_structures(structures_file))
    structures = structures[shard[0] :: shard[1]]  # parallel workers take disjoint shards
    versions = _versions()
    done = 0
    t_start = time.time()
    for s in structures:
        path = master_path(out_dir, s)
        if path.exists() or s["id"] in skipped:
            continue
        if limit is not None and done >= limit:
            break
        rng = np.random.default_rng([*s["seed"], 7])
        energy = float(rng.uniform(*energy_range))
        dmin, npx_s = choose_resolution(s, npx, dmin_range, rng)
        t0 = time.time()
        try:
            data, info = simulate_master_pattern(
                s, energy_kev=energy, npx=npx_s, dmin=dmin, n_electrons=n_electrons,
                seed=int(rng.integers(2**31)), device=device,
            )  # fmt: skip
        except Exception as e:  # noqa: BLE001
            info = {"error": repr(e)}
            data = None
        elapsed = time.time() - t0
        if elapsed > max_seconds:
            # a finished master is kept; the slow structure is logged
            print(f"SLOW {s['id']} {s['joint_class']} {elapsed:.0f} s", file=log, flush=True)
        if data is None or not np.isfinite(data).all():
            reason = info.get("error", "not finite")
            with open(skip_file, "a") as f:
                f.write(json.dumps({"id": s["id"], "reason": reason, "seconds": elapsed}) + "\n")
            print(f"SKIP {s['id']} {s['joint_class']} {reason}", file=log, flush=True)
            continue
        meta = {
            "id": s["id"],
            "split": s["split"],
            "joint_class": s["joint_class"],
            "label": JOINT_CLASSES.index(s["joint_class"]),
            "space_group": s["space_group"],
            "n_atoms": s["n_atoms"],
            "lattice": s["lattice"],
            "energy_kev": energy,
            "npx": npx_s,
            "dmin_nm": dmin,
            "n_electrons": n_electrons,
            "sample_tilt": 70.0,
            "seconds": elapsed,
            "versions": versions,
            **info,
        }
        save_master(path, data, meta)
        done += 1
        rate = done / (time.time() - t_start) * 60
        print(
            f"{s['id']} {s['split']:5s} {s['joint_class']:9s} sg{s['space_group']:3d} "
            f"fold{info['fold_space_group']:3d} n={s['n_atoms']:2d} E={energy:4.1f} "
            f"dmin={dmin:.3f} nref={info['n_reflections']} {elapsed:5.1f} s "
            f"({rate:.1f}/min)",
            file=log,
            flush=True,
        )


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"I/N"`` (worker I of N, 0 <= I < N): the argparse type of the
    ``--shard`` options."""
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be I/N, e.g. 0/2, not {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"{text}: I must be in 0..N-1")
    return i, n


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--structures", required=True)
    p.add_argument("--out", default=str(DEFAULT_CACHE))
    p.add_argument("--npx", type=int, default=80)
    p.add_argument("--electrons", type=int, default=30_000)
    p.add_argument("--max-seconds", type=float, default=60.0)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--shard", type=parse_shard, default=(0, 1), help="I/N: this worker's share of N")
    p.add_argument("--device", default="cpu", help='torch device, e.g. "cuda" on a GPU')
    args = p.parse_args(argv)
    run(
        args.structures, args.out, npx=args.npx, n_electrons=args.electrons,
        max_seconds=args.max_seconds, limit=args.limit, shard=args.shard, device=args.device,
    )  # fmt: skip


if __name__ == "__main__":
    main()
