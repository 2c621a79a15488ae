"""Click commands: ``index``, ``query``, ``info`` and ``remove``. Parse, call the library, print; nothing else."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from cli.common import (
    cannot_write,
    collection_option,
    device_option,
    domain_errors,
    json_option,
    open_data,
    parse_options,
    tta_option,
    write_output,
)
from cli.progress import BarProgress, EpochBar
from indexes import IndexLayerError, parse_memory
from simsearch import Collection, open_collection


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
@tta_option
@device_option
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--workers", type=click.IntRange(0), default=None, help="Decoding processes [default: half the cores].")
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
    with Collection.open(collection, model=model, weights=weights, device=device, create=True, tta=tta) as col:
        if budget is not None:
            col.set_max_memory(budget)
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
    if not removed:
        raise click.ClickException("nothing matched: " + ", ".join(str(p) for p in paths))
    for r in removed:
        click.echo(f"removed {r.path}")
    click.echo(f"{len(removed)} removed, {total} images left", err=True)


def _train_summary(epoch: int, record: dict[str, Any]) -> str:
    val = record.get("val")
    scores = f", val R@1 {val['recall@1']:.4f} MAP@R {val['map@r']:.4f}" if val else ""
    return f"epoch {epoch}: loss {record['loss']:.4f}{scores}"


#: `simsearch eval` DATA that means the official Omniglot 20-way one-shot runs rather than a labelled set.
ONE_SHOT_DATA = "omniglot:one-shot"


@main.command()
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

    A run interrupted can be resumed by running the same command again. Example:

    \b
        simsearch train ./labeled --loss triplet --embed-dim 128 --epochs 20 --out runs/products
        simsearch train ./labeled --sampler pairs --loss contrastive --out runs/siamese
        simsearch index ./catalog --model runs/products
    """
    from simsearch.data import ClassSubset
    from simsearch.training import TrainConfig, split_classes
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
    dataset = open_data(data)
    train_classes, val_classes = split_classes(dataset.classes, val_fraction, seed=config.seed)
    train_set = ClassSubset(dataset, train_classes)
    val_set = ClassSubset(dataset, val_classes) if val_classes else None
    result = run_training(
        config,
        train_set,
        val_set,
        out_dir,
        EpochBar(quiet, _train_summary),
        resume=not restart,
    )
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    best = ", ".join(f"{k} {v:.4f}" for k, v in result.best_metrics.items())
    click.echo(
        f"best epoch {result.best_epoch} ({best or 'no validation'}) saved in {result.checkpoint}; "
        f"{result.epochs_run} epochs in {result.seconds:.1f} s ({result.samples_per_second:.1f} samples/s)"
        f"{', stopped early' if result.stopped_early else ''}",
        err=True,
    )


@main.command(name="eval")
@click.argument("data")
@click.option("--model", required=True, help="A checkpoint folder, 'default', or a timm model name.")
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
    as_json: bool,
) -> None:
    """Score a model by exact k-NN retrieval on DATA (one sub-folder per class, an LMDB folder, or a shared set such
    as caltech101:test), leave-one-out, or against --gallery; DATA omniglot:one-shot scores the 20 official Omniglot
    20-way one-shot runs.

    Prints recall@1/2/4/8/16/32 (hit rate), MAP@R, R-precision and NMI, and writes them with their plot: beside a
    checkpoint folder's weights by default, or where --out and --plot say. Example:

    \b
        simsearch eval ./labeled_test --model runs/products   # + runs/products/eval-labeled_test.json, .png
        simsearch eval ./labeled_test --model default --plot base.png --compare runs/products/eval-labeled_test.json
    """
    from simsearch.data import data_label
    from simsearch.evaluation import embed_queries_and_gallery, evaluate_embeddings
    from simsearch.models import load_embedder

    compared = [_read_record(path) for path in compare_paths]
    if data == ONE_SHOT_DATA and (gallery or plot_path or compared):
        raise click.UsageError(f"{ONE_SHOT_DATA} is scored by its own runs: no --gallery, --plot or --compare")
    embedder = load_embedder(model, weights=weights, device=device, tta=tta)
    if record_path is None and plot_path is None and embedder.spec.get("kind") == "checkpoint":
        folder = Path(embedder.spec["path"])
        if os.access(folder, os.W_OK):
            record_path = _default_record_path(folder, data, gallery, tta)
        else:
            click.echo(f"{folder} is not writable: no record written (pass --out)", err=True)
    if data == ONE_SHOT_DATA:
        _one_shot(embedder, record_path, batch_size, as_json)
        return
    dataset = open_data(data)
    gallery_set = open_data(gallery, "--gallery") if gallery is not None else None  # a bad name fails before any work
    skipped: list[str] = []
    vectors, labels, searched = embed_queries_and_gallery(
        embedder, dataset, gallery_set, batch_size=batch_size, workers=workers, skipped=skipped
    )
    for message in skipped:
        click.echo(f"skipped unreadable image {message}", err=True)
    record = evaluate_embeddings(embedder, vectors, labels, gallery=searched)
    if skipped:
        record["skipped"] = skipped
    if gallery is not None:
        record["gallery"] = data_label(gallery)
    record["data"] = data_label(data)
    if plot_path is None and record_path is not None:
        plot_path = record_path.with_suffix(".png")
    if plot_path is not None:
        from simsearch.plots import save_eval_plot

        try:
            save_eval_plot(
                plot_path, [record, *compared], vectors, labels, classes=dataset.classes, projection=projection
            )
        except OSError as exc:
            raise cannot_write(plot_path, exc) from None
        record["plot"] = str(plot_path)
    headline = f"{record['model']} on {record['images']} images of {record['classes']} classes ({record['protocol']})"
    _report(record, headline, record_path, plot_path, as_json)


def _report(
    record: dict[str, Any], headline: str, record_path: Path | None, plot_path: Path | None, as_json: bool
) -> None:
    """Write an eval record where asked, then print it: as JSON, or a headline and one line a metric."""
    text = json.dumps(record, indent=2)
    if record_path is not None:
        write_output(record_path, text + "\n")
    if as_json:
        click.echo(text)
        return
    click.echo(headline)
    for name, value in record["metrics"].items():
        click.echo(f"  {name:<17} {value:.4f}" if isinstance(value, float) else f"  {name:<17} {value}")
    if record_path is not None or plot_path is not None:
        click.echo(f"wrote {', '.join(str(p) for p in (record_path, plot_path) if p is not None)}", err=True)


def _one_shot(embedder: Any, record_path: Path | None, batch_size: int, as_json: bool) -> None:
    """`simsearch eval omniglot:one-shot`: 20-way accuracy over the official runs, as a record like eval's."""
    from simsearch.data import DataNotFoundError
    from simsearch.evaluation import one_shot_eval

    try:
        scores = one_shot_eval(embedder, batch_size=batch_size)
    except DataNotFoundError as exc:
        raise click.ClickException(f"{exc} (set SIMSEARCH_DATA to the shared data folder)") from None
    record = {
        "model": embedder.model_id,
        "embed_dim": embedder.embed_dim,
        "data": ONE_SHOT_DATA,
        "protocol": "Omniglot 20-way one-shot (Lake et al. 2015), official runs, nearest training image by cosine",
        "metrics": {"one_shot_accuracy": scores["accuracy"], "runs": scores["runs"]},
        "per_run": scores["per_run"],
    }
    _report(
        record,
        f"{record['model']} on {ONE_SHOT_DATA} ({scores['runs']} runs of 20 queries)",
        record_path,
        None,
        as_json,
    )


def _default_record_path(folder: Path, data: str, gallery: str | None, tta: str | None = None) -> Path:
    """`eval-<DATA>[-vs-<GALLERY>][-<TTA>].json` in a checkpoint folder; when that file holds another folder's record
    (two `test` folders in different places), a short hash of this DATA's path is added rather than overwriting it."""
    import hashlib

    from simsearch.data import data_file_name, data_label

    name = data_file_name(data) + (f"-vs-{data_file_name(gallery)}" if gallery else "") + (f"-{tta}" if tta else "")
    path = folder / f"eval-{name}.json"
    labels = {"data": data_label(data), "gallery": data_label(gallery) if gallery else None}
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return path  # none yet (or unreadable: it is replaced, as --out would)
    if isinstance(earlier, dict) and all(earlier.get(key) == value for key, value in labels.items()):
        return path
    digest = hashlib.sha256(json.dumps(labels).encode()).hexdigest()[:8]
    return folder / f"eval-{name}-{digest}.json"


def _read_record(path: Path) -> dict[str, Any]:
    """An earlier `simsearch eval` record, for --compare."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise click.ClickException(f"cannot read eval record {path}: {exc}") from None
    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        raise click.ClickException(f"{path} is not a `simsearch eval` record (no metrics)")
    return record


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
    from cli.bench import bench
    from cli.pretrain import pretrain
    from cli.serve import serve

    main.add_command(bench)
    main.add_command(pretrain)
    main.add_command(serve)


_register_extra_commands()

if __name__ == "__main__":
    main()
