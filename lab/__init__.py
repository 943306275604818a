"""Nightly Lab: a containerized, reproducible nightly for GPU model serving."""

__version__ = "0.1.0"
