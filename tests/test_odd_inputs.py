"""Odd inputs (SPEC section 7): a crashed writer's hot journal, paths that are
not regular files, odd but valid path names, a table of another shape where
the history goes, and descriptions or file names just outside the rules.

Each ends in one clear line, the right exit status and an unchanged
database; every case runs the CLI as a real subprocess on real files.
"""

import glob
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import unittest

from tests.support import file_sha256
from tests.test_cli import CLITestCase

# Starts a write transaction on the database named in argv[1] that touches
# far more pages than its 2-page cache holds, so SQLite spills changed pages
# into the database file itself (the journal is synced first); then waits to
# be killed, leaving a hot journal behind.
HALF_WRITER = (
    "import sqlite3, sys, time\n"
    "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "conn.execute('PRAGMA cache_size = 2')\n"
    "conn.execute('BEGIN IMMEDIATE')\n"
    "conn.execute('UPDATE payload SET data = randomblob(1000)')\n"
    "print('written', flush=True)\n"
    "time.sleep(60)\n"
)


class HotJournalTests(CLITestCase):
    """Rollback-journal mode: a process killed mid-transaction leaves
    `app.db-journal`, which the next read-write open rolls back."""

    def setUp(self):
        super().setUp()
        self.add_initial()
        self.apply()
        conn = self.connect()
        conn.execute("CREATE TABLE payload (data BLOB)")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO payload VALUES (randomblob(1000))",
                         [()] * 400)
        conn.execute("COMMIT")
        conn.close()
        self.journal = self.db + "-journal"

    def crash_mid_transaction(self):
        """kill -9 a writer whose changes reached the database file; returns
        the committed content's sha (what a rollback must restore)."""
        committed = self.sha()
        writer = subprocess.Popen([sys.executable, "-c", HALF_WRITER, self.db],
                                  stdout=subprocess.PIPE)
        self.addCleanup(writer.stdout.close)
        self.assertEqual(writer.stdout.readline().strip(), b"written")
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        self.assertTrue(os.path.exists(self.journal), "the crash left no journal")
        self.assertNotEqual(self.sha(), committed, "the crash did not reach the database file")
        return committed

    def rolled_back_by_sqlite(self):
        """The bytes a plain read-write sqlite3 open makes of the crashed
        database and its journal, worked out on copies of both."""
        side = os.path.join(self.tmp, "side")
        os.mkdir(side)
        shutil.copy(self.db, side)
        shutil.copy(self.journal, side)
        copy = os.path.join(side, os.path.basename(self.db))
        conn = sqlite3.connect(copy)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
        conn.close()
        self.assertFalse(os.path.exists(copy + "-journal"))
        expected = file_sha256(copy)
        shutil.rmtree(side)
        return expected

    def test_read_only_commands_roll_back_a_hot_journal_as_a_read_write_open_would(self):
        for command in (("status",), ("verify",), ("schema",), ("status", "--json")):
            with self.subTest(command=command):
                committed = self.crash_mid_transaction()
                expected = self.rolled_back_by_sqlite()
                before = sorted(os.listdir(self.tmp))
                out, err = self.run_ok("--db", self.db, *command)
                self.assertNotIn("read-only", err)
                self.assertEqual(self.sha(), expected)
                self.assertEqual(self.sha(), committed)
                self.assertEqual(sorted(os.listdir(self.tmp)),
                                 [n for n in before if n != "app.db-journal"],
                                 "a file other than the journal appeared or went")

    def test_a_symlink_to_a_database_with_a_hot_journal_rolls_it_back_too(self):
        # The journal is named after the file the link points to, which is
        # opened (SQLite 3.10+ does so itself; 3.7.17 read uncommitted pages).
        link = os.path.join(self.tmp, "link.db")
        os.symlink(self.db, link)
        committed = self.crash_mid_transaction()
        expected = self.rolled_back_by_sqlite()
        out, err = self.run_ok("--db", link, "status")
        self.assertNotIn("read-only", err)
        self.assertEqual(self.sha(), expected)
        self.assertEqual(self.sha(), committed)
        self.assertFalse(os.path.exists(self.journal))

    def test_hot_journal_on_a_read_only_file_is_named_with_what_to_do(self):
        python = self.unprivileged_python()
        self.crash_mid_transaction()
        os.chmod(self.db, 0o444)
        self.addCleanup(os.chmod, self.db, 0o644)
        journal_before = file_sha256(self.journal)
        for command in ("status", "verify", "schema"):
            with self.subTest(command=command):
                err = self.assert_bad_input(("--db", self.db, command), 1, self.db,
                                            "hot journal", "crashed", "read-write",
                                            python=python)
                self.assertNotIn("check the file's", err)
                self.assertEqual(file_sha256(self.journal), journal_before)


class NotARegularFileTests(CLITestCase):
    """--db naming a FIFO or a device: refused before anything opens it (a
    FIFO would block the open forever; SQLite would put a journal next to a
    device)."""

    COMMANDS = (("status",), ("up",), ("down",), ("verify",), ("schema",), ("backup",),
                ("mark", "1"), ("up", "--dry-run"))

    def setUp(self):
        super().setUp()
        self.add_initial()

    def assert_refused(self, path):
        for command in self.COMMANDS:
            with self.subTest(command=command):
                self.assert_error(self.cli("--db", path, *command, timeout=20), 2, path,
                                  "not a regular file")

    @unittest.skipUnless(hasattr(os, "mkfifo"), "no FIFOs here")
    def test_a_fifo_as_the_database_is_refused_without_opening_it(self):
        fifo = os.path.join(self.tmp, "app.fifo")
        os.mkfifo(fifo)
        self.assert_refused(fifo)
        self.assertEqual(sorted(os.listdir(self.tmp)), ["app.fifo", "migrations"])

    @unittest.skipUnless(os.path.exists("/dev/null"), "no /dev/null here")
    def test_a_character_device_as_the_database_is_refused_and_gets_no_journal(self):
        # What a failing run leaves in /dev (a journal, backup copies) is removed.
        before = set(glob.glob("/dev/null?*"))
        self.addCleanup(lambda: [os.remove(p) for p in set(glob.glob("/dev/null?*")) - before])
        self.assert_refused("/dev/null")
        self.assertEqual(set(glob.glob("/dev/null?*")), before)


class OddPathNameTests(CLITestCase):
    """Any path sqlite3.connect opens, sqlmigrate opens: the same file."""

    def setUp(self):
        super().setUp()
        self.add_initial()

    def assert_same_file_as_sqlite3(self, db):
        """`up` and `status` with --db `db` (relative to self.tmp), then
        sqlite3.connect(db) finds the migration applied."""
        before = sorted(os.listdir(self.tmp))
        self.run_ok("--db", db, "up", cwd=self.tmp)
        self.run_ok("--db", db, "status", cwd=self.tmp)
        conn = sqlite3.connect(os.path.join(self.tmp, db))
        try:
            self.assertEqual(conn.execute("SELECT value FROM metadata WHERE key = "
                                          "'schema_version'").fetchone(), ("1",))
        finally:
            conn.close()
        return before

    def test_a_path_with_a_leading_double_slash_opens(self):
        self.assertTrue(self.db.startswith("/"))
        self.assert_same_file_as_sqlite3("/" + self.db)
        self.assertEqual(self.schema_version(self.db), "1")

    def test_uri_characters_in_file_names_are_taken_literally(self):
        for name in ("a?b.db", "a#b.db", "a%41b.db", "a%.db", "a%2fb.db", "mode=ro&x.db",
                     "sp ace.db", "\u65e5\u672c.db"):
            with self.subTest(name=name):
                before = self.assert_same_file_as_sqlite3(name)
                self.assertEqual(sorted(os.listdir(self.tmp)), sorted(before + [name]),
                                 "not exactly one new file, named %r" % name)

    @unittest.skipUnless(hasattr(os, "symlink"), "no symlinks here")
    def test_dot_dot_after_a_symlink_is_resolved_by_the_system_as_sqlite3_does(self):
        real = os.path.join(self.tmp, "real", "sub")
        os.makedirs(real)
        os.symlink(real, os.path.join(self.tmp, "link"))
        # Where plain sqlite3.connect puts such a file depends on the SQLite:
        # the system resolves link/.. to real/, but SQLite 3.34 folded the
        # path as text (to ./).  sqlmigrate must land where sqlite3 does.
        probe = sqlite3.connect(os.path.join(self.tmp, "link", "..", "probe.db"))
        probe.execute("CREATE TABLE t (x)")
        probe.close()
        where = "real" if os.path.exists(os.path.join(self.tmp, "real", "probe.db")) else ""
        elsewhere = "" if where else "real"
        self.assert_same_file_as_sqlite3(os.path.join("link", "..", "x.db"))
        self.assertTrue(os.path.exists(os.path.join(self.tmp, where, "x.db")))
        self.assertFalse(os.path.exists(os.path.join(self.tmp, elsewhere, "x.db")),
                         "sqlmigrate wrote to another file than sqlite3.connect opens")


class HistoryTableOfAnotherShapeTests(CLITestCase):
    """An application table named <table>_migrations, where the history goes."""

    def setUp(self):
        super().setUp()
        self.add_initial()

    def make_database(self, with_metadata):
        conn = sqlite3.connect(self.db)
        conn.execute("CREATE TABLE metadata_migrations (id INTEGER PRIMARY KEY, payload TEXT)")
        conn.execute("INSERT INTO metadata_migrations (payload) VALUES ('the app''s own')")
        if with_metadata:
            conn.execute("CREATE TABLE metadata (key TEXT PRIMARY KEY, value TEXT)")
        conn.commit()
        conn.close()

    def test_history_table_of_another_shape_is_named_with_the_table_option(self):
        for with_metadata in (False, True):
            self.make_database(with_metadata)
            for command in (("up",), ("status",), ("verify",), ("mark", "1"),
                            ("up", "--dry-run")):
                with self.subTest(with_metadata=with_metadata, command=command):
                    err = self.assert_bad_input(("--db", self.db) + command, 1,
                                                "metadata_migrations", "--table")
                    self.assertNotIn("no such column", err.split(": ", 2)[-1][:20])
            os.remove(self.db)

    def test_another_table_option_works_beside_it(self):
        self.make_database(True)
        self.run_ok("--db", self.db, "--table", "schema_meta", "up")
        self.assertIn("users", self.tables())


class HandEditedVersionTests(CLITestCase):
    """metadata.schema_version edited by hand into something other than a
    whole number: 1.5 in a REAL column read as version 1, infinity escaped as
    an OverflowError traceback, '1_0' and Arabic-Indic digits read as 10 and 3."""

    def test_a_version_that_is_not_a_whole_number_is_named_and_nothing_runs(self):
        self.add_initial()
        self.add_sessions()
        self.apply()
        conn = self.connect()
        conn.execute("CREATE TABLE kept AS SELECT * FROM metadata")
        conn.execute("DROP TABLE metadata")
        conn.execute("CREATE TABLE metadata (key TEXT PRIMARY KEY, value REAL)")
        conn.close()
        for value in (1.5, float("inf"), "1_0", "\u0663"):
            with self.subTest(value=value):
                conn = self.connect()
                conn.execute("DELETE FROM metadata")
                conn.execute("INSERT INTO metadata VALUES ('schema_version', ?)", (value,))
                conn.close()
                for command in (("status",), ("up",), ("down",)):
                    self.assert_bad_input(("--db", self.db) + command, 1,
                                          "metadata.schema_version", "not a whole number")


class TriggerOnTheTrackingTablesTests(CLITestCase):
    """A trigger on a tracking table that skips the runner's write
    (RAISE(IGNORE)): up said "Applied" with no record written, down "Rolled
    back" with the record kept, mark "Marked" with nothing marked."""

    def setUp(self):
        super().setUp()
        self.add_initial()
        self.add_sessions()

    def skip_writes(self, table, verb):
        conn = self.connect()
        conn.execute("CREATE TRIGGER skip BEFORE %s ON %s BEGIN SELECT RAISE(IGNORE); END"
                     % (verb, table))
        conn.close()

    def test_a_skipped_write_of_the_history_or_the_version_fails_the_run(self):
        for table, verb, setup, command, stays in (
                ("metadata_migrations", "INSERT", ("up", "--to", "1"), ("up",), 1),
                ("metadata_migrations", "INSERT", ("up", "--to", "1"), ("mark", "2"), 1),
                ("metadata_migrations", "DELETE", ("up",), ("down",), 2),
                ("metadata", "UPDATE", ("up",), ("down",), 2)):
            with self.subTest(table=table, verb=verb, command=command):
                for name in os.listdir(self.tmp):
                    if name.startswith("app.db"):
                        os.remove(os.path.join(self.tmp, name))
                self.apply(*setup[1:])
                self.skip_writes(table, verb)
                self.assert_bad_input(("--db", self.db) + command, 1, "trigger", table)
                status = self.run_ok("--db", self.db, "status", "--json")[0]
                self.assertEqual((json.loads(status)["current_version"],
                                  json.loads(status)["applied"]), (stays, stays))
                self.assertEqual("sessions" in self.tables(), stays == 2)


class NewMigrationNameTests(CLITestCase):

    def test_a_too_long_description_is_a_bad_request_that_says_the_limit(self):
        err = self.assert_error(self.cli("new", "a" * 300), 2, "too long", "200")
        self.assertNotIn("Errno", err)
        self.assertEqual(os.listdir(self.dir), [])

    def test_the_longest_description_allowed_makes_a_file(self):
        self.run_ok("new", "a" * 200, "--sql")
        self.assertEqual(os.listdir(self.dir), ["001-%s.sql" % ("a" * 200)])

    def test_an_unwritable_directory_fails_with_one_line(self):
        python = self.unprivileged_python()
        os.chmod(self.dir, 0o555)
        self.addCleanup(os.chmod, self.dir, 0o755)
        err = self.assert_error(self.cli("new", "add users", python=python), 1,
                                os.path.join("migrations", "001-add-users.py"), "permission")
        self.assertNotIn("Errno", err)
        self.assertEqual(os.listdir(self.dir), [])

    def test_a_description_without_ascii_letters_says_what_names_may_contain(self):
        for description in ("\u65e5\u672c\u8a9e", "add caf\u00e9 table"):
            with self.subTest(description=description):
                self.assert_error(self.cli("new", description), 2, description, "a-z", "0-9")
                self.assertEqual(os.listdir(self.dir), [])


class FileExtensionCaseTests(CLITestCase):

    def test_upper_case_extensions_are_flagged_not_ignored(self):
        self.add_initial()
        self.apply()
        for filename in ("002-x.SQL", "002-x.Sql", "002-x.PY"):
            with self.subTest(filename=filename):
                path = self.write(filename, "-- migrate:up\nCREATE TABLE x (a);\n")
                try:
                    for command in ("verify", "up", "status"):
                        self.assert_bad_input(("--db", self.db, command), 2, filename,
                                              "lower-case")
                finally:
                    os.remove(path)
        self.assertNotIn("x", self.tables())

    def test_other_extensions_stay_ignored(self):
        self.add_initial()
        self.apply()
        self.write("README.md", "# notes\n")
        self.write("001-notes.sql.bak", "junk\n")
        self.write("002-notes.txt", "junk\n")
        self.run_ok("--db", self.db, "verify")


class UnreachableDatabaseTests(CLITestCase):
    """A --db path that may name an existing database but cannot be looked
    at (a symlink loop, a directory without search permission) is an error,
    never taken for a missing file: that would report an empty database."""

    COMMANDS = (("status",), ("status", "--json"), ("up", "--dry-run"), ("down",),
                ("verify",), ("schema",), ("backup",))

    def setUp(self):
        super().setUp()
        self.add_initial()

    def assert_cannot_open(self, path, **kwargs):
        for command in self.COMMANDS:
            with self.subTest(command=command):
                err = self.assert_error(self.cli("--db", path, *command, timeout=20, **kwargs),
                                        1, path, "cannot open")
                self.assertNotIn("does not exist", err)

    @unittest.skipUnless(hasattr(os, "symlink"), "no symlinks here")
    def test_a_symlink_loop_is_an_error_not_a_missing_database(self):
        loop = os.path.join(self.tmp, "loop.db")
        os.symlink(os.path.join(self.tmp, "other.db"), loop)
        os.symlink(loop, os.path.join(self.tmp, "other.db"))
        self.assert_cannot_open(loop)
        self.assertEqual(sorted(os.listdir(self.tmp)), ["loop.db", "migrations", "other.db"])

    def test_a_database_in_a_directory_without_search_permission_is_not_reported_empty(self):
        python = self.unprivileged_python()
        private = os.path.join(self.tmp, "private")
        os.mkdir(private)
        self.db = os.path.join(private, "app.db")
        self.apply()
        before = self.sha()
        os.chmod(private, 0o600)  # listed, but no file in it can be reached
        self.addCleanup(os.chmod, private, 0o755)
        self.assert_cannot_open(self.db, python=python)
        os.chmod(private, 0o755)
        self.assertEqual(self.sha(), before)
        self.assertEqual(sorted(os.listdir(private)), ["app.db"])

    def test_a_path_ending_in_a_slash_is_a_bad_request(self):
        # SQLite drops the slash: "app.db/" opens app.db, "new/" creates a
        # file "new"; stat() of them fails, so they were taken for new files.
        self.apply()
        before = self.sha()
        for path in (self.db + os.sep, os.path.join(self.tmp, "new") + os.sep):
            for command in self.COMMANDS + (("up",), ("mark", "1")):
                with self.subTest(path=path, command=command):
                    self.assert_error(self.cli("--db", path, *command), 2, path, "ends with")
        self.assertEqual(self.sha(), before)
        self.assertEqual(sorted(os.listdir(self.tmp)), ["app.db", "migrations"])


class InMemoryDatabaseTests(CLITestCase):
    """--db :memory: (say, an application's test setting in $SQLMIGRATE_DB)
    is SQLite's name for a database gone when its connection closes."""

    def test_up_into_an_in_memory_database_is_refused_not_reported_applied(self):
        self.add_initial()
        for args, env in (((("--db", ":memory:", "up")), {}),
                          (("up",), {"SQLMIGRATE_DB": ":memory:"}),
                          (("--db", ":memory:", "up", "--backup"), {})):
            with self.subTest(args=args, env=env):
                status, out, err = self.cli(*args, env=env)
                self.assert_error((status, out, err), 2, ":memory:", "in-memory")
                self.assertNotIn("Applied", out)
        self.assertEqual(sorted(os.listdir(self.tmp)), ["migrations"])

    def test_a_new_database_named_as_another_ones_journal_is_refused(self):
        # app.db-journal made a database would be taken by SQLite for
        # app.db's journal, found not valid, and deleted when app.db opens.
        self.add_initial()
        self.connect(os.path.join(self.tmp, "app.db")).execute("CREATE TABLE t (x)")
        for name in ("app.db-journal", "app.db-wal", "app.db-shm", "app.db-sqlmigrate-lock"):
            with self.subTest(name=name):
                status, out, err = self.cli("--db", name, "up")
                self.assertEqual(status, 2, err)
                self.assertIn(name, err)
                self.assertEqual(len(err.strip().splitlines()), 1, err)
                self.assertEqual(sorted(os.listdir(self.tmp)), ["app.db", "migrations"])
        # Without such a database beside it, it is a name like any other.
        status, out, err = self.cli("--db", "notes-journal", "up")
        self.assertEqual(status, 0, err)

    def test_a_dry_run_into_an_in_memory_database_still_shows_the_plan(self):
        self.add_initial()
        out, _ = self.run_ok("--db", ":memory:", "up", "--dry-run")
        self.assertIn("CREATE TABLE users", out)


if __name__ == "__main__":
    unittest.main()
