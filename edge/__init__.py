"""sigmoid-edge: the edge side (MQTT daemon and ONNX inference on a Raspberry Pi).

This package must never import :mod:`trainer`: a Pi installs only the edge.
"""

__version__ = "0.1.0"
