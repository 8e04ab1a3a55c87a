"""Tests for mllm_nb.diagrams: the architecture diagrams build with their labelled boxes and refuse unknown names."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

import mllm_nb as mn
from mllm_nb.diagrams import ARCHITECTURES, DiagramError, draw_architecture
from mllm_nb.errors import MllmNbError

EXPECTED_TITLES = {
    "llava": ["picture", "CLIP ViT-L/14", "projector", "Vicuna LLM", "answer"],
    "honeybee": ["picture", "CLIP ViT-L/14", "C-Abstractor", "Vicuna LLM", "answer"],
    "qlora": ["picture", "CLIP ViT-L/14", "projector", "Vicuna LLM", "answer"],
}


def boxes(fig: Figure) -> list[FancyBboxPatch]:
    return [p for p in fig.axes[0].patches if isinstance(p, FancyBboxPatch)]


def texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.axes[0].texts]


@pytest.mark.parametrize("name", sorted(EXPECTED_TITLES))
def test_diagram_has_one_labelled_box_per_stage_in_order(name: str) -> None:
    fig = draw_architecture(name)
    assert isinstance(fig, Figure)
    FigureCanvasAgg(fig).draw()  # it renders, not only builds
    assert [box.get_label() for box in boxes(fig)] == EXPECTED_TITLES[name]
    # every box's title and detail are written on the figure, left to right
    drawn = texts(fig)
    for box in ARCHITECTURES[name].boxes:
        assert box.title in drawn and box.detail in drawn
    xs = [box.get_x() for box in boxes(fig)]
    assert xs == sorted(xs)
    # one arrow between each pair of neighbouring boxes
    arrows = [p for p in fig.axes[0].patches if isinstance(p, FancyArrowPatch) and not isinstance(p, FancyBboxPatch)]
    assert len(arrows) == len(EXPECTED_TITLES[name]) - 1


def test_diagrams_state_the_token_counts_each_model_hands_the_llm() -> None:
    llava = " ".join(texts(draw_architecture("llava")))
    honeybee = " ".join(texts(draw_architecture("honeybee")))
    assert "576 visual tokens" in llava and "<image>" in llava
    assert "144 visual tokens" in honeybee and "Please read all texts in image" in honeybee


def test_names_are_case_insensitive_and_exported() -> None:
    assert [b.get_label() for b in boxes(mn.draw_architecture(" LLaVA "))] == EXPECTED_TITLES["llava"]


@pytest.mark.parametrize("bad", ["blip2", "", None, 3])
def test_unknown_name_raises_one_sentence(bad: object) -> None:
    with pytest.raises(DiagramError) as info:
        draw_architecture(bad)  # type: ignore[arg-type]
    message = str(info.value)
    assert isinstance(info.value, MllmNbError)
    assert "\n" not in message and message.endswith(".")
    assert repr(bad) in message and "'honeybee'" in message and "'llava'" in message


def test_qlora_diagram_says_what_is_trained_and_what_stays_frozen() -> None:
    details = {box.title: box.detail for box in ARCHITECTURES["qlora"].boxes}
    assert "frozen" in details["CLIP ViT-L/14"] and "trained" not in details["CLIP ViT-L/14"]
    assert "4-bit" in details["Vicuna LLM"] and "LoRA" in details["Vicuna LLM"]
    assert "answer" in details["answer"]
