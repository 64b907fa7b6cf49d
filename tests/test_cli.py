import subprocess
import sys

import kikuchipy as kp
import numpy as np
from orix import io

from kikuchipy_cnn.cli import main


def test_classify_file_to_h5_and_ang(tmp_path, tiny_model, capsys):
    s = kp.data.nickel_ebsd_small()
    src = tmp_path / "ni.h5"
    s.save(src)
    for ext in (".h5", ".ang"):
        out = tmp_path / f"map{ext}"
        rc = main(["classify", str(src), "-o", str(out), "--model", tiny_model, "--lazy",
                   "--min-score", "0"])
        assert rc == 0 and out.is_file()
        assert io.load(out).size == 9


def test_models_lists_and_prints_card(tiny_model, capsys):
    assert main(["models"]) == 0
    assert tiny_model in capsys.readouterr().out
    assert main(["models", tiny_model]) == 0
    out = capsys.readouterr().out
    assert "cF m-3m" in out and "Limitations" in out


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["classify", str(tmp_path / "missing.h5"), "-o", str(tmp_path / "x.h5")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kikuchipy-cnn: error:") and err.count("\n") == 1
    assert main(["models", "no-such-model"]) == 1
    assert "Registered models" in capsys.readouterr().err
    assert main(["classify", "in.h5", "-o", str(tmp_path / "x.txt")]) == 1
    assert ".h5 or .ang" in capsys.readouterr().err


def test_demo_runs_with_the_default_model():
    out = subprocess.run([sys.executable, "-m", "kikuchipy_cnn", "demo"],
                         capture_output=True, text=True, check=True).stdout
    assert "Phase map" in out and "Phase fractions" in out
    assert out.count("(") >= 9
