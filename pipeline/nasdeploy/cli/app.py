"""The typer app every command module registers on."""

import typer

app = typer.Typer(
    name="nasdeploy",
    help="Hardware-aware NAS: profile latency tables, search under a budget, retrain, export and re-measure.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: wraps at any width, never cuts an option name (in a pipe too)
)
