"""Migration 003: per-key rate limits."""

import sqlmigrate

name = "Add API key rate limits"


def up(db):
    db.execute("ALTER TABLE api_keys ADD COLUMN rate_limit_requests INTEGER")
    db.execute("ALTER TABLE api_keys ADD COLUMN rate_limit_window_minutes INTEGER")


def down(db):
    # SQLite before 3.35 has no DROP COLUMN; the rebuild helper works everywhere.
    sqlmigrate.rebuild_table(db, "api_keys",
                             drop=["rate_limit_requests", "rate_limit_window_minutes"])
