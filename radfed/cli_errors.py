"""How every radfed command refuses: one `error: ...` line on stderr, then a non-zero exit.

Shared by the coordinator's, the clinic's and the dashboard's command lines so that a
user sees the same form everywhere; the message is printed as plain text (a path or a
Flower code such as `[code: 2004]` is never taken for rich markup).
"""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)
