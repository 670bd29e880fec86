"""The serving bundle: the one definition of what training exports and serving loads.

A bundle is a folder of plain files, nothing pickled:

    model.txt                 LightGBM's own text model format
    calibration.json          the probability calibration (isotonic points or Platt a, b)
    metadata.json             version, training date, feature order, horizon, lineage,
                              operating points (the churn-probability thresholds of the
                              priorities ``act_now`` and ``watch``, chosen on validation),
                              each feature's typical value (median over training accounts)
    catalog.json              the feature catalogue entries the model uses
    metrics.json              test-period metrics of the model and both baselines
    model_card.md             data, period, metrics against baselines, drivers, limitations
    test_predictions.parquet  account_id, as_of, label, churn_probability, health_score
    MANIFEST.sha256           sha256 of every file above, checked before the bundle is used
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from churn.errors import BundleIntegrityError
from churn.model_terms import RISK_BANDS

MODEL_FILE = "model.txt"
CALIBRATION_FILE = "calibration.json"
METADATA_FILE = "metadata.json"
CATALOG_FILE = "catalog.json"
METRICS_FILE = "metrics.json"
MODEL_CARD_FILE = "model_card.md"
TEST_PREDICTIONS_FILE = "test_predictions.parquet"
MANIFEST_FILE = "MANIFEST.sha256"
BUNDLE_FILES = (
    MODEL_FILE,
    CALIBRATION_FILE,
    METADATA_FILE,
    CATALOG_FILE,
    METRICS_FILE,
    MODEL_CARD_FILE,
    TEST_PREDICTIONS_FILE,
)
CHAMPION_DIR = "champion"


@dataclass(frozen=True)
class Calibration:
    """Maps the model's raw probability to a calibrated one; stored as JSON.

    ``isotonic``: piecewise-linear through the points (x, y), flat beyond them.
    ``platt``: 1 / (1 + exp(-(a * logit(p) + b))).  ``none``: identity.
    """

    method: Literal["isotonic", "platt", "none"] = "none"
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    a: float = 1.0
    b: float = 0.0

    def apply(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=float)
        if self.method == "isotonic":
            return cast(np.ndarray, np.interp(p, np.asarray(self.x), np.asarray(self.y)))
        if self.method == "platt":
            eps = 1e-12
            q = np.clip(p, eps, 1 - eps)
            z = self.a * np.log(q / (1 - q)) + self.b
            return cast(np.ndarray, 1.0 / (1.0 + np.exp(-z)))
        return p

    def to_dict(self) -> dict[str, Any]:
        if self.method == "isotonic":
            return {"method": "isotonic", "x": list(self.x), "y": list(self.y)}
        if self.method == "platt":
            return {"method": "platt", "a": self.a, "b": self.b}
        return {"method": "none"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        method = data.get("method")
        if method == "isotonic":
            x, y = tuple(map(float, data["x"])), tuple(map(float, data["y"]))
            if len(x) != len(y) or len(x) < 1 or any(b < a for a, b in itertools.pairwise(x)):
                raise ValueError("isotonic calibration needs equal-length, sorted x and y")
            if any(not (0 <= v <= 1) or math.isnan(v) for v in y):
                raise ValueError("isotonic calibration values must lie in [0, 1]")
            return cls("isotonic", x=x, y=y)
        if method == "platt":
            return cls("platt", a=float(data["a"]), b=float(data["b"]))
        if method == "none":
            return cls("none")
        raise ValueError(f"unknown calibration method {method!r}")


@dataclass(frozen=True)
class OperatingPoints:
    """The churn-probability thresholds of the priorities (docs/metrics.md#priority).

    A probability at or above ``act_now`` makes an account ``act_now``, at or above ``watch``
    ``watch``. Training chooses both on the validation period and stores them in the
    bundle's ``metadata.json`` (``operating_points``) with what each catches there and on
    the test period (``figures``: per point, ``recall``, ``precision``, ``share_flagged`` by
    period). ``source`` says where the thresholds come from: ``validation`` (chosen by
    training) or ``default`` (a bundle without them: the risk bands' bounds).
    """

    act_now: float
    watch: float
    source: str = "default"
    rule: str = ""
    figures: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ok = all(
            isinstance(v, int | float) and math.isfinite(v) for v in (self.act_now, self.watch)
        )
        if not ok or not 0.0 <= self.watch <= self.act_now <= 1.0:
            raise ValueError(
                f"operating points need 0 <= watch <= act_now <= 1, got watch {self.watch!r}, "
                f"act_now {self.act_now!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "act_now": self.act_now,
            "watch": self.watch,
            "source": self.source,
            "rule": self.rule,
            "figures": self.figures,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OperatingPoints:
        return cls(
            act_now=float(data["act_now"]),
            watch=float(data["watch"]),
            source=str(data.get("source", "validation")),
            rule=str(data.get("rule", "")),
            figures=dict(data.get("figures") or {}),
        )


#: The operating points of a bundle that stores none (exported before they existed, or
#: written by hand): the lower bounds of the risk bands ``high`` and ``medium``.
DEFAULT_OPERATING_POINTS = OperatingPoints(
    act_now=dict(RISK_BANDS)["high"],
    watch=dict(RISK_BANDS)["medium"],
    source="default",
    rule="the bundle stores no operating points: the lower bounds of the high and medium "
    "risk bands",
)


@dataclass
class Bundle:
    """A loaded, verified bundle: a LightGBM booster plus its JSON companions."""

    path: Path
    booster: Any  # lightgbm.Booster
    calibration: Calibration
    metadata: dict[str, Any]
    catalog: list[dict[str, Any]]
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return str(self.metadata["model_version"])

    @property
    def feature_names(self) -> list[str]:
        return list(self.metadata["feature_names"])

    @property
    def operating_points(self) -> OperatingPoints:
        """The priorities' thresholds from ``metadata.json``; the defaults without them
        (checked when the bundle is loaded)."""
        stored = self.metadata.get("operating_points")
        return DEFAULT_OPERATING_POINTS if stored is None else OperatingPoints.from_dict(stored)

    @property
    def feature_typical(self) -> dict[str, float]:
        """Each feature's typical value (its median over the training accounts), from
        ``metadata.json``'s ``feature_typical``; empty for a bundle exported without it, and
        without the features whose median is unknown."""
        typical = self.metadata.get("feature_typical")
        if not isinstance(typical, dict):
            return {}
        out = {}
        for name, value in typical.items():
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if number and math.isfinite(float(value)):
                out[str(name)] = float(value)
        return out

    def raw_probability(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(x, raw_score=False), dtype=float)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Calibrated churn probability for rows of ``x`` in ``feature_names`` order."""
        return self.calibration.apply(self.raw_probability(x))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: Path) -> Path:
    """Write MANIFEST.sha256 (sha256sum format) over every bundle file present."""
    lines = [
        f"{sha256_file(folder / name)}  {name}" for name in BUNDLE_FILES if (folder / name).exists()
    ]
    target = folder / MANIFEST_FILE
    target.write_text("\n".join(lines) + "\n")
    return target


def verify_manifest(folder: Path) -> None:
    """Raise BundleIntegrityError unless every required file exists and matches its hash."""
    manifest = folder / MANIFEST_FILE
    if not manifest.is_file():
        raise BundleIntegrityError(f"model bundle {folder} has no {MANIFEST_FILE}")
    expected: dict[str, str] = {}
    for line in manifest.read_text().splitlines():
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        expected[name.strip()] = digest.strip()
    for name in (MODEL_FILE, CALIBRATION_FILE, METADATA_FILE, CATALOG_FILE):
        if name not in expected:
            raise BundleIntegrityError(f"model bundle {folder}: {MANIFEST_FILE} omits {name}")
    for name, digest in expected.items():
        path = folder / name
        if not path.is_file():
            raise BundleIntegrityError(f"model bundle {folder} is missing {name}")
        if sha256_file(path) != digest:
            raise BundleIntegrityError(
                f"model bundle {folder}: {name} does not match its sha256 in {MANIFEST_FILE}",
                hint="the bundle was changed or truncated after export; re-export it",
            )


def _read_json(folder: Path, name: str) -> Any:
    try:
        return json.loads((folder / name).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleIntegrityError(f"model bundle {folder}: cannot read {name}: {exc}") from exc


def _bundle_folder(folder: str | Path) -> Path:
    """``folder`` as a Path; a BundleIntegrityError when it is not a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleIntegrityError(
            f"no model bundle at {folder}", hint="train one with `make train`"
        )
    return folder


def verify_bundle(folder: str | Path) -> None:
    """Refuse a missing folder, a bundle holding a pickle, failing its sha256 manifest or with
    a ``model.txt`` that is not a whole LightGBM model - all before LightGBM reads anything."""
    from churn.bundle_checks import check_model_text, refuse_pickles

    folder = _bundle_folder(folder)
    refuse_pickles(folder)
    verify_manifest(folder)
    check_model_text(folder / MODEL_FILE)  # LightGBM crashes on some broken files


def load_bundle(folder: str | Path, verify: bool = True) -> Bundle:
    """Load a bundle with LightGBM and JSON only (no unpickling). With ``verify`` (the default)
    :func:`verify_bundle` runs first."""
    import lightgbm as lgb

    folder = _bundle_folder(folder)
    if verify:
        verify_bundle(folder)
    metadata = _read_json(folder, METADATA_FILE)
    try:
        calibration = Calibration.from_dict(_read_json(folder, CALIBRATION_FILE))
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleIntegrityError(f"model bundle {folder}: bad calibration: {exc}") from exc
    catalog = _read_json(folder, CATALOG_FILE)
    metrics = _read_json(folder, METRICS_FILE) if (folder / METRICS_FILE).exists() else {}
    try:
        booster = lgb.Booster(model_file=str(folder / MODEL_FILE))
    except Exception as exc:  # LightGBM raises its own error type for a broken file
        raise BundleIntegrityError(
            f"model bundle {folder}: LightGBM cannot read model: {exc}"
        ) from exc
    for key in ("model_version", "feature_names"):
        if key not in metadata:
            raise BundleIntegrityError(f"model bundle {folder}: metadata.json lacks {key!r}")
    if metadata.get("operating_points") is not None:
        try:
            OperatingPoints.from_dict(metadata["operating_points"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BundleIntegrityError(
                f"model bundle {folder}: bad operating_points in metadata.json: {exc}"
            ) from exc
    if list(booster.feature_name()) != list(metadata["feature_names"]):
        raise BundleIntegrityError(
            f"model bundle {folder}: model features differ from metadata feature_names"
        )
    return Bundle(folder, booster, calibration, metadata, catalog, metrics)
