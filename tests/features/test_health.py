"""Health score, bands, escalations and client service score (docs/domain.md#health-score)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from churn.errors import ConfigError
from features.catalog import CATEGORY_FEATURES, MODEL_FEATURES
from features.health import (
    DEFAULT_HEALTH_CONFIG,
    ESCALATION_CODES,
    HEALTH_COLUMNS,
    SERVICE_PARTS,
    HealthConfig,
    escalations,
    fired_escalations,
    load_health_config,
    score_health,
    score_health_records,
)

# The numeric snapshot features (the interface the feature engine fills) and the categories.
SNAPSHOT_FEATURES: tuple[str, ...] = tuple(MODEL_FEATURES)
CATEGORIES: tuple[str, ...] = tuple(CATEGORY_FEATURES)

MAXIMA = {
    "health_engagement": 30,
    "health_relationship": 25,
    "health_financial": 25,
    "health_satisfaction": 20,
}


@pytest.fixture(scope="module")
def cfg() -> HealthConfig:
    return load_health_config()


def one(cfg: HealthConfig, **features: Any) -> dict[str, Any]:
    """Score one hand-built account and return its row as a dict."""
    return score_health(pd.DataFrame([features]), cfg).iloc[0].to_dict()


def write_config(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "health.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def shipped() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_HEALTH_CONFIG.read_text())


# ---------------------------------------------------------------------------- service score


def test_service_score_worked_examples_from_the_issue(cfg):
    weak = one(
        cfg,
        client_contacts_active=1,
        firm_contacts_active=1,
        meetings_180d=0,
        most_senior_client_level=3,
        last_survey_score=8,
    )
    assert weak["service_score"] == 2
    assert weak["service_seniority"] == 2 and weak["service_survey"] == 0

    strong = one(
        cfg,
        client_contacts_active=2,
        firm_contacts_active=2,
        meetings_180d=3,
        most_senior_client_level=2,
        last_survey_score=9,
    )
    assert strong["service_score"] == 6
    assert [strong[p] for p in ("service_client_contacts", "service_firm_contacts")] == [1, 1]


def test_service_score_seniority_levels_and_missing_data_count_zero(cfg):
    levels = [one(cfg, most_senior_client_level=lvl)["service_seniority"] for lvl in (0, 1, 2, 3)]
    assert levels == [0, 1, 2, 2]
    assert one(cfg)["service_score"] == 0
    assert one(cfg, meetings_180d=2)["service_meetings"] == 1
    assert one(cfg, meetings_180d=1)["service_meetings"] == 0


# ----------------------------------------------------------------------------- health score

feature_value = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.none(),
)
segment_value = st.sampled_from(["A", "B", "C", "Z", None])
# One to six accounts with any values of every snapshot feature.
account_rows = st.lists(
    st.fixed_dictionaries(
        {name: feature_value for name in SNAPSHOT_FEATURES} | {"revenue_segment": segment_value}
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(rows=account_rows)
def test_scores_stay_in_bounds_and_add_up_for_any_feature_values(cfg, rows):
    frame = pd.DataFrame(rows, index=[f"r{i}" for i in range(len(rows))])
    out = score_health(frame, cfg)

    assert list(out.index) == list(frame.index)
    assert list(out.columns) == list(HEALTH_COLUMNS)
    for col, top in MAXIMA.items():
        assert out[col].between(0, top).all(), col
    assert out["health_score"].between(0, 100).all()
    parts = out[list(MAXIMA)].sum(axis=1)
    assert np.allclose(out["health_score"], parts, atol=1e-9)
    assert out["service_score"].between(0, 6).all()
    assert (out[list(SERVICE_PARTS)].sum(axis=1) == out["service_score"]).all()

    # The pandas-free path gives the same answer.
    records = score_health_records(rows, cfg)
    assert [r["health_score"] for r in records] == out["health_score"].tolist()
    assert [r["health_band"] for r in records] == out["health_band"].tolist()
    assert [r["service_score"] for r in records] == out["service_score"].tolist()


def test_healthy_looking_account_scores_high(cfg):
    row = one(
        cfg,
        revenue_segment="A",
        interactions_90d=14,
        days_since_last_contact=4,
        meetings_180d=5,
        business_review_6m=1.0,
        client_contacts_active=5,
        firm_contacts_active=3,
        most_senior_client_level=3,
        single_threaded=0.0,
        key_contact_departed_90d=0.0,
        avg_days_late_365d=0,
        overdue_days=0,
        last_survey_score=9,
        complaints_90d=0,
        open_high_severity_tickets=0,
    )
    assert row["health_score"] >= 75
    assert row["health_band"] == "healthy"


def test_neglected_account_scores_critical(cfg):
    row = one(
        cfg,
        revenue_segment="B",
        interactions_90d=0,
        meetings_180d=0,
        days_since_last_contact=120,
        silent_60d=1.0,
        client_contacts_active=1,
        single_threaded=1.0,
        most_senior_client_level=0,
        overdue_days=45,
        overdue_30d=1.0,
        complaints_90d=2,
        last_survey_score=4,
    )
    assert row["health_score"] < 40
    assert row["health_band"] == "critical"


def test_missing_source_is_neutral_not_punished(cfg):
    # Nothing known: every sub-rule earns its neutral half.
    blank = one(cfg)
    assert blank["health_score"] == 50.0
    assert blank["health_satisfaction"] == 10.0
    # No survey or ticket source: satisfaction is neutral whatever the rest says.
    no_surveys = one(cfg, days_since_last_contact=3, overdue_days=0)
    assert no_surveys["health_satisfaction"] == 10.0
    # An absent column and a NaN column score the same.
    with_nan = one(cfg, days_since_last_contact=3, overdue_days=0, last_survey_score=math.nan)
    assert with_nan == no_surveys


def test_interaction_frequency_is_judged_against_the_segment_cadence(cfg):
    # Three interactions a quarter are plenty for a C client and thin for an A client.
    scores = {
        seg: one(cfg, interactions_90d=3, revenue_segment=seg)["health_engagement"]
        for seg in ("A", "B", "C")
    }
    assert scores["A"] < scores["B"] == scores["C"]
    frame = pd.DataFrame(
        {"interactions_90d": [3.0, 3.0], "revenue_segment": pd.Categorical(["C", None])}
    )
    out = score_health(frame, cfg)
    assert (
        out["health_engagement"].iloc[1]
        == one(cfg, interactions_90d=3, revenue_segment="B")["health_engagement"]
    )


def test_falling_signals_lower_the_score(cfg):
    base = {"days_since_last_contact": 10, "overdue_days": 0, "last_survey_score": 9}
    good = one(cfg, **base)["health_score"]
    assert one(cfg, **(base | {"days_since_last_contact": 70}))["health_score"] < good
    assert one(cfg, **(base | {"overdue_days": 40}))["health_score"] < good
    assert one(cfg, **(base | {"last_survey_score": 5}))["health_score"] < good


def component(feature: str, points: float, steps: list[list[float]]) -> dict[str, Any]:
    rule = {"name": feature, "feature": feature, "points": points, "steps": steps}
    return {"max_points": points, "rules": [rule]}


def dial_config() -> dict[str, Any]:
    """A config whose score can be set exactly: engagement by `dial`, the rest by flags."""
    data = shipped()
    dial_steps = [[0, 0], [1, 9.9], [2, 10], [3, 19.9], [4, 20], [5, 30]]
    data["components"] = {
        "engagement": component("dial", 30, dial_steps),
        "relationship": component("rel", 25, [[0, 0], [1, 25]]),
        "financial": component("fin", 25, [[0, 0], [1, 25]]),
        "satisfaction": component("sat", 20, [[0, 0], [1, 20]]),
    }
    return data


@pytest.mark.parametrize(
    ("features", "score", "band"),
    [
        ({"dial": 3, "sat": 1}, 39.9, "critical"),
        ({"dial": 4, "sat": 1}, 40.0, "at_risk"),
        ({"dial": 1, "rel": 1, "fin": 1}, 59.9, "at_risk"),
        ({"dial": 2, "rel": 1, "fin": 1}, 60.0, "healthy"),
        ({"dial": 5, "rel": 1, "fin": 1, "sat": 1}, 100.0, "healthy"),
        ({"dial": 0, "rel": 0, "fin": 0, "sat": 0}, 0.0, "critical"),
    ],
)
def test_bands_at_their_boundaries(tmp_path, features, score, band):
    cfg = load_health_config(write_config(tmp_path, dial_config()))
    frame = pd.DataFrame([{"dial": 0, "rel": 0, "fin": 0, "sat": 0} | features])
    row = score_health(frame, cfg).iloc[0]
    assert row["health_score"] == pytest.approx(score)
    assert row["health_band"] == band


# ------------------------------------------------------------------------------ escalations


def escalate(cfg: HealthConfig, now: float, ago: float = math.nan, overdue: float = 0) -> dict:
    out = escalations(pd.Series([now]), pd.Series([ago]), pd.Series([overdue]), cfg)
    return out.iloc[0].to_dict()


@pytest.mark.parametrize(
    ("case", "fires", "near_miss"),
    [
        ("esc_health_drop", {"now": 70.0, "ago": 85.0}, {"now": 70.1, "ago": 85.0}),
        ("esc_health_drop", {"now": 60.1, "ago": 75.1}, {"now": 60.2, "ago": 75.1}),
        ("esc_below_60", {"now": 59.9}, {"now": 60.0}),
        ("esc_below_40", {"now": 39.9}, {"now": 40.0}),
        ("esc_invoice_30d_late", {"now": 80.0, "overdue": 30}, {"now": 80.0, "overdue": 29}),
    ],
)
def test_each_escalation_fires_and_its_near_miss_does_not(cfg, case, fires, near_miss):
    assert escalate(cfg, **fires)[case] is True
    assert escalate(cfg, **near_miss)[case] is False


def test_escalations_frame_shape_and_missing_history(cfg):
    idx = pd.Index(["a", "b", "c"])
    out = escalations(
        pd.Series([30.0, 70.0, math.nan], index=idx),
        pd.Series([math.nan, 90.0, 80.0], index=idx),
        pd.Series([0, math.nan, 45], index=idx),
        cfg,
    )
    assert list(out.index) == list(idx)
    assert list(out.columns) == [
        "health_drop_30d", "esc_health_drop", "esc_below_60", "esc_below_40",
        "esc_invoice_30d_late",
    ]  # fmt: skip
    assert math.isnan(out.loc["a", "health_drop_30d"]) and out.loc["b", "health_drop_30d"] == 20
    assert out.loc["a", ["esc_below_60", "esc_below_40", "esc_health_drop"]].tolist() == [
        True, True, False,
    ]  # fmt: skip
    # No current score: no health rule fires, the invoice rule still does.
    assert out.loc["c"].drop("health_drop_30d").tolist() == [False, False, False, True]
    assert out[list(ESCALATION_CODES)].dtypes.eq(bool).all()


def test_escalation_words_come_from_the_domain_rules():
    from features.health import ESCALATIONS

    by_code = {e.code: e for e in ESCALATIONS}
    assert [e.code for e in ESCALATIONS] == list(ESCALATION_CODES)
    assert by_code["esc_health_drop"].action == "account manager reaches out"
    assert by_code["esc_below_60"].action == "account review meeting within one week"
    assert by_code["esc_below_40"].action == "partner involvement and an intervention plan"
    assert by_code["esc_invoice_30d_late"].action == "executive outreach and a relationship audit"
    assert "15+" in by_code["esc_health_drop"].rule
    assert "a month earlier" in by_code["esc_health_drop"].rule


def test_fired_escalations_reads_flags_or_evaluates_the_record(cfg):
    flags = {"esc_health_drop": True, "esc_below_60": np.True_, "esc_below_40": False}
    flags |= {"esc_invoice_30d_late": math.nan}
    assert fired_escalations(flags) == ["esc_below_60", "esc_health_drop"]
    record = {"health_score": 35.0, "health_score_30d_ago": 55.0, "overdue_days": 31}
    assert fired_escalations(record, cfg) == list(ESCALATION_CODES)
    assert fired_escalations({"health_score": 35.0, "health_drop_30d": 14.0}) == [
        "esc_below_40",
        "esc_below_60",
    ]
    assert fired_escalations({}) == []


# --------------------------------------------------------------------------- configuration


def test_shipped_config_reads_only_agreed_snapshot_features():
    cfg = load_health_config(known_features=SNAPSHOT_FEATURES + CATEGORIES)
    assert cfg.version >= 1
    assert set(cfg.features()) <= set(SNAPSHOT_FEATURES + CATEGORIES)


def test_config_error_when_sub_rule_points_do_not_add_up(tmp_path):
    data = shipped()
    data["components"]["engagement"]["rules"][0]["points"] = 8
    data["components"]["engagement"]["rules"][0]["steps"][-1][1] = 8
    with pytest.raises(ConfigError, match=r"components\.engagement.*add up to 28"):
        load_health_config(write_config(tmp_path, data))


def test_config_error_when_the_component_maxima_do_not_add_up_to_100(tmp_path):
    data = shipped()
    data["components"]["satisfaction"]["max_points"] = 25
    data["components"]["satisfaction"]["rules"][0]["points"] = 15
    data["components"]["satisfaction"]["rules"][0]["steps"][-1][1] = 15
    with pytest.raises(ConfigError, match="component max_points add up to 105 .* add up to 100"):
        load_health_config(write_config(tmp_path, data))


def test_another_split_of_the_100_points_over_the_components_loads(tmp_path):
    data = shipped()
    # satisfaction 20 -> 25 and engagement 30 -> 25: still 100 in all
    data["components"]["satisfaction"]["max_points"] = 25
    data["components"]["satisfaction"]["rules"][0]["points"] = 15
    data["components"]["satisfaction"]["rules"][0]["steps"][-1][1] = 15
    data["components"]["engagement"]["max_points"] = 25
    data["components"]["engagement"]["rules"][0]["points"] = 5
    data["components"]["engagement"]["rules"][0]["steps"] = [[0, 0], [0.5, 3], [1.0, 5]]
    cfg = load_health_config(write_config(tmp_path, data))
    assert cfg.components.maxima() == {
        "engagement": 25.0,
        "relationship": 25.0,
        "financial": 25.0,
        "satisfaction": 25.0,
    }


def test_config_error_names_an_unknown_key(tmp_path):
    data = shipped()
    data["components"]["financial"]["rules"][1]["weight"] = 2
    with pytest.raises(ConfigError) as err:
        load_health_config(write_config(tmp_path, data))
    assert "components.financial.rules.1.weight: unknown key" in str(err.value)
    assert str(tmp_path / "health.yaml") in str(err.value)
    assert err.value.hint


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("version"), "version: Field required"),
        (
            lambda d: d["components"]["engagement"]["rules"][1].update(steps=[[10, 10], [5, 0]]),
            "sub-rule recency: step thresholds must strictly increase",
        ),
        (
            lambda d: d["components"]["engagement"]["rules"][1].update(steps=[[0, 5], [5, 0]]),
            "sub-rule recency: no step awards its 10 points",
        ),
        (lambda d: d["cadence"]["expected"].pop("C"), "cadence.expected lacks segments"),
        (lambda d: d["escalations"].pop("esc_below_40"), "escalations.esc_below_40"),
        (lambda d: d["bands"].update(at_risk=70), "bands need"),
    ],
)
def test_config_errors_name_the_problem(tmp_path, mutate, message):
    data = shipped()
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        load_health_config(write_config(tmp_path, data))


def test_config_error_for_unknown_feature_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"rules\.0\.feature: unknown feature 'interactions_90d'"):
        load_health_config(known_features=["days_since_last_contact"])
    with pytest.raises(ConfigError, match="cannot read health config"):
        load_health_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ncomponents: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_health_config(bad)


# ------------------------------------------------------------------------- the reserve


def test_the_shipped_reserve_reads_the_clients_own_normal(cfg):
    """Every component has reserve sub-rules, each on a feature measured against the client's
    own normal."""
    from features.catalog import FEATURES

    for name, component in cfg.components.items():
        assert component.reserve, name
        for rule in component.reserve:
            assert FEATURES[rule.feature].basis == "baseline", rule.name


@settings(max_examples=40, deadline=None)
@given(rows=account_rows)
def test_the_reserve_changes_no_score(cfg, rows):
    """The same rules without their reserve give every account the same scores, bands,
    escalations and service score: reserve sub-rules award nothing."""
    data = cfg.model_dump(mode="python")
    for component in data["components"].values():
        component["reserve"] = []
    bare = HealthConfig.model_validate(data)
    frame = pd.DataFrame(rows, index=[f"r{i}" for i in range(len(rows))])
    pd.testing.assert_frame_equal(score_health(frame, cfg), score_health(frame, bare))


def test_a_reserve_sub_rule_is_checked_like_a_sub_rule(tmp_path):
    """A reserve entry is validated as a sub-rule, may not repeat a sub-rule's name, and an
    unknown feature names its place in the file."""
    data = shipped()
    data["components"]["engagement"]["reserve"][0].update(steps=[[0, 1]])
    with pytest.raises(ConfigError, match="no step awards its 4 points"):
        load_health_config(write_config(tmp_path, data))

    data = shipped()
    data["components"]["engagement"]["reserve"][0]["name"] = "recency"
    with pytest.raises(ConfigError, match="sub-rule names repeat"):
        load_health_config(write_config(tmp_path, data))

    data = shipped()
    data["components"]["financial"]["reserve"][1]["feature"] = "spend_vs_usal"
    with pytest.raises(
        ConfigError, match=r"components\.financial\.reserve\.1\.feature: unknown feature"
    ):
        load_health_config(write_config(tmp_path, data), known_features=MODEL_FEATURES)
