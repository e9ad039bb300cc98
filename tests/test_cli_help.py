"""Help a new user can read: real defaults, one unit, every option described, whole names at 80 columns in a pipe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from nasdeploy.cli import app
from nasdeploy.cli.table_policy import table_policy
from nasdeploy.errors import NasDeployError

PIPELINE = Path(__file__).resolve().parents[1] / "pipeline"
COMMANDS = typer.main.get_command(app).commands


def nasdeploy(*args: str) -> subprocess.CompletedProcess:
    """The command in a pipe (not a terminal) at 80 columns."""
    env = {**os.environ, "PYTHONPATH": str(PIPELINE), "COLUMNS": "80"}
    return subprocess.run([sys.executable, "-m", "nasdeploy", *args], env=env, capture_output=True, text=True, timeout=120)


def test_every_option_of_every_command_is_described():
    missing = [f"{name} {param.opts[0]}" for name, command in COMMANDS.items() for param in command.params
               if param.param_type_name == "option" and not (param.help or "").strip()]
    assert missing == []


@pytest.mark.parametrize("command", ["search", "run", "export", "validate-lut"])
def test_help_at_80_columns_in_a_pipe_keeps_every_option_name_whole(command):
    result = nasdeploy(command, "--help")
    assert result.returncode == 0, result.stderr
    assert max(len(line) for line in result.stdout.splitlines()) <= 80 and "…" not in result.stdout
    names = [opt for param in COMMANDS[command].params for opt in param.opts if opt.startswith("--")]
    assert all(name in result.stdout for name in names)


def test_search_help_states_the_real_defaults_and_the_tolerance_unit():
    text = " ".join(nasdeploy("search", "--help").stdout.split())
    assert "(default: icdarts; senas with --space mobilenet" in text  # --strategy
    assert "darts for icdarts, mobilenet for senas" in text  # --space
    assert "(default: none, the search is not held to a latency; 'nasdeploy run' derives one" in text
    assert "in per cent, above which the table is refused, e.g. --spot-check-tolerance 10. [default: 10.0]" in text


def test_spot_check_tolerance_is_in_per_cent():
    assert table_policy(10, False, False).tolerance == pytest.approx(0.10)
    with pytest.raises(NasDeployError, match=r"^--spot-check-tolerance is in per cent \(10 means 10 %\), got 0.1; "):
        table_policy(0.1, False, False)  # the old fraction is refused, not read as 0.1 %


def test_strategy_settings_show_what_each_preset_runs_with():
    result = nasdeploy("strategies", "icdarts")
    lines = (result.stdout + result.stderr).splitlines()  # the rich console writes to stderr
    assert result.returncode == 0 and "(cpu* applies without --preset)" in lines[0]
    assert "  epochs (int): cpu* 3, paper 30, tiny 1, paper-mo 30" in lines  # no separate 'default' next to the presets
    assert "  alpha_lr (float): cpu* 0.006, paper 0.0003, tiny 0.03, paper-mo 0.0003" in lines
