"""Index Builder: build, serve and monitor rules-based stock indices."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("index-builder")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]
