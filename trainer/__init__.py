"""sigmoid-edge trainer: load sensor data, fit sigmoid networks, export one ONNX pipeline."""

from edge import __version__

__all__ = ["__version__"]
