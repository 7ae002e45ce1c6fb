"""Real processes: many workers migrating one database at once, and kill -9."""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import unittest

from tests.support import ROOT, SCRIPT, TempDirTestCase, sqlmigrate

WORKER = """
import sys, time
sys.path.insert(0, %r)
import sqlmigrate
go = sys.argv[3]
while not __import__("os").path.exists(go):
    time.sleep(0.005)
applied = sqlmigrate.migrate(sys.argv[1], sys.argv[2], busy_timeout=60)
print(",".join(str(m.version) for m in applied))
""" % ROOT


class ManyWorkersAtOnce(TempDirTestCase):
    def test_eight_processes_apply_each_migration_exactly_once(self):
        self.write_sql(1, "create-log", "CREATE TABLE log (version INTEGER, pid INTEGER);")
        for version in range(2, 31):
            self.write_sql(version, "step-%d" % version,
                           "INSERT INTO log VALUES (%d, 0);\nCREATE TABLE t%d (x);" % (version, version))
        go = os.path.join(self.tmp, "go")
        workers = [subprocess.Popen([sys.executable, "-c", WORKER, self.db, self.dir, go],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                   for _ in range(8)]
        time.sleep(0.3)  # let every interpreter start and wait at the line
        open(go, "w").close()
        results = [w.communicate(timeout=120) for w in workers]
        for worker, (out, err) in zip(workers, results):
            self.assertEqual(worker.returncode, 0, err.decode())
        applied_by_workers = sorted(int(v) for out, _ in results
                                    for v in out.decode().strip().split(",") if v)
        self.assertEqual(applied_by_workers, list(range(1, 31)))
        conn = self.connect()
        self.assertEqual(conn.execute("SELECT version FROM log ORDER BY version").fetchall(),
                         [(v,) for v in range(2, 31)])
        self.assertEqual(self.schema_version(), "30")
        self.assertEqual(conn.execute("SELECT count(*) FROM metadata_migrations").fetchone()[0], 30)



class RacesOnANewDatabase(TempDirTestCase):
    def test_a_lock_timeout_on_a_new_database_keeps_the_file_another_process_is_filling(self):
        # Both runs find no database file.  The loser, started first, pauses
        # while loading the migration until the winner is inside migration 1
        # (holding the write lock for 3 s on a file that is still 0 bytes),
        # then gives up on the lock after 1 s.
        inside = os.path.join(self.tmp, "winner-inside")
        self.write("001-slow.py", """
            import os, time
            if os.environ.get("ROLE") == "loser":
                while not os.path.exists(%r):
                    time.sleep(0.01)

            def up(db):
                db.execute("CREATE TABLE slow (x)")
                open(%r, "w").close()
                time.sleep(3)
                db.execute("INSERT INTO slow VALUES (1)")
            """ % (inside, inside))
        self.write_sql(2, "after", "CREATE TABLE after_slow (x);")
        command = [sys.executable, SCRIPT, "--db", self.db, "--dir", self.dir,
                   "--busy-timeout", "1000", "up"]
        loser = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env=dict(os.environ, ROLE="loser"))
        time.sleep(0.5)  # the loser has read the (missing) database state
        winner = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=dict(os.environ, ROLE="winner"))
        _, loser_err = loser.communicate(timeout=60)
        _, winner_err = winner.communicate(timeout=60)
        self.assertEqual(loser.returncode, 1, loser_err.decode())
        self.assertIn("locked", loser_err.decode())
        self.assertEqual(winner.returncode, 0, winner_err.decode())
        conn = self.connect()
        self.assertEqual(conn.execute("SELECT x FROM slow").fetchall(), [(1,)])
        self.assertEqual(self.schema_version(), "2")


RACER = """
import os, sys, time
sys.path.insert(0, %r)
import sqlmigrate
directory, base, role, trials = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
for trial in range(trials):
    while not os.path.exists("%%s.go%%d" %% (base, trial)):
        time.sleep(0.002)
    migrator = sqlmigrate.Migrator("%%s%%d.db" %% (base, trial), directory, busy_timeout=60)
    try:
        if role.startswith("down"):
            migrator.down(steps=int(role[4:]))
        elif role.startswith("mark"):
            migrator.mark(int(role[4:]))
        else:
            migrator.up()
    except sqlmigrate.MigrationError as e:
        sys.stderr.write("trial %%d: %%s\\n" %% (trial, e))
    open("%%s.done%%d.%%d" %% (base, trial, os.getpid()), "w").close()
""" % ROOT


class RacingCommands(TempDirTestCase):
    """up, down and mark in several processes on one database: whatever wins,
    the history has no hole and the schema matches it."""

    VERSIONS = 8

    def write_table_migrations(self):
        for version in range(1, self.VERSIONS + 1):
            self.write_sql(version, "table-%d" % version, "CREATE TABLE t%d (x);" % version,
                           "DROP TABLE t%d;" % version)

    def race(self, roles, trials, start_at, marked=False, directory=None):
        """Run `roles` in one process each, all starting together on each of
        `trials` databases (at version `start_at`; None: no file yet); check
        every database and return the errors the workers reported."""
        base = os.path.join(self.tmp, "trial")
        for trial in range(trials):
            if start_at is not None:
                sqlmigrate.migrate("%s%d.db" % (base, trial), self.dir, to=start_at)
        workers = [subprocess.Popen([sys.executable, "-c", RACER, directory or self.dir, base, role,
                                     str(trials)], stderr=subprocess.PIPE)
                   for role in roles]
        for trial in range(trials):
            open("%s.go%d" % (base, trial), "w").close()
            deadline = time.time() + 60
            while (sum(1 for w in workers if os.path.exists("%s.done%d.%d" % (base, trial, w.pid)))
                   < len(workers) and time.time() < deadline):
                time.sleep(0.002)
        errors = []
        for worker in workers:
            out, err = worker.communicate(timeout=60)
            self.assertEqual(worker.returncode, 0, err.decode())
            errors.extend(err.decode().splitlines())
        for trial in range(trials):
            # The bundled migrations create no tN tables: only the history is checked.
            self.check_consistent("%s%d.db" % (base, trial), "trial %d" % trial,
                                  marked or directory is not None)
        return errors

    def check_consistent(self, db, trial, marked=False):
        conn = sqlite3.connect(db)
        try:
            history = [r[0] for r in conn.execute(
                "SELECT version FROM metadata_migrations ORDER BY version")]
            version = int(conn.execute(
                "SELECT value FROM metadata WHERE key = 'schema_version'").fetchone()[0])
            tables = set(r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE name GLOB 't[0-9]*'"))
        finally:
            conn.close()
        self.assertEqual(history, list(range(1, version + 1)), trial)
        if marked:  # a marked migration is recorded without its table
            self.assertLessEqual(tables, set("t%d" % v for v in history), trial)
        else:
            self.assertEqual(tables, set("t%d" % v for v in history), trial)

    def test_down_racing_up_never_rolls_back_a_migration_that_is_no_longer_the_newest(self):
        self.write_table_migrations()
        self.race(["up"] * 6 + ["down2"] * 2, trials=12, start_at=4)

    def test_mark_racing_up_never_leaves_the_version_below_an_applied_migration(self):
        self.write_table_migrations()
        self.race(["up"] * 3 + ["mark2"] * 3, trials=12, start_at=1, marked=True)

    def test_twelve_processes_on_a_new_database_all_get_the_bundled_wal_migration_applied(self):
        # PRAGMA journal_mode = WAL returns SQLITE_BUSY at once while another
        # connection reads or writes, without calling the busy handler.
        errors = self.race(["up"] * 12, trials=6, start_at=None,
                           directory=os.path.join(ROOT, "migrations"))
        self.assertEqual(errors, [])
        for trial in range(6):
            conn = self.connect(os.path.join(self.tmp, "trial%d.db" % trial))
            self.assertEqual(conn.execute("PRAGMA journal_mode").fetchone()[0], "wal")



# argv[5] (down, mark 3 or an --atomic up) through the API on a connection
# whose first BEGIN IMMEDIATE waits (in SQLite's own trace callback, before
# it takes any lock) until the file argv[4] exists; prints the failure's kind.
PAUSED_AT_BEGIN = """
import os, sqlite3, sys, time
sys.path.insert(0, %r)
import sqlmigrate
db, directory, ready, go, action = sys.argv[1:6]
conn = sqlite3.connect(db, isolation_level=None)
paused = []

def hold(sql):
    if sql.startswith("BEGIN IMMEDIATE") and not paused:
        paused.append(sql)
        open(ready, "w").close()
        deadline = time.time() + 30  # bounded: a failing test must end
        while not os.path.exists(go) and time.time() < deadline:
            time.sleep(0.005)

conn.set_trace_callback(hold)
try:
    migrator = sqlmigrate.Migrator(conn, directory, busy_timeout=0.3)
    {"down": migrator.down, "mark": lambda: migrator.mark(3),
     "atomic": lambda: migrator.up(atomic=True)}[action]()
except sqlmigrate.MigrationError as e:
    print(e.kind)
    sys.exit(1)
""" % ROOT


class NonTransactionalMigrationsRunOnce(TempDirTestCase):
    """A non-transactional migration commits as it goes, so the write lock
    cannot cover it: processes starting together must still run it once."""

    def write_appending_migration(self, inside=None, release=None):
        self.write_sql(1, "runs", "CREATE TABLE runs (pid INTEGER);", "DROP TABLE runs;")
        self.write("002-append.py", """
            import os, time
            transaction = False

            def up(db):
                db.execute("INSERT INTO runs VALUES (?)", (os.getpid(),))
                if %r:
                    open(%r, "w").close()
                    deadline = time.time() + 20  # bounded: a failing test must end
                    while not os.path.exists(%r) and time.time() < deadline:
                        time.sleep(0.005)
                else:
                    time.sleep(0.5)  # the window a second runner would enter
            """ % (bool(inside), inside, release))

    def test_processes_starting_together_run_a_non_transactional_migration_once(self):
        self.write_appending_migration()
        go = os.path.join(self.tmp, "go")
        workers = [subprocess.Popen([sys.executable, "-c", WORKER, self.db, self.dir, go],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                   for _ in range(4)]
        time.sleep(0.3)
        open(go, "w").close()
        results = [w.communicate(timeout=120) for w in workers]
        for worker, (out, err) in zip(workers, results):
            self.assertEqual(worker.returncode, 0, err.decode())
        applied = sorted(int(v) for out, _ in results for v in out.decode().strip().split(",") if v)
        self.assertEqual(applied, [1, 2])
        self.assertEqual(self.connect().execute("SELECT count(*) FROM runs").fetchone()[0], 1)
        self.assertEqual(self.schema_version(), "2")

    def start_first(self):
        inside, release = os.path.join(self.tmp, "inside"), os.path.join(self.tmp, "release")
        self.write_appending_migration(inside, release)
        return self.start_inside(inside, "up"), release

    def start_inside(self, inside, *command):
        """The CLI running `command` as a real process, once its migration
        has made the file `inside`."""
        first = subprocess.Popen([sys.executable, SCRIPT, "--db", self.db, "--dir", self.dir]
                                 + list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        def finish():  # it ends, and its pipes are closed, whatever the test did
            if first.poll() is None:
                first.kill()
            if not first.stdout.closed:
                first.communicate()
        self.addCleanup(finish)
        deadline = time.time() + 60
        while not os.path.exists(inside):
            if first.poll() is not None:
                self.fail(first.communicate()[1].decode())
            self.assertLess(time.time(), deadline)
            time.sleep(0.01)
        return first

    def test_a_second_runner_past_its_busy_timeout_fails_as_locked_and_changes_nothing(self):
        first, release = self.start_first()
        status, out, err = self.cli("--db", self.db, "--dir", self.dir,
                                    "--busy-timeout", "300", "up")
        self.assertEqual(status, 1, err)
        self.assertIn("locked by another process", err)
        self.assertEqual(self.connect().execute("SELECT count(*) FROM runs").fetchone()[0], 1)
        open(release, "w").close()
        out, err = first.communicate(timeout=60)
        self.assertEqual(first.returncode, 0, err.decode())
        self.assertEqual(self.connect().execute("SELECT count(*) FROM runs").fetchone()[0], 1)
        self.assertEqual(self.schema_version(), "2")

    def test_a_runner_killed_inside_a_non_transactional_migration_leaves_no_lock_behind(self):
        # What it did stays (it committed as it went), unrecorded: the next
        # run takes the migration again, at once.
        first, release = self.start_first()
        first.kill()
        first.wait()
        # Nor a journal of the lock file: the lock writes nothing.
        self.assertEqual(sorted(n for n in os.listdir(self.tmp) if n.startswith("app.db")),
                         ["app.db", "app.db-sqlmigrate-lock"])
        open(release, "w").close()
        status, out, err = self.cli("--db", self.db, "--dir", self.dir,
                                    "--busy-timeout", "300", "up")
        self.assertEqual(status, 0, err)
        self.assertEqual(self.schema_version(), "2")
        self.assertEqual(self.connect().execute("SELECT count(*) FROM runs").fetchone()[0], 2)

    def test_a_down_racing_a_non_transactional_up_waits_for_it_and_leaves_no_hole(self):
        # down of v1 (transactional) while v2 runs: without the lock it
        # rolled v1 back, then v2 was recorded above a hole in the history.
        first, release = self.start_first()
        status, out, err = self.cli("--db", self.db, "--dir", self.dir,
                                    "--busy-timeout", "300", "down")
        self.assertEqual(status, 1, err)
        self.assertIn("locked by another process", err)
        open(release, "w").close()
        out, err = first.communicate(timeout=60)
        self.assertEqual(first.returncode, 0, err.decode())
        versions = [r[0] for r in self.connect().execute(
            "SELECT version FROM metadata_migrations ORDER BY version")]
        self.assertEqual(versions, [1, 2])
        self.assertEqual(self.connect().execute("SELECT count(*) FROM runs").fetchone()[0], 1)

    def test_a_down_that_looked_for_the_lock_before_it_first_existed_leaves_no_hole(self):
        # No lock file yet (v1 is transactional): the down looks, finds none,
        # and is held just before its BEGIN while the first non-transactional
        # run makes the file and starts v2.  Without a second look under the
        # write lock, it rolled v1 back, then v2 was recorded above a hole.
        inside, release = os.path.join(self.tmp, "inside"), os.path.join(self.tmp, "release")
        self.write_appending_migration(inside, release)
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "up", "--to", "1")
        self.assertEqual(status, 0, err)
        self.race_the_first_lock("down", inside, "up")
        self.assertEqual(self.versions(), [1, 2])
        self.assertEqual(self.connect().execute("SELECT count(*) FROM runs").fetchone()[0], 1)

    def test_a_mark_or_atomic_up_that_looked_before_the_first_lock_existed_leaves_no_hole(self):
        # The first non-transactional run is a down here (v2 was marked, not
        # run): without a second look, v3 was recorded, then v2's record
        # deleted beneath it.
        for action in ("mark", "atomic"):
            with self.subTest(action=action):
                for name in os.listdir(self.tmp):
                    if name.startswith("app.db") or name in ("inside", "release"):
                        os.remove(os.path.join(self.tmp, name))
                first = self.start_non_transactional_down(mark=True, wait=False)
                self.race_the_first_lock(action, *first)
                self.assertEqual(self.versions(), [1])

    def race_the_first_lock(self, action, inside, *command):
        """`action` (see PAUSED_AT_BEGIN) held just before its BEGIN while
        the CLI's `command` makes the lock file for the first time and runs
        the non-transactional migration that makes `inside`: it must fail as
        locked; then that migration is released and ends well."""
        ready, go = os.path.join(self.tmp, "ready"), os.path.join(self.tmp, "go")
        for name in (ready, go):
            if os.path.exists(name):
                os.remove(name)
        self.assertFalse(os.path.exists(self.db + "-sqlmigrate-lock"))
        paused = subprocess.Popen([sys.executable, "-c", PAUSED_AT_BEGIN, self.db, self.dir,
                                   ready, go, action],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(lambda: paused.poll() is None and paused.kill())
        deadline = time.time() + 60
        while not os.path.exists(ready):
            if paused.poll() is not None:
                self.fail(paused.communicate()[1].decode())
            self.assertLess(time.time(), deadline)
            time.sleep(0.01)
        first = self.start_inside(inside, *command)
        open(go, "w").close()
        out, err = paused.communicate(timeout=60)
        self.assertEqual(paused.returncode, 1, err.decode())
        self.assertEqual(out.decode().strip(), "locked")
        open(os.path.join(self.tmp, "release"), "w").close()
        out, err = first.communicate(timeout=60)
        self.assertEqual(first.returncode, 0, err.decode())

    def start_non_transactional_down(self, mark=False, wait=True):
        """v1, v2 (non-transactional) applied (mark: recorded by `mark 2`, so
        no lock file yet), v3 pending; a runner rolling back to v1, inside
        v2's down.  Returns it and the file that releases it; without wait,
        the file it makes inside and its command, to start."""
        inside, release = os.path.join(self.tmp, "inside"), os.path.join(self.tmp, "release")
        self.write_sql(1, "runs", "CREATE TABLE runs (pid INTEGER);")
        self.write("002-slow-down.py", """
            import os, time
            transaction = False

            def up(db):
                pass

            def down(db):
                open(%r, "w").close()
                deadline = time.time() + 20  # bounded: a failing test must end
                while not os.path.exists(%r) and time.time() < deadline:
                    time.sleep(0.005)
            """ % (inside, release))
        for command in (["up", "--to", "1"], ["mark", "2"]) if mark else (["up"],):
            status, out, err = self.cli("--db", self.db, "--dir", self.dir, *command)
            self.assertEqual(status, 0, err)
        self.write_sql(3, "three", "CREATE TABLE three (x);")
        command = ("down", "--to", "1")
        return (self.start_inside(inside, *command), release) if wait else (inside,) + command

    def test_an_up_racing_a_non_transactional_down_waits_for_it_and_leaves_no_hole(self):
        # up of v3 (transactional) while v2's down runs: without the lock it
        # was recorded, then v2's record deleted beneath it.
        self.assert_waits_for_the_down_and_leaves_no_hole("up")

    def test_an_atomic_up_racing_a_non_transactional_down_is_refused_and_leaves_no_hole(self):
        # Without the run lock around it, v3 was recorded, then v2's record
        # deleted beneath it.  (Planned while v2's down runs, the run would
        # also apply v2 again, which --atomic cannot: refused at once; planned
        # before, it waits for the run lock: test_a_mark_or_atomic_up_...)
        self.assert_waits_for_the_down_and_leaves_no_hole(
            "up", "--atomic", error="cannot include non-transactional migrations")

    def test_a_mark_racing_a_non_transactional_down_waits_for_it_and_leaves_no_hole(self):
        # Without the lock, mark 3 recorded v3, then v2's record was deleted
        # beneath it.
        self.assert_waits_for_the_down_and_leaves_no_hole("mark", "3")

    def test_commands_that_change_no_history_do_not_wait_for_a_non_transactional_down(self):
        # The run lock is for changes to the history: a dry run (rolled
        # back), an --atomic up with nothing to apply and status run at once.
        first, release = self.start_non_transactional_down()
        for command in (["up", "--dry-run"], ["up", "--atomic", "--to", "1"], ["status"]):
            status, out, err = self.cli("--db", self.db, "--dir", self.dir,
                                        "--busy-timeout", "300", *command)
            self.assertEqual(status, 0, (command, err))
        open(release, "w").close()
        out, err = first.communicate(timeout=60)
        self.assertEqual(first.returncode, 0, err.decode())
        self.assertEqual(self.versions(), [1])

    def versions(self):
        return [r[0] for r in self.connect().execute(
            "SELECT version FROM metadata_migrations ORDER BY version")]

    def assert_waits_for_the_down_and_leaves_no_hole(self, *command, **expected):
        first, release = self.start_non_transactional_down()
        status, out, err = self.cli("--db", self.db, "--dir", self.dir,
                                    "--busy-timeout", "300", *command)
        self.assertEqual(status, 1, err)
        self.assertIn(expected.get("error", "locked by another process"), err)
        open(release, "w").close()
        out, err = first.communicate(timeout=60)
        self.assertEqual(first.returncode, 0, err.decode())
        self.assertEqual(self.versions(), [1])
        self.assertEqual(self.schema_version(), "1")

    def write_wal_migration(self):
        self.write_sql(1, "one", "CREATE TABLE one (x);")
        self.write_sql(2, "wal", "PRAGMA journal_mode = WAL;", options="transaction:false")

    @unittest.skipUnless(hasattr(os, "geteuid") and os.geteuid() == 0, "needs root (CI runs so)")
    def test_the_lock_file_root_creates_belongs_to_the_databases_owner_with_its_mode(self):
        # As SQLite does for its journals: else the application's own user,
        # which owns the database, could not take the lock root's run made.
        self.write_wal_migration()
        self.connect().execute("CREATE TABLE existing (x)")
        os.chown(self.db, 65534, 65534)
        os.chmod(self.db, 0o660)
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "up")
        self.assertEqual(status, 0, err)
        lock = os.stat(self.db + "-sqlmigrate-lock")
        self.assertEqual((lock.st_uid, lock.st_gid, lock.st_mode & 0o777), (65534, 65534, 0o660))

    def test_a_lock_file_linked_to_the_database_is_named_not_reported_as_another_process(self):
        # Locking it would lock the database against the runner itself.
        self.write_wal_migration()
        self.assertEqual(self.cli("--db", self.db, "--dir", self.dir, "up", "--to", "1")[0], 0)
        os.symlink(self.db, self.db + "-sqlmigrate-lock")
        status, out, err = self.cli("--db", self.db, "--dir", self.dir,
                                    "--busy-timeout", "300", "up")
        self.assertEqual(status, 1, err)
        self.assertIn(self.db + "-sqlmigrate-lock", err)
        self.assertNotIn("another process", err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertEqual(self.schema_version(), "1")

    def test_a_lock_file_that_cannot_be_written_is_named_and_nothing_is_applied(self):
        self.write_wal_migration()
        self.assertEqual(self.cli("--db", self.db, "--dir", self.dir, "up", "--to", "1")[0], 0)
        os.mkdir(self.db + "-sqlmigrate-lock")  # cannot be opened as a file, even by root
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "up")
        self.assertEqual(status, 1, err)
        self.assertIn(self.db + "-sqlmigrate-lock", err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertEqual(self.schema_version(), "1")
        self.assertEqual(self.connect().execute("PRAGMA journal_mode").fetchone()[0], "delete")

    def test_a_lock_file_that_cannot_be_opened_stops_every_change_to_the_history(self):
        # It may be held (by a process that can open it): a down, a
        # transactional up or a mark going ahead without it could change the
        # history beneath a non-transactional migration in flight.
        self.write_sql(1, "one", "CREATE TABLE one (x);", "DROP TABLE one;")
        self.assertEqual(self.cli("--db", self.db, "--dir", self.dir, "up", "--to", "1")[0], 0)
        self.write_sql(3, "three", "CREATE TABLE three (x);")
        os.mkdir(self.db + "-sqlmigrate-lock")  # cannot be opened as a file, even by root
        for command in (["down"], ["mark", "3"], ["up", "--atomic", "--to", "1"]):
            status, out, err = self.cli("--db", self.db, "--dir", self.dir, *command)
            if command[-1] == "1":  # nothing to apply: no change, no lock
                self.assertEqual(status, 0, err)
                continue
            self.assertEqual(status, 1, (command, err))
            self.assertIn(self.db + "-sqlmigrate-lock", err)
            self.assertEqual(len(err.strip().splitlines()), 1, err)
            self.assertEqual(self.versions(), [1])


HOLDER = """
import os, sqlite3, sys, time
db, start, locked = sys.argv[1], sys.argv[2], sys.argv[3]
while not os.path.exists(start):
    time.sleep(0.005)
conn = sqlite3.connect(db, isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
open(locked, "w").close()
time.sleep(1)
conn.execute("COMMIT")
"""


class LockedWhileAMigrationRuns(TempDirTestCase):
    def test_wal_migration_waits_for_a_concurrent_writer_within_the_busy_timeout(self):
        # SQLite answers PRAGMA journal_mode = WAL with SQLITE_BUSY at once,
        # without calling the busy handler, while another connection holds
        # the write lock.  Another process takes the lock for 1 s just before
        # the pragma runs; --busy-timeout 20000 allows for that wait.
        start, locked = os.path.join(self.tmp, "start"), os.path.join(self.tmp, "locked")
        self.write_sql(1, "one", "CREATE TABLE one (x);")
        self.write("002-wal.py", """
            import os, time
            transaction = False

            def up(db):
                open(%r, "w").close()
                while not os.path.exists(%r):
                    time.sleep(0.005)
                db.execute("PRAGMA journal_mode = WAL")
            """ % (start, locked))
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, self.db, start, locked])
        self.addCleanup(holder.wait)
        status, out, err = self.cli("--db", self.db, "--dir", self.dir,
                                    "--busy-timeout", "20000", "up")
        self.assertEqual(status, 0, err)
        self.assertEqual(self.connect().execute("PRAGMA journal_mode").fetchone()[0], "wal")
        self.assertEqual(self.schema_version(), "2")

    def test_a_lock_the_migration_holds_itself_through_a_second_connection_is_named(self):
        self.write("001-second-connection.py", """
            import sqlite3

            def up(db):
                db.execute("CREATE TABLE one (x)")
                path = db.execute("PRAGMA database_list").fetchone()[2]
                other = sqlite3.connect(path, timeout=0.2)
                other.execute("CREATE TABLE two (x)")
            """)
        self.connect().execute("CREATE TABLE existing (x)")
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "up")
        self.assertEqual(status, 1, err)
        self.assertIn("001-second-connection.py", err)
        self.assertIn("second connection", err)
        self.assertEqual(self.tables(), ["existing"])

    def test_a_lock_held_by_another_process_before_the_migration_runs_says_so(self):
        self.write_sql(1, "one", "CREATE TABLE one (x);")
        self.connect().execute("CREATE TABLE existing (x)")
        start, locked = os.path.join(self.tmp, "start"), os.path.join(self.tmp, "locked")
        open(start, "w").close()
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, self.db, start, locked])
        self.addCleanup(holder.wait)
        while not os.path.exists(locked):
            time.sleep(0.005)
        status, out, err = self.cli("--db", self.db, "--dir", self.dir,
                                    "--busy-timeout", "100", "up")
        self.assertEqual(status, 1, err)
        self.assertIn("locked by another process", err)
        self.assertNotIn("second connection", err)


class NonTransactionalDownCutShort(TempDirTestCase):
    """A non-transactional down that does not finish (killed, or failed)
    leaves its migration recorded but partly undone: no command may then
    report the database current as if its effects were all there."""

    def write_migrations(self, inside, release):
        self.write_sql(1, "t", "CREATE TABLE t (a);", "DROP TABLE t;")
        self.write("002-audit.py", """
            import os, time
            transaction = False

            def up(db):
                db.execute("CREATE TABLE IF NOT EXISTS audit (x)")
                db.execute("CREATE INDEX IF NOT EXISTS t_a ON t (a)")

            def down(db):
                db.execute("DROP INDEX IF EXISTS t_a")
                open(%r, "w").close()
                deadline = time.time() + 20  # bounded: a failing test must end
                while not os.path.exists(%r) and time.time() < deadline:
                    time.sleep(0.005)
                if os.path.exists(%r + "-fail"):
                    raise RuntimeError("the down fails half-way")
                db.execute("DROP TABLE IF EXISTS audit")
            """ % (inside, release, release))

    def objects(self):
        return sorted(r[0] for r in self.connect().execute(
            "SELECT name FROM sqlite_master WHERE name IN ('audit', 't_a')"))

    def cut_short(self, how):
        inside, release = os.path.join(self.tmp, "inside"), os.path.join(self.tmp, "release")
        self.write_migrations(inside, release)
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "up")
        self.assertEqual(status, 0, err)
        if how == "killed":
            down = subprocess.Popen([sys.executable, "-m", "sqlmigrate", "--db", self.db,
                                     "--dir", self.dir, "down"], cwd=ROOT,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            deadline = time.time() + 60
            while not os.path.exists(inside):
                if down.poll() is not None:
                    self.fail(down.communicate())
                self.assertLess(time.time(), deadline)
                time.sleep(0.01)
            down.kill()
            down.communicate()
        else:
            open(release, "w").close()
            open(release + "-fail", "w").close()
            status, out, err = self.cli("--db", self.db, "--dir", self.dir, "down")
            self.assertEqual(status, 1, err)
            self.assertIn("shown as partly rolled back: run down again, or up", err)
        os.remove(inside)
        self.assertEqual(self.objects(), ["audit"])  # the index went, the table not yet
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "status", "--check")
        self.assertEqual(status, 1, out + err)
        self.assertIn("Partly rolled back v2", out)
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "verify")
        self.assertEqual(status, 1, out + err)
        return release

    def test_up_after_a_killed_non_transactional_down_applies_it_again(self):
        self.cut_short("killed")
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "up")
        self.assertEqual(status, 0, err)
        self.assertIn("Applied v2", out)
        self.assertEqual(self.objects(), ["audit", "t_a"])
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "status", "--check")
        self.assertEqual(status, 0, out + err)

    def test_mark_takes_a_partly_rolled_back_migration_as_applied(self):
        self.cut_short("killed")
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "mark", "2")
        self.assertEqual(status, 0, err)
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "status", "--check")
        self.assertEqual(status, 0, out + err)

    def test_down_after_a_failed_non_transactional_down_finishes_it(self):
        release = self.cut_short("failed")
        os.remove(release + "-fail")
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "down")
        self.assertEqual(status, 0, err)
        self.assertEqual(self.objects(), [])
        self.assertEqual([r[0] for r in self.connect().execute(
            "SELECT version FROM metadata_migrations")], [1])
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "status", "--check")
        self.assertEqual(status, 1, out + err)  # v2 pending
        self.assertNotIn("Partly rolled back", out)

    def test_up_strict_after_a_cut_short_down_applies_it_again(self):
        # The state's own advice is "up to apply it again": --strict refuses
        # drift up cannot mend (an edited or deleted file), not this.
        self.cut_short("killed")
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "up", "--strict")
        self.assertEqual(status, 0, err)
        self.assertIn("Applied v2", out)
        self.assertEqual(self.objects(), ["audit", "t_a"])

    def test_an_edited_file_partly_rolled_back_is_shown_as_both_and_not_offered_mark(self):
        # `mark` would record the half-undone migration as whole: never advised.
        self.cut_short("killed")
        with open(os.path.join(self.dir, "002-audit.py"), "a") as f:
            f.write("# edited\n")
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "status", "--json")
        row = json.loads(out)["migrations"][1]
        self.assertEqual((row["state"], row["changed"]), ("partly rolled back", True))
        self.assertEqual(json.loads(out)["migrations"][0]["changed"], False)
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "verify")
        self.assertEqual(status, 1, out + err)
        self.assertIn("partly rolled back", out + err)
        self.assertIn("was changed after it was applied", out + err)
        self.assertNotIn("mark", out + err)
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "up", "--strict")
        self.assertEqual(status, 1, out + err)
        self.assertEqual(self.objects(), ["audit"])
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "up")
        self.assertEqual(status, 0, err)
        self.assertIn("Applied v2", out)
        self.assertEqual(self.objects(), ["audit", "t_a"])

    def test_a_down_finished_after_the_file_became_transactional_leaves_no_mark(self):
        # The file edited to transaction = True before the down is run
        # again: that down ends the mark too, else the next up of v2 would
        # read as partly rolled back and every later up would run it again.
        release = self.cut_short("failed")
        os.remove(release + "-fail")
        path = os.path.join(self.dir, "002-audit.py")
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text.replace("transaction = False", "transaction = True"))
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "down")
        self.assertEqual(status, 0, err)
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "up")
        self.assertEqual(status, 0, err)
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "status", "--check")
        self.assertEqual(status, 0, out + err)
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "up")
        self.assertEqual(status, 0, err)
        self.assertNotIn("Applied v2", out)


class NonTransactionalDownCutShortBackfill(TempDirTestCase):
    """Which rows a cut-short down's backfill reached (or whether it began)
    is not something the up's backfill can know: run again from its start
    it did rows twice (n = n + 1 on rows the down never reached)."""

    def write_counting(self, fail):
        self.write_sql(1, "t", "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);\n"
                               "INSERT INTO t (n) VALUES (0), (0), (0), (0), (0);", "DROP TABLE t;")
        self.write("002-count.py", """
            import os, sqlmigrate
            transaction = False

            def minus(db, batch):
                if os.path.exists(%(fail)r + "-at-3") and batch.last >= (3,):
                    raise RuntimeError("the down fails half-way")
                return db.execute("UPDATE t SET n = n - 1 WHERE " + batch.where,
                                  batch.params).rowcount

            def up(db):
                sqlmigrate.backfill(db, "t", set="n = n + 1", batch_rows=1, target_ms=None)

            def down(db):
                if os.path.exists(%(fail)r + "-first"):
                    raise RuntimeError("the down fails before its backfill")
                sqlmigrate.backfill(db, "t", apply=minus, batch_rows=1, target_ms=None)
            """ % {"fail": fail})

    def counts(self):
        return [r[0] for r in self.connect().execute("SELECT n FROM t ORDER BY id")]

    def test_up_refuses_a_backfill_whose_down_was_cut_short_and_down_finishes_it(self):
        fail = os.path.join(self.tmp, "fail")
        self.write_counting(fail)
        for where, left in (("-first", [1, 1, 1, 1, 1]), ("-at-3", [0, 0, 1, 1, 1])):
            status, out, err = self.cli("--db", self.db, "--dir", self.dir, "up")
            self.assertEqual(status, 0, err)
            open(fail + where, "w").close()
            status, out, err = self.cli("--db", self.db, "--dir", self.dir, "down")
            self.assertEqual(status, 1, err)
            self.assertEqual(self.counts(), left)
            status, out, err = self.cli("--db", self.db, "--dir", self.dir, "up")
            self.assertEqual(status, 1, out + err)
            self.assertIn("run down to finish rolling it back", err)
            self.assertEqual(self.counts(), left)  # no row done twice
            os.remove(fail + where)
            status, out, err = self.cli("--db", self.db, "--dir", self.dir, "down")
            self.assertEqual(status, 0, err)
            self.assertEqual(self.counts(), [0, 0, 0, 0, 0])
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "up")
        self.assertEqual(status, 0, err)
        self.assertEqual(self.counts(), [1, 1, 1, 1, 1])
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "status", "--check")
        self.assertEqual(status, 0, out + err)


class KilledMidRun(TempDirTestCase):
    """SIGKILL at random instants; the database must stay intact and exact."""

    MIGRATIONS = 8
    ROWS = 20000

    def write_slow_migrations(self):
        for version in range(1, self.MIGRATIONS + 1):
            self.write("%03d-slow-%d.py" % (version, version), '''
                import time

                def up(db):
                    db.execute("CREATE TABLE m%(v)d (x INTEGER)")
                    db.executemany("INSERT INTO m%(v)d VALUES (?)", ((i,) for i in range(%(rows)d)))
                    time.sleep(0.02)
                    db.execute("UPDATE m%(v)d SET x = x + 1")
                ''' % {"v": version, "rows": self.ROWS})

    def check_consistent(self, conn, trial):
        self.assertEqual(conn.execute("PRAGMA integrity_check").fetchone()[0], "ok", trial)
        tables = set(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'"))
        version = 0
        if "metadata" in tables:
            row = conn.execute("SELECT value FROM metadata WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else 0
            recorded = [r[0] for r in conn.execute(
                "SELECT version FROM metadata_migrations ORDER BY version")]
            self.assertEqual(recorded, list(range(1, version + 1)), trial)
        for v in range(1, self.MIGRATIONS + 1):
            present = "m%d" % v in tables
            self.assertEqual(present, v <= version, "%s: m%d present=%s at version %d"
                             % (trial, v, present, version))
            if present:
                self.assertEqual(conn.execute("SELECT count(*), min(x) FROM m%d" % v).fetchone(),
                                 (self.ROWS, 1), trial)
        return version

    def start_up(self, db):
        return subprocess.Popen([sys.executable, SCRIPT, "--db", db, "--dir", self.dir, "up"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def test_kill_9_at_random_moments_leaves_a_consistent_database(self):
        self.write_slow_migrations()
        # Kill moments spread over one whole run as timed on this machine now,
        # so a loaded machine (CI, the matrix) still sees kills at many stages.
        started = time.time()
        self.start_up(os.path.join(self.tmp, "timing.db")).wait()
        whole_run = time.time() - started
        rng = random.Random(20261121)
        versions_seen = set()
        for trial in range(20):
            db = os.path.join(self.tmp, "trial%d.db" % trial)
            proc = self.start_up(db)
            time.sleep(rng.uniform(0.02, 1.0) * whole_run)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            if not os.path.exists(db):
                versions_seen.add(0)
                continue
            conn = sqlite3.connect(db)
            try:
                versions_seen.add(self.check_consistent(conn, "trial %d" % trial))
            finally:
                conn.close()
            sqlmigrate.migrate(db, self.dir)
            conn = sqlite3.connect(db)
            try:
                self.assertEqual(self.check_consistent(conn, "trial %d after up" % trial),
                                 self.MIGRATIONS)
            finally:
                conn.close()
        # The kills must have landed at different points, or the test proves little.
        self.assertGreaterEqual(len(versions_seen), 3, versions_seen)


if __name__ == "__main__":
    unittest.main()
