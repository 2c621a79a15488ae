"""`RayEngine`: an indexing run's embedding and shard builds on a Ray cluster (the optional extra `ray`).

The run itself stays the collection's (`Collection.index_folder(..., engine=...)`): the driver lists, hashes and plans
as the local engine does, so only new or changed files reach the cluster, and it alone writes. The cluster runs a Ray
Data pipeline over the files to embed: read + decode + transform + thumbnail as CPU tasks, then an actor pool with one
model per actor (a GPU each where the cluster has them). Each embedded block comes back to the driver, which commits
it to the store in one transaction before it takes the next: a worker that dies loses no committed batch (Ray retries
its task or restarts its actor), and a rerun embeds only what the store lacks.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from simsearch.errors import EngineError

if TYPE_CHECKING:
    from simsearch.collection.ingest import Engine
    from simsearch.embedding import EmbeddedBatch
    from simsearch.models import Embedder

log = logging.getLogger(__name__)

#: Files per decoding task: large enough that Ray's per-task cost (~ms) is small next to decoding (~10 ms a photo).
DECODE_BATCH = 16


#: The embedding actors' processes start with one malloc arena. Ray runs an actor's calls on a thread of its own, and
#: glibc gives such a thread its own arena, which hands a whole heap back to the kernel as soon as it is empty: the
#: forward then faulted its activations in again every batch (1.9 M page faults, 3.6 s of system CPU over 800
#: photos). With one arena the model's thread allocates from the main heap, which keeps freed memory for the next
#: batch (`simsearch.allocator.keep_freed_memory`). A value the user set is left alone.
_ONE_HEAP = {"env_vars": {"MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "1")}}


def ray_available() -> bool:
    """Whether the `ray` extra is installed (ray with Ray Data)."""
    try:
        import ray.data  # noqa: F401
    except ImportError:
        return False
    return True


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise EngineError("the Ray engine needs the `ray` extra: pip install 'simsearch[ray]'") from exc
    return ray


class RayEngine:
    """Runs embedding and shard builds on a Ray cluster: ``address`` None starts a local one (all cores of this
    machine) unless this process is already connected to one; "auto" or "ray://host:10001" joins a running cluster.
    ``workers``: embedding actors, one model each [default: one per GPU; on CPU nodes of 2 CPUs one per CPU, each
    decoding its own batches; else one per 4 CPUs, at least 1]."""

    def __init__(self, address: str | None = None, workers: int | None = None, *, decode_batch: int = DECODE_BATCH):
        if workers is not None and workers < 1:
            raise EngineError(f"the Ray engine needs at least one worker, got {workers}")
        self.address = address
        self.workers = workers
        self.decode_batch = decode_batch
        self._owns_cluster = False
        self._started = False

    # -- the cluster ------------------------------------------------------------------------------------------------

    def start(self) -> RayEngine:
        ray = _ray()
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = self.address or "this machine"
                raise EngineError(f"cannot start or join a Ray cluster at {where}: {exc}") from exc
            self._owns_cluster = True
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the CLI draws its own bar from the driver's commits
        context.print_on_execution_start = False
        # Blocks come back in the order of the files, so that ids are given in the same order as the local engine
        # gives them; with one model per actor and bounded queues the wait for a late block is short.
        context.execution_options.preserve_order = True
        self._started = True
        return self

    def close(self) -> None:
        if self._owns_cluster:
            _ray().shutdown()
        self._owns_cluster = self._started = False

    def __enter__(self) -> RayEngine:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _resources(self) -> tuple[float, float, float]:
        """(CPUs, GPUs, CPUs of the smallest node) of the cluster."""
        ray = _ray()
        total = ray.cluster_resources()
        nodes = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
        return float(total.get("CPU", 1.0)), float(total.get("GPU", 0.0)), float(min(nodes, default=1.0) or 1.0)

    def _plan_workers(self) -> tuple[int, int, float, bool]:
        """(embedding actors, torch threads per actor, GPUs per actor, whether each actor decodes its own batches).

        On a CPU cluster of 2-CPU nodes each actor decodes its batches and runs the model on one thread, one actor a
        CPU, as the local engine's lanes do on 2 cores. Measured on one 2-core node (2,000 Caltech-101 photos, the
        scale suite): decoding tasks beside one actor on two threads 30-35 images/s; these actors 55, and 75 once
        their processes start with one malloc arena (`_ONE_HEAP`); the local engine 95-99 in the same runs."""
        cpus, gpus, node_cpus = self._resources()
        if self.workers is None and gpus < 1 and node_cpus <= 2:
            return max(1, int(cpus)), 1, 0.0, True
        if self.workers is not None:
            actors = self.workers
        elif gpus >= 1:
            actors = int(gpus)
        else:
            actors = max(1, int(cpus) // 4)
        per_node = max(1, math.ceil(actors * node_cpus / max(cpus, 1.0)))
        # On a CPU node the actors share its cores with the decoding tasks, as the local engine's forward pass
        # shares them with its DataLoader workers: each actor gets its node's cores divided among the actors there.
        threads = max(1, int(node_cpus) // per_node)
        return actors, threads, (1.0 if gpus >= actors else 0.0), False

    # -- the engine -------------------------------------------------------------------------------------------------

    def embed(
        self,
        embedder: Callable[[], Embedder],
        paths: Sequence[str],
        *,
        batch_size: int,
        workers: int | None,
        max_pixels: int,
    ) -> Iterator[EmbeddedBatch]:
        """Embed ``paths`` on the cluster, yielding each block as it comes back (in any order). ``workers`` (the
        local engine's decoding processes) is not used: Ray sizes the decoding tasks to the free CPUs."""
        if not self._started:
            self.start()
        if not paths:
            return
        ray = _ray()
        from simsearch.embedding import EmbeddedBatch, decode_min_side, transform_for
        from simsearch.scale.stages import DecodeEmbedActor, EmbedActor, decode_batch

        model = embedder()
        actors, threads, gpus, decode_in_actors = self._plan_workers()
        log.info(
            "embedding %d files on Ray: %d actor(s), %d thread(s) each%s",
            len(paths),
            actors,
            threads,
            ", decoding their own batches" if decode_in_actors else "",
        )
        shipped = copy.deepcopy(model).cpu()  # the actors place it themselves; the driver's copy stays where it is
        decoding = {
            "transform": transform_for(model),
            "min_side": decode_min_side(model.data_config),
            "max_pixels": max_pixels,
            "shape": tuple(model.data_config["input_size"]),
        }
        files = ray.data.from_items(
            [{"position": i, "path": str(p)} for i, p in enumerate(paths)],
            override_num_blocks=max(1, math.ceil(len(paths) / (batch_size if decode_in_actors else self.decode_batch))),
        )
        if decode_in_actors:
            embedded = files.map_batches(
                DecodeEmbedActor,
                batch_size=batch_size,
                batch_format="numpy",
                fn_constructor_kwargs={"model": shipped, "threads": threads, **decoding},
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=1,
                runtime_env=_ONE_HEAP,
            )
        else:
            # A pool size other than the actors' keeps Ray Data from fusing decoding into the actors: decoding then
            # runs in tasks beside them, as the local engine's DataLoader workers run beside its forward pass.
            decoders = max(1, int(self._resources()[0]))
            decoders += decoders == actors
            decoded = files.map_batches(
                decode_batch,
                batch_size=self.decode_batch,
                batch_format="numpy",
                fn_kwargs=decoding,
                compute=ray.data.TaskPoolStrategy(size=decoders),
                num_cpus=1,
            )
            embedded = decoded.map_batches(
                EmbedActor,
                batch_size=batch_size,
                batch_format="numpy",
                fn_constructor_kwargs={"model": shipped, "threads": threads},
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=1,
                num_gpus=gpus,
                runtime_env=_ONE_HEAP,
            )
        for block in embedded.iter_batches(batch_size=None, batch_format="numpy"):
            ok = np.asarray(block["ok"], dtype=bool)
            positions = np.asarray(block["position"], dtype=np.int64)
            yield EmbeddedBatch(
                positions=positions[ok].tolist(),
                vectors=np.ascontiguousarray(np.asarray(block["vector"], dtype=np.float32)[ok]),
                thumbnails=[bytes(t) or None for t, good in zip(block["thumb"], ok, strict=True) if good],
                failures=[
                    (int(p), str(e)) for p, e, good in zip(positions, block["error"], ok, strict=True) if not good
                ],
            )

    def map_unordered(
        self, fn: Callable[..., Any], shared: tuple[Any, ...], jobs: Iterable[tuple[Any, ...]]
    ) -> Iterator[Any]:
        """``fn(*shared, *job)`` for each job as Ray tasks, at most one per cluster CPU at a time, results as they
        finish. ``shared`` (the trained index) goes to the object store once, not once per job."""
        if not self._started:
            self.start()
        ray = _ray()
        remote = ray.remote(num_cpus=1)(fn)
        window = max(1, int(self._resources()[0]))
        shared_refs = [ray.put(arg) for arg in shared]
        pending: list[Any] = []
        for job in jobs:
            pending.append(remote.remote(*shared_refs, *job))
            if len(pending) >= window:
                done, pending = ray.wait(pending, num_returns=1)
                yield ray.get(done[0])
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])


@contextlib.contextmanager
def open_engine(name: str, address: str | None = None, workers: int | None = None) -> Iterator[Engine | None]:
    """The engine an indexing command asked for: None for "local" (the collection's own), a started `RayEngine` for
    "ray" (shut down after, when it started the cluster)."""
    if name == "local":
        if address is not None:
            raise EngineError("--address names a Ray cluster: it needs --engine ray")
        yield None
        return
    if name != "ray":
        raise EngineError(f"unknown engine {name!r} (local or ray)")
    with RayEngine(address, workers) as engine:
        yield engine
