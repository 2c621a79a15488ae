"""Errors of the vector-index layer (kept free of simsearch so the layer imports nothing above it)."""

from __future__ import annotations

import re

_FAISS_LOCATION = re.compile(r"^Error in .*? at \S+:\d+: ", re.DOTALL)


class IndexLayerError(Exception):
    """A vector index could not be built, loaded, searched or changed as asked."""


def faiss_reason(exc: BaseException) -> str:
    """faiss's message on one line, without its 'Error in <C++ signature> at <file>:<line>:' prefix."""
    text = _FAISS_LOCATION.sub("", str(exc).strip(), count=1)
    text = text.removeprefix("Error: ")
    return " ".join(text.split()) or type(exc).__name__
