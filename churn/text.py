"""Text rules shared by every door client text comes in by and every place it goes out.

Ids and names arrive through the import (``features.validate``), the API and the command line;
they leave through CSV files, the dashboard and the terminal. The rules live here, in the
core, so that each of those applies the same definition:

- ``UNPRINTABLE``: control characters and the invisible format characters that make a string
  display differently from what it is (text-direction overrides and isolates, zero-width
  space, word joiner, byte-order mark). Refused in ids and names.
- ``ID_MAX_LENGTH`` / ``NAME_MAX_LENGTH``: the longest id and name accepted.
- ``ACCOUNT_ID_PATTERN``: stored account ids appear in URLs (``/v1/accounts/{account_id}``,
  the dashboard's account pages), so the import limits them to characters that need no
  escaping in a path: ASCII letters and digits, then also ``. _ ~ : -``. The first character
  is a letter or a digit, so no id is a ``.``/``..`` path segment or starts like a
  spreadsheet formula. (``POST /v1/predict`` stores nothing and echoes any printable id.)
- ``normalise_name``: the form a person's or client's name is compared and stored in (Unicode
  NFKC, whitespace runs collapsed to one space, no leading or trailing space), so that
  ``"Drew\\u00a0Hollis"`` and ``"Drew  Hollis"`` are the same manager as ``"Drew Hollis"``.
- ``csv_cell``: a CSV cell a spreadsheet never runs as a formula (OWASP's rule).
- ``visible``: text safe to print on a terminal or in a one-line report, control characters
  shown as escapes (``\\x1b``) instead of acting on the terminal.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

#: C0 and C1 control characters, DEL, the text-direction marks, embeddings, overrides and
#: isolates (U+061C, U+200E-U+200F, U+202A-U+202E, U+2066-U+2069), the zero-width space
#: U+200B, the line and paragraph separators U+2028-U+2029, the invisible operators
#: U+2060-U+2064 and the byte-order mark U+FEFF. Zero-width (non-)joiners stay allowed: some
#: scripts need them in names.
_INVISIBLE = "\x7f-\x9f\u061c\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff"
UNPRINTABLE = re.compile(f"[\x00-\x1f{_INVISIBLE}]")
UNPRINTABLE_REASON = "holds a control or text-direction character (not allowed in ids and names)"

ID_MAX_LENGTH = 128
NAME_MAX_LENGTH = 200

#: Letters and digits, then letters, digits and ``. _ ~ :`` ``-``: usable as a URL path
#: segment as it is. Anchored; a plain character class so that pydantic's regex engine takes it.
ACCOUNT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._~:-]*$"
ACCOUNT_ID_RE = re.compile(ACCOUNT_ID_PATTERN)
ACCOUNT_ID_REASON = (
    "not a URL-safe id (letters, digits and . _ ~ : - only, starting with a letter or digit)"
)

_SPACES = re.compile(r"\s+")


def normalise_name(name: str) -> str:
    """``name`` in its comparable form: Unicode NFKC (a no-break space becomes a space, a
    full-width letter its usual one), every run of whitespace one space, stripped.

    Check ``UNPRINTABLE`` before normalising: collapsing whitespace would turn a tab or a
    line break into a space and hide it."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", name)).strip()


def text_problem(value: str, max_length: int) -> str | None:
    """Why ``value`` is not an acceptable id or name (``None`` when it is)."""
    if UNPRINTABLE.search(value):
        return UNPRINTABLE_REASON
    if len(value) > max_length:
        return f"longer than {max_length} characters"
    return None


# A spreadsheet reads a cell starting with one of these as a formula (OWASP, CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# A negative number written as text is still just a number: it stays as it is.
_PLAIN_NUMBER = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def csv_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as written: text starting with ``= + - @`` (or a tab or
    carriage return) gets a leading apostrophe, so it is never run as a formula; numbers (and
    text that is a plain negative number) are written as they are; missing values are empty."""
    if value is None:
        return ""
    if isinstance(value, bool | int | float):
        return "" if isinstance(value, float) and math.isnan(value) else value
    if not isinstance(value, str):
        import pandas as pd  # only for pandas' missing values (NA, NaT); kept out of --help

        if pd.api.types.is_scalar(value) and pd.isna(value):
            return ""
    text = str(value)
    if text.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` ready for ``to_csv``: every text cell passed through ``csv_cell`` (numbers,
    dates and missing values untouched, so pandas writes them as before). A copy when a cell
    changed; ``frame`` itself otherwise."""
    out = frame
    for position, (_, column) in enumerate(frame.items()):
        if column.dtype.kind in "biufcmM":
            continue
        texts = column.map(lambda v: csv_cell(v) if isinstance(v, str) else v, na_action="ignore")
        if not texts.equals(column):
            if out is frame:
                out = frame.copy()
            out.isetitem(position, texts)
    return out


# What ``visible`` escapes: the unprintable characters but tab and newline.
_CONTROL = re.compile(f"[\x00-\x08\x0b-\x1f{_INVISIBLE}]")


def visible(text: str, *, keep_newlines: bool = True) -> str:
    """``text`` with control and invisible format characters written as Python escapes
    (``\\x1b``, ``\\u202e``), so that printing it cannot move the cursor, retitle the window,
    reverse the text that follows or hide part of it. Tabs stay; newlines stay unless
    ``keep_newlines`` is false."""

    def escape(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    out = _CONTROL.sub(escape, text)
    return out if keep_newlines else out.replace("\n", "\\n")
