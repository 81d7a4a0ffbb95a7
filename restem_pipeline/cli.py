"""Framework-free ``restem`` subcommands: ``sql``, ``verify math``, ``verify code``, ``sandbox build``.

``assets.cli`` builds the full command line (adding ``demo``, which runs through Dagster) on top of
:func:`add_core_commands`. Each subcommand's implementation lives beside the code it drives.
"""

from __future__ import annotations

import argparse


def add_core_commands(sub: argparse._SubParsersAction) -> None:
    from restem_pipeline.storage import tables as storage

    p_sql = sub.add_parser("sql", help="run DuckDB SQL over every table of every problem set, experiment and iteration")
    p_sql.add_argument("query", help='e.g. "SELECT experiment, stage, avg(reward) FROM verified_samples GROUP BY ALL"')
    p_sql.add_argument("--data-root", default=None, help="data root (default $RESTEM_DATA_ROOT or ./data)")
    p_sql.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p_sql.set_defaults(func=storage.run_sql_command)

    p_verify = sub.add_parser("verify", help="grade your own model outputs or programs")
    verify_sub = p_verify.add_subparsers(dest="domain", required=True)
    from restem_pipeline.rewards.mathverify import cli as math_cli

    math_cli.add_parser(verify_sub)
    # --- sandbox (issue 4) registers `verify code` and `sandbox build` below ---
    from restem_pipeline.rewards.sandbox import cli as sandbox_cli

    sandbox_cli.add_parsers(sub, verify_sub)
