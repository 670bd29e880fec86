"""The dashboard in a real browser: `churn serve` in its own process over a store filled by
batch scoring (a small simulated firm, six months of history, a tiny real LightGBM bundle),
driven by headless Chromium (Debian's, through Playwright).

A manager logs in, sees only their accounts, opens the riskiest one and finds its reasons,
actions and a drawn chart; an admin sees every account; the retention page draws its charts;
no page logs a console error (a Content-Security-Policy violation would be one). On a desktop
(1400 px) and a phone (390 px): no page is wider than the screen, chart text is at least
11 px, no label is cut off or spills out of its card, x-axis labels do not overlap; the action
queue starts with the most urgent account and its CSV export holds the filtered rows; an
account whose model and rules disagree says so in a box above its scores, and the queue marks
and filters it. Screenshots go to test-output/screenshots/.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from churn.settings import load_settings
from serving.batch import default_as_of, history_dates, load_champion, score_batches
from serving.dashboard.formatting import fmt_num
from serving.report import render_report
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
    tmp: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("dashboard")
    settings = load_settings(models_dir=tmp / "models", store_url=str(tmp / "store.duckdb"))
    tables = small_firm(120, seed=5)
    # Platt scaling keeps every raw score's own probability (an isotonic fit on the tiny
    # model's 600 rows is a few steps), so an account's probability history has a shape to draw.
    make_models_dir(settings.models_dir, "demo-v1", calibration="platt")
    # Twelve months of history: the account chart's x axis has thirteen dates to label.
    batches = score_batches(
        tables, history_dates(default_as_of(tables), 12), load_champion(settings), settings
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
        yield Site(server.url, store, manager, server.manager, server.admin, tmp)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@contextmanager
def _open_page(browser: Browser, width: int, height: int) -> Iterator[Page]:
    """A page in a fresh context of the given viewport; its console errors and page errors
    collect in ``page.console_errors``."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.console_errors = errors  # type: ignore[attr-defined]
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with _open_page(browser, 1440, 1000) as page:
        yield page


def _login(page: Page, site: Site, key: str) -> None:
    page.goto(site.url + "/")
    assert page.url.startswith(site.url + "/login")
    page.fill("#api_key", key)
    page.click("button[type=submit]")
    page.wait_for_url(site.url + "/")


def _shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


PRIORITY_RANK = {"act_now": 0, "watch": 1, "ok": 2}


def _queue_order(frame: pd.DataFrame) -> pd.DataFrame:
    """The action queue's default order, from the stored scores: priority (act now first),
    revenue at risk, churn probability (both largest first), health score, account id."""
    rank = frame["priority"].map(PRIORITY_RANK)
    return (
        frame.assign(_rank=rank)
        .sort_values(
            ["_rank", "revenue_at_risk", "churn_probability", "health_score", "account_id"],
            ascending=[True, False, False, True, True],
            na_position="last",
            kind="mergesort",
        )
        .drop(columns="_rank")
    )


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
    expected = _queue_order(site.store.portfolio(manager=site.manager))
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
    everything = _queue_order(site.store.portfolio())
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
    assert _drawn(page, ".chart") >= 6
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


# -- desktop and phone ---------------------------------------------------------------------------

WIDTHS = [1400, 390]

# Every visible piece of chart text with its rendered font size in CSS pixels: SVG text is
# scaled with its drawing (the size times the screen transform), HTML labels are not.
CHART_TEXT_SIZES = """() => {
  const out = [];
  for (const t of document.querySelectorAll('svg text')) {
    const box = t.getBoundingClientRect();
    if (box.width === 0 && box.height === 0) continue;
    const m = t.getScreenCTM();
    out.push([t.textContent, parseFloat(getComputedStyle(t).fontSize) * Math.hypot(m.a, m.b)]);
  }
  const html = '.chart .bar-label, .chart .bar-value, .chart-legend li';
  for (const el of document.querySelectorAll(html)) {
    if (el.getClientRects().length === 0) continue;
    out.push([el.textContent, parseFloat(getComputedStyle(el).fontSize)]);
  }
  return out;
}"""

# Labels cut off or outside their card: [label, reason] for each.
CLIPPED_LABELS = """() => {
  const bad = [];
  const inside = (box, outer) => box.left >= outer.left - 1 && box.right <= outer.right + 1
      && box.top >= outer.top - 1 && box.bottom <= outer.bottom + 1;
  const labels = document.querySelectorAll(
    'svg.chart text, .chart .bar-label, .chart .bar-value, .chart-legend li');
  for (const el of labels) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 && box.height === 0) continue;
    const card = el.closest('.card, section, main');
    if (!inside(box, card.getBoundingClientRect())) bad.push([el.textContent, 'outside its card']);
    if (box.right > window.innerWidth + 1 || box.left < -1)
      bad.push([el.textContent, 'off screen']);
    if (!(el instanceof SVGElement) && el.scrollWidth > el.clientWidth + 1)
      bad.push([el.textContent, 'cut off']);
  }
  for (const svg of document.querySelectorAll('svg.chart')) {
    const ticks = [...svg.querySelectorAll('text.axis-x')].map(t => t.getBoundingClientRect())
      .filter(b => b.width > 0);
    for (let i = 1; i < ticks.length; i++)
      if (ticks[i].left < ticks[i - 1].right + 2) bad.push([svg.id || 'x axis', 'labels overlap']);
  }
  return bad;
}"""


@pytest.fixture(params=WIDTHS, ids=lambda w: f"{w}px")
def sized_page(request, browser: Browser) -> Iterator[Page]:
    with _open_page(browser, request.param, 900) as page:
        yield page


def _assert_fits(page: Page, name: str) -> None:
    """No horizontal overflow, chart text >= 11 px, no label clipped; then a screenshot."""
    width = page.viewport_size["width"]  # type: ignore[index]
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= page.evaluate("window.innerWidth"), f"{name} is {scroll} px wide"
    small = [(t, round(s, 1)) for t, s in page.evaluate(CHART_TEXT_SIZES) if s < 11 - 1e-6]
    assert small == [], f"{name}: chart text under 11 px"
    assert page.evaluate(CLIPPED_LABELS) == [], f"{name}: clipped labels"
    _shot(page, f"{name}-{width}.png")


def test_every_page_fits_the_screen_with_readable_unclipped_charts(sized_page: Page, site: Site):
    page = sized_page
    page.goto(site.url + "/login")
    _assert_fits(page, "login")
    _login(page, site, site.admin_key)
    _assert_fits(page, "portfolio")
    first = _row_ids(page)[0]
    page.goto(f"{site.url}/accounts/{first}")
    assert page.locator("#history-chart text.axis-x").count() >= 3
    _assert_fits(page, "account")
    page.goto(site.url + "/retention")
    _assert_fits(page, "retention")
    page.goto(site.url + "/lapsed")
    _assert_fits(page, "lapsed")
    report = site.tmp / "report.html"
    report.write_text(render_report(site.store), encoding="utf-8")
    page.goto(report.as_uri())
    _assert_fits(page, "report")


def test_the_queue_starts_with_the_most_urgent_account_and_shows_it_on_a_phone(
    sized_page: Page, site: Site
):
    page = sized_page
    _login(page, site, site.admin_key)
    expected = _queue_order(site.store.portfolio())
    assert expected["priority"].iloc[0] == "act_now"  # the site has an account to act on now
    ids = _row_ids(page)
    assert ids[0] == expected["account_id"].iloc[0]
    assert ids == expected["account_id"].head(25).tolist()
    width = page.viewport_size["width"]  # type: ignore[index]
    first = page.locator("#accounts tbody tr").first
    cells = ["a.client-name", "td.prio-cell .prio", "td.num .score", "td.health-cell .score"]
    assert first.locator(".prio").get_attribute("data-priority") == expected["priority"].iloc[0]
    for selector in cells:
        box = first.locator(selector).first.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, selector
    header = page.locator("header.topbar").bounding_box()
    assert header is not None and header["width"] <= width


def test_a_header_click_sorts_and_the_csv_export_holds_the_filtered_rows(
    sized_page: Page, site: Site
):
    page = sized_page
    _login(page, site, site.admin_key)
    page.select_option("select[name=segment]", "B")
    page.click("form.filters button[type=submit]")
    page.wait_for_load_state()
    page.click("#accounts thead a:has-text('Health')")
    page.wait_for_load_state()
    everything = site.store.portfolio()
    segment_b = _queue_order(everything[everything["revenue_segment"] == "B"])
    by_health = segment_b.sort_values("health_score", kind="mergesort", na_position="last")
    assert _row_ids(page) == by_health["account_id"].head(25).tolist()
    assert page.get_attribute("#accounts th[aria-sort]", "aria-sort") == "ascending"
    with page.expect_download() as info:
        page.click("#csv-export")
    download = info.value
    assert (
        download.suggested_filename
        == f"portfolio-{everything['as_of'].iloc[0]:%Y-%m-%d}-segment-B.csv"
    )
    rows = pd.read_csv(download.path(), dtype={"account_id": str})
    assert rows["account_id"].tolist() == by_health["account_id"].tolist()  # all, every page
    assert set(rows["revenue_segment"]) == {"B"}
    assert page.console_errors == []  # type: ignore[attr-defined]


def test_a_flag_is_said_in_a_visible_box_and_marked_in_the_queue(sized_page: Page, site: Site):
    """An account whose model and health rules disagree shows the flag near the top, the two
    sides side by side on a desktop and one under the other on a phone; the queue marks it
    and filters by it."""
    page = sized_page
    width = page.viewport_size["width"]  # type: ignore[index]
    flags = site.store.flags()
    two_sided = flags[flags["code"].isin(["quiet_risk", "rule_only_risk"])]
    assert not two_sided.empty, "the simulated firm should have a disagreement to show"
    account, code = two_sided[["account_id", "code"]].iloc[0]
    _login(page, site, site.admin_key)
    page.goto(f"{site.url}/accounts/{account}")
    box = page.locator(f"#flags .flag-box[data-flag={code}]")
    assert box.is_visible()
    frame = box.bounding_box()
    tiles = page.locator("section.tiles").bounding_box()
    assert frame is not None and tiles is not None
    assert frame["y"] < tiles["y"]  # above the scores
    assert frame["x"] >= 0 and frame["x"] + frame["width"] <= width
    model = box.locator(".flag-side.model").bounding_box()
    rules = box.locator(".flag-side.rules").bounding_box()
    assert model is not None and rules is not None
    said = box.inner_text().lower()  # the headings are set in capitals
    assert "what the model sees" in said and "what the health rules see" in said
    if width >= 1000:
        assert abs(model["y"] - rules["y"]) < 1 and model["x"] < rules["x"]  # side by side
    else:
        assert rules["y"] >= model["y"] + model["height"]  # one under the other
    _assert_fits(page, "account-flag")

    page.goto(f"{site.url}/?flag={code}")
    ids = _row_ids(page)
    flagged = set(flags.loc[flags["code"] == code, "account_id"])
    assert ids and set(ids) <= flagged
    chip = page.locator(f"#accounts tbody tr >> nth=0 >> .flag-chip[data-flag={code}]")
    assert chip.is_visible()
    chip_box = chip.bounding_box()
    assert chip_box is not None and chip_box["x"] + chip_box["width"] <= width
    _assert_fits(page, "portfolio-flag")
