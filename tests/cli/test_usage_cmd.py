"""`keel usage top|show` reading the session store of a data directory, as they would on a
machine where replicas recorded usage (no replica needs to run)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from agentkeel.cli.main import app as keel
from agentkeel.resilience.windows import utc_day, utc_window
from agentkeel.runtime.stores import open_store
from agentkeel.runtime.usage import UsageRecord


def run(*args: str) -> Result:
    return CliRunner().invoke(keel, list(args), env={"COLUMNS": "120"})


def record(
    user: str, organization: str | None, tokens: int, *, link: str = "platform"
) -> UsageRecord:
    return UsageRecord(
        day=utc_day(time.time()),
        user_id=user,
        organization=organization,
        agent_id="support",
        model="gpt-4o",
        key_link=link,
        input_tokens=tokens,
        output_tokens=tokens // 10,
        spend=0.0 if link != "platform" else tokens / 1_000_000,
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory whose SQLite session store holds today's usage of three users."""
    directory = tmp_path / "keel-data"

    async def fill() -> None:
        store = open_store(f"sqlite:///{directory / 'sessions.db'}")
        await store.open()
        try:
            await store.record_usage(record("ana", "acme", 5000))
            await store.record_usage(record("ana", "acme", 1000, link="byok"))
            await store.record_usage(record("bob", "acme", 9000))
            await store.record_usage(record("cy", None, 100))
        finally:
            await store.aclose()

    asyncio.run(fill())
    return directory


def test_usage_top_lists_users_by_tokens_with_spend_and_quota(data_dir: Path) -> None:
    """--json: the users most tokens first, each with spend, BYOK tokens and the daily
    quota's headroom (the settings' 2M default); --n and --org narrow the list."""
    result = run("--data-dir", str(data_dir), "usage", "top", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["period"] == "day"
    assert [(u["user"], u["organization"]) for u in report["users"]] == [
        ("bob", "acme"),
        ("ana", "acme"),
        ("cy", None),
    ]
    ana = report["users"][1]
    assert (ana["total_tokens"], ana["byok_tokens"]) == (6600, 1100)
    assert ana["spend"] == pytest.approx(0.005)
    assert ana["quota"] == {"limit": 2_000_000, "used": 6600, "headroom": 1_993_400}
    narrow = run("--data-dir", str(data_dir), "usage", "top", "--n", "1", "--org", "acme", "--json")
    assert [u["user"] for u in json.loads(narrow.output)["users"]] == ["bob"]


def test_usage_top_prints_a_table(data_dir: Path) -> None:
    """Without --json: a table naming each user, their tokens and the quota left."""
    result = run("--data-dir", str(data_dir), "usage", "top")
    assert result.exit_code == 0, result.output
    assert "today" in result.output
    for text in ("bob", "ana", "cy", "9,900", "1,993,400 (100%)"):
        assert text in result.output
    month = run("--data-dir", str(data_dir), "usage", "top", "--period", "month")
    assert "this month" in month.output and "no quota" in month.output


def test_usage_show_gives_a_users_days_models_and_headroom(data_dir: Path) -> None:
    """One user's usage by day and model and the headroom of their day and month (no monthly
    quota by default: no limit); a table without --json."""
    result = run(
        "--data-dir", str(data_dir), "usage", "show", "--user", "ana", "--org", "acme", "--json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [(row["model"], row["calls"], row["total_tokens"]) for row in report["usage"]] == [
        ("gpt-4o", 2, 6600)
    ]
    assert report["quota"]["user"]["day"]["headroom"] == 1_993_400
    assert report["quota"]["user"]["month"] == {"limit": None, "used": 6600, "headroom": None}
    assert report["quota"]["organization"]["day"]["used"] == 6600 + 9900
    assert report["start"] == utc_window("day", time.time()).first_day
    table = run("--data-dir", str(data_dir), "usage", "show", "--user", "ana", "--org", "acme")
    assert table.exit_code == 0 and "quota headroom" in table.output and "gpt-4o" in table.output
    nobody = run("--data-dir", str(data_dir), "usage", "show", "--user", "ana")
    assert nobody.exit_code == 0 and "no usage for user ana" in nobody.output


def test_usage_without_a_store_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """A data directory with no session store yet: exit 1, one line naming the file and the
    setting; the store is not created by looking."""
    result = run("--data-dir", str(tmp_path / "empty"), "usage", "top")
    assert result.exit_code == 1
    assert "No session store at" in result.output and "store.url" in result.output
    assert not (tmp_path / "empty" / "sessions.db").exists()


def test_usage_rejects_a_period_it_does_not_know(data_dir: Path) -> None:
    """A period other than day or month is a usage error (exit 2)."""
    result = run("--data-dir", str(data_dir), "usage", "top", "--period", "week")
    assert result.exit_code == 2


def test_usage_help_has_examples() -> None:
    """Each command's --help shows an example."""
    for command in (("usage",), ("usage", "top"), ("usage", "show")):
        result = run(*command, "--help")
        assert result.exit_code == 0
        assert "Example: keel usage" in result.output
