"""`churn serve` and `churn keys add|list|revoke`: thin calls into the serving package."""

from __future__ import annotations

from typing import Annotated

import typer

from churn.console import console, err_console

keys_app = typer.Typer(
    name="keys",
    help="API keys: create (shown once), list and revoke. Stored hashed in settings.keys_file.",
    no_args_is_help=True,
)


def serve(
    host: Annotated[
        str | None, typer.Option("--host", help="Interface to listen on (default 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", min=1, max=65535, help="Port (default 8000).")
    ] = None,
) -> None:
    """Serve the scoring API (and the dashboard) with the champion model, under uvicorn.

    Without a trained model the API still answers with rule-based health scores.
    """
    import uvicorn

    from churn.settings import get_settings
    from serving.app import configure_logging, create_app, disable_pickle_deserialization
    from serving.keys import KeyStore

    settings = get_settings()
    disable_pickle_deserialization()  # before anything can import an MLflow flavour
    host = host or settings.serve.host
    port = port or settings.serve.port
    configure_logging()
    app = create_app(settings)
    url_host = f"[{host}]" if ":" in host else host
    console.print(f"Serving on [bold]http://{url_host}:{port}[/]  (API docs at /docs)")
    if not KeyStore.from_settings(settings).has_keys():
        console.print(
            "No API keys yet: create one with [bold]churn keys add --role crm[/] "
            "(or --role admin, --role manager --manager NAME, or --role metrics for a scraper)."
        )
    # One worker by default: the model lives in process memory and one account takes about a
    # millisecond. serve.workers > 1 starts that many processes on the same port (measured in
    # `make bench`); each builds its app through serving.app.worker_app.
    workers = settings.serve.workers
    uvicorn.run(
        "serving.app:worker_app" if workers > 1 else app,
        factory=workers > 1,
        host=host,
        port=port,
        workers=workers,
        access_log=False,  # our own JSON access log leaves personal data out
        log_level="warning",
        server_header=False,
        timeout_graceful_shutdown=10,
    )


@keys_app.command("add")
def keys_add(
    role: Annotated[
        str, typer.Option("--role", help="crm, manager, admin or metrics (/metrics only).")
    ],
    manager: Annotated[
        str | None,
        typer.Option(
            "--manager", help="With --role manager: the name as in accounts.account_manager."
        ),
    ] = None,
    expires_days: Annotated[
        int | None,
        typer.Option(
            "--expires-days",
            min=1,
            max=3650,
            help="The key stops working this many days from now (default: never).",
        ),
    ] = None,
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from churn.settings import get_settings
    from serving.keys import KeyStore

    settings = get_settings()
    record, token = KeyStore.from_settings(settings).add(role, manager, expires_days)
    err_console.print(
        f"Created {record.role} key {record.key_id}"
        + (" for its manager" if record.manager else "")
        + (f", valid until {record.expires_at}," if record.expires_at else "")
        + f" in {settings.keys_file}. It is shown only this once:"
    )
    # The key alone on stdout, so scripts can capture it: KEY=$(churn keys add --role crm)
    console.print(token, highlight=False, markup=False, soft_wrap=True)


@keys_app.command("list")
def keys_list() -> None:
    """List the keys: id, role, manager, created, expires, revoked (never the keys themselves)."""
    from rich.table import Table

    from churn.settings import get_settings
    from serving.keys import KeyStore

    keys = KeyStore.from_settings(get_settings()).list()
    if not keys:
        console.print("No API keys. Create one with: churn keys add --role crm")
        return
    table = Table("key id", "role", "manager", "created", "expires", "revoked")
    for k in keys:
        expires = (k.expires_at or "") + (" (expired)" if k.expired else "")
        table.add_row(k.key_id, k.role, k.manager or "", k.created_at, expires, k.revoked_at or "")
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id from `churn keys list`.")],
) -> None:
    """Revoke a key: a running server refuses it from its next request."""
    from churn.settings import get_settings
    from serving.keys import KeyStore

    record = KeyStore.from_settings(get_settings()).revoke(key_id)
    console.print(f"Revoked key {record.key_id} ({record.role}) at {record.revoked_at}.")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.add_typer(keys_app, name="keys")
