"""``python -m fusion_billing_assets.sandbox``: generate the sandbox world, or serve its Odoo test double.

``generate`` writes the NexaCloud database (SQLite under ``--out`` unless ``--nexacloud-url``
names another database), the Odoo test double's store (``odoo.sqlite`` under ``--out`` unless
``--odoo-url`` names another database), ``manifest.json`` and ``waivers.csv``, printing progress
and a summary. ``serve-odoo`` serves a store over HTTP as Odoo 19 would (JSON-2 and
``/jsonrpc``), for poking at it with curl, pointing a real client at it, or benchmarking with the
test double in a process of its own.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from fusion_billing_assets.billing.periods import parse_period
from fusion_billing_assets.sandbox.generator import (
    DEFAULT_SCALE,
    GenerationError,
    SandboxScale,
    Summary,
    default_odoo_url,
    generate,
)

DEFAULT_OUT = Path(".sandbox")
DEFAULT_SEED = 7
DEFAULT_TIMEZONE = "America/Toronto"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fusion_billing_assets.sandbox", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)

    generate_command = commands.add_parser(
        "generate", help="generate the NexaCloud database and the Odoo records"
    )
    generate_command.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output directory (default %(default)s)"
    )
    generate_command.add_argument(
        "--nexacloud-url",
        help="SQLAlchemy URL of the NexaCloud database (default: sqlite:///<out>/nexacloud.sqlite)",
    )
    generate_command.add_argument(
        "--odoo-url",
        help="SQLAlchemy URL of the Odoo test double's store (default: sqlite:///<out>/odoo.sqlite)",
    )
    generate_command.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="random seed (default %(default)s)"
    )
    generate_command.add_argument(
        "--customers",
        type=int,
        default=DEFAULT_SCALE.customers,
        help="number of customers (default %(default)s)",
    )
    generate_command.add_argument(
        "--max-deployments",
        type=int,
        default=DEFAULT_SCALE.max_deployments_per_customer,
        help="most deployments one customer has (default %(default)s)",
    )
    generate_command.add_argument(
        "--usage-window-minutes",
        type=int,
        default=DEFAULT_SCALE.usage_window_minutes,
        help="length of a metered usage window (default %(default)s)",
    )
    generate_command.add_argument(
        "--periods",
        type=int,
        default=DEFAULT_SCALE.periods,
        help="monthly periods ending at the end period, all but the last closed (default %(default)s)",
    )
    generate_command.add_argument(
        "--end-period",
        help="the last, provisional period, YYYY-MM-01 (default: the current month in --timezone)",
    )
    generate_command.add_argument(
        "--timezone", default=DEFAULT_TIMEZONE, help="billing time zone (default %(default)s)"
    )

    serve_command = commands.add_parser(
        "serve-odoo", help="serve a generated store through the Odoo test double"
    )
    serve_command.add_argument(
        "--store",
        default=default_odoo_url(DEFAULT_OUT),
        help="SQLAlchemy URL of the store to serve (default %(default)s)",
    )
    serve_command.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default %(default)s)"
    )
    serve_command.add_argument(
        "--port", type=int, default=8069, help="port to listen on (default %(default)s)"
    )
    serve_command.add_argument(
        "--writable",
        action="store_true",
        help="let the importer's Odoo user write to the store (read-only otherwise)",
    )

    args = parser.parse_args(argv)
    if args.command == "generate":
        return _generate(args)
    return _serve_odoo(args)


def _generate(args: argparse.Namespace) -> int:
    try:
        zone = ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        print(f"error: --timezone {args.timezone!r} is not a known IANA time zone", file=sys.stderr)
        return 2
    scale = SandboxScale(
        customers=args.customers,
        max_deployments_per_customer=args.max_deployments,
        usage_window_minutes=args.usage_window_minutes,
        periods=args.periods,
    )
    nexacloud_url = args.nexacloud_url or f"sqlite:///{args.out / 'nexacloud.sqlite'}"
    started = time.monotonic()
    try:
        end_period = (
            parse_period(args.end_period) if args.end_period else datetime.now(zone).date().replace(day=1)
        )
        summary = generate(
            nexacloud_url,
            args.out,
            seed=args.seed,
            scale=scale,
            end_period=end_period,
            timezone=args.timezone,
            odoo_url=args.odoo_url,
            progress=lambda line: print(f"  {line}", flush=True),
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SQLAlchemyError as error:
        # The driver's own sentence (server refused, no such database), never the URL's password.
        reason = str(getattr(error, "orig", None) or error).splitlines()[0]
        print(f"error: cannot write the sandbox's databases: {reason}", file=sys.stderr)
        return 1
    except GenerationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    _print_summary(summary, seed=args.seed, timezone=args.timezone, seconds=time.monotonic() - started)
    return 0


def _print_summary(summary: Summary, *, seed: int, timezone: str, seconds: float) -> None:
    closed = summary.periods[:-1]
    print()
    print(f"Sandbox generated in {seconds:.1f} s (seed {seed}, {timezone}).")
    print(
        f"  periods: {closed[0].isoformat()} … {closed[-1].isoformat()} closed ({len(closed)}), "
        f"{summary.provisional_period.isoformat()} provisional"
    )
    print(f"  NexaCloud {summary.nexacloud_url}:")
    print("    " + ", ".join(f"{table} {count:,}" for table, count in summary.nexacloud_rows.items()))
    print(f"  Odoo test double {summary.odoo_url}:")
    print("    " + ", ".join(f"{model} {count:,}" for model, count in summary.odoo_records.items()))
    print(
        f"  injected differences ({sum(summary.differences_by_status.values())} rows): "
        + ", ".join(f"{status} {count}" for status, count in summary.differences_by_status.items())
    )
    print(f"  edge cases expected to match: {summary.edge_cases} rows")
    print(f"  ground truth: {summary.manifest_path}; waivers: {summary.waivers_path}")
    print(f"  serve Odoo: python -m fusion_billing_assets.sandbox serve-odoo --store {summary.odoo_url}")


def _serve_odoo(args: argparse.Namespace) -> int:
    # Imported here: the test double is only needed by this command.
    from fusion_billing_assets.sandbox.odoo_store import serve_store

    shown = make_url(args.store).render_as_string(hide_password=True)
    mode = "writable by the importer's user" if args.writable else "read-only"
    print(
        f"Serving the Odoo test double from {shown} ({mode}) on http://{args.host}:{args.port} (Ctrl-C stops)"
    )
    try:
        serve_store(args.store, args.host, args.port, writable=args.writable)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
