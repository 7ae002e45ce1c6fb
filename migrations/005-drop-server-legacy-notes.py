"""Migration 005: drop a column nobody reads, keeping rows, indexes and triggers."""

import sqlmigrate

name = "Drop legacy notes from servers"


def up(db):
    sqlmigrate.drop_column(db, "ollama_servers", "legacy_notes")


def down(db):
    db.execute("ALTER TABLE ollama_servers ADD COLUMN legacy_notes TEXT")
