"""`python -m benchmarks SUITE [options]`, from a source checkout: run one benchmark suite, or all of them, and
write its JSON record, PNGs and Markdown summary (default folder benchmarks/results/, where baselines live).

A suite is a module `benchmarks/suites/<name>.py` with `add_arguments(parser)` and `run(args, out_dir)` returning
`{"record": {...}, "figures": [png paths], "table": [flat dicts, one per Markdown row]}`. The common options (see
`SUITE --help`) are parsed here for every suite and are on `args`; the environment block, the record files and the
printed table are written here too.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks import DATA_ENV, REPO, suites
from benchmarks.record import markdown_table, write_record
from simsearch.cpus import usable_cores

logger = logging.getLogger("benchmarks")

RESULTS = REPO / "benchmarks" / "results"


def common_parser() -> argparse.ArgumentParser:
    """The options every suite takes (a parent parser)."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("common options")
    group.add_argument("--out", type=Path, default=RESULTS, help="output folder [default: benchmarks/results]")
    group.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where models (and GPU-capable indexes) run; auto = cuda when torch sees a GPU [default: auto]",
    )
    group.add_argument(
        "--amp",
        choices=("off", "fp16", "bf16"),
        default="off",
        help="autocast precision of the forward passes (fp16: CUDA only) [default: off = float32]",
    )
    group.add_argument(
        "--threads", type=int, default=usable_cores(), help="torch and faiss threads [default: all cores]"
    )
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--tiny", action="store_true", help="smallest sizes (seconds): checks that the suite runs")
    group.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ[DATA_ENV]),
        help=f"the shared data folder [default: ${DATA_ENV} or <repo>/../shared/data]",
    )
    group.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    return parser


def build_parser(prog: str | None = None) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top parser and one sub-parser per suite present (a suite that fails to import is reported, not fatal)."""
    parser = argparse.ArgumentParser(
        prog=prog or "python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="suite", metavar="SUITE", required=True)
    common = common_parser()
    parsers: dict[str, argparse.ArgumentParser] = {}
    for name in suites.available():
        try:
            module = suites.load(name)
        except Exception as exc:  # noqa: BLE001 - a broken suite must not take the others down
            print(f"warning: suite {name!r} cannot be imported: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        doc = (module.__doc__ or name).strip()
        summary = getattr(module, "HELP", None) or doc.splitlines()[0]
        p = sub.add_parser(
            name,
            parents=[common],
            help=summary if len(summary) <= 90 else summary[:87] + "...",
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_module=module)
        parsers[name] = p
    sub.add_parser(
        "all",
        parents=[common],
        help=f"every suite above in turn ({', '.join(parsers)}), each with its defaults",
        description="Run every suite with its own defaults; only the common options are accepted.",
    )
    return parser, parsers


def _configure(args: argparse.Namespace) -> None:
    """Threads, seeds and the device, before a suite runs."""
    import faiss
    import numpy as np
    import torch

    from simsearch.models import resolve_device

    if args.threads < 1:
        raise suites.BenchmarkError(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed % 2**32)
    torch.manual_seed(args.seed)
    args.device = str(resolve_device(args.device))
    if args.amp == "fp16" and not args.device.startswith("cuda"):
        raise suites.BenchmarkError("--amp fp16 needs --device cuda (CPU autocast supports bf16 only)")
    args.out = Path(args.out)
    args.data = Path(args.data)


def run_suite(name: str, module: ModuleType, args: argparse.Namespace, command: Sequence[str]) -> dict[str, Any]:
    """Run one suite and write `<out>/<name>.json` and `<out>/<name>.md`; returns the record."""
    _configure(args)
    started = time.time()
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    logger.info("%s: running (device %s, %d threads)", name, args.device, args.threads)
    result = module.run(args, out_dir)
    if not isinstance(result, dict) or "record" not in result:
        raise suites.BenchmarkError(f"suite {name!r} returned {type(result).__name__}, not the contract's dict")
    parameters = {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("verbose", "suite")}
    record = write_record(
        out_dir, name, result, parameters=parameters, device=args.device, command=command, started=started
    )
    print(f"\n## {name}\n")
    print(markdown_table(record["table"]), end="")
    written = [f"{name}.json", f"{name}.md", *record["figures"]]
    print(f"\nwrote {', '.join(written)} in {out_dir}")
    return record


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Parse, run, write; returns the exit status (1 with a one-line message when a suite cannot run)."""
    from simsearch.errors import SimSearchError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser, parsers = build_parser(prog)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    command = [prog or "python -m benchmarks", *argv]
    if args.suite == "all":
        rest = argv[argv.index("all") + 1 :]
        jobs = [(name, parsers[name].parse_args(rest)) for name in parsers]
    else:
        jobs = [(args.suite, args)]
    try:
        for name, job_args in jobs:
            run_suite(name, job_args._module, job_args, command)
    except (suites.BenchmarkError, SimSearchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
