"""The ``query`` click command: search with image files, standard input, URLs or stored ids, combined or each on
its own, and print the results in the chosen output mode (`cli.output`).

Everything that can be checked is checked before the model loads: the files exist and are images, URLs answer,
the device exists, the collection exists and holds the ids."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cli.common import check_device, collection_option, device_option, domain_errors, write_output
from cli.output import Answer, Mode, output_options, print_answers

if TYPE_CHECKING:
    from simsearch.collection import Collection
    from simsearch.querying import QueryImage


@click.command(short_help="Find the images most similar to a photo, a URL or a stored image.")
@click.argument("images", nargs=-1, metavar="[IMAGE]...")
@click.option("--id", "ids", type=int, multiple=True, metavar="ID", help="Search with a stored image (repeatable).")
@click.option(
    "--subtract",
    multiple=True,
    metavar="IMAGE",
    help="Subtract this image from the query: like IMAGE, unlike this one (repeatable).",
)
@collection_option
@click.option("-k", type=click.IntRange(1), default=10, show_default=True, help="How many results (per query).")
@click.option("--min-score", type=click.FloatRange(-1.0, 1.0), help="Leave out results that score lower.")
@click.option(
    "--exclude-self/--include-self",
    default=None,
    help="Leave the query's own entries out of the results [default: out for --id, in for image files].",
)
@click.option("--each", is_flag=True, help="Search with each IMAGE and ID on its own instead of combining them.")
@device_option
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a self-contained HTML page with thumbnails.",
)
@output_options
@domain_errors
def query(
    images: tuple[str, ...],
    ids: tuple[int, ...],
    subtract: tuple[str, ...],
    collection: Path | None,
    k: int,
    min_score: float | None,
    exclude_self: bool | None,
    each: bool,
    device: str,
    html_path: Path | None,
    output: Mode,
) -> None:
    """Show the images of the collection most similar to IMAGE, best first, with cosine scores (1 is the same
    image).

    IMAGE is a file, - for standard input, or an http(s) URL. Several images (and --id) make one query: the mean of
    their vectors, minus the mean of --subtract images. Example:

    \b
        simsearch query cat.jpg -k 5
        simsearch query a.jpg b.jpg --exclude-self --paths | xargs -d '\\n' ls -l
        curl -s https://example.com/cat.jpg | simsearch query - --json
        simsearch query --id 42 --min-score 0.8 --tsv
    """
    from cli.dedup import score_meanings
    from simsearch import open_collection
    from simsearch.querying import read_query

    _check_arguments(images, ids, subtract, each, html_path)
    positives = [read_query(spec) for spec in images]
    negatives = [read_query(spec) for spec in subtract]
    if positives or negatives:
        check_device(device)

    with open_collection(collection, device=device, readonly=True) as col:
        answers = _search(
            col, positives, ids, negatives, k=k, min_score=min_score, exclude=exclude_self, each=each, device=device
        )
        for answer in answers:
            answer.meanings = score_meanings(col, [r.score for r in answer.results])
        if html_path is not None:
            write_output(html_path, _page(col, positives, ids, negatives, answers[0]))
        empty = len(col) == 0
    print_answers(output, answers, str(col.path))
    if empty and output not in (Mode.JSON, Mode.JSONL):
        click.echo("the collection is empty", err=True)
    if html_path is not None:
        click.echo(f"wrote {html_path}", err=True)


def _check_arguments(
    images: tuple[str, ...], ids: tuple[int, ...], subtract: tuple[str, ...], each: bool, html: Path | None
) -> None:
    """Usage errors (exit status 2): nothing to search with, a missing file, standard input named twice."""
    from simsearch.querying import is_url

    if not images and not ids:
        raise click.UsageError("give at least one IMAGE (a file, - or a URL) or --id ID")
    for spec, hint in [*((s, "IMAGE") for s in images), *((s, "--subtract") for s in subtract)]:
        if spec != "-" and not is_url(spec) and not Path(spec).expanduser().exists():
            raise click.BadParameter(f"File '{spec}' does not exist.", param_hint=f"'{hint}'")
    if [*images, *subtract].count("-") > 1:
        raise click.UsageError("standard input (-) can be read only once")
    if each and html is not None and len(images) + len(ids) > 1:
        raise click.UsageError("--html draws one query: drop --each or --html")


def _search(
    col: Collection,
    positives: list[QueryImage],
    ids: tuple[int, ...],
    negatives: list[QueryImage],
    *,
    k: int,
    min_score: float | None,
    exclude: bool | None,
    each: bool,
    device: str | None = None,
) -> list[Answer]:
    """One answer, or one per query with `each`. `exclude` None: a query of stored ids only leaves itself out (an
    image is not its own neighbour), a query with image files keeps their entries (showing that they are in)."""
    from simsearch.querying import combine, embed_queries, own_ids, search

    for image_id in ids:
        col.vector(image_id)  # an unknown id is an error before any model loads
    vectors = embed_queries(col, positives, ids, device=device)
    minus = embed_queries(col, negatives, device=device) if negatives else None
    if each:
        answers = []
        singles: list[tuple[str, list[QueryImage], tuple[int, ...]]] = [(q.label, [q], ()) for q in positives]
        singles += [(f"id:{i}", [], (i,)) for i in ids]
        for row, (label, own_images, own_id) in enumerate(singles):
            leave_out = exclude if exclude is not None else not own_images
            excluded = own_ids(col, own_images, own_id) if leave_out else set()
            hits = search(col, combine(vectors[row : row + 1], minus), k, exclude_ids=excluded, min_score=min_score)
            answers.append(Answer(label, hits))
        return answers
    leave_out = exclude if exclude is not None else not positives
    excluded = own_ids(col, positives, ids) if leave_out else set()
    hits = search(col, combine(vectors, minus), k, exclude_ids=excluded, min_score=min_score)
    labels = [q.label for q in positives] + [f"id:{i}" for i in ids]
    label = " + ".join(labels) + "".join(f" - {q.label}" for q in negatives)
    details: dict[str, Any] = {}
    if len(labels) > 1 or negatives:
        details = {"images": [q.label for q in positives], "ids": list(ids), "subtract": [q.label for q in negatives]}
    return [Answer(label, hits, details)]


def _page(
    col: Collection, positives: list[QueryImage], ids: tuple[int, ...], negatives: list[QueryImage], answer: Answer
) -> str:
    """The HTML page of one (combined) query: every query image first, then the results."""
    from simsearch.images import load_image, make_thumbnail
    from simsearch.report import QueryCard, render_html

    cards = [QueryCard(q.label, make_thumbnail(load_image(q.data))) for q in positives]
    cards += [QueryCard(f"id:{i}", col.thumbnail(i)) for i in ids]
    cards += [QueryCard(q.label, make_thumbnail(load_image(q.data)), subtracted=True) for q in negatives]
    first, *more = cards
    return render_html(col, first.label, first.thumbnail, answer.results, more_queries=more)
