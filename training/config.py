"""The training configuration (``configs/train.yaml``): split, LightGBM, search, calibration,
evaluation, operating points, features and promotion settings, validated on load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from churn.errors import ConfigError

if TYPE_CHECKING:
    from churn.settings import Settings, SnapshotSettings
    from features.health import HealthConfig

# Parameters that make LightGBM give the same model for the same data; set by the trainer,
# so a config file cannot switch them off by accident.
DETERMINISTIC_PARAMS: dict[str, Any] = {
    "deterministic": True,
    "force_row_wise": True,
    "verbosity": -1,
}
# Keys a config may not set because the pipeline owns them.
_RESERVED = {"seed", "metric", "deterministic", "force_row_wise", "force_col_wise", "verbosity"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitConfig(_Strict):
    """Periods of the time-based split, counted back from the latest labeled ``as_of``, and
    what the trainer falls back to when the data is too short for them (docs/split.md)."""

    test_months: int = Field(6, ge=1, le=60)
    validation_months: int = Field(6, ge=1, le=60)
    gap_days: int | None = Field(
        None, ge=0, le=1000, description="left out between periods; None = the label horizon"
    )
    min_train_months: int = Field(6, ge=1, le=120)
    min_churners: int = Field(
        5, ge=1, le=10_000, description="least churned and retained rows in validation and test"
    )
    holdout_share: float = Field(
        0.2, gt=0, lt=1, description="share of accounts held out for validation (group holdout)"
    )


class LightGBMConfig(_Strict):
    num_boost_round: int = Field(2000, ge=1, le=100_000)
    early_stopping_rounds: int = Field(100, ge=1, le=10_000)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _no_reserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted(set(value) & _RESERVED)
        if reserved:
            raise ValueError(
                f"{reserved} are set by the trainer (seed from --seed/settings, metric and "
                "determinism fixed); remove them"
            )
        objective = value.get("objective", "binary")
        if objective != "binary":
            raise ValueError(f"objective must be binary, got {objective!r}")
        return value


class SearchConfig(_Strict):
    trials: int = Field(0, ge=0, le=10_000)
    timeout_seconds: float | None = Field(None, gt=0)


class CalibrationConfig(_Strict):
    method: Literal["isotonic", "platt", "none"] = "isotonic"
    min_positives_isotonic: int = Field(50, ge=1)


class EvaluationConfig(_Strict):
    ece_bins: int = Field(10, ge=2, le=100)
    # Intervals of the test metrics: resamples of the test accounts (0 = no intervals) and
    # the share of the resampled values each interval holds (training.bootstrap).
    bootstrap_samples: int = Field(200, ge=0, le=10_000)
    interval_level: float = Field(0.95, gt=0, lt=1)


class PruneConfig(_Strict):
    """Optional pruning decided on the validation period only (docs/feature-selection.md):
    after the first fit, each feature (or group of features correlated at
    ``group_correlation`` or more) is permuted on the validation rows ``repeats`` times; its
    importance is the mean rise of the validation log loss. A group is kept when its
    importance minus ``standard_errors`` times its standard error (clustered by account) is
    above ``min_gain``; the rest are dropped and the model is refitted on the kept ones (kept
    only if its validation log loss is not higher, else every feature stays)."""

    enabled: bool = False
    repeats: int = Field(5, ge=1, le=100)
    min_gain: float = Field(0.0, ge=0, le=1, description="log loss a kept group must add")
    standard_errors: float = Field(2.0, ge=0, le=10, description="0: the mean alone decides")
    group_correlation: float | None = Field(
        0.9, gt=0, le=1, description="|Spearman| joining features into one group; None = none"
    )


class FeaturesConfig(_Strict):
    """The model's features: the catalogue's model inputs minus ``exclude`` (feature names,
    families or bases), optionally pruned on the validation period."""

    exclude: list[str] = Field(default_factory=list)
    prune: PruneConfig = Field(default_factory=PruneConfig)

    @field_validator("exclude")
    @classmethod
    def _known_and_leaves_features(cls, value: list[str]) -> list[str]:
        from training.select import resolve_features

        try:
            resolve_features(value)
        except ConfigError as exc:
            # The file's error names the key already.
            raise ValueError(str(exc).removeprefix("features.exclude: ")) from exc
        return value


class OperatingPointsConfig(_Strict):
    """Targets of the priorities' probability thresholds, met on the validation period
    (docs/metrics.md#operating-points): the share of the churners each must catch."""

    act_now_recall: float = Field(0.25, gt=0, le=1)
    watch_recall: float = Field(0.5, gt=0, le=1)
    min_rows: int = Field(20, ge=1, le=100_000)

    @model_validator(mode="after")
    def _watch_catches_more(self) -> OperatingPointsConfig:
        if self.watch_recall < self.act_now_recall:
            raise ValueError(
                f"watch_recall ({self.watch_recall:g}) must be at least act_now_recall "
                f"({self.act_now_recall:g}): watch is the wider list"
            )
        return self


class PromotionConfig(_Strict):
    metric: Literal["pr_auc", "roc_auc"] = "pr_auc"
    ece_tolerance: float = Field(0.01, ge=0, le=1)


class MlflowConfig(_Strict):
    experiment: str = Field("churn", min_length=1)


class TrainConfig(_Strict):
    """The validated content of ``configs/train.yaml``."""

    version: int = Field(1, ge=1)
    split: SplitConfig = Field(default_factory=SplitConfig)
    lightgbm: LightGBMConfig = Field(default_factory=LightGBMConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    operating_points: OperatingPointsConfig = Field(default_factory=OperatingPointsConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)

    def lgb_params(self, seed: int) -> dict[str, Any]:
        """The LightGBM parameters of a run: the config's plus the seed and determinism."""
        params: dict[str, Any] = {"objective": "binary", "num_threads": 1}
        params.update(self.lightgbm.params)
        params.update(DETERMINISTIC_PARAMS)
        params.update({"seed": seed, "metric": "binary_logloss"})
        return params


def load_train_config(path: Path | str) -> TrainConfig:
    """Read and validate a training config; any problem is a ConfigError naming the file."""
    from churn.config_files import load_yaml_model

    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"training config {path} does not exist",
            hint="pass an existing YAML file with --config, or drop the option to use "
            "configs/train.yaml",
        )
    return load_yaml_model(
        path,
        TrainConfig,
        "train config",
        hint="see the comments in configs/train.yaml for the expected layout",
    )


# ------------------------------------------------------------------------------ one run's plan


@dataclass(frozen=True)
class RunPlan:
    """Everything one training run is configured with, resolved and validated before any data
    is read: the training config, the snapshot (label) settings, the seed, the search budget,
    the model's features and the health rules."""

    config: TrainConfig
    snapshots: SnapshotSettings
    seed: int
    trials: int
    features: tuple[str, ...]
    health: HealthConfig


def plan_run(
    settings: Settings,
    *,
    label_mode: str | None = None,
    horizon_days: int | None = None,
    config_path: Path | str | None = None,
    trials: int | None = None,
    seed: int | None = None,
) -> RunPlan:
    """The plan of a run: ``settings`` with the command's overrides (``label_mode`` and
    ``horizon_days`` over ``settings.snapshots``, ``trials`` over the config's search budget,
    ``seed`` over ``settings.seed``); a bad value is a ConfigError."""
    from features.catalog import FEATURES
    from features.health import load_health_config
    from training.select import resolve_features

    config = load_train_config(config_path or settings.train_config)
    snapshots = _snapshot_settings(settings, label_mode, horizon_days)
    n_trials = config.search.trials if trials is None else int(trials)
    if n_trials < 0:
        raise ConfigError(f"--trials must be 0 or more, got {n_trials}")
    return RunPlan(
        config=config,
        snapshots=snapshots,
        seed=settings.seed if seed is None else int(seed),
        trials=n_trials,
        features=resolve_features(config.features.exclude),
        health=load_health_config(settings.health_config, known_features=FEATURES),
    )


def _snapshot_settings(
    settings: Settings, label_mode: str | None, horizon_days: int | None
) -> SnapshotSettings:
    from pydantic import ValidationError

    from churn.settings import SnapshotSettings

    data = settings.snapshots.model_dump()
    if label_mode is not None:
        data["label_mode"] = label_mode
    if horizon_days is not None:
        data["horizon_days"] = horizon_days
    try:
        return SnapshotSettings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(
            f"invalid {'.'.join(map(str, first['loc']))}: {first['msg']}",
            hint="--label-mode is events or inactivity; --horizon-days is 1 to 730",
        ) from exc
