"""The recipe of a benchmark's training run is a `TrainConfig` written out in the benchmark's module, changed from the
command line with `--set FIELD=VALUE` (read as `simsearch train` reads `--loss-option`, through the library's
`parse_assignments` and `with_changes`): one recipe object for the command line, the library and the benchmarks."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import TypeVar

from simsearch.runs import RecipeError, parse_assignments, recipe_dict, with_changes

R = TypeVar("R")


def add_recipe_option(parser: argparse.ArgumentParser, recipe: object) -> None:
    """`--set FIELD=VALUE` (repeatable), its help showing the benchmark's own recipe."""
    parser.add_argument(
        "--set",
        dest="changes",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help=f"change a field of the recipe ({type(recipe).__name__}; VALUE is JSON when it parses, FIELD.KEY sets "
        f"one key of a dict field, e.g. loss_kwargs.margin=0.2); the recipe: {json.dumps(recipe_dict(recipe))}",
    )


def recipe_from_args(parser: argparse.ArgumentParser, recipe: R, changes: Sequence[str]) -> R:
    """The benchmark's recipe with the `--set` changes; a field it does not have is a usage error."""
    try:
        return with_changes(recipe, parse_assignments(changes))
    except RecipeError as exc:
        parser.error(f"--set: {exc}")
