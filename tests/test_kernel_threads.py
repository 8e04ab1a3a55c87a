"""ChatPanel inside a real IPython kernel: 25 rounds of three questions whose worker threads warn and log.

ipykernel 6.29 can spin forever when a thread other than the kernel's writes to stdout/stderr (its
``parent_header`` lookup), which froze the panel in a classic notebook; the panel routes its threads'
warnings and log records to its status line instead. This starts the installed ipykernel (7.x in ``make
test``'s venv, 6.29.5 in the ipywidgets-7 venv of ``make test-ipywidgets7``), runs the sequence there and
fails when it does not finish in time.
"""

from __future__ import annotations

import sys
import textwrap

import pytest

jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")

ROUNDS = 25
DEADLINE_SECONDS = 120

CODE = textwrap.dedent(
    f"""
    import logging, threading, warnings
    from PIL import Image
    from mllm_nb.backends import Backend
    from mllm_nb.widgets import ChatPanel

    logging.getLogger("transformers.generation").addHandler(logging.StreamHandler())

    class Noisy(Backend):
        name = "noisy"

        def stream(self, chat, images=None, *, stop_event=None, **settings):
            warnings.warn("several images for a model not trained on them", UserWarning)
            logging.getLogger("transformers.generation").warning("Setting pad_token_id to eos_token_id")
            for word in ("a", "red", "circle"):
                yield word + " "

    warnings.simplefilter("always")
    panel = ChatPanel(Noisy())
    picture = Image.new("RGB", (32, 32), (200, 30, 30))
    answers = 0
    for round_ in range({ROUNDS}):
        for question in ("What is it?", "What colour?", "Where?"):
            answers += panel.send(question, images=[picture, picture]) == "a red circle"
        panel.clear()
    print("ANSWERED", answers, "NOTES", len(panel.notes))
    """
)


def test_three_questions_25_times_in_a_real_kernel_never_freeze():
    manager, client = jupyter_client.manager.start_new_kernel(kernel_name="python3", extra_arguments=[])
    try:
        outputs: list[str] = []

        def collect(message: dict) -> None:
            if message["msg_type"] == "stream":
                outputs.append(message["content"]["text"])
            elif message["msg_type"] == "error":
                outputs.append("\n".join(message["content"]["traceback"]))

        reply = client.execute_interactive(CODE, timeout=DEADLINE_SECONDS, output_hook=collect)
        text = "".join(outputs)
        assert reply["content"]["status"] == "ok", text
        assert f"ANSWERED {3 * ROUNDS}" in text
        assert "pad_token_id" not in text and "several images" not in text  # nothing from the panel's threads
        assert f"NOTES 2" in text  # both went to the panel's status line instead
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_the_kernel_is_the_installed_one():
    """The same interpreter runs the kernel (so the ipykernel under test is the one this venv pins)."""
    spec = jupyter_client.kernelspec.get_kernel_spec("python3")
    assert spec.argv[0] in (sys.executable, "python", "python3") or spec.argv[0].endswith("python")
