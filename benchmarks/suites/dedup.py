"""Dedup suite: near duplicates of real Caltech-101 photos (seeded variants planted among unrelated originals),
pairwise precision/recall/F1 of `simsearch dedup` at thresholds calibrated on the other half of the classes, beside
imagededup's PHash/DHash/WHash/AHash on the same folders, with time and peak memory; then dedup time and peak memory
on 10k/100k/1M vectors (real embeddings grown by seeded perturbed copies, as the search suite does).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.dedup_data import (
    HASH_DEFAULT_DISTANCE,
    HASH_METHODS,
    VariantSet,
    best_distance,
    build_set,
    distance_counts,
    groups_to_pairs,
    hash_distances,
    timed_hash_run,
)
from benchmarks.dedup_scale import scale_rows
from benchmarks.record import PeakRSS
from benchmarks.suites import BenchmarkError

logger = logging.getLogger(__name__)

HELP = "near duplicates of Caltech-101 photos: calibrated dedup vs imagededup hashes; dedup at 10k/100k/1M vectors"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--originals", type=int, default=150, help="originals given variants, per half")
    parser.add_argument("--variants", type=int, default=3, help="variants of each such original")
    parser.add_argument("--unrelated", type=int, default=300, help="unrelated originals, per half")
    parser.add_argument("--model", default="dedup", help="model of the collections [default: dedup, as `dedup` uses]")
    parser.add_argument("--tta", choices=("hflip",), default=None, help="test-time augmentation of the model")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="vector counts of the scale runs ('' skips)")
    parser.add_argument("--ship", type=Path, help="also write the calibration fitted here to this file")
    parser.add_argument("--no-hashes", action="store_true", help="skip imagededup")


def _collection(folder: Path, where: Path, args: argparse.Namespace) -> tuple[Any, dict[str, float]]:
    from simsearch import Collection

    with PeakRSS() as peak:
        started = time.perf_counter()
        col = Collection.open(where, model=args.model, device=args.device, create=True, tta=args.tta)
        report = col.index_folder(folder, workers=0)
        seconds = time.perf_counter() - started
    if report.skipped:
        raise BenchmarkError(f"{report.skipped} benchmark photos could not be read")
    return col, {"index_seconds": seconds, "index_peak_rss_mib": peak.as_dict()["peak_rss_mib"]}


def _positions(col: Any, vs: VariantSet) -> dict[int, int]:
    """Collection id -> position in the set's file list."""
    where = {str(f.resolve()): i for i, f in enumerate(vs.files)}
    return {r.id: where[r.path] for r in col.store.records()}


def _vectors(col: Any, vs: VariantSet) -> np.ndarray:
    pos = _positions(col, vs)
    ids = sorted(pos, key=pos.get)
    return col.store.vectors(ids, col.dim)


def _dedup_row(col: Any, vs: VariantSet, threshold: float | None, label: str) -> dict[str, Any]:
    """`find_duplicates` at `threshold` (None: the collection's calibration at the default precision)."""
    from simsearch.dedup import find_duplicates

    pos = _positions(col, vs)
    with PeakRSS() as peak:
        report = find_duplicates(col, threshold=threshold)
    threshold = report.threshold.value
    groups = [[pos[m.record.id] for m in g.members] for g in report.groups]
    counts = _counts(groups_to_pairs(groups), vs)
    return {
        "method": f"simsearch dedup, {label}",
        "threshold": round(threshold, 4),
        **counts,
        "groups": len(report.groups),
        "dedup_s": report.seconds,
        "dedup_peak_rss_mib": peak.as_dict()["peak_rss_mib"],
        "dedup_start_rss_mib": peak.as_dict()["start_rss_mib"],
    }


def _counts(predicted: set[tuple[int, int]], vs: VariantSet) -> dict[str, Any]:
    from simsearch.dedup.calibration import pair_counts

    c = pair_counts(predicted, vs.true_pairs())
    return {"precision": c.precision, "recall": c.recall, "f1": c.f1, "false_pairs": c.false_positives}


def _oracle(vectors: np.ndarray, vs: VariantSet) -> dict[str, float]:
    """The best F1 any single threshold gives on the held-out pairs (chosen with the answers: an upper bound)."""
    from simsearch.dedup.fitting import calibrate_vectors

    return calibrate_vectors(vectors, vs.items, model_id="", weights_sha256="", tta=None, source="").best_f1


def run(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    from simsearch.data import caltech101_classes, default_cache_dir
    from simsearch.dedup import DEFAULT_PRECISION, save_calibration
    from simsearch.dedup.fitting import calibrate_vectors

    if args.tiny:
        args.originals, args.unrelated, args.sizes = 12, 24, "2000"
    classes = caltech101_classes(root=args.data)
    photo_root = default_cache_dir() / "caltech101"
    halves = {"calibration": classes[:50], "held_out": classes[50:]}
    work = Path(tempfile.mkdtemp(prefix="simsearch-dedup-bench-"))
    table: list[dict[str, Any]] = []
    record: dict[str, Any] = {}
    try:
        sets = {
            name: build_set(photo_root, cls, args.originals, args.variants, args.unrelated, work / name, args.seed + i)
            for i, (name, cls) in enumerate(halves.items())
        }
        record["sets"] = {name: vs.describe() for name, vs in sets.items()}
        cal_col, cal_cost = _collection(sets["calibration"].folder, work / "cal.simsearch", args)
        held_col, held_cost = _collection(sets["held_out"].folder, work / "held.simsearch", args)
        # The calibration: every pair of the calibration half, embedded by the collection (its stored vectors).
        model = cal_col.manifest.model
        calibration = calibrate_vectors(
            _vectors(cal_col, sets["calibration"]),
            sets["calibration"].items,
            model_id=model.id,
            weights_sha256=model.weights_sha256,
            tta=model.spec.get("tta"),
            source=f"seeded variants of Caltech-101 photos of {len(sets['calibration'].classes)} classes "
            f"({sets['calibration'].describe()['images']} images)",
        )
        save_calibration(calibration, held_col.path)
        if args.ship:
            calibration.save(args.ship)
        record["calibration"] = calibration.as_dict() | {"curve": f"{len(calibration.curve)} points"}
        held = sets["held_out"]
        rows = [_dedup_row(held_col, held, None, f"default (calibrated p>={DEFAULT_PRECISION:g})")]
        rows += [_dedup_row(held_col, held, p.threshold, f"calibrated p>={p.goal:g}") for p in calibration.points]
        rows.append(_dedup_row(held_col, held, calibration.best_f1["threshold"], "calibrated best-F1 threshold"))
        for row in rows:
            row.update(held_cost)
        table.extend(rows)
        record["held_out_oracle"] = _oracle(_vectors(held_col, held), held)
        cal_col.close()
        held_col.close()
        if not args.no_hashes:
            table.extend(_hash_rows(sets))
        record["model"] = calibration.model_id
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
        record["scale_vectors"] = (
            "the default model's 1280-d embeddings of Caltech-101 grown by perturbed copies, at its own calibrated "
            "line: a dedup collection's vectors have the same size, so the pair search does the same kind of work"
        )
        record["scale"] = scale_rows(args, sizes, _scale_threshold(calibration))
        table.extend(record["scale"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"record": record, "figures": [], "table": table}


def _scale_threshold(calibration: Any) -> float:
    """The line of the scale rows, whose vectors are the default model's (`benchmarks.dedup_scale`): its own
    shipped calibration's at the default precision, unless this run calibrated the default model itself."""
    from simsearch.dedup import DEFAULT_PRECISION
    from simsearch.dedup.calibration import Calibration
    from simsearch.dedup.stored import SHIPPED

    if not calibration.model_id.startswith("default:"):
        calibration = Calibration.load(SHIPPED / "default-near-duplicate.json")
    return float(calibration.point(DEFAULT_PRECISION).threshold)


def _hash_rows(sets: dict[str, VariantSet]) -> list[dict[str, Any]]:
    rows = []
    cal, held = sets["calibration"], sets["held_out"]
    truth = held.true_pairs()
    for method in HASH_METHODS:
        fitted, _ = best_distance(hash_distances(method, cal), cal.items)
        distances = hash_distances(method, held)
        for label, t in (("fitted on calibration half", fitted), ("default distance", HASH_DEFAULT_DISTANCE)):
            c = distance_counts(distances, t, truth)
            cost = timed_hash_run(method, held.folder, t)
            rows.append(
                {
                    "method": f"imagededup {method}, {label}",
                    "threshold": t,
                    "precision": c.precision,
                    "recall": c.recall,
                    "f1": c.f1,
                    "false_pairs": c.false_positives,
                    "dedup_s": cost["seconds"],
                    "dedup_peak_rss_mib": cost["peak_rss_mib"],
                    "dedup_start_rss_mib": cost["start_rss_mib"],
                }
            )
    return rows
