"""The cluster form of the model fit (:func:`training.fit.fit_model` on a Dask engine):
``lightgbm.dask`` on the partitioned snapshots.

Only the fit differs from the single-process path: the snapshots are built on the workers
(:mod:`features.distributed`), the client splits them by time with the same code, and each
worker gathers the training rows of the partitions it already holds into one block, so the
fit's inputs are built where the snapshots are (the client's copy of the snapshots, which the
split, the lineage and the baselines read, is not sent back out). ``DaskLGBMClassifier``
then trains one model data-parallel over those blocks, with the same parameters and the same
early stopping on the validation period's log loss. Every worker gets the whole validation
period (one copy each), so each computes the same validation loss for the same trees and all
stop at the same round.

The model is not bit-identical to the single-process one: in LightGBM's distributed mode each
worker finds the histogram bins of some features from its own rows and bags its own rows, and
lightgbm.dask ranks the workers in an order that varies between runs, so two Dask runs can
differ too. On generated demos the Dask model's test ROC AUC has come out up to 0.04 below the
single-process model's (docs/cluster.md, known gap).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from churn.errors import ChurnError
from training.evaluate import feature_matrix

if TYPE_CHECKING:
    import lightgbm as lgb
    from distributed import Client

    from features.distributed import PartitionedSnapshots
    from training.config import LightGBMConfig

# LightGBM parameter -> the scikit-learn estimator argument that is its alias. The estimator
# always passes its own arguments, so a parameter given under its LightGBM name would meet
# the estimator's default under the alias; naming it the estimator's way avoids the clash.
_ESTIMATOR_NAMES = {
    "boosting": "boosting_type",
    "bin_construct_sample_cnt": "subsample_for_bin",
    "min_data_in_leaf": "min_child_samples",
    "min_sum_hessian_in_leaf": "min_child_weight",
    "feature_fraction": "colsample_bytree",
    "bagging_fraction": "subsample",
    "bagging_freq": "subsample_freq",
    "lambda_l1": "reg_alpha",
    "lambda_l2": "reg_lambda",
    "min_gain_to_split": "min_split_gain",
    "seed": "random_state",
}
# Set per worker by lightgbm.dask (threads of the Dask worker, number of machines).
_DROPPED = {"num_threads", "num_machines"}
LABEL = "churned"


class _QuietLogger:
    """LightGBM's logger on the client during a Dask fit: drops info (its search for free
    ports, printed on stdout, where it would mix with ``--json`` output) and the warning that
    lightgbm.dask always gives about ``n_jobs`` (it sets threads per worker itself); other
    warnings go to logging. The workers' own LightGBM lines go to their stdout (a local
    cluster's workers have theirs on /dev/null: ``churn.engine``)."""

    expected = ("Parameter n_jobs will be ignored.",)

    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        if msg.strip() not in self.expected:
            logging.getLogger("lightgbm").warning(msg)


@contextmanager
def _quiet_client_lightgbm() -> Iterator[None]:
    """``_QuietLogger`` in this process for the ``with`` block, then the previous logger."""
    import lightgbm as lgb
    from lightgbm import basic

    # The current logger lives in private module globals; read them only to put them back.
    previous = (basic._LOGGER, basic._INFO_METHOD_NAME, basic._WARNING_METHOD_NAME)
    lgb.register_logger(_QuietLogger())
    try:
        yield
    finally:
        lgb.register_logger(*previous)


def estimator_params(params: dict[str, Any]) -> dict[str, Any]:
    """The LightGBM parameters of a run as ``DaskLGBMClassifier`` arguments."""
    return {_ESTIMATOR_NAMES.get(k, k): v for k, v in params.items() if k not in _DROPPED}


def _training_block(
    features: list[str], rows: list[np.ndarray], *parts: pd.DataFrame
) -> pd.DataFrame:
    """The chosen rows of this worker's partitions: model inputs (``feature_matrix``, as on the
    single-process path) and the label."""
    picked = [part.iloc[r] for part, r in zip(parts, rows, strict=True)]
    frame = pd.concat(picked, ignore_index=True) if picked else pd.DataFrame()
    block = pd.DataFrame(feature_matrix(frame, features), columns=features)
    block[LABEL] = frame[LABEL].to_numpy(dtype=float)
    return block


def _inputs(block: pd.DataFrame) -> pd.DataFrame:
    return block.drop(columns=LABEL)


def _label(block: pd.DataFrame) -> pd.Series:
    return block[LABEL]


def _blocks(
    client: Client, snapshots: PartitionedSnapshots, mask: np.ndarray, features: list[str]
) -> tuple[list[Any], list[Any]]:
    """Per worker, futures of (inputs, label) of the rows of ``mask`` (over the gathered
    frame) held by that worker's partitions."""
    if snapshots.positions is None:
        raise ChurnError("the partitioned snapshots were not gathered before the split")
    part, row = snapshots.positions
    by_worker: dict[str, list[int]] = {}
    for i, home in enumerate(snapshots.parts.homes):
        by_worker.setdefault(home, []).append(i)
    inputs, labels = [], []
    for worker, indices in sorted(by_worker.items()):
        rows = [np.sort(row[mask & (part == i)]) for i in indices]
        if not sum(len(r) for r in rows):
            continue
        where = {"workers": [worker], "allow_other_workers": False}
        block = client.submit(
            _training_block,
            features,
            rows,
            *[snapshots.parts.items[i] for i in indices],
            pure=False,
            **where,
        )
        inputs.append(client.submit(_inputs, block, pure=False, **where))
        labels.append(client.submit(_label, block, pure=False, **where))
    return inputs, labels


def fit_on_cluster(
    client: Client,
    snapshots: PartitionedSnapshots,
    train_mask: np.ndarray,
    valid: tuple[np.ndarray, np.ndarray],
    params: dict[str, Any],
    features: list[str],
    cfg: LightGBMConfig,
) -> lgb.Booster:
    """``training.fit.fit_booster`` with ``lightgbm.dask``: train on the rows of
    ``train_mask`` (a mask over ``snapshots.gather()``'s frame) where they lie, early stopping
    on ``valid`` (the validation period's inputs and labels)."""
    import dask.dataframe as dd
    import lightgbm as lgb
    from lightgbm.dask import DaskLGBMClassifier

    inputs, labels = _blocks(client, snapshots, np.asarray(train_mask, dtype=bool), features)
    meta_x = pd.DataFrame({f: pd.Series(dtype="float64") for f in features})
    meta_y = pd.Series(dtype="float64", name=LABEL)
    x = dd.from_delayed(inputs, meta=meta_x, verify_meta=False)
    y = dd.from_delayed(labels, meta=meta_y, verify_meta=False)
    # One full copy of the validation period per training block (see the module docstring).
    x_va = client.scatter(pd.DataFrame(valid[0], columns=features), broadcast=True, hash=False)
    y_va = client.scatter(
        pd.Series(valid[1], dtype="float64", name=LABEL), broadcast=True, hash=False
    )
    copies = len(inputs)
    eval_x = dd.from_delayed([x_va] * copies, meta=meta_x, verify_meta=False)
    eval_y = dd.from_delayed([y_va] * copies, meta=meta_y, verify_meta=False)
    model = DaskLGBMClassifier(
        client=client, n_estimators=cfg.num_boost_round, **estimator_params(params)
    )
    with _quiet_client_lightgbm():
        model.fit(
            x,
            y,
            eval_X=(eval_x,),
            eval_y=(eval_y,),
            eval_names=["validation"],
            callbacks=[
                lgb.early_stopping(cfg.early_stopping_rounds, first_metric_only=True, verbose=False)
            ],
        )
    return model.booster_


__all__ = ["estimator_params", "fit_on_cluster"]
