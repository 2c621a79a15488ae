"""The top-level command group: help in sections ("search" and "models"), and exit statuses that mean the same in
every command and output mode: 0 done, 1 a one-line error, 2 a usage error, 130 interrupted (Ctrl-C), 141 the
reader of stdout went away (`| head`)."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

#: Commands by section of the help, in the order shown; a command in none is listed under "other".
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Search commands", ("index", "query", "info", "remove", "serve", "dedup")),
    ("Model commands", ("train", "eval", "pretrain", "pack", "calibrate")),
)
FAISS_HINT = (
    "this command needs FAISS, which is not installed: pip install 'simsearch[cpu]' "
    "(or 'simsearch[gpu]' for NVIDIA GPUs)"
)
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


class SectionedGroup(click.Group):
    """A click group whose help lists its commands by section, and whose commands share one set of exit statuses."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        order = [name for _, names in SECTIONS for name in names]
        known = set(self.commands)
        return [n for n in order if n in known] + sorted(known - set(order))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        listed: set[str] = set()
        limit = formatter.width - 6 - max((len(name) for name in self.commands), default=0)
        for title, names in (*SECTIONS, ("Other commands", tuple(self.list_commands(ctx)))):
            rows = []
            for name in names:
                command = self.get_command(ctx, name)
                if command is None or command.hidden or name in listed:
                    continue
                listed.add(name)
                rows.append((name, command.get_short_help_str(limit=limit)))
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:
            # Nobody reads the rest: stop quietly, and keep the interpreter's last flush from failing again.
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):  # stdout is no file (a test runner's buffer)
                pass
            ctx.exit(EXIT_BROKEN_PIPE)
        except ModuleNotFoundError as exc:
            if exc.name is not None and exc.name.split(".")[0] == "faiss":
                raise click.ClickException(FAISS_HINT) from None
            raise
