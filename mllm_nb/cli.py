"""The ``mllm-nb`` command line: ``ask``, ``caption``, ``doctor``, ``demo``, ``fit`` and the Honeybee tools.

Every error is one line on stderr and a non-zero exit code: 2 for a bad input (an ``MllmNbError`` or a
bad argument), 1 for anything unexpected, 130 for Ctrl-C. ``--debug`` shows the full traceback instead.
Slow steps (importing torch and transformers, loading a model) announce themselves on stderr first.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from mllm_nb.errors import MllmNbError

DEFAULT_VLM = "llava-hf/llava-1.5-7b-hf"
SLOW_NOTE = "(first run imports torch and transformers, ~20 s)"


class CliError(MllmNbError, ValueError):
    """A command-line argument that cannot work, such as a file given where a folder belongs."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (``mllm-nb fit: error: ...; see --help``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)}; see {self.prog} --help\n")


def one_line(text: str) -> str:
    """``text`` with every run of whitespace, newlines included, turned into one space.

    >>> one_line("No such file.\\n\\n  Check the path.")
    'No such file. Check the path.'
    """
    return " ".join(str(text).split())


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


def _note(text: str) -> None:
    """One progress line on stderr, so a slow step never looks like a hang."""
    print(text, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ argument checks


def _count(minimum: int) -> Any:
    """An argparse ``type`` for integers of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is too small (the least is {minimum})")
        return value

    return parse


def _text(what: str) -> Any:
    """An argparse ``type`` for a non-blank string."""

    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"the {what} is empty")
        return text

    return parse


def existing_folder(path: str, flag: str) -> Path:
    """``path`` as a ``Path`` when it is an existing folder, else a ``CliError`` naming ``flag``.

    >>> existing_folder(".", "--disk-path")
    PosixPath('.')
    """
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    if folder.exists():
        raise CliError(f"{flag} '{folder}' is a file, not a folder; pass a folder.")
    raise CliError(f"{flag} '{folder}' does not exist; check the path (the current folder is '{Path.cwd()}').")


def _first_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def writable_target(path: str, flag: str, folder: bool) -> Path:
    """Check that a folder (``folder=True``) or file can be created or written at ``path``; return it.

    >>> writable_target("build/out", "--out", folder=True)
    PosixPath('build/out')
    """
    target = Path(path).expanduser()
    if not str(path).strip():
        raise CliError(f"{flag} is empty; pass a {'folder' if folder else 'file'} path.")
    if folder and target.exists() and not target.is_dir():
        raise CliError(f"{flag} '{target}' is a file; pass a folder (or delete the file).")
    if not folder and target.is_dir():
        raise CliError(f"{flag} '{target}' is a folder; pass a file path such as '{target / 'captions.jsonl'}'.")
    above = _first_existing(target if folder else target.parent)
    if not above.is_dir():
        raise CliError(f"{flag} '{target}' cannot be created because '{above}' is a file; pass another path.")
    if not os.access(above, os.W_OK):
        raise CliError(f"{flag} '{target}' cannot be written: no permission in '{above}'; pass another path.")
    return target


# ------------------------------------------------------------------------------------ commands


def _doctor(args: argparse.Namespace) -> int:
    folder = existing_folder(args.disk_path, "--disk-path")
    _note("checking this machine (first run imports torch, ~10 s)")
    from mllm_nb.hardware import doctor

    doctor(disk_path=folder)
    return 0


def _check_notebooks(folder: Path) -> None:
    """Read every notebook of ``folder`` before any runs, so a broken one fails in seconds, not minutes."""
    import nbformat

    for path in sorted(folder.glob("*.ipynb")):
        try:
            nbformat.read(path, as_version=4)
        except Exception as err:  # nbformat raises JSON, validation and OS errors alike
            raise CliError(
                f"The notebook '{path}' could not be read ({type(err).__name__}: {_first_line(err)[:120]}); "
                "fix or remove it, or pass another --notebooks folder."
            ) from None


def _demo(args: argparse.Namespace) -> int:
    notebooks = Path(args.notebooks).expanduser()
    out = writable_target(args.out, "--out", folder=True)
    if notebooks.is_dir():
        _check_notebooks(notebooks)
    from mllm_nb.demo.runner import run_notebooks

    results = run_notebooks(notebooks, out, timeout=args.timeout)
    return 0 if all(r.ok for r in results) else 1


def _fit(args: argparse.Namespace) -> int:
    from mllm_nb import catalog
    from mllm_nb.demo.mode import looks_like_path

    if looks_like_path(args.model):  # a missing folder fails at once, before the slow imports
        existing_folder(args.model, "model")
    local = Path(args.model).expanduser().is_dir()
    if local and catalog.get(args.model) is None:  # catalog models are planned from stored figures, without torch
        _note(f"reading the model's config {SLOW_NOTE}")
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
    existing_folder(args.src, "src")
    writable_target(args.dst, "dst", folder=True)
    _note(f"converting {SLOW_NOTE}")
    from mllm_nb.honeybee import convert

    tokenizer = None if args.tokenizer.lower() == "none" else args.tokenizer
    out = convert(args.src, args.dst, tokenizer=tokenizer, dtype=args.dtype, overwrite=args.overwrite)
    print(f"converted to {out}; load it with mllm_nb.load_vlm({str(out)!r})")
    return 0


def _download_honeybee(args: argparse.Namespace) -> int:
    dst = writable_target(args.dst, "dst", folder=True)
    if args.url is not None and not args.url.lower().startswith(("http://", "https://")):
        raise CliError(f"--url {args.url!r} is not an http(s) address; pass the mirror's full URL.")
    from mllm_nb.honeybee.download import download

    folder = download(args.name, dst, url=args.url)
    print(f"extracted to {folder}; next: mllm-nb convert-honeybee {folder} {args.name.lower()}-hf")
    return 0


def _load(args: argparse.Namespace) -> Any:
    """The VLM of ``--model``; the loader's notices go to stderr so that stdout holds only the answer."""
    _note(f"loading the model {SLOW_NOTE}")
    from mllm_nb.loading import load_vlm

    with contextlib.redirect_stdout(sys.stderr):
        return load_vlm(args.model, demo=True if args.demo else None)


def _ask(args: argparse.Namespace) -> int:
    from mllm_nb.images import load_image

    image = load_image(args.image)  # a bad image fails here, before the slow model load
    vlm = _load(args)
    generation = {} if args.max_new_tokens is None else {"max_new_tokens": args.max_new_tokens}
    if not args.stream:
        print(vlm.ask(image, args.question, **generation))
        return 0
    for piece in vlm.stream(image, args.question, **generation):
        print(piece, end="", flush=True)
    print()
    return 0


def _check_jsonl(out: Path) -> None:
    if not out.is_file():
        return
    try:
        out.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CliError(
            f"--out '{out}' is not a UTF-8 text file, so not captions of an earlier run; pass another --out."
        ) from None


def _caption(args: argparse.Namespace) -> int:
    from mllm_nb.images import IMAGE_EXTENSIONS, image_files

    folder = Path(args.folder).expanduser()
    files = image_files(folder)
    if not files:
        raise CliError(
            f"No image files in '{folder}' (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}); pass another folder."
        )
    out = writable_target(args.out, "--out", folder=False)
    _check_jsonl(out)
    vlm = _load(args)
    counts = vlm.caption_folder(folder, out)
    print(", ".join(f"{what} {number}" for what, number in counts.items()) + f"; captions in {out}")
    if counts["failed"]:
        _note(f"{counts['failed']} file(s) could not be read; their lines in '{out}' hold the reason.")
    return 1 if counts["failed"] and not (counts["captioned"] or counts["skipped"]) else 0


# ------------------------------------------------------------------------------------ parser


def _add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=_text("model id"), default=DEFAULT_VLM,
                        help=f"Hub id or local checkpoint folder (default {DEFAULT_VLM})")
    parser.add_argument("--demo", action="store_true",
                        help="demo mode: a tiny offline fixture stands in for the model (as MLLM_NB_DEMO=1 does)")


def _add_commands(commands: Any) -> None:
    ask = commands.add_parser("ask", help="answer a question about an image")
    ask.add_argument("image", type=_text("image path"), help="image file or http(s) URL")
    ask.add_argument("question", type=_text("question"), help="what to ask about the image")
    _add_model(ask)
    ask.add_argument("--stream", action="store_true", help="print the answer piece by piece as it is generated")
    ask.add_argument("--max-new-tokens", type=_count(1), default=None, help="longest answer, in tokens")
    ask.set_defaults(func=_ask)

    caption = commands.add_parser("caption", help="caption every image of a folder into a JSONL file (resumable)")
    caption.add_argument("folder", type=_text("folder"), help="folder with the images")
    _add_model(caption)
    caption.add_argument("--out", default="captions.jsonl", help="JSONL file to append the captions to")
    caption.set_defaults(func=_caption)

    doctor = commands.add_parser("doctor", help="what this machine has: GPU, memory, disk, Colab, versions")
    doctor.add_argument("--disk-path", default=".", help="folder whose free disk space to report")
    doctor.set_defaults(func=_doctor)

    demo = commands.add_parser("demo", help="run every notebook headless in offline demo mode")
    demo.add_argument("--notebooks", default="notebooks", help="folder with the .ipynb files")
    demo.add_argument("--out", default="build/demo", help="where executed notebooks and HTML go")
    demo.add_argument("--timeout", type=_count(1), default=600, help="seconds allowed per cell")
    demo.set_defaults(func=_demo)

    fit = commands.add_parser("fit", help="will a model fit a GPU? plan memory before downloading (exit 1 if not)")
    fit.add_argument("model", type=_text("model id"), help="catalog id, other Hub id, or local checkpoint folder")
    fit.add_argument("--quantization", choices=["4bit", "8bit", "none"], default="4bit", help="how to load it")
    fit.add_argument("--target", choices=["auto", "t4", "l4", "a100-40", "cpu"], default="auto", help="where to run")
    fit.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default=None, help="compute dtype")
    fit.add_argument("--max-new-tokens", type=_count(0), default=512, help="tokens to generate")
    fit.add_argument("--images", type=_count(0), default=1, help="images per prompt")
    fit.set_defaults(func=_fit)

    convert = commands.add_parser("convert-honeybee", help="Honeybee release (<NAME>/last) -> transformers folder")
    convert.add_argument("src", type=_text("src"), help="extracted release folder: config.json, pytorch_model*.bin")
    convert.add_argument("dst", type=_text("dst"), help="output folder (safetensors, config, processor, tokenizer)")
    convert.add_argument("--tokenizer", type=_text("tokenizer"), default="lmsys/vicuna-7b-v1.5",
                         help="Hub id or folder of the Vicuna tokenizer when the release has none; 'none' skips it")
    convert.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default=None, help="cast the weights")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    convert.set_defaults(func=_convert_honeybee)

    download = commands.add_parser("download-honeybee", help="download and safely extract an official Honeybee release")
    download.add_argument("name", type=_text("name"), help="Model Zoo name, e.g. 7B-C-Abs-M144")
    download.add_argument("dst", nargs="?", default=".", help="folder to download and extract into")
    download.add_argument("--url", default=None, help="a mirror's URL of the <NAME>.tar.gz archive")
    download.set_defaults(func=_download_honeybee)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one sub-command per task.

    >>> build_parser().parse_args(["fit", "llava-hf/llava-1.5-7b-hf"]).images
    1
    """
    parser = _Parser(prog="mllm-nb", description="Multimodal LLMs in notebooks, made easy.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_commands(commands)
    for sub in commands.choices.values():  # --debug after the command too; SUPPRESS keeps one given before it
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback")
    return parser


def _show_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    print(f"warning: {one_line(str(message))}", file=sys.stderr)


def _quiet_broken_pipe() -> int:
    """The reader of stdout went away (``mllm-nb fit ... | head -1``): stop quietly, as Unix tools do."""
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mllm-nb`` console script; returns the exit code.

    >>> main(["fit", "llava-hf/llava-1.5-7b-hf", "--target", "t4"])  # doctest: +SKIP
    0
    """
    args = build_parser().parse_args(argv)
    command = f"mllm-nb {args.command}"
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.func(args)
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{command} interrupted", file=sys.stderr)
        return 130
    except MllmNbError as err:
        if args.debug:
            raise
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        if args.debug:
            raise
        print(f"{command} needs the Python package {err.name!r}, which is not installed; "
              f"pip install {err.name} (or mllm-nb[notebooks,samples]) and run again", file=sys.stderr)
        return 1
    except Exception as err:
        if args.debug:
            raise
        print(f"{command} failed: {type(err).__name__}: {_first_line(err)}; run again with --debug for the details",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
