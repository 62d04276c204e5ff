"""Reconciliation end to end (issue "Reconciliation end to end"; docs/design.md §6, §7).

The job ``reconcile_billing_period``, run on generated sandboxes (three seeds, two scales) for
every closed period, writes ``billing_reconciliation`` so that read back from the warehouse it has
100 % precision and recall against the generator's ground truth: every expected customer or
partner row carries exactly its status, no other row exists, and every cause is a sentence (a
usage mismatch names the local days that differ). Re-materializing a period after one NexaCloud
invoice changed changes that customer's row only; a failure in the middle of the write leaves the
period's previous rows, and their detail lines, as they were. Flip readiness is ``not_ready`` on
the sandbox, naming the latest closed period's unexplained statuses, and ``ready`` once that
period holds only accepted ones. The materialization shows what a person reads: the count of every
status, the total variance, the largest differences, a chart and the report files, with the
failed ``no_unexplained_differences`` check (ERROR) beside results that were written regardless.
"""

from __future__ import annotations

import base64
import re
import shutil
import sqlite3
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetKey,
    DagsterInstance,
    ExecuteInProcessResult,
)
from sqlalchemy import Connection, Delete, create_engine

from fusion_billing_assets import warehouse as warehouse_module
from fusion_billing_assets.billing.lifecycle import DRIFT_COLUMNS
from fusion_billing_assets.billing.money import format_cents
from fusion_billing_assets.billing.statuses import STATUSES
from fusion_billing_assets.definitions import (
    billing_period_job_name,
    build_resources,
    defs,
    flip_readiness_job_name,
)
from fusion_billing_assets.defs import reconciliation as reconciliation_defs
from fusion_billing_assets.defs.resources import Warehouse
from fusion_billing_assets.importer.exclusions import read_exclusions
from fusion_billing_assets.settings import load_settings
from fusion_billing_assets.warehouse import (
    LINE_COLUMNS,
    LifecycleObservation,
    ensure_tables,
    read_period,
    read_results,
    replace_lifecycle_drift,
    replace_period,
)
from tests.conftest import SMALL_SCALE_OPTIONS, GeneratedSandbox, generate_small_sandbox

SEEDS = (3, 11, 29)
SCALES: Mapping[str, Mapping[str, int]] = {
    "small": SMALL_SCALE_OPTIONS,
    # More customers, a fourth deployment, coarser metering and a third closed period.
    "wider": {"customers": 60, "max_deployments_per_customer": 4, "usage_window_minutes": 180, "periods": 4},
}

RECONCILIATION = AssetKey(["billing", "reconciliation"])
USAGE_DAYS = AssetKey(["billing", "usage_days_that_differ"])
FLIP_READINESS = AssetKey(["billing", "flip_readiness"])
RECONCILIATION_STEP = "billing__reconciliation"
ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
# The statuses that do not count against the switch (README "Reading the results"), written out
# rather than imported, so what the checks and flip readiness are expected to say does not follow
# a change to the module they judge.
ACCEPTED_STATUSES = frozenset({"match", "within_tolerance", "rounding_difference", "waived"})

# (billing period, "customer" or "partner", id): a row of billing_reconciliation.
RowKey = tuple[str, str, int]


# --- Sandboxes, resources and runs -----------------------------------------------------------------


def generate_sandbox(home: Path, *, seed: int, scale: Mapping[str, int]) -> GeneratedSandbox:
    """A sandbox where the code location's settings look for it: ``<DAGSTER_HOME>/sandbox``."""
    return generate_small_sandbox(
        load_settings({"DAGSTER_HOME": str(home)}).sandbox_dir, seed=seed, scale=dict(scale)
    )


def copy_sandbox(sandbox: GeneratedSandbox, home: Path) -> GeneratedSandbox:
    """A private copy of a sandbox, NexaCloud database included, that a test may change."""
    out = load_settings({"DAGSTER_HOME": str(home)}).sandbox_dir
    shutil.copytree(sandbox.out, out)
    return GeneratedSandbox(
        out=out, nexacloud_url=f"sqlite:///{out / 'nexacloud.sqlite'}", manifest=sandbox.manifest
    )


@dataclass(frozen=True)
class CodeLocation:
    """The code location as it runs on one sandbox: its home, instance and resources."""

    home: Path
    sandbox: GeneratedSandbox
    instance: DagsterInstance
    warehouse_url: str | None = None  # None: the sandbox default, a SQLite file in the home

    @classmethod
    def on(cls, home: Path, sandbox: GeneratedSandbox, warehouse_url: str | None = None) -> CodeLocation:
        instance = DagsterInstance.ephemeral(tempdir=str(home / "dagster"))
        return cls(home, sandbox, instance, warehouse_url)

    def resources(self, **environment: str) -> dict[str, Any]:
        """The resources ``build_resources`` wires for the embedded sandbox in this home."""
        resources = build_resources(load_settings({"DAGSTER_HOME": str(self.home), **environment}))
        if self.warehouse_url is not None:
            resources["warehouse"] = Warehouse(url=self.warehouse_url)
        return resources

    @property
    def warehouse(self) -> Warehouse:
        return self.resources()["warehouse"]

    def reconcile(self, period: str, *, raise_on_error: bool = True) -> ExecuteInProcessResult:
        return defs.resolve_job_def(billing_period_job_name).execute_in_process(
            partition_key=period,
            instance=self.instance,
            resources=self.resources(),
            raise_on_error=raise_on_error,
        )

    def assess_flip_readiness(self, **environment: str) -> dict[str, Any]:
        result = defs.resolve_job_def(flip_readiness_job_name).execute_in_process(
            instance=self.instance, resources=self.resources(**environment)
        )
        return materialization_metadata(result, FLIP_READINESS)

    def results(self, periods: list[str] | None = None) -> pd.DataFrame:
        """``billing_reconciliation`` read back from the warehouse, not from any run's output."""
        with self._reading() as connection:
            return read_results(
                connection, None if periods is None else [date.fromisoformat(p) for p in periods]
            )

    def period(self, period: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        """One period's results and detail lines, as the warehouse holds them."""
        with self._reading() as connection:
            return read_period(connection, date.fromisoformat(period))

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        # An engine of its own: what another session reads is what was committed.
        engine = create_engine(self.warehouse.url)
        try:
            with engine.connect() as connection:
                yield connection
        finally:
            engine.dispose()


def materialization_metadata(result: ExecuteInProcessResult, key: AssetKey) -> dict[str, Any]:
    (event,) = [event for event in result.get_asset_materialization_events() if event.asset_key == key]
    return {name: value.value for name, value in event.materialization.metadata.items()}


def check_evaluation(result: ExecuteInProcessResult, name: str) -> AssetCheckEvaluation:
    (evaluation,) = [
        evaluation
        for evaluation in result.get_asset_check_evaluations()
        if evaluation.asset_key == RECONCILIATION and evaluation.check_name == name
    ]
    return evaluation


@dataclass(frozen=True)
class Reconciled:
    """A sandbox whose closed periods were all reconciled into one warehouse, with each run."""

    location: CodeLocation
    runs: dict[str, ExecuteInProcessResult]

    @property
    def sandbox(self) -> GeneratedSandbox:
        return self.location.sandbox

    @property
    def latest_closed_period(self) -> str:
        return max(self.sandbox.closed_periods)


@pytest.fixture(
    scope="module",
    params=[(seed, scale) for scale in SCALES for seed in SEEDS],
    ids=lambda param: f"seed{param[0]}-{param[1]}",
)
def reconciled(request, tmp_path_factory) -> Reconciled:
    seed, scale = request.param
    home = tmp_path_factory.mktemp(f"reconciled_seed{seed}_{scale}")
    location = CodeLocation.on(home, generate_sandbox(home, seed=seed, scale=SCALES[scale]))
    runs = {period: location.reconcile(period) for period in location.sandbox.closed_periods}
    return Reconciled(location, runs)


# --- Ground truth ----------------------------------------------------------------------------------


def _identifier(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def row_key(period: str, customer_id: Any, partner_id: Any) -> RowKey:
    customer_id = _identifier(customer_id)
    if customer_id is None:
        return (period, "partner", _identifier(partner_id))
    return (period, "customer", customer_id)


def describe(key: RowKey) -> str:
    period, kind, identifier = key
    return f"{period} {kind} {identifier}"


def expected_rows(manifest: Mapping[str, Any]) -> dict[RowKey, tuple[str, int | None]]:
    """The ground truth: (status, partner id) of every row of every closed period."""
    return {
        row_key(row["period"], row["customer_id"], row["partner_id"]): (row["status"], row["partner_id"])
        for row in manifest["expected"]
    }


def stored_rows(results: pd.DataFrame) -> dict[RowKey, tuple[str, int | None, str]]:
    """(status, partner id, cause) of every stored row; a key stored twice is reported as such."""
    rows: dict[RowKey, tuple[str, int | None, str]] = {}
    for row in results.itertuples(index=False):
        key = row_key(row.billing_period.isoformat(), row.customer_id, row.partner_id)
        assert key not in rows, f"{describe(key)} is stored twice in billing_reconciliation"
        rows[key] = (row.status, _identifier(row.partner_id), row.cause)
    return rows


def status_diff(
    expected: Mapping[RowKey, tuple[str, int | None]], stored: Mapping[RowKey, tuple[str, int | None, str]]
) -> list[str]:
    """One readable line per disagreement, then precision and recall of every status involved."""
    problems = []
    for key in sorted(expected.keys() | stored.keys(), key=lambda k: (k[0], k[1], k[2] or 0)):
        if key not in stored:
            problems.append(f"{describe(key)}: expected {expected[key][0]}, but no row was stored")
        elif key not in expected:
            status, partner, cause = stored[key]
            problems.append(f"{describe(key)}: unexpected row, {status} (partner {partner}): {cause}")
        elif expected[key] != stored[key][:2]:
            (status, partner), (got_status, got_partner, cause) = expected[key], stored[key]
            problems.append(
                f"{describe(key)}: expected {status} (partner {partner}), "
                f"got {got_status} (partner {got_partner}): {cause}"
            )
    if problems:
        truth = {key: value[0] for key, value in expected.items()}
        found = {key: value[0] for key, value in stored.items()}
        for status in sorted(set(truth.values()) | set(found.values())):
            relevant = {key for key, value in truth.items() if value == status}
            retrieved = {key for key, value in found.items() if value == status}
            hits = len(relevant & retrieved)
            if hits != len(relevant) or hits != len(retrieved):
                problems.append(
                    f"  {status}: precision {hits}/{len(retrieved)}, recall {hits}/{len(relevant)}"
                )
    return problems


def expected_statuses(manifest: Mapping[str, Any], period: str) -> Counter[str]:
    return Counter(row["status"] for row in manifest["expected"] if row["period"] == period)


def differences(manifest: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The injected differences of every closed period (a customer cast for every period once each)."""
    return manifest["differences"]


# --- 1. Precision and recall, from the warehouse table ---------------------------------------------


def test_every_expected_row_is_stored_with_exactly_its_status_and_no_other_row_exists(reconciled):
    stored = reconciled.location.results()
    manifest = reconciled.sandbox.manifest

    problems = status_diff(expected_rows(manifest), stored_rows(stored))

    assert not problems, "billing_reconciliation disagrees with the ground truth:\n" + "\n".join(problems)
    assert (
        sorted({period.isoformat() for period in stored["billing_period"]})
        == reconciled.sandbox.closed_periods
    )
    assert not stored["provisional"].any(), "closed periods were reconciled as provisional"
    # Every status of docs/design.md §6 is injected, and found, on every sandbox.
    assert set(stored["status"]) == set(STATUSES)


def test_every_customer_is_mapped_by_the_import_except_those_it_left_out_on_purpose(reconciled):
    # The sandbox's Odoo accounts were created by the importer; the exclusions file names who it left out.
    left_out = set(read_exclusions(reconciled.sandbox.out / "import_exclusions.csv"))
    assert left_out
    results = reconciled.location.results()
    unmapped = results.loc[(results["status"] == "unmapped") & results["customer_id"].notna()]
    for period in reconciled.sandbox.closed_periods:
        in_period = unmapped.loc[unmapped["billing_period"] == date.fromisoformat(period)]
        assert set(in_period["customer_id"].astype(int)) == left_out, period


def test_every_customer_not_cast_as_a_difference_reconciles_as_a_match(reconciled):
    manifest = reconciled.sandbox.manifest
    cast = {(row["period"], row["customer_id"]) for row in differences(manifest)}
    stored = reconciled.location.results()

    uncast = stored[
        [
            (period.isoformat(), _identifier(customer)) not in cast
            for period, customer in zip(stored["billing_period"], stored["customer_id"], strict=True)
        ]
    ]

    assert len(uncast) > 0
    wrong = uncast[~uncast["status"].isin({"match", "within_tolerance"})]
    assert wrong.empty, "customers with no injected difference that do not reconcile:\n" + "\n".join(
        f"{row.billing_period} customer {row.customer_id}: {row.status}: {row.cause}"
        for row in wrong.itertuples()
    )


def test_every_cause_is_a_sentence_and_a_usage_mismatch_names_the_local_days_that_differ(reconciled):
    stored = reconciled.location.results()

    not_sentences = [
        f"{row.billing_period} customer {row.customer_id} partner {row.partner_id} ({row.status}): {row.cause!r}"
        for row in stored.itertuples()
        if not (
            isinstance(row.cause, str)
            and len(row.cause.split()) >= 4
            and row.cause == row.cause.strip()
            and row.cause[0].isupper()
            and row.cause.endswith(".")
        )
    ]
    assert not not_sentences, "causes that are not sentences:\n" + "\n".join(not_sentences)

    by_key = {
        row_key(row.billing_period.isoformat(), row.customer_id, row.partner_id): row
        for row in stored.itertuples()
    }
    usage = [row for row in differences(reconciled.sandbox.manifest) if row["status"] == "usage_mismatch"]
    assert usage, "the sandbox injects lost and doubled usage pushes"
    for injected in usage:
        row = by_key[row_key(injected["period"], injected["customer_id"], injected["partner_id"])]
        days = set(ISO_DAY.findall(injected["description"]))
        assert days, injected["description"]
        assert set(ISO_DAY.findall(row.cause)) == days, (
            f"customer {injected['customer_id']} in {injected['period']}: the cause should name exactly "
            f"the local days {sorted(days)} ({injected['description']}), it reads: {row.cause}"
        )
        assert "usage" in row.cause

    waived = stored[stored["status"] == "waived"]
    assert not waived.empty
    assert waived["waiver_reason"].notna().all() and waived["waiver_approver"].notna().all()
    for row in waived.itertuples():
        assert row.waiver_reason in row.cause and row.waiver_approver in row.cause


def test_usage_is_read_per_local_day_only_for_the_deployments_whose_totals_disagree(reconciled):
    manifest = reconciled.sandbox.manifest
    for period, run in reconciled.runs.items():
        metadata = materialization_metadata(run, USAGE_DAYS)
        _, lines = reconciled.location.period(period)
        customer_of = dict(zip(lines["deployment_id"], lines["customer_id"], strict=True))
        read = {customer_of[deployment_id] for deployment_id in metadata["deployments_that_differ"]}
        cast = {row["customer_id"] for row in differences(manifest) if row["period"] == period}
        # Delivery faults whose bills still match (§10) make totals disagree too: the customers
        # that pushed them and those whose subscriptions received them.
        owner_of = dict(zip(lines["subscription_id"], lines["customer_id"], strict=True))
        for fault in manifest["delivery_faults"]:
            if fault["period"] == period:
                cast |= {fault["customer_id"], owner_of.get(fault["subscription_id"])}
        mismatched = {
            row["customer_id"]
            for row in differences(manifest)
            if row["period"] == period and row["status"] == "usage_mismatch"
        }
        assert mismatched <= read <= cast, (period, sorted(mismatched), sorted(read), sorted(cast))
        assert metadata["pairs_that_differ"] == len(metadata["deployments_that_differ"]) < len(lines) / 4
        # One grouped read per batch of subscriptions: never one per deployment, never everyone's days.
        assert metadata.get("odoo_calls", {}) == (
            {"fusion.billing.usage.formatted_read_group": 1} if read else {}
        ), period


# --- 4. Flip readiness -----------------------------------------------------------------------------


def test_flip_readiness_is_not_ready_and_names_the_latest_closed_periods_unexplained_statuses(reconciled):
    latest = reconciled.latest_closed_period
    unexplained = Counter(
        {
            status: count
            for status, count in expected_statuses(reconciled.sandbox.manifest, latest).items()
            if status not in ACCEPTED_STATUSES
        }
    )
    assert unexplained, "the sandbox injects unexplained differences in every closed period"

    readiness = reconciled.location.assess_flip_readiness()

    assert readiness["verdict"] == "not_ready"
    assert readiness["periods_judged"] == [latest]
    assert readiness["unexplained_by_period"] == {latest: sum(unexplained.values())}
    reasons = readiness["reasons"]
    assert f"{date.fromisoformat(latest):%Y-%m} has {sum(unexplained.values())} unexplained" in reasons
    for status, count in unexplained.items():
        assert f"{count} {status}" in reasons, f"{status} missing from the reasons: {reasons}"


def test_flip_readiness_is_ready_when_the_latest_closed_period_holds_only_accepted_statuses(
    reconciled, tmp_path
):
    latest = reconciled.latest_closed_period
    results = reconciled.location.results()
    accepted = results.copy()
    in_latest = accepted["billing_period"] == date.fromisoformat(latest)
    waived = in_latest & ~accepted["status"].isin(ACCEPTED_STATUSES)
    accepted.loc[waived, "status"] = "waived"
    accepted.loc[waived, "waiver_reason"] = "accepted for the test"
    accepted.loc[waived, "waiver_approver"] = "finance"
    clean = CodeLocation.on(
        tmp_path, reconciled.sandbox, warehouse_url=f"sqlite:///{tmp_path / 'clean.sqlite'}"
    )
    with clean.warehouse.begin() as connection:
        ensure_tables(connection)
        for period, rows in accepted.groupby("billing_period"):
            replace_period(connection, period, rows, pd.DataFrame(columns=LINE_COLUMNS))

    # The control loop was never observed: that alone holds the flip back.
    unobserved = clean.assess_flip_readiness()
    assert unobserved["verdict"] == "not_ready"
    assert "the control loop has never been observed" in unobserved["reasons"]

    # Observed an hour ago with every deployment in sync.
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    with clean.warehouse.begin() as connection:
        replace_lifecycle_drift(
            connection,
            LifecycleObservation("observed-in-sync", an_hour_ago, an_hour_ago, 7, {"in_sync": 0}, 0),
            pd.DataFrame(columns=DRIFT_COLUMNS),
        )

    readiness = clean.assess_flip_readiness()

    assert readiness["verdict"] == "ready", readiness["reasons"]
    assert readiness["periods_judged"] == [latest]
    assert readiness["unexplained_by_period"] == {latest: 0}

    # The periods before it still hold their unexplained differences: two clean periods are not there.
    previous = max(period for period in reconciled.sandbox.closed_periods if period != latest)
    two_periods = clean.assess_flip_readiness(BILLING_FLIP_READY_PERIODS="2")
    assert two_periods["verdict"] == "not_ready"
    assert two_periods["periods_judged"] == [previous, latest]
    assert f"{date.fromisoformat(previous):%Y-%m} has" in two_periods["reasons"]
    assert f"{date.fromisoformat(latest):%Y-%m}" not in two_periods["reasons"]


# --- 5. What the materialization shows -------------------------------------------------------------


def _table_rows(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| Customer | Partner | Status |"), markdown
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines[2:]]


def _cents(money: str) -> int:
    return int(Decimal(money.replace("$", "").replace(",", "")) * 100)


def test_the_materialization_shows_counts_variance_largest_differences_chart_and_reports(reconciled):
    for period, run in reconciled.runs.items():
        metadata = materialization_metadata(run, RECONCILIATION)
        stored, _ = reconciled.location.period(period)

        counts = metadata["counts_by_status"]
        assert list(counts) == list(STATUSES) and len(counts) == 14
        expected_counts = expected_statuses(reconciled.sandbox.manifest, period)
        assert counts == {status: expected_counts.get(status, 0) for status in STATUSES}
        assert metadata["dagster/row_count"] == len(stored) == sum(expected_counts.values())
        assert metadata["billing_period"] == period
        assert metadata["total_variance"] == format_cents(int(stored["delta_cents"].abs().sum()))
        assert metadata["unexplained_differences"] == sum(
            count for status, count in expected_counts.items() if status not in ACCEPTED_STATUSES
        )

        differing = stored[(stored["delta_cents"] != 0) | ~stored["status"].isin(ACCEPTED_STATUSES)]
        table = _table_rows(metadata["largest_differences"])
        assert len(table) == min(20, len(differing)) > 0
        if len(differing) <= 20:
            assert Counter(row[2] for row in table) == Counter(differing["status"])
        listed_sizes = [abs(_cents(row[5])) for row in table]
        assert listed_sizes == sorted(listed_sizes, reverse=True)
        assert listed_sizes[0] == int(stored["delta_cents"].abs().max())

        image = re.fullmatch(
            r"!\[[^\]]+\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", metadata["variance_by_status"]
        )
        assert image, metadata["variance_by_status"]
        svg = base64.b64decode(image.group(1)).decode("utf-8")
        assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
        for status in set(differing.loc[differing["delta_cents"] != 0, "status"]):
            assert f'data-status="{status}"' in svg

        reports = {name: Path(path) for name, path in metadata.items() if name.startswith("report_")}
        assert {path.suffix for path in reports.values()} == {".csv", ".html"}
        for path in reports.values():
            assert path.is_file() and path.stat().st_size > 0, path
            assert path.is_relative_to(reconciled.location.home)
        (results_csv,) = [path for name, path in reports.items() if name == "report_results_csv"]
        from_csv = pd.read_csv(results_csv, encoding="utf-8-sig")
        in_csv = {
            row_key(period, row.customer_id, row.partner_id): (row.status, _identifier(row.partner_id))
            for row in from_csv.itertuples(index=False)
        }
        truth = {
            key: value
            for key, value in expected_rows(reconciled.sandbox.manifest).items()
            if key[0] == period
        }
        assert len(from_csv) == len(in_csv) and in_csv == truth


def test_the_unexplained_differences_check_fails_with_error_severity_yet_the_results_are_written(reconciled):
    manifest = reconciled.sandbox.manifest
    for period, run in reconciled.runs.items():
        assert run.success
        unexplained = [
            row
            for row in manifest["expected"]
            if row["period"] == period and row["status"] not in ACCEPTED_STATUSES
        ]

        check = check_evaluation(run, "no_unexplained_differences")

        assert not check.passed
        assert check.severity == AssetCheckSeverity.ERROR
        metadata = {name: value.value for name, value in check.metadata.items()}
        assert metadata["billing_period"] == period
        assert metadata["unexplained_count"] == len(unexplained)
        assert set(metadata["offending_customer_ids"]) == {
            row["customer_id"] for row in unexplained if row["customer_id"] is not None
        }
        assert set(metadata["offending_partner_ids"]) == {
            row["partner_id"] for row in unexplained if row["customer_id"] is None
        }
        for other in ("one_row_per_customer", "leg_totals_match_invoices"):
            assert check_evaluation(run, other).passed, other
        stored, lines = reconciled.location.period(period)
        assert len(stored) == len([row for row in manifest["expected"] if row["period"] == period])
        assert not lines.empty


# --- 2. Re-materializing after one NexaCloud invoice changed ---------------------------------------


def _plain_matching_customer(manifest: Mapping[str, Any], period: str) -> int:
    """A customer cast in no role at all that matches in ``period``."""
    cast = {row["customer_id"] for row in (*manifest["differences"], *manifest["edge_cases"])}
    return min(
        row["customer_id"]
        for row in manifest["expected"]
        if row["period"] == period and row["status"] == "match" and row["customer_id"] not in cast
    )


def _add_to_the_base_line(sandbox: GeneratedSandbox, customer_id: int, period: str, cents: int) -> int:
    """Raise one base line of the customer's invoice and the invoice with it; return the deployment."""
    with closing(sqlite3.connect(sandbox.out / "nexacloud.sqlite")) as connection, connection:
        line_id, invoice_id, deployment_id = connection.execute(
            "SELECT l.id, i.id, l.deployment_id FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id "
            "WHERE i.customer_id = ? AND i.period_start = ? AND i.status != 'void' AND l.kind = 'base' "
            "ORDER BY l.id LIMIT 1",
            (customer_id, period),
        ).fetchone()
        connection.execute(
            "UPDATE invoice_lines SET amount_cents = amount_cents + ? WHERE id = ?", (cents, line_id)
        )
        connection.execute(
            "UPDATE invoices SET subtotal_cents = subtotal_cents + ?, total_cents = total_cents + ? WHERE id = ?",
            (cents, cents, invoice_id),
        )
    return deployment_id


def _by_customer(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["billing_period", "customer_id", "partner_id"], na_position="last").reset_index(
        drop=True
    )


def test_rematerializing_a_period_after_one_nexacloud_invoice_changed_changes_only_that_customers_row(
    small_sandbox, tmp_path
):
    location = CodeLocation.on(tmp_path, copy_sandbox(small_sandbox, tmp_path))
    period = max(location.sandbox.closed_periods)
    for closed in location.sandbox.closed_periods:
        location.reconcile(closed)
    before_all = location.results()
    before, before_lines = location.period(period)
    customer_id = _plain_matching_customer(location.sandbox.manifest, period)
    assert before.set_index("customer_id").loc[customer_id, "status"] == "match"

    deployment_id = _add_to_the_base_line(location.sandbox, customer_id, period, 100)
    run = location.reconcile(period)

    after, after_lines = location.period(period)
    changed = after["customer_id"] == customer_id
    row, was = after[changed].iloc[0], before[before["customer_id"] == customer_id].iloc[0]
    assert row["status"] == "amount_mismatch", row["cause"]
    assert row["delta_cents"] == was["delta_cents"] - 100 == -100
    assert row["nexacloud_subtotal_cents"] == was["nexacloud_subtotal_cents"] + 100
    assert row["nexacloud_total_cents"] == was["nexacloud_total_cents"] + 100
    assert row["plan_fee_delta_cents"] == was["plan_fee_delta_cents"] - 100
    for unchanged in ("odoo_total_cents", "expected_total_cents", "nexacloud_tax_cents", "partner_id"):
        assert row[unchanged] == was[unchanged], unchanged
    assert "-$1.00" in row["cause"]
    assert (
        customer_id
        in check_evaluation(run, "no_unexplained_differences").metadata["offending_customer_ids"].value
    )

    # Every other row of the period is the same but for when it was reconciled.
    assert (after["reconciled_at"] > before["reconciled_at"].max()).all()
    pd.testing.assert_frame_equal(
        _by_customer(after[~changed]).drop(columns="reconciled_at"),
        _by_customer(before[before["customer_id"] != customer_id]).drop(columns="reconciled_at"),
    )
    line_changed = after_lines["deployment_id"] == deployment_id
    assert line_changed.sum() == 1
    assert (
        after_lines.loc[line_changed, "nexacloud_base_cents"].item()
        == before_lines.loc[before_lines["deployment_id"] == deployment_id, "nexacloud_base_cents"].item()
        + 100
    )
    pd.testing.assert_frame_equal(
        after_lines[~line_changed].reset_index(drop=True),
        before_lines[before_lines["deployment_id"] != deployment_id].reset_index(drop=True),
    )
    # The other periods were not touched at all.
    others = [closed for closed in location.sandbox.closed_periods if closed != period]
    pd.testing.assert_frame_equal(
        location.results(others),
        before_all[before_all["billing_period"] != date.fromisoformat(period)].reset_index(drop=True),
    )


# --- 3. A failure in the middle of the write -------------------------------------------------------


class WarehouseWriteFailed(RuntimeError):
    """Raised by the test in the middle of a period's write."""


class FailingAtTheSecondInsert:
    """A warehouse connection whose write fails at its second bulk insert, after the deletes and the
    first insert went through: the period is half-written when the error leaves ``replace_period``.

    Deletes are statements on the connection; the rows go in through ``warehouse._insert`` (COPY
    on PostgreSQL), which ``insert`` stands in for.
    """

    def __init__(self, connection, real_insert):
        self._connection = connection
        self._real_insert = real_insert
        self.executed: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    def execute(self, statement, *args, **kwargs):
        if isinstance(statement, Delete):
            self.executed.append(("delete", statement.table.name))
        return self._connection.execute(statement, *args, **kwargs)

    def insert(self, connection, table, columns) -> None:
        if [done for done, _ in self.executed].count("insert") == 1:
            raise WarehouseWriteFailed(f"injected failure before inserting into {table.name}")
        self.executed.append(("insert", table.name))
        self._real_insert(connection, table, columns)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_failure_in_the_middle_of_the_write_leaves_the_periods_previous_rows_intact(
    backend, small_sandbox, tmp_path, monkeypatch, request
):
    warehouse_url = request.getfixturevalue("postgres_database_url") if backend == "postgres" else None
    location = CodeLocation.on(tmp_path, copy_sandbox(small_sandbox, tmp_path), warehouse_url)
    period, other = max(location.sandbox.closed_periods), min(location.sandbox.closed_periods)
    location.reconcile(other)
    location.reconcile(period)
    before, before_lines = location.period(period)
    before_other = location.period(other)
    assert not before.empty and not before_lines.empty

    connections: list[FailingAtTheSecondInsert] = []
    real_insert = warehouse_module._insert

    def replace_period_failing_midway(connection, *args, **kwargs):
        connections.append(FailingAtTheSecondInsert(connection, real_insert))
        monkeypatch.setattr(warehouse_module, "_insert", connections[-1].insert)
        replace_period(connections[-1], *args, **kwargs)

    # The asset looks replace_period up in its own module.
    monkeypatch.setattr(reconciliation_defs, "replace_period", replace_period_failing_midway)
    run = location.reconcile(period, raise_on_error=False)

    assert not run.success
    (failure,) = run.get_step_failure_events()
    assert failure.step_key == RECONCILIATION_STEP
    assert "injected failure" in str(failure.event_specific_data.error)
    (connection,) = connections
    assert sorted(connection.executed[:2]) == [
        ("delete", "billing_reconciliation"),
        ("delete", "billing_reconciliation_lines"),
    ]
    assert [kind for kind, _ in connection.executed] == ["delete", "delete", "insert"], connection.executed

    after, after_lines = location.period(period)
    pd.testing.assert_frame_equal(after, before)
    pd.testing.assert_frame_equal(after_lines, before_lines)
    for table_after, table_before in zip(location.period(other), before_other, strict=True):
        pd.testing.assert_frame_equal(table_after, table_before)
