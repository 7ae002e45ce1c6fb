-- Migration 002: look-ups by key and time, and a last-used stamp kept by SQLite.

-- migrate:up
ALTER TABLE api_keys ADD COLUMN last_used_at DATETIME;
CREATE INDEX idx_usage_logs_key_time ON usage_logs(api_key_id, created_at);
CREATE TRIGGER trg_usage_logs_touch_key AFTER INSERT ON usage_logs
BEGIN
    UPDATE api_keys SET last_used_at = NEW.created_at WHERE id = NEW.api_key_id;
END;

-- migrate:down
DROP TRIGGER trg_usage_logs_touch_key;
DROP INDEX idx_usage_logs_key_time;
