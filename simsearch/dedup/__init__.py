"""Duplicates: exact copies and near duplicates in a collection, with thresholds that mean a precision.

Who owns what:
  - neighbours.py: every pair above a threshold through the collection's own index (k-NN grown until the k-th
    neighbour falls below the line), exact re-scoring from the stored vectors, a chunk of queries at a time.
  - grouping.py: complete-linkage groups (every pair in a group at or above the threshold: groups never chain).
  - keep.py: the keep rules and their reasons; reference folders are never removed.
  - finder.py: `find_duplicates`, `duplicates_of` (one image), `find_against` (one collection against another).
  - actions.py: moving or deleting the files a report would remove (only inside the indexed folder).
  - calibration.py: thresholds reaching precision goals, with recall, false-match rate and Wilson intervals.
  - fitting.py: a calibration from labelled images; variants.py: seeded near-duplicate variants of real photos.
  - stored.py: where calibrations live (collection, checkpoint, shipped) and the threshold a run uses.
  - results.py: the report types; page.py: the HTML page of groups.
"""

from simsearch.dedup.actions import Action, apply_report
from simsearch.dedup.calibration import DEFAULT_PRECISIONS, Calibration, OperatingPoint, fit, wilson_interval
from simsearch.dedup.finder import duplicates_of, find_against, find_duplicates
from simsearch.dedup.keep import DEFAULT_KEEP, KEEP_RULES
from simsearch.dedup.results import DedupReport, DuplicateGroup, Match
from simsearch.dedup.stored import (
    DEFAULT_PRECISION,
    NEAR_DUPLICATE,
    Threshold,
    find_calibration,
    resolve_threshold,
    save_calibration,
)

__all__ = [
    "DEFAULT_KEEP",
    "DEFAULT_PRECISION",
    "DEFAULT_PRECISIONS",
    "KEEP_RULES",
    "NEAR_DUPLICATE",
    "Action",
    "Calibration",
    "DedupReport",
    "DuplicateGroup",
    "Match",
    "OperatingPoint",
    "Threshold",
    "apply_report",
    "duplicates_of",
    "find_against",
    "find_calibration",
    "find_duplicates",
    "fit",
    "resolve_threshold",
    "save_calibration",
    "wilson_interval",
]
