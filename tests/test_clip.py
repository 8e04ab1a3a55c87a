"""Zero-shot classification and search (mllm_nb.clip) on the trained tiny CLIP and a tiny SigLIP."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import mllm_nb as mn
from mllm_nb.clip import ClassifyError, Clip, ImageIndex, ImageIndexError
from mllm_nb.demo.shapes import class_label, class_labels, make_classification_set
from mllm_nb.errors import DemoModeError, ModelLoadError

TRAINING_SEEDS_AVOIDED = 31337  # a seed the fixture's training never used


@pytest.fixture(scope="module")
def clip() -> Clip:
    return mn.load_clip("openai/clip-vit-base-patch32", demo=True)


@pytest.fixture(scope="module")
def held_out():
    samples = make_classification_set(n_per_class=4, seed=TRAINING_SEEDS_AVOIDED)
    return [img for img, _, _ in samples], [class_label(c, s) for _, c, s in samples]


class CallCounter:
    """Wraps a model method and counts how many rows it was asked to encode."""

    def __init__(self, model, name):
        self.calls, self.rows = 0, 0
        self._original = getattr(model, name)
        self._model, self._name = model, name
        setattr(model, name, self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        tensor = kwargs.get("input_ids", kwargs.get("pixel_values"))
        self.rows += int(tensor.shape[0])
        return self._original(*args, **kwargs)

    def restore(self):
        setattr(self._model, self._name, self._original)


# ------------------------------------------------------------------------------------- loading


def test_demo_mode_load_is_loud_and_returns_real_hf_objects(capsys):
    from transformers import CLIPModel, CLIPProcessor

    clip = mn.load_clip("openai/clip-vit-base-patch32", demo=True)
    captured = capsys.readouterr()
    out = captured.out
    assert "Loading weights" not in captured.err  # no flaky progress bar for the instant fixture
    assert out.startswith("DEMO MODE: 'openai/clip-vit-base-patch32' -> offline fixture 'tiny-clip'")
    assert "on cpu in float32" in out
    assert isinstance(clip.model, CLIPModel) and isinstance(clip.processor, CLIPProcessor)
    assert clip.scoring == "softmax"
    assert not clip.model.training


def test_demo_mode_from_environment(monkeypatch, capsys):
    monkeypatch.setenv("MLLM_NB_DEMO", "1")
    mn.load_clip("google/siglip-base-patch16-224")
    assert "DEMO MODE" in capsys.readouterr().out


def test_demo_mode_unknown_id_is_a_clear_error():
    with pytest.raises(DemoModeError, match=r"no offline fixture for 'someone/unknown-model'.*MLLM_NB_DEMO"):
        mn.load_clip("someone/unknown-model", demo=True)


def test_missing_model_offline_is_one_actionable_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as info:
        mn.load_clip("no-such-org/no-such-clip", demo=False)
    message = str(info.value)
    assert "\n" not in message
    assert "'no-such-org/no-such-clip'" in message and "MLLM_NB_DEMO=1" in message


def test_local_folder_loads_without_demo_banner(capsys):
    from mllm_nb.demo.mode import fixture_path

    mn.load_clip(fixture_path("tiny-clip"), demo=False)
    out = capsys.readouterr().out
    assert "DEMO MODE" not in out and "CLIPModel" in out


def test_non_dual_encoder_is_refused(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from mllm_nb.demo.mode import fixture_path

    CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=2, image_size=32, patch_size=8)).save_pretrained(tmp_path)
    for name in ("preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "processor_config.json",
                 "special_tokens_map.json", "vocab.json", "merges.txt"):
        source = fixture_path("tiny-clip") / name
        if source.exists():
            (tmp_path / name).write_bytes(source.read_bytes())
    with pytest.raises(ModelLoadError, match="not a CLIP-style dual encoder"):
        mn.load_clip(tmp_path)


# -------------------------------------------------------------------------------- classification


def test_fixture_zero_shot_accuracy_is_at_least_90_percent(clip, held_out):
    images, truth = held_out
    predictions = clip.classify(images, class_labels()).predictions
    accuracy = np.mean([p == t for p, t in zip(predictions, truth)])
    assert accuracy >= 0.90, accuracy


def test_korean_labels_work_on_the_fixture(clip, held_out):
    images, truth = held_out
    korean = clip.classify(images, class_labels("ko"), templates=["{} 사진"]).predictions
    english_of = dict(zip(class_labels("ko"), class_labels("en")))
    accuracy = np.mean([english_of[p] == t for p, t in zip(korean, truth)])
    assert accuracy >= 0.80, accuracy


def test_matches_plain_transformers_computation(clip, held_out):
    images, _ = held_out
    labels = class_labels()[:5]
    prompts = [f"a photo of a {label}." for label in labels]
    inputs = clip.processor(text=prompts, images=images[:3], padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = clip.model(**inputs).logits_per_image.softmax(dim=-1).numpy()
    np.testing.assert_allclose(clip.classify(images[:3], labels).probs, expected, atol=1e-5)


def test_probabilities_sum_to_one_and_shape(clip, held_out):
    images, _ = held_out
    result = clip.classify(images[:7], class_labels())
    assert result.probs.shape == (7, 12)
    np.testing.assert_allclose(result.probs.sum(axis=1), 1.0, atol=1e-5)


def test_batch_equals_single_and_batch_size_is_irrelevant(clip, held_out):
    images, _ = held_out
    labels = class_labels()
    batched = clip.classify(images[:5], labels, batch_size=32).probs
    small_batches = clip.classify(images[:5], labels, batch_size=2).probs
    singles = np.vstack([clip.classify(img, labels).probs for img in images[:5]])
    np.testing.assert_allclose(batched, singles, atol=1e-5)
    np.testing.assert_allclose(batched, small_batches, atol=1e-5)


def test_permuting_labels_permutes_probabilities(clip, held_out):
    images, _ = held_out
    labels = class_labels()
    order = np.random.default_rng(0).permutation(len(labels))
    base = clip.classify(images[:4], labels).probs
    permuted = clip.classify(images[:4], [labels[i] for i in order]).probs
    np.testing.assert_allclose(permuted, base[:, order], atol=1e-6)


def test_top_k_and_predictions(clip, held_out):
    images, truth = held_out
    result = clip.classify(images[:2], class_labels())
    top = result.top(3)
    assert len(top) == 2 and all(len(pairs) == 3 for pairs in top)
    for pairs, row in zip(top, result.probs):
        assert [p for _, p in pairs] == sorted(row, reverse=True)[:3]
    assert result.predictions == [pairs[0][0] for pairs in top]
    assert "image 1:" in str(result)
    with pytest.raises(ClassifyError, match="k must be at least 1"):
        result.top(0)


def test_label_embeddings_are_computed_once_per_prompt(held_out):
    clip = mn.load_clip("openai/clip-vit-base-patch32", demo=True)
    images, _ = held_out
    counter = CallCounter(clip.model, "get_text_features")
    try:
        clip.classify(images[:2], class_labels())
        assert counter.rows == 12
        clip.classify(images[2:4], class_labels())
        assert counter.rows == 12, "label embeddings must come from the cache the second time"
        clip.classify(images[:2], class_labels(), templates="ensemble")
        assert counter.rows == 12 + 12 * (len(mn.clip.ENSEMBLE_TEMPLATES) - 1)  # 'a photo of a {}.' was cached
    finally:
        counter.restore()


def test_images_are_batched(held_out):
    clip = mn.load_clip("openai/clip-vit-base-patch32", demo=True)
    images, _ = held_out
    counter = CallCounter(clip.model, "get_image_features")
    try:
        clip.classify(images[:10], class_labels(), batch_size=4)
        assert (counter.calls, counter.rows) == (3, 10)
    finally:
        counter.restore()


def test_ensemble_is_the_normalised_mean_of_template_embeddings(clip):
    templates = ["a photo of a {}.", "a drawing of a {}."]
    got = clip.label_embeddings(["red circle", "blue square"], templates)
    prompts = [t.format(label) for label in ["red circle", "blue square"] for t in templates]
    inputs = clip.processor(text=prompts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        feats = clip.model.get_text_features(**inputs).pooler_output
    feats = torch.nn.functional.normalize(feats, dim=-1).view(2, 2, -1).mean(dim=1)
    torch.testing.assert_close(got, torch.nn.functional.normalize(feats, dim=-1), atol=1e-5, rtol=0)


def test_ensemble_templates_change_the_scores(clip, held_out):
    images, _ = held_out
    single = clip.classify(images[:3], class_labels()).probs
    ensemble = clip.classify(images[:3], class_labels(), templates="ensemble").probs
    assert not np.allclose(single, ensemble)


@pytest.mark.parametrize(
    ("labels", "templates", "message"),
    [
        ([], None, "labels is empty"),
        ("cat", None, "not the single string 'cat'"),
        (["cat", "cat", "dog"], None, r"duplicates \['cat'\]"),
        (["cat", ""], None, "non-empty string"),
        (["cat", "dog"], ["a photo of a cat"], "must contain '\\{\\}' exactly once"),
        (["cat", "dog"], ["{} and {}"], "exactly once"),
        (["cat", "dog"], [], "templates is empty"),
    ],
)
def test_bad_labels_and_templates(clip, labels, templates, message):
    image = Image.new("RGB", (64, 64), "red")
    with pytest.raises(ClassifyError, match=message) as info:
        clip.classify(image, labels, templates=templates)
    assert "\n" not in str(info.value)


def test_bad_image_is_an_image_load_error(clip, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_text("<html>not a picture</html>")
    with pytest.raises(mn.ImageLoadError, match="broken.png"):
        clip.classify(str(bad), ["cat", "dog"])


def test_classify_a_folder(clip, tmp_path):
    samples = make_classification_set(n_per_class=1, seed=5)[:3]
    for i, (image, _, _) in enumerate(samples):
        image.save(tmp_path / f"{i}.png")
    result = clip.classify(tmp_path, class_labels())
    assert result.probs.shape == (3, 12)
    assert result.predictions == [class_label(c, s) for _, c, s in samples]


def test_plot_returns_a_figure(clip, held_out):
    from matplotlib.figure import Figure

    images, _ = held_out
    assert isinstance(clip.classify(images[:2], class_labels()).plot(k=3), Figure)


# ----------------------------------------------------------------------------------- SigLIP path


@pytest.fixture(scope="module")
def tiny_siglip() -> Clip:
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    from mllm_nb.demo.mode import fixture_path

    torch.manual_seed(0)
    tokenizer = mn.load_clip(fixture_path("tiny-clip")).processor.tokenizer
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": tokenizer.model_max_length}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).eval()
    processor = SiglipProcessor(image_processor=SiglipImageProcessor(size={"height": 32, "width": 32}),
                                tokenizer=tokenizer)
    return Clip(model=model, processor=processor, name="tiny-siglip")


def test_siglip_uses_independent_sigmoids(tiny_siglip, held_out):
    images, _ = held_out
    labels = ["red circle", "blue square", "green triangle"]
    result = tiny_siglip.classify(images[:3], labels)
    assert tiny_siglip.scoring == "sigmoid" and result.scoring == "sigmoid"
    prompts = [f"a photo of a {label}." for label in labels]
    inputs = tiny_siglip.processor(text=prompts, images=images[:3], padding="max_length", return_tensors="pt")
    with torch.inference_mode():
        expected = torch.sigmoid(tiny_siglip.model(**inputs).logits_per_image).numpy()
    np.testing.assert_allclose(result.probs, expected, atol=1e-5)
    assert not np.allclose(result.probs.sum(axis=1), 1.0)


# -------------------------------------------------------------------------------------- search


def _gallery(folder, seed=11):
    truth = {}
    for i, (image, color, shape) in enumerate(make_classification_set(n_per_class=2, seed=seed)):
        image.save(folder / f"img_{i:02d}.png")
        truth[f"img_{i:02d}.png"] = class_label(color, shape)
    return truth


def test_search_finds_the_right_pictures(clip, tmp_path):
    truth = _gallery(tmp_path)
    index = clip.index(tmp_path)
    assert len(index) == 24
    np.testing.assert_allclose(np.linalg.norm(index.embeddings, axis=1), 1.0, atol=1e-5)
    for query_label in ("blue triangle", "yellow circle", "green square"):
        hits = index.search(f"a photo of a {query_label}.", k=2)
        assert [h.rank for h in hits] == [1, 2]
        assert hits[0].score >= hits[1].score
        assert {truth[os.path.basename(h.source)] for h in hits} == {query_label}


def test_index_of_in_memory_images_and_show(clip, held_out):
    from matplotlib.figure import Figure

    images, truth = held_out
    index = clip.index(images[:12])
    results = index.search("a photo of a " + truth[0] + ".", k=3)
    assert results[0].source.startswith("image ") and results[0].load().size == images[0].size
    assert isinstance(results.show(), Figure)
    assert len(str(results).splitlines()) == 3


def test_index_save_and_load_roundtrip(clip, tmp_path):
    _gallery(tmp_path / "g" if (tmp_path / "g").mkdir() is None else tmp_path)
    index = clip.index(tmp_path / "g")
    saved = index.save(tmp_path / "idx.safetensors")
    again = ImageIndex.load(saved, clip)
    np.testing.assert_array_equal(again.embeddings, index.embeddings)
    assert again.sources == index.sources
    assert again.search("a photo of a red circle.", k=2).sources == index.search("a photo of a red circle.", k=2).sources


def test_index_load_refuses_other_models_and_other_files(clip, tmp_path):
    index = clip.index([Image.new("RGB", (64, 64), "red")])
    path = index.save(tmp_path / "idx.safetensors")
    other = Clip(model=clip.model, processor=clip.processor, name="another/model")
    with pytest.raises(ImageIndexError, match="built with 'openai/clip-vit-base-patch32'"):
        ImageIndex.load(path, other)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not an index")
    with pytest.raises(ImageIndexError, match="rebuild it"):
        ImageIndex.load(junk, clip)
    with pytest.raises(ImageIndexError, match="no model attached"):
        ImageIndex.load(path).search("x")


def test_folder_cache_only_embeds_new_or_changed_files(tmp_path):
    clip = mn.load_clip("openai/clip-vit-base-patch32", demo=True)
    folder = tmp_path / "g"
    folder.mkdir()
    _gallery(folder)
    cache = tmp_path / "g.index"
    first = clip.index(folder, cache=cache)
    counter = CallCounter(clip.model, "get_image_features")
    try:
        second = clip.index(folder, cache=cache)
        assert counter.rows == 0
        np.testing.assert_array_equal(first.embeddings, second.embeddings)
        Image.new("RGB", (64, 64), "blue").save(folder / "img_00.png")  # changed
        Image.new("RGB", (64, 64), "red").save(folder / "new.png")  # new
        third = clip.index(folder, cache=cache)
        assert counter.rows == 2 and len(third) == 25
    finally:
        counter.restore()


def test_unreadable_files_are_skipped_with_a_warning(clip, tmp_path):
    Image.new("RGB", (64, 64), "red").save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"Skipped 1 unreadable file\(s\): bad.png"):
        index = clip.index(tmp_path)
    assert [os.path.basename(s) for s in index.sources] == ["good.png"]


def test_empty_folder_and_bad_query(clip, tmp_path):
    with pytest.raises(ImageIndexError, match="has no image files"):
        clip.index(tmp_path)
    index = clip.index([Image.new("RGB", (64, 64), "red")])
    with pytest.raises(ClassifyError, match="non-empty string"):
        index.search("  ")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(index.search("red", k=10)) == 1
