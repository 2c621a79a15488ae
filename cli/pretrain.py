"""The ``pretrain`` click command: train an autoencoder on a folder of images (or a shared data set) into a
checkpoint whose encoder serves as ``--model`` / ``--backbone``. Registered on the main group by ``cli.main``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cli.common import can_draw, device_option, domain_errors, json_option, open_data, parse_options
from cli.progress import EpochBar

KINDS = ("linear", "mlp", "conv", "denoising", "sparse", "vae", "cvae", "vaegan")


def _pretrain_summary(epoch: int, record: dict[str, Any]) -> str:
    val = f", val loss {record['val_loss']:.5f}" if "val_loss" in record else ""
    return f"epoch {epoch}: loss {record['loss']:.5f}{val}"


@click.command()
@click.argument("data")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Checkpoint folder (usable as --model and --backbone), with history.json, last/ and pictures/.",
)
@click.option("--kind", type=click.Choice(KINDS), default="conv", show_default=True, help="Autoencoder kind.")
@click.option("--code-dim", type=click.IntRange(1), default=32, show_default=True, help="Code (embedding) size.")
@click.option("--epochs", type=click.IntRange(1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(2), default=128, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--image-size", type=click.IntRange(4), help="Square input side [default: the data's, 64 above 128].")
@click.option("--channels", type=click.Choice(["1", "3"]), help="1 = grey, 3 = RGB [default: the data's].")
@click.option("--arch", type=click.Choice(["conv", "mlp"]), help="Body of denoising, sparse and VAE kinds.")
@click.option(
    "--decoder",
    type=click.Choice(["upsample", "transposed", "unpool"]),
    help="Conv decoder: upsample + conv (no checkerboard), transposed conv, or max unpooling to the encoder's "
    "pooling positions + conv (conv, denoising, sparse) [default: upsample].",
)
@click.option("--noise", type=click.Choice(["gaussian", "mask"]), help="Denoising: the corruption.")
@click.option("--noise-level", type=click.FloatRange(min=0), help="Denoising: Gaussian sigma or masked fraction.")
@click.option("--beta", type=click.FloatRange(min=0), help="VAE kinds: weight of the KL term.")
@click.option("--sparsity", type=click.Choice(["l1", "kl"]), help="Sparse: the penalty.")
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any other model option, e.g. weight=0.01, recon=bce, channels=[32,64,128] (repeatable).",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.1,
    show_default=True,
    help="Share of the images held out for the validation loss.",
)
@click.option("--max-images", type=click.IntRange(2), help="Train on a random subset of this many images.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@device_option
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True, help="Decoding processes.")
@click.option("--restart", is_flag=True, help="Ignore OUT/last/ instead of resuming from it.")
@click.option("--no-pictures", is_flag=True, help="Do not draw OUT/pictures/*.png at the end.")
@json_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no per-epoch lines.")
@domain_errors
def pretrain(
    data: str,
    out_dir: Path,
    channels: str | None,
    arch: str | None,
    decoder: str | None,
    noise: str | None,
    noise_level: float | None,
    beta: float | None,
    sparsity: str | None,
    options: tuple[str, ...],
    restart: bool,
    no_pictures: bool,
    as_json: bool,
    quiet: bool,
    **recipe: Any,
) -> None:
    """Train an autoencoder on DATA: a folder with one sub-folder per class (labels only matter to cvae and the
    pictures), an LMDB folder from `simsearch pack`, or a shared set: `fashion-mnist`, `omniglot` (their training
    splits) or a split such as `caltech101:train`, found via $SIMSEARCH_DATA. The encoder becomes an embedding model.

    Running the same command again resumes an interrupted run. Example:

    \b
        simsearch pretrain fashion-mnist --kind vae --code-dim 16 --epochs 20 --out runs/fm-vae
        simsearch index ./catalog --model runs/fm-vae
        simsearch train ./labeled --backbone runs/fm-vae --loss triplet --out runs/fm-triplet
    """
    from simsearch.pretraining import PretrainConfig
    from simsearch.pretraining import pretrain as run_pretraining

    model_options = parse_options(options, "--option")
    flags = {
        "arch": arch,
        "decoder": decoder,
        "noise": noise,
        "noise_level": noise_level,
        "beta": beta,
        "sparsity": sparsity,
    }
    for key, value in flags.items():
        if value is None:
            continue
        if key in model_options and model_options[key] != value:
            raise click.BadParameter(
                f"--{key.replace('_', '-')} and --option {key}=... disagree", param_hint="--option"
            )
        model_options[key] = value
    config = PretrainConfig(**recipe, channels=int(channels) if channels is not None else None, options=model_options)
    dataset = open_data(data)
    result = run_pretraining(
        config,
        dataset,
        out_dir,
        progress=EpochBar(quiet, _pretrain_summary),
        resume=not restart,
        pictures=not no_pictures and can_draw("no pictures drawn"),
    )
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    click.echo(
        f"best epoch {result.best_epoch} ({result.monitor} {result.best_value:.5f}) saved in {result.checkpoint}; "
        f"{result.epochs_run} epochs in {result.seconds:.1f} s ({result.samples_per_second:.0f} images/s)",
        err=True,
    )
    if result.pictures:
        click.echo(f"pictures: {', '.join(str(p) for p in result.pictures)}", err=True)
