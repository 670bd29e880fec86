"""The score record is the one declaration of the score fields: the store's table, the batch's
columns and the API's models all follow it, so a field declared there appears everywhere."""

from __future__ import annotations

from datetime import date

import pytest

from features.health import COMPONENT_MAXIMA, SERVICE_PART_MAXIMA, SERVICE_PARTS
from serving import schemas
from serving.batch import SCORE_COLUMNS
from serving.score_record import (
    BY_COLUMN,
    FIELDS,
    HEALTH_COMPONENT_FIELDS,
    SERVICE_PART_FIELDS,
    VIEWS,
    ScoreField,
    api_values,
    from_snapshot,
    in_view,
)
from serving.store import STORE_SCHEMA, schema_ddl, scores_table

VIEW_MODELS = {
    "prediction": schemas.Prediction,
    "summary": schemas.AccountSummary,
    "detail": schemas.AccountDetail,
    "history": schemas.HistoryPoint,
}


def _api_keys(view, fields=FIELDS) -> set[str]:
    return {f.group or f.api for f in in_view(view, fields)}


def test_every_stored_field_is_a_column_of_the_scores_table():
    columns = STORE_SCHEMA["scores"]
    stored = [f.column for f in FIELDS if f.stored]
    assert [c for c in columns if c in BY_COLUMN] == stored
    assert set(columns) - set(stored) == {"as_of", "account_id", "run_id", "scored_at"}
    assert not any(f.column in columns for f in FIELDS if not f.stored)


def test_the_batch_copies_every_snapshot_field_of_the_record():
    assert ("account_id", *from_snapshot()) == SCORE_COLUMNS
    assert set(SCORE_COLUMNS) <= set(STORE_SCHEMA["scores"])


@pytest.mark.parametrize("view", VIEWS)
def test_every_view_model_shows_the_record_fields_of_its_view(view):
    model = VIEW_MODELS[view]
    assert _api_keys(view) <= set(model.model_fields)
    extra = set(model.model_fields) - _api_keys(view)
    # What is not a score field is the account's identity or its explanation.
    assert extra <= {"account_id", "as_of", "escalations", "reasons", "other_impact_pts"} | {
        "actions",
        "flags",
        "history",
    }


def test_groups_nest_their_fields_under_one_model():
    comps = schemas.HealthComponents.model_fields
    assert list(comps) == list(COMPONENT_MAXIMA)
    assert list(schemas.ServiceComponents.model_fields) == [
        p.removeprefix("service_") for p in SERVICE_PARTS
    ]
    assert schemas.Prediction.model_fields["health_components"].annotation is (
        schemas.HealthComponents
    )


def test_components_and_parts_come_from_the_health_rules():
    assert {f.api: f.maximum for f in HEALTH_COMPONENT_FIELDS} == dict(COMPONENT_MAXIMA)
    assert {f.column: f.maximum for f in SERVICE_PART_FIELDS} == dict(SERVICE_PART_MAXIMA)
    assert BY_COLUMN["health_score"].maximum == sum(COMPONENT_MAXIMA.values()) == 100
    assert BY_COLUMN["service_score"].maximum == sum(SERVICE_PART_MAXIMA.values()) == 6
    assert all(f.label for f in FIELDS)


def test_a_field_added_to_the_record_appears_in_the_store_and_the_response_models():
    added = ScoreField(
        "priority_score",
        "Priority",
        "How soon to act.",
        "float",
        "snapshot",
        frozenset(("prediction", "detail")),
        unit="points",
        maximum=100.0,
    )
    fields = (*FIELDS, added)
    table = scores_table(fields)
    assert table["priority_score"] == "DOUBLE PRECISION"
    ddl = schema_ddl({**STORE_SCHEMA, "scores": table})
    assert any(
        "priority_score DOUBLE PRECISION" in s for s in ddl if "TABLE IF NOT EXISTS scores" in s
    )
    assert "priority_score" in from_snapshot(fields)
    model = schemas.score_model(
        "Prediction2", "prediction", "test", head={"account_id": (str, ...)}, fields=fields
    )
    assert model.model_fields["priority_score"].description == "How soon to act."
    row = {f.column: 1.0 for f in fields}
    assert api_values(row, "prediction", fields)["priority_score"] == 1.0
    assert "priority_score" not in api_values(row, "summary", fields)


def test_a_stored_row_maps_onto_each_view_model():
    row = {
        f.column: (
            f.values[0]
            if f.kind == "band"
            else "x"
            if f.kind == "text"
            else 1
            if f.kind == "int"
            else 0.5
        )
        for f in FIELDS
    }
    summary = schemas.AccountSummary(account_id="A-1", **api_values(row, "summary"))
    assert summary.model_dump()["health_score"] == 0.5
    point = schemas.HistoryPoint(as_of=date(2024, 6, 1), **api_values(row, "history"))
    assert point.model_dump()["health_components"] == {name: 0.5 for name in COMPONENT_MAXIMA}
