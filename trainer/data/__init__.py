"""Loading labelled windows ``[N, W, C]`` from ``.ts`` archives and CSV sensor logs."""

from trainer.data.dataset import Dataset, load_dataset

__all__ = ["Dataset", "load_dataset"]
