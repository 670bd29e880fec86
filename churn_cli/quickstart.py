"""`churn quickstart`: the README's first command, from a data source to a served dashboard.

Each step runs only when its output is missing, so a second `make run` goes straight to
serving: train (no champion bundle yet), score with twelve months of history (empty store),
create demo API keys (no keys yet; printed and kept in ``data/demo-keys.txt``, mode 0600),
then serve. Every step is the same code as its own command (`churn train`, `churn score`,
`churn keys add`, `churn serve`); this module only decides what is missing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from churn.console import console
from churn_cli import score as score_commands
from churn_cli import serve as serve_commands
from churn_cli.options import DataOption
from churn_cli.train import train

if TYPE_CHECKING:
    from churn.settings import Settings

#: How many account managers get a demo key of their own (the busiest ones).
DEMO_MANAGER_KEYS = 2


def _managers_by_accounts(store_url: str) -> list[str]:
    from serving.store import Store

    store = Store(store_url)
    try:
        portfolio = store.portfolio()
    finally:
        store.close()
    if portfolio.empty or "account_manager" not in portfolio:
        return []
    counts = portfolio["account_manager"].dropna().value_counts()
    return list(counts.index[:DEMO_MANAGER_KEYS])


def create_demo_keys(settings: Settings, keys_out: Path) -> list[tuple[str, str, str]]:
    """Create an admin, a crm and one manager key per busy manager; write them to ``keys_out``.

    Returns (role, manager, token) rows. The file is created with mode 0600: it holds secrets.
    """
    from serving.keys import KeyStore

    keystore = KeyStore.from_settings(settings)
    wanted: list[tuple[str, str | None]] = [("admin", None), ("crm", None)]
    wanted += [("manager", name) for name in _managers_by_accounts(settings.store_url)]
    rows = []
    for role, manager in wanted:
        _record, token = keystore.add(role, manager)
        rows.append((role, manager or "", token))
    keys_out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(keys_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("# demo API keys created by `churn quickstart` (role, manager, key)\n")
        for role, manager, token in rows:
            fh.write(f"{role}\t{manager}\t{token}\n")
    return rows


def quickstart(
    data: DataOption = None,
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Serve when everything is ready.")
    ] = True,
) -> None:
    """Train if there is no model, score a year of history if the store is empty, create demo
    keys if there are none, then serve the API and the dashboard."""
    from churn.bundle import CHAMPION_DIR, MODEL_FILE
    from churn.settings import get_settings
    from serving.keys import KeyStore
    from serving.store import Store

    settings = get_settings()
    data = data or settings.data
    champion = settings.models_dir / CHAMPION_DIR
    if (champion / MODEL_FILE).exists():
        console.print(f"[dim]model:[/] using the champion bundle in {champion}")
    else:
        console.rule("1/3 train")
        train(data=data)  # the engine and dask_scheduler settings decide where

    store = Store(settings.store_url)
    try:
        scored = store.latest_as_of()
    finally:
        store.close()
    if scored is not None:
        console.print(f"[dim]store:[/] latest scored date {scored} in {settings.store_url}")
    else:
        console.rule("2/3 score (with 12 months of history)")
        score_commands.score(data=data, history_months=12)

    keys_out = settings.data_dir / "demo-keys.txt"
    if KeyStore.from_settings(settings).has_keys():
        hint = f" (the demo keys are in {keys_out})" if keys_out.exists() else ""
        console.print(f"[dim]keys:[/] using the existing API keys{hint}")
    else:
        console.rule("3/3 API keys")
        rows = create_demo_keys(settings, keys_out)
        for role, manager, token in rows:
            who = f" for {manager}" if manager else ""
            console.print(f"  {role}{who}: [bold]{token}[/]", highlight=False, soft_wrap=True)
        console.print(f"saved to {keys_out} (only you can read it); log in with one of them")
    if serve:
        serve_commands.serve(host=None, port=None)


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart)
