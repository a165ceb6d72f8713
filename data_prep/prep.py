"""Dataset folders -> MEGC ME-VQA training records; the same as ``megc-vqa prep``.

python data_prep/prep.py --data-root DATA --out runs/prep [--seed 0] [--datasets casme2 samm smic]
"""

from __future__ import annotations

import argparse
import logging


def build_parser() -> argparse.ArgumentParser:
    from megc_vqa.qa import prep

    parser = argparse.ArgumentParser(description=prep.__doc__.splitlines()[0])
    prep.add_arguments(parser)
    return parser


def _main(argv: list[str] | None = None) -> int:
    from megc_vqa.qa import prep

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return prep.run(args)


def main(argv: list[str] | None = None) -> int:
    """The command behind the project's error boundary (one line and exit 2 for a project error)."""
    from megc_vqa.errors import run_command

    return run_command(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
