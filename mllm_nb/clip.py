"""Zero-shot image classification and text-to-image search with CLIP-style dual encoders.

``load_clip`` returns a :class:`Clip` that keeps the real Hugging Face ``model`` and ``processor``
and adds the two things a notebook needs: ``classify`` (prompt templates, optional ensembling,
cached label embeddings, batched images) and ``index`` / ``ImageIndex.search``.

CLIP scores labels against each other (softmax); SigLIP-family models score each label on its own
(sigmoid), so their probabilities need not sum to one.
"""

from __future__ import annotations

import numbers
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mllm_nb.clip_cache import (
    ImageIndexError,
    cached_rows,
    embeddings_problem,
    fingerprint,
    index_path,
    read_index,
    write_cache,
    write_index,
)
from mllm_nb.errors import MllmNbError, ModelLoadError
from mllm_nb.hardware import Placement, PlacementError, choose_placement, dtype_name

DEFAULT_TEMPLATE = "a photo of a {}."

# Our own short ensemble: several phrasings of "a picture of X" in different styles.
ENSEMBLE_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a picture of a {}.",
    "an image showing a {}.",
    "a close-up photo of a {}.",
    "a photo of the {}.",
    "a blurry photo of a {}.",
    "a drawing of a {}.",
    "a {}.",
)

SIGMOID_MODEL_TYPES = frozenset({"siglip", "siglip2"})
_TEXT_CACHE_SIZE = 4096


class ClassifyError(MllmNbError, ValueError):
    """Bad labels, templates or inputs given to ``classify`` / ``search``."""


# ----------------------------------------------------------------------------------------- loading


def load_clip(
    name_or_path: str | os.PathLike = "openai/clip-vit-base-patch32",
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    demo: bool | None = None,
) -> Clip:
    """Load a CLIP or SigLIP checkpoint (Hub id or local folder) and wrap it in a :class:`Clip`.

    The device defaults to the GPU when there is one; the dtype to :func:`mllm_nb.best_dtype`
    for that device (float16 on a T4, bfloat16 from sm80 on, float32 on CPU). One line says what
    was loaded, where, in which dtype, and why. In demo mode (``MLLM_NB_DEMO=1`` or ``demo=True``)
    a Hub id resolves to the project's tiny CLIP trained on synthetic shapes, and the line says so.

    >>> clip = load_clip("openai/clip-vit-base-patch32", demo=True)  # doctest: +SKIP
    DEMO MODE: ...
    >>> clip.classify(image, ["cat", "dog"]).top(1)  # doctest: +SKIP
    """
    from transformers import AutoModel, AutoProcessor

    from mllm_nb.demo.mode import demo_banner, quiet_fixture_loading, resolve_model

    requested = os.fspath(name_or_path)
    path, is_fixture = resolve_model(requested, "clip", demo)
    placement = _placement(device, dtype)
    device, dtype = placement.device, placement.dtype
    try:
        with quiet_fixture_loading(is_fixture):
            model = AutoModel.from_pretrained(path, dtype=dtype)
            processor = AutoProcessor.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ModelLoadError(_load_failure_message(requested, err)) from err
    _check_dual_encoder(model, requested)
    model.to(device).eval()
    clip = Clip(model=model, processor=processor, name=requested)
    if is_fixture:
        print(demo_banner(requested, path, "CLIPModel"))
    print(
        f"Loaded {requested} ({type(model).__name__}, {_count_params(model) / 1e6:.1f}M parameters, "
        f"{clip.scoring}) on {device} in {dtype_name(dtype)}: {placement.why}."
    )
    return clip


def _placement(device: str | torch.device | None, dtype: torch.dtype | str | None) -> Placement:
    """The shared device and dtype choice, with a bad argument reported as a ``ClassifyError``."""
    try:
        return choose_placement(device, dtype)
    except PlacementError as err:
        raise ClassifyError(str(err)) from err


def _load_failure_message(requested: str, err: Exception) -> str:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (
        f"Could not load {requested!r} ({reason[:200]}); check the id or folder, connect to the "
        "internet for Hub ids, or set MLLM_NB_DEMO=1 to use the offline demo model."
    )


def _check_dual_encoder(model: Any, requested: str) -> None:
    if not (hasattr(model, "get_text_features") and hasattr(model, "get_image_features")):
        raise ModelLoadError(
            f"{requested!r} is a {type(model).__name__}, not a CLIP-style dual encoder; "
            "use a CLIP or SigLIP checkpoint such as 'openai/clip-vit-base-patch32'."
        )


def _count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------ the wrapper


@dataclass
class Clip:
    """A CLIP-style model with its processor; ``model`` and ``processor`` are the real HF objects.

    >>> clip = load_clip(demo=True)  # doctest: +SKIP
    >>> result = clip.classify(["cat.jpg", "dog.jpg"], ["cat", "dog"])  # doctest: +SKIP
    >>> result.top(1)  # doctest: +SKIP
    [[('cat', 0.98)], [('dog', 0.97)]]
    """

    model: Any
    processor: Any
    name: str = ""
    batch_size: int = 32
    _text_cache: OrderedDict[str, torch.Tensor] = field(default_factory=OrderedDict, repr=False)

    @property
    def scoring(self) -> str:
        """``"softmax"`` (CLIP: labels compete) or ``"sigmoid"`` (SigLIP: each label on its own)."""
        model_type = getattr(self.model.config, "model_type", "")
        return "sigmoid" if model_type in SIGMOID_MODEL_TYPES else "softmax"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def embedding_dim(self) -> int:
        """The length of this model's embeddings, measured on a short text (kept in the text cache)."""
        return int(self.embed_texts(["a photo."]).shape[1])

    # -------------------------------------------------------------------------- embeddings

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings (float32, on CPU), one row per text; cached per text."""
        texts = _check_texts(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            for text, row in zip(missing, self._encode_texts(missing)):
                self._remember(text, row)
        for text in texts:
            self._text_cache.move_to_end(text)
        return torch.stack([self._text_cache[t] for t in texts])

    def embed_images(self, images: Any, batch_size: int | None = None, progress: bool | None = None) -> torch.Tensor:
        """L2-normalised image embeddings (float32, on CPU) for anything ``load_images`` accepts."""
        pil_images = _as_image_list(images)
        return self._encode_images(pil_images, self.batch_size if batch_size is None else batch_size, progress)

    def label_embeddings(self, labels: Sequence[str], templates: Sequence[str] | str | None = None) -> torch.Tensor:
        """One normalised embedding per label: the mean over templates of each filled-in prompt."""
        labels = _check_labels(labels)
        templates = _check_templates(templates)
        prompts = [template.format(label) for label in labels for template in templates]
        per_prompt = self.embed_texts(prompts).view(len(labels), len(templates), -1)
        return torch.nn.functional.normalize(per_prompt.mean(dim=1), dim=-1)

    # ----------------------------------------------------------------------------- tasks

    def classify(
        self,
        images: Any,
        labels: Sequence[str],
        templates: Sequence[str] | str | None = None,
        batch_size: int | None = None,
        progress: bool | None = None,
    ) -> Classification:
        """Zero-shot classification of one or many images over ``labels``.

        ``templates``: None for ``"a photo of a {}."``, ``"ensemble"`` for the built-in set of
        phrasings (their text embeddings are averaged), or your own list of strings with ``{}``.

        >>> clip.classify("cat.jpg", ["cat", "dog", "horse"], templates="ensemble").top(2)  # doctest: +SKIP
        [[('cat', 0.95), ('dog', 0.04)]]
        """
        label_emb = self.label_embeddings(labels, templates)
        pil_images = _as_image_list(images)
        image_emb = self._encode_images(pil_images, self.batch_size if batch_size is None else batch_size, progress)
        probs = self._scores_to_probs(image_emb @ label_emb.T)
        return Classification(labels=list(labels), probs=probs, images=pil_images, scoring=self.scoring)

    def index(
        self,
        images_or_folder: Any,
        batch_size: int | None = None,
        cache: str | os.PathLike | None = None,
        progress: bool | None = None,
    ) -> ImageIndex:
        """Embed a folder (or a list of images) once, for fast text search.

        With a folder, ``cache`` names a file that keeps the embeddings between runs: files whose
        size and modification time are unchanged are not embedded again. Unreadable files are
        skipped with a warning that names them.

        >>> idx = clip.index("photos/", cache="photos.index")  # doctest: +SKIP
        >>> idx.search("a dog on a beach", k=3).show()  # doctest: +SKIP
        """
        from mllm_nb.images import image_files

        folder = _as_folder(images_or_folder)
        if folder is None and cache is not None:
            raise ImageIndexError(
                "cache= works only when indexing a folder; pass the folder's path, or call index.save(path) "
                "on the index of these images."
            )
        if folder is None:
            pil_images = _as_image_list(images_or_folder)
            emb = self._encode_images(pil_images, self.batch_size if batch_size is None else batch_size, progress)
            sources = [f"image {i + 1}" for i in range(len(pil_images))]
            return ImageIndex(emb.numpy(), sources, self.name, clip=self, images=pil_images)
        files = image_files(folder)
        if not files:
            raise ImageIndexError(f"The folder {str(folder)!r} has no image files; add images or pass another folder.")
        return _index_folder(self, files, self.batch_size if batch_size is None else batch_size, cache, progress)

    # --------------------------------------------------------------------------- internals

    def _remember(self, text: str, row: torch.Tensor) -> None:
        self._text_cache[text] = row
        while len(self._text_cache) > _TEXT_CACHE_SIZE:
            self._text_cache.popitem(last=False)

    def _encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        padding = "max_length" if self.scoring == "sigmoid" else True
        inputs = self.processor(text=list(texts), padding=padding, truncation=True, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.inference_mode():
            features = _as_features(self.model.get_text_features(**inputs))
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu()

    def _encode_images(self, images: Sequence[Any], batch_size: int, progress: bool | None) -> torch.Tensor:
        from tqdm.auto import tqdm

        if not _is_whole(batch_size) or batch_size < 1:
            raise ClassifyError(f"batch_size must be a whole number of at least 1, such as 32; got {batch_size!r}.")
        batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
        show_bar = len(batches) > 2 if progress is None else progress
        rows = [self._encode_image_batch(b) for b in tqdm(batches, desc="Embedding images", disable=not show_bar)]
        return torch.cat(rows)

    def _encode_image_batch(self, images: Sequence[Any]) -> torch.Tensor:
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        pixels = pixels.to(device=self.device, dtype=self.model.dtype)
        with torch.inference_mode():
            features = _as_features(self.model.get_image_features(pixel_values=pixels))
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu()

    def _scores_to_probs(self, cosine: torch.Tensor) -> np.ndarray:
        logits = cosine * self.model.logit_scale.detach().float().exp().cpu()
        if self.scoring == "sigmoid":
            bias = getattr(self.model, "logit_bias", None)
            if bias is not None:
                logits = logits + bias.detach().float().cpu()
            return torch.sigmoid(logits).numpy()
        return torch.softmax(logits, dim=-1).numpy()


def _as_features(output: Any) -> torch.Tensor:
    """``get_*_features`` returns a tensor in transformers 4 and a model output in transformers 5."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output


def _is_whole(value: Any) -> bool:
    """An int (numpy ints too) but not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise ClassifyError(f"texts must be a list of strings, not the single string {texts[:80]!r}; wrap it in [...].")
    try:
        texts = list(texts)
    except TypeError:
        raise ClassifyError(f"texts must be a list of strings; got a {type(texts).__name__}.") from None
    if not texts:
        raise ClassifyError("texts is empty; pass at least one string, e.g. ['a photo of a cat'].")
    for text in texts:
        if not isinstance(text, str):
            raise ClassifyError(f"Every text must be a string; got a {type(text).__name__} ({str(text)[:40]!r}).")
    return texts


def _check_labels(labels: Sequence[str]) -> list[str]:
    if isinstance(labels, str):
        raise ClassifyError(f"labels must be a list of strings, not the single string {labels!r}; wrap it: [{labels!r}].")
    labels = list(labels)
    if not labels:
        raise ClassifyError("labels is empty; pass at least one label, e.g. ['cat', 'dog'].")
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise ClassifyError(f"Every label must be a non-empty string; got {label!r}.")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ClassifyError(f"labels contain duplicates {duplicates}; give each label once.")
    return labels


def _check_templates(templates: Sequence[str] | str | None) -> list[str]:
    if templates is None:
        return [DEFAULT_TEMPLATE]
    if isinstance(templates, str):
        if templates == "ensemble":
            return list(ENSEMBLE_TEMPLATES)
        templates = [templates]
    templates = list(templates)
    if not templates:
        raise ClassifyError("templates is empty; pass None, 'ensemble' or strings such as 'a photo of a {}.'.")
    for template in templates:
        if not isinstance(template, str) or template.count("{}") != 1:
            raise ClassifyError(f"Template {template!r} must contain '{{}}' exactly once, where the label goes.")
    return templates


def _as_folder(source: Any) -> Path | None:
    if isinstance(source, (str, os.PathLike)) and not str(source).startswith(("http://", "https://", "data:")):
        path = Path(source).expanduser()
        if path.is_dir():
            return path
    return None


def _as_image_list(images: Any) -> list[Any]:
    """One source or many (list, tuple, folder, glob, upload value, 4-D array) -> RGB PIL images."""
    from mllm_nb.images import load_images

    loaded = load_images(images)
    if not loaded:
        raise ClassifyError("No images were given; pass an image, a list of images or a folder.")
    return loaded


# ------------------------------------------------------------------------------------- results


@dataclass
class Classification:
    """Zero-shot scores: ``probs[i, j]`` is the probability of ``labels[j]`` for image ``i``."""

    labels: list[str]
    probs: np.ndarray
    images: list[Any] | None = None
    scoring: str = "softmax"

    def top(self, k: int = 1) -> list[list[tuple[str, float]]]:
        """For each image, its ``k`` best ``(label, probability)`` pairs, best first."""
        if k < 1:
            raise ClassifyError(f"k must be at least 1, got {k}.")
        order = np.argsort(-self.probs, axis=1, kind="stable")[:, :k]
        return [[(self.labels[j], float(row[j])) for j in idx] for row, idx in zip(self.probs, order)]

    @property
    def predictions(self) -> list[str]:
        """The best label of each image."""
        return [pairs[0][0] for pairs in self.top(1)]

    def plot(self, k: int = 5, captions: Sequence[str] | None = None) -> Any:
        """Each image with a bar chart of its top-``k`` labels (a matplotlib Figure)."""
        from mllm_nb.display import plot_predictions, plot_probs

        if not self.images:
            return plot_probs(self.labels, self.probs[0], k=k)
        return plot_predictions(self.images, self.labels, self.probs, k=k, captions=captions)

    def __str__(self) -> str:
        lines = []
        for i, pairs in enumerate(self.top(min(3, len(self.labels)))):
            scored = ", ".join(f"{label} {p:.1%}" for label, p in pairs)
            lines.append(f"image {i + 1}: {scored}")
        return "\n".join(lines)


@dataclass
class SearchHit:
    """One search result: its rank (1 = best), where it came from, and its cosine similarity."""

    rank: int
    source: str
    score: float
    position: int
    image: Any = field(default=None, repr=False)

    def load(self) -> Any:
        """The hit as an RGB PIL image."""
        from mllm_nb.images import load_image

        return self.image if self.image is not None else load_image(self.source)


@dataclass
class SearchResults:
    """The top-k hits of a text query, best first; ``show()`` draws them as a grid."""

    query: str
    hits: list[SearchHit]

    def __iter__(self):
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)

    def __getitem__(self, i: int) -> SearchHit:
        return self.hits[i]

    @property
    def sources(self) -> list[str]:
        return [hit.source for hit in self.hits]

    def show(self, size: float = 2.5) -> Any:
        """A grid of the hits captioned with their name and score (a matplotlib Figure)."""
        from mllm_nb.display import show

        captions = [f"#{h.rank} {Path(h.source).name}\nscore {h.score:.3f}" for h in self.hits]
        return show([h.load() for h in self.hits], captions=captions, size=size, title=repr(self.query))

    def __str__(self) -> str:
        return "\n".join(f"{h.rank}. {Path(h.source).name}  ({h.score:.3f})" for h in self.hits)


@dataclass
class ImageIndex:
    """Normalised image embeddings with where each came from; search them with text.

    >>> idx = clip.index(["a.png", "b.png"])  # doctest: +SKIP
    >>> idx.search("a red circle", k=1)[0].source  # doctest: +SKIP
    'image 1'
    """

    embeddings: np.ndarray
    sources: list[str]
    model_name: str
    clip: Clip | None = field(default=None, repr=False)
    images: list[Any] | None = field(default=None, repr=False)
    fingerprints: list[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.embeddings, torch.Tensor):
            self.embeddings = self.embeddings.detach().float().cpu().numpy()
        if isinstance(self.embeddings, np.ndarray) and np.issubdtype(self.embeddings.dtype, np.floating):
            self.embeddings = self.embeddings.astype(np.float32, copy=False)
        if not isinstance(self.sources, (list, tuple)) or not all(isinstance(s, str) for s in self.sources):
            raise ImageIndexError("ImageIndex sources must be a list of strings, one per embedding row.")
        self.sources = list(self.sources)
        problem = embeddings_problem(self.embeddings, len(self.sources))
        if problem:
            raise ImageIndexError(
                f"This ImageIndex {problem}; build it with clip.index(...), whose rows are unit-length float embeddings."
            )

    def __len__(self) -> int:
        return len(self.sources)

    def search(self, text: str, k: int = 5) -> SearchResults:
        """The ``k`` images most similar to ``text`` (cosine similarity), best first; fewer if the index is smaller.

        >>> idx.search("a dog on a beach", k=3).sources  # doctest: +SKIP
        ['photos/dog1.jpg', 'photos/beach.jpg', 'photos/dog2.jpg']
        """
        if self.clip is None:
            raise ImageIndexError("This index has no model attached; load it with ImageIndex.load(path, clip).")
        if not isinstance(text, str) or not text.strip():
            raise ClassifyError(f"The search text must be a non-empty string; got {str(text)[:80]!r}.")
        if not _is_whole(k) or k < 1:
            raise ClassifyError(f"k must be at least 1 (a whole number of results, such as 5); got {k!r}.")
        query = self.clip.embed_texts([text])[0].numpy()
        if query.shape[0] != self.embeddings.shape[1]:
            raise ImageIndexError(
                f"This index holds {self.embeddings.shape[1]}-dimensional embeddings but {self.clip.name!r} makes "
                f"{query.shape[0]}-dimensional ones; rebuild it with this model's clip.index(...)."
            )
        scores = self.embeddings @ query
        order = np.argsort(-scores, kind="stable")[: int(k)]
        hits = [
            SearchHit(rank, self.sources[i], float(scores[i]), int(i), self.images[i] if self.images else None)
            for rank, i in enumerate(order, start=1)
        ]
        return SearchResults(text, hits)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the index as one safetensors file (embeddings + JSON metadata; no pickle), atomically.

        >>> idx.save("photos.index")  # doctest: +SKIP
        PosixPath('photos.index')
        """
        return write_index(path, self.embeddings, self.sources, self.model_name, self.fingerprints)

    @classmethod
    def load(cls, path: str | os.PathLike, clip: Clip | None = None) -> ImageIndex:
        """Read and check an index written by :meth:`save`; attach ``clip`` to search it.

        >>> idx = ImageIndex.load("photos.index", clip)  # doctest: +SKIP
        """
        path = index_path(path)
        if clip is not None and not hasattr(clip, "embed_texts"):
            raise ImageIndexError(
                f"clip must be the model from mn.load_clip(...), not a {type(clip).__name__}; "
                "call ImageIndex.load(path, clip)."
            )
        stored = read_index(path)
        if clip is not None and clip.name != stored.model_name:
            raise ImageIndexError(
                f"The index {str(path)!r} was built with {stored.model_name!r} but the model is {clip.name!r}; "
                "rebuild it with this model's clip.index(...)."
            )
        if clip is not None and stored.embeddings.shape[1] != clip.embedding_dim:
            raise ImageIndexError(
                f"The index {str(path)!r} holds {stored.embeddings.shape[1]}-dimensional embeddings but "
                f"{clip.name!r} makes {clip.embedding_dim}-dimensional ones; rebuild it with clip.index(...)."
            )
        return cls(stored.embeddings, stored.sources, stored.model_name, clip=clip, fingerprints=stored.fingerprints or None)


def _index_folder(
    clip: Clip, files: list[Path], batch_size: int, cache: str | os.PathLike | None, progress: bool | None
) -> ImageIndex:
    import warnings

    from mllm_nb.errors import ImageLoadError
    from mllm_nb.images import load_image

    cache_path = index_path(cache, "cache") if cache is not None else None
    known = cached_rows(cache_path, clip.name, clip.embedding_dim) if cache_path is not None else {}
    prints = [fingerprint(f) for f in files]
    todo = [(f, p) for f, p in zip(files, prints) if p not in known]
    loaded, skipped = [], []
    for file, print_ in todo:
        try:
            loaded.append((print_, load_image(file)))
        except ImageLoadError as err:
            skipped.append(f"{file.name}: {err}")
    if skipped:
        message = f"Skipped {len(skipped)} unreadable file(s): " + "; ".join(skipped)
        warnings.warn(" ".join(message.split()), stacklevel=3)
    if loaded:
        new_rows = clip._encode_images([img for _, img in loaded], batch_size, progress).numpy()
        known.update({fp: row for (fp, _), row in zip(loaded, new_rows)})
    keep = [(str(f), p) for f, p in zip(files, prints) if p in known]
    if not keep:
        raise ImageIndexError(
            f"None of the {len(files)} image files in {str(files[0].parent)!r} could be read (see the warning); "
            "fix or remove them, or index another folder."
        )
    embeddings = np.stack([known[p] for _, p in keep]).astype(np.float32)
    index = ImageIndex(embeddings, [s for s, _ in keep], clip.name, clip=clip, fingerprints=[p for _, p in keep])
    if cache_path is not None:
        write_cache(cache_path, index.embeddings, index.sources, index.model_name, index.fingerprints or [])
    return index
