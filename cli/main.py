"""Click commands: ``index``, ``query``, ``info``, ``remove`` and ``pack``; ``train``, ``eval`` and ``pretrain`` live in
their own modules and are registered here. Parse, call the library, print; nothing else."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from cli.common import (
    cannot_write,
    collection_option,
    device_option,
    domain_errors,
    json_option,
    open_data,
    tta_option,
    write_output,
)
from cli.progress import BarProgress
from indexes import IndexLayerError, format_bytes, parse_memory
from simsearch import Collection, open_collection
from simsearch.collection import KEEP
from simsearch.scale import open_engine


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="simsearch")
def main() -> None:
    """Image-similarity search: index a folder of images, then query it with a photo.

    \b
        simsearch index ~/Pictures
        simsearch query ~/Downloads/cat.jpg
    """


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@collection_option
@click.option("--model", help="'default' (EfficientNet-Lite0, offline), a timm model name, or a checkpoint folder.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="Local weights file for --model.")
@tta_option
@device_option
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--workers", type=click.IntRange(0), default=None, help="Decoding processes [default: half the cores].")
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
@json_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@domain_errors
def index(
    folder: Path,
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
    as_json: bool,
    quiet: bool,
) -> None:
    """Embed every image under FOLDER into the collection; a second run only does new or changed files.

    Files that are not images, or are corrupt, are skipped and reported. Example:

    \b
        simsearch index ~/Pictures -c ~/pictures.simsearch
    """
    budget = None
    if max_memory is not None:
        try:
            budget = parse_memory(max_memory)
        except IndexLayerError as exc:
            raise click.ClickException(f"--max-memory: {exc}") from exc
    progress = BarProgress(enabled=not quiet and sys.stderr.isatty())
    with (
        open_engine(engine, address, workers) as runner,
        Collection.open(collection, model=model, weights=weights, device=device, create=True, tta=tta) as col,
    ):
        if index_factory or budget is not None:  # checked now, written once with the run's results
            col.configure_index(factory=index_factory or KEEP, max_memory=KEEP if budget is None else budget)
        try:
            report = col.index_folder(
                folder, batch_size=batch_size, workers=workers, max_pixels=max_pixels, progress=progress, engine=runner
            )
        finally:
            progress.close()
        total = len(col)
    if as_json:
        click.echo(json.dumps({"collection": str(col.path), "images": total, **report.as_dict()}, indent=2))
        return
    click.echo(
        f"{total} images in {col.path}: {report.added} added, {report.updated} updated, {report.moved} moved, "
        f"{report.removed} removed, {report.unchanged} unchanged, {report.skipped} skipped; "
        f"{report.embedded} embedded in {report.seconds:.1f} s ({report.images_per_second:.1f} images/s)",
        err=True,
    )


@main.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@collection_option
@click.option("-k", type=click.IntRange(1), default=10, show_default=True, help="How many results.")
@device_option
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a self-contained HTML page with thumbnails.",
)
@json_option
@domain_errors
def query(image: Path, collection: Path | None, k: int, device: str, html_path: Path | None, as_json: bool) -> None:
    """Show the images of the collection most similar to IMAGE, best first, with cosine scores.

    \b
        simsearch query cat.jpg -k 5
        simsearch query cat.jpg --json | jq '.results[0].path'
    """
    with open_collection(collection, device=device) as col:
        results = col.search(image, k=k)
        if html_path is not None:
            from simsearch.images import load_image, make_thumbnail
            from simsearch.report import render_html

            page = render_html(col, str(image), make_thumbnail(load_image(image)), results)
            write_output(html_path, page)
    if as_json:
        click.echo(
            json.dumps(
                {"query": str(image), "collection": str(col.path), "results": [r.__dict__ for r in results]}, indent=2
            )
        )
        return
    if not results:
        click.echo("the collection is empty", err=True)
        return
    click.echo(f"{'rank':>4}  {'score':>6}  path")
    for r in results:
        click.echo(f"{r.rank:>4}  {r.score:6.3f}  {r.path}")
    if html_path is not None:
        click.echo(f"wrote {html_path}", err=True)


@main.command()
@collection_option
@json_option
@domain_errors
def info(collection: Path | None, as_json: bool) -> None:
    """Describe the collection: model, image count, index type, size on disk."""
    with open_collection(collection) as col:
        facts = col.info().as_dict()
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    index_kind = facts["index_factory"] + (" (by size)" if facts["index_auto"] else " (chosen)")
    rows = [
        ("collection", facts["path"]),
        ("images", str(facts["images"])),
        ("model", f"{facts['model']} (dim {facts['dim']}, {facts['metric']})"),
        ("weights", facts["weights_sha256"][:16]),
        ("index", index_kind + (f", {facts['search_params']}" if facts["search_params"] else "")),
        ("on disk", format_bytes(facts["disk_bytes"])),
        ("updated", facts["updated"]),
    ]
    for name, value in rows:
        click.echo(f"{name:>10}  {value}")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@collection_option
@json_option
@domain_errors
def remove(paths: tuple[Path, ...], collection: Path | None, as_json: bool) -> None:
    """Remove images from the collection by path (a folder removes everything under it). Files stay on disk.

    \b
        simsearch remove ~/Pictures/old/
    """
    with open_collection(collection) as col:
        removed = col.remove(paths)
        total = len(col)
    if as_json:
        click.echo(json.dumps({"removed": [r.path for r in removed], "images": total}, indent=2))
        return
    if not removed:
        raise click.ClickException("nothing matched: " + ", ".join(str(p) for p in paths))
    for r in removed:
        click.echo(f"removed {r.path}")
    click.echo(f"{len(removed)} removed, {total} images left", err=True)


@main.command()
@click.argument("data")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--max-side", type=click.IntRange(1), help="Shrink larger images to this side (stored as JPEG).")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@json_option
@domain_errors
def pack(data: str, out: Path, max_side: int | None, overwrite: bool, as_json: bool) -> None:
    """Pack a class-per-folder image tree (or a shared set such as caltech101:train) into one LMDB folder that
    `train` and `eval` read faster.

    Files are stored as their original bytes (unless --max-side shrinks them), arrays as PNG; unreadable files are
    skipped. Example:

    \b
        simsearch pack ./labeled labeled.lmdb --max-side 512
        simsearch train labeled.lmdb --out runs/products
    """
    from simsearch.data import write_lmdb_dataset

    if out.exists() and not overwrite:
        raise click.ClickException(f"{out} already exists (pass --overwrite to replace it)")
    dataset = open_data(data)
    try:
        count = write_lmdb_dataset(dataset, out, max_side=max_side, overwrite=overwrite)
    except FileExistsError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise cannot_write(out, exc) from None
    if as_json:
        click.echo(json.dumps({"out": str(out), "images": count, "classes": len(dataset.classes)}, indent=2))
        return
    click.echo(f"packed {count} images of {len(dataset.classes)} classes into {out}", err=True)


def _register_extra_commands() -> None:
    """Commands that live in their own modules (importing them costs nothing: their heavy imports are lazy)."""
    from cli.pretrain import pretrain
    from cli.serve import serve
    from cli.train import evaluate, train

    main.add_command(pretrain)
    main.add_command(train)
    main.add_command(evaluate)
    main.add_command(serve)


_register_extra_commands()

if __name__ == "__main__":
    main()
