"""Hand-built scored dates for the store, the accounts API and the hostile-input checks."""

from __future__ import annotations

from datetime import date

import pandas as pd

from churn.bundle import DEFAULT_OPERATING_POINTS
from serving.batch import ScoredBatch
from serving.flags import FlagContext, flag_rows, flags_frame
from serving.priority import priorities


def make_batch(
    as_of: date,
    accounts: dict[str, tuple[str, float, float | None]],
    model_version: str | None = "v-test",
) -> ScoredBatch:
    """A hand-built scored date: ``accounts`` maps id -> (manager, health_score, probability).

    Revenue is 100 000 per account, so revenue at risk is 100 000 x probability.
    """
    ids = list(accounts)
    managers = [accounts[a][0] for a in ids]
    health = [accounts[a][1] for a in ids]
    prob = [accounts[a][2] for a in ids]
    band = ["healthy" if h >= 60 else "at_risk" if h >= 40 else "critical" for h in health]
    scores = pd.DataFrame(
        {
            "account_id": ids,
            "account_manager": managers,
            "churn_probability": prob,
            "risk_band": [None if p is None else "high" if p >= 0.3 else "low" for p in prob],
            "priority": priorities(
                prob,
                band,
                {"esc_below_40": [b == "critical" for b in band]},
                DEFAULT_OPERATING_POINTS,
            ),
            "health_score": health,
            "health_engagement": [h * 0.3 for h in health],
            "health_relationship": [h * 0.25 for h in health],
            "health_financial": [h * 0.25 for h in health],
            "health_satisfaction": [h * 0.2 for h in health],
            "health_band": band,
            "service_score": 3.0,
            "service_client_contacts": 1.0,
            "service_firm_contacts": 1.0,
            "service_meetings": 0.0,
            "service_seniority": 1.0,
            "service_survey": 0.0,
            "revenue_segment": "B",
            "lifecycle_stage": "established",
            "revenue_365d": 100_000.0,
            "revenue_at_risk": [None if p is None else 100_000.0 * p for p in prob],
            "model_version": model_version,
        }
    )
    reasons = pd.DataFrame(
        [
            {
                "account_id": a,
                "rank": rank,
                "feature": feature,
                "family": family,
                "value": value,
                "impact_pts": impact,
                "sentence": f"{feature} is {value:g}",
            }
            for a in ids
            for rank, (feature, family, value, impact) in enumerate(
                [
                    ("days_since_last_contact", "behavioural", 74.0, 9.0),
                    ("overdue_days", "financial", 35.0, 4.5),
                    ("client_contacts_active", "relationship", 3.0, -2.0),
                ],
                start=1,
            )
        ],
        columns=["account_id", "rank", "feature", "family", "value", "impact_pts", "sentence"],
    )
    critical = [a for a, b in zip(ids, band, strict=True) if b == "critical"]
    escalations = pd.DataFrame(
        {
            "account_id": critical,
            "code": "esc_below_40",
            "rule": "health score below 40",
            "action": "partner involvement and an intervention plan",
            "severity": 1,
        }
    )
    actions = pd.DataFrame(
        {
            "account_id": ids,
            "rank": 1,
            "action_id": "reach_out",
            "title": "Call the client this week",
            "steps": "Book a call.",
            "owner": "account manager",
            "due": "within a week",
            "priority": "high",
            "because": "days_since_last_contact",
            "because_text": "No contact for 74 days (+9 pts)",
            "source": "driver",
        }
    )
    points = DEFAULT_OPERATING_POINTS
    rising = reasons[reasons["impact_pts"] > 0]
    flags = flag_rows(
        FlagContext(scores, points, len(scores)),
        lambda i: rising.loc[rising["account_id"] == ids[i], "sentence"].tolist(),
        lambda i: [f"Engagement {health[i] * 0.3:g} of 30 points"],
    )
    return ScoredBatch(
        as_of, scores, reasons, escalations, actions, model_version, flags_frame(ids, flags)
    )
