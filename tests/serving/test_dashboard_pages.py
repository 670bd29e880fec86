"""The dashboard's pages: the health bands come from the health config the app loaded, not
from numbers of their own (the portfolio's tiles and the account page's gauges follow a config
with other bands); the portfolio is an action queue (default order, sortable columns,
filters, a CSV export of exactly the filtered rows, the biggest movers)."""

from __future__ import annotations

import csv
import html
import io
import re
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from churn.text import csv_cell
from serving.app import create_app
from serving.dashboard import queue
from serving.dashboard.formatting import FLAG_WORDS, SERVICE_LEVELS, service_worry
from serving.flags import FLAG_RULES, flags_frame
from serving.keys import KeyStore
from serving.store import Store
from tests.support.cli import served_settings
from tests.support.store_rows import make_batch

ROOT = Path(__file__).resolve().parents[2]


def _client(tmp_path: Path, bands: dict[str, float] | None) -> tuple[TestClient, str]:
    config = yaml.safe_load((ROOT / "configs" / "health.yaml").read_text())
    if bands is not None:
        config["bands"] = bands
    health_config = tmp_path / "health.yaml"
    health_config.write_text(yaml.safe_dump(config))
    settings = served_settings(tmp_path, health_config=health_config)
    # Each component of a 65-point account holds 65 % of its maximum.
    Store(settings.store_url).write_batch(make_batch(date(2025, 1, 1), {"A-1": ("Ann", 65.0, 0.1)}))
    token = KeyStore.from_settings(settings).add("admin")[1]
    return TestClient(create_app(settings)), token


@pytest.mark.parametrize(
    ("bands", "at_risk_note", "critical_note", "gauge"),
    [
        (None, "health 40-59", "health below 40", "bar bar-healthy"),
        ({"healthy": 70, "at_risk": 50}, "health 50-69", "health below 50", "bar bar-at_risk"),
    ],
)
def test_pages_show_the_bands_of_the_health_config(
    tmp_path, bands, at_risk_note, critical_note, gauge
):
    client, token = _client(tmp_path, bands)
    with client:
        client.post("/login", data={"api_key": token}, follow_redirects=False)
        portfolio = client.get("/").text
        account = client.get("/accounts/A-1").text
    assert at_risk_note in portfolio and critical_note in portfolio
    assert account.count(f'class="{gauge}"') == 4  # the four health components


# -- the portfolio as an action queue ---------------------------------------------------------

ORDER = {"act_now": 0, "watch": 1, "ok": 2}


def _queue_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["account_id"] = [f"A-{i:03d}" for i in range(len(frame))]
    return frame


queue_rows = st.lists(
    st.fixed_dictionaries(
        {
            "priority": st.sampled_from(["act_now", "watch", "ok", None]),
            "revenue_at_risk": st.one_of(st.none(), st.floats(0, 1e6)),
            "churn_probability": st.one_of(st.none(), st.floats(0, 1)),
            "health_score": st.one_of(st.none(), st.integers(0, 100).map(float)),
            "service_score": st.one_of(st.none(), st.integers(0, 6).map(float)),
            "health_band": st.sampled_from(["healthy", "at_risk", "critical"]),
            "revenue_segment": st.sampled_from(["A", "B", "C", None]),
            "lifecycle_stage": st.sampled_from(["new", "established", "long_term"]),
            "name": st.one_of(st.none(), st.sampled_from(["Acme", "beta", "Gamma", "=SUM(1)"])),
            "account_manager": st.sampled_from(["Ann", "Bob"]),
        }
    ),
    min_size=1,
    max_size=30,
)


def _key(row: pd.Series) -> tuple:
    """The default order as a tuple to compare: priority, then revenue at risk (missing last)."""
    rank = ORDER.get(row["priority"], 3) if isinstance(row["priority"], str) else 3
    revenue = row["revenue_at_risk"]
    return (rank, 0 if pd.notna(revenue) else 1, -(revenue if pd.notna(revenue) else 0))


@settings(max_examples=60, deadline=None)
@given(queue_rows)
def test_the_default_order_is_priority_then_revenue_at_risk(rows):
    frame = _queue_frame(rows)
    ordered = queue.sort_frame(frame)
    assert sorted(ordered["account_id"]) == sorted(frame["account_id"])
    keys = [_key(r) for _, r in ordered.iterrows()]
    assert keys == sorted(keys)


@settings(max_examples=60, deadline=None)
@given(queue_rows, st.sampled_from(sorted(queue.SORTS)), st.sampled_from(["asc", "desc"]))
def test_every_sortable_column_sorts_both_ways_with_missing_values_last(rows, key, direction):
    frame = _queue_frame(rows)
    ordered = queue.sort_frame(frame, key, direction)
    assert len(ordered) == len(frame)
    column = {"client": None, "priority": "priority"}.get(key, queue.SORTS[key].column)
    if column is None:  # the name in lower case, else the id
        values = [
            (n if isinstance(n, str) else a).lower()
            for n, a in zip(ordered["name"], ordered["account_id"], strict=True)
        ]
    elif column == "priority":
        values = [ORDER[p] if isinstance(p, str) else None for p in ordered["priority"]]
        direction = "asc" if direction == "desc" else "desc"  # most urgent = lowest rank
    else:
        values = [None if pd.isna(v) else v for v in ordered[column]]
    present = [v for v in values if v is not None]
    assert values[: len(present)] == present  # missing values last
    assert present == sorted(present, reverse=direction == "desc")


@settings(max_examples=60, deadline=None)
@given(
    queue_rows,
    st.fixed_dictionaries(
        {},
        optional={
            "priority": st.sampled_from(["act_now", "watch", "ok"]),
            "band": st.sampled_from(["healthy", "at_risk", "critical"]),
            "segment": st.sampled_from(["A", "B", "C"]),
            "stage": st.sampled_from(["new", "established", "long_term"]),
            "service": st.sampled_from(sorted(SERVICE_LEVELS)),
            "manager": st.sampled_from(["Ann", "Bob"]),
            "q": st.sampled_from(["ac", "A-00", "gamma"]),
        },
    ),
)
def test_filters_keep_exactly_the_rows_that_match_every_one(rows, params):
    frame = _queue_frame(rows)
    kept = queue.filter_frame(frame, queue.QueueQuery.from_params(params))

    def matches(r: pd.Series) -> bool:
        checks = {
            "priority": lambda v: r["priority"] == v,
            "band": lambda v: r["health_band"] == v,
            "segment": lambda v: r["revenue_segment"] == v,
            "stage": lambda v: r["lifecycle_stage"] == v,
            "service": lambda v: (
                pd.notna(r["service_score"])
                and SERVICE_LEVELS[v].low <= r["service_score"] <= SERVICE_LEVELS[v].high
            ),
            "manager": lambda v: r["account_manager"] == v,
            "q": lambda v: (
                v.lower() in str(r["name"] or "").lower() or v.lower() in r["account_id"].lower()
            ),
        }
        return all(checks[k](v) for k, v in params.items())

    expected = [r["account_id"] for _, r in frame.iterrows() if matches(r)]
    assert list(kept["account_id"]) == expected


def test_the_escalation_filter_reads_the_escalations_of_the_date():
    frame = queue.with_escalations(
        _queue_frame([{"priority": "ok"}, {"priority": "ok"}, {"priority": "ok"}]),
        pd.DataFrame(
            {
                "account_id": ["A-000", "A-000", "A-002"],
                "code": ["esc_below_40", "esc_invoice", "esc_invoice"],
                "rule": ["health score below 40", "an invoice 30+ days late", "an invoice"],
                "severity": [1, 2, 2],
            }
        ),
    )

    def ids(value: str) -> list[str]:
        query = queue.QueueQuery.from_params({"escalation": value})
        return list(queue.filter_frame(frame, query)["account_id"])

    assert ids("any") == ["A-000", "A-002"]
    assert ids("none") == ["A-001"]
    assert ids("esc_invoice") == ["A-000", "A-002"]
    assert ids("esc_below_40") == ["A-000"]
    assert frame["escalations"].tolist()[0] == "health score below 40; an invoice 30+ days late"


def test_the_flag_filter_reads_the_flags_of_the_date():
    frame = queue.with_flags(
        _queue_frame([{"priority": "ok"}, {"priority": "ok"}, {"priority": "ok"}]),
        pd.DataFrame(
            {
                "account_id": ["A-000", "A-000", "A-002"],
                "code": ["stale_invoice", "quiet_risk", "rule_only_risk"],
            }
        ),
    )

    def ids(value: str) -> list[str]:
        query = queue.QueueQuery.from_params({"flag": value})
        return list(queue.filter_frame(frame, query)["account_id"])

    assert ids("any") == ["A-000", "A-002"]
    assert ids("none") == ["A-001"]
    assert ids("quiet_risk") == ["A-000"]
    assert ids("stale_invoice") == ["A-000"]
    assert ids("rule_only_risk") == ["A-002"]
    assert frame["flags"].tolist() == ["quiet_risk; stale_invoice", "", "rule_only_risk"]


def test_every_flag_has_a_marker_and_a_heading():
    for rule in FLAG_RULES:
        words = FLAG_WORDS[rule.code]
        assert words.marker and words.title and len(words.marker) <= 20


def test_a_header_click_sorts_by_its_column_then_flips_and_links_keep_the_filters():
    query = queue.QueueQuery.from_params({"segment": "A", "sort": "nonsense", "page": "3"})
    assert (query.sort, query.direction) == ("priority", "desc")  # unknown: the default
    assert query.url() == "/?segment=A"
    by_health = query.sorted_by("health")
    assert (by_health.sort, by_health.direction) == ("health", "asc")  # worst first
    flipped = by_health.sorted_by("health")
    assert flipped.direction == "desc"
    assert flipped.url(page=2) == "/?segment=A&sort=health&dir=desc&page=2"
    scoped = queue.QueueQuery.from_params({"manager": "Bob", "q": "x"}, scope="Ann")
    assert scoped.filters["manager"] == "Ann"
    assert scoped.url("/portfolio.csv") == "/portfolio.csv?q=x"  # the scope never shows


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1", "'+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("Acme", "Acme"),
        ("-12.5", "-12.5"),  # text that is a plain negative number stays a number
        (-0.25, -0.25),
        (None, ""),
        (float("nan"), ""),
    ],
)
def test_csv_cells_never_start_a_formula(value, cell):
    assert csv_cell(value) == cell


def test_the_movers_are_the_largest_changes_between_two_dates():
    latest = pd.DataFrame(
        {"account_id": ["a", "b", "c", "d"], "health_score": [50.0, 80.0, 70.0, 10.0]}
    )
    previous = pd.DataFrame({"account_id": ["a", "b", "c"], "health_score": [70.0, 75.0, 70.0]})
    moved = queue.movers(latest, previous, "health_score", n=5, minimum=0.5)
    assert [(m.account_id, m.change) for m in moved] == [("a", -20.0), ("b", 5.0)]


# -- the pages, over a store ------------------------------------------------------------------

LATEST, PREVIOUS = date(2025, 2, 1), date(2025, 1, 1)


def _portfolio_store(tmp_path: Path) -> tuple[TestClient, str, Store, str]:
    """Two scored months of 40 accounts; one manager's name starts a formula. Returns the
    client, an admin key, the store and a key of the manager Bob."""
    accounts = {
        f"A-{i:03d}": ("=Ann" if i % 3 == 0 else "Bob", float(20 + (i * 7) % 75), (i % 10) / 20)
        for i in range(40)
    }
    # A-003 lost 25 points since the previous month, every other account 0 or 5.
    earlier = {
        a: (m, h + (25 if a == "A-003" else 5 * (i % 2)), p)
        for i, (a, (m, h, p)) in enumerate(accounts.items())
    }
    settings = served_settings(tmp_path)
    store = Store(settings.store_url)
    store.write_batch(make_batch(PREVIOUS, earlier))
    store.write_batch(make_batch(LATEST, accounts))
    keys = KeyStore.from_settings(settings)
    token, bob = keys.add("admin")[1], keys.add("manager", "Bob")[1]
    client = TestClient(create_app(settings))
    return client, token, store, bob


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_the_csv_export_holds_exactly_the_filtered_rows_of_every_page(tmp_path):
    client, token, store, _ = _portfolio_store(tmp_path)
    with client:
        assert client.get("/portfolio.csv", follow_redirects=False).status_code == 303
        client.post("/login", data={"api_key": token}, follow_redirects=False)
        page = client.get("/", params={"band": "at_risk", "sort": "health", "dir": "asc"}).text
        link = re.search(r'id="csv-export" href="([^"]+)"', page)
        assert link is not None
        response = client.get(html.unescape(link.group(1)))
        everything = client.get("/portfolio.csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    disposition = response.headers["content-disposition"]
    assert disposition == 'attachment; filename="portfolio-2025-02-01-band-at_risk.csv"'
    expected = queue.sort_frame(
        store.portfolio(LATEST).query("health_band == 'at_risk'"), "health", "asc"
    )
    rows = _csv_rows(response.text)
    assert [r["account_id"] for r in rows] == expected["account_id"].tolist()
    assert len(rows) > 0 and {r["health_band"] for r in rows} == {"at_risk"}
    assert len(_csv_rows(everything.text)) == 40  # every page, not the first 25
    assert {r["account_manager"] for r in _csv_rows(everything.text)} == {"'=Ann", "Bob"}


def test_paging_keeps_the_filters_and_the_sort_and_headers_sort(tmp_path):
    client, token, store, _ = _portfolio_store(tmp_path)
    with client:
        client.post("/login", data={"api_key": token}, follow_redirects=False)
        first = client.get("/", params={"manager": "Bob", "sort": "probability"}).text
        next_url = html.unescape(re.search(r'href="([^"]+)">Next', first).group(1))
        second = client.get(next_url).text
        default = client.get("/").text
    assert next_url == "/?manager=Bob&sort=probability&dir=desc&page=2"
    bob = queue.sort_frame(store.portfolio(LATEST, manager="Bob"), "probability", "desc")
    shown = re.findall(r'<tr data-account-id="([^"]+)"', first) + re.findall(
        r'<tr data-account-id="([^"]+)"', second
    )
    assert shown == bob["account_id"].tolist()
    assert 'aria-sort="descending"' in first
    assert 'href="/?manager=Bob&amp;sort=probability&amp;dir=asc"' in first  # click flips
    ids = re.findall(r'<tr data-account-id="([^"]+)"', default)
    assert ids == queue.sort_frame(store.portfolio(LATEST))["account_id"].head(25).tolist()
    stored = store.portfolio(LATEST).assign(rank=lambda f: f["priority"].map(ORDER))
    most_urgent = stored.sort_values(["rank", "revenue_at_risk"], ascending=[True, False])
    assert ids[0] == most_urgent["account_id"].iloc[0]
    assert stored["priority"].nunique() == 3  # the data has every priority
    shown = re.findall(r'data-priority="([^"]+)"', default)
    assert shown == sorted(shown, key=ORDER.get)  # act now, then watch, then ok
    assert 'id="movers"' in default
    health_movers = re.search(r'id="movers-health">(.*?)</ul>', default, re.S)
    assert health_movers is not None
    assert re.findall(r'data-account-id="([^"]+)"', health_movers.group(1))[0] == "A-003"


def _kpis(page: str) -> dict[str, str]:
    return dict(re.findall(r'data-kpi="(\w+)">([^<]*)<', page))


def test_the_tiles_count_the_whole_portfolio_by_priority_and_by_health_band(tmp_path):
    client, token, store, bob = _portfolio_store(tmp_path)
    with client:
        client.post("/login", data={"api_key": token}, follow_redirects=False)
        page = client.get("/").text
        filtered = client.get("/", params={"segment": "C", "priority": "ok"}).text
        client.post("/logout")
        client.post("/login", data={"api_key": bob}, follow_redirects=False)
        own = client.get("/").text
    stored = store.portfolio(LATEST)
    for shown, scores in ((page, stored), (own, stored[stored["account_manager"] == "Bob"])):
        kpis = _kpis(shown)
        assert kpis["accounts"] == str(len(scores))
        for p in ORDER:
            assert kpis[f"priority_{p}"] == str((scores["priority"] == p).sum()), p
        for band in ("healthy", "at_risk", "critical"):
            assert kpis[band] == str((scores["health_band"] == band).sum()), band
        total = sum(int(kpis[f"priority_{p}"]) for p in ORDER)
        assert total == int(kpis["accounts"])
    # The filters narrow the list, not the tiles (the viewer's whole portfolio).
    assert _kpis(filtered) == _kpis(page)
    assert "the filters apply to the list" in filtered
    act_now = re.search(r'<a href="([^"]+)"[^>]*>Act now</a>', page)
    assert act_now is not None and act_now.group(1) == "/?priority=act_now"


def test_a_service_score_of_zero_is_shown_as_the_worst_worry():
    assert service_worry(0).css == "critical"
    assert service_worry(3).css == "at_risk" and "worry" in service_worry(3).note
    assert service_worry(6).css == "" and service_worry(None).css == ""
    assert "worst" in service_worry(0.0).note


def test_a_managers_csv_holds_only_their_accounts_and_odd_queries_are_no_error(tmp_path):
    client, _, store, token = _portfolio_store(tmp_path)
    with client:
        client.post("/login", data={"api_key": token}, follow_redirects=False)
        own = client.get("/portfolio.csv", params={"manager": "=Ann"})
        odd = client.get(
            "/",
            params={"sort": "<script>", "dir": "sideways", "priority": "\x00", "page": "0"},
        )
        clipped = client.get("/", params={"q": "x" * 5000, "service": "7-9"})
    rows = _csv_rows(own.text)
    assert own.status_code == 200
    assert {r["account_manager"] for r in rows} == {"Bob"}
    assert len(rows) == len(store.portfolio(LATEST, manager="Bob"))
    assert "=Ann" not in own.headers["content-disposition"]
    assert odd.status_code == 200 and "No accounts match these filters." in odd.text
    assert "<script>" not in odd.text
    assert clipped.status_code == 200


# -- flags said out loud ------------------------------------------------------------------------

STALE_TEXT = "Invoice INV-9 (1,200) unpaid for 500 days past due: check the billing data."


def _flagged_store(tmp_path: Path) -> tuple[TestClient, str]:
    """A-1 healthy at 40 % (quiet risk) with a stale invoice, B-1 critical at 2 % (rule-only
    risk), C-1 with nothing to say."""
    settings = served_settings(tmp_path)
    batch = make_batch(
        LATEST, {"A-1": ("Ann", 70.0, 0.40), "B-1": ("Bob", 35.0, 0.02), "C-1": ("Ann", 80.0, 0.01)}
    )
    stale = {"code": "stale_invoice", "text": STALE_TEXT, "model_reasons": [], "rule_reasons": []}
    batch.flags = pd.concat([batch.flags, flags_frame(["A-1"], [[stale]])], ignore_index=True)
    Store(settings.store_url).write_batch(batch)
    token = KeyStore.from_settings(settings).add("admin")[1]
    return TestClient(create_app(settings)), token


def _box(page: str, code: str) -> str:
    start = f'<div class="flag-box {code}" data-flag="{code}">'
    found = re.search(rf"{start}(.*?)\n  </div>", page, re.S)
    assert found is not None, code
    return found.group(1)


def test_the_account_page_says_each_flag_with_both_sides_of_a_disagreement(tmp_path):
    client, token = _flagged_store(tmp_path)
    with client:
        client.post("/login", data={"api_key": token}, follow_redirects=False)
        a1 = client.get("/accounts/A-1").text
        b1 = client.get("/accounts/B-1").text
        c1 = client.get("/accounts/C-1").text
    # Near the top: before the score tiles.
    assert a1.index('id="flags"') < a1.index('aria-label="Scores"')
    assert re.findall(r'class="flag-box (\w+)"', a1) == ["quiet_risk", "stale_invoice"]
    quiet = _box(a1, "quiet_risk")
    assert "The model sees a risk the health rules do not" in quiet
    assert "40%" in quiet  # the flag's own sentence
    model = quiet.index("What the model sees")
    rules = quiet.index("What the health rules see")
    assert model < quiet.index("days_since_last_contact is 74") < rules
    assert rules < quiet.index("Engagement 21 of 30 points")
    stale = _box(a1, "stale_invoice")
    assert "Check the billing data" in stale and html.escape(STALE_TEXT) in stale
    assert "What the model sees" not in stale  # a data-quality flag has no sides
    only = _box(b1, "rule_only_risk")
    assert "The health rules see a risk the model does not" in only
    assert "What the health rules see" in only and "Engagement 10.5 of 30 points" in only
    assert 'id="flags"' not in c1


def test_the_portfolio_marks_flags_filters_by_them_and_exports_them(tmp_path):
    client, token = _flagged_store(tmp_path)
    with client:
        client.post("/login", data={"api_key": token}, follow_redirects=False)
        page = client.get("/").text
        rule_only = client.get("/", params={"flag": "rule_only_risk"}).text
        exported = _csv_rows(client.get("/portfolio.csv").text)
        flagged = _csv_rows(client.get("/portfolio.csv", params={"flag": "any"}).text)
    rows = dict(re.findall(r'<tr data-account-id="([^"]+)">(.*?)</tr>', page, re.S))
    assert re.findall(r'data-flag="(\w+)">([^<]+)<', rows["A-1"]) == [
        ("quiet_risk", "Model sees risk"),
        ("stale_invoice", "Check billing data"),
    ]
    assert re.findall(r'data-flag="(\w+)">([^<]+)<', rows["B-1"]) == [
        ("rule_only_risk", "Rules see risk")
    ]
    assert "data-flag" not in rows["C-1"]
    for value, label in (("any", "Any flag"), ("quiet_risk", "Model sees risk")):
        assert f'<option value="{value}" >{label}</option>' in page
    assert re.findall(r'<tr data-account-id="([^"]+)"', rule_only) == ["B-1"]
    assert {r["account_id"]: r["flags"] for r in exported} == {
        "A-1": "quiet_risk; stale_invoice",
        "B-1": "rule_only_risk",
        "C-1": "",
    }
    assert sorted(r["account_id"] for r in flagged) == ["A-1", "B-1"]
