"""Write ``mllm_nb/catalog_figures.json``: what ``fit`` needs of each catalog model, without transformers.

For every catalog entry the architecture is built on the meta device once (``mllm_nb.memory.architecture.census``)
and the decoder sizes are read from its config; ``fit`` then plans catalog models from these stored figures
without importing torch or transformers. ``tests/test_catalog.py`` rebuilds them and fails when they are stale:
run ``python tools/catalog_figures.py`` after changing ``catalog.json``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import transformers

from mllm_nb import catalog
from mllm_nb.memory.architecture import census
from mllm_nb.memory.sizes import decoder_shape

OUT = Path(__file__).resolve().parents[1] / "mllm_nb" / catalog.FIGURES_FILE


def figures_of(entry: catalog.CatalogEntry) -> dict:
    """The stored figures of one entry: its census and its decoder shape."""
    config = entry.build_config()
    return {"census": dataclasses.asdict(census(config)), "decoder": dataclasses.asdict(decoder_shape(config))}


def main() -> None:
    figures = {entry.id: figures_of(entry) for entry in catalog.entries()}
    about = (
        "Derived from catalog.json by tools/catalog_figures.py (do not edit): each model's architecture counted on "
        f"the meta device with transformers {transformers.__version__}."
    )
    OUT.write_text(json.dumps({"about": about, "figures": figures}, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(figures)} entries to {OUT}")


if __name__ == "__main__":
    main()
