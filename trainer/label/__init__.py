"""``sigmoid-train label``: a local web page to label the windows in a capture directory."""

from trainer.label.server import LabelApp, serve

__all__ = ["LabelApp", "serve"]
