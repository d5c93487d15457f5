"""``iein`` command line: a thin layer over the library (argparse, no logic of its own).

:mod:`.parsers` defines the arguments, :mod:`.commands` what each command does with them.
Every user error (:class:`iein.errors.IeinError`) is printed as one ``error: ...`` line
with exit status 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Sequence

from ..errors import IeinError
from .parsers import build_parser

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None, callbacks: Sequence[Any] = ()) -> int:
    """Run one command; ``callbacks`` (:mod:`iein.training.callbacks`) go to the trainings that
    ``iein train`` starts (tests stop a run at a known point with them)."""
    args = build_parser().parse_args(argv)
    args.callbacks = list(callbacks)
    try:
        return int(args.func(args) or 0)
    except IeinError as exc:
        # under torchrun every rank checks the same inputs and fails alike: rank 0 says it once
        if os.environ.get("RANK", "0") == "0":
            print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
