import os
import signal

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(autouse=True, scope="session")
def _ctrl_c_raises() -> None:
    """Ctrl-C raises KeyboardInterrupt here, as in an interactive Python, even where the test
    run inherited SIGINT ignored (a background job of a non-interactive shell; Python then
    keeps it ignored): the Ctrl-C tests send it on purpose, in this process and in children
    started from it, which get the default disposition once a handler is installed here."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
