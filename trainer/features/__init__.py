"""Feature families: each computes features in numpy AND emits the same computation as ONNX.

A family follows :class:`trainer.features.base.FeatureFamily`. Training uses ``transform``;
the exported graph uses ``to_onnx``; a parity test per family proves they agree. Families
are looked up by name in :mod:`trainer.features.registry`.
"""

from trainer.features.registry import (
    DEFAULT_CANDIDATES,
    FAMILIES,
    build_families,
    family_class,
    make_family,
    parse_features,
)

__all__ = [
    "DEFAULT_CANDIDATES", "FAMILIES", "build_families", "family_class", "make_family",
    "parse_features",
]
