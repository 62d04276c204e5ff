"""One period's reconciliation as a person reads it: counts, the largest differences, a chart, files.

Pure functions of a results frame (``warehouse.RESULT_COLUMNS``) and its detail lines
(``warehouse.LINE_COLUMNS``). The reconciliation asset puts the Markdown table and the chart in its
metadata; ``write_period_report`` writes the CSV files and the self-contained HTML page that a
finance person opens without Dagster. Every amount is shown in dollars; a delta is Odoo minus
NexaCloud.
"""

from __future__ import annotations

import base64
import html
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from fusion_billing_assets.billing.money import cents_to_dollars, format_cents
from fusion_billing_assets.billing.periods import next_period
from fusion_billing_assets.billing.statuses import (
    SEVERITY_ORDER,
    STATUSES,
    Status,
    is_unexplained,
    unexplained,
)

_SEVERITY_RANK = {status: rank for rank, status in enumerate(SEVERITY_ORDER)}

NO_VALUE = "—"


def status_counts(results: pd.DataFrame) -> dict[str, int]:
    """Rows per status, for every status of docs/design.md §6 (zeros included), in ``STATUSES`` order."""
    counts = results["status"].value_counts()
    unknown = sorted(set(counts.index) - set(STATUSES))
    if unknown:
        raise ValueError(f"results hold statuses that docs/design.md §6 does not define: {unknown}")
    return {status: int(counts.get(status, 0)) for status in STATUSES}


def total_variance_cents(results: pd.DataFrame) -> int:
    """The sum of every row's absolute difference, in cents."""
    return sum(abs(int(delta)) for delta in results["delta_cents"])


def unexplained_by_severity(results: pd.DataFrame) -> pd.DataFrame:
    """The rows that hold back the switch to Odoo, most severe first."""
    return in_severity_order(unexplained(results))


def in_severity_order(results: pd.DataFrame) -> pd.DataFrame:
    """Rows by status severity (``SEVERITY_ORDER``), then by the size of their difference."""
    ranked = results.assign(
        _rank=results["status"].map(_SEVERITY_RANK), _size=results["delta_cents"].abs().astype("int64")
    )
    return ranked.sort_values(
        ["_rank", "_size", "customer_id", "partner_id"],
        ascending=[True, False, True, True],
        kind="stable",
        na_position="last",
    ).drop(columns=["_rank", "_size"])


def largest_differences_markdown(results: pd.DataFrame, limit: int = 20) -> str:
    """A Markdown table of the ``limit`` rows with the largest absolute difference.

    Rows that agree to the cent under an accepted status are left out; an unexplained status with
    no difference in the totals (a duplicate that sums up right) is kept, after the others.
    """
    differing = results[(results["delta_cents"] != 0) | is_unexplained(results["status"])]
    if differing.empty:
        return "_No differences: every row agrees to the cent._"
    largest = differing.assign(
        _size=differing["delta_cents"].abs().astype("int64"), _rank=differing["status"].map(_SEVERITY_RANK)
    ).sort_values(["_size", "_rank"], ascending=[False, True], kind="stable")
    lines = [
        "| Customer | Partner | Status | NexaCloud total | Odoo total | Delta | Cause |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for row in largest.head(limit).to_dict("records"):
        cells = [
            _customer_label(row),
            _id_label(row["partner_id"]),
            row["status"],
            _money(row["nexacloud_total_cents"]),
            _money(row["odoo_total_cents"]),
            _money(row["delta_cents"]),
            row["cause"],
        ]
        lines.append("| " + " | ".join(_markdown_cell(cell) for cell in cells) + " |")
    if len(largest) > limit:
        lines.append("")
        lines.append(f"_…and {len(largest) - limit} more rows with a difference._")
    return "\n".join(lines)


# --- The chart ---------------------------------------------------------------------------------

CHART_WIDTH = 640
CHART_MIN_HEIGHT = 320
_LEFT, _RIGHT, _TOP, _BOTTOM = 178, 96, 44, 52
_ROW = 20
_EXPLAINED_COLOUR = "#7a8793"
_UNEXPLAINED_COLOUR = "#c2410c"


def variance_chart_svg(results: pd.DataFrame) -> str:
    """A horizontal bar chart of the total absolute difference per status, as standalone SVG.

    One bar per status with a non-zero total, most severe at the top, its value in dollars at the
    end of the bar; unexplained statuses in orange, accepted ones in grey.
    """
    sizes = results["delta_cents"].abs().astype("int64").groupby(results["status"]).sum()
    bars = [(status, int(sizes[status])) for status in SEVERITY_ORDER if sizes.get(status, 0) > 0]
    height = max(CHART_MIN_HEIGHT, _TOP + _BOTTOM + _ROW * len(bars))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_WIDTH}" height="{height}" '
        f'viewBox="0 0 {CHART_WIDTH} {height}" role="img" font-family="sans-serif" font-size="12">',
        "<title>Variance by status: total |Odoo − NexaCloud| per reconciliation status</title>",
        f'<rect width="{CHART_WIDTH}" height="{height}" fill="#ffffff"/>',
        '<text x="12" y="22" font-size="15" font-weight="bold" fill="#1f2933">Variance by status</text>',
    ]
    if not bars:
        parts.append(
            f'<text x="{CHART_WIDTH / 2}" y="{height / 2}" text-anchor="middle" fill="#52606d">'
            "No differences in this period.</text></svg>"
        )
        return "\n".join(parts)
    parts.append(_legend())
    plot_width = CHART_WIDTH - _LEFT - _RIGHT
    plot_height = height - _TOP - _BOTTOM
    step = _tick_step(max(cents for _, cents in bars))
    axis_max = step * -(-max(cents for _, cents in bars) // step)
    for tick in range(0, axis_max + 1, step):
        x = _LEFT + plot_width * tick / axis_max
        parts.append(
            f'<line x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{_TOP + plot_height}" stroke="#e4e7eb"/>'
            f'<text x="{x:.1f}" y="{_TOP + plot_height + 16}" text-anchor="middle" fill="#52606d">'
            f"{html.escape(_tick_label(tick, step))}</text>"
        )
    row_height = plot_height / len(bars)
    bar_height = min(22.0, row_height * 0.7)
    for index, (status, cents) in enumerate(bars):
        y = _TOP + row_height * index + (row_height - bar_height) / 2
        width = max(1.0, plot_width * cents / axis_max)
        colour = _UNEXPLAINED_COLOUR if Status(status).counts_against_switch else _EXPLAINED_COLOUR
        label = html.escape(status)
        value = html.escape(format_cents(cents))
        middle = y + bar_height / 2 + 4
        parts.append(
            f'<text x="{_LEFT - 8}" y="{middle:.1f}" text-anchor="end" fill="#1f2933">{label}</text>'
            f'<rect class="bar" data-status="{label}" x="{_LEFT}" y="{y:.1f}" width="{width:.1f}" '
            f'height="{bar_height:.1f}" fill="{colour}"><title>{label}: {value}</title></rect>'
            f'<text x="{_LEFT + width + 6:.1f}" y="{middle:.1f}" fill="#1f2933">{value}</text>'
        )
    parts.append(
        f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_TOP + plot_height}" stroke="#52606d"/>'
        f'<line x1="{_LEFT}" y1="{_TOP + plot_height}" x2="{_LEFT + plot_width}" '
        f'y2="{_TOP + plot_height}" stroke="#52606d"/>'
        f'<text x="{_LEFT + plot_width / 2}" y="{height - 12}" text-anchor="middle" fill="#1f2933">'
        "Sum of |Odoo − NexaCloud| per status, in dollars</text>"
        f'<text transform="translate(14 {_TOP + plot_height / 2}) rotate(-90)" text-anchor="middle" '
        'fill="#1f2933">Status</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


def svg_markdown_image(svg: str) -> str:
    """The chart as a Markdown image with a data URI, which Dagster's Markdown metadata shows."""
    encoded = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return f"![Variance by status](data:image/svg+xml;base64,{encoded})"


def _legend() -> str:
    x = CHART_WIDTH - 250
    return (
        f'<rect x="{x}" y="12" width="10" height="10" fill="{_UNEXPLAINED_COLOUR}"/>'
        f'<text x="{x + 14}" y="21" fill="#1f2933">unexplained</text>'
        f'<rect x="{x + 100}" y="12" width="10" height="10" fill="{_EXPLAINED_COLOUR}"/>'
        f'<text x="{x + 114}" y="21" fill="#1f2933">explained or accepted</text>'
    )


def _tick_step(largest_cents: int) -> int:
    """A round step (1, 2 or 5 × a power of ten cents) that covers the largest bar in four ticks."""
    magnitude = 1
    while True:
        for multiple in (1, 2, 5):
            if multiple * magnitude * 4 >= largest_cents:
                return multiple * magnitude
        magnitude *= 10


def _tick_label(cents: int, step: int) -> str:
    if step % 100 == 0:
        return f"${cents // 100:,}"
    return format_cents(cents)


# --- Files -------------------------------------------------------------------------------------


@contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """A fresh folder to write ``target``'s files into; it replaces ``target`` only on success.

    On an error inside the block the staging folder is removed and ``target`` keeps its files, so
    a report and the results it describes are replaced together or not at all. The folder is made
    beside ``target`` (same file system), so putting it in place is a rename.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = target.parent / f".{target.name}.previous-{staging.name.rsplit('-', 1)[-1]}"
    if target.exists():
        target.rename(previous)
    staging.rename(target)
    shutil.rmtree(previous, ignore_errors=True)


@dataclass(frozen=True)
class ReportAudit:
    """Which run a report shows, whether the period is signed off, and what moved since."""

    run_id: str
    signed_off_by: str | None = None
    signed_off_at: datetime | None = None
    signed_off_run_id: str | None = None
    changes: pd.DataFrame | None = None  # billing.audit.changes_since_signoff
    changed_inputs: tuple[str, ...] = ()


def write_period_report(
    directory: Path,
    period: date,
    results: pd.DataFrame,
    lines: pd.DataFrame,
    *,
    provisional: bool,
    generated_at: datetime,
    audit: ReportAudit | None = None,
) -> dict[str, Path]:
    """Write the period's results and lines as CSV, and the HTML page; return their paths.

    The CSV files hold every row with each amount twice, in cents and in dollars, results most
    severe first. They are UTF-8 with a byte-order mark so that spreadsheet programs read customer
    names right.
    """
    _check_period(results, period)
    _check_period(lines, period)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "results_csv": directory / f"reconciliation-{period.isoformat()}.csv",
        "lines_csv": directory / f"reconciliation-lines-{period.isoformat()}.csv",
        "html": directory / f"reconciliation-{period.isoformat()}.html",
    }
    with_dollars(in_severity_order(results)).to_csv(paths["results_csv"], index=False, encoding="utf-8-sig")
    with_dollars(lines).to_csv(paths["lines_csv"], index=False, encoding="utf-8-sig")
    page = period_report_html(
        period, results, lines, provisional=provisional, generated_at=generated_at, audit=audit
    )
    paths["html"].write_text(page, encoding="utf-8")
    return paths


def with_dollars(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with a ``*_dollars`` column (exact, two decimals) after each ``*_cents`` column."""
    columns: dict[str, pd.Series] = {}
    for name in frame.columns:
        columns[name] = frame[name]
        if name.endswith("_cents"):
            columns[name.removesuffix("_cents") + "_dollars"] = frame[name].map(
                lambda cents: None if pd.isna(cents) else cents_to_dollars(int(cents))
            )
    return pd.DataFrame(columns, index=frame.index)


def period_report_html(
    period: date,
    results: pd.DataFrame,
    lines: pd.DataFrame,
    *,
    provisional: bool,
    generated_at: datetime,
    audit: ReportAudit | None = None,
) -> str:
    """The period's reconciliation as one self-contained HTML page (inline CSS and chart)."""
    month = period.strftime("%B %Y")
    last_day = next_period(period) - timedelta(days=1)
    ordered = in_severity_order(results)
    held_back = unexplained_by_severity(results)
    counts = status_counts(results)
    sizes = results["delta_cents"].abs().astype("int64").groupby(results["status"]).sum()
    generated = generated_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    verdict = (
        "Every difference in this period is explained or accepted."
        if held_back.empty
        else f"{len(held_back)} of {len(results)} rows have a difference that is not explained."
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_text(f'Billing reconciliation {month}: NexaCloud vs Odoo')}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>Billing reconciliation, {_text(month)}</h1>",
        f'<p class="lede">What NexaCloud billed against what Odoo computed, for the billing period '
        f"{_text(period.isoformat())} to {_text(last_day.isoformat())}. Generated {_text(generated)}. "
        "Amounts are in dollars; a delta is Odoo minus NexaCloud.</p>",
    ]
    if provisional:
        parts.append(
            '<div class="banner provisional" role="note"><strong>Provisional.</strong> '
            f"{_text(month)} is not closed yet: usage is still arriving, so these results will "
            "change and do not count towards the switch to Odoo.</div>"
        )
    parts += [
        "<h2>Summary</h2>",
        '<dl class="summary">',
        f"<dt>Billing period</dt><dd>{_text(period.isoformat())}</dd>",
        f"<dt>Rows</dt><dd>{len(results)}</dd>",
        f"<dt>Total variance</dt><dd>{_text(format_cents(total_variance_cents(results)))}</dd>",
        f'<dt>Unexplained</dt><dd class="{"bad" if len(held_back) else "good"}">{len(held_back)} rows, '
        f"{_text(format_cents(total_variance_cents(held_back)))}</dd>",
        *_audit_summary_html(audit),
        "</dl>",
        f'<p class="verdict {"bad" if len(held_back) else "good"}">{_text(verdict)}</p>',
        *_changes_since_signoff_html(audit),
        '<div class="side-by-side">',
        '<table class="counts"><thead><tr><th>Status</th><th class="num">Rows</th>'
        '<th class="num">Total |delta|</th><th>Meaning</th></tr></thead><tbody>',
    ]
    for status, count in counts.items():
        row_class = "" if count else ' class="zero"'
        parts.append(
            f'<tr{row_class}><td>{_status_badge(status)}</td><td class="num">{count}</td>'
            f'<td class="num">{_text(format_cents(int(sizes.get(status, 0))))}</td>'
            f"<td>{_text(Status(status).meaning)}</td></tr>"
        )
    parts += [
        "</tbody></table>",
        f'<figure class="chart">{variance_chart_svg(results)}</figure>',
        "</div>",
        "<h2>Every customer, most severe first</h2>",
        '<div class="scroll"><table class="results"><thead><tr><th>Status</th><th>Customer</th>'
        '<th>Odoo partner</th><th>Currency</th><th class="num">NexaCloud total</th>'
        '<th class="num">Odoo total</th><th class="num">Expected total</th><th class="num">Delta</th>'
        "<th>Cause</th></tr></thead><tbody>",
    ]
    for row in ordered.to_dict("records"):
        parts.append(_result_row_html(row))
    parts += ["</tbody></table></div>", "<h2>Detail lines by customer</h2>"]
    parts += _lines_by_customer_html(ordered, lines)
    parts += [
        f"<footer>Generated {_text(generated)} by fusion_billing_assets from the warehouse table "
        "billing_reconciliation. Statuses as defined in the billing reconciliation design, §6.</footer>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def _audit_summary_html(audit: ReportAudit | None) -> list[str]:
    if audit is None:
        return []
    if audit.signed_off_by is None:
        signoff = "not signed off"
    else:
        when = (
            audit.signed_off_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if audit.signed_off_at else ""
        )
        signoff = f"signed off by {audit.signed_off_by} on {when} (run {audit.signed_off_run_id})"
    return [
        f"<dt>Run</dt><dd>{_text(audit.run_id)}</dd>",
        f"<dt>Sign-off</dt><dd>{_text(signoff)}</dd>",
    ]


def _changes_since_signoff_html(audit: ReportAudit | None) -> list[str]:
    if audit is None or audit.changes is None or audit.changes.empty:
        return []
    why = (
        f"Inputs that changed since the signed-off run: {', '.join(audit.changed_inputs)}."
        if audit.changed_inputs
        else "No input changed: the reconciliation judged the same inputs differently."
    )
    parts = [
        '<div class="banner changed" role="alert"><strong>Changed since sign-off.</strong> '
        f"{len(audit.changes)} row(s) moved since {_text(audit.signed_off_by or '')} signed off run "
        f"{_text(audit.signed_off_run_id or '')}. {_text(why)} The signed-off figures are kept in "
        "billing_reconciliation_history.</div>",
        '<table class="changes"><thead><tr><th>Customer</th><th>Odoo partner</th><th>Change</th>'
        "<th>Status</th><th>What moved</th></tr></thead><tbody>",
    ]
    for row in audit.changes.to_dict("records"):
        status = f"{_optional(row['old_status'])} → {_optional(row['new_status'])}"
        parts.append(
            f"<tr><td>{_text(_id_label(row['customer_id']))}</td>"
            f"<td>{_text(_id_label(row['partner_id']))}</td><td>{_text(row['change'])}</td>"
            f"<td>{_text(status)}</td><td>{_text(row['moved'])}</td></tr>"
        )
    parts.append("</tbody></table>")
    return parts


def _result_row_html(row: Mapping[str, Any]) -> str:
    cause = _text(row["cause"])
    if not pd.isna(row["waiver_reason"]):
        approver = NO_VALUE if pd.isna(row["waiver_approver"]) else row["waiver_approver"]
        cause += (
            f'<div class="waiver">Waiver: {_text(row["waiver_reason"])} (approved by {_text(approver)})</div>'
        )
    kind = "unexplained" if Status(row["status"]).counts_against_switch else "explained"
    return (
        f'<tr class="{kind}"><td>{_status_badge(row["status"])}</td><td>{_text(_customer_label(row))}</td>'
        f"<td>{_text(_id_label(row['partner_id']))}</td><td>{_text(_currencies(row))}</td>"
        f'<td class="num">{_text(_money(row["nexacloud_total_cents"]))}</td>'
        f'<td class="num">{_text(_money(row["odoo_total_cents"]))}</td>'
        f'<td class="num">{_text(_money(row["expected_total_cents"]))}</td>'
        f'<td class="num delta">{_text(_money(row["delta_cents"]))}</td><td>{cause}</td></tr>'
    )


_LINE_HEADER = (
    '<div class="scroll"><table class="lines"><thead>'
    '<tr><th rowspan="2">Deployment</th><th rowspan="2">Subscription</th><th rowspan="2">Plan</th>'
    '<th rowspan="2" class="num">Active days</th><th colspan="2">CPU-seconds</th>'
    '<th colspan="2">Plan price</th><th colspan="2">Overage ¢ per CPU-hour</th>'
    '<th colspan="3">Base / plan fee</th><th colspan="3">Overage</th><th colspan="3">Tax</th>'
    '<th rowspan="2">Note</th></tr><tr>'
    + "<th>NexaCloud</th><th>Odoo</th>" * 3
    + "<th>NexaCloud</th><th>Odoo</th><th>Expected</th>" * 3
    + "</tr></thead><tbody>"
)


def _lines_by_customer_html(ordered_results: pd.DataFrame, lines: pd.DataFrame) -> list[str]:
    """One collapsed <details> per customer that has detail lines, in the results' order."""
    lines_by_key: dict[tuple[str, int | None], list[dict[str, Any]]] = {}
    for line in lines.to_dict("records"):
        lines_by_key.setdefault(_party_key(line), []).append(line)
    if not lines_by_key:
        return ["<p>No detail lines for this period.</p>"]
    sections = []
    for row in ordered_results.to_dict("records"):
        customer_lines = lines_by_key.pop(_party_key(row), None)
        if customer_lines:
            count = f"{len(customer_lines)} line{'' if len(customer_lines) == 1 else 's'}"
            summary = (
                f"{_text(_customer_label(row))} · {_status_badge(row['status'])} · {count} · "
                f"delta {_text(_money(row['delta_cents']))}"
            )
            sections.append(_details_html(summary, customer_lines))
    # Lines whose customer has no result row still belong in the report.
    for line_group in lines_by_key.values():
        sections.append(_details_html(f"{_text(_customer_label(line_group[0]))} · no result row", line_group))
    return sections


def _details_html(summary: str, customer_lines: Iterable[Mapping[str, Any]]) -> str:
    rows = []
    for line in customer_lines:
        cells = [
            _cell(_id_label(line["deployment_id"])),
            _cell(_id_label(line["subscription_id"])),
            _cell(_optional(line["plan_code"])),
            _cell(_optional(line["active_days"]), numeric=True),
            *_compared_cells(line["nexacloud_cpu_seconds"], line["odoo_cpu_seconds"], formatter=_quantity),
            *_compared_cells(line["nexacloud_plan_price_cents"], line["odoo_plan_price_cents"]),
            *_compared_cells(line["nexacloud_overage_rate"], line["odoo_overage_rate"], formatter=_quantity),
            *_compared_cells(
                line["nexacloud_base_cents"], line["odoo_plan_fee_cents"], line["expected_base_cents"]
            ),
            *_compared_cells(
                line["nexacloud_overage_cents"], line["odoo_overage_cents"], line["expected_overage_cents"]
            ),
            *_compared_cells(line["nexacloud_tax_cents"], line["odoo_tax_cents"], line["expected_tax_cents"]),
            _cell(_optional(line["note"])),
        ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f"<details><summary>{summary}</summary>{_LINE_HEADER}{''.join(rows)}</tbody></table></div></details>"
    )


def _compared_cells(*values: Any, formatter=None) -> list[str]:
    """Cells of the same amount on each leg, marked when the legs disagree."""
    format_value = formatter or _money
    differs = len({value for value in values if not pd.isna(value)}) > 1
    return [_cell(format_value(value), numeric=True, differs=differs) for value in values]


def _cell(text: str, *, numeric: bool = False, differs: bool = False) -> str:
    classes = " ".join(name for name, on in (("num", numeric), ("differs", differs)) if on)
    return f'<td class="{classes}">{_text(text)}</td>' if classes else f"<td>{_text(text)}</td>"


def _check_period(frame: pd.DataFrame, period: date) -> None:
    others = frame[pd.to_datetime(frame["billing_period"]).dt.date != period]
    if not others.empty:
        raise ValueError(
            f"the report of {period.isoformat()} was given rows of other billing periods "
            f"(rows {others.index.tolist()[:10]})"
        )


def _party_key(row: Mapping[str, Any]) -> tuple[str, int | None]:
    if not pd.isna(row["customer_id"]):
        return ("customer", int(row["customer_id"]))
    return ("partner", None if pd.isna(row["partner_id"]) else int(row["partner_id"]))


def _customer_label(row: Mapping[str, Any]) -> str:
    name = row.get("customer_name")
    customer_id = row["customer_id"]
    if pd.isna(customer_id):
        return NO_VALUE if pd.isna(name) else str(name)
    return f"#{int(customer_id)}" if pd.isna(name) else f"{name} (#{int(customer_id)})"


def _id_label(value: Any) -> str:
    return NO_VALUE if pd.isna(value) else f"#{int(value)}"


def _currencies(row: Mapping[str, Any]) -> str:
    legs = [row["nexacloud_currency"], row["odoo_currency"]]
    known = list(dict.fromkeys(str(currency) for currency in legs if not pd.isna(currency)))
    return " / ".join(known) if known else NO_VALUE


def _money(cents: Any) -> str:
    return NO_VALUE if pd.isna(cents) else format_cents(int(cents))


def _quantity(value: Any) -> str:
    return NO_VALUE if pd.isna(value) else f"{value:,}"


def _optional(value: Any) -> str:
    return NO_VALUE if pd.isna(value) else str(value)


def _text(value: Any) -> str:
    return html.escape(str(value))


def _status_badge(status: str) -> str:
    kind = "unexplained" if Status(status).counts_against_switch else "explained"
    return f'<span class="status {kind}">{_text(status)}</span>'


def _markdown_cell(value: Any) -> str:
    # Escaped as HTML too, since Markdown passes tags through to the page that renders it.
    return html.escape(" ".join(str(value).split())).replace("|", "\\|")


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2933;
  margin: 2rem auto; max-width: 1200px; padding: 0 1rem; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #e4e7eb; }
.lede { color: #52606d; margin-top: 0; }
.banner { padding: 0.75rem 1rem; border-radius: 6px; margin: 1rem 0; }
.provisional { background: #fff7d6; border: 1px solid #e0b000; }
.changed { background: #fde8e4; border: 1px solid #c0392b; }
table.changes { margin-bottom: 1.5em; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: 0.25rem 1.5rem; }
dl.summary dt { font-weight: 600; } dl.summary dd { margin: 0; }
.good { color: #1e6f3d; } .bad { color: #b42318; font-weight: 600; }
.verdict { font-size: 1.1rem; }
.side-by-side { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }
.chart { margin: 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { border: 1px solid #e4e7eb; padding: 0.3rem 0.5rem; vertical-align: top; text-align: left; }
th { background: #f5f7fa; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.zero td { color: #9aa5b1; }
tr.unexplained { background: #fff5f2; }
td.differs { background: #fde2d8; }
.status { display: inline-block; padding: 0 0.4rem; border-radius: 4px; font-family: ui-monospace, monospace;
  font-size: 0.85rem; white-space: nowrap; }
.status.explained { background: #e4e7eb; } .status.unexplained { background: #fbd5c5; color: #7a1c0a; }
.waiver { color: #52606d; font-size: 0.85rem; margin-top: 0.2rem; }
details { margin: 0.3rem 0; } summary { cursor: pointer; }
footer { margin-top: 2rem; color: #52606d; font-size: 0.85rem; }
@media print { details { display: block; } .scroll { overflow: visible; } }
"""
