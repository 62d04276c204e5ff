"""Configuration (docs/design.md §3): bad settings fail at load with a message naming the variable."""

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from fusion_billing_assets.settings import ConfigurationError, load_settings, redact_store_url

ODOO = {"ODOO_URL": "https://odoo.example.com", "ODOO_DATABASE": "nexa", "ODOO_API_KEY": "k-123"}
NEXACLOUD = {"NEXACLOUD_DATABASE_URL": "postgresql+psycopg://reader:s3cret@db.example.com/nexacloud"}


def test_nothing_set_means_the_embedded_sandbox_in_toronto(tmp_path):
    settings = load_settings({"DAGSTER_HOME": str(tmp_path)})
    assert settings.uses_sandbox and settings.odoo is None
    assert settings.timezone == "America/Toronto"
    assert settings.start_period == date(2026, 1, 1)
    assert settings.warehouse_url == f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    assert settings.sandbox_dir == Path(tmp_path) / "sandbox"
    assert settings.reconciliation.tolerance_cents is None  # the sandbox's own, or 0 in production
    assert settings.reconciliation.tax_rounding == "round_per_line"
    assert settings.reconciliation.reports_dir == Path(tmp_path) / "reports"
    assert settings.reconciliation.flip_ready_periods == 1
    assert settings.reconciliation.suspend_grace_days == 7


def test_the_suspension_grace_period_is_read(tmp_path):
    settings = load_settings({"DAGSTER_HOME": str(tmp_path), "BILLING_SUSPEND_GRACE_DAYS": "14"})
    assert settings.reconciliation.suspend_grace_days == 14


def test_both_sources_configured():
    settings = load_settings({**NEXACLOUD, **ODOO, "ODOO_PROTOCOL": "jsonrpc", "ODOO_LOGIN": "bot"})
    assert not settings.uses_sandbox
    assert settings.odoo.url == "https://odoo.example.com"
    assert settings.odoo.protocol == "jsonrpc"


@pytest.mark.parametrize(
    ("environ", "named", "missing"),
    [
        (NEXACLOUD, "NEXACLOUD_DATABASE_URL", "ODOO_URL"),
        (ODOO, "ODOO_URL", "NEXACLOUD_DATABASE_URL"),
    ],
)
def test_half_configured_sources_name_the_missing_variable(environ, named, missing):
    with pytest.raises(ConfigurationError) as raised:
        load_settings(environ)
    assert f"{named} is set but {missing} is not" in str(raised.value)


@pytest.mark.parametrize(
    ("override", "variable"),
    [
        ({"NEXACLOUD_DATABASE_URL": "not a url with s3cret"}, "NEXACLOUD_DATABASE_URL"),
        ({"NEXACLOUD_DATABASE_URL": "mysql://u:s3cret@h/db"}, "NEXACLOUD_DATABASE_URL"),
        ({"BILLING_WAREHOUSE_URL": "::s3cret::"}, "BILLING_WAREHOUSE_URL"),
        ({"ODOO_URL": "odoo.example.com"}, "ODOO_URL"),
        ({"ODOO_URL": "https://user:s3cret@odoo.example.com"}, "ODOO_URL"),
        ({"ODOO_DATABASE": ""}, "ODOO_DATABASE"),
        ({"ODOO_API_KEY": " "}, "ODOO_API_KEY"),
        ({"ODOO_PROTOCOL": "xmlrpc"}, "ODOO_PROTOCOL"),
        ({"ODOO_PROTOCOL": "jsonrpc"}, "ODOO_LOGIN"),
        ({"BILLING_TIMEZONE": "Mars/Olympus_Mons"}, "BILLING_TIMEZONE"),
        ({"BILLING_START_PERIOD": "2026-01-15"}, "BILLING_START_PERIOD"),
        ({"BILLING_START_PERIOD": "January"}, "BILLING_START_PERIOD"),
        ({"BILLING_TOLERANCE_CENTS": "-1"}, "BILLING_TOLERANCE_CENTS"),
        ({"BILLING_TOLERANCE_CENTS": "0.5"}, "BILLING_TOLERANCE_CENTS"),
        ({"BILLING_TAX_ROUNDING": "half_even"}, "BILLING_TAX_ROUNDING"),
        ({"BILLING_FLIP_READY_PERIODS": "0"}, "BILLING_FLIP_READY_PERIODS"),
        ({"BILLING_SUSPEND_GRACE_DAYS": "-1"}, "BILLING_SUSPEND_GRACE_DAYS"),
        ({"BILLING_SUSPEND_GRACE_DAYS": "a week"}, "BILLING_SUSPEND_GRACE_DAYS"),
        ({"ALERT_WEBHOOK_KIND": "email"}, "ALERT_WEBHOOK_KIND"),
        ({"ALERT_WEBHOOK_URL": "hooks.example.com/s3cret"}, "ALERT_WEBHOOK_URL"),
        (
            {"ALERT_WEBHOOK_URL": "https://hooks.example.com/x", "ALERT_WEBHOOK_KIND": "generic"},
            "ALERT_WEBHOOK_SECRET",
        ),
        ({"BILLING_CLOSE_DAY": "31"}, "BILLING_CLOSE_DAY"),
        ({"BILLING_ALERT_PROVISIONAL": "maybe"}, "BILLING_ALERT_PROVISIONAL"),
        ({"BILLING_IO_STORE_URL": "bucket/frames-s3cret"}, "BILLING_IO_STORE_URL"),
        ({"BILLING_IO_STORE_URL": "s3:/bucket/frames"}, "BILLING_IO_STORE_URL"),
        ({"BILLING_IO_STORE_URL": "s3:///frames"}, "BILLING_IO_STORE_URL"),
        ({"BILLING_IO_STORE_URL": "s3://[s3cret/frames"}, "BILLING_IO_STORE_URL"),
        ({"BILLING_IO_STORE_URL": "s3://AKIA123:s3cret@bucket/frames"}, "BILLING_IO_STORE_URL"),
        ({"BILLING_IO_STORE_URL": "nosuchstore://bucket/frames"}, "BILLING_IO_STORE_URL"),
        ({"BILLING_IO_STORE_URL": "https://store.example.com/frames"}, "BILLING_IO_STORE_URL"),
        ({"BILLING_IO_STORE_URL": "file://relative/frames"}, "BILLING_IO_STORE_URL"),
        (
            {"BILLING_IO_STORE_URL": "s3://bucket/frames", "BILLING_IO_STORE_OPTIONS": '{"secret": "s3cret"'},
            "BILLING_IO_STORE_OPTIONS",
        ),
        (
            {"BILLING_IO_STORE_URL": "s3://bucket/frames", "BILLING_IO_STORE_OPTIONS": '["s3cret"]'},
            "BILLING_IO_STORE_OPTIONS",
        ),
        ({"BILLING_IO_STORE_OPTIONS": '{"secret": "s3cret"}'}, "BILLING_IO_STORE_URL"),
    ],
)
def test_a_malformed_setting_names_its_variable_and_never_echoes_a_secret(override, variable):
    with pytest.raises(ConfigurationError) as raised:
        load_settings({**NEXACLOUD, **ODOO, **override})
    message = str(raised.value)
    assert variable in message
    assert "s3cret" not in message and "k-123" not in message
    # Raised from our own check, not chained to a library's traceback.
    error = raised.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def test_loading_the_code_location_with_a_bad_time_zone_fails_with_one_clear_line(tmp_path):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("NEXACLOUD_", "ODOO_", "BILLING_"))}
    environ.update(BILLING_TIMEZONE="Mars/Olympus_Mons", DAGSTER_HOME=str(tmp_path))
    loaded = subprocess.run(
        [sys.executable, "-c", "import fusion_billing_assets.definitions"],
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )
    assert loaded.returncode != 0
    last_line = loaded.stderr.strip().splitlines()[-1]
    assert last_line.startswith("fusion_billing_assets.settings.ConfigurationError: BILLING_TIMEZONE=")
    assert "zoneinfo" not in loaded.stderr


def test_a_reports_folder_or_warehouse_that_cannot_be_written_fails_at_load(tmp_path):
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a folder")
    with pytest.raises(
        ConfigurationError, match=r"^BILLING_REPORTS_DIR=.* cannot be a folder: .* is a file\.$"
    ):
        load_settings({"DAGSTER_HOME": str(tmp_path), "BILLING_REPORTS_DIR": str(in_the_way / "reports")})
    with pytest.raises(ConfigurationError, match=r"^BILLING_WAREHOUSE_URL: the folder of the SQLite file"):
        load_settings(
            {
                "DAGSTER_HOME": str(tmp_path),
                "BILLING_WAREHOUSE_URL": f"sqlite:///{in_the_way}/warehouse.sqlite",
            }
        )
    with pytest.raises(ConfigurationError, match=r"^BILLING_WAREHOUSE_URL points at the folder"):
        load_settings({"DAGSTER_HOME": str(tmp_path), "BILLING_WAREHOUSE_URL": f"sqlite:///{tmp_path}"})
    # A folder that does not exist yet is fine: it is created on first use.
    settings = load_settings(
        {"DAGSTER_HOME": str(tmp_path), "BILLING_REPORTS_DIR": str(tmp_path / "new" / "reports")}
    )
    assert settings.reconciliation.reports_dir == tmp_path / "new" / "reports"


def test_no_object_store_set_means_frames_stay_in_the_instances_local_storage(tmp_path):
    store = load_settings({"DAGSTER_HOME": str(tmp_path)}).io_store
    assert store.url is None and not store.options_configured


@pytest.mark.parametrize("url", ["s3://fusion-frames/prod/runs", "s3://fusion-frames", "file:///srv/frames"])
def test_an_object_store_url_and_its_options_are_read(tmp_path, url):
    store = load_settings(
        {
            "DAGSTER_HOME": str(tmp_path),
            "BILLING_IO_STORE_URL": f" {url} ",
            "BILLING_IO_STORE_OPTIONS": '{"endpoint_url": "http://minio:9000"}',
        }
    ).io_store
    assert store.url == url
    assert store.options_configured  # only that: the value may hold keys


def test_a_store_url_with_a_password_is_refused_showing_it_only_redacted(tmp_path):
    with pytest.raises(ConfigurationError) as raised:
        load_settings(
            {"DAGSTER_HOME": str(tmp_path), "BILLING_IO_STORE_URL": "s3://reader:p@ss:s3cret@bucket/x"}
        )
    message = str(raised.value)
    assert message.startswith("BILLING_IO_STORE_URL='s3://reader:***@bucket/x' carries a password")
    assert "s3cret" not in message and "p@ss" not in message
    assert redact_store_url("s3://bucket/x") == "s3://bucket/x"
