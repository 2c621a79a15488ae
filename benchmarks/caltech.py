"""Caltech-101 class-disjoint fine-tuning: off-the-shelf EfficientNet-Lite0 against the same net fine-tuned with
each metric loss, scored by leave-one-out retrieval on the 51 unseen test classes (3,151 photos).

Run from the repo root:  python -m benchmarks.caltech --loss multi_similarity triplet contrastive center
Writes benchmarks/results/caltech_finetune.json (or --out). Real data only, from $SIMSEARCH_DATA.

Why the features are cached: on a 2-core CPU a full forward + backward of the net runs at about 12 images/s, so
one epoch over the 5,526 training photos costs 8 minutes per loss. Only the last stages are trained here (the
earlier ones frozen, their BatchNorm statistics too), so their input is computed once per image and view (the eval
crop, its mirror image and, with --views N, N random resized crops from timm's training transform) and every epoch
runs the trainable tail alone. The trained tail is then copied into the
full model, which is saved as an ordinary simsearch checkpoint and scored on the real test photos through the
ordinary `simsearch eval` path: the reported numbers never use the cache.

Protocol: the first 50 sorted classes train (5,526), the last 51 test. Ten of the 50 training classes, drawn with
the seed, are held out as a class-disjoint validation set that picks the best epoch; the test classes are used once,
for the final score. With --val-classes 0 all 50 classes train and the last epoch is kept (a fixed recipe, chosen
beforehand from the validated runs).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from torch import nn

from benchmarks.recipes import add_recipe_option, recipe_from_args
from benchmarks.record import environment
from simsearch.data import caltech101_split
from simsearch.evaluation import evaluate
from simsearch.losses import create_loss, loss_has_parameters
from simsearch.metrics import retrieval_metrics
from simsearch.models import Embedder, create_transform, load_embedder, save_checkpoint
from simsearch.runs import recipe_dict, with_changes
from simsearch.training import TrainConfig
from simsearch.training.schedule import WarmupCosine

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
CACHE = REPO / ".cache" / "bench"
#: The off-the-shelf Lite0 scores R@1 0.944, MAP@R 0.711 on this split; the goal is MAP@R >= 0.76 at R@1 >= 0.944.
GOAL_MAP_AT_R = 0.76
GOAL_R_AT_1 = 0.944

#: The shared part of every loss's recipe. Only the tail after the first `freeze_stages` stages trains (blocks[5:]
#: and the head conv of 7 blocks by default), at `lr` (the tail is backbone: backbone_lr_mult 1); a loss's own
#: parameters at `loss_lr`; BatchNorm statistics stay those of ImageNet (P x K batches are small); half an epoch of
#: warm-up. The features of the frozen stages are cached, so `augment` is the cached views (--views), not timm's.
RECIPE = TrainConfig(
    backbone="default",
    embed_dim=None,
    epochs=6,
    p=16,
    k=4,
    batches_per_epoch=60,
    lr=1e-4,
    backbone_lr_mult=1.0,
    loss_lr=1e-2,
    weight_decay=1e-4,
    warmup_epochs=0.5,
    freeze_bn=True,
    freeze_stages=5,
    augment=False,
    seed=0,
    device="cpu",
    patience=None,
)
#: Each loss's own options (the rest of its recipe is RECIPE).
LOSS_OPTIONS: dict[str, dict[str, Any]] = {
    "triplet": {"margin": 0.1, "mining": "semi_hard"},
    "contrastive": {"pos_margin": 0.0, "neg_margin": 0.5},
    "center": {"weight": 0.1},
}

logger = logging.getLogger("benchmarks.caltech")


class Tail(nn.Module):
    """The trainable end of a timm EfficientNet: blocks[cut:], conv_head, bn2, pooling; input = blocks[cut-1]'s."""

    def __init__(self, backbone: nn.Module, cut: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*list(backbone.blocks.children())[cut:])
        self.conv_head = backbone.conv_head
        self.bn2 = backbone.bn2
        self.global_pool = backbone.global_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.global_pool(self.bn2(self.conv_head(self.blocks(x))))


def prefix_forward(backbone: nn.Module, x: torch.Tensor, cut: int) -> torch.Tensor:
    """The frozen beginning: stem and blocks[:cut]."""
    x = backbone.bn1(backbone.conv_stem(x))
    for block in list(backbone.blocks.children())[:cut]:
        x = block(x)
    return x


def tail_inputs(
    embedder: Embedder, dataset: Any, cut: int, flips: tuple[bool, ...] = (False,), batch_size: int = 32
) -> list[np.ndarray]:
    """float16 tail inputs of every image of `dataset`, one array per entry of `flips` (True: its mirror image)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=1)
    chunks: list[list[np.ndarray]] = [[] for _ in flips]
    with torch.inference_mode():
        for images, _ in loader:
            images = images.contiguous(memory_format=torch.channels_last)
            for out, flip in zip(chunks, flips, strict=True):
                out.append(prefix_forward(embedder.backbone, images.flip(3) if flip else images, cut).half().numpy())
    return [np.concatenate(out) for out in chunks]


def cache_features(embedder: Embedder, split: str, cut: int, batch_size: int = 32) -> dict[str, np.ndarray]:
    """(N, C, h, w) float16 inputs of the tail for each image and its mirror image, computed once and kept on disk."""
    path = CACHE / f"caltech101_{split}_{embedder.arch}_cut{cut}.npz"
    if path.is_file():
        with np.load(path) as saved:
            return {key: saved[key] for key in saved.files}
    dataset = caltech101_split(split, transform=create_transform(embedder))
    started = time.perf_counter()
    plain, mirrored = tail_inputs(embedder, dataset, cut, flips=(False, True), batch_size=batch_size)
    logger.info("cached %s tail inputs of %d photos in %.0f s", split, len(dataset), time.perf_counter() - started)
    features = {"plain": plain, "mirrored": mirrored, "labels": dataset.labels}
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, **features)
    return features


def cache_random_views(
    embedder: Embedder, cut: int, views: int, scale: float, batch_size: int = 32
) -> list[np.ndarray]:
    """`views` extra tail inputs of each training photo, each a random resized crop (area `scale`..1) maybe mirrored.

    Each view is drawn with its own fixed seed and kept in its own file, so a larger --views reuses the smaller set.
    """
    data_config = dict(embedder.data_config)
    transform = timm.data.create_transform(**data_config, is_training=True, scale=(scale, 1.0), hflip=0.5)
    out = []
    for view in range(views):
        path = CACHE / f"caltech101_train_{embedder.arch}_cut{cut}_crop{scale:g}_view{view}.npy"
        if not path.is_file():
            torch.manual_seed(1000 + view)
            dataset = caltech101_split("train", transform=transform)
            started = time.perf_counter()
            (inputs,) = tail_inputs(embedder, dataset, cut, batch_size=batch_size)
            CACHE.mkdir(parents=True, exist_ok=True)
            np.save(path, inputs)
            seconds = time.perf_counter() - started
            logger.info("cached random view %d of %d photos in %.0f s", view, len(dataset), seconds)
        out.append(np.load(path, mmap_mode="r"))
    return out


def embed_cached(tail: Tail, features: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Unit vectors of cached tail inputs (eval mode)."""
    tail.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(features), batch_size):
            x = torch.from_numpy(features[start : start + batch_size]).float()
            out.append(torch.nn.functional.normalize(tail(x), dim=1).numpy())
    return np.concatenate(out)


def pk_batches(labels: np.ndarray, p: int, k: int, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`count` batches of P classes x K images (with repeats for a class smaller than K)."""
    classes = np.unique(labels)
    members = {c: np.flatnonzero(labels == c) for c in classes}
    batches = []
    for _ in range(count):
        chosen = rng.choice(classes, size=p, replace=False)
        batch = [rng.choice(members[c], size=k, replace=len(members[c]) < k) for c in chosen]
        batches.append(np.concatenate(batch))
    return batches


def loss_recipe(args: argparse.Namespace, loss_name: str) -> TrainConfig:
    """RECIPE for one loss: its options from LOSS_OPTIONS, then the command line's `--set` changes."""
    base = with_changes(RECIPE, {"loss": loss_name, "loss_kwargs": LOSS_OPTIONS.get(loss_name, {})})
    return recipe_from_args(args.parser, base, args.changes)


def finetune(args: argparse.Namespace, loss_name: str, embedder_path: str) -> dict[str, Any]:
    """Train the tail with one loss; return the best epoch's scores and the checkpoint folder."""
    config = loss_recipe(args, loss_name)
    cut = config.freeze_stages
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    embedder = load_embedder(embedder_path)
    embedder.use_channels_last(False)
    train = cache_features(embedder, "train", cut)
    views = [train["plain"], train["mirrored"], *cache_random_views(embedder, cut, args.views, args.crop_scale)]
    labels = train["labels"]
    classes = np.unique(labels)
    val_classes = rng.choice(classes, size=args.val_classes, replace=False)
    is_val = np.isin(labels, val_classes)
    train_idx, val_idx = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    remap = {c: i for i, c in enumerate(np.unique(labels[train_idx]))}
    train_labels = np.array([remap[c] for c in labels[train_idx]])

    tail = Tail(embedder.backbone, cut)
    dim = embedder.embed_dim
    loss_kwargs = dict(config.loss_kwargs)
    loss_fn = create_loss(loss_name, num_classes=len(remap), embed_dim=dim, **loss_kwargs)
    groups = [{"params": list(tail.parameters()), "lr": config.lr * config.backbone_lr_mult}]
    if loss_has_parameters(loss_name):
        groups.append({"params": list(loss_fn.parameters()), "lr": config.loss_lr or config.lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    batches = config.batches_per_epoch or 1
    schedule = WarmupCosine(optimizer, config.epochs * batches, round(config.warmup_epochs * batches))

    def validate() -> dict[str, float]:
        if not len(val_idx):  # --val-classes 0: nothing to score, the last epoch is kept
            return {}
        vectors = embed_cached(tail, train["plain"][val_idx])
        scores = retrieval_metrics(vectors, labels[val_idx], ks=(1,))
        return {"recall@1": float(scores["recall@1"]), "map@r": float(scores["map@r"])}

    history = [{"epoch": 0, **validate()}]
    best = dict(history[0])
    best_state = {k: v.clone() for k, v in tail.state_dict().items()}
    started = time.perf_counter()
    samples = 0
    for epoch in range(1, config.epochs + 1):
        tail.train()
        for module in tail.modules():  # BatchNorm statistics stay those of ImageNet: P x K batches are small
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        losses = []
        for batch in pk_batches(train_labels, config.p, config.k, batches, rng):
            rows = train_idx[batch]
            chosen = rng.integers(len(views), size=len(batch))
            x = np.stack([views[v][row] for v, row in zip(chosen, rows, strict=True)])
            z = torch.nn.functional.normalize(tail(torch.from_numpy(x).float()), dim=1)
            loss = loss_fn(z, torch.from_numpy(train_labels[batch]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            samples += len(batch)
        record = {"epoch": epoch, "loss": float(np.mean(losses)), **validate()}
        history.append(record)
        logger.info("%s epoch %d: %s", loss_name, epoch, record)
        if not len(val_idx) or record["map@r"] > best["map@r"]:
            best = dict(record)
            best_state = {k: v.clone() for k, v in tail.state_dict().items()}
    seconds = time.perf_counter() - started
    tail.load_state_dict(best_state)

    name = f"{loss_name}{args.tag}"
    out = Path(args.runs) / name
    recipe = {
        **recipe_dict(config),
        "views": args.views,
        "crop_scale": args.crop_scale,
        "val_classes": args.val_classes,
    }
    save_checkpoint(embedder, out, {"loss": {"name": loss_name, **loss_kwargs}, "recipe": recipe})
    return {
        "name": name,
        "loss": loss_name,
        "loss_kwargs": loss_kwargs,
        "checkpoint": str(out),
        "best_val_epoch": best["epoch"],
        "val": best,
        "history": history,
        "train_seconds": round(seconds, 1),
        "train_samples_per_second": round(samples / seconds, 1),
    }


def test_scores(model: str, limit: int | None = None) -> dict[str, Any]:
    """Leave-one-out retrieval on the 51 test classes through the ordinary eval path (decode, transform, forward)."""
    embedder = load_embedder(model)
    dataset = caltech101_split("test")
    record = evaluate(embedder, dataset, batch_size=32, workers=1)
    return record.metrics


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loss", nargs="+", default=["multi_similarity", "triplet", "contrastive", "center"])
    add_recipe_option(parser, RECIPE)
    parser.add_argument("--val-classes", type=int, default=10, help="0: train on all 50, keep the last epoch")
    parser.add_argument("--views", type=int, default=0, help="random resized crops cached per photo, besides two")
    parser.add_argument("--crop-scale", type=float, default=0.35, help="smallest area of a random crop")
    parser.add_argument("--tag", default="", help="suffix of the run's name, to keep variants of one loss apart")
    parser.add_argument("--skip-baseline", action="store_true", help="reuse the off-the-shelf scores of --out")
    parser.add_argument("--runs", default=str(CACHE / "caltech_runs"), help="checkpoint folders")
    parser.add_argument("--out", default=str(RESULTS / "caltech_finetune.json"))
    args = parser.parse_args(argv)
    args.parser = parser
    for loss_name in args.loss:  # a bad --set fails before any work
        loss_recipe(args, loss_name)
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    record: dict[str, Any] = {
        "benchmark": "caltech101 class-disjoint fine-tuning",
        "protocol": "train: first 50 sorted classes (5,526; 10 held out for validation); "
        "test: last 51 classes (3,151), leave-one-out exact k-NN, cosine",
        "goal": {"map@r": GOAL_MAP_AT_R, "recall@1": GOAL_R_AT_1},
        "environment": environment("cpu"),
        "runs": {k: v for k, v in previous.get("runs", {}).items() if k not in {n + args.tag for n in args.loss}},
    }
    if args.skip_baseline and "off_the_shelf" in previous:
        record["off_the_shelf"] = previous["off_the_shelf"]
    else:
        record["off_the_shelf"] = test_scores("default")
    logger.info("off the shelf: %s", record["off_the_shelf"])
    for loss_name in args.loss:
        run = finetune(args, loss_name, "default")
        run["test"] = test_scores(run["checkpoint"])
        run["threads"] = torch.get_num_threads()
        run["command"] = shlex.join(["python", "-m", "benchmarks.caltech", *(sys.argv[1:] if argv is None else argv)])
        logger.info("%s test: %s", loss_name, run["test"])
        record["runs"][run["name"]] = run
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: v.get("test") for k, v in record["runs"].items()}, indent=2))


if __name__ == "__main__":
    main()
