"""reconcile(), merge_json_defaults(), schema_info()/schema_report() and
_tables_named_in(), on real SQLite files in temporary directories."""

import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import unittest

from tests.support import ROOT, TempDirTestCase, sqlmigrate
from sqlmigrate import MigrationError, merge_json_defaults, reconcile

VERSION = sqlite3.sqlite_version_info
HAS_GENERATED = VERSION >= (3, 31, 0)
NEEDS_GENERATED = "generated columns need SQLite 3.31 (this is %s)" % sqlite3.sqlite_version
HAS_WITHOUT_ROWID = VERSION >= (3, 8, 2)
NEEDS_WITHOUT_ROWID = "WITHOUT ROWID needs SQLite 3.8.2 (this is %s)" % sqlite3.sqlite_version
HAS_EXPRESSION_INDEXES = VERSION >= (3, 9, 0)  # partial indexes: 3.8.0
NEEDS_EXPRESSION_INDEXES = ("indexes on expressions need SQLite 3.9 (this is %s)"
                            % sqlite3.sqlite_version)

ISSUE_COLUMNS = {
    "ollama_servers": {"available_models": "JSON", "models_last_updated": "DATETIME"},
    "api_keys": {"is_active": "BOOLEAN DEFAULT 1 NOT NULL", "rate_limit_requests": "INTEGER"},
    "usage_logs": {"model": "VARCHAR", "server_id": "INTEGER"},
}
ISSUE_INDEXES = {"idx_usage_logs_model": "usage_logs(model)"}
OLD_SCHEMA = """
    CREATE TABLE ollama_servers (id INTEGER PRIMARY KEY, url VARCHAR NOT NULL UNIQUE);
    CREATE TABLE api_keys (id INTEGER PRIMARY KEY, key_name VARCHAR NOT NULL,
                           hashed_key VARCHAR NOT NULL, legacy TEXT);
    CREATE TABLE usage_logs (id INTEGER PRIMARY KEY, api_key_id INTEGER, ts DATETIME);
    CREATE INDEX idx_usage_logs_ts ON usage_logs(ts);
    INSERT INTO ollama_servers (url) VALUES ('http://a'), ('http://b');
    INSERT INTO api_keys (key_name, hashed_key, legacy)
        VALUES ('k1', 'h1', 'x'), ('k2', 'h2', NULL);
    INSERT INTO usage_logs (api_key_id, ts) VALUES (1, '2025-01-01'), (2, '2025-01-02');
"""


class DatabaseTestCase(TempDirTestCase):
    """A fresh database file (self.db) in a temporary directory."""

    def make(self, script):
        conn = self.connect()
        conn.executescript(textwrap.dedent(script))
        return conn

    def schema(self):
        """Everything about the schema, to compare before and after."""
        conn = self.connect()
        return sorted(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))

    def rows(self, table, columns="*", order="rowid"):
        return self.connect().execute("SELECT %s FROM %s ORDER BY %s" % (
            columns, sqlmigrate._quote_identifier(table), order)).fetchall()

    def content(self):
        with open(self.db, "rb") as f:
            return f.read()

    def columns(self, table):
        return [row[1] for row in self.connect().execute(
            "PRAGMA table_info(%s)" % sqlmigrate._quote_identifier(table))]

    def indexes(self):
        return sorted(row[0] for row in self.connect().execute(
            "SELECT name FROM sqlite_master WHERE type = 'index'"))


class ReconcileColumnTests(DatabaseTestCase):

    def test_issue_example_adds_missing_columns_and_index(self):
        self.make(OLD_SCHEMA)
        changes = reconcile(self.db, columns=ISSUE_COLUMNS, indexes=ISSUE_INDEXES)
        self.assertEqual(changes, [
            "added column ollama_servers.available_models",
            "added column ollama_servers.models_last_updated",
            "added column api_keys.is_active",
            "added column api_keys.rate_limit_requests",
            "added column usage_logs.model",
            "added column usage_logs.server_id",
            "created index idx_usage_logs_model",
        ])
        self.assertEqual(self.columns("api_keys"),
                         ["id", "key_name", "hashed_key", "legacy", "is_active",
                          "rate_limit_requests"])
        self.assertEqual(self.rows("api_keys"), [(1, "k1", "h1", "x", 1, None),
                                                 (2, "k2", "h2", None, 1, None)])
        self.assertIn("idx_usage_logs_model", self.indexes())

    def test_second_run_changes_nothing(self):
        self.make(OLD_SCHEMA)
        reconcile(self.db, columns=ISSUE_COLUMNS, indexes=ISSUE_INDEXES)
        before = self.schema()
        self.assertEqual(reconcile(self.db, columns=ISSUE_COLUMNS, indexes=ISSUE_INDEXES), [])
        self.assertEqual(self.schema(), before)

    def test_hundreds_of_tables_beside_a_virtual_table(self):
        # Over 500 (_MAX_IN_LIST) declared tables the columns are read in one pass over the
        # schema (not IN lists), leaving virtual tables alone.
        conn = self.connect()
        conn.executescript("".join("CREATE TABLE t%03d (id INTEGER PRIMARY KEY, a TEXT);" % i
                                   for i in range(501)))
        try:
            conn.execute("CREATE VIRTUAL TABLE notes USING fts4(body)")
            has_virtual = True
        except sqlite3.OperationalError:  # an SQLite built without FTS
            has_virtual = False
        conn.commit()
        declared = dict(("t%03d" % i, {"id": "INTEGER PRIMARY KEY", "a": "TEXT", "b": "INTEGER"})
                        for i in range(501))
        changes = reconcile(self.db, columns=declared)
        self.assertEqual(len(changes), 501)
        self.assertEqual(self.columns("t000"), ["id", "a", "b"])
        self.assertEqual(self.columns("t500"), ["id", "a", "b"])
        self.assertEqual(reconcile(self.db, columns=declared), [])
        if has_virtual:  # declared too, it is refused by name, and nothing changes
            before = self.schema()
            with self.assertRaises(sqlmigrate.MigrationError) as caught:
                reconcile(self.db, columns=dict(declared, notes={"body": "", "extra": "TEXT"}))
            self.assertIn("'notes' is a virtual table", str(caught.exception))
            self.assertEqual(self.schema(), before)

    def test_names_compare_case_insensitively(self):
        self.make("CREATE TABLE Users (ID INTEGER PRIMARY KEY, Email TEXT);")
        self.assertEqual(reconcile(self.db, columns={"users": {"id": "INTEGER", "EMAIL": "TEXT",
                                                               "name": "TEXT"}}),
                         ["added column Users.name"])
        self.assertEqual(self.columns("Users"), ["ID", "Email", "name"])

    def test_existing_and_extra_columns_and_indexes_are_untouched(self):
        self.make(OLD_SCHEMA)
        # Declared with another type: an existing column is never changed.
        reconcile(self.db, columns={"api_keys": {"key_name": "INTEGER NOT NULL DEFAULT 0",
                                                 "is_active": "BOOLEAN DEFAULT 1"}})
        conn = self.connect()
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'api_keys'").fetchone()[0]
        self.assertIn("key_name VARCHAR NOT NULL", sql)
        self.assertIn("legacy", self.columns("api_keys"))
        self.assertIn("idx_usage_logs_ts", self.indexes())

    def test_constant_defaults_use_add_column(self):
        # Every one of these is constant to ALTER TABLE ADD COLUMN: no rebuild,
        # so this passes without rebuild_table().
        self.make("CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);")
        declared = {"a": "INTEGER DEFAULT 0", "b": "REAL DEFAULT -1.5e3",
                    "c": "TEXT DEFAULT 'it''s'", "d": "BLOB DEFAULT X'00ff'",
                    "e": "TEXT DEFAULT NULL", "f": "INT DEFAULT (42)",
                    "g": "TEXT DEFAULT ('x')", "h": "INT DEFAULT +7", "i": "BOOLEAN DEFAULT TRUE",
                    "j": "TEXT DEFAULT pending", "k": "INT NOT NULL DEFAULT ((-1))",
                    "l": "TEXT COLLATE NOCASE CHECK (l <> '') DEFAULT 'x'"}
        if VERSION < (3, 37, 0):  # a new CHECK is tested on the rows by a rebuild there
            declared["l"] = "TEXT COLLATE NOCASE DEFAULT 'x'"
        changes = reconcile(self.db, columns={"t": declared})
        self.assertEqual(len(changes), len(declared))
        self.assertFalse([c for c in changes if "rebuilt" in c])
        self.assertEqual(self.rows("t", "a, b, c, d, e, f, g, h, j, k, l"),
                         [(0, -1500.0, "it's", b"\x00\xff", None, 42, "x", 7, "pending", -1, "x")])

    def test_add_column_classification_matches_this_sqlite(self):
        # What reconcile sends to ALTER TABLE ADD COLUMN, SQLite must accept;
        # what it rebuilds for or refuses, SQLite's ADD COLUMN must refuse.
        conn = self.make("CREATE TABLE p (id INTEGER PRIMARY KEY); INSERT INTO p VALUES (1);"
                         "CREATE TABLE t (a INTEGER PRIMARY KEY, b);"
                         "INSERT INTO t (b) VALUES (1), (2);")
        declarations = [
            "DEFAULT 1", "DEFAULT -1", "DEFAULT +1", "DEFAULT 'x'", "DEFAULT (1)", "DEFAULT ('a')",
            "DEFAULT (-1)", "DEFAULT ((1))", "DEFAULT X'00'", "DEFAULT NULL", "DEFAULT abc",
            "DEFAULT TRUE", "DEFAULT 1.5e3", "NOT NULL DEFAULT 0", "DEFAULT (1+1)",
            "DEFAULT CURRENT_TIMESTAMP", "DEFAULT (abs(-1))", "NOT NULL", "NOT NULL DEFAULT NULL",
            "UNIQUE", "PRIMARY KEY", "REFERENCES p(id) DEFAULT 1", "REFERENCES p(id)"]
        if HAS_GENERATED:
            declarations += ["AS (b * 2)", "GENERATED ALWAYS AS (b * 2) STORED"]
        for fk_on in (False, True):
            conn.execute("PRAGMA foreign_keys = %s" % ("ON" if fk_on else "OFF"))
            for text in declarations:
                declaration = sqlmigrate._ColumnDeclaration(text)
                plain = not (sqlmigrate._column_problem(conn, "t", declaration)
                             or sqlmigrate._rebuild_reason(declaration)
                             or "UNIQUE" in declaration.words)
                conn.execute("SAVEPOINT probe")
                try:
                    conn.execute("ALTER TABLE t ADD COLUMN x " + text)
                    accepted = True
                except sqlite3.Error:
                    accepted = False
                finally:
                    conn.execute("ROLLBACK TO probe")
                    conn.execute("RELEASE probe")
                self.assertEqual(plain, accepted, "%s (foreign keys %s)" % (text, fk_on))

    def test_unique_column_is_added_with_a_unique_index(self):
        self.make("CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1), (2);")
        changes = reconcile(self.db, columns={"t": {"token": "TEXT UNIQUE"}})
        self.assertEqual(changes, ["added column t.token",
                                   "created unique index idx_t_token_unique for column t.token"])
        conn = self.connect()
        conn.execute("UPDATE t SET token = 'a' WHERE id = 1")
        with self.assertRaises(sqlite3.IntegrityError):
            conn.execute("UPDATE t SET token = 'a' WHERE id = 2")
        self.assertEqual(reconcile(self.db, columns={"t": {"token": "TEXT UNIQUE"}}), [])

    def test_unique_indexes_made_for_columns_take_names_no_other_index_in_the_call_takes(self):
        # idx_<table>_<column>_unique of a_b.c and a.b_c is one name, and the
        # caller may declare an index of that name too: each must get its own.
        self.make("CREATE TABLE a_b (x); CREATE TABLE a (y); INSERT INTO a VALUES (1), (2);")
        changes = reconcile(self.db, columns={"a_b": {"c": "INT UNIQUE"},
                                              "a": {"b_c": "INT UNIQUE"}},
                            indexes={"idx_a_b_c_unique": "a(y)"})
        self.assertEqual(len(changes), 5, changes)
        conn = self.connect()
        unique = sorted(conn.execute("SELECT tbl_name, sql LIKE 'CREATE UNIQUE%' "
                                     "FROM sqlite_master WHERE type = 'index'"))
        self.assertEqual(unique, [("a", 0), ("a", 1), ("a_b", 1)])
        self.assertEqual(reconcile(self.db, columns={"a_b": {"c": "INT UNIQUE"}},
                                   indexes={"idx_a_b_c_unique": "a(y)"}), [])

    def test_a_comment_in_a_declaration_hides_no_other_column(self):
        # The rebuild joins the declarations into one CREATE TABLE: a trailing
        # -- comment there would hide every column after it, reported as added.
        self.make("CREATE TABLE t (\n  a INT\n); INSERT INTO t VALUES (1);"
                  "CREATE TABLE u (a); INSERT INTO u VALUES (1);")
        declared = {"t": {"b": "TEXT DEFAULT CURRENT_TIMESTAMP -- when", "c": "INT"},
                    "u": {"b": "TEXT -- a note", "c": "INT /* why */ DEFAULT 7 -- last"}}
        changes = reconcile(self.db, columns=declared)
        self.assertEqual(len(changes), 4, changes)
        self.assertEqual(self.columns("t"), ["a", "b", "c"])
        self.assertEqual(self.columns("u"), ["a", "b", "c"])
        self.assertEqual(self.rows("u", "c"), [(7,)])
        self.assertEqual(reconcile(self.db, columns=declared), [])

    def test_a_unique_columns_default_keeps_the_spaces_inside_its_string(self):
        self.make("CREATE TABLE t (a);")
        reconcile(self.db, columns={"t": {"b": "TEXT UNIQUE DEFAULT 'a  b' CHECK (b <> 'x  y')"}})
        conn = self.connect()
        conn.execute("INSERT INTO t (a) VALUES (1)")
        self.assertEqual(self.rows("t", "b"), [("a  b",)])
        conn.execute("INSERT INTO t (a, b) VALUES (2, 'x y')")  # only 'x  y' is refused
        with self.assertRaises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO t (a, b) VALUES (3, 'x  y')")

    def test_unique_column_with_named_constraint_and_conflict_clause(self):
        self.make("CREATE TABLE t (id INTEGER PRIMARY KEY);")
        reconcile(self.db, columns={"t": {"code": "TEXT CONSTRAINT uq UNIQUE ON CONFLICT ABORT"}})
        sql = self.connect().execute(
            "SELECT sql FROM sqlite_master WHERE name = 't'").fetchone()[0]
        self.assertNotIn("UNIQUE", sql.upper())
        self.assertIn("idx_t_code_unique", self.indexes())

    def test_unique_column_keeps_a_conflict_clause_a_unique_index_cannot_carry(self):
        # CREATE UNIQUE INDEX has no ON CONFLICT: the column must be declared
        # as written (by a rebuild), or later INSERTs fail instead of replacing.
        self.make("CREATE TABLE t (id INTEGER PRIMARY KEY, a);"
                  "INSERT INTO t VALUES (1, 'x'), (2, 'y');"
                  "CREATE TABLE u (id INTEGER PRIMARY KEY);")
        changes = reconcile(self.db, columns={
            "t": {"r": "TEXT DEFAULT NULL UNIQUE ON CONFLICT REPLACE"},
            "u": {"i": "TEXT CONSTRAINT c UNIQUE ON CONFLICT IGNORE"}})
        self.assertEqual(len(changes), 2, changes)
        self.assertEqual(self.rows("t"), [(1, "x", None), (2, "y", None)])
        conn = self.connect()
        conn.execute("INSERT INTO t (id, r) VALUES (3, 'k')")
        conn.execute("INSERT INTO t (id, r) VALUES (4, 'k')")  # replaces row 3
        conn.execute("INSERT INTO u (id, i) VALUES (5, 'k')")
        conn.execute("INSERT INTO u (id, i) VALUES (6, 'k')")  # ignored
        self.assertEqual(self.rows("t", "id"), [(1,), (2,), (4,)])
        self.assertEqual(self.rows("u", "id"), [(5,)])

    def test_unique_column_whose_default_collides_is_refused_before_any_change(self):
        self.make("CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1), (2);")
        before = self.schema()
        with self.assertRaises(MigrationError) as caught:
            reconcile(self.db, columns={"t": {"ok": "TEXT", "code": "TEXT UNIQUE DEFAULT 'x'"}})
        self.assertIn("t.code", str(caught.exception))
        self.assertIn("same value", str(caught.exception))
        self.assertEqual(self.schema(), before)

    def test_unique_index_failing_on_existing_data_rolls_everything_back(self):
        self.make("CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT);"
                  "INSERT INTO t VALUES (1, 'a'), (2, 'a');")
        before = self.schema()
        with self.assertRaises(MigrationError) as caught:
            reconcile(self.db, columns={"t": {"name": "TEXT"}},
                      indexes={"idx_t_email": "CREATE UNIQUE INDEX idx_t_email ON t (email)"})
        self.assertIn("idx_t_email", str(caught.exception))
        self.assertIn("nothing was changed", str(caught.exception))
        self.assertEqual(self.schema(), before)

    def test_a_failing_statement_says_nothing_was_changed_once_as_its_outcome(self):
        self.make("CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT);"
                  "INSERT INTO t VALUES (1, 'a'), (2, 'a');")
        with self.assertRaises(MigrationError) as caught:
            reconcile(self.db,
                      indexes={"idx_t_email": "CREATE UNIQUE INDEX idx_t_email ON t (email)"})
        self.assertEqual(caught.exception.outcome, "nothing was changed")
        self.assertEqual(str(caught.exception).count("nothing was changed"), 1)
        self.assertIn("UNIQUE", caught.exception.statement)

    def test_a_refused_rebuild_keeps_its_reason_and_reconcile_sets_the_outcome(self):
        conn = self.make("CREATE TABLE p (id INTEGER PRIMARY KEY);"
                         "CREATE TABLE c (p_id INTEGER REFERENCES p(id) ON DELETE CASCADE);"
                         "INSERT INTO p VALUES (1); INSERT INTO c VALUES (1);")
        before = self.schema()
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("BEGIN")
        with self.assertRaises(MigrationError) as caught:
            reconcile(conn, columns={"p": {"at": "TEXT DEFAULT CURRENT_TIMESTAMP"}})
        conn.execute("ROLLBACK")
        self.assertEqual(caught.exception.outcome, "nothing was changed")
        self.assertIn("foreign keys are on", str(caught.exception))
        self.assertEqual(str(caught.exception).count("nothing was changed"), 1)
        self.assertEqual(self.schema(), before)

    def test_impossible_declarations_change_nothing_and_are_all_listed(self):
        self.make(OLD_SCHEMA)
        before = self.schema()
        with self.assertRaises(MigrationError) as caught:
            reconcile(self.db, columns={
                "usage_logs": {"model": "VARCHAR"},
                "api_keys": {"owner": "TEXT NOT NULL", "code": "INTEGER PRIMARY KEY",
                             "nulled": "TEXT NOT NULL DEFAULT NULL", "two": "INT, x INT"},
            }, indexes={"idx_bad": "usage_logs(no_such_column)", "idx_odd": "not an index"})
        message = str(caught.exception)
        for expected in ("api_keys.owner", "NOT NULL", "api_keys.code", "PRIMARY KEY",
                         "api_keys.nulled", "api_keys.two", "idx_bad", "no_such_column",
                         "idx_odd"):
            self.assertIn(expected, message)
        self.assertNotIn("usage_logs.model", message)
        self.assertEqual(self.schema(), before)

    def test_references_with_default_is_refused_when_foreign_keys_are_on(self):
        conn = self.make("CREATE TABLE p (id INTEGER PRIMARY KEY); INSERT INTO p VALUES (1);"
                         "CREATE TABLE c (id INTEGER PRIMARY KEY);")
        conn.execute("PRAGMA foreign_keys = ON")
        declared = {"c": {"p_id": "INTEGER REFERENCES p(id) DEFAULT 1"}}
        with self.assertRaises(MigrationError) as caught:
            reconcile(conn, columns=declared)
        self.assertIn("c.p_id", str(caught.exception))
        self.assertIn("foreign keys", str(caught.exception))
        self.assertNotIn("p_id", self.columns("c"))
        # NULL default is fine with foreign keys on; so is any default with them off.
        self.assertEqual(reconcile(conn, columns={"c": {"q_id": "INTEGER REFERENCES p(id) "
                                                        "ON DELETE SET NULL"}}),
                         ["added column c.q_id"])
        conn.execute("PRAGMA foreign_keys = OFF")
        self.assertEqual(reconcile(conn, columns=declared), ["added column c.p_id"])

    def test_missing_table_is_warned_about_and_skipped(self):
        self.make("CREATE TABLE t (id INTEGER PRIMARY KEY);")
        with self.assertLogs("sqlmigrate", "WARNING") as logs:
            changes = reconcile(self.db, columns={"gone": {"a": "INT"}, "t": {"b": "INT"}},
                                indexes={"idx_gone": "gone(a)"})
        self.assertEqual(changes, ["added column t.b"])
        self.assertTrue(any("Table 'gone' does not exist" in line for line in logs.output))
        self.assertEqual(len(logs.output), 2)
        self.assertEqual(self.indexes(), [])

    def test_a_temp_table_hiding_the_declared_table_is_refused_and_nothing_changes(self):
        # A TEMP table of the same name is what an unqualified ALTER TABLE or
        # CREATE INDEX reaches first: the change would land there, not in the file.
        conn = self.make("CREATE TABLE t (a); INSERT INTO t VALUES (1);")
        conn.execute("CREATE TEMP TABLE t (z)")
        before = self.content()
        for declared in ({"columns": {"t": {"b": "INT"}}}, {"indexes": {"i": "t(a)"}},
                         {"columns": {"T": {"z": "INT"}}}):
            with self.subTest(**declared):
                with self.assertRaises(MigrationError) as caught:
                    reconcile(conn, **declared)
                self.assertEqual(caught.exception.kind, "reconcile-refused")
                self.assertIn("TEMP table", str(caught.exception))
        self.assertEqual([row[1] for row in conn.execute("PRAGMA temp.table_info(t)")], ["z"])
        self.assertEqual(conn.execute("SELECT name FROM sqlite_temp_master").fetchall(), [("t",)])
        self.assertEqual(self.content(), before)

    def test_declarations_that_are_not_text_are_a_request_error_before_any_change(self):
        self.make("CREATE TABLE t (a); INSERT INTO t VALUES (1);")
        before = self.content()
        for declared in ({"columns": {"t": ["a"]}}, {"columns": {"t": ["b"]}},
                         {"columns": {"t": {"b": 5}}}, {"columns": {"t": {"b": None}}},
                         {"columns": [("t", {"b": "INT"})]}, {"indexes": {"i": 5}},
                         {"indexes": ["t(a)"]}, {"columns": {"t": {1: "INT"}}}):
            with self.subTest(**declared):
                with self.assertRaises(sqlmigrate.RequestError) as caught:
                    reconcile(self.db, **declared)
                self.assertEqual(len(str(caught.exception).splitlines()), 1)
        self.assertEqual(self.content(), before)

    def test_view_is_refused(self):
        self.make("CREATE TABLE t (a); CREATE VIEW v AS SELECT a FROM t;")
        with self.assertRaises(MigrationError) as caught:
            reconcile(self.db, columns={"v": {"b": "INT"}})
        self.assertIn("'v' is a view", str(caught.exception))

    def test_every_change_is_logged(self):
        self.make(OLD_SCHEMA)
        with self.assertLogs("sqlmigrate", "INFO") as logs:
            reconcile(self.db, columns=ISSUE_COLUMNS, indexes=ISSUE_INDEXES)
        messages = [record.getMessage() for record in logs.records]
        self.assertIn("Adding missing column 'model' to table 'usage_logs'", messages)
        self.assertIn("Adding missing column 'is_active' to table 'api_keys'", messages)
        self.assertIn("Creating missing index 'idx_usage_logs_model' on table 'usage_logs'",
                      messages)

    def test_odd_identifiers(self):
        self.make('CREATE TABLE "order items" ("select" INTEGER, "we""ird" TEXT);'
                  'INSERT INTO "order items" VALUES (1, \'x\');')
        declared = {"order items": {"group": "TEXT DEFAULT 'g'", 'quo"te': "INT",
                                    "with space": "TEXT UNIQUE"}}
        indexes = {"idx order [select]": '"order items"("select", "group")',
                   'idx "full"': 'CREATE INDEX "idx ""full""" ON "order items" ("we""ird")'}
        changes = reconcile(self.db, columns=declared, indexes=indexes)
        self.assertEqual(len(changes), 6)
        self.assertEqual(self.columns("order items"),
                         ["select", 'we"ird', "group", 'quo"te', "with space"])
        self.assertEqual(self.rows("order items"), [(1, "x", "g", None, None)])
        self.assertIn("idx order [select]", self.indexes())
        self.assertIn('idx "full"', self.indexes())
        self.assertEqual(reconcile(self.db, columns=declared, indexes=indexes), [])

    @unittest.skipUnless(HAS_GENERATED, NEEDS_GENERATED)
    def test_virtual_generated_column_uses_add_column(self):
        self.make("CREATE TABLE t (price INT, qty INT); INSERT INTO t VALUES (2, 3);")
        declared = {"t": {"total": "INT GENERATED ALWAYS AS (price * qty) VIRTUAL"}}
        self.assertEqual(reconcile(self.db, columns=declared), ["added column t.total"])
        self.assertEqual(self.rows("t", "total"), [(6,)])
        # table_info hides generated columns; a second run must still see it.
        self.assertEqual(reconcile(self.db, columns=declared), [])

    @unittest.skipIf(HAS_GENERATED, "this SQLite has generated columns")
    def test_generated_column_on_old_sqlite_is_a_clear_error(self):
        self.make("CREATE TABLE t (a INT);")
        with self.assertRaises(MigrationError) as caught:
            reconcile(self.db, columns={"t": {"b": "INT AS (a + 1)"}})
        self.assertIn("3.31", str(caught.exception))

    def test_a_new_columns_check_that_existing_rows_fail_is_refused_on_every_sqlite(self):
        # SQLite before 3.37 adds such a column without testing its CHECK
        # (or a generated column's NOT NULL) on the rows already there.
        self.make("CREATE TABLE t (a INT); INSERT INTO t VALUES (1), (NULL);")
        before = self.schema()
        with self.assertRaises(MigrationError) as caught:
            reconcile(self.db, columns={"t": {"x": "INTEGER DEFAULT 0 CHECK (x > 0)"}})
        self.assertIn("CHECK", str(caught.exception))
        self.assertEqual(self.schema(), before)
        if HAS_GENERATED:
            with self.assertRaises(MigrationError) as caught:
                reconcile(self.db, columns={"t": {"g": "INT AS (a * 2) NOT NULL"}})
            self.assertIn("NOT NULL", str(caught.exception))
            self.assertEqual(self.schema(), before)
        # A CHECK every row passes is added, and holds for new rows.
        # (Before SQLite 3.37 by a rebuild, whose copy tests it: the change says so.)
        changes = reconcile(self.db, columns={"t": {"y": "INTEGER DEFAULT 1 CHECK (y > 0)"}})
        self.assertEqual(len(changes), 1)
        self.assertTrue(changes[0].startswith("added column t.y"), changes)
        self.assertEqual(self.rows("t", "a, y"), [(1, 1), (None, 1)])
        with self.assertRaises(sqlite3.IntegrityError):
            self.connect().execute("INSERT INTO t (a, y) VALUES (2, -1)")


class ReconcileIndexTests(DatabaseTestCase):

    def test_missing_index_on_a_table_that_has_every_declared_column(self):
        self.make("CREATE TABLE t (a TEXT, b TEXT);")
        self.assertEqual(reconcile(self.db, columns={"t": {"a": "TEXT"}},
                                   indexes={"idx_t_a": "t(a)"}), ["created index idx_t_a"])

    def test_full_create_unique_index_statement(self):
        self.make("CREATE TABLE t (a TEXT, b TEXT);")
        sql = "CREATE UNIQUE INDEX IF NOT EXISTS idx_t_ab ON t (a, b COLLATE NOCASE DESC);"
        self.assertEqual(reconcile(self.db, indexes={"idx_t_ab": sql}), ["created index idx_t_ab"])
        self.assertEqual(reconcile(self.db, indexes={"idx_t_ab": sql}), [])
        stored = self.connect().execute(
            "SELECT sql FROM sqlite_master WHERE name = 'idx_t_ab'").fetchone()[0]
        self.assertIn("UNIQUE", stored)

    @unittest.skipUnless(HAS_EXPRESSION_INDEXES, NEEDS_EXPRESSION_INDEXES)
    def test_expression_and_partial_index(self):
        self.make("CREATE TABLE t (a TEXT, b TEXT);")
        sql = "CREATE UNIQUE INDEX IF NOT EXISTS idx_t_ab ON t (a, lower(b)) WHERE a IS NOT NULL;"
        self.assertEqual(reconcile(self.db, indexes={"idx_t_ab": sql}), ["created index idx_t_ab"])
        self.assertEqual(reconcile(self.db, indexes={"idx_t_ab": sql}), [])
        stored = self.connect().execute(
            "SELECT sql FROM sqlite_master WHERE name = 'idx_t_ab'").fetchone()[0]
        self.assertIn("UNIQUE", stored)

    def test_same_definition_written_differently_is_not_a_conflict(self):
        self.make('CREATE TABLE t (a TEXT); CREATE INDEX "Idx_A" ON "T" ( "A" );')
        with self.assertLogs("sqlmigrate", "DEBUG") as logs:
            self.assertEqual(reconcile(self.db, indexes={"idx_a": "t(a)"}), [])
        self.assertFalse([r for r in logs.records if r.levelno >= logging.WARNING])

    def test_different_definition_is_reported_not_replaced(self):
        self.make("CREATE TABLE t (a TEXT, b TEXT); CREATE INDEX idx_t ON t (a);")
        before = self.schema()
        with self.assertLogs("sqlmigrate", "WARNING") as logs:
            self.assertEqual(reconcile(self.db, indexes={"idx_t": "t(b)"}), [])
            self.assertEqual(reconcile(self.db, indexes={
                "idx_t": "CREATE UNIQUE INDEX idx_t ON t (a)"}), [])
        self.assertEqual(len(logs.output), 2)
        self.assertIn("Index 'idx_t' exists with a different definition", logs.output[0])
        self.assertEqual(self.schema(), before)

    def test_index_on_a_column_added_in_the_same_call(self):
        self.make("CREATE TABLE t (a TEXT);")
        changes = reconcile(self.db, columns={"t": {"b": "TEXT"}},
                            indexes={"idx_t_b": "t(b DESC)"})
        self.assertEqual(changes, ["added column t.b", "created index idx_t_b"])

    def test_statement_naming_another_index_is_refused(self):
        self.make("CREATE TABLE t (a TEXT);")
        with self.assertRaises(MigrationError) as caught:
            reconcile(self.db, indexes={"idx_one": "CREATE INDEX idx_two ON t (a)"})
        self.assertIn("idx_two", str(caught.exception))
        self.assertEqual(self.indexes(), [])

    def test_an_index_declaration_holding_a_second_statement_is_refused_before_any_change(self):
        self.make("CREATE TABLE t (a TEXT); CREATE TABLE other (z);")
        before = self.schema()
        for text in ("CREATE INDEX idx_a ON t (a); DROP TABLE other", "t(a); DROP TABLE other"):
            with self.assertRaises(MigrationError) as caught:
                reconcile(self.db, columns={"t": {"b": "TEXT"}}, indexes={"idx_a": text})
            self.assertEqual(caught.exception.kind, "reconcile-refused")
            self.assertIn("more than one statement", str(caught.exception))
            self.assertEqual(self.schema(), before)
        self.assertEqual(reconcile(self.db, indexes={"idx_a": "CREATE INDEX idx_a ON t (a); "
                                                               "-- the end"}),
                         ["created index idx_a"])

    def test_name_taken_by_a_table_is_refused(self):
        self.make("CREATE TABLE t (a TEXT); CREATE TABLE taken (x);")
        with self.assertRaises(MigrationError) as caught:
            reconcile(self.db, indexes={"taken": "t(a)"})
        self.assertIn("taken by a table", str(caught.exception))


class ReconcileTransactionTests(DatabaseTestCase):

    def test_inside_the_callers_transaction(self):
        conn = self.make("CREATE TABLE t (a);")
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (1)")
        self.assertEqual(reconcile(conn, columns={"t": {"b": "INT"}}), ["added column t.b"])
        self.assertTrue(conn.in_transaction)
        conn.execute("ROLLBACK")  # the caller decides: reconcile's change goes too
        self.assertEqual(self.columns("t"), ["a"])

    def test_failure_inside_the_callers_transaction_undoes_only_its_own_part(self):
        conn = self.make("CREATE TABLE t (a); INSERT INTO t VALUES (1), (1);")
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (2)")
        with self.assertRaises(MigrationError):
            reconcile(conn, columns={"t": {"b": "INT"}},
                      indexes={"u": "CREATE UNIQUE INDEX u ON t (a)"})
        self.assertTrue(conn.in_transaction)
        self.assertEqual(self.columns("t"), ["a"])
        conn.execute("COMMIT")
        self.assertEqual(self.rows("t"), [(1,), (1,), (2,)])

    def test_a_trigger_rolling_back_the_callers_transaction_shows_its_own_error(self):
        # RAISE(ROLLBACK) ends the caller's whole transaction, savepoint and
        # all: the error to see is the trigger's, not "no such savepoint".
        conn = self.make("""
            CREATE TABLE s (id INTEGER PRIMARY KEY, data TEXT);
            INSERT INTO s VALUES (1, '{}');
            CREATE TRIGGER no BEFORE UPDATE ON s BEGIN SELECT RAISE(ROLLBACK, 'trigger says no'); END;
            CREATE TABLE mine (x);
        """)
        conn.execute("BEGIN")
        conn.execute("INSERT INTO mine VALUES (1)")
        with self.assertRaises(MigrationError) as caught:
            merge_json_defaults(conn, "s", "data", {"a": 1})
        self.assertIn("trigger says no", str(caught.exception))
        self.assertFalse(conn.in_transaction)
        self.assertEqual(self.rows("s"), [(1, "{}")])

    def test_connection_settings_are_kept(self):
        self.make("CREATE TABLE t (a);")
        conn = sqlite3.connect(self.db)  # default isolation_level ''
        self.addCleanup(conn.close)
        conn.row_factory = sqlite3.Row
        self.assertEqual(reconcile(conn, columns={"t": {"b": "INT"}}), ["added column t.b"])
        self.assertEqual(conn.isolation_level, "")
        self.assertFalse(conn.in_transaction)
        self.assertEqual(self.columns("t"), ["a", "b"])

    def test_from_a_migration(self):
        self.make("CREATE TABLE t (a); INSERT INTO t VALUES (1);")
        directory = self.dir
        with open(os.path.join(directory, "001-reconcile.py"), "w") as f:
            f.write(textwrap.dedent('''
                import sqlite3
                import sqlmigrate

                def up(db):
                    db.row_factory = sqlite3.Row
                    sqlmigrate.reconcile(db, columns={"t": {"b": "INT DEFAULT 5"}},
                                         indexes={"idx_t_b": "t(b)"})
                    sqlmigrate.merge_json_defaults(db, "t", "c", {"k": 1})
                    sqlmigrate.reconcile(db, columns={"t": {"c": "JSON"}})
            '''))
        with self.assertRaises(MigrationError):
            sqlmigrate.Migrator(self.db, directory).up()  # merge before column c: fails
        self.assertEqual(self.columns("t"), ["a"])  # the migration rolled back as a whole
        with open(os.path.join(directory, "001-reconcile.py"), "w") as f:
            f.write(textwrap.dedent('''
                import sqlmigrate

                def up(db):
                    sqlmigrate.reconcile(db, columns={"t": {"b": "INT DEFAULT 5", "c": "JSON"}},
                                         indexes={"idx_t_b": "t(b)"})
                    sqlmigrate.merge_json_defaults(db, "t", "c", {"k": 1})
            '''))
        self.assertEqual(len(sqlmigrate.Migrator(self.db, directory).up()), 1)
        self.assertEqual(self.rows("t"), [(1, 5, '{"k": 1}')])


class ReconcileRebuildTests(DatabaseTestCase):
    """Columns ALTER TABLE ADD COLUMN cannot add: the table is rebuilt."""

    def test_a_rebuild_that_sqlite_refuses_says_why_once_and_changes_nothing(self):
        self.make("CREATE TABLE u (a); INSERT INTO u VALUES (1);")
        before = self.schema()
        with self.assertRaises(MigrationError) as caught:
            reconcile(self.db, columns={"u": {"b": "INTEGER DEFAULT (a + 0)"}})
        text = str(caught.exception)
        self.assertEqual(caught.exception.kind, "rebuild-refused")
        self.assertIn("not constant", text)
        self.assertEqual((text.count("failed"), text.count("nothing was changed")), (1, 1), text)
        self.assertEqual(self.schema(), before)

    def test_current_timestamp_default_rebuilds_and_keeps_rows(self):
        conn = self.make("""
            CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
                            CONSTRAINT name_unique UNIQUE (name));
            CREATE INDEX idx_t_name ON t (name);
            INSERT INTO t (name) VALUES ('a'), ('b');
            DELETE FROM t WHERE name = 'a';
        """)
        changes = reconcile(self.db, columns={"t": {
            "created_at": "DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL", "note": "TEXT"}})
        self.assertEqual(len(changes), 2)
        self.assertTrue(all("rebuilt" in c for c in changes))
        self.assertEqual(self.columns("t"), ["id", "name", "created_at", "note"])
        rows = self.rows("t")
        self.assertEqual([(r[0], r[1], r[3]) for r in rows], [(2, "b", None)])
        self.assertIsNotNone(rows[0][2])
        self.assertIn("idx_t_name", self.indexes())
        conn.execute("INSERT INTO t (name) VALUES ('c')")
        self.assertEqual(self.rows("t", "id")[-1], (3,))  # AUTOINCREMENT counter kept
        self.assertEqual(reconcile(self.db, columns={"t": {"created_at": "DATETIME"}}), [])

    def test_expression_default_rebuilds(self):
        self.make("CREATE TABLE t (a INT); INSERT INTO t VALUES (1), (2);")
        changes = reconcile(self.db, columns={"t": {"b": "INT DEFAULT (1 + 1)"}})
        self.assertIn("rebuilt", changes[0])
        self.assertEqual(self.rows("t"), [(1, 2), (2, 2)])

    @unittest.skipUnless(HAS_WITHOUT_ROWID, NEEDS_WITHOUT_ROWID)
    def test_rebuild_with_odd_identifiers_and_table_constraints(self):
        self.make('CREATE TABLE "my table" ("key" TEXT, "va""l" INT, PRIMARY KEY ("key"), '
                  'CHECK ("va""l" >= 0)) WITHOUT ROWID;'
                  "INSERT INTO \"my table\" VALUES ('k', 1);")
        reconcile(self.db, columns={"my table": {"when": "TEXT DEFAULT (datetime('now'))"}})
        self.assertEqual(self.columns("my table"), ["key", 'va"l', "when"])
        self.assertEqual(self.rows("my table", '"key", "va""l"', order="1"), [("k", 1)])

    @unittest.skipUnless(HAS_GENERATED, NEEDS_GENERATED)
    def test_stored_generated_column_rebuilds(self):
        self.make("CREATE TABLE t (price INT, qty INT); INSERT INTO t VALUES (2, 3);")
        declared = {"t": {"total": "INT GENERATED ALWAYS AS (price * qty) STORED"}}
        changes = reconcile(self.db, columns=declared)
        self.assertIn("rebuilt", changes[0])
        self.assertEqual(self.rows("t", "price, qty, total"), [(2, 3, 6)])
        self.assertEqual(reconcile(self.db, columns=declared), [])

    def test_rebuild_failure_changes_nothing(self):
        self.make("CREATE TABLE t (a INT); INSERT INTO t VALUES (1), (2);")
        before = self.schema()
        with self.assertRaises(MigrationError):
            reconcile(self.db, columns={"t": {"plain": "INT",
                                              "stamp": "TEXT UNIQUE DEFAULT CURRENT_TIMESTAMP"}})
        self.assertEqual(self.schema(), before)
        self.assertEqual(self.rows("t"), [(1,), (2,)])


class ColumnAppendTests(unittest.TestCase):
    """The CREATE TABLE text handed to rebuild_table (no database needed)."""

    def test_new_columns_go_before_table_constraints(self):
        append = sqlmigrate._with_columns_appended
        self.assertEqual(append("CREATE TABLE t(a)", ['"b" INT']), 'CREATE TABLE t(a, "b" INT)')
        self.assertEqual(
            append('CREATE TABLE "t(x" (a VARCHAR(10) DEFAULT (1), "primary" INT, '
                   "PRIMARY KEY (a), CHECK (a > 0)) WITHOUT ROWID", ['"c" TEXT', '"d" INT']),
            'CREATE TABLE "t(x" (a VARCHAR(10) DEFAULT (1), "primary" INT, "c" TEXT, "d" INT, '
            "PRIMARY KEY (a), CHECK (a > 0)) WITHOUT ROWID")
        self.assertEqual(append("CREATE TABLE t (a, -- note\n b) ", ['"c"']),
                         'CREATE TABLE t (a, -- note\n b, "c") ')

    def test_result_is_valid_sql(self):
        conn = sqlite3.connect(":memory:")
        self.addCleanup(conn.close)
        sql = sqlmigrate._with_columns_appended(
            "CREATE TABLE t (a INT, b INT, CONSTRAINT pk PRIMARY KEY (a), UNIQUE (b))",
            ['"c" TEXT DEFAULT CURRENT_TIMESTAMP'])
        conn.execute(sql)
        self.assertEqual([r[1] for r in conn.execute("PRAGMA table_info(t)")], ["a", "b", "c"])


class MergeJsonDefaultsTests(DatabaseTestCase):

    def setUp(self):
        DatabaseTestCase.setUp(self)
        self.make("CREATE TABLE app_settings (id INTEGER PRIMARY KEY, settings_data TEXT);")

    def insert(self, *values):
        conn = self.connect()
        for value in values:
            conn.execute("INSERT INTO app_settings (settings_data) VALUES (?)", (value,))

    def settings(self):
        return [json.loads(v) if v else v for (v,) in self.rows("app_settings", "settings_data")]

    def test_adds_missing_keys_recursively_and_never_overwrites(self):
        self.insert(json.dumps({"max_retries": 0, "flag": False, "name": "", "list": [],
                                "none": None, "retry": {"base": 10}, "scalar": 3}))
        defaults = {"max_retries": 5, "flag": True, "name": "x", "list": [1], "none": 1,
                    "retry": {"base": 50, "cap": 1000, "deep": {"x": 1}}, "scalar": {"a": 1},
                    "new": {"nested": [1, 2]}}
        self.assertEqual(merge_json_defaults(self.db, "app_settings", "settings_data",
                                             defaults), 1)
        self.assertEqual(self.settings(), [{
            "max_retries": 0, "flag": False, "name": "", "list": [], "none": None,
            "retry": {"base": 10, "cap": 1000, "deep": {"x": 1}}, "scalar": 3,
            "new": {"nested": [1, 2]}}])
        self.assertEqual(merge_json_defaults(self.db, "app_settings", "settings_data",
                                             defaults), 0)

    def test_null_and_empty_string_count_as_empty_objects(self):
        self.insert(None, "", "{}")
        self.assertEqual(merge_json_defaults(self.db, "app_settings", "settings_data",
                                             {"a": 1}), 3)
        self.assertEqual(self.settings(), [{"a": 1}] * 3)

    def test_where_and_params_select_rows(self):
        self.insert("{}", "{}", "{}")
        self.assertEqual(merge_json_defaults(self.db, "app_settings", "settings_data", {"a": 1},
                                             where="id = ?", params=(2,)), 1)
        self.assertEqual(self.settings(), [{}, {"a": 1}, {}])

    def test_invalid_json_names_the_row_and_changes_nothing(self):
        self.insert("{}", "{not json", "[1, 2]", "42")
        with self.assertRaises(MigrationError) as caught:
            merge_json_defaults(self.db, "app_settings", "settings_data", {"a": 1})
        message = str(caught.exception)
        self.assertIn("rowid=2", message)
        self.assertIn("rowid=3", message)
        self.assertIn("rowid=4", message)
        self.assertNotIn("rowid=1", message)
        self.assertIn("no row was changed", message)
        self.assertEqual(self.rows("app_settings", "settings_data")[0], ("{}",))

    def test_many_rows(self):
        conn = self.connect()
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO app_settings (settings_data) VALUES (?)",
                         [(json.dumps({"i": i}),) for i in range(20000)])
        conn.execute("UPDATE app_settings SET settings_data = '{\"i\": 0, \"a\": 7}' "
                     "WHERE id = 1")
        conn.execute("COMMIT")
        self.assertEqual(merge_json_defaults(self.db, "app_settings", "settings_data",
                                             {"a": 1}), 19999)
        values = self.settings()
        self.assertEqual(values[0], {"i": 0, "a": 7})
        self.assertEqual(values[-1], {"i": 19999, "a": 1})

    @unittest.skipUnless(HAS_WITHOUT_ROWID, NEEDS_WITHOUT_ROWID)
    def test_without_rowid_table_and_odd_names(self):
        self.make('CREATE TABLE "my settings" ("the key" TEXT PRIMARY KEY, "da""ta" TEXT) '
                  "WITHOUT ROWID; INSERT INTO \"my settings\" VALUES ('a', '{\"x\": 1}'), "
                  "('b', 'oops');")
        with self.assertRaises(MigrationError) as caught:
            merge_json_defaults(self.db, "my settings", 'da"ta', {"y": 2})
        self.assertIn("the key='b'", str(caught.exception))
        self.assertEqual(merge_json_defaults(self.db, "my settings", 'da"ta', {"y": 2},
                                             where='"the key" = ?', params=("a",)), 1)
        self.assertEqual(json.loads(self.rows("my settings", '"da""ta"', order='"the key"')[0][0]),
                         {"x": 1, "y": 2})

    def test_a_temp_table_hiding_the_table_is_refused_and_nothing_changes(self):
        self.insert("{}")
        conn = self.connect()
        conn.execute("CREATE TEMP TABLE app_settings (id INTEGER PRIMARY KEY, settings_data)")
        conn.execute("INSERT INTO temp.app_settings VALUES (1, '{}')")
        before = self.content()
        with self.assertRaises(MigrationError) as caught:
            merge_json_defaults(conn, "app_settings", "settings_data", {"a": 1})
        self.assertEqual(caught.exception.kind, "unaddressable")
        self.assertIn("TEMP table", str(caught.exception))
        self.assertEqual(conn.execute("SELECT settings_data FROM temp.app_settings").fetchall(),
                         [("{}",)])
        self.assertEqual(self.content(), before)

    def test_a_where_that_is_not_one_expression_is_a_request_error_naming_where(self):
        self.insert("{}", "{}")
        before = self.content()
        for where, params in (("id = 1) OR (1", ()), ("nosuch = 1", ()), ("id = ?", ()),
                              ("", ()), ("id = 1; DELETE FROM app_settings", ())):
            with self.subTest(where=where):
                with self.assertRaises(sqlmigrate.RequestError) as caught:
                    merge_json_defaults(self.db, "app_settings", "settings_data", {"a": 1},
                                        where=where, params=params)
                self.assertIn("where", str(caught.exception))
                self.assertEqual(len(str(caught.exception).splitlines()), 1)
        self.assertEqual(self.content(), before)

    def test_a_where_ending_in_a_line_comment_still_selects_its_rows(self):
        self.insert("{}", "{}")
        self.assertEqual(merge_json_defaults(self.db, "app_settings", "settings_data", {"a": 1},
                                             where="id = 2 -- only the second"), 1)
        self.assertEqual(self.settings(), [{}, {"a": 1}])

    def test_a_virtual_table_is_refused_as_such_and_nothing_changes(self):
        conn = self.connect()
        try:
            conn.execute("CREATE VIRTUAL TABLE notes USING fts4(body)")
        except sqlite3.OperationalError:
            self.skipTest("this SQLite has no FTS4")
        conn.execute("INSERT INTO notes VALUES ('{}')")
        conn.commit()
        before = self.content()
        with self.assertRaises(MigrationError) as caught:
            merge_json_defaults(self.db, "notes", "body", {"a": 1})
        self.assertEqual(caught.exception.kind, "unaddressable")
        self.assertIn("merge_json_defaults: table notes is a virtual table",
                      str(caught.exception))
        self.assertEqual(self.content(), before)

    def test_missing_table_or_column(self):
        with self.assertRaises(MigrationError):
            merge_json_defaults(self.db, "nope", "settings_data", {"a": 1})
        with self.assertRaises(MigrationError):
            merge_json_defaults(self.db, "app_settings", "nope", {"a": 1})


class MergeJsonDefaultsHostileInputTests(DatabaseTestCase):
    """Values that json.loads/json.dumps take but would not round-trip:
    refused naming the row (nothing changed), or written back as valid JSON."""

    def setUp(self):
        DatabaseTestCase.setUp(self)
        self.make("CREATE TABLE s (id INTEGER PRIMARY KEY, data TEXT);")

    def insert(self, *values):
        conn = self.connect()
        for value in values:
            conn.execute("INSERT INTO s (data) VALUES (?)", (value,))

    def test_a_table_whose_rowid_names_are_all_columns_is_unaddressable(self):
        self.make("CREATE TABLE j (rowid, oid, _rowid_, data TEXT); "
                  "INSERT INTO j VALUES (1, 2, 3, '{}');")
        before = self.content()
        with self.assertRaises(MigrationError) as caught:
            merge_json_defaults(self.db, "j", "data", {"a": 1})
        self.assertEqual((caught.exception.kind, caught.exception.tables), ("unaddressable", ["j"]))
        self.assertEqual(self.content(), before)

    def texts(self):
        return [v for (v,) in self.rows("s", "data")]

    def strict_loads(self, text):
        def refuse(constant):
            raise ValueError("%s is not JSON" % constant)
        return json.loads(text, parse_constant=refuse, parse_int=str)

    def assertRefused(self, defaults, rowids):
        before = self.content()
        with self.assertRaises(MigrationError) as caught:
            merge_json_defaults(self.db, "s", "data", defaults)
        message = str(caught.exception)
        for rowid in rowids:
            self.assertIn("rowid=%d" % rowid, message)
        self.assertNotIn("rowid=1 ", message)
        self.assertIn("no row was changed", message)
        self.assertEqual(self.content(), before)
        return message

    def test_a_json_blob_stays_a_blob(self):
        # JSON kept as a BLOB (UTF-8 bytes) must not come back as TEXT: a
        # reader expecting bytes would get str.
        self.make("CREATE TABLE b (id INTEGER PRIMARY KEY, data BLOB);"
                  "INSERT INTO b (data) VALUES (CAST('{}' AS BLOB)), ('{}');")
        self.assertEqual(merge_json_defaults(self.db, "b", "data", {"a": 1}), 2)
        self.assertEqual(self.rows("b", "data, typeof(data)"),
                         [(b'{"a": 1}', "blob"), ('{"a": 1}', "text")])

    def test_rows_without_new_keys_keep_their_exact_text(self):
        original = '{ "a" : 1.10, "b": 1e400, "c": "\\u00e9" }'
        self.insert(original)
        self.assertEqual(merge_json_defaults(self.db, "s", "data", {"a": 2, "c": "x"}), 0)
        self.assertEqual(self.texts(), [original])

    def test_rewritten_rows_keep_number_text_and_stay_valid_json(self):
        huge = "9" * 5000  # above Python 3.11's int-from-text digit limit
        self.insert('{"x": 1.10, "big": 1e400, "tiny": -1E-400, "n": %s, "z": -0.0}' % huge)
        self.assertEqual(merge_json_defaults(self.db, "s", "data", {"new": 1.5}), 1)
        text = self.texts()[0]
        self.assertEqual(text, '{"x": 1.10, "big": 1e400, "tiny": -1E-400, "n": %s, "z": -0.0, '
                         '"new": 1.5}' % huge)
        self.strict_loads(text)  # no Infinity, no NaN

    def test_nan_and_infinity_in_a_row_are_refused_naming_the_row(self):
        self.insert("{}", '{"a": NaN}', '{"b": {"c": -Infinity}}', '{"d": [Infinity]}')
        message = self.assertRefused({"e": 1}, [2, 3, 4])
        self.assertIn("NaN", message)
        self.assertIn("-Infinity", message)

    def test_deep_nesting_is_refused_naming_the_row(self):
        deep = '{"a": ' + "[" * 100000 + "]" * 100000 + "}"
        self.insert("{}", deep)
        self.assertIn("nested", self.assertRefused({"e": 1}, [2]))

    def test_nesting_json_allows_is_rewritten(self):
        depth = 200
        self.insert('{"a": ' + "[" * depth + "1" + "]" * depth + "}")
        self.assertEqual(merge_json_defaults(self.db, "s", "data", {"e": 1}), 1)
        document = json.loads(self.texts()[0])
        self.assertEqual(document["e"], 1)
        inner = document["a"]
        for _ in range(depth - 1):
            inner = inner[0]
        self.assertEqual(inner, [1])

    def test_lone_surrogate_escapes_are_written_back_as_escapes(self):
        self.insert('{"s": "\\ud800 and \u00e9"}')
        self.assertEqual(merge_json_defaults(self.db, "s", "data", {"t": "\udc00"}), 1)
        text = self.texts()[0]
        self.assertEqual(json.loads(text), {"s": "\ud800 and \u00e9", "t": "\udc00"})
        self.assertIn("\u00e9", text)  # other text stays as it is, not escaped

    def test_text_that_is_not_utf8_is_refused_naming_the_row(self):
        conn = self.connect()
        conn.execute("INSERT INTO s (data) VALUES ('{}')")
        conn.execute("INSERT INTO s (data) VALUES (CAST(x'7b2261223a2022ff227d' AS TEXT))")
        self.assertIn("UTF-8", self.assertRefused({"e": 1}, [2]))

    @unittest.skipUnless(HAS_WITHOUT_ROWID, NEEDS_WITHOUT_ROWID)
    def test_a_row_whose_key_cannot_be_read_back_is_not_counted_as_changed(self):
        # The key is TEXT that is not UTF-8: read back it is bytes, which
        # would bind as a BLOB and match no row in the UPDATE.
        self.make("CREATE TABLE w (k TEXT PRIMARY KEY, data TEXT) WITHOUT ROWID;"
                  "INSERT INTO w VALUES ('a', '{}'), (CAST(x'ff' AS TEXT), '{}');")
        before = self.content()
        with self.assertRaises(MigrationError) as caught:
            merge_json_defaults(self.db, "w", "data", {"e": 1})
        self.assertIn("no row was changed", str(caught.exception))
        self.assertEqual(self.content(), before)

    def test_a_row_a_trigger_keeps_from_changing_is_not_counted_and_the_trigger_is_named(self):
        self.insert("{}", "{}")
        self.connect().execute("CREATE TRIGGER keep BEFORE UPDATE ON s WHEN old.id = 2 "
                               "BEGIN SELECT RAISE(IGNORE); END")
        before = self.content()
        with self.assertRaises(MigrationError) as caught:
            merge_json_defaults(self.db, "s", "data", {"e": 1})
        self.assertIn("1 of 2 row(s)", str(caught.exception))
        self.assertIn("a trigger", str(caught.exception))
        self.assertIn("no row was changed", str(caught.exception))
        self.assertEqual(self.content(), before)

    def test_duplicate_keys_are_refused_naming_the_row(self):
        # Rewriting such an object would keep only one of the values.
        self.insert("{}", '{"a": 1, "a": 2}', '{"o": {"k": 1, "k": 1}}')
        self.assertIn("'a'", self.assertRefused({"e": 1}, [2, 3]))

    def test_defaults_that_are_not_json_are_refused_before_any_change(self):
        self.insert("{}", "{not json")  # the defaults are checked before any row
        circular = []
        circular.append(circular)
        for defaults in ({"a": float("nan")}, {"a": {"b": [float("inf")]}},
                         {"a": -float("inf")}, {"a": {1: "x"}}, {"a": object()},
                         {"a": circular}):
            before = self.content()
            with self.assertRaises(sqlmigrate.RequestError) as caught:
                merge_json_defaults(self.db, "s", "data", defaults)
            self.assertIn("defaults", str(caught.exception))
            self.assertEqual(self.content(), before)


class SchemaReportTests(DatabaseTestCase):

    def setUp(self):
        DatabaseTestCase.setUp(self)
        self.make("""
            CREATE TABLE api_keys (id INTEGER PRIMARY KEY, key_name VARCHAR NOT NULL,
                                   hashed_key VARCHAR NOT NULL UNIQUE,
                                   is_active BOOLEAN DEFAULT 1 NOT NULL);
            CREATE INDEX idx_api_keys_name ON api_keys (key_name, hashed_key COLLATE NOCASE);
        """ + 'CREATE TABLE "odd ""name""" ("k" TEXT NOT NULL, v, PRIMARY KEY ("k"));')

    def test_text_layout(self):
        report = sqlmigrate.schema_report(self.db)
        self.assertTrue(report.startswith("=" * 60 + "\nDATABASE SCHEMA REPORT\n" + "=" * 60
                                          + "\n\nTable: api_keys\n" + "-" * 60 + "\n"))
        lines = report.splitlines()
        for expected in ("  - id: INTEGER [PK] NOT NULL", "  - key_name: VARCHAR NOT NULL",
                         "  - is_active: BOOLEAN NOT NULL DEFAULT 1", "  Indexes:",
                         "    - idx_api_keys_name: (key_name, hashed_key COLLATE NOCASE)",
                         "    - sqlite_autoindex_api_keys_1: UNIQUE (hashed_key)",
                         'Table: odd "name"', "  - k: TEXT [PK] NOT NULL", "  - v: (no type)"):
            self.assertIn(expected, lines)
        self.assertTrue(report.endswith("=" * 60 + "\n"))

    def test_data_matches_and_is_json(self):
        info = sqlmigrate.schema_info(self.db)
        json.dumps(info)
        self.assertEqual([t["name"] for t in info["tables"]], ["api_keys", 'odd "name"'])
        self.assertEqual(info["tables"][0]["columns"][0], {
            "name": "id", "type": "INTEGER", "primary_key": True, "not_null": True,
            "default": None, "generated": None})
        self.assertEqual(info["tables"][0]["indexes"][0]["columns"],
                         ["key_name", "hashed_key COLLATE NOCASE"])

    def test_selected_and_missing_tables(self):
        info = sqlmigrate.schema_info(self.db, ["API_KEYS", "nope"])
        self.assertEqual([t["name"] for t in info["tables"]], ["api_keys"])
        self.assertEqual(info["missing"], ["nope"])
        self.assertIn("Table: nope\n" + "-" * 60 + "\n  (does not exist)",
                      sqlmigrate.schema_report(self.db, ["nope"]))

    def test_reads_only(self):
        before = os.stat(self.db).st_mtime_ns, self.content()
        sqlmigrate.schema_report(self.db)
        self.assertEqual((os.stat(self.db).st_mtime_ns, self.content()), before)
        missing = os.path.join(self.tmp, "missing.db")
        with self.assertRaises(MigrationError):
            sqlmigrate.schema_report(missing)
        self.assertFalse(os.path.exists(missing))

    def test_empty_database(self):
        os.remove(self.db)
        sqlite3.connect(self.db).close()
        self.assertIn("(no tables)", sqlmigrate.schema_report(self.db))

    @unittest.skipUnless(HAS_EXPRESSION_INDEXES, NEEDS_EXPRESSION_INDEXES)
    def test_expression_and_partial_indexes_are_listed(self):
        self.make("CREATE INDEX idx_x ON api_keys (lower(key_name), id) WHERE is_active;")
        self.assertIn("    - idx_x: (lower(key_name), id) WHERE is_active",
                      sqlmigrate.schema_report(self.db, ["api_keys"]).splitlines())

    @unittest.skipUnless(HAS_WITHOUT_ROWID, NEEDS_WITHOUT_ROWID)
    def test_without_rowid_primary_key_is_not_null(self):
        self.make("CREATE TABLE w (k TEXT PRIMARY KEY, v) WITHOUT ROWID;"
                  "CREATE TABLE r (k TEXT PRIMARY KEY, v);")
        report = sqlmigrate.schema_report(self.db, ["w", "r"]).split("Table: ")
        self.assertIn("  - k: TEXT [PK] NOT NULL", report[1].splitlines())
        self.assertIn("  - k: TEXT [PK]", report[2].splitlines())  # rowid tables allow NULL

    def test_only_the_rowid_alias_among_integer_primary_keys_is_reported_not_null(self):
        # INTEGER PRIMARY KEY DESC in the column's own definition is no rowid
        # alias (an SQLite quirk): it holds NULL; in a table constraint it is one.
        conn = self.make("CREATE TABLE d (id INTEGER PRIMARY KEY DESC, v);"
                         "CREATE TABLE c (id INTEGER, v, PRIMARY KEY (id DESC));"
                         "CREATE TABLE a (id INTEGER PRIMARY KEY ASC, v);")
        conn.execute("INSERT INTO d VALUES (NULL, 1)")
        self.assertEqual(self.rows("d"), [(None, 1)])
        report = sqlmigrate.schema_report(self.db, ["d", "c", "a"]).split("Table: ")
        self.assertIn("  - id: INTEGER [PK]", report[1].splitlines())
        self.assertIn("  - id: INTEGER [PK] NOT NULL", report[2].splitlines())
        self.assertIn("  - id: INTEGER [PK] NOT NULL", report[3].splitlines())
        self.assertEqual([c["not_null"] for t in sqlmigrate.schema_info(self.db, ["d", "c"])[
            "tables"] for c in t["columns"] if c["name"] == "id"], [False, True])

    @unittest.skipUnless(HAS_GENERATED, NEEDS_GENERATED)
    def test_generated_columns_are_listed(self):
        self.make("CREATE TABLE g (a INT, b INT AS (a * 2) STORED);")
        self.assertIn("  - b: INT GENERATED STORED", sqlmigrate.schema_report(self.db, ["g"]))

    def test_cli_schema_json(self):
        result = subprocess.run(
            [sys.executable, os.path.join(ROOT, "sqlmigrate.py"), "--db", self.db, "schema",
             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(json.loads(result.stdout), sqlmigrate.schema_info(self.db))


class TablesNamedInTests(unittest.TestCase):

    def test_tables_in_statements(self):
        self.assertEqual(sqlmigrate._tables_named_in([
            'INSERT OR REPLACE INTO "my t" SELECT * FROM main.src JOIN other ON a.x = b.y',
            "CREATE UNIQUE INDEX IF NOT EXISTS i ON t3 (x)",
            "CREATE TRIGGER tr AFTER INSERT ON t4 BEGIN INSERT INTO t5 VALUES (1) "
            "ON CONFLICT DO NOTHING; END",
            "UPDATE OR IGNORE t6 SET a = 1", "ALTER TABLE [T6] ADD COLUMN b",
            "CREATE TABLE IF NOT EXISTS t7 (a REFERENCES t8(id))", "DELETE FROM t9",
            "SELECT 1", None,
        ]), ["my t", "src", "other", "t3", "t4", "t5", "t6", "t7", "t8", "t9"])


if __name__ == "__main__":
    unittest.main()


class HelperErrorKinds(DatabaseTestCase):
    """Code tests error.kind, never the message."""

    def test_helper_refusals_carry_a_kind(self):
        self.make("""
            CREATE TABLE s (id INTEGER PRIMARY KEY, data TEXT);
            INSERT INTO s VALUES (1, '[1]');
            CREATE TABLE t (a, b);
            CREATE VIEW v AS SELECT b FROM t;
        """)
        cases = [
            (lambda: merge_json_defaults(self.db, "s", "data", {"a": 1}), "bad-json"),
            (lambda: merge_json_defaults(self.db, "nope", "data", {"a": 1}), "no-table"),
            (lambda: merge_json_defaults(self.db, "s", "nope", {"a": 1}), "no-column"),
            (lambda: reconcile(self.db, columns={"t": {"c": "TEXT NOT NULL"}}),
             "reconcile-refused"),
            (lambda: sqlmigrate.drop_column(self.db, "t", "b"), "rebuild-refused"),
        ]
        for call, kind in cases:
            with self.subTest(kind=kind):
                with self.assertRaises(MigrationError) as caught:
                    call()
                self.assertEqual(caught.exception.kind, kind)
