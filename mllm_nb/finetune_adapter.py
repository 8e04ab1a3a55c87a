"""Save a fine-tuned VLM's LoRA adapter, and put a saved adapter back on a base VLM.

The adapter (peft ``save_pretrained``: ``adapter_config.json`` and ``adapter_model.safetensors``, a few
MB) is written to a temporary folder beside the target and moved into place when complete, so an
interrupted save leaves nothing half-written. The base checkpoint's folder is never written to.

>>> tuned.save_adapter("shapes-adapter")  # doctest: +SKIP
'shapes-adapter'
>>> tuned = load_adapter(load_vlm("llava-hf/llava-1.5-7b-hf"), "shapes-adapter")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mllm_nb.errors import MllmNbError
from mllm_nb.finetune_progress import TrainingLog, import_peft
from mllm_nb.vlm import VLM

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ADAPTER_CONFIG = "adapter_config.json"


class FinetuneError(MllmNbError, ValueError):
    """Bad arguments given to :func:`finetune`, :func:`load_adapter` or ``save_adapter``."""


@dataclass(repr=False)
class FinetunedVLM(VLM):
    """A :class:`~mllm_nb.vlm.VLM` whose model carries LoRA adapters (a peft ``PeftModel``).

    It answers like any VLM (``ask``, ``stream``, ``batch_ask``, ``ChatPanel``). The adapters sit inside the
    base model's layers, so the VLM it was made from answers the same way; ``with tuned.adapter_disabled():``
    answers as the base did.

    >>> tuned.ask("scene.png", "What shape is the red object?")  # doctest: +SKIP
    'star'
    """

    training_log: TrainingLog | None = field(default=None, repr=False)
    base_folder: str | None = field(default=None, repr=False)

    def plot_loss(self) -> Figure:
        """The training loss curve (see :meth:`TrainingLog.plot`).

        >>> tuned.plot_loss()  # doctest: +SKIP
        """
        if self.training_log is None:
            raise FinetuneError("This VLM was loaded from a saved adapter, so it has no training log to plot.")
        return self.training_log.plot()

    def adapter_disabled(self) -> Any:
        """A context in which the model answers without its adapters (as the base model did).

        >>> with tuned.adapter_disabled():  # doctest: +SKIP
        ...     tuned.ask("scene.png", "What shape is red?")
        """
        return self.model.disable_adapter()

    def save_adapter(self, folder: str | os.PathLike, overwrite: bool = False) -> str:
        """Save the adapters (peft ``save_pretrained``, a few MB) to ``folder``; the base weights are not written.

        The files are written to a temporary folder next to ``folder`` and moved into place at the end, so an
        interrupted save leaves nothing half-written. Returns the folder.

        >>> tuned.save_adapter("my-adapter")  # doctest: +SKIP
        'my-adapter'
        """
        return save_adapter(self, folder, overwrite)

    def merge(self) -> VLM:
        """A plain VLM with the adapters merged into the weights (peft ``merge_and_unload``); this one is used up.

        On a 4-bit base the merged weights are rounded back to 4 bits, which loses some of what was learnt.

        >>> merged = tuned.merge()  # doctest: +SKIP
        """
        model = self.model.merge_and_unload()
        model.eval()
        return VLM(model=model, processor=self.processor, name=self.name, plan=self.plan, quantization=self.quantization)




def save_adapter(tuned: FinetunedVLM, folder: str | os.PathLike, overwrite: bool = False) -> str:
    """Write ``tuned``'s adapter to ``folder`` atomically (see the module docstring); returns ``folder``.

    >>> save_adapter(tuned, "shapes-adapter")  # doctest: +SKIP
    'shapes-adapter'
    """
    if not isinstance(tuned, FinetunedVLM):
        raise FinetuneError("Only a fine-tuned VLM (from finetune or load_adapter) has an adapter to save.")
    target = Path(folder).expanduser()
    _refuse_base_folder(tuned, target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not overwrite:
        raise FinetuneError(f"{str(target)!r} already exists and is not empty; pass overwrite=True or another folder.")
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        # LoRA on the output layer makes peft offer to save the whole (unchanged) embedding matrices too:
        # hundreds of MB of base weights for a 7B model. The vocabulary is never resized here, so they are not.
        tuned.model.save_pretrained(str(scratch), save_embedding_layers=False)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "adapter")
            os.replace(scratch, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(scratch, target)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return os.fspath(folder)


def load_adapter(vlm: VLM, folder: str | os.PathLike) -> FinetunedVLM:
    """``vlm`` with the LoRA adapter saved in ``folder`` (peft ``PeftModel.from_pretrained``), ready to ask.

    The adapters go into ``vlm``'s model (no copy), so ``vlm`` answers with them too.

    >>> tuned = load_adapter(vlm, "shapes-adapter")  # doctest: +SKIP
    >>> tuned.ask("star.png", "What shape is the red object?")  # doctest: +SKIP
    'star'
    """
    peft = import_peft()
    PeftModel = peft.PeftModel

    path = Path(folder).expanduser()
    if not (path / ADAPTER_CONFIG).is_file():
        raise FinetuneError(
            f"{str(path)!r} has no {ADAPTER_CONFIG}, so it is not a saved adapter; pass the folder save_adapter wrote."
        )
    if not isinstance(vlm, VLM) or isinstance(vlm.model, PeftModel):
        raise FinetuneError("load_adapter needs a freshly loaded base VLM (from load_vlm), without adapters.")
    try:
        model = PeftModel.from_pretrained(vlm.model, str(path), is_trainable=False)
    except (ValueError, KeyError, RuntimeError, OSError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0][:160]
        raise FinetuneError(
            f"The adapter in {str(path)!r} does not fit this model ({reason}); load the base model it was trained on."
        ) from None
    model.eval()
    return FinetunedVLM(
        model=model, processor=vlm.processor, name=vlm.name, plan=vlm.plan, quantization=vlm.quantization,
        base_folder=getattr(vlm.model.config, "_name_or_path", None),
    )


def _refuse_base_folder(tuned: Any, target: Path) -> None:
    """Never write into the base checkpoint's folder (or a folder inside it)."""
    base = tuned.base_folder
    if not base or not Path(base).is_dir():
        return
    base_path = Path(base).resolve()
    resolved = target.resolve()
    if resolved == base_path or resolved.is_relative_to(base_path):
        raise FinetuneError(
            f"{str(target)!r} is inside the base model's folder {str(base_path)!r}, which is never written to; "
            "save the adapter to a folder of its own."
        )
