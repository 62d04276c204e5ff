"""NexaCloud under faults (docs/design.md §4), against the real local PostgreSQL, without mocks.

A database that cannot be reached and a query that outlives the session's statement timeout each
end in an error that says what happened and where, quickly, and never shows the URL's password.
"""

from __future__ import annotations

import time
import traceback

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from fusion_billing_assets.defs.resources import NexaCloudDatabase
from tests.conftest import POSTGRES_ADMIN_URL

PASSWORD = "nexacloud-reader-s3cret"

pytestmark = pytest.mark.postgres


def _with_password(url: str, **parts) -> str:
    return make_url(url).set(password=PASSWORD, **parts).render_as_string(hide_password=False)


def _everything_said(error: BaseException) -> str:
    """The error as a person or a log would see it: message, repr and the whole chained traceback."""
    return "\n".join([str(error), repr(error), *traceback.format_exception(error)])


def test_an_unreachable_nexacloud_fails_fast_naming_host_and_port_without_the_password():
    url = _with_password("postgresql+psycopg://reader@127.0.0.1/nexacloud", port=1)
    nexacloud = NexaCloudDatabase(url=url)
    started = time.monotonic()
    with pytest.raises(OperationalError) as raised, nexacloud.get_connection() as connection:
        connection.execute(text("SELECT 1"))
    assert time.monotonic() - started < 10
    said = _everything_said(raised.value)
    assert 'connection to server at "127.0.0.1", port 1 failed: Connection refused' in str(raised.value)
    assert PASSWORD not in said
    assert nexacloud.describe() == "postgresql+psycopg://reader:***@127.0.0.1:1/nexacloud"


def test_a_query_past_the_statement_timeout_is_cancelled_with_a_clear_error_without_the_password():
    nexacloud = NexaCloudDatabase(url=_with_password(POSTGRES_ADMIN_URL), statement_timeout_ms=200)
    started = time.monotonic()
    with nexacloud.get_connection() as connection:
        assert connection.execute(text("SHOW statement_timeout")).scalar_one() == "200ms"
        with pytest.raises(OperationalError) as raised:
            connection.execute(text("SELECT pg_sleep(5)"))
    assert time.monotonic() - started < 4, "the server cancelled the query, not the sleep's end"
    message = str(raised.value)
    assert "canceling statement due to statement timeout" in message and "pg_sleep(5)" in message
    assert type(raised.value.orig).__name__ == "QueryCanceled"
    assert PASSWORD not in _everything_said(raised.value)
