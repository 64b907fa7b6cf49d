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


def md5(path) -> str:
    import hashlib

    return hashlib.md5(open(path, "rb").read()).hexdigest()


def real_copies(tmp_path) -> list:
    """Copies of real pattern files: kikuchipy's Ni scan (saved by
    kikuchipy) and, where present, the shared EMsoft Ni file."""
    import shutil

    from conftest import SHARED_DATA

    s = kp.data.nickel_ebsd_small()
    copies = [tmp_path / "copy.h5"]
    s.save(copies[0])
    emsoft = SHARED_DATA / "kp_emsoft_ni_sim" / "EBSD_TEST_Ni.h5"
    if emsoft.is_file():
        copies.append(tmp_path / "emsoft_copy.h5")
        shutil.copyfile(emsoft, copies[-1])
    return copies


def test_classify_never_writes_over_its_input(tmp_path, tiny_model, capsys):
    import os

    (tmp_path / "sub").mkdir()
    for src in real_copies(tmp_path):
        before = md5(src)
        link = tmp_path / f"link-{src.name}"
        os.symlink(src, link)
        for out in (src, tmp_path / "sub" / ".." / src.name, link):
            for extra in ([], ["--lazy"], ["--overwrite"]):
                rc = main(["classify", str(src), "-o", str(out), "--model", tiny_model, *extra])
                err = capsys.readouterr().err
                assert rc == 1 and "is the input file" in err, (out, extra, err)
                assert md5(src) == before
        # the sidecar of an .ang is checked too
        os.symlink(src, tmp_path / "side.ang.h5")
        rc = main(["classify", str(src), "-o", str(tmp_path / "side.ang"), "--model",
                   tiny_model, "--overwrite"])
        assert rc == 1 and "is the input file" in capsys.readouterr().err
        (tmp_path / "side.ang.h5").unlink()
        assert md5(src) == before
        assert kp.load(src).data.shape == kp.load(link).data.shape


def test_classify_keeps_an_existing_output_unless_overwrite(tmp_path, tiny_model, capsys):
    src = real_copies(tmp_path)[0]
    for name in ("old.h5", "old.ang", "old2.ang.h5"):
        out = tmp_path / name
        out.write_text("earlier results")
        target = "old2.ang" if name == "old2.ang.h5" else name
        rc = main(["classify", str(src), "-o", str(tmp_path / target), "--model", tiny_model])
        err = capsys.readouterr().err
        assert rc == 1 and "exists" in err and "--overwrite" in err, err
        assert out.read_text() == "earlier results"
        rc = main(["classify", str(src), "-o", str(tmp_path / target), "--model", tiny_model,
                   "--overwrite", "-q"])
        assert rc == 0 and io.load(tmp_path / target).size == 9
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("old")) == [
        "old.ang", "old.ang.h5", "old.h5", "old2.ang", "old2.ang.h5"]


def test_classify_checks_the_output_folder_before_loading(tmp_path, tiny_model, capsys,
                                                          monkeypatch):
    src = real_copies(tmp_path)[0]

    def must_not_load(*args, **kwargs):
        raise AssertionError("loaded the patterns before checking the output")

    monkeypatch.setattr(kp, "load", must_not_load)
    out = tmp_path / "nodir" / "sub" / "out.h5"
    rc = main(["classify", str(src), "-o", str(out), "--model", tiny_model])
    captured = capsys.readouterr()
    assert rc == 1 and captured.out == ""
    assert "output folder" in captured.err and "does not exist" in captured.err
    assert "mkdir -p" in captured.err and "nodir" in captured.err
    assert not (tmp_path / "nodir").exists()


def test_classify_one_pattern_to_h5_and_ang(tmp_path, tiny_model, capsys):
    src = tmp_path / "one.h5"
    kp.data.nickel_ebsd_small().inav[1, 2].save(src)
    for min_score in ("0", "1"):  # classified, not classified
        for ext in (".h5", ".ang"):
            out = tmp_path / f"map{min_score}{ext}"
            rc = main(["classify", str(src), "-o", str(out), "--model", tiny_model,
                       "--min-score", min_score, "-q"])
            assert rc == 0, capsys.readouterr().err
            complete = out if ext == ".h5" else tmp_path / f"map{min_score}.ang.h5"
            xmap = io.load(complete)
            assert xmap.size == 1 and (xmap.phase_id[0] == -1) == (min_score == "1")
            assert np.isfinite(xmap.prop["scores"]).all()
            if ext == ".ang":
                row = np.loadtxt(out, ndmin=2)
                assert row.shape == (1, 10) and row[0, 7] == xmap.phase_id[0]


def test_help_describes_every_argument(capsys):
    import pytest

    from kikuchipy_cnn import cli

    parser = cli.build_parser()
    commands = [a for a in parser._actions if a.dest == "command"][0].choices
    assert set(commands) == {"demo", "models", "classify"}
    for name, sub in commands.items():
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        for action in sub._actions:
            if action.dest == "help":
                continue
            assert action.help and len(action.help) > 20, (name, action.dest)
            assert " ".join(action.help.split())[:40] in text, (name, action.dest)
    helps = {a.dest: a.help for a in commands["classify"]._actions}
    assert {"input", "output", "model", "min_score", "lazy", "overwrite", "quiet"} <= set(helps)
    assert "never modified" in helps["input"] and ".ang.h5" in helps["output"]


def test_progress_bar_only_when_asked(tmp_path, tiny_model, capsys):
    s = kp.data.nickel_ebsd_small()
    s.classify_structure(model=tiny_model, verbose=0)
    assert capsys.readouterr().out == ""  # verbose=0 prints nothing, no bar either
    s.classify_structure(model=tiny_model, verbose=0, show_progressbar=True)
    assert capsys.readouterr().out.count("100% Completed") == 1
    s.classify_structure(model=tiny_model, show_progressbar=False)
    assert "Completed" not in capsys.readouterr().out
    src = real_copies(tmp_path)[0]
    assert main(["classify", str(src), "-o", str(tmp_path / "q.h5"), "--model", tiny_model,
                 "-q"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["classify", str(src), "-o", str(tmp_path / "v.h5"), "--model", tiny_model]) == 0
    out = capsys.readouterr().out
    assert out.count("100% Completed") == 1 and "Wrote" in out


def test_classify_takes_the_geometry_for_band_models(tmp_path, tiny_band_card_path, register_plugin,
                                                     capsys):
    import warnings

    import pytest

    register_plugin([tiny_band_card_path])
    s = kp.signals.EBSD(kp.data.nickel_ebsd_small().data)  # kikuchipy's default detector, no energy
    src = tmp_path / "ni.h5"
    s.save(src)
    before = md5(src)
    with pytest.warns(UserWarning, match="command line: kikuchipy-cnn classify --pc"):
        assert main(["classify", str(src), "-o", str(tmp_path / "a.h5"), "--model", "tiny-bands",
                     "-q"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        # the tiny card has no pooling settings: that warning is not the geometry's
        warnings.filterwarnings("ignore", "Model 'tiny-bands' has no pooling settings", UserWarning)
        rc = main(["classify", str(src), "-o", str(tmp_path / "b.h5"), "--model", "tiny-bands", "-q",
                   "--pc", "0.421", "0.2206", "0.5049", "--beam-energy", "20"])
    assert rc == 0
    assert md5(src) == before  # the geometry is set on the loaded signal, not in the file
    assert not np.allclose(io.load(tmp_path / "a.h5").prop["scores"], io.load(tmp_path / "b.h5").prop["scores"])


def test_pc_option_takes_numbers_estimate_or_check():
    import pytest

    from kikuchipy_cnn.cli import build_parser, parse_pc

    assert parse_pc(None) is None
    assert parse_pc(["0.4", "0.2", "0.5"]) == (0.4, 0.2, 0.5)
    assert parse_pc(["estimate"]) == "estimate" and parse_pc(["check"]) == "check"
    for bad in (["estimated"], ["0.4", "0.2"], ["0.4", "x", "0.5"]):
        with pytest.raises(ValueError, match="--pc takes three numbers"):
            parse_pc(bad)
    args = build_parser().parse_args(["classify", "in.h5", "-o", "o.h5", "--pc", "estimate"])
    assert args.pc == ["estimate"]


def test_classify_estimates_the_pc(tmp_path, capsys):
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from pc_estimation import dynamical_ni

    truth = np.array([0.48, 0.27, 0.58])
    s = kp.signals.EBSD(dynamical_ni(6, 120, truth, np.random.default_rng(5)).reshape(2, 3, 120, 120))
    s.detector = kp.detectors.EBSDDetector(shape=(120, 120), pc=truth + [0.02, -0.015, 0.015], sample_tilt=70)
    s.metadata.set_item("Acquisition_instrument.SEM.beam_energy", 20.0)
    src = tmp_path / "scan.h5"
    s.save(src)
    assert main(["classify", str(src), "-o", str(tmp_path / "m.h5"), "--model", "kcnn-bands-mlp",
                 "--pc", "estimate"]) == 0
    assert "Pattern centre: (PCx, PCy, PCz) = (" in capsys.readouterr().out
    xmap = io.load(tmp_path / "m.h5")
    pc = np.column_stack([xmap.prop["pcx"], xmap.prop["pcy"], xmap.prop["pcz"]])
    assert pc.shape == (6, 3) and np.abs(pc - truth).max() <= 0.01
    # bad values fail before the file is read
    assert main(["classify", str(tmp_path / "absent.h5"), "-o", str(tmp_path / "n.h5"), "--pc", "est"]) == 1
    assert "--pc takes three numbers" in capsys.readouterr().err


def test_classify_pool_option(tmp_path, tiny_model, capsys):
    import kikuchipy as kp
    from orix import io

    src = tmp_path / "ni.h5"
    kp.data.nickel_ebsd_small().save(src)
    for pool in ("none", "phases"):
        out = tmp_path / f"{pool}.h5"
        assert main(["classify", str(src), "-o", str(out), "--model", tiny_model,
                     "--min-score", "0", "--pool", pool, "-q"]) == 0
        xmap = io.load(out)
        assert xmap.size == 9 and ("phase_index" in xmap.prop) == (pool == "phases")
    import pytest

    with pytest.raises(SystemExit):
        main(["classify", str(src), "-o", str(tmp_path / "x.h5"), "--pool", "grains"])
    assert "invalid choice: 'grains'" in capsys.readouterr().err


def test_default_classify_to_ang_reads_back_when_no_phase_reaches_min_score(tmp_path, capsys):
    # the default model and pool="phases" on kikuchipy's small Ni scan: its one
    # discovered phase is below the card's min_score, every pattern is -1
    src = tmp_path / "ni.h5"
    kp.data.nickel_ebsd_small().save(src)
    out = tmp_path / "phases.ang"
    assert main(["classify", str(src), "-o", str(out), "--quiet"]) == 0
    for path in (out, tmp_path / "phases.ang.h5"):
        assert io.load(path).size == 9
    # a min_score of 1 leaves every discovered phase below it
    out = tmp_path / "none_above.ang"
    assert main(["classify", str(src), "-o", str(out), "--quiet", "--min-score", "1"]) == 0
    assert (io.load(out).phase_id == -1).all() and "MaterialName" in out.read_text()


def test_pool_choices_are_the_pool_modes(monkeypatch, capsys):
    import pytest

    from kikuchipy_cnn import phases
    from kikuchipy_cnn.cli import build_parser

    def pool_action():
        classify = next(a for a in build_parser()._subparsers._group_actions[0].choices.values()
                        if any(x.dest == "pool" for x in a._actions))
        return next(a for a in classify._actions if a.dest == "pool")

    assert tuple(pool_action().choices) == phases.POOL_MODES
    monkeypatch.setattr(phases, "POOL_MODES", ("phases", "none", "grains"))
    assert tuple(pool_action().choices) == ("phases", "none", "grains")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["classify", "in.h5", "-o", "out.h5", "--pool", "grainz"])
    assert "choose from" in capsys.readouterr().err
