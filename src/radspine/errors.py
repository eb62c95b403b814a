"""Exceptions raised for user mistakes: each carries a one-line message naming the file/study."""

from __future__ import annotations


class RadspineError(Exception):
    """Base class: the CLI prints ``str(err)`` on one line and exits non-zero, no traceback."""


class DicomError(RadspineError):
    """A DICOM file or series cannot be turned into a volume."""


class DatasetError(RadspineError):
    """A dataset folder or CSV is unusable (schema, values, layout)."""


class ConfigError(RadspineError):
    """A configuration file is invalid."""


class ModelError(RadspineError):
    """A model bundle is missing, incompatible or corrupt."""
