"""Click commands: ``index``, ``query``, ``info`` and ``remove``. Parse, call the library, print; nothing else."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from cli.progress import BarProgress
from simsearch import Collection, SimSearchError, open_collection
from simsearch.collection import COLLECTION_ENV, default_collection_path

F = TypeVar("F", bound=Callable[..., Any])


def domain_errors(func: F) -> F:
    """Turn the library's domain errors into one-line click errors (exit status 1)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SimSearchError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


collection_option = click.option(
    "-c",
    "--collection",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=COLLECTION_ENV,
    help=f"Collection folder [default: ${COLLECTION_ENV} or {default_collection_path()}].",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"


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
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where the model runs.",
)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--workers", type=click.IntRange(0), default=None, help="Decoding processes [default: half the cores].")
@click.option("--index-factory", help="FAISS factory string, e.g. Flat, HNSW32, IVF1024,PQ32 [default: by size].")
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
    device: str,
    batch_size: int,
    workers: int | None,
    index_factory: str | None,
    max_pixels: int,
    as_json: bool,
    quiet: bool,
) -> None:
    """Embed every image under FOLDER into the collection; a second run only does new or changed files.

    Files that are not images, or are corrupt, are skipped and reported. Example:

    \b
        simsearch index ~/Pictures -c ~/pictures.simsearch
    """
    progress = BarProgress(enabled=not quiet and sys.stderr.isatty())
    with Collection.open(collection, model=model, weights=weights, device=device, create=True) as col:
        if index_factory:
            col.set_index_factory(index_factory)
        try:
            report = col.index_folder(
                folder, batch_size=batch_size, workers=workers, max_pixels=max_pixels, progress=progress
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
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
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
            html_path.write_text(page, encoding="utf-8")
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
        facts = col.info()
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
        ("on disk", _human_bytes(facts["disk_bytes"])),
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
    for r in removed:
        click.echo(f"removed {r.path}")
    click.echo(f"{len(removed)} removed, {total} images left", err=True)
    if not removed:
        raise click.ClickException("nothing matched: " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
