"""Mistakes a person makes running the pipeline (issue #15.3, #15.4): one row of CASES each, run as the
real command. Each ends with one clear message (shown once), the documented exit code, and no traceback
(``--log-level DEBUG`` keeps them). The README's operator-mistakes table is generated from CASES:

    python -m tests.test_operator_mistakes      # rewrite README.md's operator-mistakes table from CASES
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.config import _KNOWN_KEYS
from pipeline.lakefs import Lake
from pipeline.schema import PROJECT_ROOT
from tests.conftest import JAN, record_file
from tests.drops import csv_count, seed_copy
from tests.test_operations import _remove_users


@dataclass(frozen=True)
class Case:
    name: str
    mistake: str  # what the person did, for the README
    exit_code: int
    message: str  # the line shown, exactly (once); {tmp} is the test's folder
    setup: Callable[[Path], tuple[list[str], dict[str, str]]]  # -> command line, environment changes
    command: str = "luigi"  # or "streamflow"
    note: str = ""
    needs_january: bool = False  # January published first (a real PostgreSQL run)
    extra: dict[str, str] = field(default_factory=dict)


def _month(*args: str, **env: str) -> Callable[[Path], tuple[list[str], dict[str, str]]]:
    return lambda tmp: (["Month", *args], dict(env))


def _config(text: str) -> Callable[[Path], tuple[list[str], dict[str, str]]]:
    def setup(tmp: Path) -> tuple[list[str], dict[str, str]]:
        (tmp / "mistake.cfg").write_text(text)
        return ["Month", "--as-of", JAN.isoformat()], {"LUIGI_CONFIG_PATH": str(tmp / "mistake.cfg")}

    return setup


def _scheduler(tmp: Path) -> tuple[list[str], dict[str, str]]:
    (tmp / "central.cfg").write_text("[core]\nlocal_scheduler = false\nrpc-retry-wait = 0\n")
    args = ["Month", "--as-of", JAN.isoformat(), "--scheduler-host", "127.0.0.1", "--scheduler-port", "9"]
    return args, {"LUIGI_CONFIG_PATH": str(tmp / "central.cfg")}


def _lake_is_a_file(tmp: Path) -> tuple[list[str], dict[str, str]]:
    (tmp / "lake-file").write_text("not a lake\n")
    return ["Month", "--as-of", JAN.isoformat()], {"LAKE_ROOT": str(tmp / "lake-file")}


BROKEN_RUN = "20240131-20240201T060000-a1b2c3"


def _broken_manifest(tmp: Path) -> tuple[list[str], dict[str, str]]:
    path = Lake(tmp / "lake").record(JAN, BROKEN_RUN)
    path.parent.mkdir(parents=True)
    path.write_text('{"as_of": "2024-01-31", "status": "publ')
    return ["Month", "--as-of", JAN.isoformat()], {}


def _volume(tmp: Path) -> tuple[list[str], dict[str, str]]:
    feb = seed_copy(tmp / "feb", "month_001")
    _remove_users(feb, 4000)
    return ["Month", "--as-of", "2024-02-29", "--source", str(feb)], {}


def _status_without_server(tmp: Path) -> tuple[list[str], dict[str, str]]:
    return ["status"], {"POSTGRES_DSN": ""}


CASES = [
    Case(
        "month with no drop folder",
        "`Month --as-of 2024-06-30`, June neither given `--source` nor in luigi.cfg [months]",
        35,
        "no drop folder for as_of 2024-06-30: pass --source DIR, or add '2024-06-30 = DIR' to the [months] "
        "section of luigi.cfg (configured: 2024-01-31, 2024-02-29)",
        _month("--as-of", "2024-06-30"),
    ),
    Case(
        "drop folder does not exist",
        "`--source` names a folder that is not there",
        30,
        "{tmp}/nowhere: drop folder does not exist; pass --source DIR or map the as_of to a folder in luigi.cfg "
        "[months]",
        lambda tmp: (["Month", "--as-of", JAN.isoformat(), "--source", str(tmp / "nowhere")], {}),
        note="once for the month, not once per table",
    ),
    Case(
        "impossible as_of",
        "`--as-of 2024-02-30`",
        40,
        "--as-of '2024-02-30' is not a date (YYYY-MM-DD, a day that exists, e.g. 2024-02-29); nothing was run",
        _month("--as-of", "2024-02-30"),
    ),
    Case(
        "unknown [pipeline] key",
        "luigi.cfg sets `lake_rot = x`",
        35,
        f"{{tmp}}/mistake.cfg [pipeline]: unknown key(s) ['lake_rot']; known: {sorted(_KNOWN_KEYS)}",
        _config("[pipeline]\nlake_rot = x\n"),
    ),
    Case(
        "setting out of range",
        "luigi.cfg sets `max_reject_ratio = 5`",
        35,
        "{tmp}/mistake.cfg [pipeline] max_reject_ratio = 5: must be a number from 0 to 1 (a share of the file's rows)",
        _config("[pipeline]\nmax_reject_ratio = 5\n"),
    ),
    Case(
        "LAKE_ROOT is a file",
        "`LAKE_ROOT` points at a file",
        35,
        "LAKE_ROOT = {tmp}/lake-file: {tmp}/lake-file is a file, not a folder; point it at the lake's folder "
        "(created on first use); nothing was run",
        _lake_is_a_file,
    ),
    Case(
        "unreadable run record",
        f"`lake/runs/as_of=2024-01-31/{BROKEN_RUN}.json` truncated by hand (read in `complete()`)",
        35,
        f"{{tmp}}/lake/runs/as_of=2024-01-31/{BROKEN_RUN}.json is not a run record the pipeline can read "
        "(JSONDecodeError: Unterminated string starting at: line 1 column 35 (char 34)); it was edited or truncated "
        "by hand? Restore it from a backup (PostgreSQL's pipeline_runs holds the same run); nothing was run",
        _broken_manifest,
    ),
    Case(
        "central scheduler not running",
        "`--scheduler-host` names a luigid that does not answer",
        40,
        "the central scheduler at http://127.0.0.1:9 does not answer (is luigid running?): start it (luigid "
        "--port 8082, or docker compose up -d luigid), or run with the local scheduler (--local-scheduler, or "
        "leave out --scheduler-host and LUIGI_CONFIG_PATH=luigi-central.cfg); nothing was run",
        _scheduler,
    ),
    Case(
        "status with the embedded server stopped",
        "`streamflow status` after `streamflow stop-embedded` (no POSTGRES_DSN)",
        4,
        "error: the lake's embedded PostgreSQL ({tmp}/lake/_postgres) is not running (stopped with `streamflow "
        "stop-embedded`?); status does not start it. The next month run starts it (luigi --module pipeline Month "
        "--as-of D), or set POSTGRES_DSN to a server; the lake side is shown",
        _status_without_server,
        command="streamflow",
        note="status only reads: it never starts the server",
    ),
    Case(
        "drop volume out of range",
        "February's drop lacks 4,000 of January's users",
        30,
        "  FAILED no drop's row count differs from the previous drop's by more than the allowed ratio (table "
        "drop_volume): labels.csv has 3140 rows, the previous drop 7000 (-55.1%);",
        _volume,
        needs_january=True,
        note="the two counts and the change, per file, not `6 rows broke it`",
    ),
]


def _run(case: Case, env: dict[str, str], tmp: Path, debug: bool = False) -> subprocess.CompletedProcess:
    args, changes = case.setup(tmp)
    env = {**env, **changes}
    if "POSTGRES_DSN" in changes and not changes["POSTGRES_DSN"]:
        del env["POSTGRES_DSN"]
    if case.command == "streamflow":
        command = [sys.executable, "-m", "pipeline", *args]
    else:
        command = ["luigi", "--module", "pipeline", *args, "--lock-pid-dir", str(tmp / "locks")]
        command += ["--log-level", "DEBUG"] if debug else []
    return subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_mistake_is_one_message_with_its_exit_code(case: Case, run_luigi, pipeline_env, tmp_path: Path):
    if case.needs_january:
        assert run_luigi("Month", "--as-of", JAN.isoformat()).returncode == 0
    result = _run(case, pipeline_env, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == case.exit_code, output[-3000:]
    message = case.message.format(tmp=tmp_path)
    assert output.count(message) == 1, output[-3000:]
    assert "Traceback" not in output
    if case.needs_january:
        assert not record_file(tmp_path / "lake", JAN.replace(month=2, day=29)).exists()


def test_the_volume_case_counts_match_the_drop(tmp_path: Path):
    feb = seed_copy(tmp_path / "feb", "month_001")
    _remove_users(feb, 4000)
    assert csv_count(feb / "labels.csv") == 3140


def test_debug_log_level_keeps_the_traceback(pipeline_env, tmp_path: Path):
    result = _run(CASES[7], pipeline_env, tmp_path, debug=True)
    assert result.returncode == 40 and "Traceback" in result.stderr


# --- the README's table ---------------------------------------------------------------------------

README = PROJECT_ROOT / "README.md"
START = "<!-- operator-mistakes table: generated from tests/test_operator_mistakes.py CASES (python -m tests.test_operator_mistakes) -->\n"  # noqa: E501
END = "<!-- end of operator-mistakes table -->"


def render_table() -> str:
    rows = [
        f"| {c.name} | {c.mistake} | {c.exit_code} | {_code(c.message.format(tmp='…').strip())}"
        + (f" — {c.note}" if c.note else "")
        + " |"
        for c in CASES
    ]
    return "| Case | Mistake | Exit | Message |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"


def _code(text: str) -> str:
    """Inline code, with double backticks when the message quotes a command in backticks."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def test_the_readme_table_is_generated_from_cases():
    text = README.read_text(encoding="utf-8")
    assert START in text and END in text, "README.md has no operator-mistakes table"
    table = text.partition(START)[2].partition(END)[0]
    assert table == render_table(), (
        "README.md's operator-mistakes table is stale: python -m tests.test_operator_mistakes"
    )


if __name__ == "__main__":
    text = README.read_text(encoding="utf-8")
    before, _, rest = text.partition(START)
    README.write_text(before + START + render_table() + END + rest.partition(END)[2], encoding="utf-8")
