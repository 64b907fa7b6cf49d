"""The ``kikuchipy-cnn`` command (also ``python -m kikuchipy_cnn``)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def format_map(xmap, nav_shape: tuple[int, ...]) -> str:
    """Return a text table of a 0-2-D phase map: class and top probability
    per pattern, then phase fractions with mean scores."""
    import numpy as np

    from kikuchipy_cnn.crystal_map import labels

    lab = labels(xmap)["joint"]
    names = np.full(xmap.size, "not classified", dtype=object)
    ids = xmap.phase_id
    for i in np.unique(ids[ids >= 0]):
        names[ids == i] = xmap.phases[int(i)].name
    scores = xmap.scores
    cells = [
        f"{n} ({s:.2f})" if n != "not classified" else f"- ({l}, {s:.2f})"
        for n, l, s in zip(names, lab, scores)
    ]
    rows = nav_shape[0] if len(nav_shape) == 2 else 1
    width = max(len(c) for c in cells)
    per_row = len(cells) // rows
    lines = ["Phase map (class, top probability):"]
    for r in range(rows):
        lines.append("  " + "  ".join(c.ljust(width) for c in cells[r * per_row : (r + 1) * per_row]))
    from kikuchipy_cnn.plotting import format_summary, summary

    lines.append("Phase fractions:")
    lines.append(format_summary(summary(xmap)))
    lines.append("Crystal systems:")
    lines.append(format_summary(summary(xmap, "crystal_system")))
    return "\n".join(lines)


def _demo(args):
    import kikuchipy as kp

    import kikuchipy_cnn

    s = kp.data.nickel_ebsd_small()
    print(
        "kikuchipy's 9 experimental Ni patterns (60x60, raw, fcc Ni: cF m-3m), "
        f"model {args.model or kikuchipy_cnn.DEFAULT_MODEL!r}"
    )
    xmap = s.classify_structure(model=args.model, min_score=args.min_score)
    print(xmap)
    print(format_map(xmap, s.axes_manager.navigation_shape[::-1]))
    return 0


def _models(args):
    from kikuchipy_cnn.registry import get_model, list_models, model_source

    if args.name:
        print(get_model(args.name).summary())
        return 0
    for name in list_models():
        card = get_model(name)
        print(f"{name} {card.version}  ({model_source(name)})  {len(card.classes)} classes")
    return 0


def _classify(args):
    import kikuchipy as kp
    from kikuchipy.signals import EBSD

    import kikuchipy_cnn  # noqa: F401  (adds EBSD.classify_structure)
    from kikuchipy_cnn.io import check_output, save_crystal_map

    # Every check that can fail comes before loading and classifying
    pc = parse_pc(args.pc)
    out = check_output(args.output, overwrite=args.overwrite, inputs=[args.input])
    s = kp.load(args.input, lazy=args.lazy)
    if not isinstance(s, EBSD):
        raise TypeError(f"{args.input} does not hold EBSD patterns (it loaded as {type(s).__name__})")
    if args.beam_energy is not None:  # on the loaded signal only; the file is not touched
        s.metadata.set_item("Acquisition_instrument.SEM.beam_energy", float(args.beam_energy))
    xmap = s.classify_structure(
        model=args.model, min_score=args.min_score, show_progressbar=not args.quiet,
        verbose=0 if args.quiet else 1, pc=pc, pool=args.pool,
    )
    written = save_crystal_map(xmap, out, overwrite=args.overwrite, inputs=[args.input])
    if not args.quiet:
        print(xmap)
        print("Wrote " + ", ".join(str(p) for p in written))
    return 0


def parse_pc(values: list[str] | None) -> str | tuple[float, float, float] | None:
    """``--pc`` as ``classify_structure(pc=...)`` takes it: three numbers,
    ``estimate`` or ``check``."""
    if values is None:
        return None
    if len(values) == 1 and values[0] in ("estimate", "check"):
        return values[0]
    try:
        if len(values) == 3:
            return tuple(float(v) for v in values)
    except ValueError:
        pass
    raise ValueError(
        f"--pc takes three numbers PCX PCY PCZ, 'estimate' or 'check', not {' '.join(values)!r}"
    )


_MODEL_HELP = (
    "registered model name (see `kikuchipy-cnn models`); default: the default model"
)
_MIN_SCORE_HELP = (
    "patterns whose top class probability is below this are not classified "
    "(phase id -1); 0 classifies every pattern; default: the model card's "
    "recommended value"
)
_OUTPUT_HELP = (
    "output crystal map. .h5/.hdf5: orix HDF5, the complete map (class "
    "probabilities, scores, phases). .ang: EDAX TSL text for OIM and MTEX with "
    "the map's phase ids and names and the top probability as confidence index "
    "(-1: not classified); what .ang cannot hold (class probabilities, margin, "
    "level scores, space groups, masked points) goes beside it to OUTPUT.h5 "
    "(phases.ang -> phases.ang.h5, the complete map; orix reads a one-pattern "
    ".ang only from there). The folder must exist"
)


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``kikuchipy-cnn`` command."""
    from kikuchipy_cnn.phases import POOL_MODES

    parser = argparse.ArgumentParser(
        prog="kikuchipy-cnn",
        description="Classify the crystal structure of EBSD patterns with CNNs.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "demo", help="classify kikuchipy's bundled Ni patterns",
        description="Classify kikuchipy's 9 bundled Ni patterns and print the map.",
    )
    p.add_argument("--model", default=None, help=_MODEL_HELP)
    p.add_argument("--min-score", type=float, default=None, help=_MIN_SCORE_HELP)
    p.set_defaults(func=_demo)
    p = sub.add_parser(
        "models", help="list registered models, or print a model card",
        description="List the registered models, or print one model's card.",
    )
    p.add_argument(
        "name", nargs="?", default=None,
        help="model whose card (classes, training, limitations) to print; "
        "default: list all models",
    )
    p.set_defaults(func=_models)
    p = sub.add_parser(
        "classify", help="classify a pattern file kikuchipy loads",
        description="Classify the crystal structure of every pattern in a file and "
        "write the phase map. Never writes over the input, nor over an existing "
        "file unless --overwrite is given; the output is written to a temporary "
        "file renamed into place, so an interrupted run leaves no partial file.",
    )
    p.add_argument(
        "input", help="EBSD pattern file kikuchipy.load() reads (e.g. .h5, .up1, "
        ".up2, .ebsp, .dat); never modified",
    )
    p.add_argument("-o", "--output", required=True, help=_OUTPUT_HELP)
    p.add_argument("--model", default=None, help=_MODEL_HELP)
    p.add_argument("--min-score", type=float, default=None, help=_MIN_SCORE_HELP)
    p.add_argument(
        "--pc", nargs="+", metavar="PC", default=None,
        help="PCX PCY PCZ: pattern centre of every pattern in the Bruker convention (PCx "
        "from the left / width, PCy from the top / height, PCz / height), replacing the "
        "file's; 'estimate': estimated from the patterns, started at the file's (printed "
        "with its uncertainty; the map keeps it as properties pcx, pcy, pcz); 'check': the "
        "file's, with a warning if the bands disagree. Band models (e.g. kcnn-bands-mlp) "
        "need the true one; pixel models ignore it (with a warning)",
    )
    p.add_argument(
        "--beam-energy", type=float, default=None, metavar="KV",
        help="beam energy in kV, replacing the file's (band models read band widths "
        "with it; 20 kV is assumed, with a warning, when neither gives one)",
    )
    p.add_argument(
        "--pool", choices=POOL_MODES, default="phases",
        help="'phases' (default): discover the phases of the scan (grains from "
        "neighbouring patterns, then grains grouped by the model's verdicts) and give "
        "each phase one class pooled from all its patterns; --min-score then applies to "
        "the pooled probability. 'none': one class per pattern",
    )
    p.add_argument(
        "--lazy", action="store_true",
        help="stream patterns from disk chunk by chunk instead of loading them "
        "into memory (for scans larger than memory)",
    )
    p.add_argument(
        "--overwrite", action="store_true",
        help="replace the output file (and an .ang's .ang.h5) if it exists; the "
        "input is never replaced",
    )
    p.add_argument(
        "-q", "--quiet", action="store_true",
        help="print nothing but errors (no model information, progress bar or map)",
    )
    p.set_defaults(func=_classify)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``kikuchipy-cnn`` command with arguments ``argv`` (default:
    the command line) and return its exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as e:  # one clear line, not a traceback
        print(f"kikuchipy-cnn: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
