"""Backups (`backup [PATH]`, `up --backup`, sqlmigrate.backup()): a backup is
complete or absent, never more readable than the database, and every refusal
or failure is one line naming the destination.

Real files, the CLI as a real subprocess, real kill -9, a real full disk.
"""

import glob
import os
import random
import resource
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

from tests.support import NO_BYTECODE, ROOT, SCRIPT, file_sha256, sqlmigrate
from tests.test_cli import LOCKER, PY36, CLITestCase, usable_python


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


class BackupTestCase(CLITestCase):

    def setUp(self):
        super().setUp()
        self.add_initial()
        self.apply()

    def entries(self, directory=None):
        return sorted(os.listdir(directory or self.tmp))

    def fill(self, megabytes):
        """Add about `megabytes` MB of rows to the database; returns the row count."""
        rows = megabytes * 16
        conn = self.connect()
        conn.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)")
        # No recursive CTE: SQLite 3.7.17 (CentOS 7) has none.
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO blobs (data) VALUES (randomblob(65000))", [()] * rows)
        conn.execute("COMMIT")
        return rows

    def assert_complete_copy(self, path, rows=None):
        conn = self.connect(path)
        self.assertEqual(conn.execute("PRAGMA integrity_check").fetchone()[0], "ok")
        self.assertEqual(self.schema_version(path), "1")
        if rows is not None:
            self.assertEqual(conn.execute("SELECT count(*) FROM blobs").fetchone()[0], rows)


# ---------------------------------------------------------------------------
# Permissions
# ---------------------------------------------------------------------------

@unittest.skipIf(os.name != "posix", "POSIX permission bits")
class BackupPermissions(BackupTestCase):

    def setUp(self):
        super().setUp()
        self.umask = os.umask(0o022)  # the children inherit it
        self.addCleanup(os.umask, self.umask)

    def test_a_private_database_backs_up_to_private_files_under_umask_022(self):
        os.chmod(self.db, 0o600)
        self.add_sessions()
        dest = os.path.join(self.tmp, "copy.db")
        self.run_ok("--db", self.db, "backup", dest)
        self.run_ok("--db", self.db, "backup")
        self.apply("--backup")
        backups = [p for p in glob.glob(self.db + "*") if p != self.db]
        self.assertEqual(len(backups), 2, backups)
        for path in [dest] + backups:
            with self.subTest(path=os.path.basename(path)):
                self.assertEqual(mode_of(path), 0o600)

    def unprivileged_pythons(self):
        """This Python and 3.6 (the locked file copy), each run without root's
        power to ignore permissions."""
        wrapper = self.unprivileged_python()
        pythons = [wrapper]
        if wrapper != sys.executable and usable_python(PY36):
            with open(wrapper) as f:
                text = f.read().replace('"%s"' % sys.executable, '"%s"' % PY36)
            pythons.append(wrapper + "-3.6")
            with open(pythons[-1], "w") as f:
                f.write(text)
            os.chmod(pythons[-1], 0o755)
        return pythons

    def test_a_read_only_database_backs_up_to_a_read_only_copy(self):
        os.chmod(self.db, 0o444)
        for n, python in enumerate(self.unprivileged_pythons()):
            with self.subTest(python=python):
                dest = os.path.join(self.tmp, "copy%d.db" % n)
                self.run_ok("--db", self.db, "backup", dest, python=python)
                self.assert_complete_copy(dest)
                self.assertEqual(mode_of(dest), 0o444)
                self.assertEqual(glob.glob(dest + "?*"), [])

    def test_a_backup_is_never_wider_than_its_database_but_keeps_the_umask(self):
        os.chmod(self.db, 0o664)  # group-writable; the umask still takes g+w and o+w away
        dest = os.path.join(self.tmp, "copy.db")
        self.run_ok("--db", self.db, "backup", dest)
        self.assertEqual(mode_of(dest), 0o644)


# ---------------------------------------------------------------------------
# Complete or absent
# ---------------------------------------------------------------------------

class BackupIsCompleteOrAbsent(BackupTestCase):

    def test_a_backup_killed_while_copying_leaves_no_backup_or_a_complete_one(self):
        rows = self.fill(40)
        rng = random.Random()
        for trial in range(6):
            dest = os.path.join(self.tmp, "copy%d.db" % trial)
            proc = subprocess.Popen([sys.executable, SCRIPT, "--db", self.db, "backup", dest],
                                    cwd=self.tmp, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            try:
                deadline = time.time() + 30
                # Copying has begun once a file for the destination exists.
                while not glob.glob(dest + "*") and proc.poll() is None and time.time() < deadline:
                    time.sleep(0.002)
                # Every other kill early, while copying; the rest anywhere
                # up to the end (a whole backup here takes about 0.4 s).
                time.sleep(rng.uniform(0, 0.08 if trial % 2 == 0 else 0.5))
                proc.kill()
            finally:
                proc.wait()
            with self.subTest(trial=trial, status=proc.returncode):
                if os.path.exists(dest):
                    self.assert_complete_copy(dest, rows)
                for leftover in glob.glob(dest + "?*"):
                    self.assertTrue(leftover.startswith(dest + "."), leftover)
                    self.assertIn(".tmp", leftover)  # a name nobody takes for a backup

    def test_a_backup_to_a_full_disk_fails_naming_it_and_leaves_nothing(self):
        mount = tempfile.mkdtemp(prefix="sqlmigrate-tmpfs-")
        self.addCleanup(os.rmdir, mount)
        try:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mount],
                           check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except (OSError, subprocess.CalledProcessError) as e:
            self.skipTest("cannot mount a small tmpfs here (needs root): %s" % e)
        self.addCleanup(subprocess.run, ["umount", mount])
        self.fill(3)
        before = self.sha()
        dest = os.path.join(mount, "copy.db")
        pythons = [sys.executable] + [p for p in (PY36,) if usable_python(p)]
        for python in pythons:
            with self.subTest(python=python):
                err = self.assert_error(self.cli("--db", self.db, "backup", dest, python=python),
                                        1, dest, "disk is full")
                self.assertNotIn(self.db + ":", err)
                self.assertEqual(os.listdir(mount), [])
                self.assertEqual(self.sha(), before)

    @unittest.skipIf(os.name != "posix", "RLIMIT_FSIZE")
    def test_a_backup_that_cannot_finish_writing_fails_naming_it_and_leaves_nothing(self):
        self.fill(3)

        def small_files():
            # Past the limit a write fails with EFBIG instead of killing the process.
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

        dest = os.path.join(self.tmp, "copy.db")
        pythons = [sys.executable] + [p for p in (PY36,) if usable_python(p)]
        for python in pythons:
            with self.subTest(python=python):
                err = self.assert_error(self.cli("--db", self.db, "backup", dest, python=python,
                                                 preexec_fn=small_files, env=NO_BYTECODE), 1, dest)
                self.assertNotIn(self.db + ":", err)
                self.assertEqual(self.entries(), ["app.db", "migrations"])


# ---------------------------------------------------------------------------
# Locks and transactions: fail, never wait forever
# ---------------------------------------------------------------------------

class BackupNeverHangs(BackupTestCase):

    def run_child(self, code):
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), self.db, self.tmp],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=30)
        return proc.stdout.decode(), proc.stderr.decode()

    def test_backup_inside_a_write_transaction_fails_at_once(self):
        out, err = self.run_child("""
            import os, sqlite3, sys, time
            import sqlmigrate
            conn = sqlite3.connect(sys.argv[1], isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO users (name) VALUES ('uncommitted')")
            try:
                sqlmigrate.backup(conn, os.path.join(sys.argv[2], "copy.db"))
            except sqlmigrate.MigrationError as e:
                print("refused:", e)
            print("still in the transaction:", conn.in_transaction)
            conn.close()  # PyPy does not close it at exit: the journal would stay
            """)
        self.assertIn("refused:", out, err)
        self.assertIn("transaction", out.lower())
        self.assertIn("still in the transaction: True", out)
        self.assertEqual(self.entries(), ["app.db", "migrations"])

    def test_backup_from_inside_a_migration_fails_at_once(self):
        self.write("002-back-up-midway.py", """
            import os, sqlmigrate

            def up(db):
                db.execute("CREATE TABLE t (x)")
                sqlmigrate.backup(db, os.path.join(os.path.dirname(__file__), "copy.db"))
            """)
        self.assert_error(self.cli("--db", self.db, "up", timeout=30), 1, "transaction")
        self.assertNotIn("t", self.tables())
        self.assertFalse(os.path.exists(os.path.join(self.dir, "copy.db")))

    def test_backup_inside_a_read_transaction_copies_what_it_sees_or_on_36_fails_at_once(self):
        out, err = self.run_child("""
            import os, sqlite3, sys
            import sqlmigrate
            conn = sqlite3.connect(sys.argv[1], isolation_level=None)
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM users").fetchall()
            try:
                print(sqlmigrate.backup(conn, os.path.join(sys.argv[2], "copy.db")))
            except sqlmigrate.MigrationError as e:
                print("refused:", e)
            """)
        if sqlmigrate._HAS_BACKUP_API:
            self.assertIn("copy.db", out, err)
            self.assert_complete_copy(os.path.join(self.tmp, "copy.db"))
        else:  # Python 3.6's locked file copy must take the write lock itself
            self.assertIn("refused:", out, err)
            self.assertIn("transaction", out)
            self.assertEqual(self.entries(), ["app.db", "migrations"])

    def test_a_backup_without_the_backup_api_leaves_the_callers_wal_lock_so_no_commit_is_lost(self):
        # Python 3.6 and PyPy have no backup API.  Closing a file descriptor
        # of the database drops every POSIX lock this process holds on it,
        # SQLite's too: another process closing its connection then took the
        # caller's connection for gone and deleted the WAL under it, and the
        # two went on writing to different WALs: a commit was lost.
        out, err = self.run_child("""
            import os, sqlite3, subprocess, sys
            import sqlmigrate
            sqlmigrate._HAS_BACKUP_API = False  # the path Python 3.6 and PyPy take

            def other(name):  # another process: opens, commits, closes (the last to)
                subprocess.run([sys.executable, "-c", "import sqlite3, sys; "
                                "c = sqlite3.connect(sys.argv[1], isolation_level=None); "
                                "c.execute('INSERT INTO users (name) VALUES (?)', "
                                "(sys.argv[2],)); c.close()", sys.argv[1], name], check=True)

            conn = sqlite3.connect(sys.argv[1], isolation_level=None)
            conn.execute("PRAGMA journal_mode = WAL").fetchall()  # (PyPy: else still running)
            conn.execute("INSERT INTO users (name) VALUES ('mine-1')")
            print(sqlmigrate.backup(conn, os.path.join(sys.argv[2], "copy.db")))
            other("other-1")
            conn.execute("INSERT INTO users (name) VALUES ('mine-2')")
            other("other-2")
            conn.close()
            """)
        self.assertIn("copy.db", out, err)
        self.assert_complete_copy(os.path.join(self.tmp, "copy.db"))
        self.assertEqual([row[0] for row in self.connect().execute(
            "SELECT name FROM users WHERE name LIKE '%-_' ORDER BY id")],
            ["mine-1", "other-1", "mine-2", "other-2"], err)

    def test_backup_of_a_locked_database_fails_after_the_busy_timeout(self):
        locker = subprocess.Popen([sys.executable, "-c", LOCKER, self.db], stdout=subprocess.PIPE)
        self.addCleanup(locker.stdout.close)
        self.addCleanup(locker.wait)
        self.addCleanup(locker.kill)
        self.assertEqual(locker.stdout.readline().strip(), b"locked")
        dest = os.path.join(self.tmp, "copy.db")
        self.assert_error(self.cli("--db", self.db, "--busy-timeout", "300", "backup", dest,
                                   timeout=30), 1, "locked")
        self.assertFalse(glob.glob(dest + "*"))


# ---------------------------------------------------------------------------
# Destinations and names
# ---------------------------------------------------------------------------

class BackupDestinations(BackupTestCase):

    def assert_refused(self, dest, *fragments):
        before = self.entries()
        err = self.assert_error(self.cli("--db", self.db, "backup", dest), 2, *fragments)
        self.assertEqual(self.entries(), before)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        return err

    def test_an_empty_or_in_memory_destination_is_refused(self):
        for dest in ("", ":memory:"):
            with self.subTest(dest=dest):
                self.assert_refused(dest, "not a file path")

    def test_the_database_itself_is_refused_however_it_is_spelled(self):
        os.symlink(self.db, os.path.join(self.tmp, "link.db"))
        before = self.sha()
        for dest in (self.db, "app.db", "./migrations/../app.db", "link.db"):
            with self.subTest(dest=dest):
                self.assert_refused(dest, "the database itself")
        self.assertEqual(self.sha(), before)

    def test_the_database_journal_names_are_refused(self):
        for suffix in ("-journal", "-wal", "-shm"):
            with self.subTest(suffix=suffix):
                self.assert_refused(self.db + suffix, self.db + suffix)

    def test_the_database_journal_names_are_refused_through_a_linked_directory(self):
        # SQLite would delete a "journal" that is a database file at its next open.
        os.symlink(self.tmp, os.path.join(self.tmp, "alias"))
        for suffix in ("-journal", "-wal", "-shm"):
            with self.subTest(suffix=suffix):
                dest = os.path.join(self.tmp, "alias", "app.db" + suffix)
                self.assert_refused(dest, dest, "journal")

    def test_the_run_lock_file_name_is_refused(self):
        # The README lets users delete that file while no runner runs: a
        # backup under its name would go with it.
        dest = self.db + "-sqlmigrate-lock"
        self.assert_refused(dest, dest, "lock file")

    def test_an_existing_file_is_never_overwritten(self):
        dest = self.write("existing.db", "precious", directory=self.tmp)
        before = file_sha256(dest)
        self.assert_refused(dest, dest, "exists")
        self.assertEqual(file_sha256(dest), before)

    def test_a_directory_gets_the_default_name_inside_it(self):
        backups = os.path.join(self.tmp, "backups")
        os.mkdir(backups)
        out, _ = self.run_ok("--db", self.db, "backup", backups)
        [name] = os.listdir(backups)
        self.assertTrue(name.startswith("app.db.") and name.endswith("-v1.bak"), name)
        self.assertIn(os.path.join(backups, name), out)
        self.assert_complete_copy(os.path.join(backups, name))

    def test_a_missing_destination_directory_is_a_bad_request_naming_the_destination(self):
        dest = os.path.join(self.tmp, "missing-dir", "x.db")
        err = self.assert_refused(dest, dest, "does not exist")
        self.assertNotIn(self.db + ":", err)

    def test_a_missing_directory_given_with_a_trailing_slash_is_a_bad_request(self):
        dest = os.path.join(self.tmp, "missing-dir", "")
        self.assert_refused(dest, dest, "does not exist")

    def test_the_default_name_carries_the_version_of_the_table_given_by_table(self):
        # The application owns a table called `metadata`; sqlmigrate tracks in `sm`.
        os.remove(self.db)
        conn = self.connect()
        conn.execute("CREATE TABLE metadata (id INTEGER PRIMARY KEY, blob BLOB)")
        conn.execute("CREATE TABLE metadata_migrations (id INTEGER PRIMARY KEY)")
        self.add_sessions()
        self.run_ok("--db", self.db, "--table", "sm", "up")
        out, _ = self.run_ok("--db", self.db, "--table", "sm", "backup")
        backups = [p for p in glob.glob(self.db + "*") if p != self.db]
        self.assertEqual(len(backups), 1, backups)
        self.assertRegex(backups[0], r"-v2\.bak$")
        path = sqlmigrate.backup(self.db, table="sm")
        self.assertRegex(path, r"-v2(\.\d+)?\.bak$")  # .2 within the same second


class FileSystemWithoutHardLinks(BackupTestCase):
    """FAT and some network shares refuse link(2) (EPERM): the backup and the
    baseline then claim the name with O_EXCL and rename over their own claim."""

    def setUp(self):
        super().setUp()
        real_link = os.link

        def no_link(*args, **kwargs):
            raise PermissionError(1, "Operation not permitted")
        os.link = no_link
        self.addCleanup(setattr, os, "link", real_link)

    def test_a_backup_is_written_complete_under_its_name_with_nothing_left_beside_it(self):
        dest = os.path.join(self.tmp, "copy.db")
        self.assertEqual(sqlmigrate.backup(self.db, dest), dest)
        self.assert_complete_copy(dest)
        self.assertEqual(self.entries(), sorted(["app.db", "copy.db", "migrations"]))

    def test_an_existing_file_is_refused_and_untouched(self):
        dest = self.write("existing.db", "precious", directory=self.tmp)
        before = self.entries()
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.backup(self.db, dest)
        self.assertIn("exists", str(caught.exception))
        with open(dest) as f:
            self.assertEqual(f.read(), "precious")
        self.assertEqual(self.entries(), before)

    def test_an_interrupt_between_claiming_the_name_and_the_rename_leaves_nothing(self):
        real_replace = os.replace

        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt
        os.replace = interrupted
        self.addCleanup(setattr, os, "replace", real_replace)
        before = self.entries()
        with self.assertRaises(KeyboardInterrupt):
            sqlmigrate.backup(self.db, os.path.join(self.tmp, "copy.db"))
        self.assertEqual(self.entries(), before)

    def test_a_baseline_is_written_and_never_over_an_existing_file(self):
        path = sqlmigrate.Migrator(self.db, self.dir).baseline(1, force=True)
        with open(path) as f:
            self.assertIn("-- migrate:baseline", f.read())
        os.remove(path)
        with open(path, "w") as f:
            f.write("mine")
        with self.assertRaises(sqlmigrate.MigrationError):
            sqlmigrate.Migrator(self.db, self.dir).baseline(1, force=True)
        with open(path) as f:
            self.assertEqual(f.read(), "mine")
        self.assertEqual([n for n in os.listdir(self.dir) if n.startswith(".")], [])


class BackupBeforeMigrating(BackupTestCase):

    def test_up_with_backup_on_a_connection_backs_up_its_file(self):
        self.add_sessions()
        conn = self.connect()
        done = sqlmigrate.Migrator(conn, self.dir).up(backup=True)
        self.assertEqual([m.version for m in done], [2])
        [path] = [p for p in glob.glob(self.db + "*") if p != self.db]
        self.assertRegex(path, r"-v1\.bak$")
        self.assert_complete_copy(path)

    def test_processes_starting_up_with_backup_together_all_succeed(self):
        self.fill(24)  # a copy long enough for the others to start theirs meanwhile
        self.add_sessions()
        procs = [subprocess.Popen([sys.executable, SCRIPT, "--db", self.db, "--dir", self.dir,
                                   "--busy-timeout", "30000", "up", "--backup"],
                                  cwd=self.tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(4)]
        results = [(p.wait(timeout=60), p.stdout.read(), p.stderr.read()) for p in procs]
        for p in procs:
            p.stdout.close()
            p.stderr.close()
        for status, out, err in results:
            self.assertEqual(status, 0, err)
        self.assertEqual(self.schema_version(), "2")
        backups = [p for p in glob.glob(self.db + "*") if p != self.db]
        self.assertTrue(backups)
        for path in backups:
            self.assertTrue(path.endswith(".bak"), path)
            self.assertEqual(self.connect(path).execute("PRAGMA integrity_check").fetchone()[0],
                             "ok")

    def test_up_with_backup_on_an_in_memory_connection_is_refused(self):
        self.add_sessions()
        conn = sqlite3.connect(":memory:", isolation_level=None)
        self.addCleanup(conn.close)
        sqlmigrate.Migrator(conn, self.dir).up(to=1)
        with self.assertRaisesRegex(sqlmigrate.RequestError, "in-memory"):
            sqlmigrate.Migrator(conn, self.dir).up(backup=True)
        self.assertEqual(sqlmigrate.Migrator(conn, self.dir).current_version, 1)


if __name__ == "__main__":
    unittest.main()
