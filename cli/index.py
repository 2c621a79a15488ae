"""The ``index`` click command: bring a collection in line with a folder (or add one file), then one summary line.

What the scan leaves out is the library's (`simsearch.scanning`); this module parses and prints."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.common import check_device, collection_option, device_option, domain_errors, json_option, tta_option
from cli.output import echo_json, printable
from cli.progress import BarProgress

if TYPE_CHECKING:
    from simsearch.collection import Collection, IndexReport

#: How many files of each kind `-v` names before it only counts the rest.
LISTED = 10


@click.command(short_help="Embed the images of a folder (or one file) into the collection.")
@click.argument("target", metavar="FOLDER|FILE", type=click.Path(exists=True, path_type=Path))
@collection_option
@click.option("--model", help="'default' (EfficientNet-Lite0, offline), a timm model name, or a checkpoint folder.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="Local weights file for --model.")
@tta_option
@device_option
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(0),
    default=None,
    help=(
        "Decoding processes for a forward in this process, 0 to decode here too [default: on a CPU of 2 cores, "
        "for 384 images or more at batch 32, one process per core that decodes and runs the model; else half the "
        "cores decode, none on 2 cores]."
    ),
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where embedding runs: here, or on a Ray cluster (extra `ray`; --workers is then its embedding actors).",
)
@click.option(
    "--address", help="With --engine ray: the cluster to join, e.g. auto [default: start one on this machine]."
)
@click.option(
    "--index-factory",
    help="FAISS factory string, e.g. Flat, HNSW32, IVF1024,PQ32 [default: exact up to 100k images, then measured].",
)
@click.option(
    "--max-memory",
    metavar="SIZE",
    help="Memory budget of the index, e.g. 4G, 512M or bytes; kept for later runs [default: none].",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(1),
    default=100_000_000,
    show_default=True,
    help="Refuse larger images (decompression bombs).",
)
@click.option(
    "--exclude",
    "excludes",
    multiple=True,
    metavar="GLOB",
    help="Leave out files and folders that match this pattern (gitignore syntax, relative to FOLDER; repeatable). "
    "A .simsearchignore file in any folder adds its own patterns.",
)
@click.option(
    "--all-folders",
    is_flag=True,
    help="Also scan hidden folders and those skipped by default (@eaDir, #recycle, .git, node_modules, __pycache__).",
)
@click.option(
    "--onnx",
    is_flag=True,
    help="Also export the model into the collection (extra `onnx`): queries on the CPU then run without torch.",
)
@json_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("-v", "--verbose", is_flag=True, help="Also name the files that are no images and those not scanned.")
@domain_errors
def index(
    target: Path,
    collection: Path | None,
    model: str | None,
    weights: str | None,
    tta: str | None,
    device: str,
    batch_size: int,
    workers: int | None,
    engine: str,
    address: str | None,
    index_factory: str | None,
    max_memory: str | None,
    max_pixels: int,
    excludes: tuple[str, ...],
    all_folders: bool,
    onnx: bool,
    as_json: bool,
    quiet: bool,
    verbose: bool,
) -> None:
    """Embed every image under FOLDER into the collection; a second run only does new or changed files. A FILE is
    added on its own.

    Images that cannot be read are named; files that are no images (sidecars, videos) are counted, and named with
    -v. Hidden entries, junk folders and the collection's own folder are not scanned. Example:

    \b
        simsearch index ~/Pictures -c ~/pictures.simsearch
        simsearch index ~/Pictures --exclude '*.xmp' --exclude 'raw/'
        simsearch index ~/Downloads/cat.jpg
    """
    from simsearch.errors import SimSearchError
    from simsearch.scanning import ScanScope, compile_patterns

    try:
        compile_patterns(excludes, source=None)
    except SimSearchError as exc:
        raise click.BadParameter(str(exc), param_hint="'--exclude'") from None
    budget = _memory_budget(max_memory)
    check_device(device)
    scope = ScanScope(exclude=excludes)
    scope = scope.all_folders() if all_folders else scope

    from simsearch import Collection
    from simsearch.collection import KEEP
    from simsearch.scale import open_engine

    progress = BarProgress(enabled=not quiet and sys.stderr.isatty())
    with (
        open_engine(engine, address, workers) as runner,
        Collection.open(collection, model=model, weights=weights, device=device, create=True, tta=tta) as col,
    ):
        if index_factory or budget is not None:  # checked now, written once with the run's results
            col.configure_index(factory=index_factory or KEEP, max_memory=KEEP if budget is None else budget)
        options = {
            "batch_size": batch_size,
            "workers": workers,
            "max_pixels": max_pixels,
            "progress": progress,
            "engine": runner,
        }
        try:
            if target.is_dir():
                report = col.index_folder(target, scope=scope, **options)  # type: ignore[arg-type]
            else:
                report = col.add([target], **options)  # type: ignore[arg-type]
        finally:
            progress.close()
        total = len(col)
        exported = _export(col) if onnx else None
    if as_json:
        echo_json({"collection": str(col.path), "images": total, **report.as_dict(), "onnx": exported})
        return
    click.echo(summary_line(total, str(col.path), report), err=True)
    if exported is not None:
        click.echo(exported, err=True)
    if verbose:
        for line in verbose_lines(report):
            click.echo(line, err=True)


def _export(col: Collection) -> str:
    """Export the model for torch-free queries unless the collection holds a valid export of it already."""
    from simsearch.collection.query_model import export_query_model, exported_model

    if exported_model(col, "cpu") is not None:
        return "the model export for queries is up to date"
    check = export_query_model(col)
    return f"exported the model for queries (checked on {check.photos} photos, cosine >= {check.min_cosine:.6f})"


def _memory_budget(max_memory: str | None) -> int | None:
    if max_memory is None:
        return None
    from indexes import IndexLayerError, parse_memory

    try:
        return parse_memory(max_memory)
    except IndexLayerError as exc:
        raise click.ClickException(f"--max-memory: {exc}") from exc


def summary_line(total: int, collection: str, report: IndexReport) -> str:
    """The one line a run ends with: what changed, what was skipped, and what the scan left out."""
    skipped = f"{report.skipped} skipped"
    if report.not_images:
        skipped += f" ({len(report.not_images)} not {'images' if len(report.not_images) > 1 else 'an image'})"
    left_out = []
    if report.excluded:
        left_out.append(f"{report.excluded} excluded")
    if report.skipped_folders:
        left_out.append(f"{len(report.skipped_folders)} folders not entered")
    left_out += [f"{count} {_plural(kind) if count > 1 else kind}" for kind, count in report.special_counts().items()]
    return (
        f"{total} images in {printable(collection)}: {report.added} added, {report.updated} updated, "
        f"{report.moved} moved, {report.removed} removed, {report.unchanged} unchanged, {skipped}; "
        f"{report.embedded} embedded in {report.seconds:.1f} s ({report.images_per_second:.1f} images/s)"
        + (f"; left out: {', '.join(left_out)}" if left_out else "")
    )


def _plural(kind: str) -> str:
    return kind[:-1] + "ies" if kind.endswith("y") else kind + "s"


def verbose_lines(report: IndexReport) -> list[str]:
    """With -v: the first LISTED names of each kind of file that the summary only counts, then how many more."""
    groups = [("not an image", report.not_images), ("not entered", report.skipped_folders)]
    by_kind: dict[str, list[str]] = {}
    for path, kind in report.special_files:
        by_kind.setdefault(kind, []).append(path)
    groups += list(by_kind.items())
    lines = []
    for what, paths in groups:
        lines += [f"{what}: {printable(p)}" for p in paths[:LISTED]]
        if len(paths) > LISTED:
            lines.append(f"{what}: ... and {len(paths) - LISTED} more (--json lists them all)")
    return lines
