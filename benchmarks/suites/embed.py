"""Embed suite: images/s of the whole indexing pipeline (`Collection.index_folder` on a folder of real Caltech-101
photos: scan, hash, decode, transform, forward, store, index) beside the bare model forward on the same images already
decoded, at the same batch size and threads; their ratio; a sweep over batch size and decode workers; peak RSS; and
the whole `simsearch index` command on many small images (Fashion-MNIST as PNG files) with its user and system CPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.suites import BenchmarkError, autocast, caltech_photo_names, copy_photos, prepare, synchronize
from benchmarks.suites._embed_forward import best_forward, decode_cost, decoded_photos, onnx_forward

logger = logging.getLogger(__name__)

HELP = "images/s of the indexing pipeline vs the bare forward; batch x workers sweep; peak RSS"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="'default', a timm name or a checkpoint folder")
    parser.add_argument("--images", type=int, default=1000, help="photos of the headline comparison")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of the headline comparison")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decode processes of the headline comparison [default: the library's]",
    )
    parser.add_argument("--sweep-images", type=int, default=256, help="photos per sweep point")
    parser.add_argument("--sweep-batch-sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument(
        "--sweep-workers",
        type=int,
        nargs="+",
        default=[-1, 0, 1, 2],
        help="decode processes (0: in the main process; -1: the library's default layout, lanes on 2 cores)",
    )
    parser.add_argument("--no-sweep", action="store_true", help="only the headline comparison")
    parser.add_argument(
        "--small-images",
        type=int,
        default=20000,
        help="Fashion-MNIST images (as PNG files) for the whole `simsearch index` command; 0 skips it",
    )


def pipeline(folder: Path, n: int, batch_size: int, workers: int | None, args: argparse.Namespace) -> dict[str, Any]:
    """Images/s of `Collection.index_folder` into a fresh temporary collection (model load not counted), peak RSS."""
    import simsearch
    from benchmarks.record import PeakRSS

    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        col = simsearch.Collection.open(Path(tmp) / "col", create=True, model=args.model, device=args.device)
        try:
            prepare(col.embedder, args.device)
            with PeakRSS() as rss, autocast(args.device, args.amp):
                started = time.perf_counter()
                report = col.index_folder(folder, batch_size=batch_size, workers=workers)
                synchronize(args.device)
                wall = time.perf_counter() - started
        finally:
            col.close()
    if report.embedded != n or report.skipped:
        raise BenchmarkError(f"the pipeline embedded {report.embedded} of {n} photos ({report.skipped} skipped)")
    return {"pipeline_images_per_s": n / wall, "pipeline_seconds": wall, **rss.as_dict()}


def small_pngs(n: int, data: str | Path | None, folder: Path) -> list[Path]:
    """The first `n` Fashion-MNIST training images written as 28x28 PNG files, a thousand per sub-folder."""
    from PIL import Image

    from simsearch.data import load_fashion_mnist

    images = load_fashion_mnist("train", root=data).images
    if n > len(images):
        raise BenchmarkError(f"Fashion-MNIST has {len(images)} training images, {n} asked")
    paths = []
    for i in range(n):
        sub = folder / f"{i // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        paths.append(sub / f"{i:05d}.png")
        Image.fromarray(images[i]).save(paths[-1])
    return paths


def index_command(folder: Path, n: int, batch_size: int, args: argparse.Namespace) -> dict[str, Any]:
    """The whole `simsearch index` command in a fresh process on `folder` (into a new collection): wall time, its
    embedding rate, and the user and system CPU of the process and its decode workers."""
    from benchmarks.suites.query import _simsearch_command

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        command = [*_simsearch_command(), "index", str(folder), "-c", str(Path(tmp) / "col"), "-q", "--json"]
        command += ["--batch-size", str(batch_size), "--device", "cuda" if args.device.startswith("cuda") else "cpu"]
        load_before = os.getloadavg()
        # This process has no other child running: the growth of its children's usage is the command's own, with
        # its decode workers (reaped by it).
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, env=env, check=False)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise BenchmarkError(f"`simsearch index` failed with status {done.returncode}: {tail[0]}")
    report = json.loads(done.stdout)
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    if report["embedded"] != n:
        raise BenchmarkError(f"`simsearch index` embedded {report['embedded']} of {n} images")
    return {
        "images": n,
        "batch_size": batch_size,
        "command": "simsearch " + " ".join(c if i < 2 else Path(c).name for i, c in enumerate(command[1:])),
        "wall_s": wall,
        "command_images_per_s": n / wall,
        "embed_images_per_s": report["embedded"] / report["seconds"],
        "user_cpu_s": user,
        "system_cpu_s": system,
        "system_over_user": system / user,
        "minor_page_faults": after.ru_minflt - before.ru_minflt,
        "max_rss_mib": after.ru_maxrss / 1024,  # the largest child's so far: this command's when it is the largest
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
    }


def small_images_run(embedder: Any, args: argparse.Namespace) -> dict[str, Any]:
    """`simsearch index` on `--small-images` Fashion-MNIST PNGs against the bare forward of a share of them, decoded
    and transformed as the pipeline does (measured right before the command)."""
    with tempfile.TemporaryDirectory(prefix="bench-small-") as tmp:
        paths = small_pngs(args.small_images, args.data, Path(tmp) / "pngs")
        sample, _ = decoded_photos(embedder, paths[: max(args.batch_size * 8, 1)][: args.small_images])
        forward_rate = best_forward(embedder, sample, args.batch_size, args)["forward_images_per_s"]
        del sample
        gc.collect()
        logger.info("embed: simsearch index on %d small PNG files", args.small_images)
        command = index_command(Path(tmp) / "pngs", args.small_images, args.batch_size, args)
    return {
        **command,
        "forward_images_per_s": forward_rate,
        "ratio_command_over_forward": command["command_images_per_s"] / forward_rate,
        "ratio_embedding_over_forward": command["embed_images_per_s"] / forward_rate,
    }


def _lanes_ceiling(decode_ms: float, bare: dict[str, Any]) -> dict[str, Any]:
    """The most a layout of lanes can reach once running (no start-up, no planning): each lane's core spends a
    photo's decode CPU beside its share of the forward, so the pipeline runs at forward / (forward + decode) of
    the lanes' bare forward rate. None where the lanes' rate was not measured (one core, a GPU)."""
    lanes_rate = bare.get("forward_images_per_s_lanes")
    if not lanes_rate:
        return {"decode_ms_per_photo_one_thread": decode_ms, "lanes_steady_ceiling_ratio": None}
    lane_forward_ms = bare["forward_lanes"] * 1000 / lanes_rate
    ceiling_rate = bare["forward_lanes"] * 1000 / (lane_forward_ms + decode_ms)
    return {
        "decode_ms_per_photo_one_thread": decode_ms,
        "lane_forward_ms_per_photo": lane_forward_ms,
        "lanes_steady_ceiling_images_per_s": ceiling_rate,
        "lanes_steady_ceiling_ratio": ceiling_rate / bare["forward_images_per_s"],
    }


def layout(workers: int | None, device: str, images: int, batch_size: int) -> str:
    """How a pipeline run of `images` decodes, in words: `workers` None is the library's default."""
    from simsearch.embedding import default_layout

    lanes = 0
    if workers is None:
        lanes, workers = default_layout(images, batch_size, on_cpu=device == "cpu")
    if lanes:
        return f"{lanes} lanes (decode + forward)"
    return "in-process" if workers == 0 else f"{workers} decode process{'es' if workers != 1 else ''}"


def run(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """Headline pipeline-vs-forward comparison, then the batch-size x layout sweep, then the PNG."""
    from benchmarks.record import max_rss_mib
    from simsearch.allocator import one_arena
    from simsearch.models import load_embedder

    # Before any thread allocates: the bare forward's lanes are threads, and a thread's own arena would fault its
    # activations in again every batch, which would understate the forward the pipeline is held to.
    one_arena()
    if args.tiny:
        args.images, args.sweep_images = min(args.images, 6), min(args.sweep_images, 6)
        args.batch_size = min(args.batch_size, 4)
        args.sweep_batch_sizes, args.sweep_workers = [2, 4], [-1, 0, 1]
        args.small_images = min(args.small_images, 6)
    workers = args.workers  # None: the library's default layout
    n_photos = max(args.images, 0 if args.no_sweep else args.sweep_images)
    photos = caltech_photo_names(n_photos, args.data)
    embedder = prepare(load_embedder(args.model, device=args.device), args.device)

    sweep_sizes = [] if args.no_sweep else list(args.sweep_batch_sizes)
    # The bare forward first, on tensors decoded once; they are freed before the pipeline runs, so its peak memory
    # is the pipeline's own.
    tensors, decode_seconds = decoded_photos(embedder, photos)
    logger.info("embed: bare forward, batch sizes %s", sorted({args.batch_size, *sweep_sizes}))
    bare = best_forward(embedder, tensors[: args.images], args.batch_size, args)
    sweep_forward = {b: best_forward(embedder, tensors[: args.sweep_images], b, args) for b in sweep_sizes}
    logger.info("embed: bare forward in ONNX Runtime, batch size %d", args.batch_size)
    onnx = onnx_forward(embedder, tensors[: args.images], photos, args.batch_size, args)
    del tensors
    gc.collect()
    decode_ms = decode_cost(embedder, photos[: args.images])

    with tempfile.TemporaryDirectory(prefix="bench-photos-") as tmp:
        head_dir = copy_photos(photos[: args.images], Path(tmp) / "headline")
        head_layout = layout(workers, args.device, args.images, args.batch_size)
        logger.info("embed: pipeline, %d photos, batch %d, %s", args.images, args.batch_size, head_layout)
        pipe = pipeline(head_dir, args.images, args.batch_size, workers, args)
        # The forward again right after the pipeline, on a share of the photos: a machine whose load changed during
        # the run shows up as drift between the two, and the ratio uses their mean rather than either alone.
        again, _ = decoded_photos(embedder, photos[: max(args.batch_size, args.images // 4)])
        after = best_forward(embedder, again, args.batch_size, args)["forward_images_per_s"]
        del again
        forward_mean = (bare["forward_images_per_s"] + after) / 2
        headline = {
            "images": args.images,
            "batch_size": args.batch_size,
            "workers": workers,
            "layout": head_layout,
            **pipe,
            **bare,
            "forward_images_per_s_after": after,
            "forward_drift_after_over_before": after / bare["forward_images_per_s"],
            "ratio_pipeline_over_forward": pipe["pipeline_images_per_s"] / forward_mean,
            "decode_transform_images_per_s_one_process": n_photos / decode_seconds,
            **_lanes_ceiling(decode_ms, bare),
        }
        sweep: list[dict[str, Any]] = []
        if sweep_sizes:
            sweep_dir = copy_photos(photos[: args.sweep_images], Path(tmp) / "sweep")
            for batch_size in sweep_sizes:
                for given in args.sweep_workers:
                    w = None if given < 0 else given
                    name = layout(w, args.device, args.sweep_images, batch_size)
                    logger.info("embed: sweep, %d photos, batch %d, %s", args.sweep_images, batch_size, name)
                    point = pipeline(sweep_dir, args.sweep_images, batch_size, w, args)
                    forward_point = sweep_forward[batch_size]
                    sweep.append(
                        {
                            "images": args.sweep_images,
                            "batch_size": batch_size,
                            "workers": w,
                            "layout": name,
                            **point,
                            **forward_point,
                            "ratio_pipeline_over_forward": point["pipeline_images_per_s"]
                            / forward_point["forward_images_per_s"],
                        }
                    )

    small = small_images_run(embedder, args) if args.small_images > 0 else None
    figure_path = out_dir / "embed_throughput.png"
    _plot(headline, sweep, figure_path, args)
    record = {
        "model": {"spec": args.model, "model_id": embedder.model_id, "embed_dim": int(embedder.embed_dim)},
        "dataset": "Caltech-101 (101 object classes, BACKGROUND_Google dropped)",
        "protocol": (
            "photos: the first ceil(n/101) of each class in sorted class order; pipeline = Collection.index_folder "
            "into a fresh temporary collection (model loaded beforehand, not timed): scan, hash, decode with JPEG "
            "draft, transform, thumbnail, forward, LMDB store, FAISS index; forward = simsearch.embedding.forward on "
            "the same photos already decoded and stacked in memory (one warm-up batch first), same batch size and "
            "torch threads, in two thread layouts (one pass on all torch threads; on a CPU also one lane per core, "
            "each lane a thread running its own batches on one torch thread) and the faster one taken, measured "
            "before the pipeline runs and freed, and again after it on a quarter of the photos; the headline ratio "
            "divides by the mean of the two forward rates; ONNX Runtime: the same bare forward of the model as "
            "`simsearch index --onnx` exports it, in the same two layouts; peak memory sampled from /proc every "
            "50 ms: RSS of the main process, and PSS of the main process plus its decode workers; small images: the "
            "whole `simsearch index` command in a fresh process on Fashion-MNIST training images written as 28x28 "
            "PNG files (the transform scales them to the model's input, so the forward dominates), user and system "
            "CPU of the process and its decode workers (getrusage of children), against the bare forward of 8 "
            "batches of them; lanes' ceiling: the headline photos decoded, thumbnailed and transformed as a worker "
            "does, on one thread (thread CPU time), set beside the lanes' bare forward per photo per lane"
        ),
        "amp": args.amp,
        "headline": headline,
        "sweep": sweep,
        "onnx_forward": onnx,
        "small_images": small,
        "process_max_rss_mib": max_rss_mib(),
    }
    table = [{"run": "headline", **_row(headline)}]
    if headline.get("lanes_steady_ceiling_ratio") is not None:
        table.append(
            {
                "run": "lanes once running, at most: a photo's decode "
                f"({headline['decode_ms_per_photo_one_thread']:.2f} ms) beside its forward on a lane "
                f"({headline['lane_forward_ms_per_photo']:.1f} ms), no start-up",
                "images": args.images,
                "batch": args.batch_size,
                "pipeline img/s": headline["lanes_steady_ceiling_images_per_s"],
                "forward img/s": headline["forward_images_per_s"],
                "ratio": headline["lanes_steady_ceiling_ratio"],
            }
        )
    table += [{"run": "sweep", **_row(p)} for p in sweep]
    if onnx is not None:
        table.append(
            {
                "run": f"bare forward in ONNX Runtime {onnx['onnxruntime']} (no pipeline)",
                "images": args.images,
                "batch": args.batch_size,
                "forward img/s": onnx["forward_images_per_s"],
                "forward img/s, one pass": onnx["forward_images_per_s_one_pass"],
                "forward img/s, lanes": onnx["forward_images_per_s_lanes"],
            }
        )
    if small is not None:
        table.append(
            {
                "run": "index command, small PNGs",
                "images": small["images"],
                "batch": small["batch_size"],
                "layout": layout(None, args.device, small["images"], small["batch_size"]),
                "pipeline img/s": small["command_images_per_s"],
                "forward img/s": small["forward_images_per_s"],
                "ratio": small["ratio_command_over_forward"],
                "peak RSS MiB": small["max_rss_mib"],
                "user CPU s": small["user_cpu_s"],
                "system CPU s": small["system_cpu_s"],
                "system/user": small["system_over_user"],
                "load avg (1 min) before/after": f"{small['load_average_before'][0]:.2f} / "
                f"{small['load_average_after'][0]:.2f}",
            }
        )
    return {"record": record, "figures": [figure_path], "table": table}


def _row(point: dict[str, Any]) -> dict[str, Any]:
    return {
        "images": point.get("images"),
        "batch": point["batch_size"],
        "layout": point["layout"],
        "pipeline img/s": point["pipeline_images_per_s"],
        "forward img/s": point["forward_images_per_s"],
        "forward img/s, one pass": point.get("forward_images_per_s_one_pass"),
        "forward img/s, lanes": point.get("forward_images_per_s_lanes"),
        "ratio": point["ratio_pipeline_over_forward"],
        "RSS at start MiB": point["start_rss_mib"],
        "peak RSS MiB": point["peak_rss_mib"],
        "peak PSS MiB (+workers)": point["peak_pss_with_workers_mib"],
    }


def _plot(headline: dict[str, Any], sweep: list[dict[str, Any]], path: Path, args: argparse.Namespace) -> None:
    from benchmarks.record import figure

    with figure(path, width=7.0, height=4.2) as ax:
        if sweep:
            sizes = sorted({p["batch_size"] for p in sweep})
            for name in dict.fromkeys(p["layout"] for p in sweep):
                pts = sorted((p for p in sweep if p["layout"] == name), key=lambda p: p["batch_size"])
                ax.plot(
                    [p["batch_size"] for p in pts],
                    [p["pipeline_images_per_s"] for p in pts],
                    marker="o",
                    label=f"pipeline, {name}",
                )
            forward = {p["batch_size"]: p["forward_images_per_s"] for p in sweep}
            ax.plot(sizes, [forward[s] for s in sizes], "k--", marker="s", label="bare forward, best layout")
            ax.set_xscale("log", base=2)
            ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.scatter(
            [headline["batch_size"]],
            [headline["pipeline_images_per_s"]],
            marker="*",
            s=160,
            color="tab:red",
            zorder=5,
            label=f"headline: {headline['images']} photos, {headline['layout']}",
        )
        ax.set_xlabel("batch size")
        ax.set_ylabel("images / s")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.set_title(f"indexing throughput, {args.device}, {args.threads} thread{'s' if args.threads != 1 else ''}")
        ax.legend(fontsize=8)
