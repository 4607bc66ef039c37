"""``python -m crlm_lib.distributed cv [crlm cv options]``: the entry point that hands over to
``crlm cv`` (an entry module on top of the layers: it imports :mod:`crlm_lib.cli`, which no
library module may)."""

from __future__ import annotations

import sys

from crlm_lib.cli import main as crlm_main


def main(argv: list[str] | None = None) -> int:
    """``torchrun ... -m crlm_lib.distributed cv [options]``: the same as ``torchrun ... -m
    crlm_lib.cli cv [options]`` (``crlm cv``), which this entry point hands over to: the
    repeated stratified cross-validation of the profile's models, every fold's training
    data-parallel across the launched processes.

    Every rank runs the same fits in the same order (``--executor local``); rank 0 writes the
    checkpoints, every rank writes the same predictions atomically, and a rerun after a kill
    skips the finished fits and resumes the killed one from its ``last.pt``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "cv":
        print("usage: python -m crlm_lib.distributed cv [crlm cv options]", file=sys.stderr)
        return 2
    return crlm_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
