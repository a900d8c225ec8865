"""A state directory that an older install (or a wide umask) left readable by every local
user is closed to others when a daemon starts in it: the store and the logs inside hold
every job's command line and environment."""

from __future__ import annotations

import stat

from tests.conftest import Env


def test_an_open_state_directory_is_closed_to_others_at_start(env: Env) -> None:
    env.state.mkdir()
    env.state.chmod(0o755)
    d = env.start()
    assert stat.S_IMODE(env.state.stat().st_mode) == 0o750
    assert d.stop() == 0
