"""Feature families: each computes features in numpy AND emits the same computation as ONNX.

A family follows :class:`trainer.features.base.FeatureFamily`. Training uses ``transform``;
the exported graph uses ``to_onnx``; a parity test per family proves they agree.
"""
