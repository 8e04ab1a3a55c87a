"""mllm_nb.context_budget: image/text tokens vs the context, KV cache vs free memory, and the refusal in VLM.

The token rules are checked against real transformers processors built from the catalog configs of
LLaVA-1.5, LLaVA-NeXT (anyres), OneVision and Interleave: the vision settings (image size, patch size,
grid pinpoints, feature strategy) are the real ones, only the tokenizer is a tiny word-level one and
the models are shrunk (one 16-wide layer), so every count is the one the real checkpoint gets.
"""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure

from catalog_models import (
    FAMILIES,
    IMAGE_ID,
    INTERLEAVE,
    LLAVA,
    NEXT,
    NEXT_4K,
    ONEVISION,
    image,
    processor_from_catalog,
    tiny_vlm,
)

from mllm_nb import context_budget as budget_module
from mllm_nb import catalog
from mllm_nb.context_budget import BudgetError, BudgetReport, budget, plot_image_tokens
from mllm_nb.errors import MllmNbError
from mllm_nb.vlm import VLM


# images written back to back (no separator), as OneVision's template does: runs of image tokens touch












def processor_image_tokens(processor, sizes: list[tuple[int, int]], onevision: bool) -> int:
    """How many image tokens the processor itself writes for one prompt with images of ``sizes``."""
    pictures = [image(w, h) for w, h in sizes]
    messages = [{"role": "user", "content": [{"type": "image"} for _ in pictures] + [{"type": "text", "text": "w1"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(images=[pictures] if onevision else pictures, text=[prompt], return_tensors="pt")
    return int((inputs["input_ids"] == IMAGE_ID).sum())


@pytest.fixture(scope="module")
def processors() -> dict:
    return {model_id: processor_from_catalog(model_id) for model_id in FAMILIES}


# ------------------------------------------------------------------------------ the token rules

SIZES = [
    [(336, 336)],
    [(800, 600)],
    [(1000, 300)],
    [(200, 900)],
    [(1000, 300), (200, 900)],
    [(640, 480), (640, 480), (64, 64)],
]


@pytest.mark.parametrize("model_id", FAMILIES)
@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "+".join(f"{w}x{h}" for w, h in s))
def test_config_rules_count_what_the_processor_writes(processors, model_id, sizes):
    report = budget(model_id, sizes, "w1")
    expected = processor_image_tokens(processors[model_id], sizes, model_id == ONEVISION)
    assert report.image_tokens_total == sum(report.image_tokens) == expected
    assert len(report.image_tokens) == len(sizes) and not report.text_exact


def test_rules_give_the_catalogs_documented_numbers():
    one = {m: budget(m, [(768, 768)]).image_tokens[0] for m in FAMILIES}
    assert one == {LLAVA: 576, NEXT: 2928, ONEVISION: 3699, INTERLEAVE: 729}
    assert budget(NEXT, [(336, 336)]).image_tokens == (1176,)
    assert budget(ONEVISION, [(384, 384)]).image_tokens == (1485,)
    assert budget(ONEVISION, [(768, 768)] * 3).image_tokens == (730, 730, 730)  # several images: no anyres
    assert budget(ONEVISION, [(2304, 2304)]).image_tokens[0] <= catalog.get(ONEVISION).image_tokens.max


@pytest.mark.parametrize("model_id", FAMILIES)
def test_a_loaded_vlm_counts_with_its_processor(model_id):
    vlm = tiny_vlm(model_id)
    sizes = [(900, 500), (300, 300)]
    pictures = [image(w, h) for w, h in sizes]
    report = budget(vlm, pictures, "w1 w2 w3", max_new_tokens=16)
    inputs = vlm.prepare(pictures, "w1 w2 w3")
    ids = inputs["input_ids"][0]
    assert report.image_tokens_total == int((ids == IMAGE_ID).sum())
    assert report.text_tokens == ids.shape[0] - report.image_tokens_total and report.text_exact
    assert report.image_tokens == budget(model_id, sizes, "w1").image_tokens  # the breakdown agrees
    assert report.image_sizes == tuple(sizes) and report.context_length == 4096
    assert "processor" in report.source and report.fits


def test_honeybee_counts_its_visual_tokens():
    from tiny_honeybee import QUERIES, tiny_config, tiny_processor

    import mllm_nb.honeybee as hb

    for entry in catalog.entries("honeybee"):
        assert budget(entry.id, [(900, 500)] * 2).image_tokens == (entry.image_tokens.max,) * 2
    vlm = VLM(model=hb.HoneybeeForConditionalGeneration(tiny_config()).eval(), processor=tiny_processor(), name="hb")
    pictures = [image(90, 50), image(30, 30)]
    report = budget(vlm, pictures, "what?", max_new_tokens=4)
    ids = vlm.prepare(pictures, "what?")["input_ids"][0]
    assert int((ids == vlm.model.config.image_token_id).sum()) == 2 * QUERIES
    # each image brings its visual tokens and its own "Human: <image>" line of the template
    bare = vlm.processor(text=[vlm.question_prompt(0, "what?")])["input_ids"][0]
    line = (ids.shape[0] - len(bare)) // 2 - QUERIES
    assert 0 < line <= 16
    assert report.image_tokens == (QUERIES + line,) * 2
    assert report.text_tokens == len(bare) == ids.shape[0] - sum(report.image_tokens)


def test_sizes_stand_in_for_images_and_images_give_their_size():
    assert budget(NEXT, [image(800, 600)]).image_tokens == budget(NEXT, [(800, 600)]).image_tokens
    assert budget(NEXT, (800, 600)).image_sizes == ((800, 600),)
    assert budget(LLAVA, None).image_tokens == () and budget(LLAVA, []).n_images == 0


# ------------------------------------------------------------------------------ the verdict


def test_context_overflow_names_the_numbers_and_the_fix():
    report = budget(NEXT_4K, [(1000, 800)] * 3, "Compare the images.", max_new_tokens=64)
    assert not report.fits and report.context_length == 4096
    assert report.image_tokens == (2438, 2438, 2438)
    problem = report.problems[0]
    assert "7,314 image tokens" in problem and "4,096-token context" in problem
    assert "fewer or smaller images" in problem and "image_grid_pinpoints" in problem
    with pytest.raises(BudgetError, match="4,096-token context") as info:
        report.raise_if_over()
    assert info.value.report is report and isinstance(info.value, MllmNbError)


def test_max_new_tokens_over_the_context():
    report = budget(LLAVA, [(640, 480)], "w1", max_new_tokens=4000)
    room = 4096 - report.prompt_tokens
    assert report.problems == (report.problems[0],)
    assert f"max_new_tokens <= {room:,}, or use fewer or smaller images" in report.problems[0]
    assert "image_grid_pinpoints" not in report.problems[0] and report.problems[0].count("max_new_tokens") == 2
    assert budget(LLAVA, [(640, 480)], "w1", max_new_tokens=room).fits


def test_kv_cache_against_free_memory(monkeypatch):
    report = budget(LLAVA, [(640, 480)], "w1", max_new_tokens=100, dtype="float16")
    assert report.kv_bytes_per_token == 524_288  # Vicuna-7B in fp16: 0.5 MiB per token
    assert report.kv_bytes == 524_288 * (report.prompt_tokens + 100)
    monkeypatch.setattr(budget_module, "free_memory", lambda device=None: (200_000_000, "GPU cuda:0"))
    short = budget(LLAVA, [(640, 480)], "w1", max_new_tokens=100, dtype="float16")
    assert not short.fits and "GPU cuda:0 has only 0.20 GB free" in short.problems[0]
    assert "smaller max_new_tokens" in short.problems[0]


def test_free_memory_is_system_ram_without_cuda():
    import psutil

    free, where = budget_module.free_memory("cpu")
    assert where == "system RAM" and 0 < free <= psutil.virtual_memory().total


def test_report_text_and_html():
    report = budget(NEXT_4K, [(1000, 800)] * 2, "w1")
    text = str(report)
    assert text.startswith(f"Budget of {NEXT_4K}: does not fit") and "2,438 for 1000x800" in text
    assert "estimated, no tokenizer" in text and "Problems:" in text and "the weights are not counted" in text
    vlm_report = BudgetReport(**{**report.__dict__, "model": "<b>x</b>", "problems": ("a < b",)})
    markup = vlm_report._repr_html_()
    assert "&lt;b&gt;x&lt;/b&gt;" in markup and "a &lt; b" in markup and "<b>x</b>" not in markup


def test_bad_arguments_fail_with_one_line():
    with pytest.raises(BudgetError, match="question must be a string"):
        budget(LLAVA, [(64, 64)], 42)
    with pytest.raises(BudgetError, match="max_new_tokens must be a non-negative integer; got -1"):
        budget(LLAVA, [(64, 64)], "w1", max_new_tokens=-1)
    with pytest.raises(MllmNbError, match="does not exist"):
        budget("./no/such/model", [(64, 64)])


# ------------------------------------------------------------------------------ the refusal in VLM


@pytest.fixture
def short_context_vlm(monkeypatch):
    """A tiny LLaVA-1.5 with a 700-token context (one image is 576 tokens) whose model must not run."""
    vlm = tiny_vlm(LLAVA, context=700)

    def must_not_run(*args, **kwargs):
        raise AssertionError("a forward pass ran before the budget check")

    monkeypatch.setattr(vlm.model, "forward", must_not_run)
    monkeypatch.setattr(vlm.model, "generate", must_not_run)
    return vlm


def test_ask_refuses_before_any_forward_pass(short_context_vlm):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the multi-image warning of LLaVA-1.5
        with pytest.raises(BudgetError) as info:
            short_context_vlm.ask([image(64, 64), image(64, 64)], "w1 w2")
    message = str(info.value)
    assert "1,152 image tokens" in message and "700-token context" in message and "\n" not in message
    assert info.value.report.image_tokens == (576, 576)


def test_stream_and_batch_ask_refuse_before_any_forward_pass(short_context_vlm):
    with pytest.raises(BudgetError, match="exceeds the 700-token context; use max_new_tokens <= "):
        next(short_context_vlm.stream(image(64, 64), "w1", max_new_tokens=500))
    with pytest.raises(BudgetError, match="exceeds the 700-token context"):
        short_context_vlm.batch_ask([(image(64, 64), "w1"), (None, "w2")], max_new_tokens=500)


def test_memory_refusal_before_any_forward_pass(short_context_vlm, monkeypatch):
    monkeypatch.setattr(budget_module, "free_memory", lambda device=None: (1_000, "system RAM"))
    with pytest.raises(BudgetError, match="system RAM has only 0.0 MB free; .*smaller batch_size"):
        short_context_vlm.batch_ask([(image(64, 64), "w1"), (None, "w2")], max_new_tokens=8)


def test_a_default_max_new_tokens_is_capped_to_the_context(monkeypatch):
    vlm = tiny_vlm(LLAVA, context=700)
    seen: list[int] = []

    def recording_generate(**kwargs):
        seen.append(kwargs["max_new_tokens"])
        return kwargs["input_ids"]

    monkeypatch.setattr(vlm.model, "generate", recording_generate)
    vlm.ask(image(64, 64), "w1")
    prompt = vlm.prepare(image(64, 64), "w1")["input_ids"].shape[1]
    assert seen == [700 - prompt]  # the default 256 would overrun the context
    vlm.ask(image(64, 64), "w1", max_new_tokens=5)
    assert seen[-1] == 5


def test_a_passed_max_new_tokens_is_capped_only_when_asked_and_says_so(monkeypatch):
    """What a chat panel's slider needs: an upper bound, lowered to what the context leaves, with a warning."""
    from mllm_nb.context_budget import ContextWarning

    vlm = tiny_vlm(LLAVA, context=700)
    inputs = vlm.prepare(image(64, 64), "w1")
    prompt = inputs["input_ids"].shape[1]
    with pytest.raises(BudgetError, match="use max_new_tokens <= "):
        vlm.check_budget(inputs, {"max_new_tokens": 500}, [[image(64, 64)]])
    with pytest.warns(ContextWarning, match=f"max new tokens lowered from 500 to {700 - prompt}"):
        generation = vlm.check_budget(inputs, {"max_new_tokens": 500}, [[image(64, 64)]], cap=True)
    assert generation["max_new_tokens"] == 700 - prompt
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a bound that fits is kept without a word
        assert vlm.check_budget(inputs, {"max_new_tokens": 8}, [[image(64, 64)]], cap=True)["max_new_tokens"] == 8


# ------------------------------------------------------------------------------ the plot


def test_plot_image_tokens_draws_each_models_numbers():
    before = plt.get_fignums()
    fig = plot_image_tokens(image_size=(768, 768))
    assert isinstance(fig, Figure) and plt.get_fignums() == before
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[:4] == [m.rpartition("/")[2] for m in (LLAVA, NEXT, ONEVISION, INTERLEAVE)]
    alone, among = ([round(b.get_width()) for b in bars] for bars in ax.containers)
    assert alone[:4] == [576, 2928, 3699, 729] and among[:4] == [576, 2928, 730, 729]
    honeybee = sorted({e.image_tokens.max for e in catalog.entries("honeybee")})  # one bar per M, when listed
    assert alone[4:] == among[4:] == honeybee and len(labels) == 4 + len(honeybee)
    assert "768x768" in ax.get_title()


def test_plot_image_tokens_bad_size():
    from mllm_nb.display import DisplayError

    with pytest.raises(DisplayError, match=r"image_size must be \(width, height\)"):
        plot_image_tokens([LLAVA], image_size=(0, 10))


def test_the_refusal_is_not_preceded_by_the_tokenizers_vague_length_warning(short_context_vlm, capfd):
    short_context_vlm.processor.tokenizer.model_max_length = 100  # the prompt (576 image tokens) is far longer
    short_context_vlm.__post_init__()  # what VLM does when it is made
    with warnings.catch_warnings(), pytest.raises(BudgetError, match="more than the 700-token context"):
        warnings.simplefilter("ignore")  # the multi-image warning of LLaVA-1.5
        short_context_vlm.ask([image(64, 64)] * 2, "w1")
    assert "Token indices sequence length" not in capfd.readouterr().err


def test_a_chat_keeps_working_as_its_images_fill_the_context(recwarn):
    """The demo's refusals (issue 18): a panel's 256-token slider over a short context, and a third image
    in a conversation. The slider is lowered, older images are left out, each with a note in the status."""
    from mllm_nb.widgets import ChatPanel

    vlm = tiny_vlm(LLAVA, context=700)  # one image is 576 tokens: two never fit
    real_generate, asked = vlm.model.generate, []

    def short_answers(**kwargs):  # a random tiny model may talk up to the limit; these answers are 3 tokens
        asked.append(kwargs["max_new_tokens"])
        return real_generate(**{**kwargs, "max_new_tokens": 3})

    vlm.model.generate = short_answers
    panel = ChatPanel(vlm, max_new_tokens=256)
    assert panel.send("w1", images=[image(64, 64)]) is not None, panel.error
    assert panel.error is None and "max new tokens lowered from 256" in panel.notes[-1]
    assert "note: max new tokens lowered" in panel.status.value
    assert panel.send("w2", images=[image(64, 64, (20, 200, 20))]) is not None, panel.error
    assert panel.error is None and "1 earlier image left out" in " ".join(panel.notes)
    assert len(panel.conversation.images) == 2  # the conversation shown keeps both; only the prompt leaves one out
    assert panel.send("w3 w4") is not None and panel.error is None
    assert asked[0] < 256 and all(tokens <= 256 for tokens in asked)  # generate got the lowered bound
