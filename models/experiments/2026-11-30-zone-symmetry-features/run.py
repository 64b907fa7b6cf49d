"""Re-render the patterns of a stored rendered band-set file (same seed, same
draws) and compute their zone-symmetry features from the stored bands.

python run.py BANDSETS.npz MASTERS_DIR OUT.npz [--check]
"""
import json, sys, time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import zones  # noqa: E402
from kikuchipy_cnn.training import band_sets as BS  # noqa: E402
from kikuchipy_cnn.training.projection import MasterSet  # noqa: E402


def main(path, masters_dir, out, check=False):
    arrays, settings = BS.load_band_sets(path)
    split, seed, n_per = settings["split"], settings["seed"], settings["n_per"]
    masters = MasterSet(masters_dir, split, limit=settings.get("limit"))
    assert len(masters) == settings["n_masters"], (len(masters), settings["n_masters"])
    items, shards = BS.rendered_plan(masters, n_per, BS.split_rng(seed, "rendered", split), settings)
    feats = np.full((len(arrays["normals"]), len(zones.feature_names())), np.nan)
    pos, t0 = 0, time.time()
    for si, idx in enumerate(shards):
        its = [items[j] for j in idx]
        pats = BS.render_patterns(masters, its, BS.split_rng(seed, "rendered", split, si))
        q = np.array([it["quaternion"] for it in its])
        assert np.allclose(q, arrays["quaternion"][pos: pos + len(its)]), "draws differ from the stored set"
        if check and si == 0:
            from kikuchipy_cnn.bands import detect_bands
            b = detect_bands(pats[:20], np.array([it["pc"] for it in its[:20]]), n_bands=BS.K)
            d = np.abs(np.abs((b.normals * arrays["normals"][pos: pos + 20]).sum(-1)) - 1).max()
            print("re-detected normals differ by at most", d, flush=True)
        for i, it in enumerate(its):
            g = pos + i
            feats[g] = zones.pattern_zone_features(pats[i], it["pc"], arrays["normals"][g], arrays["valid"][g],
                                                   arrays["strength"][g])
        pos += len(its)
        print(f"shard {si + 1}/{len(shards)} {pats.shape} {pos}/{len(feats)} {time.time() - t0:.0f} s", flush=True)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, zone=feats, names=np.array(zones.feature_names()), label=arrays["label"],
             structure_id=arrays["structure_id"], shape=arrays["shape"])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], "--check" in sys.argv)
