"""Stand-alone benchmark and validation scripts (``python -m stream.bench.tools.NAME --help``)."""
