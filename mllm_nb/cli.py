"""The ``mllm-nb`` command line: ``doctor``, ``demo``, ``fit``, ``convert-honeybee`` and ``download-honeybee``."""

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


def _fit(args: argparse.Namespace) -> int:
    from mllm_nb.plan import fit

    quantization = None if args.quantization == "none" else args.quantization
    report = fit(
        args.model,
        quantization=quantization,
        target=args.target,
        dtype=args.dtype,
        max_new_tokens=args.max_new_tokens,
        n_images=args.images,
    )
    print(report)
    return 0 if report.fits else 1


def _convert_honeybee(args: argparse.Namespace) -> int:
    from mllm_nb.honeybee import convert

    tokenizer = None if args.tokenizer.lower() == "none" else args.tokenizer
    out = convert(args.src, args.dst, tokenizer=tokenizer, dtype=args.dtype, overwrite=args.overwrite)
    print(f"converted to {out}; load it with mllm_nb.load_vlm({str(out)!r})")
    return 0


def _download_honeybee(args: argparse.Namespace) -> int:
    from mllm_nb.honeybee import download

    folder = download(args.name, args.dst)
    print(f"extracted to {folder}; next: mllm-nb convert-honeybee {folder} {args.name.lower()}-hf")
    return 0


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

    fit = commands.add_parser("fit", help="will a model fit a GPU? plan memory before downloading (exit 1 if not)")
    fit.add_argument("model", help="catalog id, other Hub id, or local checkpoint folder")
    fit.add_argument("--quantization", choices=["4bit", "8bit", "none"], default="4bit", help="how to load it")
    fit.add_argument("--target", choices=["auto", "t4", "l4", "a100-40", "cpu"], default="auto", help="where to run")
    fit.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default=None, help="compute dtype")
    fit.add_argument("--max-new-tokens", type=int, default=512, help="tokens to generate")
    fit.add_argument("--images", type=int, default=1, help="images per prompt")
    fit.set_defaults(func=_fit)

    convert = commands.add_parser("convert-honeybee", help="Honeybee release folder (<NAME>/last) -> transformers folder")
    convert.add_argument("src", help="extracted release folder with config.json and pytorch_model*.bin")
    convert.add_argument("dst", help="output folder (safetensors shards, config, processor, tokenizer)")
    convert.add_argument("--tokenizer", default="lmsys/vicuna-7b-v1.5",
                         help="Hub id or folder of the Vicuna tokenizer when the release has none; 'none' skips it")
    convert.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default=None, help="cast the weights")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    convert.set_defaults(func=_convert_honeybee)

    download = commands.add_parser("download-honeybee", help="download and safely extract an official Honeybee release")
    download.add_argument("name", help="Model Zoo name, e.g. 7B-C-Abs-M144")
    download.add_argument("dst", nargs="?", default=".", help="folder to download and extract into")
    download.set_defaults(func=_download_honeybee)
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
