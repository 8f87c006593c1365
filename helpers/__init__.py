"""helpers: the methods behind the book
*Reading single-cell models by their weights and concepts*.

One module per noun of the method; import them as ``helpers.<module>`` (submodules load
lazily so that ``import helpers`` stays fast).
"""

import importlib

__version__ = "0.1.0"

_MODULES = (
    "attribution",
    "baselines",
    "bilinear",
    "chapter",
    "concepts",
    "data",
    "embeddings",
    "enrichment",
    "perturbation",
    "plotting",
    "preprocess",
    "probes",
    "runtime",
    "sae",
    "spectral",
    "stability",
    "synthetic",
)


def __getattr__(name):
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_MODULES))
