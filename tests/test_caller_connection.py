"""A caller's sqlite3.Connection with its own text_factory / row_factory:
every API reads what it needs as text, whatever the caller set, and leaves
the caller's settings as they were."""

import json
import os
import sqlite3
import unittest

from tests.support import TempDirTestCase, sqlmigrate


def _dict_row(cursor, row):
    return dict((column[0], value) for column, value in zip(cursor.description, row))


# (label, text_factory, row_factory); None keeps the sqlite3 default.
SETTINGS = [
    ("text_factory=bytes", bytes, None),
    ("row_factory=sqlite3.Row", None, sqlite3.Row),
    ("row_factory=dict", None, _dict_row),
    ("text_factory=bytes, row_factory=sqlite3.Row", bytes, sqlite3.Row),
    # A factory that decodes wrongly: non-ASCII text read through it would
    # come back mangled (and, once written back, corrupted).
    ("text_factory=latin-1", lambda data: data.decode("latin-1"), None),
]


class CallerFactoriesTests(TempDirTestCase):

    def on_each_caller_connection(self, check):
        """check(label, conn) per setting, each on its own fresh database file;
        then the caller's factories must be as they were."""
        for n, (label, text_factory, row_factory) in enumerate(SETTINGS):
            path = os.path.join(self.tmp, "caller%d.db" % n)
            conn = sqlite3.connect(path, isolation_level=None)
            self.addCleanup(conn.close)
            if text_factory is not None:
                conn.text_factory = text_factory
            if row_factory is not None:
                conn.row_factory = row_factory
            expected = conn.text_factory, conn.row_factory
            with self.subTest(label):
                check(label, conn)
                self.assertIs(conn.text_factory, expected[0], label)
                self.assertIs(conn.row_factory, expected[1], label)

    def plain(self, conn):
        """A default connection to the caller's database file, for checking."""
        cursor = conn.cursor()
        cursor.row_factory = None
        path = cursor.execute("PRAGMA database_list").fetchone()[2]
        plain = sqlite3.connect(path.decode() if isinstance(path, bytes) else path)
        self.addCleanup(plain.close)
        return plain

    def test_runner_sees_no_drift_runs_nothing_twice_and_backs_up(self):
        self.write_sql(1, "add-cafe", "CREATE TABLE caf\u00e9 (id INTEGER PRIMARY KEY, "
                       "name TEXT DEFAULT 'cr\u00e8me');", "DROP TABLE caf\u00e9;")
        self.write_sql(2, "more", "CREATE TABLE t2 (id INTEGER PRIMARY KEY);",
                       "DROP TABLE t2;")
        def check(label, conn):
            migrator = sqlmigrate.Migrator(conn, self.dir)
            self.assertEqual([m.version for m in migrator.up()], [1, 2])
            self.assertEqual(migrator.current_version, 2)
            self.assertEqual(migrator.pending(), [])
            status = migrator.status()
            self.assertEqual([m["state"] for m in status["migrations"]],
                             ["applied", "applied"], label)
            self.assertEqual(status["current_version"], 2)
            self.assertEqual(migrator.verify(), [], label)
            self.assertEqual(migrator.up(strict=True), [], label)
            self.assertEqual([m.version for m in migrator.down()], [2])
            self.assertEqual(migrator.current_version, 1)
            self.assertEqual([m.version for m in migrator.up(backup=True)], [2])
            copy = sqlmigrate.backup(conn, os.path.join(self.tmp, label + ".copy"))
            self.assertTrue(os.path.exists(copy))
        self.on_each_caller_connection(check)

    def test_reconcile_adds_then_finds_nothing_to_add(self):
        def check(label, conn):
            conn.executescript("CREATE TABLE caf\u00e9 (id INTEGER PRIMARY KEY, "
                               "\u00e9tat TEXT DEFAULT 'pr\u00eat');"
                               "CREATE INDEX idx_\u00e9tat ON caf\u00e9(\u00e9tat);")
            declared = {"caf\u00e9": {"\u00e9tat": "TEXT",
                                       "note": "TEXT DEFAULT 'd\u00e9j\u00e0'"}}
            indexes = {"idx_\u00e9tat": "caf\u00e9(\u00e9tat)",
                       "idx_note": "caf\u00e9(note)"}
            self.assertEqual(len(sqlmigrate.reconcile(conn, declared, indexes)), 2, label)
            self.assertEqual(sqlmigrate.reconcile(conn, declared, indexes), [], label)
        self.on_each_caller_connection(check)

    def test_schema_report_matches_a_plain_connection(self):
        def check(label, conn):
            conn.executescript("CREATE TABLE caf\u00e9 (id INTEGER PRIMARY KEY, "
                               "\u00e9tat TEXT NOT NULL DEFAULT 'pr\u00eat' UNIQUE);"
                               "CREATE INDEX idx_\u00e9tat ON caf\u00e9(\u00e9tat, id);")
            plain = sqlite3.connect(":memory:")
            self.addCleanup(plain.close)
            plain.executescript("CREATE TABLE caf\u00e9 (id INTEGER PRIMARY KEY, "
                                "\u00e9tat TEXT NOT NULL DEFAULT 'pr\u00eat' UNIQUE);"
                                "CREATE INDEX idx_\u00e9tat ON caf\u00e9(\u00e9tat, id);")
            self.assertEqual(sqlmigrate.schema_report(conn), sqlmigrate.schema_report(plain),
                             label)
        self.on_each_caller_connection(check)

    def test_merge_json_defaults_keeps_non_ascii_text(self):
        def check(label, conn):
            conn.executescript("CREATE TABLE s (id INTEGER PRIMARY KEY, data TEXT);")
            conn.execute("INSERT INTO s (data) VALUES (?)", ('{"nom": "caf\u00e9"}',))
            conn.execute("INSERT INTO s (data) VALUES (?)", ('{"nom": "x", "a": 0}',))
            self.assertEqual(sqlmigrate.merge_json_defaults(conn, "s", "data", {"a": 1}), 1,
                             label)
            self.assertEqual([json.loads(v) for (v,) in self.plain(conn).execute(
                "SELECT data FROM s ORDER BY id")],
                [{"nom": "caf\u00e9", "a": 1}, {"nom": "x", "a": 0}], label)
        self.on_each_caller_connection(check)

    def test_rebuild_and_drop_column(self):
        def check(label, conn):
            conn.executescript("CREATE TABLE caf\u00e9 (id INTEGER PRIMARY KEY, "
                               "\u00e9tat TEXT DEFAULT 'pr\u00eat', gone TEXT, old TEXT);"
                               "CREATE INDEX idx_\u00e9tat ON caf\u00e9(\u00e9tat);"
                               "INSERT INTO caf\u00e9 VALUES (1, 'cr\u00e8me', 'g', 'o');")
            sqlmigrate.drop_column(conn, "caf\u00e9", "gone")
            sqlmigrate.rebuild_table(conn, "caf\u00e9", rename={"old": "new"})
            plain = self.plain(conn)
            self.assertEqual(plain.execute("SELECT * FROM caf\u00e9").fetchall(),
                             [(1, "cr\u00e8me", "o")], label)
            self.assertEqual([r[1] for r in plain.execute("PRAGMA table_info(caf\u00e9)")],
                             ["id", "\u00e9tat", "new"], label)
            self.assertEqual(plain.execute("SELECT name FROM sqlite_master WHERE type = "
                                           "'index'").fetchall(), [("idx_\u00e9tat",)], label)
        self.on_each_caller_connection(check)


if __name__ == "__main__":
    unittest.main()


class FailedCommitTests(TempDirTestCase):
    def test_a_commit_that_meets_a_readers_lock_leaves_the_callers_connection_clean(self):
        # Rollback-journal mode: COMMIT needs the readers gone; one outlasts
        # the busy timeout.  The caller's connection must not be left inside
        # a transaction holding the migration (its next commit would apply it
        # behind the runner's back, and meanwhile it holds the lock).
        self.write_sql(1, "one", "CREATE TABLE one (x); INSERT INTO one VALUES (1);")
        for atomic in (False, True):
            with self.subTest(atomic=atomic):
                path = os.path.join(self.tmp, "app%d.db" % atomic)
                conn = sqlite3.connect(path, timeout=0.2)  # a caller's keeps its own
                self.addCleanup(conn.close)
                conn.execute("CREATE TABLE keep (x)")
                conn.commit()
                reader = sqlite3.connect(path, isolation_level=None)
                self.addCleanup(reader.close)
                reader.execute("BEGIN")
                reader.execute("SELECT * FROM keep").fetchall()  # holds SHARED
                with self.assertRaises(sqlmigrate.MigrationError) as caught:
                    sqlmigrate.Migrator(conn, self.dir).up(atomic=atomic)
                self.assertEqual(caught.exception.kind, "locked")
                self.assertFalse(conn.in_transaction)
                reader.execute("COMMIT")
                conn.commit()
                self.assertEqual(sqlite3.connect(path).execute(
                    "SELECT name FROM sqlite_master WHERE name = 'one'").fetchall(), [])


class CallerCallbacksTests(TempDirTestCase):
    def test_a_dry_run_keeps_the_callers_trace_callback(self):
        # sqlite3 cannot read a trace callback back, so one replaced cannot be
        # put back: the caller's statement log would go silent for good.
        self.write_sql(1, "one", "CREATE TABLE one (x);", "DROP TABLE one;")
        conn = sqlite3.connect(self.db, isolation_level=None)
        self.addCleanup(conn.close)
        traced = []
        conn.set_trace_callback(lambda sql: traced.append(sql))  # 3.6: a hashable callable
        applied = sqlmigrate.Migrator(conn, self.dir).up(dry_run=True)
        self.assertEqual(applied[0].executed_sql, ["CREATE TABLE one (x)"])
        del traced[:]
        conn.execute("SELECT 42")
        self.assertEqual(traced, ["SELECT 42"])


class CallerModeTests(TempDirTestCase):
    def test_isolation_level_none_is_none_again_after_a_migration_changed_it(self):
        # A non-transactional migration may set db.isolation_level; the
        # caller's connection must come back in the mode it was passed in,
        # as one in another mode already does.
        self.write("001-mode.py", """
            transaction = False
            def up(db):
                db.isolation_level = "IMMEDIATE"
                db.execute("CREATE TABLE one (x)")
            """)
        conn = sqlite3.connect(self.db, isolation_level=None)
        self.addCleanup(conn.close)
        self.assertEqual([m.version for m in sqlmigrate.Migrator(conn, self.dir).up()], [1])
        self.assertIsNone(conn.isolation_level)
        self.assertFalse(conn.in_transaction)

    def test_a_closed_connection_is_a_migration_error_for_every_call(self):
        # The sqlite3 error a closed connection raises must come out as the
        # MigrationError every API promises, not as a raw ProgrammingError.
        self.write_sql(1, "one", "CREATE TABLE one (x);", "DROP TABLE one;")
        conn = sqlite3.connect(self.db)
        conn.close()
        migrator = sqlmigrate.Migrator(conn, self.dir)
        for name, call in [("migrate", lambda: sqlmigrate.migrate(conn, self.dir)),
                           ("up", migrator.up), ("down", migrator.down),
                           ("mark", lambda: migrator.mark(1)), ("status", migrator.status)]:
            with self.subTest(name):
                with self.assertRaises(sqlmigrate.MigrationError):
                    call()

    @unittest.skipUnless(hasattr(sqlite3, "LEGACY_TRANSACTION_CONTROL"), "Python 3.12+")
    def test_isolation_level_of_an_autocommit_connection_is_kept_after_a_migration_changed_it(self):
        # Ignored while autocommit is True or False, isolation_level rules
        # again once the caller sets autocommit back to LEGACY_TRANSACTION_CONTROL.
        self.write("001-mode.py", """
            transaction = False
            def up(db):
                db.isolation_level = None
                db.execute("CREATE TABLE one (x)")
            """)
        for autocommit in (True, False):
            with self.subTest(autocommit=autocommit):
                path = os.path.join(self.tmp, "app%d.db" % autocommit)
                conn = sqlite3.connect(path, autocommit=autocommit, isolation_level="IMMEDIATE")
                self.addCleanup(conn.close)
                self.assertEqual(len(sqlmigrate.Migrator(conn, self.dir).up()), 1)
                self.assertEqual((conn.autocommit, conn.isolation_level),
                                 (autocommit, "IMMEDIATE"))

    def test_a_read_only_callers_connection_is_named_as_a_cause_of_read_only(self):
        # The file is writable: "check the file's permissions" alone would
        # send the caller looking in the wrong place.
        self.write_sql(1, "one", "CREATE TABLE one (x);")
        sqlite3.connect(self.db).close()
        for label, conn in [("query_only", sqlite3.connect(self.db)),
                            ("mode=ro", sqlite3.connect("file:%s?mode=ro" % self.db, uri=True))]:
            self.addCleanup(conn.close)
            if label == "query_only" and sqlite3.sqlite_version_info < (3, 8, 0):
                continue  # PRAGMA query_only is SQLite 3.8.0+; before, it is ignored
            if label == "query_only":
                conn.execute("PRAGMA query_only = ON")
            with self.subTest(label):
                with self.assertRaises(sqlmigrate.MigrationError) as caught:
                    sqlmigrate.Migrator(conn, self.dir).up()
                self.assertEqual(caught.exception.kind, "read-only")
                self.assertIn("opened read-only", str(caught.exception))


class CallerFunctionsTests(TempDirTestCase):
    def test_a_migration_cannot_replace_a_function_or_collation_the_caller_registered(self):
        # The application registers slug() and `natural` on every connection
        # it opens: a migration's own versions would build index entries
        # (and CHECK results) that the application's connections disagree with.
        self.write_sql(1, "items", "CREATE TABLE items (name TEXT);")
        for n, registration in enumerate(['db.create_function("SLUG", 1, lambda s: s)',
                                          'db.create_collation("Natural", lambda a, b: 0)']):
            with self.subTest(registration):
                path = os.path.join(self.tmp, "caller%d.db" % n)
                conn = sqlite3.connect(path)
                self.addCleanup(conn.close)
                conn.create_function("slug", 1, lambda s: s.lower())
                conn.create_collation("natural", lambda a, b: (a > b) - (a < b))
                migration = self.write("002-register.py", """
                    def up(db):
                        %s
                        db.execute("INSERT INTO items VALUES ('x')")
                    """ % registration)
                with self.assertRaises(sqlmigrate.MigrationError) as caught:
                    sqlmigrate.Migrator(conn, self.dir).up()
                os.remove(migration)
                self.assertEqual(caught.exception.version, 2)
                self.assertIsInstance(caught.exception.__cause__, sqlmigrate.MigrationError)
                self.assertIn(registration.split('"')[1], str(caught.exception))
                self.assertEqual(conn.execute("SELECT slug('A'), count(*) FROM items")
                                 .fetchall(), [("a", 0)])
                self.assertEqual(conn.execute("SELECT version FROM metadata_migrations")
                                 .fetchall(), [(1,)])


class CallerAttachedDatabaseTests(TempDirTestCase):
    def test_an_attached_databases_tracking_table_is_neither_read_nor_written(self):
        # SQLite resolves an unqualified name in main, then in each attached
        # database: with main untracked, the runner read another database's
        # version (reporting its work done) and recorded main's migrations there.
        self.write_sql(1, "one", "CREATE TABLE one (x);", "DROP TABLE one;")
        self.write_sql(2, "two", "CREATE TABLE two (x);", "DROP TABLE two;")
        for other_version in (1, 2):
            with self.subTest(attached_at=other_version):
                other = os.path.join(self.tmp, "other%d.db" % other_version)
                sqlmigrate.Migrator(other, self.dir).up(to=other_version)
                path = os.path.join(self.tmp, "app%d.db" % other_version)
                conn = sqlite3.connect(path, isolation_level=None)
                self.addCleanup(conn.close)
                conn.execute("ATTACH DATABASE ? AS aux", (other,))
                self.assertEqual(sqlmigrate.Migrator(conn, self.dir).current_version, 0)
                self.assertEqual([m.version for m in sqlmigrate.migrate(conn, self.dir)], [1, 2])
                self.assertEqual(sorted(r[0] for r in conn.execute(
                    "SELECT name FROM main.sqlite_master WHERE name IN ('one', 'two')")),
                    ["one", "two"])
                conn.execute("DETACH DATABASE aux")
                self.assertEqual(sqlmigrate.Migrator(conn, self.dir).current_version, 2)
                self.assertEqual(sqlmigrate.Migrator(other, self.dir).current_version,
                                 other_version)
                self.assertEqual(sqlmigrate.Migrator(other, self.dir).verify(), [])



class CallerJournalOffTests(TempDirTestCase):
    def test_a_failed_migration_on_a_connection_with_journal_mode_off_is_rolled_back(self):
        # journal_mode OFF is the connection's, not the file's: without a
        # rollback journal SQLite cannot undo pages it has already spilled to
        # the file, yet reports the ROLLBACK done; the runner said "rolled
        # back" over a migration's half-made changes.  A dry run likewise.
        self.write_sql(1, "change", "UPDATE big SET v = 'changed'; CREATE TABLE big (y);")
        for dry_run in (False, True):
            with self.subTest(dry_run=dry_run):
                path = os.path.join(self.tmp, "app%d.db" % dry_run)
                conn = sqlite3.connect(path, isolation_level=None)
                self.addCleanup(conn.close)
                conn.execute("CREATE TABLE big (v)")
                conn.execute("BEGIN")
                conn.executemany("INSERT INTO big VALUES (?)", [("x" * 200,)] * 5000)
                conn.execute("COMMIT")
                conn.execute("PRAGMA cache_size = 10")  # pages spill early
                self.assertEqual(conn.execute("PRAGMA journal_mode = OFF").fetchone(), ("off",))
                with self.assertRaises(sqlmigrate.MigrationError) as caught:
                    sqlmigrate.Migrator(conn, self.dir).up(dry_run=dry_run)
                self.assertEqual(caught.exception.kind, "migration-failed")
                plain = sqlite3.connect(path)
                self.addCleanup(plain.close)
                self.assertEqual(plain.execute("SELECT count(*) FROM big WHERE v = 'changed'")
                                 .fetchone(), (0,))
                self.assertEqual(conn.execute("PRAGMA journal_mode").fetchone(), ("off",))
