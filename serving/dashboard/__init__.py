"""The dashboard: server-rendered pages for account managers and the retention lead.

Pages: ``/login`` and ``/logout`` (:mod:`serving.dashboard.sessions`), ``/`` (the portfolio,
an action queue: :mod:`serving.dashboard.queue` filters, sorts and exports it as
``/portfolio.csv``), ``/accounts/{id}`` (one account) and ``/retention`` (retention metrics),
all in :mod:`serving.dashboard.views`; what each page shows is built by
:mod:`serving.dashboard.pages`, worded by :mod:`serving.dashboard.formatting` and drawn by
:mod:`serving.dashboard.charts` (inline SVG). A manager sees only the accounts they manage,
everywhere. The only other files are the stylesheet and the favicon under ``/static``, so the
pages work offline under a strict Content-Security-Policy with no script at all.
:mod:`serving.report` renders the retention page as one self-contained HTML file.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"
