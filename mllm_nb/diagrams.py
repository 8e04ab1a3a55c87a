"""Block diagrams of how a multimodal model reads a picture (LLaVA, Honeybee) and what QLoRA trains, box by box.

``draw_architecture("llava")`` returns a matplotlib Figure (not registered with pyplot: put it last in a
cell to show it) with one labelled box per stage, from the picture to the answer, and the prompt the
language model reads underneath.

>>> fig = draw_architecture("honeybee")
>>> [box.get_label() for box in fig.axes[0].patches if box.get_label()][:2]
['picture', 'CLIP ViT-L/14']
"""

from __future__ import annotations

from dataclasses import dataclass

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from mllm_nb.display import new_figure
from mllm_nb.errors import MllmNbError

_BOX_WIDTH, _BOX_HEIGHT, _GAP = 1.7, 1.5, 0.7
_BOX_BOTTOM = 0.7
_IO_COLOR, _VISION_COLOR, _PROJECTOR_COLOR, _LLM_COLOR = "#dddddd", "#9ecae1", "#fdae6b", "#a1d99b"


class DiagramError(MllmNbError, ValueError):
    """A diagram was asked for by a name this module does not draw.

    >>> str(DiagramError("Unknown architecture 'x'."))
    "Unknown architecture 'x'."
    """


@dataclass(frozen=True)
class Box:
    """One stage of a diagram: a short title, what it holds or does, and a fill colour.

    >>> Box("projector", "2-layer MLP", "#fdae6b").text()
    'projector\\n2-layer MLP'
    """

    title: str
    detail: str
    color: str

    def text(self) -> str:
        """The title over the detail lines, as drawn in the box."""
        return f"{self.title}\n{self.detail}" if self.detail else self.title


@dataclass(frozen=True)
class Architecture:
    """A named chain of boxes; ``prompt`` is written under the language model's box.

    >>> ARCHITECTURES["llava"].boxes[-2].title
    'Vicuna LLM'
    """

    name: str
    boxes: tuple[Box, ...]
    prompt: str
    prompt_under: int  # index of the box the prompt sits under


ARCHITECTURES: dict[str, Architecture] = {
    "llava": Architecture(
        name="LLaVA-1.5",
        boxes=(
            Box("picture", "336 × 336 pixels", _IO_COLOR),
            Box("CLIP ViT-L/14", "576 patch features\n(24 × 24, 1024-d)", _VISION_COLOR),
            Box("projector", "2-layer MLP\n1024 → 4096", _PROJECTOR_COLOR),
            Box("Vicuna LLM", "576 visual tokens\n+ prompt tokens", _LLM_COLOR),
            Box("answer", "token by token", _IO_COLOR),
        ),
        prompt='"USER: <image>\\nWhat is in the picture? ASSISTANT:"',
        prompt_under=3,
    ),
    "honeybee": Architecture(
        name="Honeybee (C-Abstractor, M144)",
        boxes=(
            Box("picture", "224 × 224 pixels", _IO_COLOR),
            Box("CLIP ViT-L/14", "256 patch features\n(16 × 16, 1024-d)", _VISION_COLOR),
            Box("C-Abstractor", "conv blocks → pool\nto 12 × 12 → conv\nblocks → MLP", _PROJECTOR_COLOR),
            Box("Vicuna LLM", "144 visual tokens\n+ prompt tokens", _LLM_COLOR),
            Box("answer", "token by token", _IO_COLOR),
        ),
        prompt='"Human: <image>\\nHuman: Please read all texts in image\\nAI: "',
        prompt_under=3,
    ),
    "qlora": Architecture(
        name="QLoRA fine-tuning of LLaVA (what is trained, what stays frozen)",
        boxes=(
            Box("picture", "your image", _IO_COLOR),
            Box("CLIP ViT-L/14", "frozen\n(no adapters)", _VISION_COLOR),
            Box("projector", "frozen + LoRA\nadapters (trained)", _PROJECTOR_COLOR),
            Box("Vicuna LLM", "4-bit NF4, frozen\n+ LoRA adapters on\nevery Linear (trained)", _LLM_COLOR),
            Box("answer", "loss on the answer\ntokens only", _IO_COLOR),
        ),
        prompt='"USER: <image>\\nWhat shape is the red object? ASSISTANT: star"  (loss on "star")',
        prompt_under=3,
    ),
}


def _architecture(name: str) -> Architecture:
    """The architecture called ``name`` (any case), or one DiagramError sentence naming the choices."""
    key = name.strip().lower() if isinstance(name, str) else None
    if key not in ARCHITECTURES:
        choices = ", ".join(repr(k) for k in sorted(ARCHITECTURES))
        raise DiagramError(f"Unknown architecture {name!r}: draw_architecture knows {choices}.")
    return ARCHITECTURES[key]


def draw_architecture(name: str) -> Figure:
    """A left-to-right block diagram of ``name`` ("llava", "honeybee", "qlora"): picture → encoder → projector → LLM.

    Each stage is a rounded box labelled with its title (``patch.get_label()``), arrows join the stages, and
    the prompt the language model reads is written under its box.

    >>> fig = draw_architecture("llava")
    >>> sum(1 for p in fig.axes[0].patches if p.get_label())
    5
    """
    arch = _architecture(name)
    step = _BOX_WIDTH + _GAP
    width = len(arch.boxes) * step - _GAP + 0.2
    height = _BOX_BOTTOM + _BOX_HEIGHT + 0.5
    texts = [arch.name, arch.prompt, *(box.text() for box in arch.boxes)]
    fig = new_figure(width, height, texts)
    ax = fig.add_subplot()
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    middle = _BOX_BOTTOM + _BOX_HEIGHT / 2
    for i, box in enumerate(arch.boxes):
        x = 0.1 + i * step
        patch = FancyBboxPatch((x, _BOX_BOTTOM), _BOX_WIDTH, _BOX_HEIGHT, boxstyle="round,pad=0.05",
                               fc=box.color, ec="black", label=box.title)
        ax.add_patch(patch)
        ax.text(x + _BOX_WIDTH / 2, middle + 0.45, box.title, ha="center", va="center", fontsize=10, weight="bold")
        ax.text(x + _BOX_WIDTH / 2, middle - 0.2, box.detail, ha="center", va="center", fontsize=8.5)
        if i:
            ax.add_patch(FancyArrowPatch((x - _GAP + 0.08, middle), (x - 0.08, middle), arrowstyle="-|>",
                                         mutation_scale=15))
    under = 0.1 + arch.prompt_under * step + _BOX_WIDTH / 2
    ax.text(under, _BOX_BOTTOM - 0.35, arch.prompt, ha="center", va="center", fontsize=8, family="monospace")
    ax.set_title(arch.name, fontsize=11)
    return fig


__all__ = ["ARCHITECTURES", "Architecture", "Box", "DiagramError", "draw_architecture"]
