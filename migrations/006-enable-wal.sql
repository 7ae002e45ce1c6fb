-- Migration 006: write-ahead logging lets readers and one writer work at once.
-- journal_mode cannot change inside a transaction, so this one runs outside.

-- migrate:up transaction:false
PRAGMA journal_mode = WAL;

-- migrate:down transaction:false
PRAGMA journal_mode = DELETE;
