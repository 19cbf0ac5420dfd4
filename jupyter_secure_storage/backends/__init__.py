"""Storage backends: where values live. See ``base`` for the protocol."""

from .base import Backend, Diagnosis, available_backends, load_backend_class

__all__ = ["Backend", "Diagnosis", "available_backends", "load_backend_class"]
