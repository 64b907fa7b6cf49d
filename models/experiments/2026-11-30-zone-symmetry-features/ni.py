import sys, numpy as np, kikuchipy as kp
sys.path.insert(0,'models/experiments/2026-11-30-zone-symmetry-features')
import zones
from kikuchipy_cnn.bands import detect_bands
from kikuchipy_cnn.preprocessing import static_background_divisor
s = kp.data.nickel_ebsd_small()
x = s.data.reshape(-1, 60, 60).astype(np.float32)
x /= static_background_divisor(s.static_background, x.shape[-2:])
pc = s.detector.pc.reshape(-1,3)
pc = np.repeat(pc, len(x), 0) if len(pc)==1 else pc
b = detect_bands(x, pc, n_bands=24)
names = zones.feature_names()
for i in range(len(x)):
    f = zones.pattern_zone_features(x[i], pc[i], b.normals[i], b.valid[i], b.strength[i])
    per = f[:zones.N_ZONES*7].reshape(zones.N_ZONES,7)
    print(i, " ".join(f"[{int(r[0]) if np.isfinite(r[0]) else 0} r2 {r[2]:.2f} r3 {r[3]:.2f} r4 {r[4]:.2f} r6 {r[5]:.2f} m {r[6]:.2f}]" for r in per[:4] if np.isfinite(r[0])))
