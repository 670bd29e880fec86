"""One configuration system: defaults in code, a YAML file on top, ``CHURN_...`` variables on top.

The YAML file is ``churn.yaml`` in the working directory, or the path in ``CHURN_CONFIG``.
Nested values use ``__`` in variable names: ``CHURN_SERVE__PORT=9000``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from churn.errors import ConfigError
from churn.secret_strength import GENERATE_HINT, secret_weakness

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_ENV = "CHURN_CONFIG"
DEFAULT_CONFIG_FILE = "churn.yaml"


class TableMapping(BaseModel):
    """How one contract table is named in a firm's own source.

    ``table`` is the source's table or file stem; ``columns`` maps the source's column names
    to the contract's (``{"Client ID": "account_id"}``).
    """

    table: str | None = None
    columns: dict[str, str] = Field(default_factory=dict)


class SnapshotSettings(BaseModel):
    """The as_of grid and labels (docs/domain.md#labels)."""

    frequency: str = Field("MS", description="pandas offset alias of the as_of grid (MS = monthly)")
    history_months: int | None = Field(
        None,
        ge=0,
        le=120,
        description="months of data before the first as_of; None = a quarter of the data's span, "
        "1 to 6 (docs/split.md#history-before-the-first-as_of)",
    )
    horizon_days: int = Field(90, ge=1, le=730)
    label_mode: Literal["events", "inactivity"] = "events"
    min_silence_days: int = Field(90, ge=1, description="floor of the inactivity window N")
    purchase_cycles: int = Field(3, ge=1, description="inactivity window N in purchase cycles")


class ServeSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_body_bytes: int = Field(4_000_000, ge=1024)
    max_accounts_per_request: int = Field(1000, ge=1)
    rate_limit_per_minute: int = Field(600, ge=1)
    # Failed authentications (wrong API key, wrong login) a client address may make in a
    # minute before it is refused with 429 for the rest of that minute (serving/throttle.py).
    auth_failures_per_minute: int = Field(10, ge=1)
    top_reasons: int = Field(5, ge=1, le=50)
    reload_interval_seconds: float = Field(30.0, ge=0)
    request_timeout_seconds: float = Field(10.0, gt=0)
    # Requests in flight, counted once their body has arrived (a client still sending holds
    # no place): beyond it 503 with Retry-After. Probes and /metrics are not counted.
    max_concurrency: int = Field(64, ge=1)
    # Requests one client (an API key, else an address) may have waiting for their bodies at
    # once; beyond it 429 with Retry-After and the connection closed.
    max_waiting_bodies_per_client: int = Field(8, ge=1)
    # Requests with a body that no API key vouches for (the dashboard's login and logout
    # forms): their whole body must arrive within this time (408) and within this size (413).
    unauthenticated_body_timeout_seconds: float = Field(2.0, gt=0)
    unauthenticated_max_body_bytes: int = Field(16_384, ge=1024)
    # Worker processes of `churn serve`. More than one answers more requests at once, but
    # each process keeps its own rate-limit counts and POST /v1/admin/reload reloads only the
    # process that answers it (the others follow at their next reload check).
    workers: int = Field(1, ge=1, le=64)


class Settings(BaseSettings):
    """Every setting of the product, one place."""

    model_config = SettingsConfigDict(
        env_prefix="CHURN_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    data: str = Field("data/demo", description="default data source: folder, .duckdb or URL")
    data_dir: Path = Path("data")
    models_dir: Path = Path("models")
    rejects_dir: Path = Path("data/rejects")
    store_url: str = Field("data/store.duckdb", description="DuckDB file or PostgreSQL URL")
    keys_file: Path = Path("data/api_keys.json")
    secret_key: str = Field(
        "",
        description="server secret for key HMAC and sessions; empty: generated into a file "
        "beside the keys file (churn/secret_strength.py says what a set one must meet)",
    )
    mlflow_tracking_uri: str = Field("", description="empty: sqlite file under mlruns/")
    mlflow_artifacts_dir: Path = Path("mlruns/artifacts")
    registered_model_name: str = "churn-model"
    reject_threshold: float = Field(0.01, ge=0, le=1)
    health_config: Path = PROJECT_ROOT / "configs" / "health.yaml"
    playbook_config: Path = PROJECT_ROOT / "configs" / "playbook.yaml"
    train_config: Path = PROJECT_ROOT / "configs" / "train.yaml"
    # Contract table -> how the source names it. The table names are checked where features
    # reads the mapping (``features.sources.read_source``): the core does not know the contract.
    mapping: dict[str, TableMapping] = Field(default_factory=dict)
    snapshots: SnapshotSettings = Field(default_factory=SnapshotSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    engine: Literal["local", "dask"] = "local"
    dask_scheduler: str = ""
    seed: int = 42

    @field_validator("secret_key")
    @classmethod
    def _strong_secret(cls, value: str) -> str:
        """A set secret must look random (it signs session cookies): refused at load with a
        ConfigError (not a ValueError, so its hint says how to generate one)."""
        reason = secret_weakness(value) if value else None
        if reason is not None:
            raise ConfigError(f"secret_key (CHURN_SECRET_KEY) {reason}", hint=GENERATE_HINT)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = Path(os.environ.get(CONFIG_ENV, DEFAULT_CONFIG_FILE))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if yaml_file.is_file():
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        elif CONFIG_ENV in os.environ:
            raise ConfigError(
                f"configuration file {yaml_file} named by {CONFIG_ENV} does not exist",
                hint=f"unset {CONFIG_ENV} or point it at a YAML file",
            )
        return tuple(sources)

    def tracking_uri(self) -> str:
        """MLflow tracking store: ``MLFLOW_TRACKING_URI``, then the setting, then a local file."""
        uri = os.environ.get("MLFLOW_TRACKING_URI") or self.mlflow_tracking_uri
        if uri:
            return uri
        path = Path("mlruns").resolve()
        path.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path / 'mlflow.db'}"


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning any validation problem into one readable ConfigError."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        from churn.config_files import format_validation_error

        raise ConfigError(
            f"invalid setting {format_validation_error(exc, limit=1)}",
            hint="check churn.yaml and CHURN_* environment variables",
        ) from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return load_settings()
