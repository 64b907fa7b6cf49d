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
    from pathlib import Path

    import kikuchipy as kp
    from orix import io

    import kikuchipy_cnn  # noqa: F401  (adds EBSD.classify_structure)

    out = Path(args.output)
    if out.suffix not in (".h5", ".hdf5", ".ang"):
        raise ValueError(f"Output must end in .h5 or .ang, not {out.name!r}")
    s = kp.load(args.input, lazy=args.lazy)
    from kikuchipy.signals import EBSD

    if not isinstance(s, EBSD):
        raise TypeError(f"{args.input} does not hold EBSD patterns (it loaded as {type(s).__name__})")
    xmap = s.classify_structure(
        model=args.model, min_score=args.min_score, show_progressbar=not args.quiet,
        verbose=0 if args.quiet else 1,
    )
    io.save(out, xmap, overwrite=True)
    if not args.quiet:
        print(xmap)
        print(f"Wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kikuchipy-cnn",
        description="Classify the crystal structure of EBSD patterns with CNNs.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="classify kikuchipy's bundled Ni patterns")
    p.add_argument("--model", default=None)
    p.add_argument("--min-score", type=float, default=None)
    p.set_defaults(func=_demo)
    p = sub.add_parser("models", help="list registered models, or print a model card")
    p.add_argument("name", nargs="?", default=None)
    p.set_defaults(func=_models)
    p = sub.add_parser("classify", help="classify a pattern file kikuchipy loads")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True, help="output crystal map (.h5 or .ang)")
    p.add_argument("--model", default=None)
    p.add_argument("--min-score", type=float, default=None)
    p.add_argument("--lazy", action="store_true", help="stream patterns from disk")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_classify)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except Exception as e:  # one clear line, not a traceback
        print(f"kikuchipy-cnn: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
