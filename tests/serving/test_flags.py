"""Flags: where the model and the health rules disagree, each with the reasons of both sides
(docs/metrics.md#flags)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from churn.bundle import OperatingPoints
from features.catalog import FEATURES
from features.health import HEALTH_BANDS, load_health_config, score_health_records
from serving.flags import (
    FLAG_RULES,
    FlagContext,
    FlagRule,
    decode_flags,
    flag_rows,
    flags_frame,
    rule_reasons,
)

POINTS = OperatingPoints(act_now=0.30, watch=0.10, source="validation")


def _flags(p, band, score=None, rules=FLAG_RULES):
    score = [70.0] * len(p) if score is None else score
    columns = {"churn_probability": p, "health_band": band, "health_score": score}
    ctx = FlagContext({k: list(v) for k, v in columns.items()}, POINTS, len(p))
    return flag_rows(
        ctx,
        lambda i: [f"model reason of row {i}"],
        lambda i: [f"rule reason of row {i}"],
        rules,
    )


def test_quiet_risk_and_rule_only_risk_fire_where_the_two_sides_disagree():
    p = [0.45, 0.12, 0.09, 0.05, 0.05, 0.50, None, None]
    band = [
        "healthy",
        "healthy",
        "healthy",
        "at_risk",
        "critical",
        "critical",
        "healthy",
        "critical",
    ]
    score = [72.0, 65.0, 80.0, 48.0, 31.0, 20.0, 90.0, 10.0]
    got = _flags(p, band, score)
    codes = [[f["code"] for f in row] for row in got]
    assert codes == [
        ["quiet_risk"],  # model at act_now, rules healthy
        ["quiet_risk"],  # model at watch, rules healthy
        [],  # model below watch, rules healthy: agree
        ["rule_only_risk"],  # rules at risk, model below watch
        ["rule_only_risk"],  # rules critical, model below watch
        [],  # both high: agree
        [],  # no probability: nothing to disagree with
        [],
    ]
    quiet = got[0][0]
    assert quiet["text"] == (
        "The model gives a 45% churn probability, at or above its act now point (30%), while "
        "the health score is 72 (Healthy): the model sees a risk the health rules do not."
    )
    assert "at or above its watch point (10%)" in got[1][0]["text"]
    assert got[3][0]["text"] == (
        "The health score is 48 (At risk) while the model gives a 5.0% churn probability, "
        "below its watch point (10%): the health rules see a risk the model does not."
    )
    for row, flags in enumerate(got):
        for flag in flags:
            assert flag["model_reasons"] == [f"model reason of row {row}"]
            assert flag["rule_reasons"] == [f"rule reason of row {row}"]


@given(
    p=st.floats(0, 1),
    band=st.sampled_from(HEALTH_BANDS),
)
def test_at_most_one_side_is_flagged_and_only_when_they_disagree(p, band):
    (flags,) = _flags([p], [band])
    codes = {f["code"] for f in flags}
    model_high = p >= POINTS.watch
    rules_high = band != "healthy"
    assert codes == (
        set() if model_high == rules_high else {"quiet_risk"} if model_high else {"rule_only_risk"}
    )


def test_another_flag_is_one_more_rule_and_reads_its_own_columns():
    extra = FlagRule(
        "long_silence",
        ("silent_days",),
        lambda ctx: ctx.floats("silent_days") >= 365,
        lambda row, points: f"No word for {row['silent_days']:g} days",
        reasons=False,
    )
    columns = {
        "churn_probability": [0.5, 0.01],
        "health_band": ["healthy", "healthy"],
        "health_score": [70.0, 80.0],
        "silent_days": [400, None],
    }
    ctx = FlagContext(columns, POINTS, 2)
    asked = []
    got = flag_rows(ctx, lambda i: asked.append(i) or ["m"], lambda i: ["r"], (*FLAG_RULES, extra))
    assert [[f["code"] for f in row] for row in got] == [["quiet_risk", "long_silence"], []]
    assert got[0][1] == {
        "code": "long_silence",
        "text": "No word for 400 days",
        "model_reasons": [],
        "rule_reasons": [],
    }
    assert asked == [0]  # reasons are looked up only for flagged rows, once


def test_rule_reasons_name_the_components_losing_most_and_their_known_costly_sub_rules():
    cfg = load_health_config()
    features = {
        "single_threaded": 1,
        "key_contact_departed_90d": 1,
        "client_contacts_active": 1,
        "firm_contacts_active": 3,
        "most_senior_client_level": 3,
        "strategic_share": 0.6,
        "days_since_last_contact": 95,
        "interactions_90d": 0,
        "meetings_180d": 0,
        "business_review_6m": 0,
        "revenue_segment": "B",
        # financial and satisfaction unknown: half points, never named
    }
    health = score_health_records([features], cfg)[0]
    reasons = rule_reasons(features, health, cfg)

    def said(feature: str) -> str:
        return FEATURES[feature].sentence(float(features[feature]))

    assert reasons == [
        f"Engagement 0 of 30 points: {said('interactions_90d')} (0 of 10); "
        f"{said('days_since_last_contact')} (0 of 10); {said('meetings_180d')} (0 of 6)",
        "Financial health 12.5 of 25 points",  # lost 12.5, all on unknown values: none named
    ]
    relationship = rule_reasons(features, {**health, "health_engagement": 30.0}, cfg)[1]
    assert relationship == (
        f"Relationship depth 14 of 25 points: {said('client_contacts_active')} (0 of 7); "
        f"{said('single_threaded')} (0 of 2); {said('key_contact_departed_90d')} (0 of 2)"
    )
    full = {f"health_{name}": c.max_points for name, c in cfg.components.items()}
    assert rule_reasons(features, full, cfg) == []


def test_flags_round_trip_through_the_store_frame():
    flags = [
        [{"code": "quiet_risk", "text": "t", "model_reasons": ["a", "b"], "rule_reasons": []}],
        [],
    ]
    frame = flags_frame(["A-1", "A-2"], flags)
    assert frame["account_id"].tolist() == ["A-1"]
    assert json.loads(frame["model_reasons"].iloc[0]) == ["a", "b"]
    assert decode_flags(frame) == flags[0]
    assert flags_frame(["A-1"], [[]]).empty


def test_scored_accounts_carry_flags_from_the_bundles_operating_points(tmp_path):
    from serving.model_holder import load_model
    from serving.scoring import AccountInput, load_rules, score_accounts
    from tests.support.bundle_factory import make_bundle

    quiet = AccountInput(
        "A-1",
        {"days_since_last_contact": 3.0, "meetings_180d": 4.0, "interactions_90d": 9.0},
    )
    rules = load_rules()
    # watch at 0: any probability is at least watch, so a healthy account is a quiet risk.
    low = {"act_now": 0.0, "watch": 0.0}
    (scored,) = score_accounts(
        [quiet], load_model(make_bundle(tmp_path / "l", "l", operating_points=low)), rules
    )
    assert scored["health_band"] == "healthy"
    (flag,) = scored["flags"]
    assert flag["code"] == "quiet_risk"
    rising = [
        r["sentence"] for r in scored["reasons"] if r["impact_pts"] > 0 and r["value"] is not None
    ]
    assert flag["model_reasons"] == rising[:3]
    # watch at 1: no probability reaches it, so an at-risk account is a rule-only risk.
    high = {"act_now": 1.0, "watch": 1.0}
    risky = AccountInput(
        "A-2",
        {
            "days_since_last_contact": 120.0,
            "meetings_180d": 0.0,
            "single_threaded": 1.0,
            "overdue_days": 10.0,
        },
    )
    (scored,) = score_accounts(
        [risky], load_model(make_bundle(tmp_path / "h", "h", operating_points=high)), rules
    )
    assert scored["health_band"] in ("at_risk", "critical")
    (flag,) = scored["flags"]
    assert flag["code"] == "rule_only_risk" and flag["rule_reasons"]
    assert flag["rule_reasons"][0].startswith("Engagement ")
    # Without a model nothing disagrees.
    (scored,) = score_accounts([risky], None, rules)
    assert scored["flags"] == []


def test_a_stale_invoice_is_a_data_quality_flag_from_the_count_or_the_oldest_invoice():
    columns = {
        "churn_probability": [0.01, 0.01, 0.01, 0.01, 0.01],
        "health_band": ["healthy"] * 5,
        "health_score": [80.0] * 5,
        # the batch's snapshot: a count of stale invoices and the oldest of them
        "stale_invoices": [2, 0, None, None, None],
        "stale_invoice_id": ["INV-7", None, None, None, None],
        "stale_invoice_amount": [4200.0, None, None, None, None],
        "stale_invoice_days_late": [658, None, None, None, None],
        # a request: only the oldest unpaid invoice's days past due
        "overdue_days": [700, 700, 365, 364, None],
    }
    got = flag_rows(
        FlagContext(columns, POINTS, 5, stale_days=365), lambda i: ["m"], lambda i: ["r"]
    )
    codes = [[f["code"] for f in row] for row in got]
    # the count decides where known (row 1: 700 days overdue, but the count says none)
    assert codes == [["stale_invoice"], [], ["stale_invoice"], [], []]
    flag = got[0][0]
    assert flag["text"].startswith("Invoice INV-7 (4,200) and 1 more unpaid for 658 days")
    assert "check the billing data" in flag["text"]
    assert flag["model_reasons"] == [] and flag["rule_reasons"] == []
    assert got[2][0]["text"].startswith("An invoice unpaid for 365 days")
