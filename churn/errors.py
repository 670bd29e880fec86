"""Domain exceptions: the CLI turns them into one readable line, the API into problem+json."""

from __future__ import annotations


class ChurnError(Exception):
    """Base of every error the product reports to a user.

    ``hint`` says what to do about it; the CLI prints it under the message.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class ConfigError(ChurnError):
    """A configuration file or setting is invalid."""


class DataContractError(ChurnError):
    """A source breaks the data contract structurally (unreadable table, missing column)."""


class RejectThresholdExceeded(ChurnError):
    """Too many rows broke the contract for the run to be trusted."""


class ModelUnavailable(ChurnError):
    """No usable model bundle is loaded or could be found."""


class BundleIntegrityError(ModelUnavailable):
    """A model bundle is incomplete, corrupt or fails its sha256 manifest."""


class StoreError(ChurnError):
    """The score store cannot be reached or written."""
