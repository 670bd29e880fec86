"""The dashboard in a real browser: `churn serve` in its own process over a store filled by
batch scoring (a small simulated firm, six months of history, a tiny real LightGBM bundle),
driven by headless Chromium (Debian's, through Playwright).

A manager logs in, sees only their accounts, opens the riskiest one and finds its reasons,
actions and a drawn chart; an admin sees every account; the retention page draws its charts;
no page logs a console error (a Content-Security-Policy violation would be one). Screenshots
go to test-output/screenshots/.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from churn.settings import load_settings
from serving.batch import default_as_of, history_dates, load_champion, score_batches
from serving.dashboard.formatting import fmt_num
from serving.retention import RetentionBase
from serving.store import Store
from tests.support.bundle_factory import make_models_dir
from tests.support.firms import small_firm
from tests.support.live_server import live_server

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-output" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Site:
    url: str
    store: Store
    manager: str
    manager_key: str
    admin_key: str


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("dashboard")
    settings = load_settings(models_dir=tmp / "models", store_url=str(tmp / "store.duckdb"))
    tables = small_firm(120, seed=5)
    # Platt scaling keeps every raw score's own probability (an isotonic fit on the tiny
    # model's 600 rows is a few steps), so an account's probability history has a shape to draw.
    make_models_dir(settings.models_dir, "demo-v1", calibration="platt")
    batches = score_batches(
        tables, history_dates(default_as_of(tables), 6), load_champion(settings), settings
    )
    store = Store(settings.store_url)
    base = RetentionBase.from_tables(tables)
    for batch in batches:
        store.write_batch(batch, base=base if batch is batches[-1] else None)
    # The manager with the most revenue at risk, so their riskiest account has a story.
    latest = store.portfolio()
    manager = latest.groupby("account_manager")["revenue_at_risk"].sum().idxmax()
    with live_server(
        tmp,
        {"CHURN_STORE_URL": settings.store_url},
        models=settings.models_dir,
        manager_name=manager,
    ) as server:
        yield Site(server.url, store, manager, server.manager, server.admin)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.console_errors = errors  # type: ignore[attr-defined]
    yield page
    context.close()


def _login(page: Page, site: Site, key: str) -> None:
    page.goto(site.url + "/")
    assert page.url.startswith(site.url + "/login")
    page.fill("#api_key", key)
    page.click("button[type=submit]")
    page.wait_for_url(site.url + "/")


def _shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


def _row_ids(page: Page) -> list[str]:
    return page.locator("#accounts tbody tr[data-account-id]").evaluate_all(
        "rows => rows.map(r => r.dataset.accountId)"
    )


def _drawn(page: Page, selector: str) -> int:
    """How many elements match and have a visible, non-empty box."""
    boxes = [el.bounding_box() for el in page.locator(selector).all()]
    return sum(1 for b in boxes if b and b["width"] > 20 and b["height"] > 5)


def test_a_manager_sees_only_their_accounts_and_opens_the_riskiest(page: Page, site: Site):
    _login(page, site, site.manager_key)
    expected = site.store.portfolio(manager=site.manager)
    ids = _row_ids(page)
    assert ids == expected["account_id"].head(len(ids)).tolist()
    assert len(ids) == min(len(expected), 25)
    assert f"of {len(expected):,} accounts" in page.inner_text(".pager")
    assert page.locator("select[name=manager]").count() == 0  # nothing else to choose from
    _shot(page, "portfolio-manager.png")

    page.click("#accounts tbody tr:first-child a.client-name")
    page.wait_for_url(f"{site.url}/accounts/{ids[0]}")
    assert _drawn(page, "#history-chart svg.chart path.line") == 2  # health and probability
    assert page.locator("#history-chart svg.chart circle").count() >= 2 * 7
    assert page.locator("#reasons ul.reasons li").count() >= 3
    assert _drawn(page, "#reasons svg.impact") >= 3
    assert page.locator("#actions ul.actions li, #actions ul.escalations li").count() >= 1
    assert page.inner_text("#health-score").startswith(fmt_num(expected["health_score"].iloc[0]))
    _shot(page, "account.png")
    assert page.console_errors == []  # type: ignore[attr-defined]

    other = site.store.portfolio()
    foreign = other.loc[other["account_manager"] != site.manager, "account_id"].iloc[0]
    response = page.goto(f"{site.url}/accounts/{foreign}")
    assert response is not None and response.status == 404
    assert "Account not found" in page.inner_text("h1")


def test_an_admin_sees_every_account_and_can_filter_by_manager(page: Page, site: Site):
    _login(page, site, site.admin_key)
    everything = site.store.portfolio()
    assert f"of {len(everything):,} accounts" in page.inner_text(".pager")
    assert _row_ids(page) == everything["account_id"].head(25).tolist()
    managers = page.locator("select[name=manager] option").all_inner_texts()
    assert set(everything["account_manager"]) <= set(managers)
    _shot(page, "portfolio-admin.png")

    page.select_option("select[name=manager]", site.manager)
    page.select_option("select[name=band]", "at_risk")
    page.click("form.filters button[type=submit]")
    page.wait_for_load_state()
    wanted = everything[
        (everything["account_manager"] == site.manager) & (everything["health_band"] == "at_risk")
    ]
    assert _row_ids(page) == wanted["account_id"].head(25).tolist()
    assert page.console_errors == []  # type: ignore[attr-defined]


def test_the_retention_page_draws_its_charts(page: Page, site: Site):
    _login(page, site, site.admin_key)
    page.click("nav a[href='/retention']")
    page.wait_for_url(site.url + "/retention")
    assert _drawn(page, "svg.chart") >= 6
    assert _drawn(page, "#quarterly svg.chart path.line") == 3  # logo, GRR, NRR
    assert _drawn(page, "#churn-by-stage rect.bar") >= 1
    assert _drawn(page, "#risk-drivers rect.bar") >= 3
    for kpi in ("logo_retention", "grr", "nrr"):
        assert page.inner_text(f"[data-kpi={kpi}]").strip().endswith("%")
    _shot(page, "retention.png")
    assert page.console_errors == []  # type: ignore[attr-defined]


def test_logging_out_ends_the_session(page: Page, site: Site):
    _login(page, site, site.manager_key)
    page.click("button:has-text('Log out')")
    page.wait_for_url(site.url + "/login")
    page.goto(site.url + "/retention")
    assert page.url.startswith(site.url + "/login")
    assert all(c["name"] != "churn_session" for c in page.context.cookies())
    page.fill("#api_key", "ck_000000000000_wrong")
    page.click("button[type=submit]")
    assert "not valid" in page.inner_text("[role=alert]")


def test_the_api_documentation_renders_with_no_request_leaving_the_service(page: Page, site: Site):
    outside: list[str] = []

    def only_the_service(route) -> None:
        if route.request.url.startswith(site.url):
            route.continue_()
        else:  # a CDN or any other host: the page must not need it
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_service)
    page.goto(site.url + "/docs")
    page.wait_for_selector("#swagger-ui .opblock")
    listed = page.inner_text("#swagger-ui")
    for path in ("/v1/predict", "/v1/accounts", "/v1/model", "/readyz"):
        assert path in listed
    assert outside == []
    assert page.console_errors == []  # type: ignore[attr-defined]
    _shot(page, "api-docs.png")
