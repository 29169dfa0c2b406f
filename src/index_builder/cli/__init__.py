"""The ``index-builder`` command line."""
