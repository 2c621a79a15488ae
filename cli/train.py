"""The ``train`` and ``eval`` click commands: fine-tune an embedding model with a metric loss, and score a model by
retrieval. The recipe, the class split, the scores and the eval record are the library's; these commands parse, call
it, print and write. Registered on the main group by ``cli.main``.
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
    json_option,
    missing_data_message,
    open_data,
    parse_options,
    tta_option,
    write_output,
)
from cli.progress import EpochBar


def _train_summary(epoch: int, record: dict[str, Any]) -> str:
    val = record.get("val")
    scores = f", val R@1 {val['recall@1']:.4f} MAP@R {val['map@r']:.4f}" if val else ""
    return f"epoch {epoch}: loss {record['loss']:.4f}{scores}"


def _parse_ks(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    from simsearch.evaluation import EvaluationError, parse_ks

    try:
        return parse_ks(value)
    except EvaluationError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.argument("data")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder: the best checkpoint (usable as --model), history.json, last/ to resume.",
)
@click.option(
    "--loss",
    default="triplet",
    show_default=True,
    help="A loss name: triplet, contrastive, center, prototypical, "
    "softmax, multi_similarity, arcface, cosface, proxy_anchor, pair_regression.",
)
@click.option(
    "--loss-option",
    "loss_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A loss option, e.g. margin=0.1 or mining=semi_hard (repeatable).",
)
@click.option("--distance", type=click.Choice(["cosine", "euclidean"]), help="Distance of pair/triplet losses.")
@click.option(
    "--backbone",
    default="default",
    show_default=True,
    help="'default', a timm name, a checkpoint folder, or random:NAME (untrained).",
)
@click.option(
    "--backbone-option",
    "backbone_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A timm option for the backbone, e.g. in_chans=1 (grey input) or drop_path_rate=0.1 (repeatable).",
)
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="Local weights file for --backbone.")
@click.option(
    "--embed-dim",
    type=click.IntRange(0),
    default=128,
    show_default=True,
    help="Size of a fresh projection head; 0 keeps the backbone's own output (a checkpoint's trained head; with no "
    "head at all the backbone trains at --lr x --backbone-lr-mult).",
)
@click.option("--epochs", type=click.IntRange(1), default=10, show_default=True)
@click.option(
    "--sampler",
    type=click.Choice(["pk", "pairs"]),
    default="pk",
    show_default=True,
    help="pk: P x K class-balanced batches (any loss); pairs: two-tower Siamese pairs (contrastive, pair_regression).",
)
@click.option("-p", "--classes-per-batch", "p", type=click.IntRange(2), default=8, show_default=True)
@click.option("-k", "--images-per-class", "k", type=click.IntRange(2), default=4, show_default=True)
@click.option("--batches-per-epoch", type=click.IntRange(1), help="[default: images // (P*K)]")
@click.option("--pairs-per-epoch", type=click.IntRange(1), help="With --sampler pairs [default: training images].")
@click.option(
    "--positive-fraction",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="With --sampler pairs: share of same-class pairs.",
)
@click.option("--pair-batch-size", type=click.IntRange(1), default=32, show_default=True, help="With --sampler pairs.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--backbone-lr-mult", type=click.FloatRange(min=0), default=0.1, show_default=True)
@click.option(
    "--loss-lr",
    type=click.FloatRange(min=0, min_open=True),
    help="Learning rate of the loss's own parameters (proxies, class weights) [default: --lr].",
)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=1e-4, show_default=True)
@click.option("--warmup-epochs", type=click.FloatRange(min=0), default=1.0, show_default=True)
@click.option("--freeze-backbone-epochs", type=click.IntRange(0), default=0, show_default=True)
@click.option("--freeze-bn", is_flag=True, help="Keep BatchNorm running statistics fixed.")
@click.option(
    "--freeze-stages",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Keep the stem and the first N stages of a timm backbone as they are for the whole run (no gradient, fixed "
    "BatchNorm): the generic early features stay, and each epoch costs less.",
)
@click.option("--image-size", type=click.IntRange(8), help="Input resolution [default: the backbone's].")
@click.option(
    "--crop-pct",
    type=click.FloatRange(0, 1, min_open=True),
    help="Centre crop of the eval transform, kept in the checkpoint (1.0: the whole image) [default: the backbone's].",
)
@click.option("--no-augment", is_flag=True, help="Train on the eval transform (no random crops or flips).")
@click.option(
    "--augment-option",
    "augment_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A timm training-transform option, e.g. hflip=0, scale=[0.7,1.0] or re_prob=0.25 (repeatable).",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.2,
    show_default=True,
    help="Share of DATA's classes held out for validation (class-disjoint); 0 = none.",
)
@click.option(
    "--patience",
    type=click.IntRange(0),
    default=5,
    show_default=True,
    help="Stop after this many epochs without a better validation MAP@R; 0 never stops early.",
)
@click.option(
    "--ema-decay",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Validate and keep a moving average of the weights with this decay (warmed up from 0), e.g. 0.999.",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@device_option
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True, help="Decoding processes.")
@click.option("--restart", is_flag=True, help="Ignore OUT/last/ instead of resuming from it.")
@json_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no per-epoch lines.")
@domain_errors
def train(
    data: str,
    out_dir: Path,
    loss_options: tuple[str, ...],
    backbone_options: tuple[str, ...],
    augment_options: tuple[str, ...],
    val_fraction: float,
    restart: bool,
    weights: str | None,
    no_augment: bool,
    as_json: bool,
    quiet: bool,
    **recipe: Any,
) -> None:
    """Fine-tune an embedding model with a metric loss on DATA (one sub-folder per class, an LMDB folder written by
    `simsearch pack`, or a shared set such as omniglot:background).

    Says what it trains and validates on before the first batch, scores the validation classes before training
    (epoch 0) and after each epoch, and draws both into OUT/history.png. Without a terminal (a log file), a progress
    line comes after the first batch and then every 30 seconds. A run interrupted can be resumed by running the same
    command again. Example:

    \b
        simsearch train ./labeled --loss triplet --embed-dim 128 --epochs 20 --out runs/products
        simsearch train ./labeled --sampler pairs --loss contrastive --out runs/siamese
        simsearch index ./catalog --model runs/products
    """
    from simsearch.training import TrainConfig, class_disjoint_split
    from simsearch.training import train as run_training

    if no_augment and augment_options:
        raise click.UsageError("--augment-option has no effect with --no-augment: drop one of them")
    recipe["embed_dim"] = recipe["embed_dim"] or None
    recipe["patience"] = recipe["patience"] or None
    config = TrainConfig(
        **recipe,
        weights=weights,
        augment=not no_augment,
        loss_kwargs=parse_options(loss_options),
        backbone_kwargs=parse_options(backbone_options, "--backbone-option"),
        augment_kwargs=parse_options(augment_options, "--augment-option"),
    )
    train_set, val_set = class_disjoint_split(open_data(data), val_fraction, seed=config.seed)
    result = run_training(
        config,
        train_set,
        val_set,
        out_dir,
        EpochBar(quiet, _train_summary),
        resume=not restart,
    )
    plot = _history_plot(result.checkpoint)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    best = ", ".join(f"{k} {v:.4f}" for k, v in result.best_metrics.items())
    click.echo(
        f"best epoch {result.best_epoch} ({best or 'no validation'}) saved in {result.checkpoint}; "
        f"{result.epochs_run} epochs in {result.seconds:.1f} s ({result.samples_per_second:.1f} samples/s)"
        f"{', stopped early' if result.stopped_early else ''}{f'; curves in {plot}' if plot else ''}",
        err=True,
    )


def _history_plot(out_dir: Path) -> Path | None:
    """OUT/history.png: the loss and the validation scores per epoch, from epoch 0 (None: matplotlib missing)."""
    from simsearch.plots import save_history_plot
    from simsearch.runs import HISTORY_FILE

    if not can_draw("no history.png written"):
        return None
    path = out_dir / "history.png"
    try:
        return save_history_plot(path, json.loads((out_dir / HISTORY_FILE).read_text(encoding="utf-8")))
    except OSError as exc:
        raise cannot_write(path, exc) from None


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
    as_json: bool,
) -> None:
    """Score a model by exact k-NN retrieval on DATA (one sub-folder per class, an LMDB folder, or a shared set such
    as caltech101:test), leave-one-out, or against --gallery; DATA omniglot:one-shot scores the 20 official Omniglot
    20-way one-shot runs.

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
    if data == ONE_SHOT_DATA and (gallery or plot_path or compared or baselines):
        raise click.UsageError(
            f"{ONE_SHOT_DATA} is scored by its own runs: no --gallery, --plot, --compare or --baselines"
        )
    if plot_path is not None:
        require_matplotlib()  # the picture asked for cannot be drawn: say so before any work
    embedder = load_embedder(model, weights=weights, device=device, tta=tta)
    if record_path is None and plot_path is None and embedder.spec.get("kind") == "checkpoint":
        folder = Path(embedder.spec["path"])
        if os.access(folder, os.W_OK):
            record_path = default_record_path(folder, data, gallery, tta)
        else:
            click.echo(f"{folder} is not writable: no record written (pass --out)", err=True)
    if data == ONE_SHOT_DATA:
        _one_shot(embedder, record_path, batch_size, as_json)
        return
    dataset = open_data(data)
    gallery_set = open_data(gallery, "--gallery") if gallery is not None else None  # a bad name fails before any work
    scored = evaluate_labelled(
        embedder,
        dataset,
        data,
        gallery=gallery_set,
        gallery_name=gallery,
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
