"""Not triton: an import-only stand-in for the parser environments (see lab_import_stub)."""

from lab_import_stub import install

__version__ = "0.0.0"
install(__name__)
