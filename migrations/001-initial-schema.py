"""Migration 001: the API proxy's first schema."""

name = "Initial Schema"


def up(db):
    db.executescript("""
        CREATE TABLE ollama_servers (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name VARCHAR NOT NULL UNIQUE,
            url VARCHAR NOT NULL,
            is_active BOOLEAN NOT NULL DEFAULT 1,
            legacy_notes TEXT,
            created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
        );
        CREATE TABLE api_keys (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            key_name VARCHAR NOT NULL,
            hashed_key VARCHAR NOT NULL UNIQUE,
            created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
        );
        CREATE TABLE usage_logs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            api_key_id INTEGER NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
            endpoint VARCHAR NOT NULL,
            status_code INTEGER NOT NULL,
            created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
        );
        CREATE TABLE app_settings (
            id INTEGER PRIMARY KEY,
            settings_data JSON NOT NULL DEFAULT '{}'
        );
        INSERT INTO app_settings (id, settings_data) VALUES (1, '{"max_retries": 3}');
    """)


def down(db):
    db.executescript("""
        DROP TABLE usage_logs;
        DROP TABLE api_keys;
        DROP TABLE ollama_servers;
        DROP TABLE app_settings;
    """)
