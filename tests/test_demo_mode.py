"""Demo-mode resolution, the sample photos, the CLI and the notebook runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mllm_nb as mn
from mllm_nb.demo.mode import demo_banner, fixture_path, is_demo, resolve_model
from mllm_nb.errors import DemoModeError
from mllm_nb.samples import SAMPLES, SampleError, sample_image, sample_path


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("ON", True), ("0", False), ("", False)])
def test_is_demo_reads_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv("MLLM_NB_DEMO", value)
    assert is_demo() is expected
    assert is_demo(False) is False and is_demo(True) is True


def test_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("MLLM_NB_DEMO", raising=False)
    assert resolve_model("openai/clip-vit-base-patch32", "clip") == ("openai/clip-vit-base-patch32", False)
    path, is_fixture = resolve_model("openai/clip-vit-large-patch14", "clip", demo=True)
    assert is_fixture and Path(path) == fixture_path("tiny-clip")
    assert resolve_model(tmp_path, "clip", demo=True) == (str(tmp_path), False)  # a local folder always wins
    with pytest.raises(DemoModeError, match="no offline fixture for 'meta/llama'"):
        resolve_model("meta/llama", "clip", demo=True)
    with pytest.raises(DemoModeError, match="missing"):
        fixture_path("no-such-fixture")


def test_banner_is_loud():
    assert demo_banner("openai/clip", "/x/tiny-clip", "CLIPModel").startswith("DEMO MODE: 'openai/clip'")


def test_samples_ship_offline():
    for name in SAMPLES:
        assert sample_path(name).is_file()
    cat = sample_image("chelsea")
    assert cat.mode == "RGB" and cat.size == (451, 300)
    assert set(mn.sample_images(["coffee", "grace_hopper"])) == {"coffee", "grace_hopper"}
    with pytest.raises(SampleError, match="No sample photo called 'dog'"):
        sample_path("dog")


def test_lazy_package_namespace():
    assert mn.clip.DEFAULT_TEMPLATE == "a photo of a {}."
    assert callable(mn.load_image) and issubclass(mn.ImageLoadError, mn.MllmNbError)
    with pytest.raises(AttributeError):
        mn.no_such_name  # noqa: B018
    assert "load_clip" in dir(mn)


def test_cli_doctor_prints_the_report():
    done = subprocess.run([sys.executable, "-m", "mllm_nb.cli", "doctor"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "float32" in done.stdout and "RAM" in done.stdout


def test_cli_demo_reports_a_missing_folder_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mllm_nb.cli", "demo", "--notebooks", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: No notebooks found in")


def test_runner_executes_and_summarises(tmp_path, capsys, monkeypatch):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from mllm_nb.demo.runner import run_notebooks

    good = new_notebook(cells=[new_code_cell("import os\nprint(os.environ['MLLM_NB_DEMO'])"),
                               new_code_cell("# NBVAL_CHECK_OUTPUT\nprint('answer: 42')"),
                               new_code_cell("# NBVAL_CHECK_OUTPUT\nimport sys\nfrom tqdm.auto import tqdm\n"
                                             "print('warned', file=sys.stderr)\nfor _ in tqdm(range(2), desc='Busy'): pass")])
    bad = new_notebook(cells=[new_code_cell("1 / 0")])
    for name, nb in (("a_good.ipynb", good), ("b_bad.ipynb", bad)):
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, tmp_path / name)
    monkeypatch.delenv("MLLM_NB_DEMO", raising=False)
    results = run_notebooks(tmp_path, tmp_path / "out")
    assert "MLLM_NB_DEMO" not in os.environ  # demo mode reached the kernels without leaking into this process
    assert [r.ok for r in results] == [True, False]
    assert results[0].answers == ["answer: 42"] and results[0].cells == 3  # no progress bar, no warning
    assert "ZeroDivisionError" in results[1].error
    executed = json.loads((tmp_path / "out" / "a_good.ipynb").read_text())
    assert "".join(executed["cells"][0]["outputs"][0]["text"]) == "1\n"  # demo mode reached the kernel
    assert (tmp_path / "out" / "a_good.html").read_text().count("answer: 42") >= 1
    summary = capsys.readouterr().out
    assert "answer: 42" in summary and "FAILED" in summary and "2 notebooks, 1 ok" in summary
    assert "FAILED at cell 1 (1 / 0): ZeroDivisionError: division by zero" in summary
    assert f"HTML: {tmp_path / 'out' / 'a_good.html'}" in summary.replace("\n      ", "")
    assert f"are in {(tmp_path / 'out').resolve()}" in summary


def test_a_failed_notebook_shows_no_stale_answer(tmp_path, capsys):
    """Outputs stored in a notebook are dropped before it runs: after a failing cell nothing old remains."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    from mllm_nb.demo.runner import run_notebooks

    stale = new_code_cell("# NBVAL_CHECK_OUTPUT\nprint('fresh answer')", execution_count=2,
                          outputs=[new_output("stream", name="stdout", text="CER 0.048; 82 of 100 read exactly\n")])
    long_answer = "word " * 40 + "END"
    notebook = new_notebook(cells=[new_code_cell("raise RuntimeError('model output changed')"), stale])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp_path / "c.ipynb")
    good = new_notebook(cells=[new_code_cell(f"# NBVAL_CHECK_OUTPUT\nprint({long_answer!r})")])
    good.metadata["kernelspec"] = notebook.metadata["kernelspec"]
    nbformat.write(good, tmp_path / "d.ipynb")
    failed, passed = run_notebooks(tmp_path, tmp_path / "out")
    assert not failed.ok and failed.answers == []
    assert "RuntimeError: model output changed" in failed.error and failed.error.startswith("cell 1 ")
    executed = (tmp_path / "out" / "c.ipynb").read_text() + (tmp_path / "out" / "c.html").read_text()
    assert "82 of 100" not in executed
    summary = capsys.readouterr().out
    assert "82 of 100" not in summary
    assert passed.answers == [long_answer.strip()]
    wrapped = [line.strip() for line in summary.splitlines() if "word" in line or "END" in line]
    assert " ".join(wrapped) == long_answer and len(wrapped) > 1  # whole, wrapped over several lines


@pytest.mark.parametrize("demo", [True, False])
def test_a_missing_local_path_is_a_path_error_in_both_modes(tmp_path, demo):
    from mllm_nb.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="No model folder .*check the path") as info:
        resolve_model(tmp_path / "no-such-model", "vlm", demo=demo)
    assert not isinstance(info.value, DemoModeError)
    assert resolve_model("llava-hf/llava-1.5-7b-hf", "vlm", demo=False) == ("llava-hf/llava-1.5-7b-hf", False)


def _write_notebook(path: Path, *sources: str) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    notebook = new_notebook(cells=[new_code_cell(source) for source in sources])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)


def test_a_demo_run_prints_no_warning_and_joins_streamed_text(tmp_path):
    """`mllm-nb demo` starts its kernels without ipykernel's TCP warning; pieces printed one by one read as one text."""
    _write_notebook(tmp_path / "stream.ipynb",
                    "# NBVAL_CHECK_OUTPUT\nfor piece in ['a ', 'red ', 'circle ', 'on ', 'white']:\n"
                    "    print(piece, end='', flush=True)\nprint()\nprint('done')")
    done = subprocess.run([sys.executable, "-m", "mllm_nb.cli", "demo", "--notebooks", str(tmp_path),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    log = (done.stdout + done.stderr).replace(str(tmp_path), "<tmp>")
    noisy = [line for line in log.splitlines() if "warn" in line.lower()]
    assert noisy == []
    assert "a red circle on white" in done.stdout and "1 notebooks, 1 ok" in done.stdout
    executed = json.loads((tmp_path / "out" / "stream.ipynb").read_text())
    outputs = executed["cells"][0]["outputs"]
    assert len(outputs) == 1 and "".join(outputs[0]["text"]) == "a red circle on white\ndone\n"
    assert "a red circle on white" in (tmp_path / "out" / "stream.html").read_text()


def test_tofu_in_a_figure_fails_the_notebook_and_the_bundled_font_passes(tmp_path, capsys):
    """Missing glyphs fail a run whether mllm_nb silenced matplotlib's warnings or matplotlib printed them."""
    from mllm_nb.demo.runner import run_notebooks

    setup = "%matplotlib inline\nimport mllm_nb as mn\nfrom mllm_nb import fonts"
    figure = "mn.plot_probs(['고양이', 'dog'], [0.6, 0.4], title='확률')"
    _write_notebook(tmp_path / "a_nanum.ipynb", setup, figure)
    _write_notebook(tmp_path / "b_no_font.ipynb", setup + "\nfonts.find_cjk_font = lambda: None  # no CJK font at all",
                    "x = 1", figure)
    _write_notebook(tmp_path / "c_dejavu.ipynb", "import io\nfrom matplotlib.figure import Figure",
                    "fig = Figure()\nfig.suptitle('강아지', fontfamily='DejaVu Sans')\nfig.savefig(io.BytesIO())")
    nanum, no_font, dejavu = run_notebooks(tmp_path, tmp_path / "out")
    assert nanum.ok, nanum.error
    assert not no_font.ok and no_font.error.startswith("cell 3 (mn.plot_probs(")
    assert "'고양이확률' as empty boxes" in no_font.error  # silenced by mllm_nb.fonts, still caught
    assert not dejavu.ok and dejavu.error.startswith("cell 2 (fig = Figure()")
    assert "'강아지' as empty boxes" in dejavu.error  # matplotlib's own warnings in the cell's stderr
    assert "3 notebooks, 1 ok" in capsys.readouterr().out


def test_the_honeybee_demo_passes_its_cache_under_one_name():
    """transformers 5.24 warned "Both `past_key_values` and `cache` are set" when a model got both names."""
    import warnings

    from mllm_nb.samples import sample_image

    vlm = mn.load_vlm("kakaobrain/honeybee-7B-C-Abs-M144", demo=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        answer = vlm.ask(sample_image("page"), "Read the text.", max_new_tokens=4)
    assert isinstance(answer, str)
