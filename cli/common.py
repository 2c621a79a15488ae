"""What the commands share: the one-line error handling, output writing, common options and DATA parsing.

Its own module so that command modules (`cli.pretrain`) and `cli.main`, which registers them, both import it without
importing each other.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from simsearch import SimSearchError
from simsearch.collection import COLLECTION_ENV, default_collection_path

F = TypeVar("F", bound=Callable[..., Any])


def domain_errors(func: F) -> F:
    """Turn the library's domain errors into one-line click errors (exit status 1)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SimSearchError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


def check_device(device: str) -> None:
    """Refuse a device this machine lacks (`--device cuda` without a GPU) before a model loads: it costs a torch
    import, not a model."""
    if device in ("auto", "cpu"):  # every machine has a CPU: no torch import for it
        return
    from simsearch.devices import resolve_device

    try:
        resolve_device(device)
    except SimSearchError as exc:
        raise click.ClickException(str(exc)) from None


def cannot_write(path: Path, exc: OSError) -> click.ClickException:
    """The one-line error for an output path the OS refused (a read-only folder, a full disk, a file in the way)."""
    return click.ClickException(f"cannot write {path}: {exc.strerror or exc}")


def can_draw(instead: str) -> bool:
    """Whether matplotlib (the `plots` extra) is there for a picture that the user did not ask for by name; without
    it, a one-line note with the install hint and what happens `instead`, and the command goes on without it."""
    from simsearch.plots import PlotError, require_matplotlib

    try:
        require_matplotlib()
    except PlotError as exc:
        click.echo(f"{exc} ({instead})", err=True)
        return False
    return True


def write_output(path: Path, text: str) -> None:
    """Write a file the user named, its folder made if needed: a path that cannot be written is a one-line error,
    not a traceback after the work is done."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise cannot_write(path, exc) from None


collection_option = click.option(
    "-c",
    "--collection",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=COLLECTION_ENV,
    help=f"Collection folder [default: ${COLLECTION_ENV} or {default_collection_path()}].",
)
device_option = click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where the model runs: the GPU when torch sees one (auto), else the CPU.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
query_view_option = click.option(
    "--query-view",
    help="Two-view data (class folders of one image per view named by its view, or view folders of matching file "
    "names): search with this view's images...",
)
gallery_view_option = click.option(
    "--gallery-view", help="...among this view's images, one right item each (needs --query-view)."
)


def two_views(query_view: str | None, gallery_view: str | None) -> tuple[str, str] | None:
    """The two views of --query-view and --gallery-view, both or neither."""
    if (query_view is None) != (gallery_view is None):
        raise click.UsageError("--query-view and --gallery-view go together: name both views")
    if query_view is not None and query_view == gallery_view:
        raise click.UsageError("--query-view and --gallery-view must name two different views")
    return None if query_view is None or gallery_view is None else (query_view, gallery_view)


tta_option = click.option(
    "--tta",
    type=click.Choice(["hflip"]),  # simsearch.models.TTA_MODES, written out so that --help needs no torch import
    help="Test-time augmentation: 'hflip' averages each image's vector with its mirror's (twice the model cost). "
    "Part of the model: a collection keeps it for its queries.",
)


def open_data(data: str, param_hint: str = "DATA", views: tuple[str, ...] | None = None) -> Any:
    """DATA of train, eval, pack and pretrain (`simsearch.data.open_data`; with `views`, two-view data by
    `simsearch.data.open_views`); one it cannot open is a bad value of the option named by `param_hint`, and a shared
    set's missing files point at $SIMSEARCH_DATA."""
    from simsearch.data import DataNotFoundError, DatasetError, is_shared_split_name, open_views
    from simsearch.data import open_data as open_spec

    try:
        return open_spec(data) if views is None else open_views(data, views)
    except DataNotFoundError as exc:
        if is_shared_split_name(data) and not Path(data).expanduser().exists():
            raise click.ClickException(missing_data_message(exc)) from None
        raise click.BadParameter(str(exc), param_hint=param_hint) from None
    except DatasetError as exc:
        raise click.BadParameter(str(exc), param_hint=param_hint) from None


def missing_data_message(exc: Exception) -> str:
    """The one-line error of a shared set's missing files: the library's message, pointing at $SIMSEARCH_DATA when it
    does not already."""
    from simsearch.data import DATA_ENV

    return str(exc) if DATA_ENV in str(exc) else f"{exc} (set {DATA_ENV} to the shared data folder)"


def parse_options(pairs: tuple[str, ...], param_hint: str = "--loss-option") -> dict[str, Any]:
    """KEY=VALUE pairs as the library reads recipe text (`simsearch.runs.parse_assignments`: VALUE as JSON when it
    parses, else a string); a malformed pair is a bad value of the option named by `param_hint`."""
    from simsearch.runs import RecipeError, parse_assignments

    try:
        return parse_assignments(pairs)
    except RecipeError as exc:
        raise click.BadParameter(str(exc), param_hint=param_hint) from None
