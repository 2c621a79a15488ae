"""The ``simsearch`` group and its small commands ``info``, ``remove`` and ``pack``; ``index``, ``query``, ``train``,
``eval``, ``pretrain`` and ``serve`` live in their own modules and are registered here. Parse, call the library,
print; nothing else. Nothing imported here needs FAISS or torch: help works on any install."""

from __future__ import annotations

from pathlib import Path

import click

from cli.common import cannot_write, collection_option, domain_errors, json_option, open_data
from cli.group import SectionedGroup
from cli.output import echo_json, printable


@click.group(cls=SectionedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="simsearch")
def main() -> None:
    """Image-similarity search: index a folder of images, then query it with a photo.

    \b
        simsearch index ~/Pictures
        simsearch query ~/Downloads/cat.jpg

    Exit status: 0 done, 1 an error (one line on stderr), 2 a usage error, 130 interrupted.
    """


@main.command(short_help="Describe the collection: model, images, index, size on disk.")
@collection_option
@json_option
@domain_errors
def info(collection: Path | None, as_json: bool) -> None:
    """Describe the collection: model, image count, index type, size on disk. Example:

    \b
        simsearch info -c ~/pictures.simsearch --json
    """
    from indexes import format_bytes
    from simsearch import open_collection

    with open_collection(collection, readonly=True) as col:
        facts = col.info().as_dict()
    if as_json:
        echo_json(facts)
        return
    index_kind = facts["index_factory"] + (" (by size)" if facts["index_auto"] else " (chosen)")
    rows = [
        ("collection", printable(facts["path"])),
        ("images", str(facts["images"])),
        ("model", f"{facts['model']} (dim {facts['dim']}, {facts['metric']})"),
        ("weights", facts["weights_sha256"][:16]),
        ("index", index_kind + (f", {facts['search_params']}" if facts["search_params"] else "")),
        ("on disk", format_bytes(facts["disk_bytes"])),
        ("updated", facts["updated"]),
    ]
    for name, value in rows:
        click.echo(f"{name:>10}  {value}")


@main.command(short_help="Forget images by path or folder (the files stay on disk).")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@collection_option
@json_option
@domain_errors
def remove(paths: tuple[Path, ...], collection: Path | None, as_json: bool) -> None:
    """Remove images from the collection by path (a folder removes everything under it). Files stay on disk.

    \b
        simsearch remove ~/Pictures/old/
    """
    from simsearch import open_collection

    with open_collection(collection) as col:
        removed = col.remove(paths)
        total = len(col)
    if as_json:
        echo_json({"removed": [r.path for r in removed], "images": total})
    else:
        for r in removed:
            click.echo(f"removed {printable(r.path)}")
    if not removed:  # exit status 1 in every output mode
        raise click.ClickException("nothing matched: " + ", ".join(printable(str(p)) for p in paths))
    if not as_json:
        click.echo(f"{len(removed)} removed, {total} images left", err=True)


@main.command(short_help="Pack a class-per-folder image tree into one LMDB folder.")
@click.argument("data")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--max-side", type=click.IntRange(1), help="Shrink larger images to this side (stored as JPEG).")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option(
    "--views",
    metavar="VIEW,VIEW,...",
    help="DATA is two-view data with these views (see `train --query-view`): keep each image's view.",
)
@json_option
@domain_errors
def pack(data: str, out: Path, max_side: int | None, overwrite: bool, views: str | None, as_json: bool) -> None:
    """Pack a class-per-folder image tree (or a shared set such as caltech101:train) into one LMDB folder that
    `train` and `eval` read faster.

    Files are stored as their original bytes (unless --max-side shrinks them), arrays as PNG; unreadable files are
    skipped. Example:

    \b
        simsearch pack ./labeled labeled.lmdb --max-side 512
        simsearch train labeled.lmdb --out runs/products
    """
    from simsearch.data import pack_views, write_lmdb_dataset

    if out.exists() and not overwrite:
        raise click.ClickException(f"{out} already exists (pass --overwrite to replace it)")
    view_names = tuple(name.strip() for name in views.split(",")) if views is not None else None
    dataset = open_data(data, views=view_names)
    try:
        write = pack_views if view_names else write_lmdb_dataset
        count = write(dataset, out, max_side=max_side, overwrite=overwrite)
    except FileExistsError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise cannot_write(out, exc) from None
    if as_json:
        echo_json({"out": str(out), "images": count, "classes": len(dataset.classes)})
        return
    click.echo(f"packed {count} images of {len(dataset.classes)} classes into {out}", err=True)


def _register_extra_commands() -> None:
    """Commands that live in their own modules (importing them costs nothing: their heavy imports are lazy)."""
    from cli.calibrate import calibrate
    from cli.dedup import dedup
    from cli.evaluate import evaluate
    from cli.index import index
    from cli.pretrain import pretrain
    from cli.query import query
    from cli.serve import serve
    from cli.train import train

    main.add_command(index)
    main.add_command(query)
    main.add_command(pretrain)
    main.add_command(train)
    main.add_command(evaluate)
    main.add_command(serve)
    main.add_command(dedup)
    main.add_command(calibrate)


_register_extra_commands()

if __name__ == "__main__":
    main()
