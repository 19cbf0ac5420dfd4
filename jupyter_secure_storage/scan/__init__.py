"""Finding secrets in files: stored values (by keyed fingerprint) and token formats.

Shared by the Jupyter Server pre-save hook, ``jupyter-secure-storage scan`` and the
pre-commit hook.
"""

from .findings import STORED, Detector, Finding, Scanner

__all__ = ["STORED", "Detector", "Finding", "Scanner"]
