"""Files with client data are private: what ``churn.files.umask_for`` gives new files."""

from __future__ import annotations

import os
import stat

from churn.files import umask_for


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_within_umask_for_a_new_store_files_are_private_and_folders_stay_usable(tmp_path):
    previous = os.umask(0o022)
    try:
        with umask_for(tmp_path / "store.duckdb"):  # no store yet: private
            (tmp_path / "new" / "sub").mkdir(parents=True)
            (tmp_path / "new" / "sub" / "store.duckdb").write_bytes(b"x")
        assert os.umask(0o022) == 0o022  # restored
    finally:
        os.umask(previous)
    # The owner keeps its execute bit on folders (a folder of 0600 cannot be entered).
    assert _mode(tmp_path / "new") == _mode(tmp_path / "new" / "sub") == 0o700
    assert _mode(tmp_path / "new" / "sub" / "store.duckdb") == 0o600


def test_files_created_beside_a_shared_store_get_the_group_it_was_given(tmp_path):
    store = tmp_path / "store.duckdb"
    store.write_bytes(b"x")
    store.chmod(0o640)  # an operator granted a group read access
    previous = os.umask(0o022)
    try:
        with umask_for(store):
            (tmp_path / "store.duckdb.wal").write_bytes(b"x")
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "store.duckdb.wal") == 0o640
