"""Buy-till-you-die baselines: the BG/NBD model and days since the last purchase.

The BG/NBD model (Fader, Hardie and Lee 2005, "Counting your customers the easy way") is the
standard probabilistic answer to "has this customer stopped buying?" when nothing but the
purchase dates is known. While alive, a customer buys as a Poisson process of rate
``lambda ~ Gamma(r, alpha)``; right after each repeat purchase they drop out for good with
probability ``p ~ Beta(a, b)``. A customer is summarised by ``x`` (repeat purchases), ``t_x``
(time of the last purchase) and ``T`` (age), all times since the first purchase.

Written here from the published likelihood with scipy rather than taken from a library:
``lifetimes`` (last release 2020) is unmaintained and breaks on current pandas, numpy and
scipy; ``btyd`` is a 2022 beta; ``pymc-marketing`` brings pymc and pytensor, far too heavy
for one baseline. The fit reproduces the paper's published estimates on its CDNOW sample
(tests/training/test_btyd.py).

Formulas (``B`` the beta function, ``[x>0]`` 1 when ``x > 0``):

* likelihood of one customer:
  ``B(a, b+x)/B(a, b) G(r+x) alpha^r / (G(r) (alpha+T)^(r+x))
  + [x>0] B(a+1, b+x-1)/B(a, b) G(r+x) alpha^r / (G(r) (alpha+t_x)^(r+x))``;
* ``P(alive | x, t_x, T) = 1 / (1 + [x>0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))``;
* ``P(no purchase in (T, T+t]) = 1 - P(alive) + P(alive) ((alpha+T)/(alpha+T+t))^(r+x)``
  (dropout happens only right after a purchase, so a customer who buys nothing in the window
  cannot drop out inside it).

:func:`purchase_baselines` turns a source's invoices into the two baseline scores of the
training run's test rows (docs/metrics.md#model-evaluation): purchases are distinct invoice
days strictly before each row's ``as_of``, time is in days, and the model is fitted once per
``as_of`` date on every account with a purchase before it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize
from scipy.special import betaln, gammaln

#: Parameter names, in the order of every parameter vector here.
PARAMS: tuple[str, ...] = ("r", "alpha", "a", "b")
#: The recency score of an account with no invoice before ``as_of``: more days than any real
#: gap, so such an account ranks as the most at risk.
NO_PURCHASE_DAYS = 1_000_000.0
#: The fit keeps each log parameter within +-LOG_BOUND.
LOG_BOUND = 20.0


@dataclass(frozen=True)
class BGNBDParams:
    """The four BG/NBD parameters (all > 0): purchase-rate shape ``r`` and scale ``alpha``
    (in the data's time unit), dropout shape ``a`` and ``b``."""

    r: float
    alpha: float
    a: float
    b: float

    def as_array(self) -> np.ndarray:
        return np.array([self.r, self.alpha, self.a, self.b], dtype=float)


@dataclass(frozen=True)
class BGNBDFit:
    """A maximum-likelihood fit: the parameters, the total log-likelihood, the number of
    customers (weights summed), the asymptotic standard errors of the log parameters (from
    the inverse Hessian; NaN when it is not positive definite) and the optimiser's verdict."""

    params: BGNBDParams
    log_likelihood: float
    customers: float
    log_std_errors: np.ndarray
    converged: bool

    def interval(self, z: float = 1.959964) -> dict[str, tuple[float, float]]:
        """Asymptotic ``exp(log estimate -/+ z SE)`` interval of each parameter."""
        est = np.log(self.params.as_array())
        return {
            name: (float(np.exp(e - z * s)), float(np.exp(e + z * s)))
            for name, e, s in zip(PARAMS, est, self.log_std_errors, strict=True)
        }


def _summary_arrays(
    x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float)
    t_x = np.asarray(t_x, dtype=float)
    T = np.asarray(T, dtype=float)
    if not (x.shape == t_x.shape == T.shape) or x.ndim != 1:
        raise ValueError("x, t_x and T must be 1-d arrays of equal length")
    if not (np.isfinite(x).all() and np.isfinite(t_x).all() and np.isfinite(T).all()):
        raise ValueError("x, t_x and T must be finite")
    if (x < 0).any() or (t_x < 0).any() or (t_x > T).any():
        raise ValueError("need x >= 0 and 0 <= t_x <= T")
    return x, t_x, T


def log_likelihood(
    params: BGNBDParams | np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """Log-likelihood of each customer's ``(x, t_x, T)`` under ``params``."""
    r, alpha, a, b = params.as_array() if isinstance(params, BGNBDParams) else params
    x, t_x, T = _summary_arrays(x, t_x, T)
    return _log_likelihood(r, alpha, a, b, x, t_x, T)


def _log_likelihood(
    r: float, alpha: float, a: float, b: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha) - betaln(a, b)
    alive = betaln(a, b + x) - (r + x) * np.log(alpha + T)
    repeat = x > 0
    # B(a+1, b+x-1) only exists for x > 0; x = 0 contributes nothing (log 0).
    dropped = np.where(
        repeat,
        betaln(a + 1, b + (np.where(repeat, x, 1.0) - 1)) - (r + x) * np.log(alpha + t_x),
        -np.inf,
    )
    return np.asarray(common + np.logaddexp(alive, dropped), dtype=float)


def _collapse(
    x: np.ndarray, t_x: np.ndarray, T: np.ndarray, weights: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Identical ``(x, t_x, T)`` rows as one row with their summed weight."""
    w = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != x.shape or (w < 0).any() or not np.isfinite(w).all():
        raise ValueError("weights must be finite, non-negative and one per customer")
    rows, inverse = np.unique(np.column_stack([x, t_x, T]), axis=0, return_inverse=True)
    summed = np.bincount(inverse.ravel(), weights=w, minlength=len(rows))
    return rows[:, 0], rows[:, 1], rows[:, 2], summed


def fit_bgnbd(
    x: np.ndarray,
    t_x: np.ndarray,
    T: np.ndarray,
    weights: np.ndarray | None = None,
) -> BGNBDFit:
    """Maximum-likelihood BG/NBD parameters for customers ``(x, t_x, T)`` (optionally
    weighted: ``weights[i]`` customers share row ``i``).

    The optimiser works on the log parameters (so every parameter stays positive), starting
    from ``r = a = b = 1`` and ``alpha`` = the mean age: scale-free, so the time unit does not
    matter. L-BFGS-B on the log parameters (each within +-:data:`LOG_BOUND`), Nelder-Mead
    after it when it does not converge; the standard errors come from a
    finite-difference Hessian of the log-likelihood in the log parameters.
    """
    x, t_x, T = _summary_arrays(x, t_x, T)
    if len(x) == 0:
        raise ValueError("fitting the BG/NBD model needs at least one customer")
    x, t_x, T, w = _collapse(x, t_x, T, weights)
    total = float(w.sum())
    if total <= 0:
        raise ValueError("fitting the BG/NBD model needs a positive total weight")
    scale = max(float(np.average(T, weights=w)), 1e-9)

    def negative(theta: np.ndarray) -> float:
        r, alpha, a, b = np.exp(theta)
        value = -float(np.dot(w, _log_likelihood(r, alpha, a, b, x, t_x, T)))
        return value / total if np.isfinite(value) else np.inf

    # Log parameters within +-LOG_BOUND: a degenerate sample (nobody repeats, say) drives some
    # parameter towards 0 or infinity; it stops at the bound instead of overflowing.
    bounds = [(-LOG_BOUND, LOG_BOUND)] * 4
    start = np.log([1.0, scale, 1.0, 1.0])
    with np.errstate(all="ignore"):  # trial points far out overflow; they score +inf
        best = optimize.minimize(
            negative,
            start,
            method="L-BFGS-B",
            bounds=bounds,
            options={"ftol": 1e-14, "gtol": 1e-9, "maxiter": 2000},
        )
        if not best.success:  # a rough surface: Nelder-Mead needs no gradient
            simplex = optimize.minimize(
                negative,
                best.x,
                method="Nelder-Mead",
                bounds=bounds,
                options={"xatol": 1e-7, "fatol": 1e-12, "maxfev": 2000},
            )
            best = simplex if simplex.fun <= best.fun else best
        theta = np.clip(np.asarray(best.x, dtype=float), -LOG_BOUND, LOG_BOUND)
        hessian = _hessian(negative, theta) * total
    std = np.full(4, np.nan)
    if np.isfinite(hessian).all():
        values, vectors = np.linalg.eigh(hessian)
        if np.all(values > 1e-12 * max(1.0, float(np.abs(values).max()))):
            std = np.sqrt(np.diag((vectors / values) @ vectors.T))
    r, alpha, a, b = (float(v) for v in np.exp(theta))
    return BGNBDFit(
        params=BGNBDParams(r, alpha, a, b),
        log_likelihood=-float(best.fun) * total,
        customers=total,
        log_std_errors=std,
        converged=bool(best.success),
    )


def _hessian(f: Callable[[np.ndarray], float], theta: np.ndarray, step: float = 1e-4) -> np.ndarray:
    """Central finite-difference Hessian of scalar ``f`` at ``theta``."""
    n = len(theta)
    unit = np.eye(n) * step
    out = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            ei, ej = unit[i], unit[j]
            value = (
                f(theta + ei + ej) - f(theta + ei - ej) - f(theta - ei + ej) + f(theta - ei - ej)
            ) / (4 * step * step)
            out[i, j] = out[j, i] = value
    return out


def p_alive(params: BGNBDParams, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Probability that each customer is still alive at ``T`` (1 for ``x = 0``)."""
    x, t_x, T = _summary_arrays(x, t_x, T)
    r, alpha, a, b = params.as_array()
    repeat = x > 0
    log_ratio = (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
    log_odds = np.where(
        repeat, np.log(a) - np.log(b + (np.where(repeat, x, 1.0) - 1)) + log_ratio, -np.inf
    )
    return np.asarray(1.0 / (1.0 + np.exp(log_odds)), dtype=float)


def p_no_purchase(
    params: BGNBDParams, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, t: np.ndarray | float
) -> np.ndarray:
    """Probability that each customer makes no purchase in ``(T, T + t]``."""
    x, t_x, T = _summary_arrays(x, t_x, T)
    t = np.broadcast_to(np.asarray(t, dtype=float), x.shape)
    if (t < 0).any() or not np.isfinite(t).all():
        raise ValueError("the window t must be finite and >= 0")
    r, alpha, _, _ = params.as_array()
    alive = p_alive(params, x, t_x, T)
    quiet = np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + t)))
    return np.asarray(1.0 - alive + alive * quiet, dtype=float)


def simulate_bgnbd(
    params: BGNBDParams, T: np.ndarray, rng: np.random.Generator, horizon: float = 0.0
) -> pd.DataFrame:
    """Customers drawn from the BG/NBD model, first purchase at time 0, observed until each
    one's ``T``: their ``x``, ``t_x``, ``T`` and whether they bought in ``(T, T + horizon]``
    (``bought_after``). For tests and checks of the formulas above."""
    T = np.asarray(T, dtype=float)
    n = len(T)
    lam = rng.gamma(params.r, 1.0 / params.alpha, n)
    p = rng.beta(params.a, params.b, n)
    x = np.zeros(n, dtype=np.int64)
    t_x = np.zeros(n)
    bought_after = np.zeros(n, dtype=bool)
    for i in range(n):
        now = 0.0
        while True:
            now += rng.exponential(1.0 / lam[i]) if lam[i] > 0 else np.inf
            if now > T[i]:
                bought_after[i] = now <= T[i] + horizon
                break
            x[i] += 1
            t_x[i] = now
            if rng.random() < p[i]:
                break
    return pd.DataFrame({"x": x, "t_x": t_x, "T": T, "bought_after": bought_after})


# ------------------------------------------------------------ baselines of a training run


def purchase_summary(invoices: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Each account's ``x``, ``t_x``, ``T`` (days) and ``last_day`` from its invoices issued
    strictly before ``as_of``: a purchase is a distinct invoice day, ``x`` the purchases after
    the first, ``t_x`` the last purchase day and ``T`` the ``as_of`` day, both counted from
    the first purchase day. Indexed by ``account_id``; accounts without a purchase are absent."""
    day0 = pd.Timestamp(as_of).normalize()
    issued = pd.to_datetime(invoices["issued_at"])
    keep = issued < pd.Timestamp(as_of)  # False for a missing date (NaT)
    days = pd.DataFrame(
        {
            "account_id": invoices.loc[keep, "account_id"].astype("string").to_numpy(),
            "day": ((issued[keep].dt.normalize() - day0) / pd.Timedelta(days=1)).to_numpy(float),
        }
    ).drop_duplicates()
    grouped = days.groupby("account_id", sort=True)["day"]
    first, last, count = grouped.min(), grouped.max(), grouped.size()
    return pd.DataFrame(
        {
            "x": (count - 1).astype(float),
            "t_x": last - first,
            "T": -first,
            "last_day": last,
        }
    )


def purchase_baselines(invoices: pd.DataFrame | None, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """The two purchase baselines' scores (higher = more risk) of ``rows`` (``account_id``,
    ``as_of``, ``label_window_end``), each from the invoices issued before the row's ``as_of``:

    * ``recency``: days since the last purchase (:data:`NO_PURCHASE_DAYS` without one);
    * ``bgnbd``: the BG/NBD probability of no purchase in the row's label window
      ``(as_of, label_window_end]``, the model fitted on every account with a purchase before
      that ``as_of`` (once per date). An account without a purchase gets the model's answer
      for a customer whose first purchase is at ``as_of`` (``x = t_x = T = 0``: the
      probability that a new customer makes no repeat purchase in the window). A date with
      fewer than two accounts with a purchase has nothing to fit on: its rows score 0.5.

    Empty when ``invoices`` is None (nothing to compute them from)."""
    if invoices is None:
        return {}
    missing = [c for c in ("account_id", "as_of", "label_window_end") if c not in rows]
    if missing:
        raise ValueError(f"the purchase baselines need the rows' {', '.join(missing)}")
    as_of = pd.to_datetime(rows["as_of"]).reset_index(drop=True)
    window = (
        (pd.to_datetime(rows["label_window_end"]).reset_index(drop=True) - as_of)
        / pd.Timedelta(days=1)
    ).to_numpy(float)
    accounts = rows["account_id"].astype("string").reset_index(drop=True)
    invoices = invoices[["account_id", "issued_at"]].assign(
        issued_at=pd.to_datetime(invoices["issued_at"])
    )
    recency = np.full(len(rows), NO_PURCHASE_DAYS)
    bgnbd = np.full(len(rows), 0.5)
    for date, index in as_of.groupby(as_of).groups.items():
        idx = np.asarray(index)
        summary = purchase_summary(invoices, pd.Timestamp(date))
        known = summary.reindex(accounts.iloc[idx].to_numpy())
        has = known["x"].notna().to_numpy()
        # Days from the last purchase day to the as_of day (an as_of at midnight: >= 1).
        recency[idx[has]] = -known["last_day"].to_numpy(float)[has]
        if len(summary) < 2:
            continue
        fit = fit_bgnbd(summary["x"], summary["t_x"], summary["T"])
        x = np.where(has, known["x"].to_numpy(float), 0.0)
        t_x = np.where(has, known["t_x"].to_numpy(float), 0.0)
        T = np.where(has, known["T"].to_numpy(float), 0.0)
        with np.errstate(all="ignore"):
            scored = p_no_purchase(fit.params, x, t_x, T, window[idx])
        bgnbd[idx] = np.where(np.isfinite(scored), scored, 0.5)  # never NaN into the metrics
    return {"recency": recency, "bgnbd": bgnbd}
