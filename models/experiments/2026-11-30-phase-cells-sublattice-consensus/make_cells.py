import os, sys, numpy as np
sys.path.insert(0, "benchmarks")
from phase_cells import true_primitive
from kikuchipy_cnn.bands import BandSet, pixel_angle
from kikuchipy_cnn.features import band_features
from kikuchipy_cnn.training.master_patterns import DEFAULT_CACHE
from kikuchipy_cnn.training.projection import MasterSet
d = dict(np.load("cache/bags/rendered/rendered_test.npz", allow_pickle=True))
meta = {m["id"]: m for m in MasterSet(DEFAULT_CACHE, "test").meta}
sid = d["structure_id"].astype(str)
bs = BandSet(d["normals"], d["strength"], d["width"], d["contrast"], d["valid"])
cells = np.full((len(sid), 3, 3), np.nan)
band_features(bs, d["wavelength"], pixel_angle(d["shape"], d["pc"]), cells=cells)
true = np.array([true_primitive(meta[s]["lattice"], meta[s]["space_group"]) for s in sid])
np.savez(os.path.join(os.path.dirname(os.path.abspath(__file__)), "cells.npz"), cells=cells, true=true, sid=sid, label=d["label"])
