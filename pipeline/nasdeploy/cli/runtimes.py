"""``nasdeploy runtimes``: per device, each registered runtime, present or not, its version and how to get it."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from nasdeploy.cli.app import app
from nasdeploy.progress import console


@app.command()
def runtimes() -> None:
    """List, per device, every runtime: present or not, version, how to get it, and the one a device resolves to."""
    from nasdeploy.errors import NasDeployError
    from nasdeploy.hardware import BACKENDS
    from nasdeploy.hardware.runtimes import choose_runtime, deployment_order, probe_runtimes

    listing = Table(title="runtimes (--runtime X; without it a device uses its default)")
    for column in ("device", "runtime", "present", "version", "missing / how to get it", "default"):
        listing.add_column(column)
    for device in devices_to_list():
        facts = probe_runtimes(device, list(BACKENDS))
        order = deployment_order(device)
        try:
            default = choose_runtime(device, facts, order).runtime
        except NasDeployError:
            default = None
        for name in order + [n for n in facts if n not in order]:
            fact = facts[name]
            how = "" if fact.present else escape(f"{fact.missing}; {fact.install}")  # pip extras look like markup
            listing.add_row(device, fact.describe(), "yes" if fact.present else "no", fact.version or "—", how,
                            "yes" if name == default else "")
    console.print(listing)


def devices_to_list() -> list[str]:
    """cpu and every visible GPU; cuda:0 when none is visible, so the table says what a GPU host would need."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["cpu"] + [f"cuda:{i}" for i in range(max(count, 1))]
