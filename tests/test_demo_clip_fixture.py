"""The synthetic shapes generator and the committed tiny CLIP fixture (its training script: test_fixture_training_clip)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor, CLIPModel, CLIPProcessor

from mllm_nb.demo import fixture_path, resolve_model
from mllm_nb.demo.shapes import (
    CLASSES,
    COLORS,
    KOREAN_COLORS,
    KOREAN_SHAPES,
    SHAPES,
    Background,
    SceneObject,
    class_label,
    class_labels,
    make_classification_set,
    random_object,
    random_scene,
    render_scene,
)

FIXTURE = Path(__file__).resolve().parents[1] / "mllm_nb" / "demo" / "fixtures" / "tiny-clip"
FRESH_SEED = 424242  # never used by the training script (pool: seed 0, held-out: seed 1000)


def _image_bytes(samples: list[tuple[Image.Image, str, str]]) -> list[bytes]:
    return [img.tobytes() for img, _, _ in samples]


def _pixel(img: Image.Image, xy: tuple[float, float]) -> np.ndarray:
    return np.asarray(img, dtype=np.float32)[int(xy[1]), int(xy[0])]


# --- shapes -----------------------------------------------------------------------------------


def test_same_seed_same_pixels_and_other_seed_differs() -> None:
    first = make_classification_set(2, seed=7)
    again = make_classification_set(2, seed=7)
    other = make_classification_set(2, seed=8)
    assert _image_bytes(first) == _image_bytes(again)
    assert [(c, s) for _, c, s in first] == [(c, s) for _, c, s in again]
    assert _image_bytes(first) != _image_bytes(other)


def test_classification_set_covers_every_class_with_rgb_images() -> None:
    samples = make_classification_set(1, seed=3, size=48)
    assert [(c, s) for _, c, s in samples] == list(CLASSES)
    assert all(img.mode == "RGB" and img.size == (48, 48) for img, _, _ in samples)


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_class_labels_unique_and_complete(lang: str) -> None:
    labels = class_labels(lang)
    assert len(labels) >= 12
    assert len(set(labels)) == len(labels) == len(COLORS) * len(SHAPES)
    assert set(KOREAN_COLORS) == set(COLORS) and set(KOREAN_SHAPES) == set(SHAPES)


def test_class_label_examples() -> None:
    assert class_label("red", "circle") == "red circle"
    assert class_label("red", "circle", lang="ko") == "빨간 원"
    assert class_labels("ko")[0] == class_label(*CLASSES[0], lang="ko")
    with pytest.raises(ValueError):
        class_label("purple", "circle")


@pytest.mark.parametrize("color", list(COLORS))
def test_render_scene_draws_the_object_colour(color: str) -> None:
    obj = SceneObject(color, "circle", center=(32.0, 32.0), size=20.0)
    img = render_scene([obj], size=64, background=(20, 20, 20))
    assert img.mode == "RGB" and img.size == (64, 64)
    assert np.abs(_pixel(img, obj.center) - np.asarray(COLORS[color])).max() <= 2
    assert np.abs(_pixel(img, (1, 1)) - 20).max() <= 2  # corner stays background


def test_square_and_circle_silhouettes_differ() -> None:
    background = Background(color=(240, 240, 240))
    corner = (32 + 0.8 * 20, 32 + 0.8 * 20)  # inside the square (half side 18), outside the circle (radius 20)
    square = render_scene([SceneObject("blue", "square", (32.0, 32.0), 20.0)], 64, background)
    circle = render_scene([SceneObject("blue", "circle", (32.0, 32.0), 20.0)], 64, background)
    assert np.abs(_pixel(square, corner) - np.asarray(COLORS["blue"])).max() <= 2
    assert np.abs(_pixel(circle, corner) - 240).max() <= 2


def test_random_object_respects_requests_and_bounds() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        obj = random_object(rng, color="green", shape="triangle", image_size=64)
        assert (obj.color, obj.shape) == ("green", "triangle")
        assert obj.extent <= obj.center[0] <= 64 - obj.extent
        assert obj.extent <= obj.center[1] <= 64 - obj.extent


def test_random_scene_left_right_is_consistent_with_centres() -> None:
    rng = np.random.default_rng(11)
    for _ in range(30):
        scene = random_scene(rng, n_objects=int(rng.integers(2, 4)))
        ordered = scene.left_to_right()
        xs = [o.center[0] for o in ordered]
        assert xs == sorted(xs) and sorted(ordered, key=id) == sorted(scene.objects, key=id)
        assert all(b - a >= 0.12 * scene.size for a, b in zip(xs, xs[1:]))  # left/right is never ambiguous
        assert scene.is_left_of(ordered[0], ordered[-1]) and not scene.is_left_of(ordered[-1], ordered[0])
        assert scene.labels() == [o.label() for o in ordered]
        for a in scene.objects:  # no overlaps
            for b in scene.objects:
                if a is not b:
                    assert math.dist(a.center, b.center) >= a.extent + b.extent
        # Without noise the centre of every object shows that object's colour.
        clean = render_scene(scene.objects, scene.size, Background(color=scene.background.color))
        for obj in scene.objects:
            assert np.abs(_pixel(clean, obj.center) - np.asarray(obj.fill)).max() <= 3


def test_random_scene_counts_and_requested_attributes() -> None:
    rng = np.random.default_rng(5)
    scene = random_scene(rng, n_objects=3, colors=["red", "red", "blue"], shapes=["circle", "square", "circle"])
    assert scene.count() == 3
    assert scene.count(color="red") == 2
    assert scene.count(shape="circle") == 2
    assert scene.count(color="blue", shape="circle") == 1
    assert scene.render().size == (64, 64)


def test_random_scene_is_deterministic() -> None:
    a = random_scene(np.random.default_rng(9)).render()
    b = random_scene(np.random.default_rng(9)).render()
    assert a.tobytes() == b.tobytes()


# --- committed fixture ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> CLIPModel:
    return CLIPModel.from_pretrained(FIXTURE).eval()


@pytest.fixture(scope="module")
def processor() -> CLIPProcessor:
    return CLIPProcessor.from_pretrained(FIXTURE)


def test_fixture_folder_is_small_and_complete() -> None:
    assert FIXTURE.is_dir()
    names = {p.name for p in FIXTURE.iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "training_metrics.json"} <= names
    total = sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file())
    assert total <= 5 * 1024 * 1024
    assert fixture_path("tiny-clip") == FIXTURE
    path, is_fixture = resolve_model("openai/clip-vit-base-patch32", "clip", demo=True)
    assert is_fixture and Path(path) == FIXTURE
    card = (FIXTURE / "README.md").read_text(encoding="utf-8")
    assert "demo mode only" in card and "python -m fixtures.train_clip" in card


def test_fixture_recorded_metrics_meet_the_bar() -> None:
    metrics = json.loads((FIXTURE / "training_metrics.json").read_text(encoding="utf-8"))
    assert metrics["zero_shot_top1_en"] >= 0.95
    assert metrics["zero_shot_top1_ko"] >= 0.90
    assert isinstance(metrics["seed"], int)


def test_fixture_loads_through_auto_classes(model: CLIPModel) -> None:
    assert isinstance(AutoModel.from_pretrained(FIXTURE), CLIPModel)
    auto_processor = AutoProcessor.from_pretrained(FIXTURE)
    assert isinstance(auto_processor, CLIPProcessor)
    assert model.config.vision_config.image_size == 64
    assert auto_processor.image_processor.crop_size["height"] == 64


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_tokenizer_round_trips_labels(processor: CLIPProcessor, lang: str) -> None:
    tokenizer = processor.tokenizer
    for label in class_labels(lang):
        ids = tokenizer(label)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(ids, skip_special_tokens=True) == label
    unseen = "보라색 육각형" if lang == "ko" else "a purple hexagon"  # falls back to smaller pieces / bytes
    assert tokenizer.decode(tokenizer(unseen)["input_ids"], skip_special_tokens=True) == unseen


@pytest.mark.parametrize(("lang", "template", "bar"), [("en", "a photo of a {}.", 0.90), ("ko", "{} 사진", 0.85)])
def test_fixture_zero_shot_on_fresh_images(
    model: CLIPModel, processor: CLIPProcessor, lang: str, template: str, bar: float
) -> None:
    samples = make_classification_set(4, seed=FRESH_SEED)  # 48 images never seen in training
    prompts = [template.format(label) for label in class_labels(lang)]
    inputs = processor(text=prompts, images=[img for img, _, _ in samples], return_tensors="pt", padding=True)
    with torch.no_grad():
        probs = model(**inputs).logits_per_image.softmax(dim=-1)
    predicted = [CLASSES[i] for i in probs.argmax(dim=-1).tolist()]
    accuracy = np.mean([p == (c, s) for p, (_, c, s) in zip(predicted, samples)])
    assert accuracy >= bar, f"{lang} zero-shot top-1 {accuracy:.1%}"
