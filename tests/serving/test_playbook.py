"""The retention playbook: drivers and escalations to concrete, ordered next steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from churn.errors import ConfigError
from features.catalog import MODEL_FEATURES
from features.health import ESCALATION_CODES
from serving.playbook import DEFAULT_PLAYBOOK, Action, Playbook, load_playbook, recommend


@pytest.fixture(scope="module")
def playbook() -> Playbook:
    return load_playbook(known_features=MODEL_FEATURES)


def only(playbook: Playbook, feature: str, **kw: Any) -> Action:
    actions = recommend(playbook, [(feature, 0.12)], [], **kw)
    assert len(actions) == 1, actions
    return actions[0]


@pytest.mark.parametrize(
    ("features", "action_id", "words", "due"),
    [
        # silence
        (
            ["days_since_last_contact", "silent_60d", "interaction_trend", "meetings_90d"],
            "checkin_call",
            "check-in call",
            "this week",
        ),
        # single-threaded
        (
            ["single_threaded", "client_contacts_active", "firm_contacts_active"],
            "multi_thread",
            "second team member and an executive sponsor",
            "within two weeks",
        ),
        # overdue invoice
        (["overdue_30d", "overdue_days"], "executive_outreach", "relationship audit", "this week"),
        # falling survey or complaints
        (
            [
                "last_survey_score",
                "survey_score_change",
                "complaints_90d",
                "open_high_severity_tickets",
            ],
            "service_recovery",
            "weekly follow-up",
            "this week",
        ),
        # competitor mentions or shrinking scope
        (
            [
                "competitor_mentions_90d",
                "project_scope_trend",
                "strategic_share",
                "discount_share_365d",
            ],
            "value_review",
            "ROI evidence",
            "within two weeks",
        ),
        # new sponsor executive
        (
            ["new_executive_90d", "key_contact_departed_90d"],
            "new_decision_maker",
            "new decision maker",
            "within two weeks",
        ),
        # renewal near with flat spend
        (
            ["renewal_flat_spend", "days_to_renewal", "spend_change_qoq"],
            "renewal_strategy",
            "Renewal strategy",
            "within two weeks",
        ),
    ],
)
def test_each_required_driver_maps_to_its_action(playbook, features, action_id, words, due):
    for feature in features:
        action = only(playbook, feature)
        assert (action.id, action.because, action.source) == (action_id, feature, "driver")
        assert words.lower() in action.title.lower()
        assert action.due == due
        assert action.steps and action.owner in ("account manager", "partner", "delivery lead")


@pytest.mark.parametrize(
    ("feature", "action_id"),
    [
        ("interactions_vs_usual", "checkin_call"),
        ("meetings_vs_usual", "checkin_call"),
        ("response_hours_vs_usual", "checkin_call"),
        ("client_initiated_share_90d", "checkin_call"),
        ("client_initiated_vs_usual", "checkin_call"),
        ("client_contacts_left_365d", "multi_thread"),
        ("client_contacts_vs_year_ago", "multi_thread"),
        ("firm_contacts_vs_year_ago", "multi_thread"),
        ("sentiment_vs_usual", "diagnostic_conversation"),
        ("sentiment_30d_vs_usual", "diagnostic_conversation"),
        ("spend_vs_usual", "renewal_strategy"),
        ("invoice_amount_vs_usual", "value_review"),
        ("discount_share_90d", "value_review"),
        ("discount_share_vs_usual", "value_review"),
        ("days_late_vs_usual", "billing_check"),
        ("survey_score_vs_usual", "service_recovery"),
        ("tickets_vs_usual", "service_recovery"),
        ("complaints_vs_usual", "service_recovery"),
    ],
)
def test_changes_against_the_clients_own_normal_trigger_the_action_of_their_signal(
    playbook, feature, action_id
):
    assert only(playbook, feature).id == action_id


def test_every_baseline_relative_feature_has_an_action(playbook):
    from features.catalog import basis_features

    for feature in basis_features("baseline"):
        assert only(playbook, feature.name).source == "driver"


@pytest.mark.parametrize(
    ("code", "words", "owner"),
    [
        ("esc_health_drop", "account manager reaches out", "account manager"),
        ("esc_below_60", "account review meeting", "account manager"),
        ("esc_below_40", "partner involvement and an intervention plan", "partner"),
        ("esc_invoice_30d_late", "executive outreach and a relationship audit", "partner"),
    ],
)
def test_each_escalation_has_its_domain_action(playbook, code, words, owner):
    (action,) = recommend(playbook, [], [code])
    assert words in action.title.lower()
    assert (action.owner, action.because, action.source) == (owner, code, "escalation")
    if code == "esc_below_60":
        assert action.due == "within one week"


def test_drivers_that_lower_risk_trigger_nothing(playbook):
    assert recommend(playbook, [("days_since_last_contact", -0.2), ("overdue_days", 0.0)], []) == []
    assert recommend(playbook, [("not_a_feature", 0.5)], ["esc_unknown"]) == []


def test_escalations_come_first_by_severity_then_drivers_by_impact(playbook):
    drivers = [
        ("complaints_90d", 0.03),
        ("days_since_last_contact", 0.10),
        ("sentiment_trend", -0.20),
        ("single_threaded", 0.05),
    ]
    actions = recommend(
        playbook, drivers, ["esc_health_drop", "esc_below_60", "esc_below_40"], max_actions=10
    )
    assert [a.id for a in actions] == [
        "partner_intervention",
        "account_review_meeting",
        "account_manager_outreach",
        "checkin_call",
        "multi_thread",
        "service_recovery",
    ]
    # Same input in another order: same answer.
    again = recommend(
        playbook,
        list(reversed(drivers)),
        ["esc_below_40", "esc_health_drop", "esc_below_60"],
        max_actions=10,
    )
    assert again == actions


def test_an_action_appears_once_with_its_first_trigger(playbook):
    actions = recommend(
        playbook,
        [("overdue_days", 0.3), ("overdue_30d", 0.2), ("silent_60d", 0.1), ("meetings_90d", 0.05)],
        ["esc_invoice_30d_late"],
    )
    assert [(a.id, a.because) for a in actions] == [
        ("executive_outreach", "esc_invoice_30d_late"),
        ("checkin_call", "silent_60d"),
    ]


def test_max_actions_caps_the_list_keeping_the_most_urgent(playbook):
    drivers = [(f, 1.0 - i / 100) for i, f in enumerate(playbook.driver_features())]
    actions = recommend(playbook, drivers, list(ESCALATION_CODES))
    assert len(actions) == 5
    assert [a.source for a in actions] == ["escalation"] * 4 + ["driver"]
    assert len({a.id for a in recommend(playbook, drivers, [], max_actions=50)}) > 5
    assert recommend(playbook, drivers, list(ESCALATION_CODES), max_actions=0) == []


def test_lifecycle_stage_tailors_the_advice(playbook):
    new = only(
        playbook, "days_since_last_contact", lifecycle_stage="new", features={"tenure_months": 2}
    )
    assert "30/90-day" in new.title and new.id == "checkin_call"
    generic = only(playbook, "days_since_last_contact")
    assert generic.title == "Schedule a check-in call"
    long_term = only(playbook, "strategic_share", lifecycle_stage="long_term")
    assert "Annual strategic planning" in long_term.title
    established = only(playbook, "single_threaded", lifecycle_stage="established")
    assert "new team members" in established.steps


@pytest.mark.parametrize(
    ("tenure", "onboarding"),
    [(0.5, True), (2.9, True), (3.0, False), (4.0, False), (11.0, False), (None, False)],
)
def test_the_onboarding_check_in_is_for_the_first_three_months_only(playbook, tenure, onboarding):
    # new clients are those under 12 months; the onboarding variant checks its own condition
    action = only(
        playbook,
        "days_since_last_contact",
        lifecycle_stage="new",
        features={"tenure_months": tenure},
    )
    assert ("onboarding" in action.title) is onboarding
    if not onboarding:
        assert action.title == "Schedule a check-in call"


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ({"feature": "tenure_months"}, "give at_least, below or both"),
        ({"feature": "tenure_months", "at_least": 5, "below": 3}, "must be below"),
        ({"feature": "tenure_monthz", "below": 3}, "unknown feature 'tenure_monthz'"),
    ],
)
def test_variant_conditions_are_validated(tmp_path, when, message):
    data = shipped()
    checkin = next(a for a in data["actions"] if a["id"] == "checkin_call")
    checkin["variants"]["new"]["when"] = when
    with pytest.raises(ConfigError, match=message):
        load_playbook(write(tmp_path, data), known_features=MODEL_FEATURES)


# --------------------------------------------------------------------------- configuration


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "playbook.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def shipped() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_PLAYBOOK.read_text())


def test_unknown_driver_feature_is_a_config_error(tmp_path):
    data = shipped()
    data["actions"][4]["drivers"].append("days_since_last_contct")
    with pytest.raises(ConfigError, match="unknown features \\['days_since_last_contct'\\]"):
        load_playbook(write(tmp_path, data), known_features=MODEL_FEATURES)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["actions"][5]["drivers"].append("silent_60d"),
            "driver silent_60d triggers both checkin_call and multi_thread",
        ),
        (
            lambda d: d["actions"].pop(0),
            r"escalations without an action: \['esc_below_40'\]",
        ),
        (lambda d: d["actions"][0].update(owner="intern"), r"actions\.0\.owner"),
        (lambda d: d["actions"][0].update(colour="red"), r"actions\.0\.colour: unknown key"),
        (
            lambda d: d["actions"][1].update(escalations=["esc_sky_falling"]),
            "unknown escalation codes",
        ),
        (lambda d: d["actions"][2].update(id=d["actions"][3]["id"]), "action ids repeat"),
    ],
)
def test_playbook_config_errors_name_the_problem(tmp_path, mutate, message):
    data = shipped()
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        load_playbook(write(tmp_path, data))
