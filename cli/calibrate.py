"""`simsearch calibrate`: fit the thresholds that reach precision goals on labelled photos, and keep them with the
collection (or the model's checkpoint) so that `dedup` and `query` can say what a score means."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from cli.common import collection_option, device_option, domain_errors, json_option
from simsearch.errors import CalibrationError


def _labelled(data: Path, variants: int, limit: int, seed: int) -> tuple[list, np.ndarray, str]:
    """The images and their item labels: seeded variants of every photo, or one item per sub-folder."""
    from simsearch.dedup.fitting import variant_sets
    from simsearch.images import scan_folder

    rng = np.random.default_rng(seed)
    if variants:
        photos = list(scan_folder(data))
        keep = max(2, limit // (variants + 1))
        if len(photos) > keep:
            photos = [photos[i] for i in sorted(rng.choice(len(photos), size=keep, replace=False))]
        images, labels, _ = variant_sets(photos, variants, seed)
        return images, labels, f"{variants} seeded variants of each of {len(photos)} photos of {data}"
    folders = sorted(p for p in data.iterdir() if p.is_dir())
    images, labels = [], []
    for label, folder in enumerate(folders):
        for path in scan_folder(folder):
            images.append(path)
            labels.append(label)
    if len(images) > limit:
        pick = sorted(rng.choice(len(images), size=limit, replace=False))
        images, labels = [images[i] for i in pick], [labels[i] for i in pick]
    return images, np.asarray(labels), f"{len(images)} images of {len(folders)} folders of {data} (one item each)"


@click.command()
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@collection_option
@click.option("--model", help="Calibrate this model (a checkpoint folder keeps the result) instead of a collection's.")
@click.option(
    "--variants",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Make N seeded near-duplicate variants of every photo of DATA (any photos will do); 0: DATA holds one "
    "sub-folder per item.",
)
@click.option(
    "--kind",
    type=click.Choice(["near-duplicate", "same-class"]),
    default="near-duplicate",
    show_default=True,
    help="What 'same' means in DATA.",
)
@click.option("--precision", "precisions", type=float, multiple=True, help="Precision goals [default: 0.9 0.99 0.999].")
@click.option("--limit", type=click.IntRange(4), default=3000, show_default=True, help="Images embedded at most.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the calibration to this file too.")
@json_option
@device_option
@domain_errors
def calibrate(
    data: Path,
    collection: Path | None,
    model: str | None,
    variants: int,
    kind: str,
    precisions: tuple[float, ...],
    limit: int,
    seed: int,
    out: Path | None,
    as_json: bool,
    device: str,
) -> None:
    """Find the cosine thresholds that reach precision goals on labelled photos in DATA, with their recall,
    false-match rate and 95% intervals, and keep them with the collection (or with --model's checkpoint).

    \b
        simsearch calibrate ~/Pictures/sample --variants 3          # near duplicates, from any photos
        simsearch calibrate ./products --kind same-class -c shop.simsearch
    """
    from simsearch import open_collection
    from simsearch.dedup import DEFAULT_PRECISIONS, save_calibration
    from simsearch.dedup.fitting import calibrate_embedder
    from simsearch.models import load_embedder

    images, labels, source = _labelled(data, variants, limit, seed)
    goals = tuple(sorted(precisions)) or DEFAULT_PRECISIONS
    if model is not None:
        embedder = load_embedder(model, device=device)
        calibration = calibrate_embedder(embedder, images, labels, kind=kind, source=source, precisions=goals)
        folder = Path(model).expanduser()
        if not folder.is_dir() and out is None:
            raise CalibrationError(f"{model} is not a checkpoint folder to keep the calibration in: give --out FILE")
        kept = [save_calibration(calibration, folder)] if folder.is_dir() else []
    else:
        with open_collection(collection, device=device) as col:
            calibration = calibrate_embedder(col.embedder, images, labels, kind=kind, source=source, precisions=goals)
            kept = [save_calibration(calibration, col.path)]
    if out is not None:
        kept.append(calibration.save(out))
    if as_json:
        click.echo(json.dumps({**calibration.as_dict(), "written": [str(p) for p in kept]}, indent=2))
        return
    click.echo(f"{calibration.positives} same-item and {calibration.negatives} different pairs ({source})")
    click.echo(f"{'precision':>9}  {'threshold':>9}  {'measured':>18}  {'recall':>18}  {'false-match rate':>16}")
    for p in calibration.points:
        click.echo(
            f"{p.goal:>9g}  {p.threshold:9.4f}  {p.precision:.4f} [{p.precision_ci[0]:.3f},{p.precision_ci[1]:.3f}]"
            f"  {p.recall:.4f} [{p.recall_ci[0]:.3f},{p.recall_ci[1]:.3f}]  {p.false_match_rate:16.2e}"
        )
    missing = [t for t in goals if all(abs(p.goal - t) > 1e-9 for p in calibration.points)]
    if missing:
        click.echo(f"not reached on these pairs: precision {', '.join(f'{t:g}' for t in missing)}", err=True)
    for path in kept:
        click.echo(f"wrote {path}", err=True)
