"""The schema as SQL (`schema --sql`), the schema file (`--schema-file`,
$SQLMIGRATE_SCHEMA_FILE, Migrator(schema_file=)) and `verify` against it.

Real SQLite files, the CLI as a real subprocess.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import unittest

from tests.support import ROOT, TempDirTestCase, file_sha256, sqlmigrate
from tests.test_cli import PY36, PY313, usable_python


def has_fts4():
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE VIRTUAL TABLE t USING fts4(a)")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


HAS_FTS4 = has_fts4()
HAS_PARTIAL_INDEXES = sqlite3.sqlite_version_info >= (3, 8, 0)

# One migration with every kind of object.  The views are created in reverse
# name order and a_summary reads z_active: a replay must create z_active first.
EVERYTHING = [
    "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, active INTEGER DEFAULT 1)",
    'CREATE TABLE "order items" (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id), '
    "qty INTEGER CHECK (qty > 0))",
    "CREATE TABLE Audit (at TEXT, what TEXT)",
    "CREATE INDEX idx_users_name ON users (name)",
    'CREATE UNIQUE INDEX "idx order" ON "order items" (user_id, id)',
    "CREATE VIEW z_active AS SELECT id, name FROM users WHERE active",
    "CREATE VIEW a_summary AS SELECT count(*) AS n FROM z_active",
    "CREATE TRIGGER users_audit AFTER INSERT ON users BEGIN "
    "INSERT INTO Audit VALUES (datetime('now'), 'insert; ' || new.name); END",
    "PRAGMA user_version = 7",
]
EXPECTED = [
    "-- sqlmigrate schema, version 1",
    "PRAGMA user_version = 7;",
    "CREATE TABLE Audit (at TEXT, what TEXT);",
    'CREATE TABLE "order items" (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id), '
    "qty INTEGER CHECK (qty > 0));",
    "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, active INTEGER DEFAULT 1);",
    'CREATE UNIQUE INDEX "idx order" ON "order items" (user_id, id);',
    "CREATE INDEX idx_users_name ON users (name);",
    "CREATE VIEW z_active AS SELECT id, name FROM users WHERE active;",
    "CREATE VIEW a_summary AS SELECT count(*) AS n FROM z_active;",
    "CREATE TRIGGER users_audit AFTER INSERT ON users BEGIN "
    "INSERT INTO Audit VALUES (datetime('now'), 'insert; ' || new.name); END;",
]
if HAS_PARTIAL_INDEXES:
    EVERYTHING.insert(5, "CREATE INDEX idx_users_active ON users (name) WHERE active = 1")
    EXPECTED.insert(6, "CREATE INDEX idx_users_active ON users (name) WHERE active = 1;")
if HAS_FTS4:
    EVERYTHING.append("CREATE VIRTUAL TABLE notes USING fts4(body)")
    EXPECTED.insert(3, "CREATE VIRTUAL TABLE notes USING fts4(body);")  # by name, as stored

USERS = "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)"


def has_module(module, arguments):
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE VIRTUAL TABLE t USING %s(%s)" % (module, arguments))
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


# Virtual tables of every module this SQLite has, each with ordinary tables
# (an index, a view) whose names start with "<virtual table>_": all of those
# are the user's, and so is "notes_data" (a shadow name of fts5, not of fts4).
# Only the modules' own shadow tables may be left out.  {name: CREATE}.
SHADOW_NEIGHBOURS = {}
if HAS_FTS4:
    SHADOW_NEIGHBOURS.update({
        "notes": "CREATE VIRTUAL TABLE notes USING fts4(body)",
        "notes_tags": "CREATE TABLE notes_tags (note INTEGER, tag TEXT)",
        "notes_data": "CREATE TABLE notes_data (x)",
        "Notes_Content2": "CREATE TABLE Notes_Content2 (x)"})
if has_module("fts5", "a"):
    SHADOW_NEIGHBOURS.update({
        "posts": "CREATE VIRTUAL TABLE posts USING fts5(title, body)",
        "posts_tags": "CREATE TABLE posts_tags (post_id INTEGER NOT NULL, tag TEXT NOT NULL)",
        "posts_segdir": "CREATE TABLE posts_segdir (x)"})
if has_module("rtree", "id, x0, x1"):
    SHADOW_NEIGHBOURS.update({
        "boxes": "CREATE VIRTUAL TABLE boxes USING rtree(id, x0, x1)",
        "boxes_nodes": "CREATE TABLE boxes_nodes (x)"})
POSTS = "CREATE TABLE posts (id INTEGER PRIMARY KEY, title TEXT)"


class SchemaSqlTest(TempDirTestCase):

    def setUp(self):
        super().setUp()
        self.schema_file = os.path.join(self.tmp, "schema.sql")

    def write_everything(self):
        self.write_sql(1, "everything", ";\n".join(EVERYTHING) + ";")

    def write_two(self):
        self.write_sql(1, "users", USERS + ";", "DROP TABLE users;")
        self.write_sql(2, "posts", POSTS + ";", "DROP TABLE posts;")

    def cli_ok(self, *args, **kwargs):
        status, out, err = self.cli(*args, **kwargs)
        self.assertEqual(status, 0, err)
        return out

    def assert_refused(self, args, status, text, env=None):
        """One line on stderr naming `text`, exit `status`, and neither the
        database nor the schema file changed (or created)."""
        before = [file_sha256(p) if os.path.isfile(p) else None
                  for p in (self.db, self.schema_file)]
        code, out, err = self.cli(*args, env=env or {})
        self.assertEqual(code, status, out + err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn(text, err)
        self.assertEqual(before, [file_sha256(p) if os.path.isfile(p) else None
                                  for p in (self.db, self.schema_file)])
        return err

    # -- schema --sql -------------------------------------------------------

    def test_schema_sql_gives_the_exact_text_for_tables_indexes_views_triggers(self):
        self.write_everything()
        self.cli_ok("--db", self.db, "up")
        self.assertEqual(self.cli_ok("--db", self.db, "schema", "--sql"),
                         "\n".join(EXPECTED) + "\n")

    @unittest.skipUnless(HAS_FTS4, "this SQLite has no fts4: the virtual-table part is not run")
    def test_schema_sql_gives_a_virtual_table_but_not_its_shadow_tables(self):
        self.write_everything()
        self.cli_ok("--db", self.db, "up")
        self.assertIn("notes_content", self.tables())
        out = self.cli_ok("--db", self.db, "schema", "--sql")
        self.assertIn("CREATE VIRTUAL TABLE notes USING fts4(body);\n", out)
        self.assertNotIn("notes_", out)

    @unittest.skipUnless(SHADOW_NEIGHBOURS, "this SQLite has no fts4, fts5 or rtree")
    def test_schema_sql_keeps_tables_whose_names_only_start_like_shadow_tables(self):
        # The user's tables named "<virtual table>_..." (fts5 posts and
        # posts_tags), and their indexes and views, are no shadow tables.
        users = sorted(name for name, sql in SHADOW_NEIGHBOURS.items() if "VIRTUAL" not in sql)
        self.write_sql(1, "neighbours", ";\n".join(
            [SHADOW_NEIGHBOURS[name] for name in sorted(SHADOW_NEIGHBOURS)] +
            ["CREATE INDEX %s_x ON %s (x)" % (users[0], users[0]),
             "CREATE VIEW %s_view AS SELECT * FROM %s" % (users[0], users[0])]) + ";")
        self.cli_ok("--db", self.db, "up")
        expected = "\n".join(
            ["-- sqlmigrate schema, version 1"] +
            [SHADOW_NEIGHBOURS[name] + ";" for name in sorted(SHADOW_NEIGHBOURS)] +
            ["CREATE INDEX %s_x ON %s (x);" % (users[0], users[0]),
             "CREATE VIEW %s_view AS SELECT * FROM %s;" % (users[0], users[0])]) + "\n"
        pythons = [sys.executable] + [python for python in (PY36, PY313) if usable_python(python)]
        for python in pythons:
            self.assertEqual(self.cli_ok("--db", self.db, "schema", "--sql", python=python),
                             expected, python)
        replay = sqlite3.connect(":memory:")
        replay.executescript(expected)
        self.assertEqual(sqlmigrate._schema_sql(replay, 1), expected)

    def test_schema_sql_is_byte_identical_on_python_3_6_and_3_13(self):
        self.write_everything()
        self.cli_ok("--db", self.db, "up")
        pythons = [python for python in (PY36, PY313) if usable_python(python)]
        if not pythons:  # under the matrix, 3.13 refuses SQLite before 3.15.2
            self.skipTest("neither Python 3.6 nor 3.13 can load this SQLite here")
        for python in pythons:
            self.assertEqual(self.cli_ok("--db", self.db, "schema", "--sql", python=python),
                             "\n".join(EXPECTED) + "\n", python)

    def test_schema_sql_replays_into_the_same_schema(self):
        self.write_everything()
        self.cli_ok("--db", self.db, "up")
        text = self.cli_ok("--db", self.db, "schema", "--sql")
        replay = sqlite3.connect(":memory:")
        replay.executescript(text)
        self.assertEqual(sqlmigrate._schema_sql(replay, 1), text)

    def test_schema_sql_ends_a_statement_after_its_trailing_line_comment_so_it_replays(self):
        # SQLite keeps a trailing "-- comment" in an index's or a view's text:
        # a ";" right after it would be part of the comment.
        self.write_sql(1, "commented", "CREATE TABLE t (a INT);\n"
                       "CREATE INDEX ti ON t(a) -- look-ups by a\n;\n"
                       "CREATE VIEW v AS SELECT a FROM t -- the a column\n;\n"
                       "CREATE VIEW w AS SELECT a FROM t /* a block */;\n")
        self.cli_ok("--db", self.db, "up")
        text = self.cli_ok("--db", self.db, "schema", "--sql")
        # SQLite 3.7.17 stores the index's text without its comment.
        stored = self.connect().execute("SELECT sql FROM sqlite_master WHERE name = 'ti'")
        commented = stored.fetchone()[0].endswith("-- look-ups by a")
        self.assertEqual(text, "-- sqlmigrate schema, version 1\n"
                               "CREATE TABLE t (a INT);\n"
                               "CREATE INDEX ti ON t(a)%s;\n"
                               % (" -- look-ups by a\n" if commented else "") +
                               "CREATE VIEW v AS SELECT a FROM t -- the a column\n;\n"
                               "CREATE VIEW w AS SELECT a FROM t /* a block */;\n")
        replay = sqlite3.connect(":memory:")
        replay.executescript(text)
        self.assertEqual(sqlmigrate._schema_sql(replay, 1), text)
        # A baseline is that text: a new database is built from it.
        self.cli_ok("--db", self.db, "baseline", "--to", "1")
        os.remove(os.path.join(self.dir, "001-commented.sql"))
        fresh = os.path.join(self.tmp, "fresh.db")
        self.cli_ok("--db", fresh, "up")
        self.assertEqual(self.cli_ok("--db", fresh, "schema", "--sql"), text)

    def test_schema_sql_leaves_out_sqlite_sequence_and_tracking_tables_of_any_case(self):
        conn = sqlite3.connect(":memory:")
        conn.executescript("CREATE TABLE Meta (key, value); CREATE TABLE META_Migrations (v);"
                           "CREATE INDEX meta_key ON meta (key);"
                           "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT);"
                           "INSERT INTO t DEFAULT VALUES;")
        self.assertEqual(sqlmigrate._schema_statements(conn, "meta"),
                         ["CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT)"])

    def statement_heads(self, script):
        """What _schema_statements gives for a database made by `script`, each
        statement up to its first " AS "."""
        conn = sqlite3.connect(":memory:")
        self.addCleanup(conn.close)
        conn.executescript(script)
        return [sql.split(" AS ")[0] for sql in sqlmigrate._schema_statements(conn)]

    def test_views_come_after_the_views_they_read_whatever_their_names(self):
        self.assertEqual(self.statement_heads(
            'CREATE TABLE t (c); CREATE VIEW "z v" AS SELECT c FROM t;'
            'CREATE VIEW m AS SELECT c FROM [Z V];'
            "CREATE VIEW a AS SELECT c FROM m WHERE c <> 'b';"
            "CREATE VIEW b AS SELECT 'a' AS c; -- names a only in a string"),
            ["CREATE TABLE t (c)", "CREATE VIEW b", 'CREATE VIEW "z v"', "CREATE VIEW m",
             "CREATE VIEW a"])

    def test_a_view_named_in_a_comment_is_no_reference(self):
        # Were the comment a reference, orders_clean and order_totals would
        # read each other, and a name order would put order_totals first.
        self.assertEqual(self.statement_heads(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, total, status);"
            "CREATE VIEW orders_clean AS SELECT id, total FROM orders\n"
            "  WHERE status <> 0  -- left out of order_totals too\n;"
            "CREATE VIEW order_totals AS SELECT sum(total) AS s FROM orders_clean;"),
            ["CREATE TABLE orders (id INTEGER PRIMARY KEY, total, status)",
             "CREATE VIEW orders_clean", "CREATE VIEW order_totals"])

    def test_views_that_seem_to_read_each_other_come_in_the_order_they_were_made(self):
        # "x AS a" names the view a only as a column alias: a seeming cycle,
        # which the order the views were created in resolves.
        self.assertEqual(self.statement_heads("CREATE TABLE t (x); CREATE VIEW b AS SELECT x "
                                              "AS a FROM t; CREATE VIEW a AS SELECT * FROM b;"),
                         ["CREATE TABLE t (x)", "CREATE VIEW b", "CREATE VIEW a"])

    def test_schema_sql_version_is_zero_on_an_untracked_database(self):
        self.connect().execute(USERS)
        self.assertEqual(self.cli_ok("--db", self.db, "schema", "--sql"),
                         "-- sqlmigrate schema, version 0\n%s;\n" % USERS)

    def test_schema_sql_never_writes_the_database(self):
        self.write_two()
        self.cli_ok("--db", self.db, "up")
        before = file_sha256(self.db)
        self.cli_ok("--db", self.db, "schema", "--sql")
        self.assertEqual(file_sha256(self.db), before)

    def test_schema_sql_on_a_missing_database_creates_no_file(self):
        status, _, err = self.cli("--db", self.db, "schema", "--sql")
        self.assertEqual(status, 2, err)  # a --db naming nothing: a wrong request
        self.assertFalse(os.path.exists(self.db))

    def test_schema_sql_with_json_is_a_bad_request(self):
        self.write_two()
        self.cli_ok("--db", self.db, "up")
        self.assert_refused(("--db", self.db, "schema", "--sql", "--json"), 2, "--json")

    def test_schema_sql_with_table_names_is_a_bad_request(self):
        self.write_two()
        self.cli_ok("--db", self.db, "up")
        self.assert_refused(("--db", self.db, "schema", "users", "--sql"), 2, "whole schema")

    def test_schema_sql_api_returns_the_text_the_cli_prints(self):
        self.write_two()
        self.cli_ok("--db", self.db, "up")
        self.assertEqual(sqlmigrate.schema_sql(self.db),
                         self.cli_ok("--db", self.db, "schema", "--sql"))

    # -- the schema file after up and down ---------------------------------

    def read_schema_file(self):
        with open(self.schema_file, "rb") as f:
            return f.read().decode("utf-8")

    def test_up_writes_the_schema_file_with_the_schema_of_the_database(self):
        self.write_two()
        self.cli_ok("--db", self.db, "--schema-file", self.schema_file, "up")
        self.assertEqual(self.read_schema_file(),
                         "-- sqlmigrate schema, version 2\n%s;\n%s;\n" % (POSTS, USERS))
        self.assertEqual([name for name in os.listdir(self.tmp) if "schema" in name],
                         ["schema.sql"])  # no temporary file left behind

    def test_down_rewrites_the_schema_file(self):
        self.write_two()
        self.cli_ok("--db", self.db, "up", "--schema-file", self.schema_file)
        self.cli_ok("--db", self.db, "down", "--schema-file", self.schema_file)
        self.assertEqual(self.read_schema_file(), "-- sqlmigrate schema, version 1\n%s;\n" % USERS)

    def test_schema_file_can_come_from_the_environment(self):
        self.write_two()
        self.cli_ok("--db", self.db, "up", env={"SQLMIGRATE_SCHEMA_FILE": self.schema_file})
        self.assertEqual(self.read_schema_file(), self.cli_ok("--db", self.db, "schema", "--sql"))

    def test_schema_file_option_wins_over_the_environment(self):
        self.write_two()
        other = os.path.join(self.tmp, "other.sql")
        self.cli_ok("--db", self.db, "--schema-file", self.schema_file, "up",
                    env={"SQLMIGRATE_SCHEMA_FILE": other})
        self.assertTrue(os.path.exists(self.schema_file))
        self.assertFalse(os.path.exists(other))

    def test_an_empty_environment_variable_is_no_schema_file_for_every_command(self):
        self.write_two()
        for command in (("up",), ("verify",), ("test",)):
            self.cli_ok("--db", self.db, *command, env={"SQLMIGRATE_SCHEMA_FILE": ""})
        self.assertEqual(sorted(os.listdir(self.tmp)), ["app.db", "migrations"])

    def test_up_with_nothing_to_do_does_not_touch_the_schema_file(self):
        self.write_two()
        self.cli_ok("--db", self.db, "up")
        self.cli_ok("--db", self.db, "--schema-file", self.schema_file, "up")
        self.assertFalse(os.path.exists(self.schema_file))

    def test_dry_run_does_not_touch_the_schema_file(self):
        self.write_two()
        self.cli_ok("--db", self.db, "--schema-file", self.schema_file, "up", "--to", "1")
        before = self.read_schema_file()
        self.cli_ok("--db", self.db, "--schema-file", self.schema_file, "up", "--dry-run")
        self.cli_ok("--db", self.db, "--schema-file", self.schema_file, "down", "--dry-run")
        self.assertEqual(self.read_schema_file(), before)

    def test_rewrite_keeps_the_schema_files_permissions(self):
        self.write_two()
        self.cli_ok("--db", self.db, "--schema-file", self.schema_file, "up", "--to", "1")
        os.chmod(self.schema_file, 0o640)
        self.cli_ok("--db", self.db, "--schema-file", self.schema_file, "up")
        self.assertEqual(os.stat(self.schema_file).st_mode & 0o777, 0o640)
        self.assertIn("posts", self.read_schema_file())

    def test_failed_up_still_writes_the_migrations_it_committed(self):
        self.write_two()
        self.write_sql(3, "broken", "CREATE TABLE nope (;")
        status, _, err = self.cli("--db", self.db, "--schema-file", self.schema_file, "up")
        self.assertEqual(status, 1, err)
        self.assertEqual(self.read_schema_file(),
                         "-- sqlmigrate schema, version 2\n%s;\n%s;\n" % (POSTS, USERS))

    def test_a_schema_file_that_cannot_be_written_after_migrating_is_one_clear_error(self):
        # The write fails after the database changed (a full disk does the
        # same; here its directory goes away while the migration runs).
        folder = os.path.join(self.tmp, "out")
        os.mkdir(folder)
        self.schema_file = os.path.join(folder, "schema.sql")
        self.write("001-removes-the-folder.py", """
            import shutil

            def up(db):
                db.execute("CREATE TABLE t (x)")
                shutil.rmtree(%r)
            """ % folder)
        status, _, err = self.cli("--db", self.db, "--schema-file", self.schema_file, "up")
        self.assertEqual(status, 1, err)
        self.assertNotIn("Traceback", err)
        self.assertIn("the database was changed, but the schema file %s could not be written"
                      % self.schema_file, err)
        self.assertEqual(self.schema_version(), "1")

    def test_schema_file_not_written_by_sqlmigrate_is_refused_before_migrating(self):
        self.write_two()
        with open(self.schema_file, "w") as f:
            f.write("-- my hand-written notes\nCREATE TABLE keep_me (x);\n")
        err = self.assert_refused(("--db", self.db, "--schema-file", self.schema_file, "up"),
                                  1, self.schema_file)
        self.assertIn("not written by sqlmigrate", err)
        self.assertFalse(os.path.exists(self.db))

    def test_empty_schema_file_is_not_ours_either(self):
        self.write_two()
        self.cli_ok("--db", self.db, "up", "--to", "1")
        open(self.schema_file, "w").close()
        self.assert_refused(("--db", self.db, "--schema-file", self.schema_file, "up"),
                            1, "not written by sqlmigrate")
        self.assertEqual(self.tables(), ["metadata", "metadata_migrations", "users"])

    def test_down_refuses_a_schema_file_not_ours_and_rolls_nothing_back(self):
        self.write_two()
        self.cli_ok("--db", self.db, "up")
        with open(self.schema_file, "w") as f:
            f.write("hello\n")
        self.assert_refused(("--db", self.db, "--schema-file", self.schema_file, "down"),
                            1, "not written by sqlmigrate")
        self.assertEqual(self.schema_version(), "2")

    def test_schema_file_in_a_missing_directory_is_refused_before_migrating(self):
        self.write_two()
        self.schema_file = os.path.join(self.tmp, "no-such-dir", "schema.sql")
        self.assert_refused(("--db", self.db, "--schema-file", self.schema_file, "up"),
                            1, "cannot write the schema file")
        self.assertFalse(os.path.exists(self.db))

    def test_schema_file_under_a_regular_file_is_refused_before_migrating(self):
        self.write_two()
        self.cli_ok("--db", self.db, "up", "--to", "1")
        self.schema_file = os.path.join(self.db, "schema.sql")  # app.db is a file
        self.assert_refused(("--db", self.db, "--schema-file", self.schema_file, "up"),
                            1, "schema file")
        self.assertEqual(self.schema_version(), "1")

    def test_schema_file_that_is_a_directory_is_refused_before_migrating(self):
        self.write_two()
        os.mkdir(self.schema_file)
        self.assert_refused(("--db", self.db, "--schema-file", self.schema_file, "up"),
                            1, "schema file")
        self.assertFalse(os.path.exists(self.db))

    @unittest.skipIf(hasattr(os, "geteuid") and os.geteuid() == 0,
                     "root can write into a read-only directory")
    def test_schema_file_in_a_read_only_directory_is_refused_before_migrating(self):
        self.write_two()
        locked = os.path.join(self.tmp, "locked")
        os.mkdir(locked)
        os.chmod(locked, 0o555)
        self.addCleanup(os.chmod, locked, 0o755)
        self.schema_file = os.path.join(locked, "schema.sql")
        self.assert_refused(("--db", self.db, "--schema-file", self.schema_file, "up"),
                            1, "cannot write the schema file")
        self.assertFalse(os.path.exists(self.db))

    def test_schema_file_read_as_a_migration_file_is_refused_before_migrating(self):
        # Inside the migration directory, discovery would read it as a
        # migration file and refuse every later command.
        self.write_two()
        os.symlink(self.dir, os.path.join(self.tmp, "link"))
        for path in (os.path.join(self.dir, "schema.sql"),
                     os.path.join(self.tmp, "link", "schema.sql")):
            self.schema_file = path
            err = self.assert_refused(("--db", self.db, "--schema-file", path, "up"), 2, path)
            self.assertIn("migration directory", err)
            self.assertFalse(os.path.exists(self.db))
            self.assertFalse(os.path.exists(path))
        # A name discovery skips is no migration file: it is fine there.
        self.schema_file = os.path.join(self.dir, "_schema.sql")
        self.cli_ok("--db", self.db, "--schema-file", self.schema_file, "up", "--to", "1")
        self.cli_ok("--db", self.db, "--schema-file", self.schema_file, "up")
        self.cli_ok("--db", self.db, "--schema-file", self.schema_file, "verify")

    def test_schema_file_that_is_the_new_database_itself_is_refused_before_migrating(self):
        # Absent, it looked like a schema file of ours: up then replaced the
        # database it had just migrated by the schema text.
        self.write_two()
        for path in (self.db, os.path.join(self.tmp, ".", "app.db")):
            self.schema_file = path
            self.assert_refused(("--db", self.db, "--schema-file", path, "up"), 2,
                                "is the database")
            self.assertFalse(os.path.exists(self.db))

    def test_schema_file_named_as_a_journal_of_the_database_is_refused_before_migrating(self):
        # SQLite would take it for a crashed writer's journal and delete it.
        self.write_two()
        self.cli_ok("--db", self.db, "up", "--to", "1")
        for suffix in ("-journal", "-wal", "-shm"):
            self.schema_file = self.db + suffix
            self.assert_refused(("--db", self.db, "--schema-file", self.schema_file, "up"), 2,
                                "journal")
            self.assertFalse(os.path.exists(self.schema_file))
        code, out, err = self.cli("--db", self.db, "--schema-file", self.db + "-wal", "verify")
        self.assertEqual(code, 1, out + err)
        self.assertIn("journal", out)

    def test_schema_file_named_as_the_run_lock_file_is_refused_before_migrating(self):
        # Written there, it would be the lock file non-transactional
        # migrations run under: they would fail to take it ("disk I/O error",
        # "not a database"), and the runners that only wait for one would
        # skip it; replaced meanwhile, runners would lock different files.
        self.write_two()
        self.cli_ok("--db", self.db, "up", "--to", "1")
        self.schema_file = self.db + "-sqlmigrate-lock"
        self.assert_refused(("--db", self.db, "--schema-file", self.schema_file, "up"), 2,
                            "lock file")
        self.assertFalse(os.path.exists(self.schema_file))

    def test_symlinked_schema_file_is_written_through_the_link(self):
        self.write_two()
        os.mkdir(os.path.join(self.tmp, "repo"))
        target = os.path.join(self.tmp, "repo", "schema.sql")
        self.cli_ok("--db", self.db, "--schema-file", target, "up", "--to", "1")
        os.symlink(os.path.join("repo", "schema.sql"), self.schema_file)
        self.cli_ok("--db", self.db, "--schema-file", self.schema_file, "up")
        self.assertTrue(os.path.islink(self.schema_file))
        with open(target) as f:
            self.assertEqual(f.read(), "-- sqlmigrate schema, version 2\n%s;\n%s;\n"
                             % (POSTS, USERS))
        self.assertEqual(os.listdir(os.path.join(self.tmp, "repo")), ["schema.sql"])
        self.cli_ok("--db", self.db, "--schema-file", target, "verify")

    def test_api_migrator_with_schema_file_writes_it(self):
        self.write_two()
        sqlmigrate.Migrator(self.db, self.dir, schema_file=self.schema_file).up()
        self.assertEqual(self.read_schema_file(), sqlmigrate.schema_sql(self.db))

    # -- verify --------------------------------------------------------------

    def test_verify_passes_when_a_fresh_build_gives_the_schema_file(self):
        self.write_everything()
        self.cli_ok("--db", self.db, "--schema-file", self.schema_file, "up")
        out = self.cli_ok("--db", self.db, "--schema-file", self.schema_file, "verify")
        self.assertIn("a fresh build gives the schema file", out)

    def test_verify_shows_a_diff_when_the_schema_file_differs_from_a_fresh_build(self):
        self.write_two()
        self.cli_ok("--db", self.db, "--schema-file", self.schema_file, "up")
        self.write_sql(3, "tags", "CREATE TABLE tags (name TEXT);")
        status, out, err = self.cli("--db", self.db, "--schema-file", self.schema_file, "verify")
        self.assertEqual(status, 1, out + err)
        self.assertIn("--- %s" % self.schema_file, out)
        self.assertIn("+++ fresh build", out)
        self.assertIn("\n--- sqlmigrate schema, version 2", out)  # "-" + the file's line
        self.assertIn("\n+-- sqlmigrate schema, version 3", out)
        self.assertIn("\n+CREATE TABLE tags (name TEXT);", out)

    def test_verify_ignores_the_schema_files_line_endings(self):
        # git's core.autocrlf checks the file out with CRLF line ends: the
        # same schema, which verify and test accept.
        self.write_two()
        self.cli_ok("--db", self.db, "--schema-file", self.schema_file, "up")
        text = self.read_schema_file()
        with open(self.schema_file, "wb") as f:
            f.write(text.replace("\n", "\r\n").encode("utf-8"))
        self.cli_ok("--db", self.db, "--schema-file", self.schema_file, "verify")
        self.cli_ok("--schema-file", self.schema_file, "test")
        # Another difference is still one, and its diff shows it.
        with open(self.schema_file, "wb") as f:
            f.write(text.replace(USERS, USERS.lower()).replace("\n", "\r\n").encode("utf-8"))
        status, out, err = self.cli("--db", self.db, "--schema-file", self.schema_file, "verify")
        self.assertEqual(status, 1, out + err)
        self.assertIn("\n-" + USERS.lower() + ";", out)
        self.assertIn("\n+" + USERS + ";", out)

    def test_test_fails_when_a_fresh_build_differs_from_the_schema_file(self):
        self.write_two()
        self.cli_ok("--db", self.db, "--schema-file", self.schema_file, "up")
        status, out, err = self.cli("--schema-file", self.schema_file, "test")
        self.assertEqual(status, 0, out + err)
        self.write_sql(3, "tags", "CREATE TABLE tags (name TEXT);")
        status, out, err = self.cli("--schema-file", self.schema_file, "test")
        self.assertEqual(status, 1, out + err)
        self.assertIn("schema-file:", out)
        self.assertIn("+CREATE TABLE tags (name TEXT);", out)

    def test_verify_reports_a_missing_schema_file(self):
        self.write_two()
        self.cli_ok("--db", self.db, "up")
        status, out, err = self.cli("--db", self.db, "--schema-file", self.schema_file, "verify")
        self.assertEqual(status, 1, out + err)
        self.assertIn("schema file %s does not exist" % self.schema_file, out)
        self.assertIn("schema --sql", out)
        self.assertNotIn("run up", out)  # up on a current database writes no schema file
        self.assertFalse(os.path.exists(self.schema_file))

    def test_verify_never_writes_the_database_or_the_migration_files(self):
        self.write_two()
        self.cli_ok("--db", self.db, "--schema-file", self.schema_file, "up")
        files = [os.path.join(self.dir, name) for name in sorted(os.listdir(self.dir))]
        before = [file_sha256(p) for p in [self.db, self.schema_file] + files]
        self.cli_ok("--db", self.db, "--schema-file", self.schema_file, "verify")
        self.assertEqual(before, [file_sha256(p) for p in [self.db, self.schema_file] + files])
        self.assertEqual(sorted(os.listdir(self.dir)), [os.path.basename(p) for p in files])

    def test_api_verify_with_schema_file_reports_the_difference(self):
        self.write_two()
        with open(self.schema_file, "w") as f:
            f.write("-- sqlmigrate schema, version 2\n%s;\n" % USERS)
        problems = sqlmigrate.Migrator(self.db, self.dir, schema_file=self.schema_file).verify()
        self.assertEqual(len([p for p in problems if "+" + POSTS in p]), 1, problems)


if __name__ == "__main__":
    unittest.main()


class SchemaFileAfterAKill(TempDirTestCase):
    def test_up_rewrites_a_schema_file_left_stale_by_a_kill_after_the_commit(self):
        # A kill -9 between a migration's COMMIT and the schema file's
        # rewrite left the old file; the next up had nothing to apply and left
        # it so for good, while verify's hint said "run up".
        schema = os.path.join(self.tmp, "schema.sql")
        self.write_sql(1, "a", "CREATE TABLE a (x);")
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "--schema-file", schema,
                                    "up")
        self.assertEqual(status, 0, err)
        self.write_sql(2, "b", "CREATE TABLE b (x);")
        killer = (
            "import os, signal, sys\n"
            "sys.path.insert(0, %r)\n"
            "import sqlmigrate\n"
            "def progress(event, *args, **kwargs):\n"
            "    if event == 'done':  # committed, the schema file not yet rewritten\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\n"
            "sqlmigrate.Migrator(sys.argv[1], sys.argv[2], schema_file=sys.argv[3],\n"
            "                    progress=progress).up()\n" % ROOT)
        proc = subprocess.run([sys.executable, "-c", killer, self.db, self.dir, schema],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        self.assertEqual(proc.returncode, -signal.SIGKILL, proc.stderr)
        with open(schema) as f:
            self.assertTrue(f.readline().startswith("-- sqlmigrate schema, version 1"))
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "--schema-file", schema,
                                    "up")
        self.assertEqual(status, 0, err)
        with open(schema) as f:
            self.assertIn("CREATE TABLE b (x);", f.read())
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "--schema-file", schema,
                                    "verify")
        self.assertEqual(status, 0, out + err)

    def test_up_with_nothing_to_apply_does_not_create_a_missing_schema_file(self):
        self.write_sql(1, "a", "CREATE TABLE a (x);")
        self.assertEqual(self.cli("--db", self.db, "--dir", self.dir, "up")[0], 0)
        schema = os.path.join(self.tmp, "schema.sql")
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "--schema-file", schema,
                                    "up")
        self.assertEqual(status, 0, err)
        self.assertFalse(os.path.exists(schema))
