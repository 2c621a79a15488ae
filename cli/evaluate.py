"""The ``eval`` click command: score a model by retrieval, beside raw-pixel baselines where asked. The scores and the
record are the library's (`simsearch.evaluation`); the command parses, calls it, prints a table and writes the record
and its plot. Registered on the main group by ``cli.main``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from cli.common import (
    can_draw,
    cannot_write,
    device_option,
    domain_errors,
    gallery_view_option,
    json_option,
    missing_data_message,
    open_data,
    query_view_option,
    tta_option,
    two_views,
    write_output,
)


def _parse_ks(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    from simsearch.evaluation import EvaluationError, parse_ks

    try:
        return parse_ks(value)
    except EvaluationError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command(name="eval")
@click.argument("data")
@click.option(
    "--model", default="default", show_default=True, help="A checkpoint folder, 'default', or a timm model name."
)
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="Local weights file for --model.")
@tta_option
@device_option
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True)
@click.option(
    "--out",
    "record_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the JSON record here, and its plot beside it (same name, .png) [default for a checkpoint folder: "
    "MODEL/eval-<DATA's name>[-<TTA>].json].",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the PNG here: recall@k curve and a 2-D projection of the embeddings [default: beside --out].",
)
@click.option(
    "--gallery",
    help="Search this labelled set (folder or shared set) instead of DATA itself: DATA's images are then queries "
    "only, e.g. fashion-mnist:test against fashion-mnist:train. Classes match by name.",
)
@query_view_option
@gallery_view_option
@click.option(
    "--k",
    "ks",
    default="1,2,4,8,10,16,32",  # simsearch.evaluation.EVAL_KS, written out so that --help needs no torch import
    show_default=True,
    metavar="K,K,...",
    callback=_parse_ks,
    help="The k of recall@k (hit rate), e.g. 1,5,10.",
)
@click.option(
    "--baselines",
    is_flag=True,
    help="Also score raw pixels (32x32, centred) and their PCA on the same images, split and protocol, side by side.",
)
@click.option(
    "--projection",
    type=click.Choice(["pca", "tsne"]),
    default="pca",
    show_default=True,
    help="2-D projection of the plot (tsne: exact, on 1,000 points, about half a minute).",
)
@click.option(
    "--compare",
    "compare_paths",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An earlier eval record (JSON) whose recall@k curve joins the plot (repeatable).",
)
@json_option
@domain_errors
def evaluate(
    data: str,
    gallery: str | None,
    model: str,
    weights: str | None,
    tta: str | None,
    device: str,
    batch_size: int,
    workers: int,
    record_path: Path | None,
    plot_path: Path | None,
    projection: str,
    compare_paths: tuple[Path, ...],
    ks: tuple[int, ...],
    baselines: bool,
    query_view: str | None,
    gallery_view: str | None,
    as_json: bool,
) -> None:
    """Score a model by exact k-NN retrieval on DATA (one sub-folder per class, an LMDB folder, or a shared set such
    as caltech101:test), leave-one-out, or against --gallery, or on two-view data from --query-view to
    --gallery-view; DATA omniglot:one-shot scores the 20 official Omniglot 20-way one-shot runs.

    Prints recall@k (hit rate) for each --k, MAP@R, R-precision and NMI (left out, with the reason, where the queries
    hold about one image per class), and writes them with their plot: beside a checkpoint folder's weights by
    default, or where --out and --plot say. --baselines scores raw pixels beside the model. Example:

    \b
        simsearch eval ./labeled_test --model runs/products   # + runs/products/eval-labeled_test.json, .png
        simsearch eval ./labeled_test --k 1,5,10 --baselines --plot base.png   # the default model against pixels
        simsearch eval ./labeled_test --plot both.png --compare runs/products/eval-labeled_test.json
    """
    from simsearch.evaluation import ONE_SHOT_DATA, default_record_path, evaluate_labelled, read_record
    from simsearch.models import load_embedder
    from simsearch.plots import require_matplotlib

    compared = [read_record(path) for path in compare_paths]
    views = two_views(query_view, gallery_view)
    if data == ONE_SHOT_DATA and (gallery or plot_path or compared or baselines or views):
        raise click.UsageError(
            f"{ONE_SHOT_DATA} is scored by its own runs: no --gallery, --plot, --compare, --baselines or views"
        )
    if views and gallery:
        raise click.UsageError("two-view data search one view with the other: --gallery goes without views")
    if plot_path is not None:
        require_matplotlib()  # the picture asked for cannot be drawn: say so before any work
    embedder = load_embedder(model, weights=weights, device=device, tta=tta)
    if record_path is None and plot_path is None and embedder.spec.get("kind") == "checkpoint":
        folder = Path(embedder.spec["path"])
        if os.access(folder, os.W_OK):
            record_path = default_record_path(folder, data, gallery, tta, views)
        else:
            click.echo(f"{folder} is not writable: no record written (pass --out)", err=True)
    if data == ONE_SHOT_DATA:
        _one_shot(embedder, record_path, batch_size, as_json)
        return
    dataset = open_data(data, views=views)
    gallery_set = open_data(gallery, "--gallery") if gallery is not None else None  # a bad name fails before any work
    scored = evaluate_labelled(
        embedder,
        dataset,
        data,
        gallery=gallery_set,
        gallery_name=gallery,
        views=views,
        ks=ks,
        baselines=baselines,
        batch_size=batch_size,
        workers=workers,
    )
    record = scored.record
    for message in record.skipped:
        click.echo(f"skipped unreadable image {message}", err=True)
    if plot_path is None and record_path is not None and can_draw("no plot written"):
        plot_path = record_path.with_suffix(".png")
    if plot_path is not None:
        from simsearch.plots import save_eval_plot

        try:
            save_eval_plot(
                plot_path,
                [record.as_dict(), *(baseline.as_dict() for baseline in record.baselines), *compared],
                scored.vectors,
                scored.labels,
                classes=dataset.classes,
                projection=projection,
            )
        except OSError as exc:
            raise cannot_write(plot_path, exc) from None
        record.plot = str(plot_path)
    _report(record.as_dict(), record.headline(), record_path, plot_path, as_json)


def _report(
    record: dict[str, Any], headline: str, record_path: Path | None, plot_path: Path | None, as_json: bool
) -> None:
    """Write an eval record where asked, then print it: as JSON, or a headline and a table of one line a metric
    (one column a scored model when there are baselines), then what was left out and why."""
    text = json.dumps(record, indent=2)
    if record_path is not None:
        write_output(record_path, text + "\n")
    if as_json:
        click.echo(text)
        return
    click.echo(headline)
    for line in _metric_table([record, *record.get("baselines", [])]):
        click.echo(line)
    for name, reason in record.get("omitted", {}).items():
        click.echo(f"  {name} left out: {reason}")
    if record_path is not None or plot_path is not None:
        click.echo(f"wrote {', '.join(str(p) for p in (record_path, plot_path) if p is not None)}", err=True)


def _metric_table(records: list[dict[str, Any]]) -> list[str]:
    """One line a metric, one column a record (headed by its model when there are several)."""

    def cell(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    names = list(records[0]["metrics"])
    widths = [max(6, len(str(r["model"]))) for r in records] if len(records) > 1 else [0]
    lines = [f"  {'':<17} " + "  ".join(f"{r['model']:>{w}}" for r, w in zip(records, widths, strict=True))]
    for name in names:
        cells = [cell(r["metrics"].get(name, "-")) for r in records]
        lines.append(f"  {name:<17} " + "  ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))
    return lines if len(records) > 1 else lines[1:]


def _one_shot(embedder: Any, record_path: Path | None, batch_size: int, as_json: bool) -> None:
    """`simsearch eval omniglot:one-shot`: 20-way accuracy over the official runs, as a record like eval's."""
    from simsearch.data import DataNotFoundError
    from simsearch.evaluation import one_shot_record

    try:
        record = one_shot_record(embedder, batch_size=batch_size)
    except DataNotFoundError as exc:
        raise click.ClickException(missing_data_message(exc)) from None
    _report(record.as_dict(), record.headline(), record_path, None, as_json)
