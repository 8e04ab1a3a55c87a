"""mllm_nb.metrics (CER / WER) and mllm_nb.text_reading (mn.ocr: reading text with a VLM)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mllm_nb.errors import MllmNbError
from mllm_nb.metrics import MetricError, cer, edit_distance, wer
from mllm_nb.text_reading import OCR_PROMPT, OcrError, ocr, ocr_folder

# ------------------------------------------------------------------------------------ metrics


@pytest.mark.parametrize(
    "reference,hypothesis,expected",
    [
        ("HELLO", "HELLO", 0.0),
        ("HELLO", "HALLO", 1 / 5),  # one substitution
        ("HELLO", "HELO", 1 / 5),  # one deletion
        ("HELLO", "HELLLO", 1 / 5),  # one insertion
        ("kitten", "sitting", 3 / 6),  # the textbook example: 2 substitutions + 1 insertion
        ("AB", "", 1.0),
        ("AB", "XYZW", 4 / 2),  # can exceed 1
        ("", "", 0.0),
    ],
)
def test_cer_known_values(reference: str, hypothesis: str, expected: float) -> None:
    assert cer(reference, hypothesis) == pytest.approx(expected)


def test_wer_known_values() -> None:
    assert wer("the cat sat on the mat", "the cat sat on the mat") == 0.0
    assert wer("the cat sat on the mat", "the cat sit on mat") == pytest.approx(2 / 6)
    assert wer("a b", "a  b\n") == 0.0  # words are whitespace-separated pieces
    assert wer("one", "one two three") == pytest.approx(2.0)


def test_lists_are_scored_at_corpus_level() -> None:
    # 1 error over 2 + 4 reference characters, not the mean of per-item rates (0 and 1/4)
    assert cer(["AB", "CDEF"], ["AB", "CDXF"]) == pytest.approx(1 / 6)
    assert cer(("AB", "CD"), ("AB", "CD")) == 0.0
    assert wer(["the cat sat", "on the mat"], ["the cat sat", "on a mat"]) == pytest.approx(1 / 6)
    # an empty reference inside a list is fine as long as the corpus has characters
    assert cer(["", "ABCD"], ["X", "ABCD"]) == pytest.approx(1 / 4)


def test_ignore_case_and_edit_distance() -> None:
    assert cer("Hello", "hello") == pytest.approx(1 / 5)
    assert cer("Hello", "hello", ignore_case=True) == 0.0
    assert wer("Big Cat", "big cat", ignore_case=True) == 0.0
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance(["a", "b"], ["a", "c", "b"]) == 1


@pytest.mark.parametrize(
    "reference,hypothesis,message",
    [
        ("", "ABC", r"The reference has no characters, so the error rate of a non-empty hypothesis is undefined"),
        (None, "ABC", r"cer\(\) got a string and a None; pass two strings or two lists of strings"),
        ("ABC", ["ABC"], r"cer\(\) got a string and a list; pass two strings"),
        (["A", "B"], ["A"], r"cer\(\) got 2 reference\(s\) but 1 hypothesis\(es\); pass one hypothesis per reference"),
        (["A", 3], ["A", "B"], r"cer\(\) reference\[1\] must be a string; got int"),
        (["A"], [None], r"cer\(\) hypothesis\[0\] must be a string; got None"),
        ([], [], r"cer\(\) got empty lists; pass at least one reference and hypothesis"),
        (12, 13, r"cer\(\) reference must be a string or a list of strings; got int"),
    ],
)
def test_bad_inputs_give_one_line_errors(reference, hypothesis, message: str) -> None:
    with pytest.raises(MetricError, match=message) as info:
        cer(reference, hypothesis)
    assert isinstance(info.value, MllmNbError) and "\n" not in str(info.value)


def test_wer_with_an_empty_reference_names_words() -> None:
    with pytest.raises(MetricError, match="The reference has no words"):
        wer("   ", "hello")


# ------------------------------------------------------------------------------------ ocr


class RecordingVLM:
    """Stands in for mllm_nb.vlm.VLM and records how ocr() calls it."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def ask(self, images, question, **generation):
        self.calls.append(("ask", images, question, generation))
        return "TEXT"

    def batch_ask(self, items, batch_size=8, **generation):
        self.calls.append(("batch_ask", list(items), batch_size, generation))
        return [f"TEXT{i}" for i in range(len(items))]

    def caption_folder(self, folder, out_jsonl, prompt=None, **options):
        self.calls.append(("caption_folder", folder, out_jsonl, prompt, options))
        return {"captioned": 0, "skipped": 0, "failed": 0}


def test_ocr_uses_the_honeybee_prompt_and_passes_generation_options() -> None:
    vlm, image = RecordingVLM(), Image.new("RGB", (8, 8))
    assert OCR_PROMPT == "Please read all texts in image"
    assert ocr(vlm, image, max_new_tokens=5) == "TEXT"
    assert ocr(vlm, image, prompt="What is written?") == "TEXT"
    assert vlm.calls == [
        ("ask", image, OCR_PROMPT, {"max_new_tokens": 5}),
        ("ask", image, "What is written?", {}),
    ]


def test_ocr_reads_a_list_one_image_at_a_time_in_batches() -> None:
    vlm, images = RecordingVLM(), [Image.new("RGB", (8, 8), (i, 0, 0)) for i in range(3)]
    assert ocr(vlm, images, batch_size=2, max_new_tokens=4) == ["TEXT0", "TEXT1", "TEXT2"]
    kind, items, batch_size, generation = vlm.calls[0]
    assert kind == "batch_ask" and batch_size == 2 and generation == {"max_new_tokens": 4}
    assert items == [(image, OCR_PROMPT) for image in images]


def test_ocr_folder_delegates_with_the_ocr_prompt(tmp_path) -> None:
    vlm = RecordingVLM()
    assert ocr_folder(vlm, tmp_path, tmp_path / "out.jsonl", batch_size=4) == {
        "captioned": 0,
        "skipped": 0,
        "failed": 0,
    }
    assert vlm.calls == [("caption_folder", tmp_path, tmp_path / "out.jsonl", OCR_PROMPT, {"batch_size": 4})]


@pytest.mark.parametrize(
    "vlm,image,message",
    [
        (
            "not a model",
            Image.new("RGB", (8, 8)),
            r"ocr\(\) needs a model loaded with mllm_nb.load_vlm\(...\); got str",
        ),
        (RecordingVLM(), None, r"ocr\(\) needs an image \(a path, URL, PIL image or array\); got None"),
        (RecordingVLM(), [], r"ocr\(\) got an empty list of images; pass at least one image"),
    ],
)
def test_ocr_bad_inputs(vlm, image, message: str) -> None:
    with pytest.raises(OcrError, match=message):
        ocr(vlm, image)


def test_ocr_with_a_real_tiny_honeybee_matches_ask(tmp_path) -> None:
    from tiny_honeybee import save_tiny_honeybee

    import mllm_nb

    vlm = mllm_nb.load_vlm(save_tiny_honeybee(tmp_path / "hb"), quantization=None)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (30, 60, 3), dtype=np.uint8)) for _ in range(3)]
    one = ocr(vlm, images[0], max_new_tokens=4)
    assert isinstance(one, str) and one == vlm.ask(images[0], OCR_PROMPT, max_new_tokens=4)
    assert ocr(vlm, images, batch_size=2, max_new_tokens=4) == [
        vlm.ask(i, OCR_PROMPT, max_new_tokens=4) for i in images
    ]
    folder = tmp_path / "scans"
    folder.mkdir()
    images[0].save(folder / "a.png")
    assert ocr_folder(vlm, folder, tmp_path / "scans.jsonl", progress=False)["captioned"] == 1
    (line,) = [json.loads(x) for x in (tmp_path / "scans.jsonl").read_text().splitlines()]
    assert line == {"file": "a.png", "caption": ocr(vlm, images[0])}
