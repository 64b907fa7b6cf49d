"""Band-set training data: what :func:`kikuchipy_cnn.bands.detect_bands` sees,
from two sources, in one format.

Sources
-------
``rendered``
    Dynamical master patterns of one split (``models/training-data/masters``)
    projected at random orientations onto random detectors (shapes from
    :data:`SHAPES`, 60-480 px, rendered at the detector's own size; PC and
    tilts from :func:`~kikuchipy_cnn.training.projection.random_geometry`),
    degraded with the project's realism model (Poisson noise, smooth
    background, vignetting, ...; :func:`~kikuchipy_cnn.training.realism.degrade`)
    except a fraction ``clean_fraction`` left clean, and run through
    ``detect_bands`` with the true PC or, for a fraction ``pc_fraction``, a PC
    perturbed by N(0, ``sigma_pc``) per coordinate (both PCs are stored). The
    beam energy is the master's. Because structure and orientation are known,
    every detected band gets its TRUE match: the nearest visible band normal of
    the structure's reflector list (angle, d, |F|^2).
``reflectors``
    Cheap breadth over all structures: per structure a random orientation,
    detector (same shape list) and energy (10-30 kV); the visible bands are
    the reflector bands whose plane trace crosses the detector; the detected
    bands are drawn from them with the error model FITTED to ``rendered``
    (see below), so both sources look the same to a model.

Reflector bands
---------------
:func:`band_reflectors` groups the kinematical reflectors
(:func:`~kikuchipy_cnn.training.kinematical.reflectors`; Doyle-Turner,
B = 0.5 Å^2) by direction: one band per lattice-plane normal, ``f2`` = the
strongest |F|^2 of its orders relative to the structure's strongest
reflector, ``d`` = the spacing of its lowest order with at least a quarter of
that |F|^2 (the order whose edges one sees). Cells are in the setting of the
master patterns (monoclinic unique axis c,
:func:`~kikuchipy_cnn.training.master_patterns._p1_cell`), whose Cartesian
frame (a along x, b in the xy plane) is de-ebsd's and the master patterns'.

Frames
------
kikuchipy's: a rotation ``q`` (``(w, x, y, z)``) takes sample-frame vectors to
the crystal frame, ``v_crystal = q * to_sample_frame(v_detector, detector)``
(as in ``tests/test_bands.py``), so row vectors go crystal -> detector as
``n_detector = n_crystal @ R(q) @ S`` with ``S`` the sample-to-detector
matrix transposed (:func:`crystal_to_detector`). A change of pattern centre
is an affine map of the gnomonic plane, so a band seen with another PC is
``inv(M).T @ n`` (:func:`change_pc`).

Error model (fitted by :func:`fit_error_model` on rendered data with the true
PC; stored in ``error_model.json`` and in every ``reflectors`` sidecar)
------------------------------------------------------------------------------
Per detector-size bin (:data:`SIZE_BINS`, by the shorter side) and band
rank group (:data:`RANK_GROUPS`, rank = position in the extractor's output,
strongest first):

- ``found``: fraction of rank slots holding a valid band;
- ``spurious``: fraction of valid bands with no visible reflector band within
  :data:`SPURIOUS_DEG` degrees; spurious bands get a random visible normal;
- ``error_deg``: quantiles (:data:`QUANTILES`) of the angle between a
  non-spurious band and its match; a band is moved by an angle drawn from
  them in a random direction;
- ``width_measured`` and ``width_ratio``: fraction of non-spurious bands,
  resolvable ones (2 theta_B >= 2.5 px), with a finite width, and quantiles
  of width / 2 theta_B (of the match's ``d``); below 2.5 px widths are NaN;
- ``spurious_width_measured`` / ``spurious_width_rad``: the same for
  spurious bands (absolute width quantiles);
- ``strength_rel``: quantiles of strength / the pattern's strongest;
  ``strength_max``: quantiles of the pattern's strongest (per size bin);
- ``contrast``: quantiles of finite contrasts.

Which reflector bands the extractor reports is a noisy ranking: score =
ln f2 + ``beta`` ln d + ``sigma`` N(0, 1), the top ones in score order;
``beta`` and ``sigma`` are chosen on a grid so that the rank, among the
visible bands ordered by f2, of the bands matched per rank group is as in
the rendered data (mean ln(1 + rank)).

The committed model (``models/training-data/band-sets/error_model.json``) was
fitted on ``rendered_train`` (true-PC patterns) and ``rendered_val``: the
error model describes the extractor, not the structures. Known limits:
the selection fit ended at the grid edge (beta = 4; widen the grid); a random
"spurious" band often lands within 2 degrees of some reflector band of a
dense structure, so re-measuring ``reflectors`` data gives fewer spurious
bands than injected (top ranks at 60-99 px: 0.19 against 0.29); the masters'
Lambert grids (77-161 px) blur narrow bands, so errors are those of these
masters as much as of the extractor.

Format
------
One ``.npz`` per (source, split) (:func:`save_band_sets`,
:func:`load_band_sets`), arrays in :data:`FIELDS` with N patterns and K = 24
band slots (padded, ``valid``), plus a JSON sidecar (same stem) with the
settings, seed, code version and, for ``reflectors``, the error model.
Generation is sharded (by detector shape for ``rendered``: one band
detector per shape) and resumable: finished shards sit in
``<out>/.parts/<source>_<split>/`` until the split is complete.

    python -m kikuchipy_cnn.training.band_sets --source rendered --split val --n 8 \
        --out models/training-data/band-sets
    python -m kikuchipy_cnn.training.band_sets --fit-error-model --out models/training-data/band-sets
    python -m kikuchipy_cnn.training.band_sets --source reflectors --split train --n 4 \
        --out models/training-data/band-sets
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from kikuchipy_cnn.bands import _gnomonic_matrix, change_pc  # noqa: F401 (re-exported)
from kikuchipy_cnn.symmetry import JOINT_CLASSES

__all__ = [
    "FIELDS",
    "K",
    "band_reflectors",
    "change_pc",
    "crystal_to_detector",
    "fit_error_model",
    "generate",
    "load_band_sets",
    "match_bands",
    "reflector_band_sets",
    "render_band_sets",
    "render_patterns",
    "rendered_plan",
    "save_band_sets",
    "split_rng",
    "trace_visible",
]

FORMAT_VERSION = 1
#: Band slots per pattern
K = 24
#: Detector shapes (rows, cols) and their probabilities; a small fixed set,
#: because the band detector costs 0.2-3 s to set up per shape
SHAPES = ((60, 60), (60, 80), (80, 80), (120, 120), (120, 160), (160, 160), (200, 200),
          (240, 240), (240, 320), (320, 320), (480, 480))  # fmt: skip
SHAPE_WEIGHTS = (0.15, 0.07, 0.08, 0.15, 0.08, 0.10, 0.06, 0.12, 0.08, 0.06, 0.05)
#: Size bins of the error model, by the shorter side (px): [60, 100), [100, 200), [200, ...)
SIZE_BINS = (0, 100, 200, 100_000)
#: Rank groups of the error model: ranks [0, 2), [2, 4), [4, 8), ...
RANK_GROUPS = (0, 2, 4, 8, 12, 16, K)
#: A detected band further than this from every visible reflector band is spurious
SPURIOUS_DEG = 2.0
#: Quantile levels stored in the error model
QUANTILES = tuple(np.round(np.linspace(0, 1, 21), 3).tolist())
#: Widths below this many pixels are not measured (as in bands.py)
MIN_WIDTH_PX = 2.5

#: Where the band sets are written and read by default (models/training-data/band-sets)
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "models" / "training-data" / "band-sets"
#: Held-out band sets rendered from fine (401 px) kinematical masters of test
#: structures, with their structure ids (docs/bands.md, "Fine kinematical masters")
KINEMATICAL_FINE = DEFAULT_OUT / "kinematical-fine"

STRUCTURE_FILES = ("structures_seed0.json", "structures_seed1.json")
SOURCES = ("rendered", "reflectors")
SPLITS = ("train", "val", "test")

#: name -> (dtype, shape after N); ``K`` is the band slot axis. Fields after
#: ``source`` are the truth (for error models and evaluation, not model input)
FIELDS = {
    "normals": ("float32", (K, 3)),  # unit plane normals, detector frame (PC as given)
    "strength": ("float32", (K,)),
    "width": ("float32", (K,)),  # rad, NaN where not measured
    "contrast": ("float32", (K,)),
    "valid": ("bool", (K,)),
    "wavelength": ("float32", ()),  # Å
    "pc": ("float32", (3,)),  # Bruker PC given to the extractor
    "true_pc": ("float32", (3,)),
    "shape": ("int32", (2,)),  # detector rows, cols
    "energy": ("float32", ()),  # kV
    "label": ("int64", ()),  # joint class index (kikuchipy_cnn.symmetry.JOINT_CLASSES)
    "structure_id": ("U12", ()),
    "source": ("U10", ()),
    # truth
    "quaternion": ("float32", (4,)),  # sample -> crystal (kikuchipy)
    "tilts": ("float32", (2,)),  # sample tilt, detector tilt (deg)
    "dmin": ("float32", ()),  # Å, of the reflector list matched against
    "counts": ("float32", ()),  # mean counts per pixel, 0 if clean, NaN for reflectors
    "match_angle": ("float32", (K,)),  # rad to the nearest visible reflector band
    "match_d": ("float32", (K,)),  # Å
    "match_f2": ("float32", (K,)),  # |F|^2 / strongest of the structure
    "match_rank": ("int16", (K,)),  # rank of the match among visible bands by f2; -1 none
    "n_visible": ("int32", ()),
}


# ----------------------------------------------------------------------------
# format


def empty_arrays(n: int) -> dict:
    """Arrays of :data:`FIELDS` for ``n`` patterns: NaN floats, False, -1."""
    out = {}
    for name, (dtype, shape) in FIELDS.items():
        a = np.zeros((n, *shape), dtype=dtype)
        if a.dtype.kind == "f":
            a[...] = np.nan
        elif name == "match_rank":
            a[...] = -1
        out[name] = a
    return out


def concat_arrays(parts: list[dict]) -> dict:
    return {k: np.concatenate([p[k] for p in parts]) for k in FIELDS}


def _check(arrays: dict) -> int:
    missing = set(FIELDS) - set(arrays)
    if missing:
        raise ValueError(f"band sets lack {sorted(missing)}")
    n = len(arrays["normals"])
    for name, (_, shape) in FIELDS.items():
        if arrays[name].shape != (n, *shape):
            raise ValueError(f"{name} has shape {arrays[name].shape}, expected {(n, *shape)}")
    return n


def sidecar_path(path) -> Path:
    return Path(path).with_suffix(".json")


def save_band_sets(path, arrays: dict, settings: dict, overwrite: bool = False) -> Path:
    """Write band sets (arrays of :data:`FIELDS`) and their JSON sidecar
    atomically (temporary files, then ``os.replace``); refuse to replace an
    existing file unless ``overwrite``."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"band sets are .npz files, not {path.name}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (use overwrite / --overwrite)")
    n = _check(arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format_version": FORMAT_VERSION, "n": n, "k": K, "fields": list(FIELDS), **settings}
    tmp = path.with_name(path.stem + ".tmp.npz")
    tmp_json = path.with_name(path.stem + ".tmp.json")
    np.savez_compressed(tmp, **{k: np.asarray(arrays[k], dtype=FIELDS[k][0]) for k in FIELDS})
    tmp_json.write_text(json.dumps(meta, indent=1, default=_json_default))
    os.replace(tmp, path)
    os.replace(tmp_json, sidecar_path(path))
    return path


def load_band_sets(path) -> tuple[dict, dict]:
    """Read band sets written by :func:`save_band_sets`: arrays and sidecar."""
    path = Path(path)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    side = sidecar_path(path)
    settings = json.loads(side.read_text()) if side.exists() else {}
    _check(arrays)
    return arrays, settings


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


def code_version() -> dict:
    """Package version, git commit and the hash of this module's source."""
    import kikuchipy_cnn

    src = Path(__file__).read_bytes()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except Exception:  # noqa: BLE001
        commit = ""
    return {
        "kikuchipy_cnn": getattr(kikuchipy_cnn, "__version__", "?"),
        "git_commit": commit or "?",
        "band_sets_sha256": hashlib.sha256(src).hexdigest()[:16],
        "bands_sha256": hashlib.sha256(Path(__file__).parents[1].joinpath("bands.py").read_bytes()).hexdigest()[:16],
    }


# ----------------------------------------------------------------------------
# geometry


def crystal_to_detector(quaternion, sample_tilt: float, tilt: float) -> np.ndarray:
    """Matrix ``T`` with ``n_detector = n_crystal @ T`` (row vectors) for a
    kikuchipy orientation (sample -> crystal, ``(w, x, y, z)``) and detector
    tilts (degrees); the detector's matrix is kikuchipy's own."""
    from kikuchipy.detectors._ebsd_detector import _sample_to_detector_matrix

    w, x, y, z = np.asarray(quaternion, dtype=np.float64).ravel() / np.linalg.norm(quaternion)
    R = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])  # fmt: skip
    S = np.asarray(_sample_to_detector_matrix(np.deg2rad(sample_tilt), np.deg2rad(tilt), 0.0, 0.0))
    # v_c = R v_s, v_d = S v_s  =>  v_d = S R^T v_c; rows: n_d = n_c R S^T
    return R @ S.T


def _corners(shape, pc) -> np.ndarray:
    M = _gnomonic_matrix(shape, pc)
    uv = np.array([[0, 0, 1], [1, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=np.float64)
    return uv @ M.T


def trace_visible(normals: np.ndarray, shape, pc) -> np.ndarray:
    """Whether each plane's trace (great circle of its normal) crosses the
    detector: the screen's corners are not all on one side of it."""
    s = np.asarray(normals) @ _corners(shape, pc).T
    return (s.min(-1) < 0) & (s.max(-1) > 0)


def match_bands(normals: np.ndarray, valid: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Angle (rad) from each valid band to the nearest of ``ref`` (sign
    free) and its index; NaN / -1 where invalid or ``ref`` is empty."""
    k = len(normals)
    ang = np.full(k, np.nan)
    idx = np.full(k, -1)
    if len(ref) == 0 or not np.any(valid):
        return ang, idx
    cos = np.abs(normals[valid] @ ref.T)
    j = cos.argmax(1)
    idx[valid] = j
    ang[valid] = np.arccos(np.clip(cos[np.arange(len(j)), j], -1, 1))
    return ang, idx


def draw_shape(rng) -> tuple:
    return SHAPES[int(rng.choice(len(SHAPES), p=np.array(SHAPE_WEIGHTS) / sum(SHAPE_WEIGHTS)))]


def draw_geometry(rng):
    """A random detector: PC and tilts from ``random_geometry``, shape from
    :data:`SHAPES`."""
    from kikuchipy_cnn.training.projection import DetectorGeometry, random_geometry

    g = random_geometry(rng)
    return DetectorGeometry(draw_shape(rng), g.pcx, g.pcy, g.pcz, g.sample_tilt, g.tilt)


def _perturb_pc(pc, sigma, rng) -> np.ndarray:
    p = np.asarray(pc, dtype=np.float64) + rng.normal(0, sigma, 3)
    p[2] = max(p[2], 0.2)
    return p


# ----------------------------------------------------------------------------
# structures and reflectors


def structure_index(paths=None) -> dict:
    """Structures by id from the structure files (the masters come from both)."""
    from kikuchipy_cnn.training.master_patterns import TRAINING_DATA
    from kikuchipy_cnn.training.structures import load_structures

    paths = paths or [TRAINING_DATA / f for f in STRUCTURE_FILES]
    out = {}
    for p in paths:
        if Path(p).exists():
            out.update({s["id"]: s for s in load_structures(p)})
    return out


def band_reflectors(structure: dict, dmin: float = 0.5, min_intensity: float = 0.005) -> dict:
    """Reflector bands of a structure (one per plane normal) in the master
    patterns' crystal frame: ``normals`` (m, 3), ``d`` (Å), ``f2`` (|F|^2 /
    strongest), ``hkl``, strongest first."""
    key = (structure["id"], round(float(dmin), 4), float(min_intensity)) if "id" in structure else None
    if key is not None and key in _REFLECTOR_CACHE:
        return _REFLECTOR_CACHE[key]
    from kikuchipy_cnn.training.kinematical import reflectors
    from kikuchipy_cnn.training.master_patterns import _p1_cell

    if "space_group" in structure:
        params, atoms = _p1_cell(structure)
    else:
        params, atoms = structure["lattice"], structure["atoms"]
    hkl, nrm, (d, F) = reflectors({"lattice": params, "atoms": atoms}, dmin=dmin, min_intensity=min_intensity)
    f2 = np.abs(F) ** 2
    f2 = f2 / f2.max()
    g = np.gcd.reduce(np.abs(hkl), axis=1)
    prim = hkl // g[:, None]
    _, inv = np.unique(prim, axis=0, return_inverse=True)
    inv = inv.ravel()
    n_groups = inv.max() + 1
    gmax = np.zeros(n_groups)
    np.maximum.at(gmax, inv, f2)
    strong = f2 >= 0.25 * gmax[inv]
    dband = np.zeros(n_groups)
    np.maximum.at(dband, inv[strong], d[strong])
    first = np.full(n_groups, -1)
    for i in np.argsort(-f2)[::-1]:  # weakest first, so the strongest order wins
        first[inv[i]] = i
    order = np.argsort(-gmax, kind="stable")
    out = {
        "normals": nrm[first[order]],
        "d": dband[order],
        "f2": gmax[order],
        "hkl": prim[first[order]],
    }
    if key is not None:
        if len(_REFLECTOR_CACHE) > 256:
            _REFLECTOR_CACHE.clear()
        _REFLECTOR_CACHE[key] = out
    return out


_REFLECTOR_CACHE: dict = {}


def _visible_reflectors(refl: dict, T: np.ndarray, shape, pc) -> tuple[np.ndarray, np.ndarray]:
    """Detector-frame normals of the reflector bands and the visible mask."""
    nd = refl["normals"] @ T
    return nd, trace_visible(nd, shape, pc)


def _fill_truth(arrays, i, normals, valid, refl, nd, vis):
    idx_vis = np.flatnonzero(vis)
    ang, j = match_bands(normals, valid, nd[idx_vis])
    ok = j >= 0
    arrays["match_angle"][i] = ang
    arrays["match_d"][i, ok] = refl["d"][idx_vis[j[ok]]]
    arrays["match_f2"][i, ok] = refl["f2"][idx_vis[j[ok]]]
    # refl is ordered by f2, so the position among the visible ones is the rank
    arrays["match_rank"][i, ok] = j[ok]
    arrays["n_visible"][i] = len(idx_vis)


# ----------------------------------------------------------------------------
# (a) rendered


def render_patterns(masters, items: list[dict], rng) -> np.ndarray:
    """The ``(n, rows, columns)`` float32 patterns of items of one shape (see
    :func:`render_band_sets`): projected from their masters with the true
    pattern centre, then degraded (``rng`` draws the noise)."""
    from kikuchipy_cnn.training.projection import DetectorGeometry, detector_directions, project_many
    from kikuchipy_cnn.training.realism import degrade

    shape = tuple(items[0]["shape"])
    if not all(tuple(it["shape"]) == shape for it in items):
        raise ValueError("render_patterns needs items of one shape")
    stacks = masters.stacks()
    pats = np.empty((len(items), *shape), np.float32)
    for i, it in enumerate(items):
        g = DetectorGeometry(shape, *it["true_pc"], *it["tilts"])
        stack, pos = stacks[masters.masters[it["master"]].shape]
        p = project_many(stack, np.array([pos[it["master"]]]), np.asarray(it["quaternion"])[None],
                         detector_directions(g, shape), shape)
        if it["realism"] is not None:
            p = degrade(p, [it["realism"]], rng, binning=1.0)
        pats[i] = p[0]
    return pats


def render_band_sets(
    masters, structures: dict, items: list[dict], rng, n_bands: int = K
) -> dict:
    """Band sets of rendered patterns, one per item (all of one shape):
    ``{"master", "shape", "pc", "true_pc", "quaternion", "tilts",
    "realism" (dict or None)}``."""
    from kikuchipy_cnn.bands import detect_bands, electron_wavelength

    n = len(items)
    arrays = empty_arrays(n)
    if n == 0:
        return arrays
    shape = tuple(items[0]["shape"])
    pats = render_patterns(masters, items, rng)
    pcs = np.array([it["pc"] for it in items])
    b = detect_bands(pats, pcs, n_bands=n_bands)
    k = min(n_bands, K)
    arrays["normals"][:, :k] = b.normals[:, :k]
    arrays["strength"][:, :k] = b.strength[:, :k]
    arrays["width"][:, :k] = b.width[:, :k]
    arrays["contrast"][:, :k] = b.contrast[:, :k]
    arrays["valid"][:, :k] = b.valid[:, :k]
    arrays["normals"][~arrays["valid"]] = 0
    for i, it in enumerate(items):
        meta = masters.meta[it["master"]]
        s = structures[meta["id"]]
        energy = float(meta["energy_kev"])
        # de-ebsd masters store dmin in nm, kinematical ones in Å
        dmin = float(meta["dmin_nm"]) * 10 if "dmin_nm" in meta else float(meta.get("dmin_A", 0.5))
        arrays["wavelength"][i] = electron_wavelength(energy)
        arrays["energy"][i] = energy
        arrays["pc"][i] = it["pc"]
        arrays["true_pc"][i] = it["true_pc"]
        arrays["shape"][i] = shape
        arrays["label"][i] = JOINT_CLASSES.index(meta["joint_class"])
        arrays["structure_id"][i] = meta["id"]
        arrays["source"][i] = "rendered"
        arrays["quaternion"][i] = it["quaternion"]
        arrays["tilts"][i] = it["tilts"]
        arrays["dmin"][i] = dmin
        arrays["counts"][i] = it["realism"]["counts"] if it["realism"] is not None else 0.0
        refl = band_reflectors(s, dmin)
        T = crystal_to_detector(it["quaternion"], *it["tilts"])
        nd, vis = _visible_reflectors(refl, T, shape, it["true_pc"])
        _fill_truth(arrays, i, b.normals[i, :k], b.valid[i, :k], refl, nd, vis)
    return arrays


def _rendered_items(masters, n_per: int, rng, settings: dict) -> list[dict]:
    from kikuchipy_cnn.training.projection import random_quaternions
    from kikuchipy_cnn.training.realism import random_realism

    items = []
    for m in range(len(masters)):
        for _ in range(n_per):
            g = draw_geometry(rng)
            true_pc = np.array([g.pcx, g.pcy, g.pcz])
            perturb = rng.random() < settings["pc_fraction"]
            pc = _perturb_pc(true_pc, settings["sigma_pc"], rng) if perturb else true_pc
            realism = None if rng.random() < settings["clean_fraction"] else random_realism(rng)
            items.append({
                "master": m, "shape": g.shape, "true_pc": true_pc.tolist(), "pc": pc.tolist(),
                "tilts": [g.sample_tilt, g.tilt], "quaternion": random_quaternions(1, rng)[0].tolist(),
                "realism": realism,
            })  # fmt: skip
    return items


# ----------------------------------------------------------------------------
# error model


def _group_of_rank(r):
    return np.searchsorted(RANK_GROUPS, r, side="right") - 1


def _size_bin(shape) -> np.ndarray:
    return np.searchsorted(SIZE_BINS, np.min(np.atleast_2d(shape), axis=-1), side="right") - 1


def _quantiles(x) -> list | None:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return np.quantile(x, QUANTILES).round(6).tolist() if x.size >= 5 else None


def _two_theta(wavelength, d):
    return 2 * np.arcsin(np.clip(wavelength / (2 * d), 0, 1))


def _selection_ranks(refl_list, beta, sigma, n_sel, rng) -> np.ndarray:
    """Rank by f2 among the visible of each of the top-``n_sel`` by score."""
    out = np.full((len(refl_list), n_sel), -1)
    for i, (lf2, ld) in enumerate(refl_list):
        score = lf2 + beta * ld + sigma * rng.standard_normal(len(lf2))
        top = np.argsort(-score)[:n_sel]
        out[i, : len(top)] = top  # inputs are ordered by f2: index = rank
    return out


def fit_error_model(arrays: dict, structures: dict | None = None, seed: int = 0, max_patterns: int = 800) -> dict:
    """Fit the error model (see the module docstring) to band sets with truth
    (rendered, or any with the truth fields): patterns with the true PC only.
    With ``structures``, also fit the selection model (``beta``, ``sigma``)."""
    same_pc = np.all(np.abs(arrays["pc"] - arrays["true_pc"]) < 1e-6, axis=1)
    sel = np.flatnonzero(same_pc)
    if sel.size == 0:
        raise ValueError("no pattern with the true PC to fit the error model on")
    valid = arrays["valid"][sel]
    ang = np.degrees(arrays["match_angle"][sel].astype(np.float64))
    spur = valid & ~(ang <= SPURIOUS_DEG)
    real = valid & (ang <= SPURIOUS_DEG)
    shape = arrays["shape"][sel]
    tt = _two_theta(arrays["wavelength"][sel, None].astype(np.float64), arrays["match_d"][sel].astype(np.float64))
    px = 1.0 / (arrays["true_pc"][sel, 2:3].astype(np.float64) * shape[:, :1])
    resolvable = real & (tt >= MIN_WIDTH_PX * px)
    width = arrays["width"][sel].astype(np.float64)
    ratio = width / tt
    strength = arrays["strength"][sel].astype(np.float64)
    smax = np.array([np.nanmax(s[v]) if v.any() else np.nan for s, v in zip(strength, valid)])
    srel = strength / smax[:, None]
    contrast = arrays["contrast"][sel].astype(np.float64)
    rank = arrays["match_rank"][sel]
    bins = _size_bin(shape)
    ranks = np.arange(K)
    model = {
        "size_bins": list(SIZE_BINS), "rank_groups": list(RANK_GROUPS), "quantiles": list(QUANTILES),
        "spurious_deg": SPURIOUS_DEG, "min_width_px": MIN_WIDTH_PX, "n_patterns": int(sel.size),
        "bins": [],
    }  # fmt: skip
    for b in range(len(SIZE_BINS) - 1):
        pb = bins == b
        entry = {"n_patterns": int(pb.sum()), "strength_max": _quantiles(smax[pb]), "groups": []}
        for gi in range(len(RANK_GROUPS) - 1):
            cols = (ranks >= RANK_GROUPS[gi]) & (ranks < RANK_GROUPS[gi + 1])
            m = pb[:, None] & cols[None]
            v, s_, r_ = valid & m, spur & m, real & m
            res = resolvable & m
            sw = s_ & np.isfinite(width)
            entry["groups"].append({
                "ranks": [RANK_GROUPS[gi], RANK_GROUPS[gi + 1]],
                "n_bands": int(v.sum()),
                "found": float(v.sum() / max(m.sum(), 1)),
                "spurious": float(s_.sum() / max(v.sum(), 1)),
                "error_deg": _quantiles(ang[r_]),
                "within_1deg": float((ang[v] < 1).mean()) if v.any() else None,
                "width_measured": float(np.isfinite(width[res]).mean()) if res.any() else 0.0,
                "width_ratio": _quantiles(ratio[res]),
                "spurious_width_measured": float(sw.sum() / max(s_.sum(), 1)),
                "spurious_width_rad": _quantiles(width[sw]),
                "strength_rel": _quantiles(srel[v]),
                "contrast": _quantiles(contrast[v]),
                "match_rank_mean_log": float(np.mean(np.log1p(rank[r_]))) if r_.any() else None,
            })  # fmt: skip
        model["bins"].append(entry)
    model["selection"] = {"beta": 0.0, "sigma": 1.0, "fitted": False}
    if structures is not None:
        model["selection"] = _fit_selection(arrays, sel, real, rank, structures, seed, max_patterns)
    return model


def _fit_selection(arrays, sel, real, rank, structures, seed, max_patterns) -> dict:
    rng = np.random.default_rng(seed)
    pick = np.arange(len(sel)) if len(sel) <= max_patterns else np.sort(rng.choice(len(sel), max_patterns, replace=False))
    lists, meas = [], []
    for p in pick:
        i = sel[p]
        s = structures.get(str(arrays["structure_id"][i]))
        if s is None:
            continue
        refl = band_reflectors(s, float(arrays["dmin"][i]))
        T = crystal_to_detector(arrays["quaternion"][i], *arrays["tilts"][i])
        nd, vis = _visible_reflectors(refl, T, tuple(arrays["shape"][i]), arrays["true_pc"][i])
        lists.append((np.log(refl["f2"][vis]), np.log(refl["d"][vis])))
        meas.append(np.where(real[p], rank[p], -1))
    meas = np.array(meas)
    groups = [(RANK_GROUPS[g], RANK_GROUPS[g + 1]) for g in range(len(RANK_GROUPS) - 1)]

    def stat(r):
        out = []
        for a, b in groups:
            x = r[:, a:b]
            x = x[x >= 0]
            out.append(np.mean(np.log1p(x)) if x.size else np.nan)
        return np.array(out)

    target = stat(meas)
    best = None
    for beta in (0.0, 1.0, 2.0, 3.0, 4.0):
        for sigma in (0.0, 0.5, 1.0, 1.5, 2.0, 3.0):
            r = _selection_ranks(lists, beta, sigma, K, np.random.default_rng(seed + 1))
            loss = float(np.nansum((stat(r) - target) ** 2))
            if best is None or loss < best[0]:
                best = (loss, beta, sigma, stat(r))
    return {
        "beta": best[1], "sigma": best[2], "fitted": True, "loss": round(best[0], 5),
        "measured_mean_log1p_rank": np.round(target, 3).tolist(),
        "model_mean_log1p_rank": np.round(best[3], 3).tolist(), "n_patterns": len(lists),
    }  # fmt: skip


def _draw(q, rng, size=None):
    """Draw from stored quantiles (piecewise-linear inverse CDF)."""
    if q is None:
        return np.full(size if size is not None else (), np.nan)
    return np.interp(rng.random(size), QUANTILES, q)


def _random_visible_normal(shape, pc, rng, tries: int = 200) -> np.ndarray:
    v = rng.standard_normal((tries, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ok = trace_visible(v, shape, pc)
    return v[np.argmax(ok)] if ok.any() else v[0]


def _rotate_by(n, angle, rng):
    """Move unit vector ``n`` by ``angle`` (rad) in a random direction."""
    t = rng.standard_normal(3)
    t -= (t @ n) * n
    t /= np.linalg.norm(t)
    return np.cos(angle) * n + np.sin(angle) * t


# ----------------------------------------------------------------------------
# (b) from reflector lists


def reflector_band_sets(structures: list[dict], n_per: int, model: dict, rng, settings: dict) -> dict:
    """Band sets drawn from reflector lists with a fitted error model."""
    from kikuchipy_cnn.bands import electron_wavelength
    from kikuchipy_cnn.training.projection import random_quaternions

    n = len(structures) * n_per
    arrays = empty_arrays(n)
    beta, sigma = model["selection"]["beta"], model["selection"]["sigma"]
    i = 0
    for s in structures:
        dmin = float(rng.uniform(*settings["dmin_range"]))
        refl = band_reflectors(s, dmin)
        lf2, ld = np.log(refl["f2"]), np.log(refl["d"])
        for _ in range(n_per):
            g = draw_geometry(rng)
            shape = g.shape
            true_pc = np.array([g.pcx, g.pcy, g.pcz])
            perturb = rng.random() < settings["pc_fraction"]
            pc = _perturb_pc(true_pc, settings["sigma_pc"], rng) if perturb else true_pc
            energy = float(rng.uniform(*settings["energy_range"]))
            lam = electron_wavelength(energy)
            q = random_quaternions(1, rng)[0]
            T = crystal_to_detector(q, g.sample_tilt, g.tilt)
            nd, vis = _visible_reflectors(refl, T, shape, true_pc)
            bm = model["bins"][int(_size_bin(shape)[0])]
            px = 1.0 / (true_pc[2] * shape[0])
            iv = np.flatnonzero(vis)
            score = lf2[iv] + beta * ld[iv] + sigma * rng.standard_normal(iv.size)
            chosen = list(iv[np.argsort(-score)])
            normals = np.zeros((K, 3))
            width = np.full(K, np.nan)
            contrast = np.full(K, np.nan)
            valid = np.zeros(K, bool)
            srel = np.full(K, np.nan)
            for r in range(K):
                grp = bm["groups"][int(_group_of_rank(r))]
                if rng.random() >= grp["found"]:
                    continue
                if rng.random() < grp["spurious"] or not chosen:
                    nrm = _random_visible_normal(shape, true_pc, rng)
                    if rng.random() < grp["spurious_width_measured"]:
                        width[r] = _draw(grp["spurious_width_rad"], rng)
                else:
                    j = chosen.pop(0)
                    nrm = _rotate_by(nd[j], np.radians(_draw(grp["error_deg"], rng)), rng)
                    tt = _two_theta(lam, refl["d"][j])
                    if tt >= MIN_WIDTH_PX * px and rng.random() < grp["width_measured"]:
                        width[r] = tt * _draw(grp["width_ratio"], rng)
                normals[r] = nrm
                valid[r] = True
                srel[r] = _draw(grp["strength_rel"], rng)
                if np.isfinite(width[r]):
                    contrast[r] = _draw(grp["contrast"], rng)
            # strengths descend with rank, as the extractor reports them
            srel[valid] = np.sort(srel[valid])[::-1]
            if valid.any():
                srel[valid] /= srel[valid][0]
            smax = _draw(bm["strength_max"], rng)
            if perturb:
                normals[valid] = change_pc(normals[valid], shape, true_pc, pc)
            arrays["normals"][i] = normals
            arrays["strength"][i] = srel * smax
            arrays["width"][i] = width
            arrays["contrast"][i] = contrast
            arrays["valid"][i] = valid
            arrays["wavelength"][i] = lam
            arrays["energy"][i] = energy
            arrays["pc"][i] = pc
            arrays["true_pc"][i] = true_pc
            arrays["shape"][i] = shape
            arrays["label"][i] = JOINT_CLASSES.index(s["joint_class"])
            arrays["structure_id"][i] = s["id"]
            arrays["source"][i] = "reflectors"
            arrays["quaternion"][i] = q
            arrays["tilts"][i] = (g.sample_tilt, g.tilt)
            arrays["dmin"][i] = dmin
            _fill_truth(arrays, i, normals, valid, refl, nd, vis)
            i += 1
    return arrays


# ----------------------------------------------------------------------------
# driver


def default_settings(source: str) -> dict:
    common = {"k": K, "shapes": [list(s) for s in SHAPES], "shape_weights": list(SHAPE_WEIGHTS)}
    if source == "rendered":
        return {**common, "clean_fraction": 0.15, "pc_fraction": 0.0, "sigma_pc": 0.01,
                "realism": "kikuchipy_cnn.training.realism.random_realism, binning 1"}  # fmt: skip
    return {**common, "pc_fraction": 0.0, "sigma_pc": 0.01, "energy_range": [10.0, 30.0],
            "dmin_range": [0.5, 0.8]}  # fmt: skip


def _parts_dir(out, source, split) -> Path:
    return Path(out) / ".parts" / f"{source}_{split}"


def split_rng(seed: int, source: str, split: str, shard: int | None = None):
    """The generator of a split (``shard=None``: draws its items) or of one of
    its shards (draws the shard's degradation or band sets)."""
    key = [seed, {"rendered": 1, "reflectors": 2}[source], {"train": 0, "val": 1, "test": 2}[split]]
    return np.random.default_rng(key if shard is None else key + [1000 + shard])


def rendered_plan(masters, n_per: int, rng, settings: dict, shard_size: int = 400):
    """Items of a rendered split (:func:`render_band_sets`) and its shards:
    lists of item indices of one shape, in the order the band sets are stored."""
    items = _rendered_items(masters, n_per, rng, settings)
    order = sorted(range(len(items)), key=lambda j: (items[j]["shape"], j))
    shards = []
    for shp in sorted({tuple(it["shape"]) for it in items}):
        idx = [j for j in order if tuple(items[j]["shape"]) == shp]
        shards += [idx[a : a + shard_size] for a in range(0, len(idx), shard_size)]
    return items, shards


def generate(
    source: str, split: str, n_per: int, out, seed: int = 0, overwrite: bool = False,
    masters_dir=None, structures_file=None, error_model=None, limit: int | None = None,
    shard_size: int = 400, log=sys.stdout, **overrides,
) -> Path:
    """Generate the band sets of one (source, split) into ``out``; resumable
    (finished shards are kept until the split is complete)."""
    from kikuchipy_cnn.training.master_patterns import DEFAULT_CACHE, TRAINING_DATA

    if source not in SOURCES or split not in SPLITS:
        raise ValueError(f"source must be one of {SOURCES} and split one of {SPLITS}")
    out = Path(out)
    final = out / f"{source}_{split}.npz"
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} exists (use --overwrite)")
    settings = {**default_settings(source), **overrides}
    settings.update({"source": source, "split": split, "n_per": n_per, "seed": seed, "limit": limit})
    version = code_version()  # of the code that runs, read before it can change
    rng = split_rng(seed, source, split)
    if source == "rendered":
        structures = structure_index()
        from kikuchipy_cnn.training.projection import MasterSet

        masters_dir = masters_dir or DEFAULT_CACHE
        masters = MasterSet(masters_dir, split, limit=limit)
        settings["masters_dir"] = str(masters_dir)
        settings["n_masters"] = len(masters)
        items, shards = rendered_plan(masters, n_per, rng, settings, shard_size)
    else:
        from kikuchipy_cnn.training.structures import load_structures

        structures_file = structures_file or TRAINING_DATA / "structures_seed1.json"
        pool = load_structures(structures_file, split)[:limit]
        settings["structures_file"] = str(structures_file)
        settings["n_structures"] = len(pool)
        if error_model is None:
            error_model = out / "error_model.json"
        if isinstance(error_model, (str, Path)):
            settings["error_model_file"] = str(error_model)
            error_model = json.loads(Path(error_model).read_text())
        settings["error_model"] = error_model
        per = max(1, shard_size // n_per)
        shards = [list(range(a, min(a + per, len(pool)))) for a in range(0, len(pool), per)]
    parts = _parts_dir(out, source, split)
    parts.mkdir(parents=True, exist_ok=True)
    stamp = parts / "settings.json"
    key = json.dumps(settings, sort_keys=True, default=_json_default)
    if stamp.exists() and stamp.read_text() != key:
        if not overwrite:
            raise FileExistsError(f"{parts} holds shards of other settings (use --overwrite)")
        for f in parts.glob("part-*.npz"):
            f.unlink()
    stamp.write_text(key)
    t0 = time.time()
    for si, idx in enumerate(shards):
        path = parts / f"part-{si:04d}.npz"
        if path.exists():
            continue
        srng = split_rng(seed, source, split, si)
        t = time.time()
        if source == "rendered":
            arrays = render_band_sets(masters, structures, [items[j] for j in idx], srng)
        else:
            arrays = reflector_band_sets([pool[j] for j in idx], n_per, error_model, srng, settings)
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        n = len(arrays["normals"])
        desc = f"shape {tuple(arrays['shape'][0])}" if source == "rendered" and n else ""
        print(f"{source} {split} shard {si + 1}/{len(shards)} {desc} {n} band sets, "
              f"{(time.time() - t) / max(n, 1) * 1e3:.0f} ms each", file=log, flush=True)  # fmt: skip
    loaded = []
    for si in range(len(shards)):
        with np.load(parts / f"part-{si:04d}.npz") as f:
            loaded.append({k: f[k] for k in FIELDS})
    arrays = concat_arrays(loaded)
    elapsed = time.time() - t0
    settings.update({"code_version": version, "seconds_this_run": round(elapsed, 1),
                     "created": time.strftime("%Y-%m-%dT%H:%M:%S")})  # fmt: skip
    save_band_sets(final, arrays, settings, overwrite=overwrite)
    for f in parts.glob("*"):
        f.unlink()
    parts.rmdir()
    try:
        parts.parent.rmdir()
    except OSError:
        pass
    print(f"wrote {final} ({len(arrays['normals'])} band sets) in {elapsed:.0f} s", file=log, flush=True)
    return final


def summarize_error_model(model: dict) -> str:
    """Markdown table of the fitted error model."""
    lines = ["| px (shorter side) | ranks | bands | found | median err (deg) | within 1 deg "
             "| spurious (> 2 deg) | width measured | width/2theta_B median | IQR/median |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    edges = model["size_bins"]
    names = [f"{max(edges[i], 60)}-{edges[i + 1] - 1 if edges[i + 1] < 10_000 else 480}" for i in range(len(edges) - 1)]
    for name, b in zip(names, model["bins"]):
        for g in b["groups"]:
            e, w = g["error_deg"], g["width_ratio"]
            med = e[10] if e else float("nan")
            wr = f"{w[10]:.2f} | {(w[15] - w[5]) / w[10]:.2f}" if w else "- | -"
            lines.append(
                f"| {name} | {g['ranks'][0] + 1}-{g['ranks'][1]} | {g['n_bands']} | {g['found']:.2f} | {med:.2f} "
                f"| {g['within_1deg'] if g['within_1deg'] is None else round(g['within_1deg'], 2)} "
                f"| {g['spurious']:.2f} | {g['width_measured']:.2f} | {wr} |"
            )
    s = model.get("selection", {})
    lines.append(f"\nselection: beta {s.get('beta')}, sigma {s.get('sigma')}, "
                 f"measured mean ln(1+rank) {s.get('measured_mean_log1p_rank')}, "
                 f"model {s.get('model_mean_log1p_rank')}")  # fmt: skip
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", choices=SOURCES)
    p.add_argument("--split", choices=SPLITS, default="train")
    p.add_argument("--n", type=int, default=4, help="patterns per master (rendered) or per structure (reflectors)")
    p.add_argument("--out", default=None, help="default models/training-data/band-sets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--limit", type=int, default=None, help="first LIMIT masters / structures only")
    p.add_argument("--pc-fraction", type=float, default=None, help="fraction of patterns with a perturbed PC")
    p.add_argument("--sigma-pc", type=float, default=None)
    p.add_argument("--structures", default=None, help="reflectors: structure file (default structures_seed1.json)")
    p.add_argument("--error-model", default=None, help="reflectors: default <out>/error_model.json")
    p.add_argument("--fit-error-model", action="store_true",
                   help="fit <out>/error_model.json from <out>/rendered_train.npz (or --fit-from)")
    p.add_argument("--fit-from", nargs="+", default=None)
    p.add_argument("--masters-dir", default=None,
                   help="rendered: master-pattern folder with train/val/test subfolders "
                        "(default models/training-data/masters; e.g. kinematical masters)")
    args = p.parse_args(argv)
    from kikuchipy_cnn.training.master_patterns import TRAINING_DATA

    out = Path(args.out) if args.out else DEFAULT_OUT
    if args.fit_error_model:
        srcs = args.fit_from or [out / "rendered_train.npz"]
        arrays = concat_arrays([load_band_sets(s)[0] for s in srcs])
        t = time.time()
        model = fit_error_model(arrays, structure_index(), seed=args.seed)
        model.update({"fitted_on": [str(s) for s in srcs], "code_version": code_version(),
                      "seconds": round(time.time() - t, 1)})  # fmt: skip
        dest = out / "error_model.json"
        if dest.exists() and not args.overwrite:
            raise SystemExit(f"{dest} exists (use --overwrite)")
        tmp = dest.with_name(dest.stem + ".tmp.json")
        tmp.write_text(json.dumps(model, indent=1, default=_json_default))
        os.replace(tmp, dest)
        print(summarize_error_model(model))
        print(f"wrote {dest}")
        return
    if args.source is None:
        p.error("--source is required (or --fit-error-model)")
    overrides = {k: v for k, v in (("pc_fraction", args.pc_fraction), ("sigma_pc", args.sigma_pc)) if v is not None}
    generate(args.source, args.split, args.n, out, seed=args.seed, overwrite=args.overwrite, limit=args.limit,
             structures_file=args.structures, error_model=args.error_model, masters_dir=args.masters_dir,
             **overrides)


if __name__ == "__main__":
    main()
