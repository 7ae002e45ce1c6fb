"""Other DB-API drivers with SQLite semantics: sqlcipher3 (encrypted files)
and pysqlite3 (a newer SQLite than the host's), through the API and the CLI.
The driver tests skip when the driver is absent; `.ci/drivers.sh` installs
both into a venv and fails if any test was skipped."""

import importlib
import json
import os
import shutil
import sqlite3

from tests.support import ROOT, TempDirTestCase, file_sha256, sqlmigrate

BUNDLED = os.path.join(ROOT, "migrations")
KEY = "correct horse battery staple"


def _optional(name):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


sqlcipher3 = _optional("sqlcipher3")
pysqlite3 = _optional("pysqlite3.dbapi2")
NO_SQLCIPHER = "sqlcipher3 is not installed (pip install sqlcipher3-binary; see .ci/drivers.sh)"
NO_PYSQLITE3 = "pysqlite3 is not installed (pip install pysqlite3-binary; see .ci/drivers.sh)"


def skip_unless(module, reason):
    import unittest
    return unittest.skipIf(module is None, reason)


class _NotSqliteCursor(object):
    def execute(self, sql, params=()):
        # What a PostgreSQL or MySQL driver answers: no such function.
        raise RuntimeError("function sqlite_version() does not exist")


class _NotSqliteConnection(object):
    """A foreign DB-API connection (not a mock of sqlite3): no SQLite behind it."""

    def cursor(self):
        return _NotSqliteCursor()

    def execute(self, sql, params=()):
        return self.cursor().execute(sql, params)


class ForeignConnections(TempDirTestCase):
    def test_a_connection_that_is_not_sqlite_is_refused_up_front(self):
        for call in (lambda c: sqlmigrate.Migrator(c, self.dir),
                     lambda c: sqlmigrate.migrate(c, self.dir),
                     lambda c: sqlmigrate.backup(c, os.path.join(self.tmp, "copy.db"))):
            with self.assertRaises(sqlmigrate.RequestError) as caught:
                call(_NotSqliteConnection())
            self.assertIn("not an SQLite database", str(caught.exception))
            self.assertIn("sqlite_version()", str(caught.exception))
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "copy.db")))

    def test_a_driver_module_that_cannot_be_imported_exits_2_naming_it_and_its_install(self):
        status, out, err = self.cli("--driver", "sqlcipher3_not_there", "--db", self.db, "status")
        self.assertEqual(status, 2, err)
        self.assertIn("cannot import driver module sqlcipher3_not_there", err)
        self.assertIn("pip install sqlcipher3_not_there", err)
        self.assertFalse(os.path.exists(self.db))

    def test_an_environment_driver_that_cannot_be_imported_exits_2(self):
        status, out, err = self.cli("--db", self.db, "up",
                                    env={"SQLMIGRATE_DRIVER": "pysqlite3_not_there.dbapi2"})
        self.assertEqual(status, 2, err)
        self.assertIn("pysqlite3_not_there.dbapi2", err)
        self.assertFalse(os.path.exists(self.db))

    def test_a_driver_that_is_not_a_module_name_exits_2_with_one_line(self):
        for name in (".x", "../x", ".", "/abs/path", "a..b", "x."):
            with self.subTest(name=name):
                status, out, err = self.cli("--db", self.db, "up", env={"SQLMIGRATE_DRIVER": name})
                self.assertEqual(status, 2, err)
                self.assertNotIn("Traceback", err)
                self.assertEqual(err.count("\n"), 1, err)
                self.assertIn("module name", err)
                self.assertNotIn("pip install", err)
                self.assertFalse(os.path.exists(self.db))

    def test_a_driver_module_that_fails_or_exits_as_it_imports_is_one_line_exit_2(self):
        # An ImportError is not all a module's import can raise; its
        # SystemExit(0) ended the run with status 0, nothing applied.
        self.write_sql(1, "t", "CREATE TABLE t (x);")
        for module, body, shown in (("exitdriver", "raise SystemExit(0)", "sys.exit(0)"),
                                    ("brokendriver", "raise RuntimeError('no libsqlite')",
                                     "RuntimeError: no libsqlite")):
            with self.subTest(module=module):
                self.write(module + ".py", body + "\n", directory=self.tmp)
                status, out, err = self.cli("--driver", module, "--db", self.db, "up")
                self.assertEqual(status, 2, (out, err))
                self.assertEqual(len(err.strip().splitlines()), 1, err)
                self.assertIn("driver module %s" % module, err)
                self.assertIn(shown, err)
                self.assertFalse(os.path.exists(self.db))

    def test_a_key_without_an_encrypting_driver_is_refused(self):
        self.write_sql(1, "t", "CREATE TABLE t (x)")
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "up",
                                    env={"SQLMIGRATE_KEY": KEY})
        self.assertEqual(status, 2, err)
        self.assertIn("does not encrypt", err)
        self.assertFalse(os.path.exists(self.db))


@skip_unless(sqlcipher3, NO_SQLCIPHER)
class SQLCipher(TempDirTestCase):
    def open(self, key=KEY):
        conn = sqlcipher3.connect(self.db, isolation_level=None)
        self.addCleanup(conn.close)
        conn.execute("PRAGMA key = '%s'" % key)
        return conn

    def cipher_cli(self, *args, **kwargs):
        env = {"SQLMIGRATE_KEY": KEY}
        env.update(kwargs.pop("env", {}))
        return self.cli("--driver", "sqlcipher3", "--db", self.db, *args, env=env, **kwargs)

    def assert_not_readable_by_sqlite3(self):
        with self.assertRaises(sqlite3.DatabaseError):
            plain = sqlite3.connect(self.db)
            try:
                plain.execute("SELECT * FROM sqlite_master").fetchall()
            finally:
                plain.close()

    def test_the_bundled_migrations_go_up_and_down_on_an_encrypted_connection(self):
        conn = self.open()
        migrator = sqlmigrate.Migrator(conn, BUNDLED)
        applied = migrator.up()
        self.assertEqual([r.version for r in applied], [1, 2, 3, 4, 5, 6])
        self.assertEqual(migrator.status()["current_version"], 6)
        self.assertEqual(migrator.verify(), [])
        self.assertEqual([r.version for r in migrator.down(to=4)], [6, 5])
        self.assertEqual(migrator.current_version, 4)
        self.assert_not_readable_by_sqlite3()

    def test_a_failing_migration_on_an_encrypted_database_is_rolled_back(self):
        self.write_sql(1, "ok", "CREATE TABLE a (x);")
        self.write_sql(2, "bad", "CREATE TABLE b (x);\nINSERT INTO nowhere VALUES (1);")
        conn = self.open()
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.Migrator(conn, self.dir).up()
        self.assertEqual(caught.exception.kind, "migration-failed")
        self.assertIn("INSERT INTO nowhere", caught.exception.statement)
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        self.assertIn("a", names)
        self.assertNotIn("b", names)
        self.assertEqual(sqlmigrate.Migrator(conn, self.dir).current_version, 1)

    def test_the_cli_migrates_an_encrypted_file_that_sqlite3_cannot_read(self):
        status, out, err = self.cipher_cli("--dir", BUNDLED, "up")
        self.assertEqual(status, 0, err)
        self.assertIn("Applied 6 migration(s)", out)
        self.assert_not_readable_by_sqlite3()
        status, out, err = self.cipher_cli("--dir", BUNDLED, "status", "--json")
        self.assertEqual(status, 0, err)
        self.assertEqual(json.loads(out)["current_version"], 6)
        status, out, err = self.cipher_cli("--dir", BUNDLED, "down", "--steps", "2")
        self.assertEqual(status, 0, err)
        self.assertEqual(self.open().execute(
            "SELECT value FROM metadata WHERE key = 'schema_version'").fetchone()[0], "4")

    def test_a_wrong_key_fails_with_exit_1_and_changes_nothing(self):
        self.assertEqual(self.cipher_cli("--dir", BUNDLED, "up", "--to", "2")[0], 0)
        before = file_sha256(self.db)
        for command in (["up"], ["status"], ["down"], ["backup", os.path.join(self.tmp, "b.db")]):
            status, out, err = self.cipher_cli("--dir", BUNDLED, *command,
                                               env={"SQLMIGRATE_KEY": "not the key"})
            self.assertEqual(status, 1, (command, err))
            self.assertIn("not a database or wrong key", err)
            self.assertNotIn("Traceback", err)
        self.assertEqual(file_sha256(self.db), before)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "b.db")))

    def test_a_backup_of_an_encrypted_database_is_encrypted_with_the_same_key(self):
        self.assertEqual(self.cipher_cli("--dir", BUNDLED, "up")[0], 0)
        copy = os.path.join(self.tmp, "copy.db")
        status, out, err = self.cipher_cli("backup", copy)
        self.assertEqual(status, 0, err)
        self.db = copy
        self.assert_not_readable_by_sqlite3()
        status, out, err = self.cipher_cli("--dir", BUNDLED, "status", "--json")
        self.assertEqual(status, 0, err)
        self.assertEqual(json.loads(out)["current_version"], 6)


@skip_unless(pysqlite3, NO_PYSQLITE3)
class PySQLite3(TempDirTestCase):
    def open(self):
        conn = pysqlite3.connect(self.db, isolation_level=None)
        self.addCleanup(conn.close)
        return conn

    def test_the_runner_reads_the_drivers_sqlite_version_not_the_sqlite3_modules(self):
        driver = sqlmigrate._driver(self.open())
        self.assertEqual(driver.version_text, pysqlite3.sqlite_version)
        self.assertIs(driver.Error, pysqlite3.Error)
        self.assertFalse(issubclass(pysqlite3.Error, sqlite3.Error))

    def test_a_no_op_start_up_runs_one_query_as_on_sqlite3(self):
        conn = self.open()
        sqlmigrate.migrate(conn, BUNDLED)
        sqlmigrate._drivers_by_type.clear()  # as in a new process
        statements = []
        conn.set_trace_callback(statements.append)
        self.assertEqual(sqlmigrate.migrate(conn, BUNDLED), [])
        self.assertEqual(len(statements), 1, statements)
        self.assertIn("schema_version", statements[0])

    def test_a_migration_runs_on_the_drivers_newer_sqlite(self):
        if pysqlite3.sqlite_version_info < (3, 44, 0):
            self.skipTest("pysqlite3's SQLite %s lacks concat() (3.44)" % pysqlite3.sqlite_version)
        self.write_sql(1, "concat", "CREATE TABLE t (x);\nINSERT INTO t VALUES (concat('a', 'b'));")
        conn = self.open()
        self.assertEqual(len(sqlmigrate.migrate(conn, self.dir)), 1)
        self.assertEqual(conn.execute("SELECT x FROM t").fetchone()[0], "ab")

    def test_drop_column_takes_the_native_path_and_the_drivers_errors_are_handled(self):
        conn = self.open()
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, keep TEXT, old TEXT)")
        conn.execute("INSERT INTO t VALUES (1, 'k', 'o')")
        changes = sqlmigrate.drop_column(conn, "t", "old")
        self.assertIn("in place", changes[-1])
        self.assertEqual(conn.execute("SELECT * FROM t").fetchall(), [(1, "k")])
        # A driver error inside the runner becomes a MigrationError, as sqlite3's do.
        self.write_sql(1, "bad", "CREATE TABLE u (x);\nINSERT INTO nowhere VALUES (1);")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(conn, self.dir)
        self.assertEqual(caught.exception.kind, "migration-failed")
        self.assertNotIn("u", [r[0] for r in conn.execute("SELECT name FROM sqlite_master")])

    def test_reconcile_and_rebuild_work_on_the_driver(self):
        conn = self.open()
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT)")
        conn.execute("CREATE INDEX t_a ON t (a)")
        changes = sqlmigrate.reconcile(conn, columns={"t": {"b": "INTEGER DEFAULT 0"}})
        self.assertTrue(changes)
        sqlmigrate.rebuild_table(conn, "t", rename={"a": "title"})
        columns = [r[1] for r in conn.execute("PRAGMA table_info(t)")]
        self.assertEqual(columns, ["id", "title", "b"])

    def test_a_dry_run_lists_the_statements_and_changes_nothing(self):
        self.write_sql(1, "t", "CREATE TABLE t (x);")
        conn = self.open()
        results = sqlmigrate.Migrator(conn, self.dir).up(dry_run=True)
        self.assertEqual([s.strip() for s in results[0].executed_sql], ["CREATE TABLE t (x)"])
        self.assertEqual([r[0] for r in conn.execute("SELECT name FROM sqlite_master")], [])

    def test_the_cli_runs_the_bundled_migrations_with_the_driver(self):
        status, out, err = self.cli("--driver", "pysqlite3.dbapi2", "--db", self.db,
                                    "--dir", BUNDLED, "up")
        self.assertEqual(status, 0, err)
        self.assertIn("Applied 6 migration(s)", out)
        self.assertIn("(in place)", err)  # v5 drops a column natively
        status, out, err = self.cli("--db", self.db, "--dir", BUNDLED, "status", "--json",
                                    env={"SQLMIGRATE_DRIVER": "pysqlite3.dbapi2"})
        self.assertEqual(status, 0, err)
        self.assertEqual(json.loads(out)["current_version"], 6)
        backup = os.path.join(self.tmp, "b.db")
        status, out, err = self.cli("--driver", "pysqlite3.dbapi2", "--db", self.db,
                                    "backup", backup)
        self.assertEqual(status, 0, err)
        self.assertEqual(self.schema_version(backup), "6")
        shutil.rmtree(self.dir)
