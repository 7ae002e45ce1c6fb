"""Applying and rolling back migrations through the library API."""

import logging
import os
import sqlite3
import subprocess
import sys
import unittest

from tests.support import TempDirTestCase, bare_python, file_sha256, sqlmigrate


class RunnerTestCase(TempDirTestCase):
    def three_migrations(self):
        self.write_sql(1, "create-users", "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);",
                       "DROP TABLE users;")
        self.write_sql(2, "add-email", "ALTER TABLE users ADD COLUMN email TEXT;",
                       "CREATE TABLE u2 (id INTEGER PRIMARY KEY, name TEXT);\n"
                       "INSERT INTO u2 SELECT id, name FROM users;\nDROP TABLE users;\n"
                       "ALTER TABLE u2 RENAME TO users;")
        self.write("003-add-posts.py", '''
            name = "Add posts"

            def up(db):
                db.executescript("""
                    CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id));
                    CREATE INDEX idx_posts_user ON posts(user_id);
                """)

            def down(db):
                db.execute("DROP TABLE posts")
            ''')

    def migrator(self, **kwargs):
        return sqlmigrate.Migrator(self.db, self.dir, **kwargs)


class ApplyingMigrations(RunnerTestCase):
    def test_pending_migrations_run_in_order_and_are_recorded(self):
        self.three_migrations()
        applied = sqlmigrate.migrate(self.db, self.dir)
        self.assertEqual([m.version for m in applied], [1, 2, 3])
        self.assertEqual(self.schema_version(), "3")
        conn = self.connect()
        self.assertIn("posts", self.tables(conn))
        records = conn.execute("SELECT version, name, checksum, applied_at, duration_ms "
                               "FROM metadata_migrations ORDER BY version").fetchall()
        self.assertEqual([(r[0], r[1]) for r in records],
                         [(1, "Create users"), (2, "Add email"), (3, "Add posts")])
        for m, record in zip(applied, records):
            self.assertEqual(record[2], m.checksum)
            self.assertRegex(record[3], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
            self.assertGreaterEqual(record[4], 0)

    def test_second_run_applies_nothing(self):
        self.three_migrations()
        sqlmigrate.migrate(self.db, self.dir)
        before = file_sha256(self.db)
        self.assertEqual(sqlmigrate.migrate(self.db, self.dir), [])
        self.assertEqual(file_sha256(self.db), before)

    def test_start_up_with_nothing_to_do_imports_no_logging_or_re(self):
        # Bench W5: import + a no-op migrate() stay near importing sqlite3
        # alone; logging and re would each cost more than the call itself.
        self.three_migrations()
        sqlmigrate.migrate(self.db, self.dir)
        probe = ("import sys\nsys.path.insert(0, %r)\nimport sqlmigrate\n"
                 "assert sqlmigrate.migrate(%r, %r) == []\n"
                 "print(sorted(m for m in ('logging', 're', 'json', 'argparse') "
                 "if m in sys.modules))" % (os.path.dirname(sqlmigrate.__file__), self.db,
                                            self.dir))
        proc = subprocess.run(bare_python(probe), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stdout.strip(), "[]")

    def test_up_to_stops_at_the_given_version(self):
        self.three_migrations()
        self.assertEqual([m.version for m in self.migrator().up(to=2)], [1, 2])
        self.assertEqual(self.migrator().current_version, 2)
        self.assertEqual([m.version for m in self.migrator().pending()], [3])

    def test_empty_directory_creates_no_database(self):
        self.assertEqual(sqlmigrate.migrate(self.db, self.dir), [])
        self.assertFalse(os.path.exists(self.db))

    def test_a_migration_can_import_sqlmigrate_and_use_its_helpers(self):
        self.write("001-uses-module.py", '''
            import sqlmigrate

            def up(db):
                db.execute("CREATE TABLE %s (x)" % sqlmigrate.quote_identifier("odd name"))
            ''')
        sqlmigrate.migrate(self.db, self.dir)
        self.assertIn("odd name", self.tables())


class Atomicity(RunnerTestCase):
    def test_failing_executescript_leaves_nothing_behind(self):
        self.write_sql(1, "base", "CREATE TABLE base (x);")
        self.write("002-broken.py", '''
            def up(db):
                db.executescript("CREATE TABLE a(x); CREATE TABLE b(y); INSERT INTO nope VALUES (1);")
            ''')
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(self.db, self.dir)
        message = str(caught.exception)
        self.assertIn("002-broken.py", message)
        self.assertIn("INSERT INTO nope VALUES (1)", message)
        self.assertIn("no such table: nope", message)
        self.assertEqual(self.tables(), ["base", "metadata", "metadata_migrations"])
        self.assertEqual(self.schema_version(), "1")

    def test_sql_migration_failure_rolls_back_its_earlier_statements(self):
        self.write_sql(1, "broken", "CREATE TABLE a (x);\nINSERT INTO a VALUES (1);\nSELEC 1;")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(self.db, self.dir)
        self.assertIn("SELEC 1", str(caught.exception))
        self.assertNotIn("a", self.tables())

    def test_commit_and_rollback_inside_a_migration_raise(self):
        for method in ("commit", "rollback"):
            self.write("001-calls-%s.py" % method, '''
                def up(db):
                    db.execute("CREATE TABLE t (x)")
                    db.%s()
                ''' % method)
            with self.assertRaises(sqlmigrate.MigrationError) as caught:
                sqlmigrate.migrate(self.db, self.dir)
            self.assertIn("db.%s()" % method, str(caught.exception))
            self.assertNotIn("t", self.tables())
            os.remove(os.path.join(self.dir, "001-calls-%s.py" % method))

    def test_raw_commit_statement_inside_a_migration_raises(self):
        self.write("001-sneaky.py", '''
            def up(db):
                db.execute("CREATE TABLE t (x)")
                db.execute("COMMIT")
            ''')
        with self.assertRaises(sqlmigrate.MigrationError):
            sqlmigrate.migrate(self.db, self.dir)
        self.assertNotIn("t", self.tables())

    def test_cursor_executescript_stays_inside_the_transaction(self):
        self.write("001-cursor.py", '''
            def up(db):
                cur = db.cursor()
                cur.executescript("CREATE TABLE a (x); INSERT INTO missing VALUES (1);")
            ''')
        with self.assertRaises(sqlmigrate.MigrationError):
            sqlmigrate.migrate(self.db, self.dir)
        self.assertNotIn("a", self.tables())

    def test_earlier_migrations_of_the_run_stay_applied(self):
        self.write_sql(1, "one", "CREATE TABLE one (x);")
        self.write_sql(2, "two", "CREATE TABLE two (x); SELECT * FROM nope;")
        self.write_sql(3, "three", "CREATE TABLE three (x);")
        with self.assertRaises(sqlmigrate.MigrationError):
            sqlmigrate.migrate(self.db, self.dir)
        self.assertEqual(self.tables(), ["metadata", "metadata_migrations", "one"])
        self.assertEqual(self.schema_version(), "1")

    def test_failure_logs_the_schema_of_the_tables_it_named(self):
        self.write_sql(1, "users", "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);")
        self.write_sql(2, "bad-insert", "INSERT INTO users (id, email) VALUES (1, 'x');")
        with self.assertLogs("sqlmigrate", "INFO") as logs:
            with self.assertRaises(sqlmigrate.MigrationError):
                sqlmigrate.migrate(self.db, self.dir)
        report = "\n".join(logs.output)
        self.assertIn("Table: users", report)
        self.assertIn("- name: TEXT", report)

    def test_atomic_failure_leaves_the_database_exactly_as_it_was(self):
        self.write_sql(1, "one", "CREATE TABLE one (x);")
        sqlmigrate.migrate(self.db, self.dir)
        self.write_sql(2, "two", "CREATE TABLE two (x); INSERT INTO one VALUES (1);")
        self.write_sql(3, "three", "CREATE TABLE three (x); SELECT * FROM nope;")
        before = file_sha256(self.db)
        with self.assertRaises(sqlmigrate.MigrationError):
            self.migrator().up(atomic=True)
        self.assertEqual(file_sha256(self.db), before)

    def test_atomic_failure_says_everything_was_rolled_back(self):
        self.write_sql(1, "one", "CREATE TABLE one (x);")
        self.write_sql(2, "two", "SELECT * FROM nope;")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            self.migrator().up(atomic=True)
        self.assertIn("whole --atomic run was rolled back", str(caught.exception))
        self.assertFalse(os.path.exists(self.db))  # it did not exist before

    def test_exception_in_python_migration_names_the_line(self):
        self.write("001-raises.py", "def up(db):\n    db.execute('CREATE TABLE t (x)')\n"
                   "    raise ValueError('boom')\n")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(self.db, self.dir)
        self.assertIn("001-raises.py:3", str(caught.exception))
        self.assertIn("ValueError: boom", str(caught.exception))

    def test_atomic_success_applies_everything(self):
        self.three_migrations()
        self.assertEqual(len(self.migrator().up(atomic=True)), 3)
        self.assertEqual(self.schema_version(), "3")

    def test_atomic_refuses_non_transactional_migrations(self):
        self.write_sql(1, "one", "CREATE TABLE one (x);")
        self.write_sql(2, "vacuum", "VACUUM;", options="transaction:false")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            self.migrator().up(atomic=True)
        self.assertIn("002-vacuum.sql", str(caught.exception))
        self.assertFalse(os.path.exists(self.db))

    def test_invalid_pending_file_means_nothing_runs(self):
        self.write_sql(1, "one", "CREATE TABLE one (x);")
        self.write("002-broken.py", "def up(db)\n    pass\n")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(self.db, self.dir)
        self.assertIn("002-broken.py:1", str(caught.exception))
        self.assertFalse(os.path.exists(self.db))


class NonTransactionalMigrations(RunnerTestCase):
    def test_vacuum_and_wal_migrations_run_and_are_recorded(self):
        self.write_sql(1, "one", "CREATE TABLE one (x); INSERT INTO one VALUES (1);")
        self.write_sql(2, "vacuum", "VACUUM;", options="transaction:false")
        self.write("003-enable-wal.py", '''
            transaction = False

            def up(db):
                db.execute("PRAGMA journal_mode=WAL")
            ''')
        self.assertEqual(len(sqlmigrate.migrate(self.db, self.dir)), 3)
        conn = self.connect()
        self.assertEqual(conn.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        self.assertEqual(self.schema_version(), "3")

    def test_failure_says_the_database_may_be_partly_changed(self):
        self.write_sql(1, "half", "CREATE TABLE half (x);\nSELECT * FROM nope;",
                       options="transaction:false")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(self.db, self.dir)
        self.assertIn("partly changed", str(caught.exception))
        self.assertEqual(self.migrator().current_version, 0)


class ForeignKeys(RunnerTestCase):
    def fk_connection(self):
        self.write_sql(1, "parents", "CREATE TABLE parent (id INTEGER PRIMARY KEY);\n"
                       "CREATE TABLE child (id INTEGER PRIMARY KEY, "
                       "parent_id INTEGER REFERENCES parent(id) ON DELETE CASCADE);\n"
                       "INSERT INTO parent VALUES (1); INSERT INTO child VALUES (10, 1);")
        conn = sqlite3.connect(self.db)
        self.addCleanup(conn.close)
        conn.execute("PRAGMA foreign_keys = ON")
        sqlmigrate.migrate(conn, self.dir)
        return conn

    def test_parent_rebuild_does_not_cascade_into_children(self):
        conn = self.fk_connection()
        self.write_sql(2, "rebuild-parent", "CREATE TABLE parent_new (id INTEGER PRIMARY KEY, n TEXT);\n"
                       "INSERT INTO parent_new (id) SELECT id FROM parent;\nDROP TABLE parent;\n"
                       "ALTER TABLE parent_new RENAME TO parent;")
        sqlmigrate.migrate(conn, self.dir)
        self.assertEqual(conn.execute("SELECT id, parent_id FROM child").fetchall(), [(10, 1)])
        self.assertEqual(conn.execute("PRAGMA foreign_keys").fetchone()[0], 1)

    def test_violation_rolls_back_and_names_table_and_rowid(self):
        conn = self.fk_connection()
        self.write_sql(2, "orphan", "INSERT INTO child VALUES (11, 99);")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(conn, self.dir)
        self.assertIn("child rowid 11", str(caught.exception))
        self.assertIn("002-orphan.sql", str(caught.exception))
        self.assertEqual(conn.execute("SELECT count(*) FROM child").fetchone()[0], 1)
        self.assertEqual(conn.execute("PRAGMA foreign_keys").fetchone()[0], 1)
        self.assertEqual(self.schema_version(), "1")

    def test_foreign_keys_stay_off_when_they_were_off(self):
        self.write_sql(1, "orphan", "CREATE TABLE p (id INTEGER PRIMARY KEY);"
                       "CREATE TABLE c (p INTEGER REFERENCES p(id)); INSERT INTO c VALUES (5);")
        conn = self.connect()
        sqlmigrate.migrate(conn, self.dir)
        self.assertEqual(conn.execute("PRAGMA foreign_keys").fetchone()[0], 0)


class CallerConnections(RunnerTestCase):
    def test_connection_is_not_closed_and_settings_are_restored(self):
        self.three_migrations()
        conn = sqlite3.connect(self.db, isolation_level="DEFERRED")
        self.addCleanup(conn.close)
        conn.row_factory = sqlite3.Row
        sqlmigrate.migrate(conn, self.dir)
        self.assertEqual(conn.isolation_level, "DEFERRED")
        self.assertIs(conn.row_factory, sqlite3.Row)
        self.assertEqual(conn.execute("SELECT count(*) AS n FROM users").fetchone()["n"], 0)

    def test_connection_with_an_open_transaction_is_refused(self):
        self.three_migrations()
        conn = sqlite3.connect(self.db)
        self.addCleanup(conn.close)
        conn.execute("CREATE TABLE mine (x)")
        conn.execute("INSERT INTO mine VALUES (1)")
        self.assertTrue(conn.in_transaction)
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(conn, self.dir)
        self.assertIn("open transaction", str(caught.exception))
        self.assertTrue(conn.in_transaction)

    @unittest.skipIf(sys.version_info < (3, 12), "Connection.autocommit needs Python 3.12")
    def test_pep249_autocommit_false_connection_is_restored(self):
        self.three_migrations()
        conn = sqlite3.connect(self.db, autocommit=False)
        self.addCleanup(conn.close)
        sqlmigrate.migrate(conn, self.dir)
        self.assertIs(conn.autocommit, False)
        self.assertEqual(self.schema_version(), "3")

    def test_migration_changing_row_factory_does_not_break_the_runner(self):
        self.write("001-row-factory.py", '''
            def up(db):
                db.row_factory = lambda cursor, row: {"row": row}
                db.execute("CREATE TABLE t (x)")
            ''')
        self.write_sql(2, "two", "CREATE TABLE two (x);")
        self.assertEqual(len(sqlmigrate.migrate(self.db, self.dir)), 2)

    def test_root_logger_is_never_configured(self):
        self.three_migrations()
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        sqlmigrate.migrate(self.db, self.dir)
        self.assertEqual((root.handlers, root.level), (handlers, level))


class RollingBack(RunnerTestCase):
    def test_down_rolls_back_the_newest_migration(self):
        self.three_migrations()
        sqlmigrate.migrate(self.db, self.dir)
        done = self.migrator().down()
        self.assertEqual([m.version for m in done], [3])
        self.assertNotIn("posts", self.tables())
        self.assertEqual(self.schema_version(), "2")

    def test_down_steps_and_to(self):
        self.three_migrations()
        sqlmigrate.migrate(self.db, self.dir)
        self.assertEqual([m.version for m in self.migrator().down(steps=2)], [3, 2])
        self.assertEqual(self.schema_version(), "1")
        sqlmigrate.migrate(self.db, self.dir)
        self.assertEqual([m.version for m in self.migrator().down(to=0)], [3, 2, 1])
        self.assertEqual(self.schema_version(), "0")
        self.assertEqual(self.tables(), ["metadata", "metadata_migrations"])

    def test_failing_down_says_the_migration_stays_applied(self):
        self.write_sql(1, "one", "CREATE TABLE one (x);", "DROP TABLE one;")
        self.write_sql(2, "two", "CREATE TABLE two (x);", "DROP TABLE nope;")
        sqlmigrate.migrate(self.db, self.dir)
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            self.migrator().down(to=0)
        self.assertIn("its down was rolled back, so it stays applied", str(caught.exception))
        self.assertEqual(self.schema_version(), "2")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            self.migrator().down(dry_run=True)
        self.assertIn("the whole dry run was rolled back", str(caught.exception))

    def test_missing_down_anywhere_in_the_range_refuses_before_any_change(self):
        self.write_sql(1, "one", "CREATE TABLE one (x);")  # no down
        self.write_sql(2, "two", "CREATE TABLE two (x);", "DROP TABLE two;")
        sqlmigrate.migrate(self.db, self.dir)
        before = file_sha256(self.db)
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            self.migrator().down(to=0)
        self.assertIn("001-one.sql has no down", str(caught.exception))
        self.assertEqual(file_sha256(self.db), before)

    def test_down_over_a_missing_file_refuses(self):
        self.three_migrations()
        sqlmigrate.migrate(self.db, self.dir)
        os.remove(os.path.join(self.dir, "003-add-posts.py"))
        self.write_sql(4, "four", "SELECT 1;")  # keep the files ahead of the database
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            self.migrator().down()
        self.assertIn("v3 has no migration file", str(caught.exception))


class Tracking(RunnerTestCase):
    def test_database_from_another_runner_is_adopted(self):
        conn = self.connect()
        conn.execute("CREATE TABLE metadata (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO metadata VALUES ('schema_version', '2')")
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, email TEXT)")
        self.three_migrations()
        m = self.migrator()
        self.assertEqual(m.current_version, 2)
        self.assertEqual([p.version for p in m.pending()], [3])
        self.assertEqual([a.version for a in m.up()], [3])
        self.assertEqual(self.schema_version(), "3")
        self.assertEqual(self.migrator().status()["applied"], 3)
        self.assertEqual([d.version for d in self.migrator().down(to=1)], [3, 2])

    def test_metadata_table_of_another_shape_suggests_table_option(self):
        conn = self.connect()
        conn.execute("CREATE TABLE metadata (id INTEGER PRIMARY KEY, payload TEXT)")
        self.three_migrations()
        before = file_sha256(self.db)
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(self.db, self.dir)
        self.assertIn("--table", str(caught.exception))
        self.assertEqual(file_sha256(self.db), before)

    def test_custom_tracking_table_name(self):
        self.three_migrations()
        sqlmigrate.migrate(self.db, self.dir, table="app meta")
        conn = self.connect()
        self.assertEqual(conn.execute('SELECT value FROM "app meta" WHERE key = ?',
                                      ("schema_version",)).fetchone()[0], "3")
        self.assertNotIn("metadata", self.tables(conn))

    def test_changed_file_is_reported_and_warned_about(self):
        self.three_migrations()
        sqlmigrate.migrate(self.db, self.dir)
        self.write_sql(2, "add-email", "ALTER TABLE users ADD COLUMN email2 TEXT;")
        self.write_sql(4, "four", "CREATE TABLE four (x);")
        states = {r["version"]: r["state"] for r in self.migrator().status()["migrations"]}
        self.assertEqual(states, {1: "applied", 2: "changed", 3: "applied", 4: "pending"})
        with self.assertLogs("sqlmigrate", "WARNING") as logs:
            self.assertEqual([m.version for m in self.migrator().up()], [4])
        self.assertIn("002-add-email.sql", "\n".join(logs.output))

    def test_strict_refuses_while_files_have_drifted(self):
        self.three_migrations()
        sqlmigrate.migrate(self.db, self.dir)
        os.remove(os.path.join(self.dir, "002-add-email.sql"))
        self.write_sql(4, "four", "CREATE TABLE four (x);")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            self.migrator().up(strict=True)
        self.assertIn("v2", str(caught.exception))
        self.assertEqual(self.schema_version(), "3")
        self.assertEqual({r["version"]: r["state"] for r in self.migrator().status()["migrations"]}[2],
                         "missing")

    def test_out_of_order_migration_blocks_up(self):
        self.write_sql(1, "one", "CREATE TABLE one (x);")
        self.write_sql(3, "three", "CREATE TABLE three (x);")
        sqlmigrate.migrate(self.db, self.dir)
        self.write_sql(2, "two", "CREATE TABLE two (x);")
        self.write_sql(4, "four", "CREATE TABLE four (x);")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(self.db, self.dir)
        self.assertIn("002-two.sql", str(caught.exception))
        self.assertNotIn("two", self.tables())
        self.assertNotIn("four", self.tables())
        self.assertIn("out-of-order", [r["state"] for r in self.migrator().status()["migrations"]])

    def test_database_ahead_of_the_files_is_refused(self):
        self.three_migrations()
        sqlmigrate.migrate(self.db, self.dir)
        other = os.path.join(self.tmp, "other")
        os.mkdir(other)
        self.write_sql(1, "create-users", "SELECT 1;")
        report = sqlmigrate.Migrator(self.db, other).status()
        self.assertTrue(report["ahead"])
        self.assertEqual((report["current_version"], report["latest_version"]), (3, 0))
        for action in ("up", "down"):
            with self.assertRaises(sqlmigrate.MigrationError) as caught:
                getattr(sqlmigrate.Migrator(self.db, other), action)()
            self.assertIn("wrong --dir", str(caught.exception))

    def test_mark_records_without_running(self):
        self.three_migrations()
        self.connect().execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, email TEXT)")
        marked = self.migrator().mark(2)
        self.assertEqual([m.version for m in marked], [1, 2])
        self.assertEqual(self.tables(), ["metadata", "metadata_migrations", "users"])
        self.assertEqual([m.version for m in self.migrator().pending()], [3])

    def test_mark_refuses_a_database_that_does_not_exist(self):
        self.three_migrations()
        with self.assertRaises(sqlmigrate.RequestError) as caught:
            self.migrator().mark(2)
        self.assertIn("does not exist", str(caught.exception))
        self.assertFalse(os.path.exists(self.db))

    def test_mark_accepts_a_changed_file(self):
        self.three_migrations()
        sqlmigrate.migrate(self.db, self.dir)
        self.write_sql(2, "add-email", "ALTER TABLE users ADD COLUMN email TEXT; -- reworded")
        self.assertEqual(len(self.migrator().verify()), 1)
        self.assertIn("mark 3", self.migrator().verify()[0])
        self.migrator().mark(3)
        self.assertEqual(self.migrator().verify(), [])
        self.assertEqual(self.schema_version(), "3")

    def test_verify_is_clean_then_reports_each_problem(self):
        self.three_migrations()
        sqlmigrate.migrate(self.db, self.dir)
        self.assertEqual(self.migrator().verify(), [])
        self.write_sql(1, "create-users", "CREATE TABLE users (id INTEGER PRIMARY KEY);")
        self.write("005-bad.py", "def up(db):\n    pass\nversion = 6\n")
        problems = self.migrator().verify()
        self.assertEqual(len(problems), 2, problems)
        self.assertTrue(any("001-create-users.sql" in p and "changed" in p for p in problems))
        self.assertTrue(any("005-bad.py" in p for p in problems))


class ReadOnlyOperations(RunnerTestCase):
    def test_status_verify_and_dry_run_do_not_create_the_database(self):
        self.three_migrations()
        m = self.migrator()
        self.assertEqual(m.status()["pending"], 3)
        self.assertEqual(len(m.verify()), 1)
        self.assertIn("does not exist", m.verify()[0])
        done = m.up(dry_run=True)
        self.assertEqual([d.version for d in done], [1, 2, 3])
        self.assertFalse(os.path.exists(self.db))

    def test_status_and_dry_run_leave_the_file_byte_identical(self):
        self.write_sql(1, "one", "CREATE TABLE one (x);")
        sqlmigrate.migrate(self.db, self.dir)
        conn = self.connect()
        conn.execute("DROP TABLE metadata_migrations")  # as an adopted database has none
        conn.close()
        self.write_sql(2, "two", "CREATE TABLE two (x); INSERT INTO two VALUES ('a;b');")
        before = file_sha256(self.db)
        m = self.migrator()
        m.status()
        m.verify()
        done = m.up(dry_run=True)
        self.assertEqual(file_sha256(self.db), before)
        self.assertEqual(done[0].executed_sql,
                         ["CREATE TABLE two (x)", "INSERT INTO two VALUES ('a;b')"])
        self.assertEqual(self.tables(), ["metadata", "one"])
        self.assertEqual(self.connect().execute("PRAGMA journal_mode").fetchone()[0], "delete")

    def test_down_dry_run_changes_nothing(self):
        self.three_migrations()
        sqlmigrate.migrate(self.db, self.dir)
        before = file_sha256(self.db)
        done = self.migrator().down(steps=3, dry_run=True)
        self.assertEqual([d.version for d in done], [3, 2, 1])
        self.assertIn("DROP TABLE users", done[2].executed_sql)
        self.assertEqual(file_sha256(self.db), before)

    def test_database_in_a_missing_directory_is_an_error(self):
        self.three_migrations()
        with self.assertRaises(sqlmigrate.RequestError) as caught:
            sqlmigrate.migrate(os.path.join(self.tmp, "nope", "app.db"), self.dir)
        self.assertIn("does not exist", str(caught.exception))

    def test_file_that_is_not_a_database_is_an_error(self):
        self.three_migrations()
        with open(self.db, "wb") as f:
            f.write(b"this is not sqlite" * 100)
        before = file_sha256(self.db)
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(self.db, self.dir)
        self.assertIn("not an SQLite database", str(caught.exception))
        self.assertEqual(file_sha256(self.db), before)


class Backups(RunnerTestCase):
    def check_copy(self, path, version):
        self.assertTrue(os.path.exists(path))
        conn = sqlite3.connect(path)
        try:
            self.assertEqual(conn.execute("PRAGMA integrity_check").fetchone()[0], "ok")
            self.assertEqual(conn.execute("SELECT value FROM metadata WHERE key = "
                                          "'schema_version'").fetchone()[0], version)
        finally:
            conn.close()

    def test_backup_before_up_holds_the_previous_version(self):
        self.three_migrations()
        self.migrator().up(to=1)
        with self.assertLogs("sqlmigrate", "INFO") as logs:
            self.migrator().up(backup=True)
        copies = [f for f in os.listdir(self.tmp) if f.endswith(".bak")]
        self.assertEqual(len(copies), 1)
        self.assertIn("-v1", copies[0])
        self.assertIn(copies[0], "\n".join(logs.output))
        self.check_copy(os.path.join(self.tmp, copies[0]), "1")

    def test_no_backup_when_nothing_will_change(self):
        self.three_migrations()
        sqlmigrate.migrate(self.db, self.dir)
        self.migrator().up(backup=True)
        self.assertEqual([f for f in os.listdir(self.tmp) if f.endswith(".bak")], [])

    def test_locked_copy_fallback_of_python_36_is_consistent_in_wal_mode(self):
        self.three_migrations()
        sqlmigrate.migrate(self.db, self.dir)
        conn = self.connect()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("INSERT INTO users (name) VALUES ('only in the wal')")
        dest = os.path.join(self.tmp, "copy.db")
        open(dest, "wb").close()  # backup() makes the file, with the database's permissions
        sqlmigrate._copy_under_write_lock(conn, dest)
        self.check_copy(dest, "3")
        copy = sqlite3.connect(dest)
        self.addCleanup(copy.close)
        self.assertEqual(copy.execute("SELECT name FROM users").fetchall(), [("only in the wal",)])
        self.assertFalse(os.path.exists(dest + "-wal"))
