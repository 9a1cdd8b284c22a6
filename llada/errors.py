"""Errors that describe a problem with what the user gave (a path, a file, a flag).

The command line prints them as one line without a traceback; the Python API raises them.
Each subclasses the built-in type a caller would expect, so `except ValueError` still works.
"""

from __future__ import annotations


class UserError(Exception):
    """Base class: the message says what was wrong and what is allowed."""


class ModelDirError(UserError, FileNotFoundError):
    """A path that is not a usable model directory (missing config, shard, tokenizer)."""


class CheckpointError(UserError, ValueError):
    """A model directory whose contents do not fit together (shapes, vocabulary, ids, dtype)."""


class DataError(UserError, ValueError):
    """A data file or record that cannot be used; the message names the file and line."""


class GenerationError(UserError, ValueError):
    """Sampler parameters out of range; the message names the parameter and the allowed values."""
