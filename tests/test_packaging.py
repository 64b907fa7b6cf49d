import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_contains_bundled_models(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path)],
        check=True,
    )
    (wheel,) = tmp_path.glob("kikuchipy_cnn-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    cards = sorted((ROOT / "models").glob("*/card.yaml"))
    assert cards, "no bundled model in models/"
    for card in cards:
        rel = card.parent.relative_to(ROOT / "models")
        for f in ("card.yaml", "model.onnx", "test_input.npy", "test_output.npy"):
            assert f"kikuchipy_cnn/_models/{rel.as_posix()}/{f}" in names, f
    assert any(n.endswith("entry_points.txt") for n in names)


def test_inference_never_imports_training_packages():
    code = (
        "import sys, kikuchipy as kp, kikuchipy_cnn\n"
        "s = kp.data.nickel_ebsd_small()\n"
        "s.classify_structure(verbose=0, show_progressbar=False)\n"
        "bad = [m for m in ('torch', 'onnx', 'pyxtal', 'spglib', 'de_ebsd', 'kikuchipy_cnn.training') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_warns_when_both_runtimes_installed(monkeypatch):
    from kikuchipy_cnn import _attach

    monkeypatch.setattr(_attach, "_installed", lambda name: True)
    monkeypatch.setattr(_attach, "_warned_both", False)
    with pytest.warns(RuntimeWarning, match="overwrite each other"):
        _attach.warn_if_both_runtimes()
    _attach.warn_if_both_runtimes()  # once only: no second warning
