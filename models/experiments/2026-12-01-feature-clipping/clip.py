"""Standardised band features far outside the training range (bundled kcnn-bands-mlp).

The band model's ONNX standardises its input with the training mean and standard
deviation, the latter floored at 1e-3 (``training.band_model.train``). Features that
never varied in training (``ladder_0.005_cF``, ``_cP``, ``_tI``: never on; ``geom_n_bands``:
always 1) therefore reach |z| = 1000 when a pattern differs. This measures how often
that happens on cached validation and held-out feature files, and what clipping the
standardised features to +-c (equivalently, feeding ``mu + clip(z, -c, c) * sd``)
would change: joint and crystal-system accuracy, and the joint log-loss.
Validation files first (where a clip would be chosen), then held-out ones (report).

    python models/experiments/2026-12-01-feature-clipping/clip.py
"""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from kikuchipy_cnn.features import feature_names
from kikuchipy_cnn.symmetry import JOINT_CLASSES, joint_class_info

MODEL = "models/kcnn-bands-mlp/model.onnx"
FILES = {
    "val": ["cache/band-features/rendered_val.features.npz", "cache/band-features/reflectors_val.features.npz",
            "cache/band-features-kin/rendered_val.features.npz"],
    "test": ["cache/band-features/rendered_test.features.npz", "cache/band-features/reflectors_test.features.npz",
             "cache/band-features-kin/rendered_test.features.npz",
             "cache/band-features-kinfine/rendered_test.features.npz",
             "cache/band-features-kincoarse/rendered_test.features.npz"],
}

init = {t.name: numpy_helper.to_array(t) for t in onnx.load(MODEL).graph.initializer}
mu, sd = init["mu"], init["sd"]
names = np.array(feature_names())
print("features with sd at the 1e-3 floor:", ", ".join(names[sd <= 1.0001e-3]))
sess = ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"])
inp = sess.get_inputs()[0].name
system = np.array([joint_class_info(c)["crystal_system"] for c in JOINT_CLASSES])
for split, files in FILES.items():
    print(f"\n{split}")
    for f in files:
        with np.load(f, allow_pickle=True) as z:
            x, y = z["features"].astype(np.float32), z["label"]
        zz = np.abs((x - mu) / sd).max(1)
        row = [f"{f.split('cache/')[1]} ({len(y)}): max|z| > 100 in {np.mean(zz > 100):.3f}, > 30 in {np.mean(zz > 30):.3f}"]
        for c in (None, 30, 10, 5):
            xx = x if c is None else (mu + np.clip((x - mu) / sd, -c, c) * sd).astype(np.float32)
            p = sess.run(None, {inp: xx})[0]
            top = p.argmax(1)
            nll = -np.log(np.maximum(p[np.arange(len(y)), y], 1e-12)).mean()
            row.append(f"clip {c}: joint {np.mean(top == y):.3f}, system {np.mean(system[top] == system[y]):.3f}, "
                       f"log-loss {nll:.3f}")
        print("  " + "\n    ".join(row))
