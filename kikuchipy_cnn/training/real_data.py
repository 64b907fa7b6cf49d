"""Load the real validation patterns of ``../shared/data`` listed in
``cases.tsv``, with their labels. For validation only, never training."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Case", "default_shared_data", "load_cases", "load_pattern_file"]


@dataclass
class Case:
    """One file of real patterns and its labels."""

    path: Path
    signal: object  # kikuchipy EBSD
    phase: str
    crystal_system: str
    bravais_lattice: str
    laue_class: str
    kind: str
    #: pattern-centre confidence from ``detectors.tsv`` ("exact", "approximate"),
    #: None where the file's geometry is unknown (the signal then keeps its own)
    geometry: str | None = None

    @property
    def joint_class(self) -> str:
        return f"{self.bravais_lattice} {self.laue_class}"


def default_shared_data() -> Path:
    """``../shared/data`` beside the repository root."""
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def load_pattern_file(path: str | Path, invert: bool = False):
    """Load one pattern file (kikuchipy format, TIFF or PNG) as an EBSD
    signal; ``invert`` for images stored WhiteIsZero."""
    import kikuchipy as kp

    path = Path(path)
    if path.suffix in (".h5", ".hdf5"):
        return kp.load(path)
    if path.suffix in (".tif", ".tiff"):
        import tifffile

        a = tifffile.imread(path)
    else:
        from PIL import Image

        im = Image.open(path)
        a = np.asarray(im) if im.mode.startswith("I") else np.asarray(im.convert("L"))
    if a.ndim == 3:
        a = a[..., :3].mean(-1).astype(np.uint8)
    if invert:
        a = np.iinfo(a.dtype).max - a
    return kp.signals.EBSD(a)


#: Beam energy (kV) per ``cases.tsv`` glob, from MANIFEST.md and the files'
#: sources; globs not listed have no known energy
BEAM_ENERGY_KV = {
    "kpdata_si_moving_screen/si_*.h5": 20.0,
    "pyebsdindex_al_sim/al_sim_20kv.png": 20.0,
    "kp_emsoft_ni_sim/EBSD_TEST_Ni.h5": 20.0,
    "epang_fe_bcc_sim/Fe_bcc_*_8x8_*.png": 20.0,
    "epang_fe_bcc_sim/Fe_bcc_*_4x4_*.png": 20.0,
    "epang_fe_bcc_sim/Fe_bcc_*_1x1_*.png": 20.0,
}


def _geometry_rows(data_dir: Path) -> list[dict]:
    table = data_dir / "detectors.tsv"
    if not table.is_file():
        return []
    with open(table, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def attach_geometry(signal, rel_path: str, rows: list[dict], energy_kv: float | None) -> str | None:
    """Give ``signal`` the detector of ``detectors.tsv`` (Bruker PC, tilts) for
    the file at ``rel_path`` and the beam energy; return the PC confidence, or
    None when the table does not list the file (the signal is left as is)."""
    import fnmatch

    import kikuchipy as kp

    if energy_kv is not None:
        signal.metadata.set_item("Acquisition_instrument.SEM.beam_energy", float(energy_kv))
    for r in rows:
        if fnmatch.fnmatch(rel_path, r["glob"]):
            shape = tuple(signal.axes_manager.signal_shape[::-1])
            signal.detector = kp.detectors.EBSDDetector(
                shape=shape, pc=(float(r["pc_x"]), float(r["pc_y"]), float(r["pc_z"])),
                tilt=float(r["tilt"]), sample_tilt=float(r["sample_tilt"]),
            )
            return r["confidence"]
    return None


def load_cases(data_dir: str | Path | None = None) -> list[Case]:
    """Load every file matched by ``cases.tsv``.

    Parameters
    ----------
    data_dir
        Folder with ``cases.tsv``; by default ``../shared/data``.

    Returns
    -------
    cases
        One :class:`Case` per file, in ``cases.tsv`` order then file name
        order.
    """
    data_dir = Path(data_dir) if data_dir is not None else default_shared_data()
    table = data_dir / "cases.tsv"
    if not table.is_file():
        raise FileNotFoundError(f"{table} not found: the shared validation data is absent")
    cases = []
    geometry = _geometry_rows(data_dir)
    with open(table, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            files = sorted(data_dir.glob(row["glob"]))
            if not files:
                raise FileNotFoundError(f"No file matches {row['glob']!r} in {data_dir}")
            for p in files:
                signal = load_pattern_file(p, invert=row["invert"] == "1")
                conf = attach_geometry(signal, p.relative_to(data_dir).as_posix(), geometry,
                                       BEAM_ENERGY_KV.get(row["glob"]))
                cases.append(
                    Case(
                        path=p,
                        signal=signal,
                        phase=row["phase"],
                        crystal_system=row["system"],
                        bravais_lattice=row["bravais"],
                        laue_class=row["laue"],
                        kind=row["kind"],
                        geometry=conf,
                    )
                )
    return cases
