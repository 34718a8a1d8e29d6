"""Feature families by name, feature specs on the command line, and the default candidates.

A spec names one family and optionally its parameters: ``stats``, ``spectral:bands=4``,
``raw:points=16``, ``conv:n_features=2000``; ``diff_<name>`` applies a family to the
first difference. :func:`build_families` turns a list of specs into fitted-ready family
objects, merging ``stats`` and ``diff_stats`` (same parameters) into one family that
computes both through the same graph nodes. A family in a module
``trainer/features/<name>.py`` whose class has ``name = "<name>"`` is found without
registering it here (that is how ``conv`` plugs in).
"""

from __future__ import annotations

import importlib
import inspect

from trainer.features.base import FeatureFamily
from trainer.features.diff import PREFIX as DIFF_PREFIX
from trainer.features.diff import FirstDifference
from trainer.features.downsample import PARAMETER as DOWNSAMPLE
from trainer.features.downsample import Downsampled

# name -> "module:Class" of the families built into the pipeline.
FAMILIES = {
    "stats": "trainer.features.stats:Stats",
    "spectral": "trainer.features.spectral:Spectral",
    "raw": "trainer.features.raw:Raw",
    "conv": "trainer.features.conv:ConvFeatures",
}

# The feature sets `sigmoid-train fit` chooses among (by an internal validation split)
# when the user gives no --features. THE one place to add candidates (e.g. conv sets).
# Measured: statistics and spectra of the signal and its first difference for motion and
# vibration (BasicMotions 1.000); raw samples plus statistics for short shape-driven
# series (ItalyPowerDemand 0.963); both together as the middle ground.
# Convolutional features for shape-driven series: a MiniRocket pool of 10,080 features
# (the paper's ~10k, window and first difference) pruned by Sequential Feature Detachment
# to the smallest set within half a point of the best cross-validated accuracy that fits
# the latency budget (the full 1008-feature family cost 2-10x the budget on windows over
# ~100 samples and was never chosen there). See BENCHMARKS.md "Pruned convolutional
# features".
PRUNED_CONV = "conv:pool=10080:keep=auto"
DEFAULT_CANDIDATES: tuple[tuple[str, ...], ...] = (
    ("stats", "diff_stats", "spectral", "diff_spectral"),
    ("raw", "stats"),
    ("stats", "diff_stats", "spectral", "diff_spectral", "raw"),
    (PRUNED_CONV,),
)
# Long windows: the pruned pool on the window averaged down to about this many samples is
# a candidate too (``downsample=W // DOWNSAMPLED_LENGTH``, when that is 2 or more). Near
# the lengths MiniRocket is usually run at; forced on four sets of 427-2,000 samples, it won
# 18 points on one (PigCVP) and lost 3-5 on the others, so cross-validation chooses
# (BENCHMARKS.md, "Fourth pass").
DOWNSAMPLED_LENGTH = 192
# Families with a ``views`` parameter: their diff_ variant is a view, not a wrapper.
VIEW_FAMILIES = frozenset({"stats", "spectral", "raw"})


def default_candidates(window: int) -> list[tuple[str, ...]]:
    """:data:`DEFAULT_CANDIDATES`, plus the downsampled pruned pool for long windows."""
    factor = int(window) // DOWNSAMPLED_LENGTH
    extra = [(f"{PRUNED_CONV}:{DOWNSAMPLE}={factor}",)] if factor >= 2 else []
    return list(DEFAULT_CANDIDATES) + extra


def family_class(name: str) -> type:
    """The class of the family called ``name`` (without any ``diff_`` prefix)."""
    if name in FAMILIES:
        module, cls = FAMILIES[name].split(":")
        return getattr(importlib.import_module(module), cls)
    if not name.isidentifier():
        raise ValueError(f"unknown feature family {name!r}; known: {known_families()}")
    try:
        module = importlib.import_module(f"trainer.features.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"trainer.features.{name}":
            raise
        raise ValueError(
            f"unknown feature family {name!r}; known: {known_families()}"
        ) from None
    for _, obj in inspect.getmembers(module, inspect.isclass):
        if obj.__module__ == module.__name__ and getattr(obj, "name", None) == name:
            return obj
    raise ValueError(f"module trainer.features.{name} has no class with name = {name!r}")


def known_families() -> list[str]:
    """Built-in families, plug-in modules found under ``trainer/features``, and diff_ forms."""
    import pkgutil

    import trainer.features as package

    helpers = {"base", "common", "diff", "downsample", "registry", "kernels", "pruning",
               "pruned_conv"}
    skip = helpers | {m.split(".")[2].split(":")[0] for m in FAMILIES.values()}
    names = list(FAMILIES) + sorted(m.name for m in pkgutil.iter_modules(package.__path__)
                                    if m.name not in skip)
    return names + [DIFF_PREFIX + n for n in names]


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.lower() in ("none", "null"):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def split_spec(spec: str) -> tuple[str, dict]:
    """``"conv:pool=10080:keep=auto"`` -> ``("conv", {"pool": 10080, "keep": "auto"})``."""
    name, *params = spec.strip().split(":")
    kwargs = {}
    for p in params:
        key, eq, value = p.partition("=")
        if not eq or not key.isidentifier():
            raise ValueError(f"bad feature parameter {p!r} in {spec!r}: expected key=value, "
                             "e.g. 'spectral:bands=4'")
        kwargs[key] = _value(value)
    return name, kwargs


def _construct(cls, base: str, kwargs: dict):
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad parameters for feature family {base!r}: {exc}") from None


def make_family(spec: str) -> FeatureFamily:
    """Build an unfitted family from a spec such as ``spectral:bands=4`` or ``diff_stats``."""
    return build_families([spec])[0]


def build_families(specs) -> list[FeatureFamily]:
    """Unfitted families for a list of specs, in order.

    ``stats`` and ``diff_stats`` with the same parameters become one ``Stats`` with
    ``views=("x", "diff")`` (likewise for spectral and raw), at the position of the first.
    ``downsample=N`` (any family) wraps it in :class:`~trainer.features.downsample.
    Downsampled`: the family sees the mean of every ``N`` samples.
    """
    out: list = []
    merged: dict[tuple, object] = {}
    for spec in specs:
        name, kwargs = split_spec(spec)
        factor = kwargs.pop(DOWNSAMPLE, None)
        if factor is not None and not (isinstance(factor, int) and factor >= 1):
            raise ValueError(f"bad {DOWNSAMPLE} in {spec!r}: expected a whole number of "
                             "samples to average, e.g. 'conv:pool=10080:downsample=4'")
        if factor is not None and factor > 1:
            inner = ":".join(p for p in spec.split(":") if p.partition("=")[0] != DOWNSAMPLE)
            out.append(Downsampled(make_family(inner), factor))
            continue
        diff = name.startswith(DIFF_PREFIX) and name not in FAMILIES
        base = name[len(DIFF_PREFIX):] if diff else name
        cls = family_class(base)
        if base in VIEW_FAMILIES:
            if "views" in kwargs:
                raise ValueError(f"{spec!r}: use '{base}' and 'diff_{base}' instead of views=")
            key = (base, tuple(sorted(kwargs.items())))
            view = "diff" if diff else "x"
            if key in merged:
                family = merged[key]
                if view in family.views:
                    raise ValueError(f"--features lists {name!r} twice")
                family.views = tuple(v for v in ("x", "diff") if v in (*family.views, view))
                continue
            family = _construct(cls, base, {**kwargs, "views": (view,)})
            merged[key] = family
            out.append(family)
        else:
            family = _construct(cls, base, kwargs)
            out.append(FirstDifference(family) if diff else family)
    return out


def parse_features(text: str) -> list[str]:
    """Split a ``--features`` value (comma-separated specs) and check every spec builds."""
    specs = [s.strip() for s in text.split(",") if s.strip()]
    if not specs:
        raise ValueError("--features needs at least one family, e.g. 'stats,spectral'")
    if len(set(specs)) != len(specs):
        raise ValueError(f"--features lists a family twice: {text!r}")
    build_families(specs)
    return specs
