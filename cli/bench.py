"""`simsearch bench SUITE ...`: the benchmark suite of a source checkout (`python -m benchmarks`), run in-process.

`benchmarks/` is not shipped in the wheel, so the command needs a checkout; its options are the suite's own.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path

import click

_NEEDS_CHECKOUT = (
    "simsearch bench needs a source checkout of simsearch (benchmarks/ is not part of the installed package): "
    "run it from a clone of the repository"
)


def _benchmarks_main() -> Callable[..., int]:
    """`benchmarks.__main__.main` of the checkout this `cli` package lives in, else of an importable `benchmarks`."""
    root = Path(__file__).resolve().parent.parent
    if (root / "benchmarks" / "__main__.py").is_file() and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        module = importlib.import_module("benchmarks.__main__")
    except ImportError as exc:
        if exc.name in ("benchmarks", "benchmarks.__main__"):
            raise click.ClickException(_NEEDS_CHECKOUT) from None
        raise
    main = getattr(module, "main", None)
    if not callable(main):
        raise click.ClickException(_NEEDS_CHECKOUT)
    return main


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    add_help_option=False,
    short_help="Run a benchmark suite (quality, embed, query, search, train, all) from a source checkout.",
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Run a benchmark suite from a source checkout: quality, embed, query, search, train or all.

    \b
        simsearch bench --help
        simsearch bench quality --dataset caltech101
        simsearch bench embed --tiny --out /tmp/bench
    """
    main = _benchmarks_main()
    status = main(list(args), prog="simsearch bench")
    if status:
        sys.exit(status)
