"""docs/own-data.md, walked end to end: a firm's own exports, whose table and column names differ
from the contract, go through a churn.yaml mapping to `churn validate`, `churn train` and
`churn score` (the real console script), and the dashboard and API then answer for a mapped
account with its mapped name and manager.

The exports are small generated demo data with the accounts, invoices and churn events tables
renamed (and their columns), exactly like the worked example of the page. Every path the
commands write (models, store, MLflow, rejects, keys) is under tmp_path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from markupsafe import escape

from tests.support.cli import isolated_env, run_churn

pytestmark = pytest.mark.slow

# contract table -> (the export's file stem, {the export's column: the contract's column})
RENAMES: dict[str, tuple[str, dict[str, str]]] = {
    "accounts": (
        "crm_clients",
        {
            "account_id": "ClientID",
            "name": "Client",
            "account_manager": "Owner",
            "industry": "Sector",
            "started_at": "Since",
            "renewal_at": "Renewal",
            "contract_value": "ACV",
        },
    ),
    "invoices": (
        "billing_invoices",
        {
            "account_id": "Client ID",
            "invoice_id": "Invoice No",
            "issued_at": "Date",
            "due_at": "Due",
            "paid_at": "Paid",
            "amount": "Amount",
            "discount": "Discount",
        },
    ),
    "churn_events": (
        "lost_clients",
        {"account_id": "ClientID", "churned_at": "Lost on", "reason": "Why"},
    ),
}

# The worked example of docs/own-data.md.
CHURN_YAML = """\
data: exports                      # default SOURCE of every command
mapping:
  accounts:
    table: crm_clients             # exports/crm_clients.csv
    columns: {ClientID: account_id, Client: name, Owner: account_manager, Sector: industry,
              Since: started_at, Renewal: renewal_at, ACV: contract_value}
  invoices:
    table: billing_invoices
    columns: {Client ID: account_id, Invoice No: invoice_id, Date: issued_at, Due: due_at,
              Paid: paid_at, Amount: amount, Discount: discount}
  churn_events:
    table: lost_clients
    columns: {ClientID: account_id, Lost on: churned_at, Why: reason}
"""


def _environment(root: Path, config: Path) -> dict[str, str]:
    return isolated_env(root, CHURN_CONFIG=str(config), CHURN_KEYS_FILE=str(root / "api_keys.json"))


def churn(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_churn(list(args), env, root, timeout=300)


@pytest.fixture(scope="module")
def walk(tmp_path_factory) -> dict[str, object]:
    """The exports, churn.yaml, and the results of validate, train and score."""
    from features.demo import generate_demo

    root = tmp_path_factory.mktemp("own-data")
    raw, exports = root / "raw", root / "exports"
    generate_demo(raw, accounts=300, seed=7, years=3)
    exports.mkdir()
    for path in sorted(raw.glob("*.csv")):
        table = path.stem
        if table in RENAMES:
            stem, columns = RENAMES[table]
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            frame.rename(columns=columns).to_csv(exports / f"{stem}.csv", index=False)
        else:
            shutil.copy(path, exports / path.name)
    config = root / "churn.yaml"
    config.write_text(CHURN_YAML)
    env = _environment(root, config)

    validated = churn(root, env, "validate")
    trained = churn(root, env, "train", "--json")
    scored = churn(root, env, "score", "--history-months", "1")
    return {
        "root": root,
        "env": env,
        "exports": exports,
        "validate": validated,
        "train": trained,
        "score": scored,
    }


def test_the_exports_do_not_carry_the_contract_names(walk):
    exports = walk["exports"]
    assert not (exports / "accounts.csv").exists() and not (exports / "invoices.csv").exists()
    header = (exports / "crm_clients.csv").read_text().splitlines()[0]
    assert header == "ClientID,Client,Owner,Sector,Since,Renewal,ACV"


def test_without_the_mapping_validate_says_which_table_to_map(walk, tmp_path):
    env = {**walk["env"], "CHURN_CONFIG": str(tmp_path / "empty.yaml")}
    (tmp_path / "empty.yaml").write_text("data: exports\n")
    done = churn(walk["root"], env, "validate")
    assert done.returncode == 1
    assert "no 'accounts' table" in done.stderr and "mapping.accounts.table" in done.stderr


def test_a_typo_in_the_mapping_stops_validate_naming_the_column(walk, tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text(CHURN_YAML.replace("Owner: account_manager", "Ownr: account_manager"))
    done = churn(walk["root"], {**walk["env"], "CHURN_CONFIG": str(typo)}, "validate")
    assert done.returncode == 1
    assert "lacks required column 'account_manager'" in done.stderr
    assert "Ownr" in done.stderr  # the hint names the mapped column the file lacks


def test_validate_loads_the_mapped_tables_and_writes_rejects_with_contract_names(walk):
    done = walk["validate"]
    assert done.returncode == 0, done.stderr[-2000:]
    rejects = pd.read_csv(Path(walk["root"]) / "rejects" / "rejects.csv")
    assert set(rejects["table"]) <= {
        "accounts", "churn_events", "interactions", "contacts", "invoices", "projects",
        "surveys", "tickets",
    }  # fmt: skip
    assert {"accounts", "invoices"} <= set(rejects["table"])  # the demo's deliberate bad rows
    # Rejects speak the contract's column names, whatever the export called them.
    assert "Since" not in set(rejects["column"]) and "Date" not in set(rejects["column"])
    accounts_rows = len(pd.read_csv(Path(walk["exports"]) / "crm_clients.csv"))
    rejected = rejects.loc[rejects["table"] == "accounts", "row"].nunique()
    line = next(ln for ln in done.stdout.splitlines() if ln.strip("│┃ ").startswith("accounts"))
    cells = [c.strip().replace(",", "") for c in line.strip("│┃ ").split("│")]
    assert cells[:4] == [
        "accounts",
        str(accounts_rows),
        str(accounts_rows - rejected),
        str(rejected),
    ]


def test_train_promotes_a_first_model_with_every_family_present(walk):
    done = walk["train"]
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["promotion"]["promoted"] is True
    assert summary["run"]["model_version"] == "churn-model/1"
    assert summary["run"]["absent_families"] == {}
    champion = Path(walk["root"]) / "models" / "champion"
    assert (champion / "model.txt").is_file()
    assert os.readlink(champion) == "churn-model-v1"


def test_score_stores_the_mapped_accounts_with_the_model(walk):
    done = walk["score"]
    assert done.returncode == 0, done.stderr[-2000:]
    assert "model churn-model/1" in done.stdout and "back-filled 1 earlier date" in done.stdout


@pytest.fixture(scope="module")
def service(walk):
    """The app as `churn serve` builds it, on the walk's settings, with a manager key made by
    `churn keys add` for the export's busiest Owner, and an admin key."""
    from fastapi.testclient import TestClient

    from churn.settings import load_settings
    from serving.app import create_app

    root, env = Path(walk["root"]), walk["env"]
    clients = pd.read_csv(Path(walk["exports"]) / "crm_clients.csv", dtype=str)
    owner = clients["Owner"].value_counts().index[0]
    made = churn(root, env, "keys", "add", "--role", "manager", "--manager", owner)
    assert made.returncode == 0, made.stderr
    manager_key = made.stdout.strip()
    admin = churn(root, env, "keys", "add", "--role", "admin")
    assert admin.returncode == 0, admin.stderr

    with pytest.MonkeyPatch.context() as patch:
        for name in [k for k in os.environ if k.startswith("CHURN_")]:
            patch.delenv(name)
        for name, value in env.items():
            if name.startswith("CHURN_"):
                patch.setenv(name, value)
        patch.chdir(root)
        settings = load_settings()
        with TestClient(create_app(settings)) as client:
            yield {
                "client": client,
                "owner": owner,
                "names": dict(zip(clients["ClientID"], clients["Client"], strict=False)),
                "owners": dict(zip(clients["ClientID"], clients["Owner"], strict=False)),
                "manager": {"Authorization": f"Bearer {manager_key}"},
                "admin": {"Authorization": f"Bearer {admin.stdout.strip()}"},
            }


def test_the_api_serves_a_mapped_account_to_its_manager_only(service):
    client, manager = service["client"], service["manager"]
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model_version"] == "churn-model/1"

    listed = client.get("/v1/accounts", headers=manager, params={"limit": 500})
    assert listed.status_code == 200
    accounts = listed.json()["accounts"]
    assert accounts and {a["account_manager"] for a in accounts} == {service["owner"]}
    mine = accounts[0]["account_id"]
    assert service["owners"][mine] == service["owner"]  # the export's Owner column

    detail = client.get(f"/v1/accounts/{mine}", headers=manager)
    assert detail.status_code == 200
    body = detail.json()
    assert body["model_version"] == "churn-model/1" and body["churn_probability"] is not None
    assert body["reasons"] and body["history"]

    everyone = client.get("/v1/accounts", headers=service["admin"], params={"limit": 5000})
    theirs = next(
        a["account_id"]
        for a in everyone.json()["accounts"]
        if a["account_manager"] != service["owner"]
    )
    assert client.get(f"/v1/accounts/{theirs}", headers=service["admin"]).status_code == 200
    assert client.get(f"/v1/accounts/{theirs}", headers=manager).status_code == 404


def test_the_dashboard_shows_the_mapped_client_name_after_login(service):
    client = service["client"]
    token = service["manager"]["Authorization"].removeprefix("Bearer ")
    client.cookies.clear()
    login = client.post("/login", data={"api_key": token, "next": "/"}, follow_redirects=False)
    assert login.status_code == 303 and "churn_session" in login.cookies

    listed = client.get("/v1/accounts", headers=service["manager"]).json()["accounts"]
    mine = listed[0]["account_id"]
    page = client.get(f"/accounts/{mine}")
    assert page.status_code == 200
    # The name comes from the export's "Client" column through mapping.accounts.columns.
    name = str(escape(service["names"][mine]))
    assert name in page.text
    portfolio = client.get("/")
    assert portfolio.status_code == 200 and name in portfolio.text
    client.cookies.clear()
