"""The HTTP contract of the scoring API, in-process with FastAPI's TestClient:
every route against every role, the shape and arithmetic of predictions, errors as
problem+json, limits, metrics, logs, and model reload."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from churn.bundle import MODEL_FILE
from churn.settings import Settings
from features.catalog import FEATURES, MODEL_FEATURES
from serving.app import JsonFormatter, create_app
from serving.keys import KeyStore
from serving.schemas import PredictResponse
from tests.support.bundle_factory import make_bundle, make_models_dir, promote, synthetic_features
from tests.support.strong_secrets import TEST_SECRET

MANAGER = "Dana Reyes"
ROLES = ("crm", "manager", "admin", "metrics")


@dataclass
class Api:
    client: TestClient
    keys: dict[str, str]
    models: Path
    store: KeyStore

    def headers(self, who: str | None) -> dict[str, str]:
        if who is None:
            return {}
        token = self.keys.get(who, who)
        return {"Authorization": f"Bearer {token}"}

    def predict(self, body: Any, who: str | None = "crm", **kw: Any):
        return self.client.post("/v1/predict", json=body, headers=self.headers(who), **kw)


def _settings(tmp: Path, models: Path, **serve: Any) -> Settings:
    return Settings(
        models_dir=models,
        keys_file=tmp / "keys.json",
        secret_key=TEST_SECRET,
        serve={"reload_interval_seconds": 0, **serve},
    )


@pytest.fixture(scope="module")
def models(tiny_models) -> Path:
    return tiny_models


def _api(tmp: Path, models: Path, bundle_dir: Path | None = None, **serve: Any) -> Iterator[Api]:
    settings = _settings(tmp, models, **serve)
    store = KeyStore.from_settings(settings)
    keys = {
        "crm": store.add("crm")[1],
        "manager": store.add("manager", MANAGER)[1],
        "other_manager": store.add("manager", "Sam Ortiz")[1],
        "admin": store.add("admin")[1],
        "metrics": store.add("metrics")[1],
    }
    with TestClient(create_app(settings, bundle_dir=bundle_dir)) as client:
        yield Api(client, keys, models, store)


@pytest.fixture(scope="module")
def api(tmp_path_factory, models) -> Iterator[Api]:
    yield from _api(tmp_path_factory.mktemp("api"), models, rate_limit_per_minute=100_000)


def account(account_id: str = "A-1", manager: str | None = MANAGER, **features: Any) -> dict:
    body: dict[str, Any] = {"account_id": account_id, "features": features}
    if manager is not None:
        body["account_manager"] = manager
    return body


RISKY = {
    "days_since_last_contact": 170,
    "silent_60d": 1,
    "overdue_days": 45,
    "complaints_90d": 6,
    "single_threaded": True,
    "meetings_180d": 0,
    "revenue_365d": 250_000,
    "lifecycle_stage": "established",
}


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


# ----------------------------------------------------------------------- routes x roles

ROUTES = [
    ("GET", "/healthz", {None: 200, "crm": 200, "manager": 200, "admin": 200, "metrics": 200}),
    ("GET", "/readyz", {None: 200, "crm": 200, "manager": 200, "admin": 200, "metrics": 200}),
    ("GET", "/metrics", {None: 401, "crm": 403, "manager": 403, "admin": 200, "metrics": 200}),
    ("GET", "/v1/model", {None: 401, "crm": 200, "manager": 200, "admin": 200, "metrics": 403}),
    ("POST", "/v1/predict", {None: 401, "crm": 200, "manager": 200, "admin": 200, "metrics": 403}),
    (
        "POST",
        "/v1/admin/reload",
        {None: 401, "crm": 403, "manager": 403, "admin": 200, "metrics": 403},
    ),
]


@pytest.mark.parametrize("who", [None, *ROLES])
@pytest.mark.parametrize(("method", "path", "expected"), ROUTES, ids=[r[1] for r in ROUTES])
def test_every_route_answers_each_role_as_documented(api, method, path, expected, who):
    kw: dict[str, Any] = {"headers": api.headers(who)}
    if path == "/v1/predict":
        kw["json"] = {"accounts": [account()]}
    response = api.client.request(method, path, **kw)
    assert response.status_code == expected[who], response.text
    if expected[who] == 401:
        assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
    if expected[who] == 403:
        assert "role." in assert_problem(response, 403)["detail"]


@pytest.mark.parametrize("path", ["/metrics", "/v1/model", "/v1/predict", "/v1/admin/reload"])
@pytest.mark.parametrize(
    "auth",
    ["Bearer ck_0123456789ab_not-a-real-secret", "Bearer nonsense", "Basic dXNlcjpwYXNz", "Bearer"],
)
def test_a_missing_or_wrong_key_is_401_on_every_keyed_route(api, path, auth):
    method = "GET" if path in ("/metrics", "/v1/model") else "POST"
    response = api.client.request(
        method, path, headers={"Authorization": auth}, json={"accounts": [account()]}
    )
    assert_problem(response, 401)
    assert "Bearer" in response.headers["www-authenticate"]


def test_a_revoked_key_stops_working_at_once(api):
    record, token = api.store.add("crm")
    assert api.predict({"accounts": [account()]}, token).status_code == 200
    api.store.revoke(record.key_id)
    assert_problem(api.predict({"accounts": [account()]}, token), 401)


def test_a_manager_scores_only_their_own_accounts(api):
    own = api.predict({"accounts": [account("A-1"), account("A-2")]}, "manager")
    assert own.status_code == 200
    other = api.predict({"accounts": [account("A-1"), account("B-9", "Sam Ortiz")]}, "manager")
    body = assert_problem(other, 403)
    assert "accounts[1].account_manager" in body["detail"]
    assert "Sam Ortiz" not in other.text  # nobody's name is echoed
    unnamed = api.predict({"accounts": [account("A-3", manager=None)]}, "manager")
    assert_problem(unnamed, 403)
    assert api.predict({"accounts": [account("B-9", "Sam Ortiz")]}, "crm").status_code == 200


def test_a_manager_name_matches_in_normalised_form_and_hidden_characters_are_refused(api):
    first, _, last = MANAGER.partition(" ")
    spaced = api.predict({"accounts": [account("A-1", f"{first}\u00a0 {last} ")]}, "manager")
    assert spaced.status_code == 200, spaced.text  # a no-break space names the same person
    for hidden in ("\u200b", "\u202e", "\ufeff"):
        body = assert_problem(api.predict({"accounts": [account(f"A{hidden}1")]}, "crm"), 422)
        assert body["errors"][0]["field"] == "accounts[0].account_id"


# -------------------------------------------------------------------------- predictions

SPEC_FIELDS = {
    "account_id", "churn_probability", "risk_band", "health_score", "health_components",
    "health_band", "service_score", "escalations", "reasons", "actions", "revenue_at_risk",
    "model_version", "priority",
}  # fmt: skip


def _adds_up(prediction: dict) -> float:
    pts = sum(r["impact_pts"] for r in prediction["reasons"]) + prediction["other_impact_pts"]
    return prediction["base_rate"] + pts / 100


def test_a_prediction_carries_every_spec_field_and_matches_the_schema(api):
    response = api.predict({"accounts": [account(**RISKY) | {"health_score_30d_ago": 90}]})
    assert response.status_code == 200, response.text
    body = response.json()
    PredictResponse.model_validate(body)
    assert body["model_version"] == "v1" and body["probability_unavailable_reason"] is None
    (p,) = body["predictions"]
    assert set(p) >= SPEC_FIELDS
    assert p["model_version"] == "v1"
    assert 0 <= p["churn_probability"] <= 1
    components = {"engagement", "relationship", "financial", "satisfaction"}
    assert set(p["health_components"]) == components
    assert math.isclose(sum(p["health_components"].values()), p["health_score"], abs_tol=0.05)
    assert p["service_score"] == sum(p["service_components"].values())
    assert len(p["reasons"]) == 5
    assert abs(_adds_up(p) - p["churn_probability"]) <= 1e-6
    assert p["revenue_at_risk"] == pytest.approx(p["churn_probability"] * 250_000)
    codes = [e["code"] for e in p["escalations"]]
    assert "esc_invoice_30d_late" in codes and "esc_health_drop" in codes
    assert all(e["rule"] and e["action"] for e in p["escalations"])
    assert p["actions"] and all(a["title"] and a["because_text"] for a in p["actions"])
    assert p["actions"][0]["source"] == "escalation"
    assert p["priority"] == "act_now"  # an invoice 45 days late is a severe escalation
    assert all(f["code"] in ("quiet_risk", "rule_only_risk") for f in p["flags"])


def test_the_top_factor_names_the_feature_value_in_its_sentence(api):
    typical = np.nanmedian(synthetic_features(400, seed=1), axis=0)  # an ordinary account
    features = {name: float(v) for name, v in zip(MODEL_FEATURES, typical, strict=True)}
    features |= {name: 0 for name in MODEL_FEATURES if FEATURES[name].kind == "flag"}
    features["days_since_last_contact"] = 170
    (p,) = api.predict({"accounts": [account(**features)]}).json()["predictions"]
    top = p["reasons"][0]
    assert top["feature"] == "days_since_last_contact"
    assert top["value"] == 170
    assert top["impact_pts"] > 0
    assert top["sentence"].startswith("No contact for 170 days")
    assert " (+" in top["sentence"]
    assert top["sentence"].endswith(" pts)")
    assert abs(top["impact_pts"]) == max(abs(r["impact_pts"]) for r in p["reasons"])


def test_top_reasons_can_be_asked_for_and_the_sums_stay_exact(api):
    for k in (0, 1, 12):
        response = api.client.post(
            f"/v1/predict?top_reasons={k}",
            json={"accounts": [account(**RISKY)]},
            headers=api.headers("crm"),
        )
        (p,) = response.json()["predictions"]
        known = [f for f in RISKY if f in MODEL_FEATURES]
        assert len(p["reasons"]) == min(k, len(known))  # an unknown value is never a reason
        assert abs(_adds_up(p) - p["churn_probability"]) <= 1e-6


def in_range(name: str) -> st.SearchStrategy[float]:
    """Numbers within the feature's valid range (whole numbers and fractions)."""
    low, high = FEATURES[name].valid_range
    low = -1e5 if low is None else low
    high = 1e5 if high is None else high
    whole = st.integers(math.ceil(low), math.floor(min(high, 400))).map(float)
    return whole | st.floats(low, high, allow_nan=False)


feature_values = st.fixed_dictionaries(
    {},
    optional={
        name: (
            st.booleans() | st.sampled_from([0, 1])
            if FEATURES[name].kind == "flag"
            else in_range(name) | st.none()
        )
        for name in MODEL_FEATURES
    },
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=st.lists(feature_values, min_size=1, max_size=5))
def test_impacts_of_every_response_add_up_to_the_probability(api, batch):
    body = {"accounts": [account(f"A-{i}", **f) for i, f in enumerate(batch)]}
    response = api.predict(body)
    assert response.status_code == 200, response.text
    for p, features in zip(response.json()["predictions"], batch, strict=True):
        assert abs(_adds_up(p) - p["churn_probability"]) <= 1e-6
        assert p["risk_band"] in ("high", "medium", "low")
        # Reasons and actions rest on known values only.
        unknown = {n for n in MODEL_FEATURES if features.get(n) is None}
        assert all(r["value"] is not None and r["feature"] not in unknown for r in p["reasons"])
        assert not {a["because"] for a in p["actions"]} & unknown
        known = len(MODEL_FEATURES) - len(unknown)
        assert p["data_completeness"] == pytest.approx(known / len(MODEL_FEATURES))


def test_revenue_at_risk_uses_the_given_revenue_then_revenue_365d_then_contract_value(api):
    accounts = [
        account("A-1", **RISKY) | {"revenue": 1000.0},
        account("A-2", contract_value=5000.0),
        account("A-3"),
    ]
    p1, p2, p3 = api.predict({"accounts": accounts}).json()["predictions"]
    assert p1["revenue_at_risk"] == pytest.approx(p1["churn_probability"] * 1000)
    assert p2["revenue_at_risk"] == pytest.approx(p2["churn_probability"] * 5000)
    assert p3["revenue_at_risk"] is None


def test_a_batch_scores_each_account_as_if_alone(api):
    accounts = [
        account(f"A-{i}", days_since_last_contact=10 * i, overdue_days=i) for i in range(40)
    ]
    batch = api.predict({"accounts": accounts}).json()["predictions"]
    alone = [api.predict({"accounts": [a]}).json()["predictions"][0] for a in accounts[:35:7]]
    assert [p["account_id"] for p in batch] == [a["account_id"] for a in accounts]
    assert batch[:35:7] == alone


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"accounts": [account(foo=1)]}, "accounts[0].features.foo"),
        (
            {"accounts": [account(), account(overdue_days="30")]},
            "accounts[1].features.overdue_days",
        ),
        ({"accounts": [account(overdue_days=True)]}, "accounts[0].features.overdue_days"),
        ({"accounts": [account(silent_60d=0.5)]}, "accounts[0].features.silent_60d"),
        (
            {"accounts": [account(lifecycle_stage="ancient")]},
            "accounts[0].features.lifecycle_stage",
        ),
        ({"accounts": [account() | {"colour": "red"}]}, "accounts[0].colour"),
        ({"accounts": [{"features": {}}]}, "accounts[0].account_id"),
        ({"accounts": [account() | {"account_id": 7}]}, "accounts[0].account_id"),
        ({"accounts": [account() | {"revenue": -5}]}, "accounts[0].revenue"),
        ({"accounts": []}, "accounts"),
        ({"account": []}, "account"),
        ([], "body"),
    ],
)
def test_invalid_requests_are_422_naming_the_field(api, body, field):
    problem = assert_problem(api.predict(body), 422)
    assert field in [e["field"] for e in problem["errors"]]
    assert field in problem["detail"] or field == "body"


@pytest.mark.parametrize(
    ("feature", "value", "valid"),
    [
        ("last_survey_score", 14, "between 0 and 10"),  # survey
        ("days_since_last_contact", -5, "at least 0"),  # days
        ("complaints_90d", -1, "at least 0"),  # count
        ("overdue_amount", -250.5, "at least 0"),  # money
        ("sentiment_90d", 3, "between -1 and 1"),  # sentiment
        ("most_senior_client_level", 4, "between 0 and 3"),  # seniority
        ("discount_share_365d", 1.5, "between 0 and 1"),  # share
        ("tenure_months", -3, "at least 0"),  # months
        ("spend_change_qoq", -1.2, "at least -1"),  # relative change
    ],
)
def test_a_feature_outside_its_valid_range_is_422_naming_field_and_range(
    api, feature, value, valid
):
    body = {"accounts": [account(), account("A-2", **{feature: value})]}
    problem = assert_problem(api.predict(body), 422)
    field = f"accounts[1].features.{feature}"
    (error,) = problem["errors"]
    assert error["field"] == field and error["message"] == f"must be {valid}"
    assert f"{field}: must be {valid}" in problem["detail"]


def test_the_bounds_of_a_valid_range_are_accepted(api):
    edges = {"last_survey_score": 10, "sentiment_90d": -1, "discount_share_365d": 1}
    response = api.predict({"accounts": [account(**edges, tenure_months=0)]})
    assert response.status_code == 200, response.text


def test_nan_and_infinity_are_refused(api):
    for literal in ("NaN", "Infinity", "-Infinity", "1e999"):
        raw = '{"accounts": [{"account_id": "A", "features": {"overdue_days": ' + literal + "}}]}"
        response = api.client.post(
            "/v1/predict",
            content=raw,
            headers={**api.headers("crm"), "content-type": "application/json"},
        )
        problem = assert_problem(response, 422)
        assert problem["errors"][0]["field"] == "accounts[0].features.overdue_days"


def test_malformed_json_is_400_and_a_wrong_media_type_415(api):
    headers = api.headers("crm")
    as_json = {**headers, "content-type": "application/json"}
    bad = api.client.post("/v1/predict", content=b'{"accounts": [', headers=as_json)
    assert "not valid JSON" in assert_problem(bad, 400)["detail"]
    binary = api.client.post("/v1/predict", content=b"\xff\xfe\x00{", headers=as_json)
    assert_problem(binary, 400)
    as_text = {**headers, "content-type": "text/plain"}
    text = api.client.post("/v1/predict", content=b"{}", headers=as_text)
    assert "application/json" in assert_problem(text, 415)["detail"]
    form = api.client.post("/v1/predict", data={"accounts": "x"}, headers=headers)
    assert_problem(form, 415)


def test_unknown_routes_and_methods_are_problems_too(api):
    assert_problem(api.client.get("/v1/nothing-here"), 404)
    assert_problem(api.client.get("/v1/predict", headers=api.headers("crm")), 405)


# -------------------------------------------------------------------------------- limits


@pytest.fixture(scope="module")
def tight(tmp_path_factory, models) -> Iterator[Api]:
    yield from _api(
        tmp_path_factory.mktemp("tight"),
        models,
        max_body_bytes=2048,
        max_accounts_per_request=3,
        rate_limit_per_minute=1000,
    )


def test_a_body_over_the_limit_is_413_whether_declared_or_streamed(tight):
    big = {"accounts": [account(f"A-{i}", **RISKY) for i in range(3)], "pad": "x" * 4000}
    declared = tight.predict(big)
    assert "2,048 bytes" in assert_problem(declared, 413)["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server counts what it reads
        yield b'{"accounts": ['
        for _ in range(100):
            yield b'{"account_id": "A", "features": {}},'
        yield b'{"account_id": "A"}]}'

    streamed = tight.client.post(
        "/v1/predict",
        content=chunks(),
        headers={**tight.headers("crm"), "content-type": "application/json"},
    )
    assert_problem(streamed, 413)
    assert tight.predict({"accounts": [account()]}).status_code == 200


def test_too_many_accounts_is_422_with_the_limit(tight):
    problem = assert_problem(
        tight.predict({"accounts": [account(f"A-{i}") for i in range(4)]}), 422
    )
    assert "limit is 3" in problem["detail"]


def test_each_key_has_its_own_rate_limit_with_retry_after(tmp_path, models):
    for api in _api(tmp_path, models, rate_limit_per_minute=3):
        for _ in range(3):
            assert api.client.get("/v1/model", headers=api.headers("crm")).status_code == 200
        limited = api.client.get("/v1/model", headers=api.headers("crm"))
        assert_problem(limited, 429)
        assert int(limited.headers["retry-after"]) >= 1
        assert api.client.get("/v1/model", headers=api.headers("admin")).status_code == 200
        assert api.client.get("/healthz").status_code == 200  # probes are never limited
        metrics = api.client.get("/metrics", headers=api.headers("metrics")).text
        assert "churn_rate_limited_total 1.0" in metrics


# --------------------------------------------------------------------- without a model


@pytest.fixture(scope="module")
def no_model(tmp_path_factory, models) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("nomodel")
    yield from _api(tmp, models, bundle_dir=tmp / "missing")


def test_without_a_model_readyz_is_503_with_the_reason(no_model):
    anyone = no_model.client.get("/readyz")
    assert anyone.status_code == 503
    assert anyone.json() == {"status": "not ready", "reason": "no_bundle"}
    admin = no_model.client.get("/readyz", headers=no_model.headers("admin")).json()
    assert "no model bundle" in admin["detail"] and "missing" in admin["detail"]
    assert no_model.client.get("/healthz").status_code == 200


def test_without_a_model_predict_returns_rule_based_scores_and_says_why(no_model):
    response = no_model.predict({"accounts": [account(**RISKY), account("A-2")]})
    assert response.status_code == 200
    body = response.json()
    PredictResponse.model_validate(body)
    assert body["model_version"] is None
    assert "no model bundle" in body["probability_unavailable_reason"]
    assert "/" not in body["probability_unavailable_reason"]  # no server path
    for p in body["predictions"]:
        assert p["churn_probability"] is None and p["revenue_at_risk"] is None
        assert p["reasons"] == [] and p["base_rate"] is None
        assert p["flags"] == []  # nothing to disagree with
        band = {"critical": "high", "at_risk": "medium", "healthy": "low"}[p["health_band"]]
        assert p["risk_band"] == band
    risky, plain = body["predictions"]
    assert risky["priority"] == "act_now"  # the invoice 45 days late
    assert plain["priority"] == ("ok" if plain["health_band"] == "healthy" else "watch")
    assert body["predictions"][0]["actions"]  # escalations still lead to actions


def test_without_a_model_the_model_route_lists_the_catalogue(no_model):
    info = no_model.client.get("/v1/model", headers=no_model.headers("crm")).json()
    assert info["available"] is False and info["unavailable_reason"]
    assert {f["name"] for f in info["features"]} >= set(MODEL_FEATURES)
    metrics = no_model.client.get("/metrics", headers=no_model.headers("metrics")).text
    assert "churn_model_loaded 0.0" in metrics


# ------------------------------------------------------------------- model, metrics, logs


def test_the_model_route_shows_version_training_date_metrics_and_catalogue(api):
    info = api.client.get("/v1/model", headers=api.headers("manager")).json()
    assert info["available"] is True and info["model_version"] == "v1"
    assert info["trained_at"].startswith("2024-06-01")
    assert info["metrics"]["model"]["roc_auc"] == 0.8
    assert info["model_features"] == MODEL_FEATURES
    entry = next(f for f in info["features"] if f["name"] == "days_since_last_contact")
    assert entry["family"] == "behavioural" and "{value" in entry["template"]


def test_metrics_have_latency_per_route_predictions_by_band_and_the_model_version(api):
    api.predict({"accounts": [account(**RISKY), account("A-2")]})
    text = api.client.get("/metrics", headers=api.headers("admin")).text
    assert (
        'churn_http_request_duration_seconds_bucket{le="0.001",method="POST",route="/v1/predict"}'
        in text
    )
    assert 'route="/v1/predict",status="200"' in text
    assert 'churn_predictions_total{risk_band="' in text and 'source="model"' in text
    assert 'churn_model_info{model_version="v1"} 1.0' in text


def test_logs_name_the_route_and_key_but_no_account_data(api, caplog):
    caplog.set_level(logging.INFO, logger="churn.access")
    body = {"accounts": [account("ACME-SECRET-ID", **RISKY)]}
    assert api.predict(body, "manager").status_code == 200
    (record,) = [r for r in caplog.records if r.name == "churn.access"]
    line = json.loads(JsonFormatter().format(record))
    assert line["route"] == "/v1/predict" and line["status"] == 200 and line["accounts"] == 1
    assert line["role"] == "manager" and line["key_id"] == api.keys["manager"][3:15]
    everything = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert MANAGER not in everything and "ACME-SECRET-ID" not in everything
    assert "170" not in everything


def test_openapi_documents_the_routes_with_examples(api):
    schema = api.client.get("/openapi.json").json()
    paths = schema["paths"]
    assert {"/v1/predict", "/v1/model", "/v1/admin/reload", "/readyz", "/healthz"} <= set(paths)
    request = schema["components"]["schemas"]["PredictRequest"]
    assert request["examples"][0]["accounts"][0]["features"]["days_since_last_contact"] == 74
    assert "422" in paths["/v1/predict"]["post"]["responses"]
    assert api.client.get("/docs").status_code == 200


# -------------------------------------------------------------------------------- reload


def test_reload_swaps_in_a_new_bundle_and_a_broken_one_keeps_the_old(tmp_path):
    models = make_models_dir(tmp_path / "models", "v1")
    for api in _api(tmp_path, models):
        admin = api.headers("admin")
        make_bundle(models / "v2", "v2", seed=2)
        promote(models, "v2")
        reloaded = api.client.post("/v1/admin/reload", headers=admin).json()
        assert reloaded == {"outcome": "reloaded", "model_version": "v2", "previous_version": "v1"}
        assert api.predict({"accounts": [account()]}).json()["model_version"] == "v2"

        broken = make_bundle(models / "v3", "v3", seed=3)
        (broken / MODEL_FILE).write_text("tree\ncorrupted after export\n")
        promote(models, "v3")
        failed = api.client.post("/v1/admin/reload", headers=admin)
        problem = assert_problem(failed, 409)
        assert "model.txt" in problem["detail"] and problem["model_version"] == "v2"
        assert str(models) not in problem["detail"] and problem["reason"] == "bundle_refused"
        assert api.client.get("/readyz").json() == {"status": "ready", "model_version": "v2"}
        ready = api.client.get("/readyz", headers=admin).json()
        assert ready["model_version"] == "v2" and "model.txt" in ready["reload_error"]
        assert api.predict({"accounts": [account()]}).json()["model_version"] == "v2"

        promote(models, "v1")
        assert api.client.post("/v1/admin/reload", headers=admin).status_code == 200
        assert api.client.get("/readyz", headers=admin).json()["reload_error"] is None
        metrics = api.client.get("/metrics", headers=admin).text
        assert 'churn_model_reloads_total{outcome="failed"} 1.0' in metrics


def test_the_periodic_check_picks_up_a_new_champion(tmp_path):
    models = make_models_dir(tmp_path / "models", "v1")
    make_bundle(models / "v2", "v2", seed=2)
    for api in _api(tmp_path, models, reload_interval_seconds=0.05):
        assert api.client.get("/readyz").json()["model_version"] == "v1"
        promote(models, "v2")
        deadline = time.monotonic() + 20
        version = "v1"
        while version != "v2" and time.monotonic() < deadline:
            time.sleep(0.05)
            version = api.client.get("/readyz").json()["model_version"]
        assert version == "v2"


def test_the_periodic_check_leaves_an_unchanged_or_failed_bundle_alone(tmp_path):
    models = make_models_dir(tmp_path / "models", "v1")
    for api in _api(tmp_path, models):
        holder = api.client.app.state.serving.holder
        assert holder.reload(force=False).outcome == "unchanged"
        broken = make_bundle(models / "v2", "v2", seed=2)
        (broken / MODEL_FILE).write_text("garbage")
        promote(models, "v2")
        assert holder.reload(force=False).outcome == "failed"
        assert holder.reload(force=False).outcome == "unchanged"  # not retried until it changes
        assert holder.current.version == "v1"


# ------------------------------------------------------------------ unforeseen failures


def test_an_unforeseen_error_is_a_500_problem_logged_without_its_message(tmp_path, models, caplog):
    from fastapi import APIRouter

    router = APIRouter()

    @router.get("/boom")
    def boom(name: str, amount: float) -> None:
        raise ValueError(f"{name} owes {amount:,.0f}")

    settings = _settings(tmp_path, models)
    caplog.set_level(logging.INFO)
    with TestClient(create_app(settings, include_routers=[router])) as client:
        problem = assert_problem(client.get("/boom", params={"name": "Dana", "amount": 12345}), 500)
    assert "Dana" not in problem["detail"]
    server = [r for r in caplog.records if r.name.startswith(("churn", "serving"))]
    logged = "\n".join(JsonFormatter().format(r) for r in server)
    assert "ValueError" in logged and "Dana" not in logged and "12,345" not in logged
    access = json.loads(JsonFormatter().format(caplog.records[-1]))
    assert access["route"] == "/boom" and access["status"] == 500
    assert 0 < access["duration_ms"] < 60_000


def test_requests_beyond_the_concurrency_cap_get_503_but_probes_still_answer():
    import anyio
    import httpx

    from serving.app import ServingMiddleware
    from serving.metrics import Metrics

    release = anyio.Event()

    async def slow_app(scope, receive, send) -> None:
        if scope["path"] != "/healthz":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    app = ServingMiddleware(slow_app, metrics=Metrics(), max_body_bytes=1024, max_concurrency=1)

    async def scenario() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            statuses: list[int] = []

            async def first() -> None:
                statuses.append((await client.get("/v1/model")).status_code)

            async with anyio.create_task_group() as tg:
                tg.start_soon(first)
                await anyio.sleep(0.05)
                second = await client.get("/v1/model")
                assert second.headers["content-type"] == "application/problem+json"
                statuses.append(second.status_code)
                statuses.append((await client.get("/healthz")).status_code)
                release.set()
            return statuses

    assert sorted(anyio.run(scenario)) == [200, 200, 503]
