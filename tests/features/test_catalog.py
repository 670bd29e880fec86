"""The feature catalogue: defined once, documented from the code, sentences that read well."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from churn_cli.main import app
from features.catalog import (
    CATALOG,
    FAMILIES,
    FEATURES,
    MODEL_FEATURES,
    catalog_markdown,
    catalog_records,
    feature_sentence,
)
from features.contract import TABLE_NAMES
from features.signals import FAMILY_MODULES

DOC = Path(__file__).resolve().parents[2] / "features" / "CATALOG.md"


def test_catalog_doc_is_generated_from_the_code():
    assert DOC.read_text() == catalog_markdown(), f"run: python -m features.catalog > {DOC}"


def test_churn_features_catalog_prints_it():
    result = CliRunner().invoke(app, ["features", "--catalog"])
    assert result.exit_code == 0, result.output
    assert "days_since_last_contact" in result.output and "No contact for" in result.output


def test_every_feature_is_defined_once_with_a_family_unit_and_tables():
    names = [f.name for f in CATALOG]
    assert len(names) == len(set(names)) == len(FEATURES)
    assert tuple(FAMILY_MODULES) == FAMILIES
    for feature in CATALOG:
        assert feature.family in FAMILIES and feature.unit and feature.description
        assert feature.tables and set(feature.tables) <= set(TABLE_NAMES)
        assert feature.kind in ("number", "flag", "category")
        assert feature.direction in (None, "higher", "lower")
    for family in FAMILIES:
        assert any(f.family == family for f in CATALOG), family


def test_model_inputs_are_the_numeric_features_in_catalogue_order():
    assert [f.name for f in CATALOG if f.kind != "category"] == MODEL_FEATURES
    assert {"lifecycle_stage", "revenue_segment"}.isdisjoint(MODEL_FEATURES)
    assert all(FEATURES[n].model for n in MODEL_FEATURES)


@pytest.mark.parametrize(
    ("name", "value", "sentence"),
    [
        ("days_since_last_contact", 74.0, "No contact for 74 days"),
        ("days_since_last_contact", 1.0, "No contact for 1 day"),
        ("spend_change_qoq", -0.32, "Spend down 32% quarter over quarter"),
        ("spend_change_qoq", 0.25, "Spend up 25% quarter over quarter"),
        ("single_threaded", 1.0, "Single-threaded: only one client contact"),
        ("single_threaded", 0.0, "Multi-threaded: several client contacts"),
        ("overdue_30d", 1.0, "An invoice is 30+ days past due"),
        ("most_senior_client_level", 1.0, "Most senior client contact: middle"),
        ("meetings_90d", 0.0, "No meetings in the last 90 days"),
        ("open_tickets", 3.0, "3 open tickets"),
        ("revenue_365d", 1234567.0, "Revenue of 1,234,567 invoiced in the last year"),
        ("lifecycle_stage", "long_term", "Lifecycle stage: long-term"),
        ("revenue_segment", "A", "Revenue segment A"),
        ("last_survey_score", math.nan, "Score of the last survey answer (0-10): unknown"),
        ("revenue_segment", None, FEATURES["revenue_segment"].description + ": unknown"),
    ],
)
def test_sentences_carry_the_value(name: str, value: object, sentence: str):
    assert feature_sentence(name, value) == sentence  # type: ignore[arg-type]


def test_every_template_renders_for_typical_values():
    for feature in CATALOG:
        values = ["A", "new"] if feature.kind == "category" else [0.0, 1.0, -0.5, 2.0, 37.25]
        for value in values:
            text = feature_sentence(feature.name, value)
            assert text and "{" not in text, (feature.name, value, text)


def test_unknown_feature_is_named():
    with pytest.raises(KeyError, match="no_such_feature"):
        feature_sentence("no_such_feature", 1.0)


def test_records_are_json_for_the_bundle_and_the_api():
    records = json.loads(json.dumps(catalog_records()))
    assert [r["name"] for r in records] == list(FEATURES)
    assert {"name", "family", "description", "unit", "template", "kind", "model"} <= set(records[0])
