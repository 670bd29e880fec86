"""`churn health backtest` and `churn health apply`: the health rules against what happened,
a suggested new version of them, and its explicit activation (docs/health-backtest.md)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from churn_cli.options import DataOption

if TYPE_CHECKING:
    from rich.console import Console

    from training.health_backtest import Backtest

health_app = typer.Typer(
    name="health",
    help="Backtest the rule-based health score, suggest new points, apply them.",
    no_args_is_help=True,
)


def _num(value: float, pct: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100 * value:.1f} %" if pct else f"{value:.3f}"


def _report(bt: Backtest, out: Console) -> None:
    from rich.table import Table

    test = bt.periods["test"]
    out.print(
        f"test period {test['start']} to {test['end']}: {test['rows']} account-dates, "
        f"{test['positives']} churned; the fit was chosen on the validation period "
        f"({bt.method}) and refitted on {bt.periods['train']['start']} to "
        f"{bt.periods['validation']['end']} (training + validation)"
    )
    _selection_table(bt, out)
    _validation_line(bt, out)
    head = Table(title="Test period: current against suggested health rules")
    head.add_column("metric")
    head.add_column("current", justify="right")
    head.add_column("suggested", justify="right")
    cur, sug = bt.current, bt.suggested
    head.add_row("ROC AUC of 100 - score ↑", _num(cur.roc_auc), _num(sug.roc_auc))
    head.add_row("PR AUC ↑", _num(cur.pr_auc), _num(sug.pr_auc))
    head.add_row(
        f"recall at equal workload ({_num(cur.workload_share, True)} of rows) ↑",
        _num(cur.recall_at_equal_workload, True),
        _num(sug.recall_at_equal_workload, True),
    )
    head.add_row(
        "churners in the healthy band ↓",
        _num(cur.churners_in_healthy_band, True),
        _num(sug.churners_in_healthy_band, True),
    )
    head.add_row("lift below 60 ↑", _num(cur.lift_below_60), _num(sug.lift_below_60))
    head.add_row("lift below 40 ↑", _num(cur.lift_below_40), _num(sug.lift_below_40))
    valid = bt.validation_roc_auc
    head.add_row(
        "ROC AUC on the validation period ↑ (suggested: the training-period fit)",
        _num(valid.get("current", math.nan)),
        _num(valid.get("suggested", math.nan)),
    )
    out.print(head)
    ci = bt.interval
    out.print(
        f"ROC AUC gain {bt.gain:+.3f}, 95 % bootstrap interval {ci['low']:+.3f} to "
        f"{ci['high']:+.3f} ({ci['resamples']} resamples of {ci['accounts']} accounts, "
        f"seed {ci['seed']})"
    )

    _band_tables(bt, out)

    rules = Table(title="Current rules on the test period, and the suggested points")
    for col in (
        "component / sub-rule",
        "ROC AUC",
        "PR AUC",
        "points now",
        "suggested",
        "unknown value earns\nnow -> suggested",
    ):
        rules.add_column(col, justify="left" if col.startswith("component") else "right")
    from training.health_backtest import rule_points

    now = {**bt.current_config.components.maxima(), **rule_points(bt.current_config)}
    new = bt.weights
    unknown = bt.summary()["missing_shares"]
    for key, m in bt.rules.items():
        label = key if "." not in key else f"  {key.split('.', 1)[1]}"
        style = "bold" if "." not in key else ""
        rules.add_row(
            f"[{style}]{label}[/]" if style else label,
            _num(m["roc_auc"]),
            _num(m["pr_auc"]),
            f"{now[key]:g}" if key in now else "reserve",
            f"{new[key]:g}" if key in new else "reserve",
            ""
            if "." not in key
            else f"{_num(unknown['current'][key], True) if key in now else '-'} -> "
            + (_num(unknown["suggested"][key], True) if key in new else "-"),
        )
    out.print(rules)
    segments = {k: v for k, v in bt.segments.items() if k != "combined"}
    if segments:
        table = Table(title="Points fitted per revenue segment (test ROC AUC in the segment)")
        table.add_column("segment")
        table.add_column("train rows", justify="right")
        table.add_column("test rows", justify="right")
        table.add_column("ROC AUC", justify="right")
        table.add_column("component maxima")
        for seg, row in segments.items():
            maxima = ", ".join(f"{k} {v:g}" for k, v in row["weights"].items() if "." not in k)
            table.add_row(
                seg, str(row["train_rows"]), str(row["test_rows"]), _num(row["roc_auc"]), maxima
            )
        out.print(table)
        combined = bt.segments["combined"]
        out.print(
            f"each segment scored with its own points: ROC AUC {_num(combined['roc_auc'])}, "
            f"recall at equal workload {_num(combined['recall_at_equal_workload'], True)} "
            "(the written file holds the points fitted on all segments)"
        )


def _selection_table(bt: Backtest, out: Console) -> None:
    """The candidates fitted on the training period and how each ranked the validation
    period; the chosen one is marked."""
    from rich.table import Table

    sel = bt.selection
    if not sel.get("candidates"):
        return
    table = Table(
        title="Choosing the fit on the validation period (each candidate fitted on training; "
        f"current rules: ROC AUC {_num(sel['current_roc_auc'])})"
    )
    table.add_column("candidate")
    table.add_column("validation ROC AUC ↑", justify="right")
    table.add_column("below 60 vs current", justify="right")
    table.add_column("bands kept")
    for row in sel["candidates"]:
        mark = " ← chosen" if row["label"] == sel["chosen"] else ""
        table.add_row(
            row["label"] + mark,
            _num(row["validation_roc_auc"]),
            f"{row['validation_below_60_ratio']:.2f}x",
            "yes" if row["eligible"] else "no",
        )
    bag = sel.get("bagging")
    if bag:
        table.add_row(
            f"the chosen one as the average of {bag['bags']} bootstrap fits"
            + (" ← used" if bag["used"] else " (not better: not used)"),
            _num(bag["validation_roc_auc"]),
            f"{bag['validation_below_60_ratio']:.2f}x",
            "",
        )
    out.print(table)


def _validation_line(bt: Backtest, out: Console) -> None:
    """The validation period's headline figures: current rules against the chosen candidate's
    training-period fit."""
    valid = bt.validation
    if not valid:
        return
    cur, sug, ci = valid["current"], valid["suggested"], valid["interval"]
    out.print(
        "validation period (the chosen fit as fitted on training): ROC AUC "
        f"{_num(cur['roc_auc'])} -> {_num(sug['roc_auc'])} (gain {valid['roc_auc_gain']:+.3f}, "
        f"95 % bootstrap interval {ci['low']:+.3f} to {ci['high']:+.3f}); recall at equal "
        f"workload ({_num(cur['workload_share'], True)} of rows) "
        f"{_num(cur['recall_at_equal_workload'], True)} -> "
        f"{_num(sug['recall_at_equal_workload'], True)}; churners in the healthy band "
        f"{_num(cur['churners_in_healthy_band'], True)} -> "
        f"{_num(sug['churners_in_healthy_band'], True)}"
    )


def _band_tables(bt: Backtest, out: Console) -> None:
    """Per band, current against suggested: share of rows, share of churners, churn rate;
    then the shares below the cut-offs on the three periods (what the fit kept)."""
    from rich.table import Table

    healthy, at_risk = bt.current_config.bands.healthy, bt.current_config.bands.at_risk
    labels = {
        "healthy": f"healthy ({healthy:g} and up)",
        "at_risk": f"at risk ({at_risk:g} to under {healthy:g})",
        "critical": f"critical (under {at_risk:g})",
    }
    table = Table(
        title="Test period by health band, current -> suggested rules "
        "(a row is one account on one monthly date)"
    )
    table.add_column("band")
    for figure in ("share of rows", "share of churners", "churn rate"):
        table.add_column(f"{figure}\ncurrent", justify="right")
        table.add_column(f"{figure}\nsuggested", justify="right")
    for band, label in labels.items():
        cur, sug = bt.current.bands[band], bt.suggested.bands[band]
        cells = []
        for key in ("share_of_rows", "share_of_churners", "churn_rate"):
            cells += [_num(cur[key], True), _num(sug[key], True)]
        table.add_row(label, *cells)
    out.print(table)
    fit = bt.band_fit
    if not fit:
        out.print(
            "[yellow]points fitted for ranking only (--free-level): the bands' workload is "
            "not kept[/]"
        )
        return
    shares = Table(
        title=f"Share of rows below the cut-offs (the fit aims at {fit['target']:g}x the "
        "current rules' share of its rows; validation below 60 within 1-2x the current)"
    )
    shares.add_column("cut-off")
    for period in ("training", "validation", "test"):
        shares.add_column(f"{period}\ncurrent", justify="right")
        shares.add_column(f"{period}\nsuggested", justify="right")
    for name, cut, test_bands in (
        ("below_60", healthy, ("at_risk", "critical")),
        ("below_40", at_risk, ("critical",)),
    ):
        row = fit[name]
        test_now = sum(bt.current.bands[b]["share_of_rows"] for b in test_bands)
        test_new = sum(bt.suggested.bands[b]["share_of_rows"] for b in test_bands)
        shares.add_row(
            f"below {cut:g}",
            _num(row["current_train"], True),
            _num(row["suggested_train"], True),
            _num(row["current_validation"], True),
            _num(row["suggested_validation"], True),
            _num(test_now, True),
            _num(test_new, True),
        )
    out.print(shares)


@health_app.command("backtest")
def backtest(
    data: DataOption = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the figures as one JSON object on the last line of stdout (the tables "
            "go to stderr).",
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Where to write the suggested rules (default "
            "configs/health.v<N>.suggested.yaml next to the active config). Never the active "
            "config itself.",
        ),
    ] = None,
    by_segment: Annotated[
        bool,
        typer.Option("--by-segment", help="Also fit and report points per revenue segment."),
    ] = False,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="auto: the validation period chooses among all methods; weights: one weight "
            "per sub-rule, its steps keep their proportions; steps: the points of each step "
            "refitted too (monotone as today); combined: steps pulled toward today's "
            "proportions (strength chosen on validation).",
        ),
    ] = "auto",
    bags: Annotated[
        int | None,
        typer.Option(
            "--bags",
            min=0,
            help="Bootstrap refits to average (used only if they rank the validation period "
            "better; default 10); 0: no bagging.",
        ),
    ] = None,
    free_level: Annotated[
        bool,
        typer.Option(
            "--free-level",
            help="Fit the points for ranking only, without keeping the bands' workload: most "
            "accounts then score higher than today and few fall below 60 or 40.",
        ),
    ] = False,
) -> None:
    """Score the historical snapshots with the health rules, compare with what happened,
    fit suggested points on the training period and write them to a new file."""
    from churn.console import console, err_console
    from churn.errors import ChurnError
    from churn.settings import get_settings
    from training.health_backtest import FIT_METHODS, backtest_source, config_yaml
    from training.progress import Progress

    if method != "auto" and method not in FIT_METHODS:
        raise ChurnError(
            f"--method {method!r} is not a fit method",
            hint=f"use one of: auto, {', '.join(FIT_METHODS)}",
        )
    settings = get_settings()
    active = Path(settings.health_config)
    if out is not None and out.resolve() == active.resolve():
        raise ChurnError(
            f"--out {out} is the active health config; the suggestion is never written over it",
            hint="write it to another file and activate it with `churn health apply FILE`",
        )
    bt = backtest_source(
        data or settings.data,
        settings,
        method=method,
        keep_bands=not free_level,
        by_segment=by_segment,
        **({} if bags is None else {"bags": bags}),
        progress=Progress(True),
    )
    target = out or active.parent / f"health.v{bt.config.version}.suggested.yaml"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(config_yaml(bt), encoding="utf-8")
    except OSError as exc:
        raise ChurnError(
            f"cannot write the suggested rules to {target}: {exc.strerror or exc}",
            hint="pass a writable path with --out",
        ) from exc
    screen = err_console if as_json else console
    _report(bt, screen)
    screen.print(
        f"suggested rules (version {bt.config.version}) written to {target}; "
        f"activate them with `churn health apply {target}`"
    )
    if as_json:
        from training.export import json_safe

        summary = {**bt.summary(), "file": str(target)}
        typer.echo(json.dumps(json_safe(summary), allow_nan=False))


@health_app.command("apply")
def apply(
    file: Annotated[Path, typer.Argument(help="The health rules to activate (a YAML file).")],
) -> None:
    """Validate a health config and make it the active one (the old one is kept as a backup)."""
    from churn.console import console
    from churn.settings import get_settings
    from training.health_backtest import apply_config

    settings = get_settings()
    result = apply_config(file, Path(settings.health_config))
    console.print(
        f"[green]health rules version {result.new_version} active[/] in {result.target} "
        f"(was version {result.old_version}; backup {result.backup})"
    )
    for line in result.changes:
        console.print(f"  {line}")
    console.print(
        "scores use them from the next `churn score` run; restart `churn serve` to serve them"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(health_app, name="health")
