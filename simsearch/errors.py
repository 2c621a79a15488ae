"""Domain exceptions: the library raises these, the CLI turns them into one-line errors. Every error simsearch raises
on purpose is defined here (the index layer, `indexes`, keeps its own `IndexLayerError`)."""

from __future__ import annotations


class SimSearchError(Exception):
    """Base class of every error that simsearch raises on purpose."""


# -- collections ------------------------------------------------------------------------------------------------------


class CollectionError(SimSearchError):
    """A collection folder is missing, corrupt, locked or of an unknown format version."""


class ModelMismatchError(CollectionError):
    """The collection was built with another model: vectors of two models never mix."""


class UnknownImageError(CollectionError):
    """An image id that the collection does not hold (never held, or removed since)."""


class ReadOnlyCollectionError(CollectionError):
    """A write asked of a collection opened read-only (`open_collection(path, readonly=True)`)."""


# -- files ----------------------------------------------------------------------------------------------------------


class StorageError(SimSearchError, OSError):
    """The disk refused a write: no space left, a quota reached, an I/O error or a read-only file system. The file
    being written was left as it was (see `simsearch.fsio`); freeing space and running again resumes.

    Also an OSError (with the errno of the cause), so callers that only know the standard library still catch it.
    """

    def __init__(self, errno: int, strerror: str, folder: str, message: str) -> None:
        super().__init__(errno, strerror, folder)
        self.message = message

    def __reduce__(self) -> tuple[type, tuple[int, str, str, str]]:
        return type(self), (self.errno or 0, self.strerror or "", str(self.filename), self.message)

    def __str__(self) -> str:
        return self.message


# -- models and images ------------------------------------------------------------------------------------------------


class ModelError(SimSearchError):
    """A model could not be built or its weights could not be loaded."""


class ImageError(SimSearchError):
    """A file is not a readable image (corrupt, truncated, empty, too large, not an image)."""


class QueryError(SimSearchError):
    """A query that cannot be made: a URL that cannot be fetched in time or is too large, vectors that cancel out."""


# -- data sets --------------------------------------------------------------------------------------------------------


class DatasetError(SimSearchError):
    """A dataset is malformed: wrong counts, bad header, empty class list, unknown file format version."""


class DataNotFoundError(DatasetError, FileNotFoundError):
    """A dataset file or folder is missing (a FileNotFoundError too, so plain `except OSError` still catches it)."""


# -- training, pretraining and scoring --------------------------------------------------------------------------------


class LossError(SimSearchError, ValueError):
    """A loss was built with bad options or called with a malformed batch.

    Also a ValueError, so callers that only know the standard library can catch it.
    """


class TrainingError(SimSearchError):
    """A training run cannot start or resume: bad recipe, too few classes, a `last/` state of another recipe."""


class PretrainError(SimSearchError):
    """A pretraining run cannot start, resume or go on: bad recipe, too few images, a `last/` state of another recipe
    or other data, a loss that diverged."""


class EvaluationError(SimSearchError):
    """A labelled set that cannot be scored (too few images, labels that do not fit the vectors), or a file that is
    no evaluation record."""


class RecipeError(SimSearchError, ValueError):
    """A recipe change that names no field of the recipe, or KEY=VALUE text without its `=`."""


# -- pictures ---------------------------------------------------------------------------------------------------------


class PlotError(SimSearchError):
    """A plot cannot be drawn: no recall@k numbers in a record, an unknown projection, too few points."""


class PictureError(SimSearchError):
    """A picture cannot be drawn: no images, a model that cannot do what the picture shows."""


# -- duplicates -------------------------------------------------------------------------------------------------------


class DedupError(SimSearchError):
    """Duplicates cannot be found or handled as asked: no threshold, a file outside the indexed folder, a clash."""


class CalibrationError(DedupError):
    """A calibration cannot be fitted, read or used: no same-item pairs, a damaged file, another model's thresholds."""


# -- scale-out --------------------------------------------------------------------------------------------------------


class EngineError(SimSearchError):
    """An indexing engine cannot run: Ray is not installed, no cluster answers at the address, or the cluster failed."""
