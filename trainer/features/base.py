"""The interface every feature family implements."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from trainer.graph import GraphBuilder


class FeatureFamily(Protocol):
    """One family of features computed from windows ``[N, W, C]``.

    ``fit`` learns whatever the family needs from training windows (most need nothing;
    convolutional features learn biases). ``transform`` and ``to_onnx`` must compute the
    same numbers: ``transform`` in numpy for training, ``to_onnx`` as graph nodes reading
    the tensor named ``window`` (float32 ``[batch, W, C]``) and returning the name of a
    float32 ``[batch, n_features]`` tensor.
    """

    name: str

    def fit(self, windows: np.ndarray) -> FeatureFamily: ...

    def transform(self, windows: np.ndarray) -> np.ndarray: ...

    def to_onnx(self, g: GraphBuilder, window: str) -> str: ...

    def feature_names(self, channels: list[str]) -> list[str]: ...

    def describe(self) -> dict[str, Any]: ...
