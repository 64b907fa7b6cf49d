"""Project cached master patterns onto random detectors at orientations
uniform in SO(3).

The projection is kikuchipy's own (the Numba kernels behind
:meth:`kikuchipy.signals.EBSDMasterPattern.get_patterns`), called directly so
that many orientations share one detector without dask overhead. Detector
geometry uses kikuchipy's Bruker PC convention.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kikuchipy_cnn.symmetry import JOINT_CLASSES

__all__ = [
    "DetectorGeometry",
    "MasterSet",
    "detector_directions",
    "project",
    "random_geometry",
    "random_quaternions",
]

#: Patterns are rendered at most this many pixels along the shorter side;
#: bigger detectors are rendered coarser with the same geometry, and the
#: realism parameters are scaled to the native pixel size (see realism.py)
MAX_RENDER = 96


@dataclass(frozen=True)
class DetectorGeometry:
    """One detector: shape (rows, cols), Bruker PC, tilts in degrees."""

    shape: tuple
    pcx: float
    pcy: float
    pcz: float
    sample_tilt: float
    tilt: float

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def render_shape(self) -> tuple:
        """Shape the pattern is rendered at (at most MAX_RENDER on the
        shorter side)."""
        rows, cols = self.shape
        f = max(1.0, min(rows, cols) / MAX_RENDER)
        return (max(2, int(round(rows / f))), max(2, int(round(cols / f))))

    @property
    def binning(self) -> float:
        """Native pixels per rendered pixel along one axis."""
        return self.shape[0] / self.render_shape[0]


def random_geometry(rng: np.random.Generator) -> DetectorGeometry:
    """Draw a random detector: 60-240 px per side (rectangular in half of
    the draws), PCx 0.35-0.65, PCy 0.2-0.6, PCz 0.45-0.8, sample tilt 65-75
    degrees, detector tilt 0-10 degrees."""
    rows = int(rng.integers(60, 241))
    if rng.random() < 0.5:
        cols = rows
    else:
        cols = int(np.clip(round(rows * rng.choice([4 / 3, 5 / 4, 3 / 2, 3 / 4])), 60, 320))
    return DetectorGeometry(
        shape=(rows, cols),
        pcx=float(rng.uniform(0.35, 0.65)),
        pcy=float(rng.uniform(0.2, 0.6)),
        pcz=float(rng.uniform(0.45, 0.8)),
        sample_tilt=float(rng.uniform(65, 75)),
        tilt=float(rng.uniform(0, 10)),
    )


def detector_directions(geometry: DetectorGeometry, shape: tuple | None = None) -> np.ndarray:
    """Unit vectors (rows * cols, 3) from the source point to every detector
    pixel, in the sample frame (kikuchipy's convention)."""
    from kikuchipy.detectors import EBSDDetector
    from kikuchipy.signals.util._master_pattern import (
        _get_direction_cosines_from_detector,
    )

    shape = shape or geometry.render_shape
    det = EBSDDetector(
        shape=tuple(shape),
        pc=(geometry.pcx, geometry.pcy, geometry.pcz),
        convention="bruker",
        tilt=geometry.tilt,
        sample_tilt=geometry.sample_tilt,
    )
    return np.ascontiguousarray(_get_direction_cosines_from_detector(det))


def random_quaternions(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit quaternions (n, 4), (a, b, c, d) = (w, x, y, z), uniform in SO(3)
    with a >= 0."""
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q *= np.where(q[:, :1] < 0, -1, 1)
    return q


def project(
    master: np.ndarray, quaternions: np.ndarray, directions: np.ndarray, shape: tuple
) -> np.ndarray:
    """Project one square Lambert master pattern (2, n, n) (north first) at
    the given orientations (kikuchipy's convention: crystal to sample), to
    patterns of ``shape``, float32."""
    from kikuchipy.signals.util._master_pattern import (
        _project_patterns_from_master_pattern_with_fixed_pc,
    )

    upper = np.ascontiguousarray(master[0], dtype=np.float64)
    lower = np.ascontiguousarray(master[1], dtype=np.float64)
    npx = upper.shape[1]
    npy = upper.shape[0]
    out = _project_patterns_from_master_pattern_with_fixed_pc(
        rotations=np.ascontiguousarray(quaternions, dtype=np.float64),
        direction_cosines=directions,
        master_upper=upper,
        master_lower=lower,
        npx=int(npx),
        npy=int(npy),
        scale=float((npx - 1) / 2),
        rescale=False,
        out_min=0.0,
        out_max=1.0,
        dtype_out=np.float32,
    )
    return out.reshape((-1, *shape))


class MasterSet:
    """Cached master patterns of one split, all in memory.

    Parameters
    ----------
    directory
        Cache directory (the one written by
        ``python -m kikuchipy_cnn.training.master_patterns``).
    split
        ``"train"``, ``"val"`` or ``"test"``.
    limit
        Load at most this many (for tests).

    Attributes
    ----------
    masters
        List of float64 arrays (2, n, n).
    labels
        Joint class index per master, int64.
    meta
        Metadata dictionary per master.
    """

    def __init__(self, directory, split: str = "train", limit: int | None = None):
        from kikuchipy_cnn.training.master_patterns import load_master

        files = sorted(Path(directory, split).glob("*.npz"))
        files = [f for f in files if not f.name.endswith(".tmp.npz")][:limit]
        self.masters, self.meta = [], []
        for f in files:
            data, meta = load_master(f)
            # normalise each master to mean 1: realism sets the contrast
            data = data / max(float(data.mean()), 1e-12)
            self.masters.append(np.ascontiguousarray(data, dtype=np.float64))
            self.meta.append(meta)
        self.labels = np.array(
            [JOINT_CLASSES.index(m["joint_class"]) for m in self.meta], dtype=np.int64
        )
        self.split = split

    @classmethod
    def from_arrays(cls, masters, labels, meta=None, split="train") -> "MasterSet":
        """Build a set from arrays (2, n, n) and joint class indices."""
        obj = cls.__new__(cls)
        obj.masters = [np.ascontiguousarray(m, dtype=np.float64) for m in masters]
        obj.labels = np.asarray(labels, dtype=np.int64)
        obj.meta = meta or [{"id": f"m{i}"} for i in range(len(obj.masters))]
        obj.split = split
        return obj

    def __len__(self) -> int:
        return len(self.masters)

    def class_counts(self) -> dict:
        """Number of masters per joint class."""
        return {jc: int((self.labels == i).sum()) for i, jc in enumerate(JOINT_CLASSES)}

    def sample_indices(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw master indices with every present class equally likely."""
        present = np.unique(self.labels)
        classes = rng.choice(present, size=n)
        idx = np.empty(n, dtype=np.int64)
        for c in present:
            sel = classes == c
            pool = np.flatnonzero(self.labels == c)
            idx[sel] = rng.choice(pool, size=int(sel.sum()))
        return idx
