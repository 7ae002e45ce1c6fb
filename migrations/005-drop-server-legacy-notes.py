"""Migration 005: drop a column nobody reads, keeping rows, indexes and triggers."""

import sqlmigrate

name = "Drop legacy notes from servers"


def up(db):
    # sqlmigrate: allow SM102 (legacy_notes was never read; its text may go)
    sqlmigrate.drop_column(db, "ollama_servers", "legacy_notes")


def down(db):
    # The column back where it was (ADD COLUMN would append it last), so that
    # `sqlmigrate test` finds the schema exactly as before the up.
    sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'ollama_servers'").fetchone()[0]
    anchor = "is_active BOOLEAN NOT NULL DEFAULT 1,"
    sqlmigrate.rebuild_table(db, "ollama_servers", create_sql=sql.replace(
        anchor, anchor + "\n    legacy_notes TEXT,", 1))
