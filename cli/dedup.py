"""`simsearch dedup`: exact copies and near duplicates of a folder or collection, as a dry run unless asked to act."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cli.common import device_option, domain_errors, json_option, write_output
from cli.progress import BarProgress
from simsearch.collection import COLLECTION_ENV, default_dedup_collection_path

if TYPE_CHECKING:
    from simsearch import Collection

#: The model a collection made by `dedup` gets (`simsearch.models.copydetect.DEDUP_MODEL`).
DEDUP_MODEL = "dedup"
#: Written out so that --help needs no import of the library's dedup package.
KEEP_CHOICES = ("largest", "smallest", "oldest", "newest", "shortest-path")


def threshold_options(func: Any) -> Any:
    """--threshold and --precision, shared with the commands that draw a duplicate line."""
    func = click.option(
        "--threshold",
        type=click.FloatRange(-1.0, 1.0),
        help="Cosine at or above which two images are duplicates [default: the calibrated one for --precision].",
    )(func)
    return click.option(
        "--precision",
        type=click.FloatRange(0.0, 1.0, min_open=True),
        help="Use the threshold calibrated for this precision, e.g. 0.99 [default: 0.9].",
    )(func)


def _exists(collection: Path | None) -> bool:
    """Whether a collection is already there (it keeps its own model)."""
    from simsearch.collection.layout import MANIFEST, resolve_folder

    return (resolve_folder(collection) / MANIFEST).is_file()


def _new_collection_model(against: Path | None) -> str | None:
    """The dedup model, or, when the new collection is compared with another, the other's model where it is the
    dedup model and else the default one (two collections are compared only on the same model's vectors)."""
    if against is None:
        return DEDUP_MODEL
    from simsearch import Collection

    with Collection.open(against, readonly=True) as other:
        return DEDUP_MODEL if other.manifest.model.spec.get("kind") == DEDUP_MODEL else None


def _index(col: Collection, folders: list[Path], quiet: bool) -> None:
    progress = BarProgress(enabled=not quiet and sys.stderr.isatty())
    try:
        for folder in folders:
            report = col.index_folder(folder, progress=progress)
            if report.skipped and not quiet:
                click.echo(f"{report.skipped} files under {folder} are not readable images (skipped)", err=True)
    finally:
        progress.close()


@click.command()
@click.argument("folder", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-c",
    "--collection",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=COLLECTION_ENV,
    help=f"Collection folder [default: ${COLLECTION_ENV} or dedup's own, {default_dedup_collection_path()}, which "
    "uses the dedup model; the search collection is used only when named].",
)
@click.option(
    "--model",
    help="Model of a new collection (see `index --model`) [default: dedup, the copy-detection model made for it].",
)
@click.option(
    "--reference",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A folder whose files are never removed (indexed too); may be given several times.",
)
@click.option(
    "--against",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Another collection: list the images of FOLDER (or of the collection) that already exist there.",
)
@threshold_options
@click.option("--keep", type=click.Choice(KEEP_CHOICES), default="largest", show_default=True, help="Which file stays.")
@click.option("--move-to", type=click.Path(file_okay=False, path_type=Path), help="Move the files to remove here.")
@click.option("--delete", is_flag=True, help="Delete the files to remove (only inside FOLDER; never by default).")
@click.option("--csv", "as_csv", is_flag=True, help="Print one CSV row per group member on stdout.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path), help="Write an HTML page.")
@json_option
@device_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@domain_errors
def dedup(
    folder: Path | None,
    collection: Path | None,
    model: str | None,
    reference: tuple[Path, ...],
    against: Path | None,
    threshold: float | None,
    precision: float | None,
    keep: str,
    move_to: Path | None,
    delete: bool,
    as_csv: bool,
    html_path: Path | None,
    as_json: bool,
    device: str,
    quiet: bool,
) -> None:
    """Find exact copies (same bytes) and near duplicates (cosine at or above a calibrated threshold) of the images
    in FOLDER (indexed first, incrementally, as `index` does) or in the whole collection.

    A collection made here uses the dedup model (whole image, GeM-pooled, mirror-averaged: made for copies); an
    existing one keeps its model. Every pair in a group is within the threshold (groups never chain). Nothing is
    changed unless --move-to or --delete is given: the default is a report of the groups, the file each keeps and
    why, and what would go.

    \b
        simsearch dedup ~/Pictures --html dups.html
        simsearch dedup ~/Pictures --precision 0.999 --move-to ~/duplicates
        simsearch dedup ~/uploads --against ~/catalogue.simsearch
    """
    from simsearch import Collection
    from simsearch.dedup import apply_report, find_duplicates

    if move_to is not None and delete:
        raise click.UsageError("give --move-to or --delete, not both")
    if (move_to is not None or delete) and folder is None:
        raise click.UsageError("--move-to and --delete act only inside a FOLDER given on the command line")
    if sum((as_json, as_csv)) > 1:
        raise click.UsageError("give --json or --csv, not both")
    folders = [folder, *reference] if folder is not None else []
    create = folder is not None
    collection = collection if collection is not None else default_dedup_collection_path()
    if create and model is None and not _exists(collection):
        model = _new_collection_model(against)
    with Collection.open(collection, model=model, device=device, create=create) as col:
        if folders:
            _index(col, folders, quiet)
        if against is not None:
            _against(col, against, folders, threshold, precision, as_json, as_csv)
            return
        report = find_duplicates(
            col, threshold=threshold, precision=precision, keep=keep, folders=folders or None, reference=reference
        )
        if html_path is not None:
            from simsearch.dedup.page import render_groups

            write_output(html_path, render_groups(col, report))
        actions = []
        if folder is not None and (move_to is not None or delete):
            actions = apply_report(col, report, inside=folder, move_to=move_to, delete=delete)
    _print_report(report, actions, as_json, as_csv)
    if html_path is not None:
        click.echo(f"wrote {html_path}", err=True)


def _print_report(report: Any, actions: list[Any], as_json: bool, as_csv: bool) -> None:
    if as_json:
        click.echo(json.dumps({**report.as_dict(), "actions": [a.__dict__ for a in actions]}, indent=2))
        return
    if as_csv:
        from simsearch.dedup.results import CSV_FIELDS

        writer = csv.DictWriter(sys.stdout, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(report.csv_rows())
        return
    for number, group in enumerate(report.groups, 1):
        click.echo(f"group {number}: {group.kind}, {len(group.members)} files, weakest pair {group.weakest:.3f}")
        removed = {r.id for r in group.remove}
        for m in group.members:
            role = "keep" if m.record.id == group.kept.id else "remove" if m.record.id in removed else "protected"
            score = "exact" if m.exact and role != "keep" else f"{m.score:.3f}"
            meaning = f"  {m.meaning}" if m.meaning and not m.exact else ""
            click.echo(f"  {role:<9} {score:>6}{meaning}  {m.record.width}x{m.record.height}  {m.record.path}")
        click.echo(f"  why: {group.reason}")
    removing = report.to_remove()
    click.echo(
        f"{len(report.groups)} groups among {report.images} images, threshold {report.threshold.value:.3f} "
        f"({report.threshold.origin}); {len(removing)} files to remove",
        err=True,
    )
    if actions:
        moved = sum(a.done == "moved" for a in actions)
        click.echo(f"{moved} moved, {len(actions) - moved} deleted", err=True)
    elif removing:
        click.echo("dry run: nothing was changed (--move-to DIR or --delete to act)", err=True)


def _against(
    col: Collection,
    other_path: Path,
    folders: list[Path],
    threshold: float | None,
    precision: float | None,
    as_json: bool,
    as_csv: bool,
) -> None:
    from simsearch import open_collection
    from simsearch.dedup import find_against

    with open_collection(other_path, readonly=True) as other:
        line, found = find_against(col, other, threshold=threshold, precision=precision, folders=folders or None)
    if as_json:
        payload = {
            "against": str(other_path),
            "threshold": line.value,
            "threshold_origin": line.origin,
            "found": [{"path": r.path, "matches": [m.as_dict() for m in ms]} for r, ms in found],
        }
        click.echo(json.dumps(payload, indent=2))
        return
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["path", "match", "score", "exact", "meaning"])
        for r, ms in found:
            writer.writerows([r.path, m.record.path, f"{m.score:.6f}", m.exact, m.meaning or ""] for m in ms)
        return
    for r, ms in found:
        click.echo(r.path)
        for m in ms:
            what = "exact" if m.exact else f"{m.score:.3f}" + (f"  {m.meaning}" if m.meaning else "")
            click.echo(f"  {what:>6}  {m.record.path}")
    click.echo(
        f"{len(found)} images already in {other_path} (threshold {line.value:.3f}, {line.origin})",
        err=True,
    )


def score_meanings(col: Collection, scores: list[float]) -> list[str | None]:
    """What each score means under the near-duplicate calibration kept in the collection or its checkpoint (made by
    `calibrate`): "p>=0.99 same", or None for each when there is none. Beside search results only a calibration the
    user made is shown (their scores mostly lie far below any duplicate line), except on a collection of the dedup
    model, whose searches are duplicate searches: there the shipped one speaks too. A calibration of another model
    is an error the caller shows, not a silently wrong meaning."""
    from simsearch.dedup import find_calibration

    calibration = find_calibration(col, shipped=col.manifest.model.spec.get("kind") == DEDUP_MODEL)
    return [None if calibration is None else calibration.meaning(s) for s in scores]
