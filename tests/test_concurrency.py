"""Real processes: many workers migrating one database at once, and kill -9."""

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

    def test_kill_9_at_random_moments_leaves_a_consistent_database(self):
        self.write_slow_migrations()
        rng = random.Random(20261121)
        versions_seen = set()
        for trial in range(20):
            db = os.path.join(self.tmp, "trial%d.db" % trial)
            proc = subprocess.Popen([sys.executable, SCRIPT, "--db", db, "--dir", self.dir, "up"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.05, 0.9))
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
