"""Write crystal maps without losing or garbling anything.

Every function of kikuchipy-cnn that writes a file goes through
:func:`save_crystal_map`, which

* refuses to write over an input (the patterns being classified) and, unless
  asked to, over any existing file;
* checks that the output folder exists and is writable *before* the work,
  with :func:`check_output`;
* writes through a temporary file in the same folder that is renamed into
  place, so an interrupted run leaves no half-written file;
* writes formats that :func:`orix.io.load` reads back with the same phase
  names, phase ids and properties (working around orix's readers where
  needed).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from orix.crystal_map import CrystalMap

__all__ = ["SUFFIXES", "check_output", "output_paths", "save_crystal_map", "sidecar_path"]

#: Output file suffixes and their formats
SUFFIXES = {".h5": "hdf5", ".hdf5": "hdf5", ".ang": "ang"}


def sidecar_path(path: str | Path) -> Path:
    """Return the complete-map file written beside an ``.ang`` file:
    ``"map.ang"`` → ``"map.ang.h5"`` (orix HDF5).

    An ``.ang`` file holds phase ids and names, the top class probability
    (as confidence index) and the scan grid, but not the class
    probabilities, the other scores, the phases' space groups and colours,
    which points were masked, or the scan unit; the sidecar holds all of
    them.
    """
    path = Path(path)
    return path.with_name(path.name + ".h5")


def output_paths(path: str | Path) -> list[Path]:
    """Return every file :func:`save_crystal_map` writes for ``path``: the
    file itself, and for ``.ang`` its sidecar (:func:`sidecar_path`)."""
    path = Path(path)
    if _format(path) == "ang":
        return [path, sidecar_path(path)]
    return [path]


def check_output(
    path: str | Path, overwrite: bool = False, inputs: Iterable[str | Path] = ()
) -> Path:
    """Check that a crystal map can be written to ``path``, before any work.

    Parameters
    ----------
    path
        Output file ending in ``.h5``, ``.hdf5`` or ``.ang``.
    overwrite
        Whether an existing output file may be replaced. Inputs are never
        replaced.
    inputs
        Files that must not be written to (e.g. the patterns being
        classified), compared by resolved path and, where they exist, with
        :func:`os.path.samefile` (symbolic and hard links).

    Returns
    -------
    path
        The output path.

    Raises
    ------
    ValueError
        If the suffix is not supported, or an output file is an input.
    FileExistsError
        If an output file exists and ``overwrite`` is False.
    FileNotFoundError
        If the output folder does not exist.
    PermissionError
        If the output folder is not writable.
    IsADirectoryError
        If the output path is a folder.
    """
    path = Path(path)
    _format(path)
    inputs = [Path(p) for p in inputs]
    for p in output_paths(path):
        for inp in inputs:
            if _same_file(p, inp):
                raise ValueError(
                    f"The output {str(p)!r} is the input file {str(inp)!r}: writing it "
                    "would destroy the input. Choose another output path"
                )
        if p.is_dir():
            raise IsADirectoryError(
                f"The output {str(p)!r} is a folder: give a file name, e.g. "
                f"{str(p / ('map' + path.suffix))!r}"
            )
        if p.exists() and not overwrite:
            raise FileExistsError(
                f"The output file {str(p)!r} exists: choose another output path, or "
                "pass overwrite=True (--overwrite on the command line) to replace it"
            )
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(
            f"The output folder {str(folder)!r} does not exist: create it first "
            f"(e.g. mkdir -p {str(folder)!r}) or choose an output path in an existing folder"
        )
    if not os.access(folder, os.W_OK | os.X_OK) or not _can_create_in(folder):
        raise PermissionError(
            f"Cannot write to the output folder {str(folder)!r}: choose a folder you "
            "have write permission for"
        )
    return path


def save_crystal_map(
    xmap: CrystalMap,
    path: str | Path,
    overwrite: bool = False,
    inputs: Iterable[str | Path] = (),
) -> list[Path]:
    """Write a crystal map to an orix HDF5 (``.h5``, ``.hdf5``) or EDAX TSL
    (``.ang``) file that :func:`orix.io.load` reads back unchanged.

    The paths are checked first as in :func:`check_output`. Each file is
    written to a temporary file in the output folder and renamed into place
    (:func:`os.replace`), so an interrupted write leaves any previous file
    as it was and no partial file behind.

    Parameters
    ----------
    xmap
        Crystal map, e.g. from :func:`~kikuchipy_cnn.classify_structure`,
        of any size (a single pattern included) and with any phase ids.
    path
        Output file. ``.h5``/``.hdf5`` holds the complete map: phases
        (names, ids, space and point groups, colours), phase ids, every
        property (class probabilities, scores), masked points and the scan
        grid. ``.ang`` holds the phase ids and names as they are in the map
        (not renumbered from 1), the ``"scores"`` property as confidence
        index (-1 where not classified) and the scan grid; the complete map
        is written beside it to :func:`sidecar_path` (``map.ang.h5``).
        Masked points are written to ``.ang`` as not classified.
    overwrite
        Whether existing output files may be replaced (default False).
    inputs
        Files never to write to, e.g. the patterns the map was made from.

    Returns
    -------
    paths
        The files written.

    Examples
    --------
    >>> import kikuchipy as kp
    >>> import kikuchipy_cnn
    >>> from kikuchipy_cnn.io import save_crystal_map
    >>> s = kp.data.nickel_ebsd_small()
    >>> xmap = s.classify_structure(verbose=0, show_progressbar=False)
    >>> save_crystal_map(xmap, "phases.ang")  # doctest: +SKIP
    [PosixPath('phases.ang'), PosixPath('phases.ang.h5')]
    """
    if not isinstance(xmap, CrystalMap):
        raise TypeError(f"xmap must be an orix CrystalMap, not {type(xmap).__name__}")
    path = check_output(path, overwrite, inputs)
    paths = output_paths(path)
    writers = [_write_h5] if _format(path) == "hdf5" else [_write_ang, _write_h5]
    temporary = [_temporary_path(p) for p in paths]
    try:
        for writer, tmp, final in zip(writers, temporary, paths):
            writer(xmap, tmp, final)
        for tmp, p in zip(temporary, paths):
            os.replace(tmp, p)
    finally:  # also on KeyboardInterrupt: no partial file is left
        for tmp in temporary:
            if tmp.exists():
                tmp.unlink()
    return paths


def _format(path: Path) -> str:
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"Output must end in .h5 or .ang (or .hdf5), not {path.name!r}: .h5 keeps "
            "the complete map, .ang is read by EDAX OIM and MTEX"
        )
    return fmt


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _can_create_in(folder: Path) -> bool:
    probe = _temporary_path(folder / "write-check")
    try:
        probe.touch(exist_ok=False)
    except OSError:
        return False
    probe.unlink()
    return True


def _temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.partial")


def _write_h5(xmap: CrystalMap, filename: Path, final: Path | None = None):
    """orix's HDF5 writer, except that a one-point map is stored so that
    orix reads it back (its reader turns length-1 datasets into scalars,
    which then fail in ``CrystalMap()``)."""
    from h5py import File
    from orix import __version__
    from orix.io.plugins.orix_hdf5 import crystalmap2dict, dict2hdf5group

    content = crystalmap2dict(xmap)
    if xmap.is_in_data.size == 1:
        data = content["data"]
        for key, value in data.items():
            if isinstance(value, np.ndarray) and value.shape == (1,):
                data[key] = value.reshape(1, 1)  # read back as shape (1,)
    with File(filename, mode="w") as f:
        dict2hdf5group(
            {"manufacturer": "orix", "version": __version__, "crystal_map": content}, f["/"]
        )


def _write_ang(xmap: CrystalMap, filename: Path, final: Path | None = None):
    """Write the EDAX TSL columns of a crystal map of any shape.

    Unlike orix's writer (which fails on one-point and 1-D maps, renumbers
    phases from 1, and writes names that orix's reader replaces with
    formula-based ones), phases keep their ids and names; the file reads
    back with :func:`orix.io.load` (for two points or more: orix's reader
    cannot read a one-row file, whose complete map is in the sidecar).
    ``final`` is the name the file will have (``filename`` may be
    temporary).
    """
    from orix.crystal_map import create_coordinate_arrays
    from orix.quaternion.symmetry import _EDAX_POINT_GROUP_ALIASES

    import kikuchipy_cnn

    shape = tuple(xmap.shape)
    nrows, ncols = (1, 1) if not shape else (1, shape[0]) if len(shape) == 1 else shape[-2:]
    dy = _step(xmap.dy) if len(shape) == 2 else 1.0
    dx = _step(xmap.dx)
    n = nrows * ncols
    in_data = np.asarray(xmap.is_in_data).ravel()
    if in_data.size != n:
        raise ValueError(
            f"Cannot write a map of shape {shape} with {in_data.size} points to .ang: "
            "save it as .h5"
        )

    def full(values, fill):
        out = np.full(n, fill, dtype=float)
        out[in_data] = np.asarray(values, dtype=float).reshape(-1)
        return out

    phase_id = full(xmap.phase_id, -1).astype(int)
    classified = phase_id >= 0
    rotations = xmap.rotations
    if rotations.ndim > 1:  # several rotations per point: the best
        rotations = rotations[:, 0]
    eulers = np.stack([full(e, 0) for e in rotations.to_euler().T], axis=1)
    eulers[~classified] = 4 * np.pi  # TSL's not-indexed convention
    scores = full(xmap.prop["scores"], np.nan) if "scores" in xmap.prop else np.ones(n)
    ci = np.where(classified, np.nan_to_num(scores), -1)  # orix reads -1 as not indexed
    fit = np.where(classified, 0, 180)
    zeros = np.zeros(n)
    coords, _ = create_coordinate_arrays((nrows, ncols), (dy, dx))
    x, y = coords["x"], coords["y"]

    lines = [
        "TEM_PIXperUM           1.000000",
        "x-star                 0.000000",
        "y-star                 0.000000",
        "z-star                 0.000000",
        "WorkingDistance        0.000000",
        "",
    ]
    for pid, phase in reversed(list(xmap.phases)):  # TSL lists phases last first
        if pid == -1:
            continue
        symmetry = "1"
        if phase.point_group is not None:
            symmetry = phase.point_group.proper_subgroup.name
            symmetry = _EDAX_POINT_GROUP_ALIASES.get(symmetry, [symmetry])[0]
        abc = " ".join(f"{float(v):.3f}" for v in phase.structure.lattice.abcABG())
        lines += [
            f"Phase {pid}",
            f"MaterialName    {phase.name or f'phase{pid}'}",
            # Left empty: orix renames phases after the formulas if every
            # phase has one
            "Formula",
            "Info",
            f"Symmetry    {symmetry}",
            f"LatticeConstants    {abc}",
            "NumberFamilies    0",
        ]
    lines += [
        "GRID: SqrGrid",
        f"XSTEP: {dx:.6f}",
        f"YSTEP: {dy:.6f}",
        f"NCOLS_ODD: {ncols}",
        f"NCOLS_EVEN: {ncols}",
        f"NROWS: {nrows}",
        "",
        f"OPERATOR: kikuchipy-cnn {kikuchipy_cnn.__version__}",
        "",
        "SAMPLEID:",
        "",
        "SCANID:",
        "",
        "kikuchipy-cnn: complete map (class probabilities) in "
        f"{sidecar_path(final or filename).name}",
        # orix recognises its own column layout by this line
        "Column names: phi1, Phi, phi2, x, y, image_quality, confidence_index, phase_id, "
        "detector_signal, pattern_fit",
    ]
    xw = len(str(int(np.max(x)))) + 7
    yw = len(str(int(np.max(y)))) + 7
    np.savetxt(
        filename,
        np.column_stack([eulers, x, y, zeros, ci, phase_id, zeros, fit]),
        fmt=f"%8.5f  %8.5f  %8.5f  %{xw}.5f  %{yw}.5f  %.5f  %8.5f  %2i  %.5f  %.5f",
        header="\n".join(lines),
        encoding="utf-8",
    )


def _step(value) -> float:
    value = float(value) if value is not None else 0.0
    return value if np.isfinite(value) and value > 0 else 1.0
