"""Leave-one-clinic-out when the named clinic never connects: one line naming it and the fix.

(The working hold-out path runs on real SuperNodes in tests/test_strategies_e2e.py; here a
Grid with no nodes stands in for a federation in which the clinic never shows up.)
"""

from __future__ import annotations

import pytest
from flwr.serverapp import Grid

from server.holdout import HoldoutMissing, find_holdout


class _NoClinics(Grid):
    """A federation nobody has joined: no node ids, no messages."""

    def get_node_ids(self):
        return []

    def set_run(self, run):  # pragma: no cover - not called
        raise AssertionError

    run = property(lambda self: None)
    create_message = push_messages = pull_messages = send_and_receive = set_run


def test_missing_holdout_clinic_is_one_clear_line():
    with pytest.raises(HoldoutMissing) as err:
        find_holdout(_NoClinics(), "clinic-9", min_clinics=1, timeout=0)
    message = str(err.value)
    assert message == (
        "holdout clinic 'clinic-9' is not connected (connected clinics: none answered); "
        "start `client-node start --name clinic-9` or fix --holdout"
    )
