"""The ``mllm-nb`` command line: ``mllm-nb doctor`` and ``mllm-nb demo``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _doctor(args: argparse.Namespace) -> int:
    from mllm_nb.hardware import doctor

    doctor(disk_path=args.disk_path)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from mllm_nb.demo.runner import run_notebooks

    results = run_notebooks(args.notebooks, args.out, timeout=args.timeout)
    return 0 if all(r.ok for r in results) else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one sub-command per task."""
    parser = argparse.ArgumentParser(prog="mllm-nb", description="Multimodal LLMs in notebooks, made easy.")
    commands = parser.add_subparsers(dest="command", required=True)

    doctor = commands.add_parser("doctor", help="what this machine has: GPU, memory, disk, Colab, versions")
    doctor.add_argument("--disk-path", default=".", help="folder whose free disk space to report")
    doctor.set_defaults(func=_doctor)

    demo = commands.add_parser("demo", help="run every notebook headless in offline demo mode")
    demo.add_argument("--notebooks", default="notebooks", help="folder with the .ipynb files")
    demo.add_argument("--out", default="build/demo", help="where executed notebooks and HTML go")
    demo.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mllm-nb`` console script."""
    args = build_parser().parse_args(argv)
    from mllm_nb.errors import MllmNbError

    try:
        return args.func(args)
    except MllmNbError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
