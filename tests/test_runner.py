"""Applying and rolling back migrations through the library API."""

import gc
import logging
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import unittest
import warnings

from tests.support import NO_BYTECODE, TempDirTestCase, file_sha256, sqlmigrate


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
                db.execute("CREATE TABLE %s (x)" % sqlmigrate._quote_identifier("odd name"))
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

    def test_a_failure_says_which_migrations_of_the_run_were_committed_before_it(self):
        # Only those this run committed: none when the first one fails.
        self.three_migrations()
        self.write_sql(4, "broken", "CREATE TABLE four (x);\nSELEC 1;", "DROP TABLE four;")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            self.migrator().up(to=1)
            self.migrator().up()
        self.assertIn("the migration was rolled back; this run had already applied "
                      "002-add-email.sql, 003-add-posts.py (committed)", str(caught.exception))
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            self.migrator().up()
        self.assertTrue(str(caught.exception).endswith("the migration was rolled back"),
                        str(caught.exception))
        self.write("005-broken-down.py", '''
            def up(db):
                pass

            def down(db):
                raise ValueError("no")
            ''')
        os.remove(os.path.join(self.dir, "004-broken.sql"))
        self.write_sql(4, "fine", "CREATE TABLE four (x);", "DROP TABLE four;")
        self.migrator().up()
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            self.migrator().down(to=0)
        self.assertTrue(str(caught.exception).endswith("its down was rolled back, so it stays "
                                                       "applied"), str(caught.exception))

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

    def test_transaction_statements_behind_comments_are_refused_in_every_call(self):
        statements = ["-- tidy up\nCOMMIT", "/* x */ END", "/* x */\nROLLBACK",
                      "-- c\n/* d */ BEGIN", "\n-- a\n-- b\ncommit transaction"]
        calls = {
            "execute": "db.execute(SQL)",
            "executemany": "db.executemany(SQL, [()])",
            "cursor.execute": "db.cursor().execute(SQL)",
            "cursor.executemany": "db.cursor().executemany(SQL, [()])",
            "executescript": "db.executescript(SQL + ';')",
            "cursor.executescript": "db.cursor().executescript(SQL + ';')",
        }
        for statement in statements:
            for label, call in calls.items():
                with self.subTest(statement=statement, call=label):
                    if os.path.exists(self.db):
                        os.remove(self.db)
                    self.write("001-sneaky.py", "SQL = %r\n\n\ndef up(db):\n"
                               "    db.execute('CREATE TABLE t (x)')\n    %s\n"
                               "    db.execute('CREATE TABLE u (x)')\n" % (statement, call))
                    with self.assertRaises(sqlmigrate.MigrationError) as caught:
                        sqlmigrate.migrate(self.db, self.dir)
                    self.assertIn("rolled back", str(caught.exception))
                    self.assertEqual(self.migrator().current_version, 0)
                    self.assertEqual([t for t in self.tables() if t in ("t", "u")], [])

    def test_without_an_authorizer_comment_hidden_transaction_statements_are_still_refused(self):
        # A driver without set_authorizer (dqlite's) leaves the statement
        # reader alone on guard: it must read past comments as SQLite does.
        driver = sqlmigrate._SQLITE3_DRIVER
        self.addCleanup(setattr, driver, "has_set_authorizer", driver.has_set_authorizer)
        driver.has_set_authorizer = False
        for statement in ["-- tidy up\nCOMMIT", "/* x */ END", "/* x */\nROLLBACK",
                          "-- c\n/* d */ BEGIN", "rollback /* x */ transaction"]:
            with self.subTest(statement=statement):
                if os.path.exists(self.db):
                    os.remove(self.db)
                self.write("001-sneaky.py", "def up(db):\n    db.execute('CREATE TABLE t (x)')\n"
                           "    db.execute(%r)\n    db.execute('CREATE TABLE u (x)')\n"
                           % statement)
                with self.assertRaises(sqlmigrate.MigrationError) as caught:
                    sqlmigrate.migrate(self.db, self.dir)
                self.assertIn("is not allowed inside a transactional migration",
                              str(caught.exception))
                self.assertEqual(self.migrator().current_version, 0)
                self.assertEqual([t for t in self.tables() if t in ("t", "u")], [])

    def test_transaction_statement_refusal_is_a_clear_message(self):
        self.write("001-sneaky.py", "def up(db):\n    db.execute('CREATE TABLE t (x)')\n"
                   "    db.execute('/* x */ COMMIT')\n")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(self.db, self.dir)
        self.assertIn("COMMIT is not allowed inside a transactional migration",
                      str(caught.exception))

    def test_a_migration_cannot_replace_the_runners_authorizer(self):
        self.write("001-authorizer.py", "def up(db):\n    db.execute('CREATE TABLE t (x)')\n"
                   "    db.set_authorizer(None)\n    db.execute('COMMIT')\n")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(self.db, self.dir)
        self.assertIn("db.set_authorizer() is not allowed", str(caught.exception))
        self.assertNotIn("t", self.tables())

    def test_savepoints_inside_a_migration_and_helpers_still_work(self):
        self.write("001-savepoints.py", '''
            import sqlmigrate

            def up(db):
                db.execute("CREATE TABLE t (a, b)")
                db.execute("SAVEPOINT mine")
                db.execute("INSERT INTO t VALUES (1, 2)")
                db.execute("ROLLBACK TO mine")
                db.execute("RELEASE mine")
                sqlmigrate.drop_column(db, "t", "b")
            ''')
        self.assertEqual(len(sqlmigrate.migrate(self.db, self.dir)), 1)
        conn = self.connect()
        self.assertEqual([r[1] for r in conn.execute("PRAGMA table_info(t)")], ["a"])
        self.assertEqual(conn.execute("SELECT count(*) FROM t").fetchone()[0], 0)

    def test_runner_removes_its_guard_from_the_callers_connection_afterwards(self):
        self.write_sql(1, "one", "CREATE TABLE one (x);")
        conn = self.connect()
        sqlmigrate.migrate(conn, self.dir)
        conn.execute("BEGIN")
        conn.execute("INSERT INTO one VALUES (1)")
        conn.execute("COMMIT")
        self.assertEqual(conn.execute("SELECT count(*) FROM one").fetchone()[0], 1)

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
        # The new file stays, empty (no tables): removing it could unlink a
        # file another process holds open (test_concurrency.RacesOnANewDatabase).
        self.assertEqual(os.path.getsize(self.db), 0)

    @unittest.skipIf(os.name != "posix", "RLIMIT_FSIZE")
    def test_a_commit_that_cannot_write_names_the_migration_and_what_stays(self):
        # The migration's rows fit in SQLite's page cache, so nothing fails
        # before COMMIT writes them out past the file size limit (EFBIG; a
        # full disk fails there the same way, with SQLITE_FULL).
        self.write_sql(1, "one", "CREATE TABLE one (x);")
        # 512 rows of 1000 bytes, doubled up (no WITH RECURSIVE: SQLite 3.7.17 lacks it).
        self.write_sql(2, "big", "CREATE TABLE big (x);\n"
                       "INSERT INTO big VALUES (randomblob(1000));\n"
                       + "INSERT INTO big SELECT randomblob(1000) FROM big;\n" * 9)

        def small_files():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not a killed process
            resource.setrlimit(resource.RLIMIT_FSIZE, (200 << 10, 200 << 10))

        for atomic, version, outcome in ((True, None, "whole --atomic run was rolled back"),
                                         (False, "1", "the migration was rolled back; this "
                                                      "run had already applied 001-one.sql "
                                                      "(committed)")):
            with self.subTest(atomic=atomic):
                for name in os.listdir(self.tmp):
                    if name.startswith("app.db"):
                        os.remove(os.path.join(self.tmp, name))
                status, out, err = self.cli("--db", self.db, "up", *["--atomic"] * atomic,
                                            preexec_fn=small_files, env=NO_BYTECODE)
                self.assertEqual(status, 1, err)
                errors = [line for line in err.splitlines() if "error:" in line]
                self.assertEqual(len(errors), 1, err)
                if not atomic:  # an --atomic run's COMMIT is all of its migrations'
                    self.assertIn("002-big.sql", errors[0])
                self.assertIn(outcome, errors[0])
                self.assertNotIn("big", self.tables())
                self.assertEqual(self.connect().execute("PRAGMA integrity_check").fetchall(),
                                 [("ok",)])
                if version:
                    self.assertEqual(self.schema_version(), version)

    @unittest.skipIf(os.name != "posix", "RLIMIT_FSIZE")
    def test_a_failed_migration_under_journal_mode_off_that_damaged_the_database_says_so(self):
        # Under journal_mode OFF a statement that fails part way (a full disk)
        # cannot be undone: its pages are left half written and the b-tree is
        # damaged.  The error said only "may be partly changed".
        self.write_sql(1, "fill", "PRAGMA journal_mode = OFF;\n"
                       "CREATE TABLE big (x);\n"
                       "INSERT INTO big VALUES (randomblob(1000));\n"
                       + "INSERT INTO big SELECT randomblob(1000) FROM big;\n" * 9,
                       options="transaction:false")

        def small_files():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not a killed process
            resource.setrlimit(resource.RLIMIT_FSIZE, (200 << 10, 200 << 10))

        status, out, err = self.cli("--db", self.db, "up", preexec_fn=small_files, env=NO_BYTECODE)
        self.assertEqual(status, 1, err)
        try:
            check = self.connect().execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError:
            check = None  # damaged past reading
        if check == [("ok",)]:
            self.skipTest("this SQLite left the database whole under journal_mode OFF")
        # CPython's sqlite3 fails the statement, and the runner checks the file;
        # PyPy's meets the damage on the runner's next statement, SQLite's words.
        self.assertRegex(err, "the database is damaged|database disk image is malformed")
        self.assertNotIn("Traceback", err)

    def test_a_down_whose_record_cannot_be_deleted_says_it_stays_applied(self):
        # Non-transactional: its down ran, then deleting its record met the
        # file size limit.  It is still recorded as applied, and says so.
        self.write("001-one.sql", "-- migrate:up transaction:false\nCREATE TABLE one (x);\n"
                                  "-- migrate:down transaction:false\nSELECT 1;\n")
        self.assertEqual(self.cli("--db", self.db, "up")[0], 0)

        def tiny_files():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not a killed process
            resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))

        status, out, err = self.cli("--db", self.db, "down", "--to", "0", preexec_fn=tiny_files, env=NO_BYTECODE)
        self.assertEqual(status, 1, err)
        self.assertIn("it is still recorded as applied", err)
        self.assertEqual(self.schema_version(), "1")

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


class MigrationFunctions(RunnerTestCase):
    """up/down must be plain functions that do their work when called."""

    def test_async_or_generator_up_or_down_is_refused_before_anything_runs(self):
        self.write_sql(1, "one", "CREATE TABLE one (x);")
        bodies = {
            "async def up(db)": "async def up(db):\n    db.execute('CREATE TABLE t (x)')\n",
            "generator": "def up(db):\n    db.execute('CREATE TABLE t (x)')\n    yield\n",
            "async generator": "async def up(db):\n    db.execute('CREATE TABLE t (x)')\n"
                               "    yield\n",
            "async def down(db)": "def up(db):\n    db.execute('CREATE TABLE t (x)')\n\n\n"
                                  "async def down(db):\n    db.execute('DROP TABLE t')\n",
        }
        for label, body in bodies.items():
            with self.subTest(label):
                path = self.write("002-odd.py", body)
                with self.assertRaises(sqlmigrate.MigrationError) as caught:
                    sqlmigrate.migrate(self.db, self.dir)
                self.assertIn("002-odd.py", str(caught.exception))
                self.assertIn("plain function", str(caught.exception))
                self.assertFalse(os.path.exists(self.db))
                os.remove(path)

    def test_up_returning_a_coroutine_fails_and_is_rolled_back_without_a_warning(self):
        self.write("001-callable.py", '''
            class Up(object):
                def __call__(self, db):
                    db.execute("CREATE TABLE t (x)")
                    return self.later(db)

                async def later(self, db):
                    db.execute("CREATE TABLE never (x)")

            up = Up()
            ''')
        with warnings.catch_warnings(record=True) as caught_warnings:
            warnings.simplefilter("always")
            with self.assertRaises(sqlmigrate.MigrationError) as caught:
                sqlmigrate.migrate(self.db, self.dir)
            message = str(caught.exception)
            del caught  # its traceback holds the coroutine; let it be collected here
            gc.collect()
        self.assertIn("001-callable.py", message)
        self.assertIn("coroutine", message)
        self.assertIn("rolled back", message)
        self.assertEqual([str(w.message) for w in caught_warnings], [])
        self.assertEqual(self.migrator().current_version, 0)
        self.assertNotIn("t", self.tables())

    def test_up_returning_a_cursor_is_applied(self):
        self.write("001-lambda.py", "up = lambda db: db.execute('CREATE TABLE t (x)')\n")
        self.assertEqual(len(sqlmigrate.migrate(self.db, self.dir)), 1)
        self.assertIn("t", self.tables())

    def test_exit_inside_up_is_a_failure_and_rolled_back(self):
        self.write_sql(1, "one", "CREATE TABLE one (x);")
        self.write("002-exits.py", "import sys\n\n\ndef up(db):\n"
                   "    db.execute('CREATE TABLE t (x)')\n    sys.exit(0)\n")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(self.db, self.dir)
        message = str(caught.exception)
        self.assertIn("002-exits.py:6", message)
        self.assertIn("called exit", message)
        self.assertIn("sys.exit(0)", message)
        self.assertIn("rolled back", message)
        self.assertNotIn("t", self.tables())
        self.assertEqual(self.schema_version(), "1")

    def test_exit_at_the_top_level_of_a_migration_is_a_failure(self):
        self.write_sql(1, "one", "CREATE TABLE one (x);")
        self.write("002-exits.py", "import sys\nsys.exit(3)\n\n\ndef up(db):\n    pass\n")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(self.db, self.dir)
        self.assertIn("002-exits.py:2", str(caught.exception))
        self.assertIn("called exit", str(caught.exception))
        self.assertIn("sys.exit(3)", str(caught.exception))
        self.assertFalse(os.path.exists(self.db))

    def test_keyboard_interrupt_propagates_and_the_migration_is_rolled_back(self):
        self.write("001-interrupted.py", "def up(db):\n    db.execute('CREATE TABLE t (x)')\n"
                   "    raise KeyboardInterrupt\n")
        self.write("002-interrupted.py", "transaction = False\n\n\ndef up(db):\n"
                   "    db.execute('BEGIN')\n    db.execute('CREATE TABLE u (x)')\n"
                   "    raise KeyboardInterrupt\n")
        conn = self.connect()
        with self.assertRaises(KeyboardInterrupt):
            sqlmigrate.migrate(conn, self.dir)
        self.assertNotIn("t", self.tables())
        os.remove(os.path.join(self.dir, "001-interrupted.py"))
        with self.assertRaises(KeyboardInterrupt):
            sqlmigrate.migrate(conn, self.dir)
        self.assertFalse(conn.in_transaction)
        self.assertNotIn("u", self.tables())
        self.assertEqual(self.migrator().current_version, 0)


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

    def test_a_cursor_the_migration_left_unfetched_does_not_block_recording_it(self):
        # A statement with rows not fetched stays active, and COMMIT refuses
        # ("SQL statements in progress") while a writing one is.  CPython frees
        # a dropped cursor at once; PyPy (no reference counting) keeps it until
        # a garbage collection: kept alive here, it is the same on both.
        self.write("001-enable-wal.py", '''
            transaction = False
            KEPT = []

            def up(db):
                KEPT.append(db.execute("PRAGMA journal_mode=WAL"))
                KEPT.append(db.cursor().execute("PRAGMA journal_mode=WAL"))
            ''')
        self.assertEqual(len(sqlmigrate.migrate(self.db, self.dir)), 1)
        self.assertEqual(self.connect().execute("PRAGMA journal_mode").fetchone()[0], "wal")
        self.assertEqual(self.schema_version(), "1")

    def test_a_script_whose_statements_return_rows_runs_each_to_its_end(self):
        self.write("001-enable-wal.py", '''
            transaction = False
            KEPT = []

            def up(db):
                KEPT.append(db.executescript("PRAGMA journal_mode=WAL; PRAGMA journal_mode=WAL;"))
            ''')
        self.assertEqual(len(sqlmigrate.migrate(self.db, self.dir)), 1)
        self.assertEqual(self.schema_version(), "1")

    def test_failure_says_the_database_may_be_partly_changed(self):
        self.write_sql(1, "half", "CREATE TABLE half (x);\nSELECT * FROM nope;",
                       options="transaction:false")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(self.db, self.dir)
        self.assertIn("partly changed", str(caught.exception))
        self.assertEqual(self.migrator().current_version, 0)

    def test_migration_leaving_a_transaction_open_fails_and_keeps_nothing(self):
        self.write_sql(1, "one", "CREATE TABLE one (x);")
        self.write_sql(2, "open", "BEGIN;\nCREATE TABLE half (x);", options="transaction:false")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(self.db, self.dir)
        message = str(caught.exception)
        self.assertIn("002-open.sql", message)
        self.assertIn("left a transaction open", message)
        self.assertIn("not recorded", message)
        self.assertNotIn("half", self.tables())
        self.assertEqual(self.schema_version(), "1")

    def test_open_transaction_is_rolled_back_on_the_callers_connection(self):
        self.write("001-open.py", '''
            transaction = False

            def up(db):
                db.execute("BEGIN")
                db.execute("CREATE TABLE half (x)")
            ''')
        conn = self.connect()
        conn.execute("PRAGMA foreign_keys = ON")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(conn, self.dir)
        self.assertIn("left a transaction open", str(caught.exception))
        self.assertFalse(conn.in_transaction)
        self.assertEqual(conn.execute("PRAGMA foreign_keys").fetchone()[0], 1)
        self.assertNotIn("half", self.tables(conn))
        self.assertEqual(self.migrator().current_version, 0)

    def test_failing_migration_inside_its_own_transaction_is_rolled_back(self):
        self.write_sql(1, "open", "BEGIN;\nCREATE TABLE half (x);\nSELECT * FROM nope;",
                       options="transaction:false")
        conn = self.connect()
        conn.execute("PRAGMA foreign_keys = ON")
        with self.assertRaises(sqlmigrate.MigrationError):
            sqlmigrate.migrate(conn, self.dir)
        self.assertFalse(conn.in_transaction)
        self.assertEqual(conn.execute("PRAGMA foreign_keys").fetchone()[0], 1)
        self.assertNotIn("half", self.tables(conn))

    def test_foreign_keys_setting_of_the_callers_connection_is_restored(self):
        self.write_sql(1, "fk-on", "PRAGMA foreign_keys = ON;", options="transaction:false")
        self.write_sql(2, "fk-off", "PRAGMA foreign_keys = OFF;", options="transaction:false")
        for before in (0, 1):
            os.path.exists(self.db) and os.remove(self.db)
            conn = self.connect()
            conn.execute("PRAGMA foreign_keys = %d" % before)
            self.assertEqual(len(sqlmigrate.migrate(conn, self.dir, to=1 + before)), 1 + before)
            self.assertEqual(conn.execute("PRAGMA foreign_keys").fetchone()[0], before)
            conn.close()

    def test_databases_the_migration_attached_are_detached(self):
        other = os.path.join(self.tmp, "other.db")
        self.write_sql(1, "attach", "ATTACH DATABASE '%s' AS other;\n"
                       "CREATE TABLE other.copy (x);" % other.replace("'", "''"),
                       options="transaction:false")
        conn = self.connect()
        self.assertEqual(len(sqlmigrate.migrate(conn, self.dir)), 1)
        self.assertEqual([row[1] for row in conn.execute("PRAGMA database_list")], ["main"])
        self.assertEqual(self.tables(self.connect(other)), ["copy"])


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

    def test_violations_already_there_are_told_apart_from_the_migrations_own(self):
        conn = self.fk_connection()
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute("INSERT INTO child VALUES (12, 77)")  # an orphan from before
        conn.commit()
        conn.execute("PRAGMA foreign_keys = ON")
        self.write_sql(2, "harmless", "CREATE TABLE other (x);")
        for atomic in (False, True):
            with self.assertRaises(sqlmigrate.MigrationError) as caught:
                sqlmigrate.Migrator(conn, self.dir).up(atomic=atomic)
            self.assertEqual(caught.exception.kind, "foreign-keys")
            message = str(caught.exception)
            self.assertIn("child rowid 12", message)
            self.assertIn("before 002-harmless.sql ran", message)
            self.assertEqual(self.schema_version(), "1")
            self.assertNotIn("other", self.tables(conn))
        self.write_sql(2, "harmless", "CREATE TABLE other (x); INSERT INTO child VALUES (13, 66);")
        conn.execute("DELETE FROM child WHERE id = 12")
        conn.commit()
        with self.assertRaises(sqlmigrate.MigrationError) as caught:  # its own: no such words
            sqlmigrate.migrate(conn, self.dir)
        self.assertIn("child rowid 13", str(caught.exception))
        self.assertNotIn("before", str(caught.exception))

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

    def test_a_locked_database_on_a_callers_connection_is_named_plainly(self):
        self.three_migrations()
        holder = self.connect()
        holder.execute("BEGIN IMMEDIATE")
        self.addCleanup(holder.execute, "ROLLBACK")
        conn = sqlite3.connect(self.db, timeout=0.05)
        self.addCleanup(conn.close)
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.Migrator(conn, self.dir, busy_timeout=0.05).up()
        self.assertEqual(caught.exception.kind, "locked")
        self.assertNotIn("database the database", str(caught.exception))
        self.assertIn("the database is locked by another process", str(caught.exception))

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
        self.assertIsInstance(caught.exception, sqlmigrate.RequestError)  # exit 2 in a CLI
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


class ConnectionSettings(RunnerTestCase):
    """Connection-level pragmas a migration sets are not rolled back by SQLite
    and live as long as the connection: each is put back after the migration."""

    def test_a_migrations_pragmas_do_not_reach_the_next_migration(self):
        # v1's ignore_check_constraints would let v2 write a row its CHECK
        # forbids; its synchronous OFF would make v2's COMMIT skip fsync.
        self.write_sql(1, "settings", "CREATE TABLE t (x INTEGER CHECK (x > 0));\n"
                       "PRAGMA synchronous = OFF;\nPRAGMA ignore_check_constraints = ON;\n"
                       "PRAGMA recursive_triggers = ON;", options="transaction:false")
        self.write("002-seen.py", '''
            def up(db):
                seen = [db.execute("PRAGMA " + name).fetchone()[0] for name in
                        ("synchronous", "ignore_check_constraints", "recursive_triggers")]
                db.execute("CREATE TABLE seen (synchronous, ignore_check, recursive)")
                db.execute("INSERT INTO seen VALUES (?, ?, ?)", seen)
            ''')
        self.write_sql(3, "bad-row", "INSERT INTO t VALUES (-1);")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            self.migrator().up()
        self.assertEqual(caught.exception.version, 3)
        self.assertIsInstance(caught.exception.__cause__, sqlite3.IntegrityError)
        conn = self.connect()
        self.assertEqual(conn.execute("SELECT * FROM seen").fetchall(), [(2, 0, 0)])
        self.assertEqual(conn.execute("SELECT count(*) FROM t").fetchone()[0], 0)
        self.assertEqual(self.schema_version(), "2")

    def test_a_transactional_migrations_pragmas_do_not_reach_the_next_migration(self):
        self.write_sql(1, "settings", "CREATE TABLE t (x INTEGER CHECK (x > 0));\n"
                       "PRAGMA ignore_check_constraints = ON;")
        self.write_sql(2, "bad-row", "INSERT INTO t VALUES (-1);")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            self.migrator().up()
        self.assertEqual(caught.exception.version, 2)
        self.assertEqual(self.schema_version(), "1")

    def test_an_atomic_run_puts_each_migrations_pragmas_back_too(self):
        self.write_sql(1, "settings", "CREATE TABLE t (x INTEGER CHECK (x > 0));\n"
                       "PRAGMA ignore_check_constraints = ON;")
        self.write_sql(2, "bad-row", "INSERT INTO t VALUES (-1);")
        with self.assertRaises(sqlmigrate.MigrationError):
            self.migrator().up(atomic=True)
        self.assertEqual(self.tables(), [])

    def test_the_callers_connection_has_its_settings_back_after_migrate(self):
        self.write_sql(1, "settings", "CREATE TABLE t (x);\nPRAGMA synchronous = OFF;\n"
                       "PRAGMA cache_size = 7;\nPRAGMA busy_timeout = 0;\n"
                       "PRAGMA temp_store = MEMORY;\nPRAGMA automatic_index = OFF;\n"
                       "PRAGMA reverse_unordered_selects = ON;\nPRAGMA writable_schema = ON;",
                       options="transaction:false")
        self.write_sql(2, "flags", "CREATE TABLE u (x);\nPRAGMA ignore_check_constraints = ON;\n"
                       "PRAGMA recursive_triggers = ON;\nPRAGMA main.secure_delete = ON;")
        conn = sqlite3.connect(self.db, isolation_level=None, timeout=3.5)
        self.addCleanup(conn.close)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA secure_delete = OFF")
        names = ("synchronous", "cache_size", "busy_timeout", "temp_store", "automatic_index",
                 "reverse_unordered_selects", "writable_schema", "ignore_check_constraints",
                 "recursive_triggers", "secure_delete")
        before = [conn.execute("PRAGMA " + name).fetchall() for name in names]
        self.assertEqual(len(sqlmigrate.migrate(conn, self.dir)), 2)
        self.assertEqual([conn.execute("PRAGMA " + name).fetchall() for name in names], before)
        self.assertEqual(self.tables(conn), ["metadata", "metadata_migrations", "t", "u"])

    def test_a_pragma_the_callers_statement_cache_holds_is_still_seen_and_put_back(self):
        # The runner skips the put-back where its authorizer saw no PRAGMA
        # prepared: a statement sqlite3 already had prepared must be seen too.
        self.write("001-sync.py", """
            def up(db):
                db.execute("CREATE TABLE t (x)")
                db.execute("PRAGMA cache_size = 7")
            """)
        conn = sqlite3.connect(self.db, isolation_level=None)
        self.addCleanup(conn.close)
        conn.execute("PRAGMA cache_size = 7")  # now in the connection's statement cache
        conn.execute("PRAGMA cache_size = 9")
        self.assertEqual(len(sqlmigrate.migrate(conn, self.dir)), 1)
        self.assertEqual(conn.execute("PRAGMA cache_size").fetchone()[0], 9)

    def test_column_naming_pragmas_a_migration_sets_do_not_rename_the_callers_columns(self):
        # full_column_names/short_column_names change cursor.description's
        # names, which an application reading rows by name depends on.
        self.write_sql(1, "names", "CREATE TABLE t (x);\nPRAGMA full_column_names = ON;\n"
                       "PRAGMA short_column_names = OFF;")
        conn = sqlite3.connect(self.db, isolation_level=None)
        self.addCleanup(conn.close)
        self.assertEqual(len(sqlmigrate.migrate(conn, self.dir)), 1)
        self.assertEqual(conn.execute("SELECT t.x FROM t").description[0][0], "x")

    def test_a_max_page_count_a_migration_sets_does_not_fail_the_next_as_a_full_disk(self):
        self.write_sql(1, "cap", "CREATE TABLE t (x);\nPRAGMA max_page_count = 3;")
        self.write_sql(2, "more", "CREATE TABLE u (x);\nCREATE TABLE v (x);")
        self.assertEqual(len(self.migrator().up()), 2)
        self.assertEqual(self.schema_version(), "2")

    def test_the_callers_connection_gets_back_its_checkpoint_journal_and_locking_settings(self):
        # wal_autocheckpoint 0: the caller's WAL grows unchecked; locking_mode
        # EXCLUSIVE: the caller keeps the file locked against every process.
        self.write_sql(1, "settings", "CREATE TABLE t (x);\nPRAGMA wal_autocheckpoint = 0;\n"
                       "PRAGMA journal_size_limit = 17;\nPRAGMA cache_spill = 0;\n"
                       "PRAGMA main.max_page_count = 1000;")
        self.write_sql(2, "exclusive", "PRAGMA locking_mode = EXCLUSIVE;\nCREATE TABLE u (x);",
                       options="transaction:false")
        conn = sqlite3.connect(self.db, isolation_level=None, timeout=3.5)
        self.addCleanup(conn.close)
        names = ("wal_autocheckpoint", "journal_size_limit", "cache_spill", "max_page_count",
                 "locking_mode")
        before = [conn.execute("PRAGMA " + name).fetchall() for name in names]
        self.assertEqual(len(sqlmigrate.migrate(conn, self.dir)), 2)
        self.assertEqual([conn.execute("PRAGMA " + name).fetchall() for name in names], before)
        other = sqlite3.connect(self.db, timeout=0.2)
        self.addCleanup(other.close)
        self.assertEqual(other.execute("SELECT count(*) FROM u").fetchone()[0], 0)

    @unittest.skipIf(sqlite3.sqlite_version_info < (3, 8, 0), "PRAGMA query_only: SQLite 3.8.0+")
    def test_query_only_set_by_a_migration_neither_stops_its_record_nor_stays(self):
        # Left on, it would refuse the runner's own record of the migration
        # (applied, never recorded) and every later write of the caller's.
        for transaction in ("", "transaction:false"):
            with self.subTest(transaction=transaction or "transactional"):
                path = os.path.join(self.tmp, "q%d.db" % bool(transaction))
                directory = os.path.join(self.tmp, "q%d" % bool(transaction))
                os.mkdir(directory)
                self.write("001-q.sql", "-- migrate:up %s\nCREATE TABLE t (x);\n"
                           "PRAGMA query_only = ON;\n" % transaction, directory=directory)
                conn = sqlite3.connect(path, isolation_level=None)
                self.addCleanup(conn.close)
                self.assertEqual(len(sqlmigrate.migrate(conn, directory)), 1)
                self.assertEqual(conn.execute("PRAGMA query_only").fetchone()[0], 0)
                conn.execute("INSERT INTO t VALUES (1)")

    def test_a_failed_migrations_pragmas_are_put_back_on_the_callers_connection(self):
        for transaction in ("True", "False"):
            with self.subTest(transaction=transaction):
                path = os.path.join(self.tmp, "f%s.db" % transaction)
                directory = os.path.join(self.tmp, "f" + transaction)
                os.mkdir(directory)
                self.write("001-fails.py", '''
                    transaction = %s

                    def up(db):
                        if not transaction:
                            db.execute("PRAGMA synchronous = OFF")
                        db.execute("PRAGMA ignore_check_constraints = ON")
                        db.execute("PRAGMA cache_size = 11")
                        raise RuntimeError("this migration fails")
                    ''' % transaction, directory=directory)
                conn = sqlite3.connect(path, isolation_level=None)
                self.addCleanup(conn.close)
                names = ("synchronous", "ignore_check_constraints", "cache_size")
                before = [conn.execute("PRAGMA " + name).fetchall() for name in names]
                with self.assertRaises(sqlmigrate.MigrationError):
                    sqlmigrate.migrate(conn, directory)
                self.assertEqual([conn.execute("PRAGMA " + name).fetchall() for name in names],
                                 before)

    def test_temp_store_a_transactional_migration_set_is_put_back_after_its_commit(self):
        # SQLite refuses to change temp_store inside a transaction that has
        # used temporary storage: it is put back once the transaction ends.
        self.write_sql(1, "temp", "PRAGMA temp_store = MEMORY;\nCREATE TEMP TABLE scratch (x);\n"
                       "INSERT INTO scratch VALUES (1);\nCREATE TABLE t AS SELECT x FROM scratch;")
        self.write("002-seen.py", '''
            def up(db):
                seen = db.execute("PRAGMA temp_store").fetchone()[0]
                db.execute("CREATE TABLE seen AS SELECT ? AS temp_store", (seen,))
            ''')
        conn = sqlite3.connect(self.db, isolation_level=None)
        self.addCleanup(conn.close)
        self.assertEqual(len(sqlmigrate.migrate(conn, self.dir)), 2)
        self.assertEqual(conn.execute("PRAGMA temp_store").fetchone()[0], 0)
        self.assertEqual(conn.execute("SELECT temp_store, (SELECT x FROM t) FROM seen").fetchall(),
                         [(0, 1)])

    def test_temp_store_is_put_back_after_a_dry_run_or_an_atomic_run_ends(self):
        # Inside the run's one transaction SQLite refuses to set temp_store
        # back (temporary storage used): it is put back once that ends, when
        # the run succeeded, failed or was a dry run.
        self.write_sql(1, "temp", "PRAGMA temp_store = MEMORY;\nCREATE TEMP TABLE scratch (x);\n"
                       "CREATE TABLE t (x);")
        for options, fails in ((dict(dry_run=True), False), (dict(dry_run=True, atomic=True),
                                                               False),
                               (dict(atomic=True), False), (dict(atomic=True), True)):
            with self.subTest(options=options, fails=fails):
                fail = self.write("002-fails.py", "def up(db):\n    raise RuntimeError('no')\n") \
                    if fails else None
                path = os.path.join(self.tmp, "r%d.db" % len(os.listdir(self.tmp)))
                conn = sqlite3.connect(path, isolation_level=None)
                self.addCleanup(conn.close)
                try:
                    sqlmigrate.Migrator(conn, self.dir).up(**options)
                except sqlmigrate.MigrationError:
                    self.assertTrue(fails)
                finally:
                    if fail:
                        os.remove(fail)
                self.assertEqual(conn.execute("PRAGMA temp_store").fetchone()[0], 0)

    def test_a_failed_migrations_exclusive_locking_mode_does_not_keep_other_processes_out(self):
        # Set back to NORMAL, SQLite releases EXCLUSIVE's lock only at the
        # file's next use: after a failure there is no record to write.
        self.write("001-fails.py", '''
            def up(db):
                db.execute("PRAGMA locking_mode = EXCLUSIVE")
                raise RuntimeError("this migration fails")
            ''')
        conn = sqlite3.connect(self.db, isolation_level=None)
        self.addCleanup(conn.close)
        with self.assertRaises(sqlmigrate.MigrationError):
            sqlmigrate.migrate(conn, self.dir)
        other = subprocess.run([sys.executable, "-c", "import sqlite3, sys; sqlite3.connect("
                                "sys.argv[1], timeout=0, isolation_level=None).execute("
                                "'CREATE TABLE other (x)')", self.db], stderr=subprocess.PIPE,
                               universal_newlines=True)
        self.assertEqual((other.returncode, other.stderr), (0, ""))
        self.assertEqual(conn.execute("PRAGMA locking_mode").fetchone()[0], "normal")

    def test_exclusive_locking_mode_set_before_entering_wal_does_not_keep_other_processes_out(self):
        # A connection that enters WAL mode in EXCLUSIVE locking mode keeps
        # the wal-index in its own memory and ignores locking_mode = NORMAL
        # until it leaves WAL: set back only by name, the caller's connection
        # kept the file locked against every other process after migrate().
        self.write_sql(1, "wal", "PRAGMA locking_mode = EXCLUSIVE;\nPRAGMA journal_mode = WAL;\n"
                       "CREATE TABLE t (x);", options="transaction:false")
        conn = sqlite3.connect(self.db, isolation_level=None)
        self.addCleanup(conn.close)
        self.assertEqual(len(sqlmigrate.migrate(conn, self.dir)), 1)
        self.assertEqual([conn.execute("PRAGMA " + name).fetchone()[0] for name in (
            "main.locking_mode", "main.journal_mode")], ["normal", "wal"])
        other = subprocess.run([sys.executable, "-c", "import sqlite3, sys; sqlite3.connect("
                                "sys.argv[1], timeout=0, isolation_level=None).execute("
                                "'INSERT INTO t VALUES (1)')", self.db], stderr=subprocess.PIPE,
                               universal_newlines=True)
        self.assertEqual((other.returncode, other.stderr), (0, ""))
        self.assertEqual(conn.execute("SELECT x FROM t").fetchall(), [(1,)])

    def test_a_migrations_database_settings_stay(self):
        # The file's own settings are the migration's to change.
        self.write_sql(1, "file", "PRAGMA journal_mode = WAL;\nPRAGMA user_version = 7;\n"
                       "PRAGMA application_id = 1234;", options="transaction:false")
        conn = sqlite3.connect(self.db, isolation_level=None)
        self.addCleanup(conn.close)
        self.assertEqual(len(sqlmigrate.migrate(conn, self.dir)), 1)
        self.assertEqual([conn.execute("PRAGMA " + name).fetchone()[0] for name in (
            "journal_mode", "user_version", "application_id")], ["wal", 7, 1234])

    def test_case_sensitive_like_set_by_a_migration_does_not_stay(self):
        # Write-only: the runner reads it as what 'a' LIKE 'A' answers.
        self.write_sql(1, "like", "CREATE TABLE t (x);\nPRAGMA case_sensitive_like = ON;",
                       options="transaction:false")
        self.write_sql(2, "like-too", "CREATE TABLE u (x);\nPRAGMA case_sensitive_like = ON;")
        conn = sqlite3.connect(self.db, isolation_level=None)
        self.addCleanup(conn.close)
        self.assertEqual(len(sqlmigrate.migrate(conn, self.dir)), 2)
        self.assertEqual(conn.execute("SELECT 'a' LIKE 'A'").fetchone()[0], 1)


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

    def test_dry_run_leaves_a_crashed_writers_wal_and_the_file_as_they_were(self):
        # The dry run's read-write connection, closing last, would fold the
        # WAL into the file (a checkpoint) and delete it.
        self.three_migrations()
        self.migrator().up(to=1)
        code = ("import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
                "c.execute('PRAGMA journal_mode = WAL').fetchall(); "
                "c.execute('INSERT INTO users (name) VALUES (1)'); os._exit(0)")
        self.assertEqual(subprocess.run([sys.executable, "-c", code, self.db]).returncode, 0)
        before = [file_sha256(self.db + suffix) for suffix in ("", "-wal")]
        for dry_run in (lambda m: m.up(dry_run=True), lambda m: m.down(dry_run=True)):
            dry_run(self.migrator())
            self.assertEqual([file_sha256(self.db + suffix) for suffix in ("", "-wal")], before)

    def test_dry_run_on_a_wal_database_leaves_no_wal_or_shm_file_behind(self):
        self.three_migrations()
        self.migrator().up(to=1)
        conn = self.connect()
        conn.execute("PRAGMA journal_mode = WAL")
        conn.close()  # the last connection: the -wal and -shm files go
        before = (sorted(os.listdir(self.tmp)), file_sha256(self.db))
        for dry_run in (lambda m: m.up(dry_run=True), lambda m: m.down(dry_run=True)):
            dry_run(self.migrator())
            self.assertEqual((sorted(os.listdir(self.tmp)), file_sha256(self.db)), before)

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
        # fetched: PyPy keeps an unfetched statement active (no reference
        # counting), and an active PRAGMA journal_mode keeps COMMIT from working
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
        conn.execute("PRAGMA wal_autocheckpoint=0").fetchall()
        conn.execute("INSERT INTO users (name) VALUES ('only in the wal')")
        dest = os.path.join(self.tmp, "copy.db")
        open(dest, "wb").close()  # backup() makes the file, with the database's permissions
        sqlmigrate._copy_under_write_lock(conn, dest)
        self.check_copy(dest, "3")
        copy = sqlite3.connect(dest)
        self.addCleanup(copy.close)
        self.assertEqual(copy.execute("SELECT name FROM users").fetchall(), [("only in the wal",)])
        self.assertFalse(os.path.exists(dest + "-wal"))


class Progress(RunnerTestCase):
    def test_events_around_each_migration_and_copy_progress_through_db(self):
        self.write("001-copy.py", '''
            def up(db):
                db.execute("CREATE TABLE t (x)")
                db._copy_progress("t", 5, 10)
                db.cursor()._copy_progress("t", 10, 10)
            ''')
        seen = []
        m = self.migrator(progress=lambda *args, **kw: seen.append((args, kw)))
        m.up()
        f = m.migrations[0]
        self.assertEqual([(a[0], a[2], kw) for a, kw in seen],
                         [("start", "up", {}),
                          ("copy", "up", {"table": "t", "copied": 5, "total": 10}),
                          ("copy", "up", {"table": "t", "copied": 10, "total": 10}),
                          ("end", "up", {}), ("done", "up", {})])
        self.assertTrue(all(a[1] is f or a[1].migration is f for a, _ in seen))

    def test_a_progress_callback_is_optional_for_copy_progress(self):
        self.write("001-copy.py", '''
            def up(db):
                db._copy_progress("t", 5, 10)
            ''')
        self.assertEqual(len(self.migrator().up()), 1)


class ResultsAndErrorFields(RunnerTestCase):
    """Runs return result records and leave the Migration objects alone;
    errors carry what they are about as fields."""

    def test_up_and_down_return_result_records_and_do_not_change_the_migrations(self):
        self.three_migrations()
        m = self.migrator()
        before = [dict(vars(f)) for f in m.migrations]
        dry = m.up(dry_run=True)
        self.assertEqual([(r.version, r.direction) for r in dry], [(1, "up"), (2, "up"), (3, "up")])
        self.assertIn("CREATE TABLE users", " ".join(dry[0].executed_sql))
        applied = m.up()
        self.assertEqual([(r.version, r.name, r.filename, r.kind) for r in applied],
                         [(f.version, f.name, f.filename, f.kind) for f in m.migrations])
        self.assertTrue(all(r.duration_ms >= 0 and r.executed_sql is None for r in applied))
        self.assertIs(applied[0].migration, m.migrations[0])
        rolled = m.down(steps=1)
        self.assertEqual([(r.version, r.direction) for r in rolled], [(3, "down")])
        for f in m.migrations:
            self.assertFalse(hasattr(f, "duration_ms") or hasattr(f, "executed_sql"), f)
        # Loading fills the private caches; nothing a run measured is kept.
        self.assertEqual([sorted(k for k in b if not k.startswith("_")) for b in before],
                         [sorted(k for k in vars(f) if not k.startswith("_"))
                          for f in m.migrations])

    def test_a_failed_migration_error_names_file_version_direction_and_statement(self):
        self.write_sql(1, "one", "CREATE TABLE one (x);\nINSERT INTO nowhere VALUES (1);")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(self.db, self.dir)
        e = caught.exception
        self.assertEqual((e.kind, e.version, e.direction, e.path),
                         ("migration-failed", 1, "up", os.path.join(self.dir, "001-one.sql")))
        self.assertIn("INSERT INTO nowhere", e.statement)
        self.assertTrue(e.rolled_back)
        self.assertEqual(str(e).count("rolled back"), 1, str(e))

    def test_bad_names_are_a_list_of_problems_that_verify_returns_as_is(self):
        self.write("1-one.sql", "SELECT 1;")
        self.write("002-Two.sql", "SELECT 1;")
        with self.assertRaises(sqlmigrate.RequestError) as caught:
            self.migrator().migrations
        self.assertEqual(caught.exception.kind, "bad-name")
        self.assertEqual(len(caught.exception.problems), 2)
        self.assertEqual(self.migrator().verify(), list(caught.exception.problems))

    def test_drift_errors_have_a_kind_and_list_their_problems(self):
        self.write_sql(1, "one", "CREATE TABLE one (x);")
        self.write_sql(3, "three", "CREATE TABLE three (x);")
        sqlmigrate.migrate(self.db, self.dir)
        self.write_sql(2, "two", "CREATE TABLE two (x);")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(self.db, self.dir)
        self.assertEqual(caught.exception.kind, "out-of-order")
        self.assertEqual(len(caught.exception.problems), 1)
        self.assertIn("002-two.sql", caught.exception.problems[0])
        self.assertFalse(self.migrator().status()["clean"])

    def test_database_errors_are_classified_by_kind(self):
        with open(self.db, "wb") as f:
            f.write(b"not a database at all\n" * 200)
        self.write_sql(1, "one", "CREATE TABLE one (x);")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(self.db, self.dir)
        self.assertEqual((caught.exception.kind, caught.exception.database),
                         ("not-a-database", self.db))
        self.assertIn("not an SQLite database", str(caught.exception))

    def test_status_says_whether_the_database_is_clean(self):
        self.three_migrations()
        self.assertFalse(self.migrator().status()["clean"])
        sqlmigrate.migrate(self.db, self.dir)
        self.assertTrue(self.migrator().status()["clean"])

    def test_down_validates_its_steps(self):
        self.three_migrations()
        sqlmigrate.migrate(self.db, self.dir)
        for bad in ({"steps": 0}, {"steps": -1}, {"to": -1}):
            with self.assertRaises(sqlmigrate.RequestError):
                self.migrator().down(**bad)
        self.assertEqual([r.version for r in self.migrator().down(steps=None)], [3])


class HostileMigrations(RunnerTestCase):
    """What a migration can do to the runner's connection must not make the
    history, schema_version and schema disagree, or an applied run a lie."""

    def history(self):
        conn = self.connect()
        return ([row[0] for row in conn.execute(
            "SELECT version FROM metadata_migrations ORDER BY version")],
            conn.execute("SELECT value FROM metadata WHERE key = 'schema_version'").fetchall())

    def test_a_temporary_table_named_like_a_tracking_table_fails_the_migration(self):
        for name, columns in (("metadata", "key TEXT PRIMARY KEY, value TEXT"), (
                "metadata_migrations", "version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                "checksum TEXT, applied_at TEXT, duration_ms REAL")):
            with self.subTest(name=name):
                for f in os.listdir(self.dir):
                    os.remove(os.path.join(self.dir, f))
                if os.path.exists(self.db):
                    os.remove(self.db)
                self.write_sql(1, "one", "CREATE TABLE one (x);")
                self.write("002-shadow.py", '''
                    def up(db):
                        db.execute("CREATE TABLE two (x)")
                        db.execute("CREATE TEMP TABLE %s (%s)")
                    ''' % (name, columns))
                self.write_sql(3, "three", "CREATE TABLE three (x);")
                with self.assertRaises(sqlmigrate.MigrationError) as caught:
                    sqlmigrate.migrate(self.db, self.dir)
                self.assertEqual(caught.exception.version, 2)
                self.assertIn("TEMP", str(caught.exception).upper())
                self.assertEqual(self.history(), ([1], [("1",)]))
                self.assertEqual(self.tables(), ["metadata", "metadata_migrations", "one"])

    def test_a_sql_function_the_caller_redefines_does_not_change_what_is_recorded(self):
        self.write_sql(1, "one", "CREATE TABLE one (x);")
        self.write_sql(2, "two", "CREATE TABLE two (x);")
        conn = sqlite3.connect(self.db)
        self.addCleanup(conn.close)
        # A caller's own connection: the runner's history reads use no SQL
        # function (a migration may not redefine one: see the test below).
        conn.create_function("max", 1, lambda value: 0)
        conn.create_function("coalesce", 2, lambda a, b: 0)
        self.assertEqual(len(sqlmigrate.migrate(conn, self.dir, to=1)), 1)
        self.assertEqual(len(sqlmigrate.migrate(conn, self.dir)), 1)
        self.assertEqual(self.history(), ([1, 2], [("2",)]))
        self.assertEqual(self.tables(), ["metadata", "metadata_migrations", "one", "two"])

    # (what the migration registers, the name the refusal gives); each then
    # writes rows whose index entries or UNIQUE check the replacement decides.
    DETERMINISTIC = ", deterministic=True" if sys.version_info >= (3, 8) else ""
    REPLACEMENTS = [
        ('db.create_function("lower", 1, lambda s: s%s)' % DETERMINISTIC, "lower"),
        ('db.create_function("LOWER", -1, lambda *s: s[0]%s)' % DETERMINISTIC, "LOWER"),
        ('db.create_function("max", 2, lambda a, b: a)', "max"),
        ('db.create_collation("nocase", lambda a, b: (a > b) - (a < b))', "nocase"),
        ('db.create_collation("BINARY", lambda a, b: 0)', "BINARY"),
        ("""
                class First:
                    def __init__(self):
                        self.value = None
                    def step(self, value):
                        self.value = value if self.value is None else self.value
                    def finalize(self):
                        return self.value
                db.create_aggregate("max", 1, First)""", "max"),
    ] + [("db.create_window_function('sum', 1, object)", "sum")] * (
        hasattr(sqlite3.Connection, "create_window_function") and  # Python 3.11+
        sqlmigrate._SQLITE_VERSION >= (3, 25, 0))

    def test_a_migration_that_replaces_a_function_or_collation_sqlite_has_is_refused(self):
        # Replaced on the runner's connection, lower() or NOCASE would build
        # index entries and UNIQUE checks that every other connection
        # computes differently: wrong query results, integrity_check errors.
        expression_index = sqlmigrate._SQLITE_VERSION >= (3, 9, 0)
        self.write_sql(1, "users", "CREATE TABLE users (email TEXT, name TEXT COLLATE NOCASE "
                       "UNIQUE);%s\nINSERT INTO users VALUES ('Bob@X.org', 'bob');" % (
                           "\nCREATE INDEX users_email ON users (lower(email));"
                           * expression_index))
        sqlmigrate.migrate(self.db, self.dir)
        for n, (registration, name) in enumerate(self.REPLACEMENTS):
            with self.subTest(registration=registration.strip().splitlines()[-1].strip()):
                filename = "%03d-replace.py" % (n + 2)
                path = self.write(filename, '''
                    def up(db):
                        %s
                        db.execute("INSERT INTO users VALUES ('Ann@X.org', 'ANN')")
                        db.execute("INSERT INTO users VALUES ('ann2@X.org', 'ann')")
                    ''' % registration.strip().replace("\n", "\n" + " " * 24).replace(
                        " " * 40, " " * 24))
                with self.assertRaises(sqlmigrate.MigrationError) as caught:
                    sqlmigrate.migrate(self.db, self.dir)
                os.remove(path)
                error = caught.exception
                self.assertEqual((error.kind, error.version), ("migration-failed", n + 2))
                self.assertIsInstance(error.__cause__, sqlmigrate.MigrationError)
                self.assertIn(name, str(error))
                self.assertEqual(self.history(), ([1], [("1",)]))
                conn = self.connect()
                self.assertEqual(conn.execute("PRAGMA integrity_check").fetchall(), [("ok",)])
                self.assertEqual(conn.execute("SELECT email FROM users").fetchall(),
                                 [("Bob@X.org",)])

    def test_a_cursors_connection_is_the_migrations_db_with_its_refusals(self):
        # Code written for sqlite3 reaches the connection as cursor.connection:
        # the raw one would register lower() without the refusal.
        self.write_sql(1, "users", "CREATE TABLE users (email TEXT UNIQUE);")
        sqlmigrate.migrate(self.db, self.dir)
        self.write("002-replace.py", '''
            def up(db):
                db.cursor().connection.create_function("lower", 1, lambda s: s)
                db.execute("INSERT INTO users VALUES ('Ann@X.org')")
            ''')
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(self.db, self.dir)
        self.assertIsInstance(caught.exception.__cause__, sqlmigrate.MigrationError)
        self.assertIn("lower", str(caught.exception))
        self.assertEqual(self.history(), ([1], [("1",)]))

    def test_a_dry_runs_statements_leave_out_the_runners_own_function_lookup(self):
        self.write("001-slug.py", '''
            def up(db):
                db.create_function("slug", 1, lambda s: s.lower())
                db.create_collation("backwards", lambda a, b: (a < b) - (a > b))
                db.execute("CREATE TABLE t (x)")
            ''')
        results = sqlmigrate.Migrator(self.db, self.dir).up(dry_run=True)
        self.assertEqual(results[0].executed_sql, ["CREATE TABLE t (x)"])

    def test_a_migration_may_register_new_names_again_in_a_later_migration(self):
        # Each migration that uses a function registers it (a later run is a
        # new process, where an earlier migration's registration is gone);
        # in one run, the second registration must not count as a replacement.
        for n in (1, 2):
            self.write("%03d-slug.py" % n, '''
                def up(db):
                    db.create_function("slug", 1, lambda s: s.lower().replace(" ", "-"))
                    db.create_collation("backwards", lambda a, b: (a < b) - (a > b))
                    db.execute("CREATE TABLE t%d (x)")
                    db.execute("INSERT INTO t%d SELECT slug('A B')")
                    assert db.execute("SELECT x FROM t%d ORDER BY x COLLATE backwards"
                                      ).fetchall() == [("a-b",)]
                ''' % (n, n, n))
        self.assertEqual([m.version for m in sqlmigrate.migrate(self.db, self.dir)], [1, 2])
        self.assertEqual(self.history(), ([1, 2], [("2",)]))

    def test_closing_db_in_a_migration_is_refused_and_names_the_migration(self):
        for transactional in (True, False):
            with self.subTest(transactional=transactional):
                for f in os.listdir(self.dir):
                    os.remove(os.path.join(self.dir, f))
                if os.path.exists(self.db):
                    os.remove(self.db)
                self.write_sql(1, "one", "CREATE TABLE one (x);")
                self.write("002-close.py", '''
                    transaction = %r

                    def up(db):
                        db.execute("CREATE TABLE two (x)")
                        db.cursor().close()  # a cursor's close() is fine
                        db.close()
                    ''' % transactional)
                with self.assertRaises(sqlmigrate.MigrationError) as caught:
                    sqlmigrate.migrate(self.db, self.dir)
                self.assertEqual(caught.exception.version, 2)
                self.assertIn("close", str(caught.exception))
                if not transactional:
                    self.assertIn("partly changed", str(caught.exception))
                self.assertEqual(self.history(), ([1], [("1",)]))
                self.assertEqual(self.tables(), ["metadata", "metadata_migrations", "one"] +
                                 ([] if transactional else ["two"]))

    def write_rows_then_failing_update(self):
        # 32768 rows (no WITH RECURSIVE: SQLite 3.7.17 lacks it), and a later
        # migration whose UPDATE spills pages from a 5-page cache, then fails.
        self.write_sql(1, "rows", "CREATE TABLE t (x INTEGER);\nINSERT INTO t VALUES (1);\n" +
                       "INSERT INTO t SELECT x FROM t;\n" * 15)
        self.write("003-fails.py", '''
            def up(db):
                db.execute("PRAGMA cache_size = 5")
                db.execute("UPDATE t SET x = -x")
                raise RuntimeError("fails after the update")
            ''')

    def test_journal_mode_off_set_by_a_migration_does_not_stop_a_later_rollback(self):
        # With journal_mode = OFF SQLite cannot undo a transaction whose pages
        # it already wrote (a small cache spills them): the failed migration's
        # UPDATE would stay, half done, while the error says "rolled back".
        self.write_rows_then_failing_update()
        self.write("002-no-journal.py", '''
            transaction = False

            def up(db):
                db.execute("PRAGMA journal_mode = OFF").fetchall()
            ''')
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(self.db, self.dir)
        self.assertEqual(caught.exception.version, 3)
        self.assertEqual(self.connect().execute(
            "SELECT count(*) FROM t WHERE x < 0").fetchone()[0], 0)
        self.assertEqual(self.history(), ([1, 2], [("2",)]))

    def test_journal_mode_off_or_memory_in_a_transactional_migration_is_refused(self):
        # Inside the transaction the change is honoured before its first
        # write and cannot be undone after it: the migration's own rollback
        # (or a later one's) would leave spilled pages half written.
        for mode, statement in (("OFF", "PRAGMA journal_mode = OFF"),
                                ("memory", "PRAGMA main.journal_mode = 'memory'")):
            with self.subTest(mode=mode):
                for name in os.listdir(self.dir):
                    os.remove(os.path.join(self.dir, name))
                if os.path.exists(self.db):
                    os.remove(self.db)
                self.write_rows_then_failing_update()
                self.write("002-no-journal.py", '''
                    def up(db):
                        db.execute("CREATE TABLE u (y)")
                        db.execute(%r).fetchall()
                    ''' % statement)
                with self.assertRaises(sqlmigrate.MigrationError) as caught:
                    sqlmigrate.migrate(self.db, self.dir)
                self.assertEqual(caught.exception.version, 2)
                self.assertIn("journal_mode = %s is not allowed" % mode, str(caught.exception))
                self.assertEqual(self.history(), ([1], [("1",)]))
                self.assertEqual(self.connect().execute(
                    "PRAGMA journal_mode").fetchone()[0], "delete")

    def test_a_statement_after_sqlite_rolled_the_migration_back_is_not_run(self):
        # RAISE(ROLLBACK) (like a full disk) ends the transaction in SQLite
        # itself; a migration that catches the error and goes on would run
        # its next statements in autocommit mode, committed but unrecorded.
        self.write_sql(1, "guarded", "CREATE TABLE t (x);\nCREATE TRIGGER no_rows BEFORE INSERT "
                       "ON t BEGIN SELECT RAISE(ROLLBACK, 'no rows'); END;")
        self.write("002-catches.py", '''
            def up(db):
                db.execute("CREATE TABLE one (x)")
                try:
                    db.execute("INSERT INTO t VALUES (1)")
                except Exception:
                    pass
                db.execute("CREATE TABLE two (x)")
            ''')
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(self.db, self.dir)
        self.assertEqual(caught.exception.version, 2)
        self.assertEqual(caught.exception.statement, "CREATE TABLE two (x)")
        self.assertIn("rolled back", str(caught.exception))
        self.assertNotIn("partly changed", str(caught.exception))
        self.assertEqual(self.history(), ([1], [("1",)]))
        self.assertEqual(self.tables(), ["metadata", "metadata_migrations", "t"])
