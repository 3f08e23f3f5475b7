"""Helpers shared by the memory tests: raw SQL behind the store's back."""

from __future__ import annotations

import sqlite3

import psycopg


def raw_sql(url: str, sql: str) -> None:
    """Run ``sql`` directly on the store's database, as an attacker or a bad disk would."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url[len("sqlite:///") :], isolation_level=None)
        try:
            conn.execute(sql)
        finally:
            conn.close()
        return
    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute(sql.encode())
