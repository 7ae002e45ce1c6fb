"""Migration 004: bring older databases forward additively (never drops anything)."""

# sqlmigrate: allow SM801 (additive only: an older database may have had these already)
import sqlmigrate

name = "Reconcile model tracking columns and settings"


def up(db):
    sqlmigrate.reconcile(
        db,
        columns={
            "ollama_servers": {"available_models": "JSON", "models_last_updated": "DATETIME"},
            "api_keys": {"is_active": "BOOLEAN DEFAULT 1 NOT NULL",
                         "is_revoked": "BOOLEAN DEFAULT 0 NOT NULL"},
            "usage_logs": {"model": "VARCHAR", "server_id": "INTEGER"},
        },
        indexes={"idx_usage_logs_model": "usage_logs(model)"},
    )
    sqlmigrate.merge_json_defaults(
        db, "app_settings", "settings_data",
        {"max_retries": 5, "retry_total_timeout_seconds": 2.0, "retry_base_delay_ms": 50},
        where="id = ?", params=(1,))
