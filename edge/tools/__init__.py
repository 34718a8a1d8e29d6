"""What a person runs beside the daemon: demo, simulate, record, synthetic data, the
embedded broker, and the data-file readers/writers that `record` and the trainer share.

The daemon's core (``edge.daemon`` and what it imports) never imports this package.
"""
