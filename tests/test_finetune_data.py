"""Fine-tuning examples (mllm_nb.finetune_data): folders, JSONL/CSV files and lists; every bad row reported in one
sentence and skipped, an unusable set refused in one sentence, and the demo concept's data (mllm_nb.demo.new_concept)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mllm_nb.finetune_data import (
    Example,
    ExampleError,
    ExampleSet,
    load_examples,
    read_examples,
)

RED = (200, 30, 30)


def write_folder(root: Path, rows: list[dict], name: str = "examples.jsonl") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), RED).save(root / "red.png")
    (root / "broken.png").write_bytes(b"this is not a png")
    Image.new("RGB", (32, 32), RED).save(root.parent / "outside.png")
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    (root / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


BAD_ROWS = [
    {"image": "red.png", "question": "w1 w2", "answer": "w3"},  # line 1: good
    {"image": "broken.png", "question": "w1", "answer": "w3"},  # line 2: unreadable image
    {"image": "red.png", "question": "w1", "answer": ""},  # line 3: missing answer
    {"image": "../outside.png", "question": "w1", "answer": "w3"},  # line 4: leaves the folder
    "{not json",  # line 5
    {"image": "missing.png", "question": "w1", "answer": "w3"},  # line 6: no such file
    {"image": "red.png", "answer": "w3"},  # line 7: no question
    {"question": "w1", "answer": "w3"},  # line 8: no image
    {"file": "red.png", "caption": "w5 w6"},  # line 9: a caption row (caption_folder's format)
]


def test_bad_rows_are_reported_one_sentence_each_and_skipped(tmp_path, capsys):
    data = load_examples(write_folder(tmp_path / "set", BAD_ROWS))
    printed = capsys.readouterr().out
    assert len(data) == 2 and [e.where for e in data] == ["line 1 of examples.jsonl", "line 9 of examples.jsonl"]
    reasons = {skip.where.split(" of ")[0]: skip.reason for skip in data.skipped}
    assert reasons["line 2"].startswith("its image 'broken.png' cannot be read")
    assert reasons["line 3"] == "it has no answer"
    assert reasons["line 4"] == "its image '../outside.png' is outside the examples' folder, so it was refused"
    assert reasons["line 5"].startswith("it is not valid JSON")
    assert reasons["line 6"].startswith("its image 'missing.png' cannot be read")
    assert reasons["line 7"].startswith("it has an answer but no question")
    assert reasons["line 8"] == "it has no image"
    assert printed.startswith("Examples: 2 kept, 7 skipped.")
    for line in ("2", "3", "4", "5", "6", "7", "8"):
        assert f"  skipped line {line} of examples.jsonl: " in printed
    assert all("\n" not in skip.reason for skip in data.skipped)
    caption = data[1]
    assert caption.question == "Describe this image in one sentence." and caption.answer == "w5 w6"
    assert caption.images == [(tmp_path / "set" / "red.png").resolve()]


def test_csv_rows_and_a_file_path_work_like_a_folder(tmp_path):
    root = write_folder(tmp_path / "set", [], name="unused.jsonl")
    (root / "examples.csv").write_text("image,question,answer\nred.png,w1 w2,w3\nred.png,w1,\n", encoding="utf-8")
    for source in (root, root / "examples.csv", str(root / "examples.csv")):
        data = read_examples(source)
        assert [(e.question, e.answer) for e in data] == [("w1 w2", "w3")]
        assert [str(s) for s in data.skipped] == ["line 3 of examples.csv: it has no answer"]


def test_lists_of_tuples_dicts_and_qa_objects(tmp_path):
    from mllm_nb.demo.scene_qa import make_qa

    image = Image.new("RGB", (8, 8), RED)
    qa = make_qa(np.random.default_rng(0), kind="color")
    data = read_examples([(image, "w1", "w2"), {"images": [image, image], "question": "w1", "answer": "w3"},
                          qa, (image, "a caption"), ("w1", "w2"), 42])
    assert [e.answer for e in data] == ["w2", "w3", qa.answer, "a caption"]
    assert len(data[1].images) == 2 and data[3].question == "Describe this image in one sentence."
    assert [s.where for s in data.skipped] == ["item 4", "item 5"]
    assert data.skipped[1].reason.startswith("it is neither a dict")


def test_an_empty_or_all_bad_set_is_one_sentence(tmp_path):
    with pytest.raises(ExampleError, match=r"^the list holds no examples; add rows") as empty:
        read_examples([])
    assert "\n" not in str(empty.value)
    with pytest.raises(ExampleError, match=r"^All 2 rows of the list were skipped \(the first, item 0: it has no answer\)"):
        read_examples([("a.png", "w1", ""), ("a.png", "w1", None)])
    with pytest.raises(ExampleError, match="has no examples.jsonl or examples.csv"):
        read_examples(tmp_path)
    with pytest.raises(ExampleError, match="does not exist"):
        read_examples(tmp_path / "nope.jsonl")
    with pytest.raises(ExampleError, match="must be a folder"):
        read_examples(42)
    (tmp_path / "examples.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(ExampleError, match="examples.jsonl holds no examples"):
        read_examples(tmp_path)


def test_a_row_over_the_context_is_skipped_with_its_token_count(tiny_llava_dir, capsys):
    import mllm_nb as mn

    vlm = mn.load_vlm(str(tiny_llava_dir), quantization=None, device_map="cpu")
    context = vlm.model.config.text_config.max_position_embeddings
    image = Image.new("RGB", (32, 32), RED)
    long_question = " ".join(["w1"] * context)
    data = load_examples([(image, "w1 w2", "w3"), (image, long_question, "w3")], vlm)
    assert len(data) == 1 and data.longest == 16 + 4 + 2  # image tokens, USER: w1 w2 ASSISTANT:, answer and end
    (skip,) = data.skipped
    assert skip.where == "item 1"
    assert skip.reason.startswith(f"it needs {context + 20:,} tokens with its image tokens, over the model's {context:,}-token")
    assert f"model context {context:,}" in capsys.readouterr().out
    with pytest.raises(ExampleError, match=r"^All 1 rows of the examples were skipped \(the first, item 0: it needs"):
        load_examples([(image, long_question, "w3")], vlm)


def test_examples_summary_lists_at_most_ten_skipped_rows():
    data = ExampleSet([Example(["a.png"], "q", "a")], [])
    from mllm_nb.finetune_data import Skipped

    data.skipped = [Skipped(f"item {i}", "it has no answer") for i in range(13)]
    lines = data.summary().splitlines()
    assert lines[0] == "Examples: 1 kept, 13 skipped." and lines[-1] == "  ... and 3 more skipped rows"
    assert len(lines) == 12


# ------------------------------------------------------------------------------------ the demo concept


def test_concept_questions_are_about_stars_the_fixture_never_saw():
    from mllm_nb.demo import new_concept as nc
    from mllm_nb.demo.shapes import COLORS, SHAPES

    assert nc.CONCEPT == "star" and nc.CONCEPT not in SHAPES
    heldout = nc.make_concept_heldout(20, seed=5)
    assert {qa.answer for qa in heldout} == {"star"}
    for qa in heldout:
        (scene,) = qa.scenes
        assert [o.shape for o in scene.objects].count("star") == 1
        assert len({o.color for o in scene.objects}) == len(scene.objects)
        assert {o.color for o in scene.objects} <= set(COLORS)
    train = nc.make_concept_examples(40, seed=0, replay=0.5)
    kinds = [qa.kind for qa in train]
    assert sum(k in nc.CONCEPT_KINDS for k in kinds) == 20
    assert {"star_shape", "other_shape"} <= set(kinds)
    assert nc.make_concept_examples(40, seed=0)[7].question == train[7].question  # seeded
    held_images = {qa.images[0].tobytes() for qa in heldout}
    assert not held_images & {qa.images[0].tobytes() for qa in train}


def test_the_star_is_drawn_and_the_old_shapes_are_unchanged():
    from mllm_nb.demo.shapes import SceneObject, render_scene

    star_object = SceneObject("red", "star", (32.0, 32.0), 12.0)
    pixels = np.asarray(render_scene([star_object]))
    reddish = (pixels[..., 0] > 150) & (pixels[..., 1] < 100)
    radius = star_object.extent
    assert 150 < int(reddish.sum()) < 0.5 * np.pi * radius**2  # points and notches: well under the enclosing circle
    assert reddish[32, 32] and reddish[int(32 - 0.9 * radius), 32]  # centre and the upper point filled
    assert not reddish[32, int(32 + 0.8 * radius)]  # between two points (a notch direction) empty near the rim
    circle = np.asarray(render_scene([SceneObject("red", "circle", (32.0, 32.0), 14.0)]))
    assert int(((circle[..., 0] > 150) & (circle[..., 1] < 100)).sum()) > int(reddish.sum())


def test_accuracy_line_format():
    from mllm_nb.demo.new_concept import accuracy_line

    assert accuracy_line("new concept", 0.0, 0.87) == "new concept accuracy: before 0% -> after 87%"


def test_demo_concept_sets_refuse_bad_settings_in_one_sentence() -> None:
    from mllm_nb.demo import new_concept
    from mllm_nb.errors import MllmNbError

    with pytest.raises(MllmNbError, match="replay must be a share between 0 and 1, got 1.5"):
        new_concept.make_concept_examples(8, replay=1.5)
    with pytest.raises(MllmNbError, match="Unknown concept question kind 'hexagon'"):
        new_concept.concept_qa(np.random.default_rng(0), "hexagon")
