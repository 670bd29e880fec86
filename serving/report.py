"""The retention report of ``churn report``: the dashboard's retention page as one
self-contained HTML document (stylesheet inlined, charts inline SVG), rendered without a
server."""

from __future__ import annotations

from datetime import datetime

from markupsafe import Markup

from churn.errors import StoreError
from serving.dashboard import STATIC_DIR
from serving.dashboard.formatting import render
from serving.dashboard.pages import model_version, retention_context, retention_for
from serving.store import Store


def render_report(store: Store, *, manager: str | None = None) -> str:
    """The retention page of the latest scored date, for all accounts or one manager's."""
    summary = retention_for(store, manager=manager)
    if summary is None:
        raise StoreError(
            f"the score store {store.display} holds no scores"
            + (f" for accounts of {manager}" if manager else ""),
            hint="run `churn score --data SOURCE` first",
        )
    css = (STATIC_DIR / "dashboard.css").read_text()
    return render(
        "report.html",
        inline_css=Markup(css),
        generated=datetime.now().strftime("%-d %b %Y %H:%M"),
        as_of=summary.as_of,
        model_version=model_version(store, summary.as_of),
        **retention_context(summary),
    )
