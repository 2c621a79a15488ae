"""Benchmark records: the environment block (versions, CPU/GPU, threads, git commit), the JSON record and Markdown
summary of one suite run, peak-RSS sampling, and the lazily imported matplotlib (Agg) that draws the PNGs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks import DEFAULT_DATA, REPO

logger = logging.getLogger(__name__)

#: Keys every record's "environment" block has (the test checks them).
ENVIRONMENT_KEYS = (
    "python",
    "torch",
    "torchvision",
    "faiss",
    "timm",
    "numpy",
    "simsearch",
    "device",
    "device_name",
    "gpu",
    "note",
    "cpu",
    "cpu_count",
    "torch_threads",
    "faiss_threads",
    "platform",
)


def default_result_path(benchmark: str, args: Any) -> Path:
    """`benchmarks/results/<benchmark>_<loss>_<net>_<epochs>ep_seed<seed>.json` for parsed arguments with those
    fields: a name for each recipe, so that a run with the defaults never overwrites a committed record of another."""
    net = Path(args.backbone.removeprefix("random:")).name or "net"
    return REPO / "benchmarks" / "results" / f"{benchmark}_{args.loss}_{net}_{args.epochs}ep_seed{args.seed}.json"


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(repo: Path = REPO) -> dict[str, Any]:
    """`{"commit": sha or None, "dirty": bool or None}` of the checkout, when git and a .git folder are there."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": sha or None, "dirty": bool(status.strip())}


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except ImportError:
        return None
    return str(getattr(mod, "__version__", "unknown"))


def environment(device: str) -> dict[str, Any]:
    """What a reader needs to compare two records: library versions, hardware, threads (no hostname)."""
    import faiss
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    if device.startswith("cuda"):
        note = f"ran on the GPU ({gpu})"
        device_name = gpu
    elif gpu is None:
        note = "no GPU was present: every number is a CPU number"
        device_name = cpu_model()
    else:
        note = f"a GPU was present ({gpu}) but the run used the CPU (--device cpu)"
        device_name = cpu_model()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "faiss": faiss.__version__,
        "timm": _version("timm"),
        "numpy": _version("numpy"),
        "simsearch": _version("simsearch"),
        "device": device,
        "device_name": device_name,
        "gpu": gpu,
        "note": note,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        # Other work on the machine skews every rate; a load above the core count when the record is written says
        # so (1, 5 and 15 minute averages: the last one covers most runs).
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _path_names() -> list[tuple[str, str]]:
    """(absolute prefix, portable name) pairs, the longest prefix first: a record names folders as any machine would."""
    names = [(REPO, "."), (DEFAULT_DATA, "$SIMSEARCH_DATA"), (Path(tempfile.gettempdir()), "$TMPDIR")]
    names.append((Path.home(), "~"))
    if os.environ.get("SIMSEARCH_DATA"):
        names.append((Path(os.environ["SIMSEARCH_DATA"]), "$SIMSEARCH_DATA"))
    if os.environ.get("SIMSEARCH_CACHE"):
        names.append((Path(os.environ["SIMSEARCH_CACHE"]), "$SIMSEARCH_CACHE"))
    pairs = {str(p.expanduser().resolve()): n for p, n in names} | {str(p.expanduser()): n for p, n in names}
    return sorted(((p, n) for p, n in pairs.items() if p != "/"), key=lambda pn: -len(pn[0]))


def portable(text: str, names: list[tuple[str, str]] | None = None) -> str:
    """`text` with this machine's folders (the checkout, the data, the home and temporary folders) named portably."""
    for prefix, name in names if names is not None else _path_names():
        text = text.replace(prefix, name)
    return text


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays, paths and non-finite floats in a form `json` writes (NaN becomes null); folders of
    this machine named portably."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return portable(str(value))
    if isinstance(value, str):
        return portable(value)
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3f}" if abs(value) >= 0.001 or value == 0 else f"{value:.2e}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """A GitHub Markdown table; columns are the union of the rows' keys in first-seen order."""
    if not rows:
        return "(no rows)\n"
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines.extend("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows)
    return "\n".join(lines) + "\n"


def write_record(
    out_dir: Path,
    suite: str,
    result: dict[str, Any],
    *,
    parameters: dict[str, Any],
    device: str,
    command: Sequence[str],
    started: float,
) -> dict[str, Any]:
    """Write `<out>/<suite>.json` and `<out>/<suite>.md` for one suite's `run()` result; returns the full record."""
    figures = [Path(f) for f in result.get("figures", [])]
    table = list(result.get("table", []))
    env = environment(device)
    record: dict[str, Any] = {
        "suite": suite,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "command": " ".join(command),
        "git": git_commit(),
        "environment": env,
        "parameters": parameters,
        **result.get("record", {}),
        "figures": [f.name if f.parent == out_dir else str(f) for f in figures],
        "table": table,
    }
    record = _jsonable(record)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{suite}.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    commit = record["git"]["commit"]
    lines = [
        f"## {suite}",
        "",
        f"{record['date']}, `{record['command']}`, commit {commit[:10] if commit else 'unknown'}"
        f"{' (dirty)' if record['git']['dirty'] else ''}.",
        f"{env['device']} ({env['device_name']}), torch {env['torch']} with {env['torch_threads']} threads, "
        f"faiss {env['faiss']}, timm {env['timm']}. {env['note'][0].upper()}{env['note'][1:]}.",
        "",
        markdown_table(table),
    ]
    lines.extend(f"![{f.stem}]({record['figures'][i]})\n" for i, f in enumerate(figures))
    (out_dir / f"{suite}.md").write_text("\n".join(lines), encoding="utf-8")
    return record


# --------------------------------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------------------------------


def rss_bytes(pid: int | str) -> int:
    """Resident set size of one process from /proc (0 when it is gone or /proc is absent)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def _pss_bytes(pid: int | str) -> int:
    """Proportional set size: shared pages split between the processes sharing them, so that a parent's and its
    forked workers' figures add up (their RSS would count every copy-on-write page once per process)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _children(pid: int) -> list[str]:
    """Direct children of `pid` (DataLoader workers), from /proc/<pid>/task/*/children."""
    kids: list[str] = []
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            try:
                with open(f"{task.path}/children") as f:
                    kids.extend(f.read().split())
            except OSError:
                continue
    except OSError:
        pass
    return kids


class PeakRSS:
    """Samples, in a thread, the resident memory of this process (RSS) and of this process plus its children (the
    sum of their PSS, which counts shared pages once; sampled less often, and at entry and exit).

    `ru_maxrss` alone is the high-water mark since the process started, so it cannot tell one sweep point from the
    next; sampling /proc every `interval` seconds can, at the price of missing peaks shorter than the interval.
    """

    def __init__(self, interval: float = 0.05, pss_interval: float = 1.0) -> None:
        self.interval = interval
        self.pss_every = max(1, round(pss_interval / interval))
        self.peak_self = 0
        self.peak_total = 0
        self.start_self = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self, pss: bool = True) -> None:
        pid = os.getpid()
        self.peak_self = max(self.peak_self, rss_bytes(pid))
        if pss:
            total = _pss_bytes(pid) + sum(_pss_bytes(c) for c in _children(pid))
            self.peak_total = max(self.peak_total, total)

    def _loop(self) -> None:
        # PSS comes from smaps_rollup, a walk of every page table of the process under its memory-map lock: read
        # every 50 ms it slowed the indexing pipeline it measured by ~12% (27.7 against 30.4 and 33.4 img/s, 1,000
        # Caltech photos), so it is read every `pss_interval` seconds and the cheap RSS (statm) every `interval`.
        tick = 0
        while not self._stop.wait(self.interval):
            tick += 1
            self._sample(pss=tick % self.pss_every == 0)

    def __enter__(self) -> PeakRSS:
        self._sample()
        self.start_self = self.peak_self
        self._thread = threading.Thread(target=self._loop, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()

    def as_dict(self) -> dict[str, float]:
        """Peaks in MiB: this process's RSS (and its RSS on entry: what earlier work left resident), and the PSS of
        this process plus its children (decode workers)."""
        return {
            "start_rss_mib": self.start_self / 2**20,
            "peak_rss_mib": self.peak_self / 2**20,
            "peak_pss_with_workers_mib": self.peak_total / 2**20,
        }


def max_rss_mib() -> float:
    """`getrusage` high-water mark of this process since it started, in MiB (Linux reports KiB)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


# --------------------------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------------------------


@contextmanager
def figure(path: Path, *, width: float = 6.4, height: float = 4.0, ncols: int = 1) -> Iterator[Any]:
    """A matplotlib figure (Agg backend, imported only here) saved as PNG at `path` on exit; yields the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width, height), squeeze=True)
    try:
        yield axes
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, format="png")
    finally:
        plt.close(fig)
