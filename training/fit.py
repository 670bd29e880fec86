"""The model fit: LightGBM with early stopping on the validation period's log loss, after an
optional seeded Optuna search over its main parameters.

Everything that decides the model is seeded and single-order (LightGBM ``deterministic``,
fixed threads, row-wise histograms; a seeded TPE sampler), so the same data, configuration and
seed give the same model. On a Dask engine the final fit is ``lightgbm.dask`` on the workers
that hold the snapshots (:mod:`training.distributed`); the search always runs in this process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from training.progress import SILENT, Advance, Progress

if TYPE_CHECKING:
    import lightgbm as lgb
    from distributed import Client

    from churn.engine import Engine
    from features.distributed import PartitionedSnapshots
    from training.config import LightGBMConfig, RunPlan, TrainConfig
    from training.split import SplitParts

Rows = tuple[np.ndarray, np.ndarray]
"""Model inputs and labels of some rows."""


@dataclass(frozen=True)
class FittedModel:
    """The fitted model: the booster as the bundle will hold it (re-read from ``model_text``,
    so every prediction made with it is the bundle's own), its LightGBM parameters, the
    early-stopping round and the search's best validation PR AUC (None without a search)."""

    booster: lgb.Booster
    model_text: str
    best_iteration: int
    params: dict[str, Any]
    search_score: float | None


def fit_model(
    engine: Engine,
    snapshots: PartitionedSnapshots,
    parts: SplitParts,
    plan: RunPlan,
    progress: Progress = SILENT,
    *,
    params: dict[str, Any] | None = None,
) -> FittedModel:
    """Search the parameters (with ``plan.trials`` > 0) and fit the booster on the training
    period on ``engine``, early stopping on the validation period. ``params`` (a fitted
    model's, as in a refit on fewer features) are used as they are, with no search."""
    import lightgbm as lgb

    search_score = None
    if params is None:
        params = plan.config.lgb_params(plan.seed)
        if plan.trials > 0:
            params, search_score = search_params(
                params, parts, plan.config, plan.trials, plan.seed, progress
            )
    fitted = _fit_on_engine(engine, snapshots, parts, params, plan.config.lightgbm, progress)
    best_iteration = int(fitted.best_iteration or fitted.current_iteration())
    model_text = fitted.model_to_string(num_iteration=best_iteration)
    return FittedModel(
        booster=lgb.Booster(model_str=model_text),
        model_text=model_text,
        best_iteration=best_iteration,
        params=params,
        search_score=search_score,
    )


def _fit_on_engine(
    engine: Engine,
    snapshots: PartitionedSnapshots,
    parts: SplitParts,
    params: dict[str, Any],
    cfg: LightGBMConfig,
    progress: Progress,
) -> lgb.Booster:
    features = list(parts.features)
    valid = (parts.validation.x, parts.validation.y)

    def in_process() -> lgb.Booster:
        # The training rows are already in this process (parts.train).
        with progress.bar("training LightGBM (early stopping)", cfg.num_boost_round) as advance:
            train = (parts.train.x, parts.train.y)
            return fit_booster(params, train, valid, features, cfg, advance)

    def on_cluster(client: Client) -> lgb.Booster:
        from training.distributed import fit_on_cluster

        with progress.step("training LightGBM on the Dask cluster (early stopping)"):
            return fit_on_cluster(
                client, snapshots, parts.split.train, valid, params, features, cfg
            )

    return engine.collective(in_process=in_process, on_cluster=on_cluster)


def _dataset(x: np.ndarray, y: np.ndarray, features: list[str], reference: Any = None) -> Any:
    import lightgbm as lgb

    return lgb.Dataset(x, y, feature_name=features, reference=reference, free_raw_data=False)


def fit_booster(
    params: dict[str, Any],
    train: Rows,
    valid: Rows,
    features: list[str],
    cfg: LightGBMConfig,
    advance: Advance | None = None,
) -> lgb.Booster:
    """LightGBM in this process with early stopping on the validation rows' log loss;
    ``advance`` (if given) is called once per boosting round for a progress display."""
    import lightgbm as lgb

    dtrain = _dataset(*train, features)
    dvalid = _dataset(*valid, features, reference=dtrain)
    callbacks: list[Callable[..., Any]] = [
        lgb.early_stopping(cfg.early_stopping_rounds, first_metric_only=True, verbose=False)
    ]
    if advance is not None:
        callbacks.append(lambda env: advance())
    return lgb.train(
        params,
        dtrain,
        num_boost_round=cfg.num_boost_round,
        valid_sets=[dvalid],
        valid_names=["validation"],
        callbacks=callbacks,
    )


def search_params(
    params: dict[str, Any],
    parts: SplitParts,
    cfg: TrainConfig,
    trials: int,
    seed: int,
    progress: Progress = SILENT,
) -> tuple[dict[str, Any], float]:
    """Optuna TPE search (seeded) over the main LightGBM knobs; each trial trains with early
    stopping and is scored by PR AUC on the validation rows. Returns the best parameters and
    their score."""
    import optuna
    from sklearn.metrics import average_precision_score

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    features = list(parts.features)
    train = (parts.train.x, parts.train.y)
    valid = (parts.validation.x, parts.validation.y)

    def objective(trial: optuna.Trial) -> float:
        trial_params = {
            **params,
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.1, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 4, 63, log=True),
            "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 20, 400, log=True),
            "feature_fraction": trial.suggest_float("feature_fraction", 0.4, 1.0),
            "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
            "bagging_freq": 1,
            "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 50.0, log=True),
        }
        booster = fit_booster(trial_params, train, valid, features, cfg.lightgbm)
        return float(average_precision_score(valid[1], booster.predict(valid[0])))

    sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    with progress.bar(f"hyperparameter search ({trials} trials)", trials) as advance:
        study.optimize(
            objective,
            n_trials=trials,
            timeout=cfg.search.timeout_seconds,
            callbacks=[lambda study, trial: advance()],
        )
    best = {**params, **study.best_params, "bagging_freq": 1}
    return best, float(study.best_value)
