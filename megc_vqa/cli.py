"""The ``megc-vqa`` command line.

Each sub-command lives in the module of the feature it drives and exposes two functions:
``add_arguments(parser)`` and ``run(args) -> int``. Only the module of the command being run is
imported (``megc-vqa --help`` lists the commands from the table below without importing any), and command
modules import only light modules at import time (no torch, transformers or OpenCV), so ``megc-vqa COMMAND
--help`` stays well under a second too; heavy imports happen inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from megc_vqa import __version__
from megc_vqa.errors import run_command

# name -> (module, one-line help). Order is the order of the pipeline.
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("megc_vqa.synth.command", "write synthetic micro-expression datasets in the real layouts"),
    "synth-test": ("megc_vqa.synth.test_command", "write a MEGC-style test set for organiser question files"),
    "prep": ("megc_vqa.qa.prep", "turn dataset folders into MEGC QA records (qa.jsonl + a datasets dataset)"),
    "export": (
        "megc_vqa.training.export",
        "write QA records as a LLaMA-Factory or ms-swift dataset, with the visual inputs as images",
    ),
    "merge-adapter": ("megc_vqa.training.merge", "merge a LoRA adapter into its base model"),
    "ask": ("megc_vqa.answering.repl", "ask a model about a clip (interactive, or once with --question)"),
    "lmms-tasks": (
        "megc_vqa.lmms_tasks",
        "print the MEGC lmms-eval tasks folder (for lmms-eval --include_path)",
    ),
    "spot-train": (
        "megc_vqa.spotting.train",
        "train the 3D-CNN expression spotter on long videos (LOSO optional)",
    ),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; ``command``'s arguments are added from its module (the only one
    imported), the others are listed with their one-line help."""
    parser = argparse.ArgumentParser(prog="megc-vqa", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(cmd)
            cmd.set_defaults(_run=module.run)
    return parser


def _main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    # the command is the first word that is not an option (the top-level options take no value)
    parser = build_parser(next((w for w in words if not w.startswith("-")), None))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


def main(argv: list[str] | None = None) -> int:
    """Every sub-command runs behind the project's error boundary (``megc_vqa.errors.run_command``)."""
    return run_command(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
