"""The period report a person reads: counts by status, largest differences, the chart, CSV and HTML files."""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime
from decimal import Decimal

import pandas as pd
import pytest
from sqlalchemy import create_engine

from fusion_billing_assets.reports import (
    STATUSES,
    largest_differences_markdown,
    status_counts,
    svg_markdown_image,
    total_variance_cents,
    unexplained_by_severity,
    variance_chart_svg,
    write_period_report,
)
from fusion_billing_assets.warehouse import ensure_tables, read_period, replace_period
from tests.test_warehouse import OCTOBER, line_row, lines_frame, result_row, results_frame

GENERATED_AT = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
SVG = "{http://www.w3.org/2000/svg}"


def differing_row(customer_id: int | None, status: str, delta_cents: int, **overrides) -> dict:
    """A row whose Odoo total is ``delta_cents`` off NexaCloud's $113.00."""
    defaults = {
        "status": status,
        "cause": f"Odoo is {delta_cents} cents off.",
        "odoo_total_cents": 11_300 + delta_cents,
        "delta_cents": delta_cents,
    }
    return result_row(customer_id, **{**defaults, **overrides})


def typed_results(rows: list[dict]) -> pd.DataFrame:
    """Results typed as the warehouse reads them back: nullable ids stay integers."""
    return results_frame(rows).astype({"customer_id": "Int64", "partner_id": "Int64"})


@pytest.fixture
def october() -> tuple[pd.DataFrame, pd.DataFrame]:
    """A period with a row of most statuses, an unmapped Odoo partner and a hostile customer name."""
    results = typed_results(
        [
            result_row(1),
            result_row(2, customer_name="<script>alert('x')</script>"),
            differing_row(3, "within_tolerance", 1),
            differing_row(4, "usage_mismatch", 450),
            differing_row(5, "missing_in_odoo", -11_300, odoo_invoice_count=0, odoo_currency=None),
            differing_row(6, "waived", -2, waiver_reason="HST rounding", waiver_approver="cfo@nexa.example"),
            differing_row(7, "duplicate", 11_300, odoo_invoice_count=2),
            differing_row(None, "missing_in_nexacloud", 11_300, partner_id=4242, customer_name=None),
            result_row(8, customer_name='Café "Nord", Inc.'),
        ]
    )
    lines = lines_frame(
        [
            line_row(2, 20),
            line_row(4, 40, odoo_cpu_seconds=Decimal("3960.000"), odoo_overage_cents=450),
            line_row(4, 41),
            line_row(None, None, partner_id=4242, subscription_id=9000),
        ]
    )
    return results, lines


def test_counts_hold_every_status_in_the_design_order(october):
    results, _ = october

    counts = status_counts(results)

    # docs/design.md §6's order, written out: the report lists the statuses in it.
    assert list(counts.items()) == [
        ("match", 3),
        ("within_tolerance", 1),
        ("rounding_difference", 0),
        ("usage_mismatch", 1),
        ("rate_mismatch", 0),
        ("tax_mismatch", 0),
        ("amount_mismatch", 0),
        ("missing_in_odoo", 1),
        ("missing_in_nexacloud", 1),
        ("unmapped", 0),
        ("duplicate", 1),
        ("currency_mismatch", 0),
        ("waived", 1),
        ("source_data_error", 0),
    ]
    assert status_counts(results.iloc[0:0]) == dict.fromkeys(STATUSES, 0)


def test_an_unknown_status_is_refused():
    with pytest.raises(ValueError, match="mismatch_of_sorts"):
        status_counts(typed_results([result_row(1, status="mismatch_of_sorts")]))


def test_variance_and_unexplained_rows(october):
    results, _ = october

    assert total_variance_cents(results) == 1 + 450 + 11_300 + 2 + 11_300 + 11_300
    held_back = unexplained_by_severity(results)
    # Most severe first: a duplicate, then the missing invoices, then a usage difference.
    assert held_back["status"].tolist() == [
        "duplicate",
        "missing_in_odoo",
        "missing_in_nexacloud",
        "usage_mismatch",
    ]


def test_the_markdown_table_lists_the_largest_differences_in_order():
    deltas = [(-1) ** n * (n * 137 + 5) for n in range(25)]
    results = typed_results(
        [differing_row(n + 1, "amount_mismatch", delta) for n, delta in enumerate(deltas)]
        + [result_row(100), differing_row(101, "rounding_difference", 0)]
    )

    table = largest_differences_markdown(results)

    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 20
    largest = sorted(deltas, key=abs, reverse=True)[:20]
    assert [row.split(" | ")[5] for row in rows] == [format_delta(delta) for delta in largest]
    assert rows[0].startswith("| Customer 25 (#25) | #1025 | amount_mismatch | $113.00 |")
    assert table.endswith("_…and 5 more rows with a difference._")
    # The matching row and the accepted rounding difference of zero cents are not differences.
    assert largest_differences_markdown(results, limit=30).count("\n| ") == 25


def test_the_markdown_table_escapes_its_cells_and_says_when_nothing_differs():
    results = typed_results(
        [differing_row(1, "amount_mismatch", 5, customer_name="A | B <b>", cause="two\nlines")]
    )

    row = largest_differences_markdown(results).splitlines()[2]

    assert row.startswith("| A \\| B &lt;b&gt; (#1) |")
    assert "| two lines |" in row
    assert largest_differences_markdown(typed_results([result_row(1)])).startswith("_No differences")


def format_delta(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    return f"{sign}${abs(cents) // 100:,}.{abs(cents) % 100:02d}"


def test_the_chart_is_svg_with_one_bar_per_status_that_differs(october):
    results, _ = october

    svg = variance_chart_svg(results)

    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert (root.get("width"), root.get("height")) == ("640", "320")
    bars = root.findall(f".//{SVG}rect[@class='bar']")
    assert [bar.get("data-status") for bar in bars] == [
        "duplicate",
        "missing_in_odoo",
        "missing_in_nexacloud",
        "usage_mismatch",
        "within_tolerance",
        "waived",
    ]
    widths = {bar.get("data-status"): float(bar.get("width")) for bar in bars}
    assert widths["duplicate"] == widths["missing_in_odoo"] > widths["usage_mismatch"] > 0
    texts = [text.text for text in root.iter(f"{SVG}text")]
    assert {"$113.00", "$4.50", "$0.01", "$0.02"} <= set(texts)
    assert "Sum of |Odoo − NexaCloud| per status, in dollars" in texts
    assert not re.search(r"<script|href=|url\(|@import", svg)


def test_a_chart_without_differences_has_no_bars_and_still_parses():
    root = ET.fromstring(variance_chart_svg(typed_results([result_row(1)])))

    assert root.findall(f".//{SVG}rect[@class='bar']") == []
    assert "No differences in this period." in [text.text for text in root.iter(f"{SVG}text")]


def test_the_chart_travels_as_a_markdown_data_uri(october):
    svg = variance_chart_svg(october[0])

    image = svg_markdown_image(svg)

    prefix = "![Variance by status](data:image/svg+xml;base64,"
    assert image.startswith(prefix) and image.endswith(")")
    assert base64.b64decode(image[len(prefix) : -1]).decode("utf-8") == svg


def test_the_html_page_shows_every_row_escaped_with_the_provisional_banner(tmp_path, october):
    results, lines = october

    paths = write_period_report(
        tmp_path / "reports", OCTOBER, results, lines, provisional=True, generated_at=GENERATED_AT
    )

    assert {name: path.name for name, path in paths.items()} == {
        "results_csv": "reconciliation-2026-10-01.csv",
        "lines_csv": "reconciliation-lines-2026-10-01.csv",
        "html": "reconciliation-2026-10-01.html",
    }
    page = paths["html"].read_text(encoding="utf-8")
    assert 'class="banner provisional"' in page
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; (#2)" in page
    assert "Café &quot;Nord&quot;, Inc. (#8)" in page
    assert "#4242" in page
    result_rows = re.findall(r'<tr class="(?:explained|unexplained)">', page)
    assert len(result_rows) == len(results)
    # Most severe first, then the largest difference first within a status.
    order = [page.index(f"Customer {n} (#{n})") for n in (7, 5, 4, 3, 6, 1)]
    assert order == sorted(order)
    assert page.count("<details>") == 3
    assert "HST rounding (approved by cfo@nexa.example)" in page
    assert "<svg" in page and 'class="bar"' in page
    assert "2026-11-02 09:30 UTC" in page
    assert re.search(r"<dt>Unexplained</dt><dd[^>]*>4 rows, \$343\.50</dd>", page)
    assert not re.search(r'<(?:link|script|img)\b|src="http', page)


def test_a_closed_period_has_no_provisional_banner(tmp_path, october):
    results, lines = october

    paths = write_period_report(
        tmp_path, OCTOBER, results, lines, provisional=False, generated_at=GENERATED_AT
    )

    assert "banner provisional" not in paths["html"].read_text(encoding="utf-8")


def test_the_csv_files_round_trip_with_their_cents_and_dollars(tmp_path, october):
    results, lines = october

    paths = write_period_report(
        tmp_path, OCTOBER, results, lines, provisional=False, generated_at=GENERATED_AT
    )

    from_csv = pd.read_csv(paths["results_csv"], encoding="utf-8-sig")
    assert len(from_csv) == len(results)
    for column in (name for name in results.columns if name.endswith("_cents")):
        assert from_csv[column].dtype == "int64"
        assert from_csv[column].sum() == results[column].sum()
        dollars = from_csv[column.removesuffix("_cents") + "_dollars"]
        assert sum(Decimal(str(value)) * 100 for value in dollars) == int(results[column].sum())
    assert set(from_csv["customer_name"].dropna()) == set(results["customer_name"].dropna())
    assert from_csv["status"].iloc[0] == "duplicate"
    assert from_csv["billing_period"].unique().tolist() == ["2026-10-01"]

    lines_from_csv = pd.read_csv(paths["lines_csv"], encoding="utf-8-sig")
    assert len(lines_from_csv) == len(lines)
    assert lines_from_csv["odoo_overage_cents"].sum() == lines["odoo_overage_cents"].sum()
    assert lines_from_csv["odoo_overage_dollars"].sum() == pytest.approx(4.50)


def test_a_report_refuses_rows_of_another_period(tmp_path, october):
    results, lines = october
    results.loc[0, "billing_period"] = date(2026, 9, 1)

    with pytest.raises(ValueError, match=r"rows of other billing periods \(rows \[0\]\)"):
        write_period_report(tmp_path, OCTOBER, results, lines, provisional=False, generated_at=GENERATED_AT)


def test_a_period_read_back_from_the_warehouse_makes_the_same_report(tmp_path, october):
    results, lines = october
    engine = create_engine(f"sqlite:///{tmp_path / 'warehouse.sqlite'}")
    with engine.begin() as connection:
        ensure_tables(connection)
        replace_period(connection, OCTOBER, results, lines)
    with engine.connect() as connection:
        stored_results, stored_lines = read_period(connection, OCTOBER)
    engine.dispose()

    assert status_counts(stored_results) == status_counts(results)
    assert largest_differences_markdown(stored_results) == largest_differences_markdown(results)
    assert variance_chart_svg(stored_results) == variance_chart_svg(results)
    kept = write_period_report(
        tmp_path / "kept", OCTOBER, stored_results, stored_lines, provisional=True, generated_at=GENERATED_AT
    )
    fresh = write_period_report(
        tmp_path / "fresh", OCTOBER, results, lines, provisional=True, generated_at=GENERATED_AT
    )
    assert kept["html"].read_text(encoding="utf-8") == fresh["html"].read_text(encoding="utf-8")
