"""Warnings that point at the user's line."""

import os
import sys

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def user_stacklevel() -> int:
    """``stacklevel`` for :func:`warnings.warn` called right here's caller so
    that the warning names the first frame outside this package (the user's
    ``s.classify_structure(...)`` line, not a wrapper of ours), however deep
    the package's own calls are."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level
