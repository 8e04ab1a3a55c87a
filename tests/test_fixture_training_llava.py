"""fixtures.train_llava: the tiny LLaVA fixture's training script (dialogues, supervision targets, losses, a
three-step run whose folder loads like a Hub LLaVA); several losses are checked on the committed fixture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from fixtures.train_llava import (
    DEFAULT_OUT,
    IMAGE_TOKEN,
    MAX_IMAGES,
    TrainSettings,
    attention_mass_losses,
    build_dialogues,
    build_model,
    build_tokenizer,
    cache_vision_features,
    collate,
    encode_dialogues,
    head_attention,
    image_index_losses,
    length_groups,
    make_dialogue,
    make_pair_dialogue,
    make_probes,
    make_processor,
    named_images,
    named_object,
    train,
    train_model,
    training_loss,
)
from fixtures.training import settings_from_command_line
from mllm_nb.demo.scene_qa import KINDS, PAIR_KINDS, QA, make_pair_qa_set, make_qa, make_qa_set
from mllm_nb.demo.shapes import COLORS, SHAPES, Background, Scene, SceneObject

FIXTURE = Path(__file__).resolve().parents[1] / "mllm_nb" / "demo" / "fixtures" / "tiny-llava"
FRESH_SEED = 424242  # never used by the training script (pool: seed 0, held-out: seed 1000)
IMAGE_TOKENS = 64  # (64 px / 8 px patches)^2, CLS dropped


def _messages(question: str, n_images: int = 1) -> list[dict]:
    content: list[dict] = [{"type": "image"} for _ in range(n_images)]
    return [{"role": "user", "content": [*content, {"type": "text", "text": question}]}]


def _scene(*objects: tuple[str, str, float]) -> Scene:
    """A scene with objects ``(color, shape, x)`` given in any order."""
    return Scene([SceneObject(c, s, (x, 32.0), 6.0) for c, s, x in objects], Background())


def _generate(model: LlavaForConditionalGeneration, inputs: dict, **kwargs: int) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(**inputs, do_sample=False, **kwargs)


@pytest.fixture(scope="module")
def processor() -> LlavaProcessor:
    return AutoProcessor.from_pretrained(FIXTURE)


@pytest.fixture(scope="module")
def model() -> LlavaForConditionalGeneration:
    return AutoModelForImageTextToText.from_pretrained(FIXTURE).eval()


@pytest.mark.slow
def test_training_smoke_produces_a_loadable_folder(tmp_path: Path) -> None:
    settings = TrainSettings(
        steps=3, batch_size=4, pool_size=16, pair_pool_size=3, eval_size=7, pair_eval_size=3, warmup_steps=1,
        log_every=0, vision_steps=2, vision_batch_size=4, vision_pool_size=8,
    )
    metrics = train(tmp_path, settings, quantized_eval=False)
    assert metrics["steps"] == 3 and set(KINDS) <= set(metrics["accuracy_float32"])
    assert set(PAIR_KINDS) <= set(metrics["pair_accuracy_float32"]) and metrics["pair_eval_items"] == 3
    assert json.loads((tmp_path / "training_metrics.json").read_text(encoding="utf-8"))["steps"] == 3
    loaded = LlavaForConditionalGeneration.from_pretrained(tmp_path)
    assert "attention supervision" in (tmp_path / "README.md").read_text(encoding="utf-8")
    proc = AutoProcessor.from_pretrained(tmp_path)
    qa = make_qa_set(1, seed=2)[0]
    prompt = proc.apply_chat_template(_messages(qa.question), add_generation_prompt=True)
    out = _generate(loaded, proc(images=qa.images, text=prompt, return_tensors="pt"), max_new_tokens=3)
    assert out.shape[0] == 1


def test_training_pool_has_two_image_chats_each_with_its_swapped_twin() -> None:
    dialogues = build_dialogues(TrainSettings(pool_size=7, pair_pool_size=6))
    singles, pairs = dialogues[:7], dialogues[7:]
    assert len(pairs) == 12 and all(len(d[0].images) == 1 for d in singles)
    assert [d[0].kind for d in pairs[::2]] == [PAIR_KINDS[i % 3] for i in range(6)]
    for pair, twin in zip(pairs[::2], pairs[1::2]):
        assert all(len(qa.images) == 2 for qa in pair + twin) and len(pair) == len(twin)
        assert pair[0].images[0].tobytes() == twin[0].images[1].tobytes()
        for qa, other in zip(pair, twin):
            flipped = {"first": "second", "second": "first"}.get(qa.answer, qa.answer)
            assert qa.question.lower().rstrip("?.") == other.question.lower().rstrip("?.") and other.answer == flipped


def _encoded(qa: QA):
    processor = make_processor(build_tokenizer())
    return processor, encode_dialogues(processor, [[qa]])[0]


def test_named_object_is_read_from_the_question() -> None:
    image = _scene(("red", "circle", 16.0)).render()
    assert named_object(QA([image], "What colour is the triangle?", "red", "color")) == (None, "triangle")
    assert named_object(QA([image], "what shape is the green object", "circle", "shape")) == ("green", None)
    assert named_object(QA([image], "Is the red circle on the left or on the right?", "left", "side")) == (
        "red",
        "circle",
    )
    assert named_object(QA([image], "How many shapes can you see?", "one", "count")) is None


def test_supervision_targets_point_at_the_named_object_and_its_image() -> None:
    """The attention target is exactly the visual tokens of the object the question names (here the left one
    of two), taken from the answer position; every visual token knows its image, text tokens do not."""
    scene = _scene(("red", "circle", 14.0), ("blue", "square", 50.0))
    qa = QA([scene.render()], "Is the red circle on the left or on the right?", "left", "side", [scene])
    processor, example = _encoded(qa)
    ids = example.input_ids
    image_token_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    visual = (ids == image_token_id).nonzero().squeeze(1)
    [(turn, answer_at, mask)] = example.attend_targets
    assert len(visual) == IMAGE_TOKENS and turn == 0 and processor.tokenizer.decode(ids[answer_at]) == "ASSISTANT:"
    named = mask[visual].view(8, 8)  # patch grid, raster order
    assert 2 <= int(named.sum()) <= 9 and not named[:, 4:].any() and named[3:5, 1:3].any()
    assert not mask[ids != image_token_id].any()
    assert example.named_labels == [(list(COLORS).index("red"), SHAPES.index("circle"))]
    assert (example.image_index[visual] == 0).all() and (example.image_index[ids != image_token_id] == -100).all()


def test_two_image_target_lies_in_the_image_the_answer_names() -> None:
    pair = make_pair_qa_set(12, seed=FRESH_SEED + 3)
    for qa in (qa for qa in pair if qa.kind == "which_image"):
        _, example = _encoded(qa)
        [(_, _, mask)] = example.attend_targets
        assert set(example.image_index[mask].tolist()) == {["first", "second"].index(qa.answer)}
        assert sorted(set(example.image_index.tolist())) == [-100, 0, 1]


def test_route_targets_are_the_words_that_name_the_object_in_that_turn() -> None:
    """The question-word targets of each turn are the tokens of that turn's own question that spell the named
    colour and shape (a word glued to its question mark included), never an earlier question or answer."""
    processor = make_processor(build_tokenizer())
    scene = _scene(("red", "circle", 14.0), ("blue", "triangle", 50.0))
    image = scene.render()
    chat = [
        QA([image], "Is the blue triangle on the left or on the right?", "right", "side", [scene]),
        QA([image], "How many shapes are there?", "two", "count", [scene]),
        QA([image], "What colour is the circle?", "red", "color", [scene]),
        QA([image], "What shape is the red object?", "circle", "shape", [scene]),
    ]
    [example] = encode_dialogues(processor, [chat])
    tokens = processor.tokenizer.convert_ids_to_tokens(example.input_ids.tolist())
    named = [(turn, [tokens[i] for i in mask.nonzero().squeeze(1).tolist()]) for turn, _, mask in example.route_targets]
    assert named == [(0, ["▁blue", "▁triangle"]), (2, ["▁circle?"]), (3, ["▁red"])]
    assert [t[:2] for t in example.route_targets] == [t[:2] for t in example.attend_targets]


def test_describe_targets_point_at_each_object_where_the_answer_names_it() -> None:
    """Captions (English and Korean) and place answers: from the token just before each colour word of the
    answer, the visual tokens of that object, in the answer's order (left to right)."""
    processor = make_processor(build_tokenizer())
    scene = _scene(("blue", "triangle", 50.0), ("red", "circle", 14.0))
    image = scene.render()
    chat = [
        QA([image], "Describe the image.", "a red circle on the left and a blue triangle on the right", "caption", [scene]),
        QA([image], "What colour is the circle?", "red", "color", [scene]),
        QA([image], "Which object is on the right?", "a blue triangle", "position", [scene]),
        QA([image], "그림에 무엇이 있나요?", "빨간 원과 파란 삼각형", "caption_ko", [scene], lang="ko"),
    ]
    [example] = encode_dialogues(processor, [chat])
    tokens = processor.tokenizer.convert_ids_to_tokens(example.input_ids.tolist())
    visual = example.input_ids == processor.tokenizer.convert_tokens_to_ids("<image>")
    found = []
    for turn, at, mask in example.describe_targets:
        columns = mask[visual].view(8, 8).nonzero()[:, 1]
        found.append((turn, tokens[at], tokens[at + 1], "left" if columns.max() < 4 else "right"))
    assert found == [
        (0, "▁a", "▁red", "left"),
        (0, "▁a", "▁blue", "right"),
        (2, "▁a", "▁blue", "right"),
        (3, "▁ASSISTANT:", "▁빨간", "left"),
        (3, "▁원과", "▁파란", "right"),
    ]


def test_collate_keeps_the_targets_of_the_supervised_turns() -> None:
    """Count and same-shape questions name no object, which-image questions do; ``attend_turns`` limits the
    targets to the first turns of each chat."""
    processor = make_processor(build_tokenizer())
    count = [make_qa(np.random.default_rng(1), "count")]
    chat = make_pair_dialogue(np.random.default_rng(9), "same_shape", 4)
    assert [qa.kind for qa in chat] == ["same_shape", "which_image", "total_count"]
    examples = encode_dialogues(processor, [count, chat])
    assert examples[0].attend_targets == [] and [t[0] for t in examples[1].attend_targets] == [1]
    answers = (examples[1].input_ids == processor.tokenizer.convert_tokens_to_ids("▁ASSISTANT:")).nonzero()
    assert len(collate(examples, pad_id=0, attend_turns=1)["attend_row"]) == 0
    batch = collate(examples, pad_id=0, attend_turns=4)
    assert batch["attend_row"].tolist() == [1] and batch["attend_from"].tolist() == [int(answers[1])]
    assert batch["route_row"].tolist() == [1] and batch["route_from"].tolist() == [int(answers[1])]
    assert batch["word_mask"].sum() == 2  # "green square" or the like
    named = named_object(chat[1])
    assert batch["named_color"].tolist() == [list(COLORS).index(named[0])]
    assert batch["named_shape"].tolist() == [SHAPES.index(named[1])]
    width = batch["input_ids"].shape[1]
    assert batch["named_mask"].shape == (1, width)
    assert batch["named_mask"].sum() == examples[1].attend_targets[0][2].sum() > 0
    assert batch["image_index"].shape == (2, width) and (batch["image_index"] >= 0).sum() == 3 * IMAGE_TOKENS
    caption = encode_dialogues(processor, [[make_qa(np.random.default_rng(2), "caption")]])
    assert caption[0].attend_targets == [] and len(collate(caption, 0, attend_turns=4)["attend_row"]) == 0


def test_attention_mass_loss_is_minus_log_of_the_mass_on_the_target() -> None:
    attention = torch.tensor([[0.1, 0.6, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25]])  # (targets, keys)
    named = torch.tensor([[False, True, True, False], [True, False, False, False]])
    assert attention_mass_losses(attention, named).tolist() == pytest.approx([-np.log(0.8), -np.log(0.25)])
    assert attention_mass_losses(attention[:0], named[:0]).shape == (0,)


@pytest.fixture(scope="module")
def eager_model() -> LlavaForConditionalGeneration:
    """The fixture with eager attention, the implementation that returns attention weights."""
    return LlavaForConditionalGeneration.from_pretrained(FIXTURE, attn_implementation="eager").eval()


def test_head_attention_equals_what_eager_attention_returns(
    processor: LlavaProcessor, eager_model: LlavaForConditionalGeneration
) -> None:
    """The supervised head's weights are recomputed from the layer input so training can run with SDPA;
    they must be exactly the model's own attention, on a right-padded batch of different lengths."""
    model = eager_model
    rng = np.random.default_rng(3)
    examples = encode_dialogues(processor, [make_dialogue(rng, kind, 4) for kind in ("caption", "side", "color")])
    batch = collate(examples, processor.tokenizer.pad_token_id)
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "pixel_values")}
    with torch.no_grad():
        out = model(**inputs, output_attentions=True, output_hidden_states=True)
        rows, queries = torch.tensor([0, 1, 2, 2]), torch.tensor([40, 70, 5, len(examples[2].input_ids) - 1])
        for layer, head in ((1, 0), (2, 2), (3, 3)):
            ours = head_attention(model, out.hidden_states[layer], layer, head, rows, queries)
            eager = out.attentions[layer][rows, head, queries]
            torch.testing.assert_close(ours, eager, atol=1e-6, rtol=1e-5)
            assert (ours[2, 6:] == 0).all() and ours[2, :6].sum() == pytest.approx(1.0)


def test_image_index_loss_reads_visual_tokens_only() -> None:
    probe = torch.nn.Linear(3, MAX_IMAGES)
    torch.nn.init.zeros_(probe.weight), torch.nn.init.zeros_(probe.bias)
    hidden = torch.randn(1, 5, 3)
    hidden[0, 0] = float("nan")  # a text token: must not reach the loss
    index = torch.tensor([[-100, 0, 0, 1, 1]])
    assert image_index_losses(probe, hidden, index).tolist() == pytest.approx([np.log(MAX_IMAGES)] * 4)
    with torch.no_grad():
        probe.weight.zero_(), probe.bias.copy_(torch.tensor([9.0, 0.0, 0.0, 0.0]))
    assert image_index_losses(probe, hidden, torch.tensor([[-100, 0, 0, 0, 0]])).max().item() < 1e-3


@pytest.mark.slow
def test_supervised_head_learns_to_look_at_the_named_object() -> None:
    """A few steps on a fixed pool raise the supervised head's attention on the named objects."""
    settings = TrainSettings(steps=12, batch_size=8, lr=1e-2, warmup_steps=1, log_every=0, text_layers=3)
    tokenizer = build_tokenizer()
    processor = make_processor(tokenizer)
    model = build_model(tokenizer, settings)
    rng = np.random.default_rng(5)
    pool = encode_dialogues(processor, [make_dialogue(rng, kind, 1) for kind in ("side", "color", "shape") * 3])
    batch = collate(pool, tokenizer.pad_token_id)
    with torch.no_grad():
        before = training_loss(model, make_probes(model), [batch], settings)["attend"].item()
    train_model(model, pool, settings)
    with torch.no_grad():
        after = training_loss(model, make_probes(model), [batch], settings)["attend"].item()
    assert after < 0.6 * before, (before, after)


def test_training_loss_by_length_groups_is_the_whole_batch_loss(
    processor: LlavaProcessor, eager_model: LlavaForConditionalGeneration
) -> None:
    """Cutting a batch into length groups (less padding) and computing logits only at the answers give
    the loss of the plain formulation: token-mean cross-entropy of the full logits, mean attention loss
    over targets (eager attention), mean probe losses over visual tokens and over the two-image targets (the
    head's output read where the model itself computes it, at the input of the layer's output projection)."""
    model = eager_model
    rng = np.random.default_rng(8)
    chats = [make_dialogue(rng, kind, 4) for kind in ("side", "caption", "color", "shape")]
    chats += [make_pair_dialogue(rng, kind, 4) for kind in PAIR_KINDS]
    examples = encode_dialogues(processor, chats)
    settings = TrainSettings(attend_turns=4)
    probe = make_probes(model)
    groups = length_groups(examples, 3)
    assert sorted(len(e.input_ids) for g in groups for e in g) == sorted(len(e.input_ids) for e in examples)
    assert max(len(e.input_ids) for e in groups[0]) <= min(len(e.input_ids) for e in groups[-1])
    pad = processor.tokenizer.pad_token_id
    with torch.no_grad():
        grouped = training_loss(model, probe, [collate(g, pad, 4) for g in groups], settings)
        batch = collate(examples, pad, 4)
        heads_out: list[torch.Tensor] = []
        o_proj = model.model.language_model.layers[settings.attend_layer].self_attn.o_proj
        hook = o_proj.register_forward_hook(lambda module, args, output: heads_out.append(args[0]))
        out = model(
            **{key: batch[key] for key in ("input_ids", "attention_mask", "pixel_values")},
            output_attentions=True,
            output_hidden_states=True,
        )
        hook.remove()
        answer = torch.nn.functional.cross_entropy(
            out.logits[:, :-1].reshape(-1, out.logits.shape[-1]), batch["labels"][:, 1:].reshape(-1), ignore_index=-100
        )
        eager = out.attentions[settings.attend_layer][batch["attend_row"], settings.attend_head, batch["attend_from"]]
        attend = -torch.log((eager * batch["named_mask"]).sum(-1).clamp(min=1e-6)).mean()
        eager = out.attentions[settings.route_layer][batch["route_row"], settings.route_head, batch["route_from"]]
        route = -torch.log((eager * batch["word_mask"]).sum(-1).clamp(min=1e-6)).mean()
        eager = out.attentions[settings.describe_layer][
            batch["describe_row"], settings.describe_head, batch["describe_from"]
        ]
        describe = -torch.log((eager * batch["object_mask"]).sum(-1).clamp(min=1e-6)).mean()
        at_answer = out.hidden_states[settings.attend_layer][batch["attend_row"], batch["attend_from"]]
        query = torch.cat(
            [
                torch.nn.functional.cross_entropy(probe[name](at_answer), batch[f"named_{name}"], reduction="none")[
                    batch[f"named_{name}"] >= 0
                ]
                for name in ("color", "shape")
            ]
        ).mean()
        visual = batch["image_index"] >= 0
        image = torch.nn.functional.cross_entropy(
            probe["image"](out.hidden_states[settings.image_index_layer][visual]), batch["image_index"][visual]
        )
        rows, target = batch["attend_row"], named_images(batch["named_mask"], batch["image_index"][batch["attend_row"]])
        head_dim = model.config.text_config.hidden_size // model.config.text_config.num_attention_heads
        at = slice(settings.attend_head * head_dim, (settings.attend_head + 1) * head_dim)
        carried = heads_out[0][rows, batch["attend_from"], at][target >= 0]
        carry = torch.nn.functional.cross_entropy(probe["carry"](carried), target[target >= 0])
    assert len(batch["attend_row"]) >= 6  # side, colour, shape and the which-image turns
    # abs: the trained fixture's attention losses are ~1e-5 (-log of a mass within 1e-4 of 1), where float32
    # rounding of the mass alone moves them by 1e-9
    assert grouped["answer"].item() == pytest.approx(answer.item(), rel=1e-5, abs=1e-8)
    assert grouped["attend"].item() == pytest.approx(settings.attend_weight * attend.item(), rel=1e-5, abs=1e-8)
    assert grouped["route"].item() == pytest.approx(settings.route_weight * route.item(), rel=1e-5, abs=1e-8)
    assert grouped["query"].item() == pytest.approx(settings.query_weight * query.item(), rel=1e-5, abs=1e-8)
    assert len(batch["describe_row"]) >= 2  # the caption's objects
    assert grouped["describe"].item() == pytest.approx(settings.describe_weight * describe.item(), rel=1e-5, abs=1e-8)
    assert grouped["image"].item() == pytest.approx(settings.image_index_weight * image.item(), rel=1e-5, abs=1e-8)
    assert (target >= 0).sum() >= 2  # the which-image turns
    assert grouped["carry"].item() == pytest.approx(settings.carry_weight * carry.item(), rel=1e-5, abs=1e-8)


def test_named_images_are_known_only_for_several_images() -> None:
    image_index = torch.tensor([[-100, 0, 0, 1, 1, -100], [-100, 0, 0, 1, 1, -100], [-100, 0, 0, 0, 0, -100]])
    named = torch.tensor([[0, 0, 0, 1, 1, 0], [0, 1, 0, 1, 0, 0], [0, 1, 1, 0, 0, 0]], dtype=torch.bool)
    assert named_images(named, image_index).tolist() == [1, -100, -100]  # second image; both images; one image


def test_cached_vision_features_give_the_loss_of_the_pixels(
    processor: LlavaProcessor, model: LlavaForConditionalGeneration
) -> None:
    """The frozen tower runs once per pool image; the embeddings built from its cached features are the ones
    LlavaModel builds from the pixels, so every part of the loss is unchanged."""
    rng = np.random.default_rng(11)
    chats = [make_dialogue(rng, "side", 4), make_pair_dialogue(rng, "which_image", 4), make_dialogue(rng, "color", 2)]
    pad, settings, probe = processor.tokenizer.pad_token_id, TrainSettings(), make_probes(model)
    with torch.no_grad():
        pixels = training_loss(model, probe, [collate(encode_dialogues(processor, chats), pad, 4)], settings)
        examples = encode_dialogues(processor, chats)
        cache_vision_features(model, examples, batch_size=2)  # two tower batches
        cached = collate(examples, pad, 4)
        features = training_loss(model, probe, [cached], settings)
    assert all(e.pixel_values is None for e in examples) and "pixel_values" not in cached
    assert cached["vision_features"].shape == (4, IMAGE_TOKENS, model.config.vision_config.hidden_size)
    assert set(features) == {"answer", "attend", "query", "route", "describe", "carry", "image"}
    for part, value in pixels.items():
        assert features[part].item() == pytest.approx(value.item(), rel=1e-5), part


def test_command_line_settings_keep_the_other_defaults() -> None:
    out, settings = settings_from_command_line("t", TrainSettings(), DEFAULT_OUT, ["--steps", "7", "--seed", "3"])
    assert out == DEFAULT_OUT and (settings.steps, settings.seed) == (7, 3)
    assert settings.batch_size == TrainSettings().batch_size and settings.rope_type == TrainSettings().rope_type
