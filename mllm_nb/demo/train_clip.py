"""Train the tiny demo CLIP (``transformers.CLIPModel``) on synthetic coloured shapes.

``python -m mllm_nb.demo.train_clip [--out DIR] [--seed 0] [--steps N]`` regenerates the committed
fixture ``mllm_nb/demo/fixtures/tiny-clip`` in about two minutes on two CPU cores. The folder loads
like any Hub checkpoint (``CLIPModel``/``CLIPProcessor``/``AutoModel``/``AutoProcessor``) and its
zero-shot answers over the 12 shape classes are checkable, in English and in Korean.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from PIL import Image
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
)

from mllm_nb.demo.clip_tokenizer import build_clip_tokenizer
from mllm_nb.demo.shapes import (
    CLASSES,
    class_label,
    class_labels,
    make_classification_set,
)
from mllm_nb.demo.training import (
    lr_factor,
    make_adamw,
    optimizer_step,
    seed_everything,
    settings_from_command_line,
    torch_threads,
    write_fixture,
)

FIXTURE_NAME = "mllm-nb/tiny-clip-shapes"
DEFAULT_OUT = Path(__file__).resolve().parent / "fixtures" / "tiny-clip"
IMAGE_SIZE = 64
TEXT_LENGTH = 32
EVAL_SEED_OFFSET = 1000  # held-out images use seed + this; the training pool uses the seed itself

EN_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a {}.",
    "a picture of a {}.",
    "a {} on a background.",
    "an image of a {}.",
    "a drawing of a {}.",
    "a photo of the {}.",
    "a {} shape.",
    "this is a {}.",
    "{}",
)
KO_TEMPLATES: tuple[str, ...] = ("{} 사진", "{}의 그림", "{} 이미지", "{} 그림", "{} 하나", "{}")
TEMPLATES: dict[str, tuple[str, ...]] = {"en": EN_TEMPLATES, "ko": KO_TEMPLATES}
EVAL_TEMPLATES: dict[str, str] = {"en": "a photo of a {}.", "ko": "{} 사진"}


@dataclass
class TrainSettings:
    """Everything that determines a training run."""

    seed: int = 0
    steps: int = 1000
    batch_size: int = 64
    pool_per_class: int = 400
    eval_per_class: int = 20
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    num_threads: int = 2
    log_every: int = 100


def caption_corpus() -> list[str]:
    """Every training caption: each template in each language around each class label."""
    return [t.format(class_label(c, s, lang)) for lang, temps in TEMPLATES.items() for t in temps for c, s in CLASSES]


def make_processor(tokenizer: CLIPTokenizer) -> CLIPProcessor:
    """CLIP image processor sized for the synthetic images, combined with ``tokenizer``."""
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def make_config(tokenizer: CLIPTokenizer) -> CLIPConfig:
    """A tiny CLIP: 64 px images in 8 px patches, a 2-layer text tower, 64-d joint space."""
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": TEXT_LENGTH,
        "projection_dim": 64,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision = {
        "image_size": IMAGE_SIZE,
        "patch_size": 8,
        "hidden_size": 96,
        "intermediate_size": 384,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "projection_dim": 64,
    }
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=64)
    config.name_or_path = FIXTURE_NAME
    return config


def images_to_tensor(images: Sequence[Image.Image], processor: CLIPProcessor) -> torch.Tensor:
    """Pixel values exactly as the saved processor makes them."""
    return processor.image_processor(images=list(images), return_tensors="pt")["pixel_values"]


def build_pool(settings: TrainSettings, processor: CLIPProcessor) -> tuple[torch.Tensor, torch.Tensor]:
    """The seeded training images (processed) and their class ids."""
    samples = make_classification_set(settings.pool_per_class, settings.seed, IMAGE_SIZE)
    class_index = {cls: i for i, cls in enumerate(CLASSES)}
    pixels = images_to_tensor([img for img, _, _ in samples], processor)
    labels = torch.tensor([class_index[(c, s)] for _, c, s in samples])
    return pixels, labels


def encode_captions(tokenizer: CLIPTokenizer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All captions tokenised once: ``input_ids``, ``attention_mask`` and each caption's class id."""
    captions, classes = [], []
    for lang, temps in TEMPLATES.items():
        for template in temps:
            for i, (c, s) in enumerate(CLASSES):
                captions.append(template.format(class_label(c, s, lang)))
                classes.append(i)
    enc = tokenizer(captions, padding="max_length", max_length=TEXT_LENGTH, truncation=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"], torch.tensor(classes)


def multi_positive_clip_loss(logits_per_image: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Symmetric CLIP loss where every caption of the same class is a positive.

    A batch holds several images of a class, so one-hot targets would punish the model for
    matching an image with an equally correct caption; the targets are instead spread uniformly
    over all same-class pairs (the diagonal is always among them).
    """
    same = (labels[:, None] == labels[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    loss_i = torch.sum(-targets * F.log_softmax(logits_per_image, dim=1), dim=1).mean()
    loss_t = torch.sum(-targets * F.log_softmax(logits_per_image.t(), dim=1), dim=1).mean()
    return (loss_i + loss_t) / 2


def make_optimizer(model: CLIPModel, settings: TrainSettings) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only (not on embeddings, norms, biases or the logit scale)."""
    return make_adamw(model.named_parameters(), settings.lr, settings.weight_decay, no_decay=("embedding",))


def _sample_batch(
    pixels: torch.Tensor, labels: torch.Tensor, captions_by_class: torch.Tensor, size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random pool images (half of them mirrored: a mirrored shape keeps its class) and one caption each."""
    pick = torch.randint(len(labels), (size,), generator=generator)
    batch_labels = labels[pick]
    flip = torch.rand(size, generator=generator) < 0.5
    batch_pixels = torch.where(flip[:, None, None, None], pixels[pick].flip(-1), pixels[pick])
    column = torch.randint(captions_by_class.shape[1], (size,), generator=generator)
    return batch_pixels, batch_labels, captions_by_class[batch_labels, column]


def train_model(
    model: CLIPModel, tokenizer: CLIPTokenizer, processor: CLIPProcessor, settings: TrainSettings
) -> None:
    """Contrastive training on (synthetic image, random caption of its class) pairs."""
    generator = seed_everything(settings.seed)
    pixels, labels = build_pool(settings, processor)
    ids, mask, caption_class = encode_captions(tokenizer)
    captions_by_class = torch.stack([torch.nonzero(caption_class == k).flatten() for k in range(len(CLASSES))])
    optimizer = make_optimizer(model, settings)
    schedule = lambda s: lr_factor(s, settings.steps, settings.warmup_steps)  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    for step in range(settings.steps):
        batch = _sample_batch(pixels, labels, captions_by_class, settings.batch_size, generator)
        batch_pixels, batch_labels, cap = batch
        width = int(mask[cap].sum(dim=1).max())  # drop all-padding columns: same result, less work
        out = model(input_ids=ids[cap, :width], attention_mask=mask[cap, :width], pixel_values=batch_pixels)
        loss = multi_positive_clip_loss(out.logits_per_image, batch_labels)
        optimizer_step(loss, optimizer, scheduler, clip=model)
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if settings.log_every and (step % settings.log_every == 0 or step == settings.steps - 1):
            scale = model.logit_scale.exp().item()
            print(f"step {step:5d}  loss {loss.item():.4f}  logit_scale {scale:.1f}", flush=True)
    model.eval()


@torch.no_grad()
def zero_shot_accuracy(
    model: CLIPModel,
    processor: CLIPProcessor,
    samples: Sequence[tuple[Image.Image, str, str]],
    lang: str = "en",
    template: str | None = None,
    chunk: int = 128,
) -> float:
    """Top-1 accuracy of picking each image's class among all class prompts (softmax over labels)."""
    template = template or EVAL_TEMPLATES[lang]
    prompts = [template.format(label) for label in class_labels(lang)]
    text = processor.tokenizer(prompts, padding=True, return_tensors="pt")
    truth = torch.tensor([CLASSES.index((c, s)) for _, c, s in samples])
    correct = 0
    for start in range(0, len(samples), chunk):
        images = [img for img, _, _ in samples[start : start + chunk]]
        pixel_values = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        logits = model(**text, pixel_values=pixel_values).logits_per_image
        correct += int(logits.argmax(dim=1).eq(truth[start : start + chunk]).sum())
    return correct / len(samples)


def evaluate(model: CLIPModel, processor: CLIPProcessor, settings: TrainSettings) -> dict[str, float]:
    """Zero-shot accuracy on held-out images (seed + 1000) with English and Korean prompts."""
    samples = make_classification_set(settings.eval_per_class, settings.seed + EVAL_SEED_OFFSET, IMAGE_SIZE)
    return {f"zero_shot_top1_{lang}": zero_shot_accuracy(model, processor, samples, lang) for lang in EVAL_TEMPLATES}


def model_card(metrics: dict, settings: TrainSettings, n_params: int) -> str:
    """The README.md written next to the weights."""
    classes = ", ".join(f"{en} ({ko})" for en, ko in zip(class_labels("en"), class_labels("ko")))
    en, ko = metrics["zero_shot_top1_en"], metrics["zero_shot_top1_ko"]
    n_eval, eval_seed = settings.eval_per_class * len(CLASSES), settings.seed + EVAL_SEED_OFFSET
    return f"""# tiny-clip-shapes (mllm_nb demo fixture)

**Not a real model; demo mode only.** A {n_params / 1e6:.2f} M-parameter `transformers.CLIPModel`
trained from scratch on synthetic images of coloured shapes (`mllm_nb/demo/shapes.py`). In demo
mode (`MLLM_NB_DEMO=1`) Hub ids such as `openai/clip-vit-base-patch32` resolve to this folder, so
the notebooks run offline and give answers that can be checked. It knows nothing about real photos.

- Architecture: CLIP; vision ViT on 64x64 px images in 8 px patches, 3 layers x 96 d;
  text 2 layers x 64 d, 32 positions; joint embedding 64 d.
- Tokenizer: `CLIPTokenizer`, byte-level BPE with {metrics["vocab_size"]} tokens learnt on the English
  and Korean captions; other text falls back to smaller pieces and bytes.
- Classes ({len(CLASSES)}): {classes}.
  Squares and triangles are upright within +-15 degrees.
- Training: {settings.steps} steps of batch {settings.batch_size}, seed {settings.seed}, multi-positive
  contrastive loss, {settings.pool_per_class} images per class; {metrics["train_seconds"]:.0f} s on
  {settings.num_threads} CPU threads (data generation included).
- Zero-shot top-1 on {n_eval} held-out images (seed {eval_seed}):
  English `a photo of a {{}}.` {en:.1%}, Korean `{{}} 사진` {ko:.1%}.

Regenerate (seeded: the same machine and library versions give the same weights; other CPUs or
versions may differ by float rounding, which can move an accuracy by an image or two):

```
python -m mllm_nb.demo.train_clip --seed {settings.seed} --steps {settings.steps} --batch-size {settings.batch_size}
```
"""


def save_fixture(
    out: Path, model: CLIPModel, processor: CLIPProcessor, metrics: dict, settings: TrainSettings
) -> None:
    """Write weights (safetensors), processor files, ``training_metrics.json`` and the model card."""
    n_params = sum(p.numel() for p in model.parameters())
    write_fixture(out, model, processor, metrics, model_card(metrics, settings, n_params))


def train(out: str | Path = DEFAULT_OUT, settings: TrainSettings | None = None) -> dict:
    """Build tokenizer and model, train, evaluate, save to ``out`` and return the metrics."""
    settings = settings or TrainSettings()
    with torch_threads(settings.num_threads):
        started = time.perf_counter()
        seed_everything(settings.seed)
        tokenizer = build_clip_tokenizer(caption_corpus(), model_max_length=TEXT_LENGTH)
        processor = make_processor(tokenizer)
        model = CLIPModel(make_config(tokenizer))
        train_model(model, tokenizer, processor, settings)
        train_seconds = time.perf_counter() - started
        metrics: dict = {"name": FIXTURE_NAME, **asdict(settings), "vocab_size": len(tokenizer)}
        metrics.update(evaluate(model, processor, settings))
        metrics["eval_images"] = settings.eval_per_class * len(CLASSES)
        metrics["eval_seed"] = settings.seed + EVAL_SEED_OFFSET
        metrics["train_seconds"] = round(train_seconds, 1)  # data generation included
        metrics["torch_version"] = torch.__version__
        metrics["transformers_version"] = transformers.__version__
        save_fixture(Path(out), model, processor, metrics, settings)
        return metrics


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    out, settings = settings_from_command_line(__doc__.splitlines()[0], TrainSettings(), DEFAULT_OUT, argv)
    metrics = train(out, settings)
    print(f"zero-shot top-1 English {metrics['zero_shot_top1_en']:.1%}, Korean {metrics['zero_shot_top1_ko']:.1%}")
    print(f"trained in {metrics['train_seconds']:.0f} s; saved to {out}")


if __name__ == "__main__":
    main()
