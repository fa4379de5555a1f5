"""The ``metarec`` command line: the entry point, one module per sub-command, and the demo."""
