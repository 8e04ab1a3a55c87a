"""Real photographs that ship inside PyPI packages, so lessons work offline.

scikit-image (``pip install mllm-nb[samples]``) ships a cat, coffee, an astronaut, a rocket, a stereo
pair of motorcycles and two text images; matplotlib ships a portrait of Grace Hopper.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mllm_nb.errors import MllmNbError

# name -> (package that ships it, file name inside the package's data folder, what it shows)
SAMPLES: dict[str, tuple[str, str, str]] = {
    "chelsea": ("skimage", "chelsea.png", "a tabby cat"),
    "coffee": ("skimage", "coffee.png", "a cup of coffee on a saucer"),
    "astronaut": ("skimage", "astronaut.png", "astronaut Eileen Collins"),
    "rocket": ("skimage", "rocket.jpg", "a rocket on the launch pad"),
    "motorcycle_left": ("skimage", "motorcycle_left.png", "a motorcycle (left view of a stereo pair)"),
    "motorcycle_right": ("skimage", "motorcycle_right.png", "a motorcycle (right view of a stereo pair)"),
    "page": ("skimage", "page.png", "a scanned page of text"),
    "text": ("skimage", "text.png", "text painted on a photo"),
    "grace_hopper": ("matplotlib", "grace_hopper.jpg", "Grace Hopper in uniform"),
}

_DATA_FOLDERS = {"skimage": ("data",), "matplotlib": ("mpl-data", "sample_data")}


class SampleError(MllmNbError, LookupError):
    """An unknown sample name, or the package that ships it is not installed."""


def sample_path(name: str) -> Path:
    """The file of a bundled sample photo.

    >>> sample_path("chelsea").name
    'chelsea.png'
    """
    if name not in SAMPLES:
        raise SampleError(f"No sample photo called {name!r}; choose one of {', '.join(SAMPLES)}.")
    package, filename, _ = SAMPLES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise SampleError(
            f"The sample {name!r} ships with {package}, which is not installed; run pip install 'mllm-nb[samples]'."
        )
    path = Path(spec.origin).parent.joinpath(*_DATA_FOLDERS[package], filename)
    if not path.is_file():
        raise SampleError(f"The sample {name!r} is missing from your {package} install ({path}); reinstall {package}.")
    return path


def sample_image(name: str):
    """A bundled sample photo as an RGB PIL image.

    >>> sample_image("coffee").size
    (600, 400)
    """
    from mllm_nb.images import load_image

    return load_image(sample_path(name))


def sample_images(names: list[str] | None = None) -> dict:
    """Several sample photos by name (all of them by default), as ``{name: PIL image}``."""
    return {name: sample_image(name) for name in (names or list(SAMPLES))}
