"""Entry point of the ``dfine`` command. Each subcommand module provides ``add_parser(subparsers)``, which
registers its arguments and sets ``func`` to a ``run(args) -> int`` function.

User errors (:class:`dfine.errors.DFineError`) are printed as one line and exit with status 2; anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from dfine.errors import DFineError
from dfine.version import __version__


def _subcommands() -> list:
    # imported here, not at module level, so that `dfine --version` does not pay for torch
    from dfine.cli import benchmark, check, demo, export, info, predict, push, track, train, val

    return [predict, track, train, val, check, export, benchmark, info, push, demo]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dfine", description="D-FINE real-time object detection.")
    parser.add_argument("--version", action="version", version=f"dfine {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _subcommands():
        module.add_parser(subparsers)
    for subparser in subparsers.choices.values():
        # also accepted after the subcommand (`dfine predict ... -v`); SUPPRESS keeps a `-v` given before it
        subparser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                               help="more logging")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # plain `dfine`: show what there is to run
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except DFineError as e:
        print(f"dfine {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dfine {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
