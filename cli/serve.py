"""The ``serve`` click command: the HTTP service over one collection (`server` package, run by uvicorn).
Registered on the main group by ``cli.main``; FastAPI and uvicorn load only when it runs."""

from __future__ import annotations

from pathlib import Path

import click

from cli.common import collection_option, device_option

TOKEN_ENV = "SIMSEARCH_TOKEN"  # server.settings names the same variables; importing it here would load FastAPI
ADMIN_TOKEN_ENV = "SIMSEARCH_ADMIN_TOKEN"


@click.command()
@collection_option
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on; another than loopback needs --token."
)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--token", envvar=TOKEN_ENV, help=f"Bearer token for reads [env {TOKEN_ENV}; default: reads open].")
@click.option(
    "--admin-token",
    envvar=ADMIN_TOKEN_ENV,
    help=f"Bearer token for adds and deletes [env {ADMIN_TOKEN_ENV}; default: no writes].",
)
@click.option(
    "--allow-root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Allow adding files by server path, under this folder only [default: by upload only].",
)
@click.option("--cors-origin", "cors_origins", multiple=True, help="Allow browser pages of this origin (repeat).")
@click.option("--max-request-mb", type=click.FloatRange(min=0, min_open=True), default=20.0, show_default=True)
@click.option(
    "--max-pixels",
    type=click.IntRange(1),
    default=40_000_000,
    show_default=True,
    help="Refuse larger images before decoding them.",
)
@click.option(
    "--max-batch",
    type=click.IntRange(1, 1024),
    default=32,
    show_default=True,
    help="Most images in one shared forward pass.",
)
@click.option(
    "--batch-wait-ms",
    type=click.FloatRange(0, 1000),
    default=5.0,
    show_default=True,
    help="Longest wait for more images before a pass starts.",
)
@click.option(
    "--forward-workers",
    type=click.IntRange(1, 64),
    help="Forward passes at once [default: one per core on a CPU, each on one thread; one on a GPU].",
)
@device_option
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True
)
def serve(
    collection: Path | None,
    host: str,
    port: int,
    token: str | None,
    admin_token: str | None,
    allow_root: Path | None,
    cors_origins: tuple[str, ...],
    max_request_mb: float,
    max_pixels: int,
    max_batch: int,
    batch_wait_ms: float,
    forward_workers: int | None,
    device: str,
    log_level: str,
) -> None:
    """Serve the collection over HTTP: a search page at /, the API at /docs.

    Listens on 127.0.0.1 unless told otherwise, and on another address only with a read token. Writes need
    --admin-token. Example:

    \b
        simsearch serve -c ~/pictures.simsearch
        SIMSEARCH_TOKEN=$(openssl rand -hex 16) simsearch serve --host 0.0.0.0
    """
    import logging

    from simsearch.allocator import keep_freed_memory, one_arena

    # This process is the server's alone, and its forward workers are threads: on the main heap, kept, their
    # activations stay mapped from one pass to the next (see simsearch.allocator), and the server's memory stays at
    # its peak rather than shrinking after a burst. Set before any thread allocates.
    one_arena()
    keep_freed_memory()

    import uvicorn

    from server import Settings, SettingsError, create_app
    from simsearch.collection.layout import MANIFEST, default_collection_path

    folder = collection or default_collection_path()
    if not (folder / MANIFEST).exists():
        raise click.ClickException(f"no simsearch collection at {folder}: build one with `simsearch index DIR`")
    settings = Settings(
        collection=folder,
        host=host,
        port=port,
        token=token or None,
        admin_token=admin_token or None,
        allow_root=allow_root,
        cors_origins=cors_origins,
        max_request_mb=max_request_mb,
        max_pixels=max_pixels,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        forward_workers=forward_workers,
        device=device,
    )
    try:
        app = create_app(settings)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    click.echo(f"simsearch: serving {folder} on http://{_url_host(host)}:{port}/ (API at /docs)", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, proxy_headers=False, server_header=False)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
