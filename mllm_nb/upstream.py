"""What differs between the transformers releases mllm_nb admits, in one place.

mllm_nb declares ``transformers>=5.23,<6`` (see ``pyproject.toml``) and CI tests the oldest and the
newest of that range. Where releases in the range disagree, the difference is named here, found
through public objects, so that no other module has to know about release numbers:

- the KV cache's argument and output-field name: ``past_key_values`` up to 5.23, ``cache`` from 5.24
  on (transformers' own ``BaseModelOutputWithPast`` tells which);
- :data:`TENSOR_READ_HOOK`, the one private transformers function mllm_nb hooks (to hand freed read
  buffers back to the system while a checkpoint loads; see ``mllm_nb.loading``), and the releases it
  was checked on. ``tests/test_upstream.py`` fails loudly when a release in the range lacks it.

>>> CACHE_ARGUMENT in ("cache", "past_key_values")
True
"""

from __future__ import annotations

import dataclasses
from importlib import metadata
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import Version

#: The installed transformers release.
TRANSFORMERS_VERSION = Version(metadata.version("transformers"))

#: Module and function name of the private hook point ``mllm_nb.loading`` uses, and the releases it exists in.
TENSOR_READ_HOOK = ("transformers.core_model_loading", "_materialize_copy")
TENSOR_READ_HOOK_RELEASES = SpecifierSet(">=5.23,<6")


def _cache_argument() -> str:
    from transformers.modeling_outputs import BaseModelOutputWithPast

    names = {field.name for field in dataclasses.fields(BaseModelOutputWithPast)}
    return "cache" if "cache" in names else "past_key_values"


#: The name a model's ``forward`` takes its KV cache under and its output carries it as.
CACHE_ARGUMENT = _cache_argument()
#: Every name a caller (``generate``, user code) may pass the cache under, on any admitted release.
CACHE_ARGUMENT_NAMES = ("cache", "past_key_values")


def pop_cache(kwargs: dict[str, Any]) -> Any:
    """Remove the KV cache from ``kwargs`` under whichever name it came, and return it (or None).

    >>> pop_cache({"past_key_values": "kv", "use_cache": True})
    'kv'
    """
    found = [kwargs.pop(name) for name in CACHE_ARGUMENT_NAMES if name in kwargs]
    caches = [cache for cache in found if cache is not None]
    return caches[0] if caches else None


def tensor_read_hook_expected() -> bool:
    """Whether the installed transformers is a release the tensor-read hook was checked on.

    >>> isinstance(tensor_read_hook_expected(), bool)
    True
    """
    return TRANSFORMERS_VERSION in TENSOR_READ_HOOK_RELEASES
