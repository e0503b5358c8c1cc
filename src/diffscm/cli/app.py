"""The Typer application and the console entry point; the commands register from their own modules."""
from __future__ import annotations

import sys

import typer

from ..errors import DiffSCMError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Counterfactual images with diffusion-based structural causal models (Diff-SCM).")
data_app = typer.Typer(no_args_is_help=True, help="Fetch, verify and cache datasets.")
app.add_typer(data_app, name="data")


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    from typer._click import exceptions as click_exc

    try:
        rv = app(standalone_mode=False)
        if isinstance(rv, int) and rv:
            sys.exit(rv)
    except click_exc.NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        sys.exit(2)
    except click_exc.UsageError as exc:
        where = f"{exc.ctx.command_path}: " if exc.ctx else ""
        typer.echo(f"error: {where}{exc.format_message()}", err=True)
        sys.exit(2)
    except DiffSCMError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
