"""The ``train`` click command: fine-tune an embedding model with a metric loss. The recipe, the class split and the
run are the library's; the command parses, calls it, prints and draws. Registered on the main group by ``cli.main``.
"""

from __future__ import annotations

import json
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
    open_data,
    parse_options,
    query_view_option,
    two_views,
)
from cli.progress import EpochBar


def _train_summary(epoch: int, record: dict[str, Any]) -> str:
    val = record.get("val")
    scores = f", val R@1 {val['recall@1']:.4f} MAP@R {val['map@r']:.4f}" if val else ""
    return f"epoch {epoch}: loss {record['loss']:.4f}{scores}"


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
    "softmax, multi_similarity, arcface, cosface, proxy_anchor, pair_regression, "
    "infonce (views of one image or class as positives).",
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
@query_view_option
@gallery_view_option
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
    command again. On two-view data (the same items seen two ways) --query-view and --gallery-view validate by
    searching one view with the other. Example:

    \b
        simsearch train ./labeled --loss triplet --embed-dim 128 --epochs 20 --out runs/products
        simsearch train ./labeled --sampler pairs --loss contrastive --out runs/siamese
        simsearch train ./fonts --query-view serif --gallery-view sans -k 2 --out runs/fonts
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
    views = two_views(config.query_view, config.gallery_view)
    train_set, val_set = class_disjoint_split(open_data(data, views=views), val_fraction, seed=config.seed)
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
