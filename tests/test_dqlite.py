"""The runner on dqlite, a Raft-replicated SQLite (Canonical), through the
dqlite-dbapi client: a live 3-node cluster on 127.0.0.1, nothing mocked.

    bash .ci/dqlite.sh install && bash .ci/dqlite.sh start
    "$(bash .ci/dqlite.sh install)" -m unittest tests.test_dqlite -v
    bash .ci/dqlite.sh stop

Skips (with the reason) when dqlitedbapi is not importable (it needs Python
3.13+) or no cluster is running; .ci/run fails if anything was skipped.  The
cluster comes from $DQLITE_ADDRESSES/$DQLITE_PIDS or the state file that
`.ci/dqlite.sh start` writes.  Each test uses a database of its own (dqlite
serves named databases), so tests do not see each other's tables.  The
leader-loss test kills a node and restarts the cluster afterwards."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import unittest

from tests.support import ROOT, TempDirTestCase, sqlmigrate

try:
    import dqlitedbapi
except ImportError:
    dqlitedbapi = None

CLUSTER_SH = os.path.join(ROOT, ".ci", "dqlite.sh")
STATE_FILE = os.path.join(os.environ.get("SQLMIGRATE_DQLITE_DIR", "/tmp/sqlmigrate-dqlite"),
                          "cluster.env")
BUNDLED = os.path.join(ROOT, "migrations")
# The bundled migrations but 006 (PRAGMA journal_mode = WAL), which dqlite refuses.
PORTABLE = [name for name in sorted(os.listdir(BUNDLED)) if name[:1].isdigit()
            and not name.startswith("006-")]


def _cluster():
    """{DQLITE_ADDRESSES: [...], DQLITE_PIDS: [...]} or None."""
    env = {}
    if os.path.exists(STATE_FILE):
        with open(STATE_FILE) as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                env[key] = value.strip("'")
    for key in ("DQLITE_ADDRESSES", "DQLITE_PIDS"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    if not env.get("DQLITE_ADDRESSES"):
        return None
    return {"addresses": env["DQLITE_ADDRESSES"].split(),
            "pids": [int(p) for p in env.get("DQLITE_PIDS", "").split()]}


def _why_skip():
    if dqlitedbapi is None:
        return ("dqlitedbapi is not importable on Python %s (pip install dqlite-dbapi, "
                "Python >= 3.13; see .ci/dqlite.sh install)" % sys.version.split()[0])
    cluster = _cluster()
    if cluster is None:
        return "no dqlite cluster ($DQLITE_ADDRESSES unset, no %s): bash .ci/dqlite.sh start" \
            % STATE_FILE
    try:
        dqlitedbapi.connect(cluster["addresses"][0], database="ping", timeout=5).close()
    except dqlitedbapi.Error as e:
        return "the dqlite cluster at %s does not answer (%s): bash .ci/dqlite.sh start" % (
            cluster["addresses"][0], e)
    return None


SKIP = _why_skip()


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _leader(addresses):
    for address in addresses:
        try:
            out = subprocess.run(["dqlite", "-s", address, "ci", ".leader"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 timeout=10).stdout.decode().strip()
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out:
            return out
    return None


def _restart_cluster():
    for command in ("stop", "start"):
        subprocess.run(["bash", CLUSTER_SH, command], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=120)


# A runner in a process of its own: migrate(connection through ADDRESS); exit
# 0, or 1 with the error's one line.
RUNNER = textwrap.dedent("""
    import sys, dqlitedbapi, sqlmigrate
    address, database, directory, busy = sys.argv[1:5]
    conn = dqlitedbapi.connect(address, database=database, timeout=10,
                               busy_timeout=float(busy))
    try:
        results = sqlmigrate.migrate(conn, directory)
    except sqlmigrate.MigrationError as e:
        print("error: %s" % e, file=sys.stderr)
        sys.exit(1)
    print("applied %s" % " ".join(str(r.version) for r in results))
""")


class _CountingCursor(object):
    def __init__(self, cursor, execute):
        self._cursor, self.execute = cursor, execute

    def __getattr__(self, name):
        return getattr(self._cursor, name)

    def __iter__(self):
        return iter(self._cursor)


@unittest.skipIf(SKIP, SKIP)
class DqliteTestCase(TempDirTestCase):
    def setUp(self):
        super().setUp()
        self.cluster = _cluster()
        self.addresses = self.cluster["addresses"]
        # A database of our own on every test (and every run: dqlite keeps
        # data until the cluster is stopped).
        self.database = "t%d_%s" % (os.getpid(), self._testMethodName)
        for name in PORTABLE:
            shutil.copy(os.path.join(BUNDLED, name), self.dir)

    def dqlite(self, node=0, **kwargs):
        kwargs.setdefault("timeout", 10)
        conn = dqlitedbapi.connect(self.addresses[node], database=self.database, **kwargs)
        self.addCleanup(self._close, conn)
        return conn

    @staticmethod
    def _close(conn):
        try:
            conn.close()
        except dqlitedbapi.Error:
            pass  # a connection the leader's death invalidated

    def names(self, conn, kind="table"):
        return sorted(row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = ? AND name NOT LIKE 'sqlite_%'",
            (kind,)).fetchall())

    def history(self, conn):
        return [row[0] for row in conn.execute(
            "SELECT version FROM metadata_migrations ORDER BY version").fetchall()]

    def version(self, conn):
        return int(conn.execute(
            "SELECT value FROM metadata WHERE key = 'schema_version'").fetchone()[0])

    def run_runner(self, node, busy=10.0, directory=None):
        env = dict(os.environ, PYTHONPATH=ROOT)
        return subprocess.Popen(
            [sys.executable, "-c", RUNNER, self.addresses[node], self.database,
             directory or self.dir, str(busy)], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, universal_newlines=True)


class BundledMigrations(DqliteTestCase):
    def test_bundled_migrations_go_up_report_status_verify_and_come_down(self):
        conn = self.dqlite(node=1)
        migrator = sqlmigrate.Migrator(conn, self.dir)
        results = migrator.up()
        self.assertEqual([r.version for r in results], [1, 2, 3, 4, 5])
        self.assertEqual(self.history(conn), [1, 2, 3, 4, 5])
        status = migrator.status()
        self.assertTrue(status["clean"])
        self.assertEqual(status["current_version"], 5)
        self.assertEqual(migrator.verify(), [])
        # 005 dropped a column through the rebuild helper; 004 added columns.
        columns = [row[1] for row in conn.execute("PRAGMA table_info(ollama_servers)")]
        self.assertNotIn("legacy_notes", columns)
        self.assertIn("available_models", columns)
        self.assertEqual(self.names(conn, "trigger"), ["trg_usage_logs_touch_key"])
        # The caller's connection as it was: foreign keys on (dqlite's default).
        self.assertEqual(conn.execute("PRAGMA foreign_keys").fetchall(), [(1,)])
        # Replicated: another node's connection sees the same schema.
        self.assertEqual(self.history(self.dqlite(node=2)), [1, 2, 3, 4, 5])

        # 004 has no down: 005's down (a plain ALTER TABLE) is as far as it goes.
        self.assertEqual([r.version for r in migrator.down()], [5])
        columns = [row[1] for row in conn.execute("PRAGMA table_info(ollama_servers)")]
        self.assertIn("legacy_notes", columns)
        self.assertEqual(self.history(conn), [1, 2, 3, 4])
        self.assertEqual(migrator.status()["current_version"], 4)
        self.assertEqual(migrator.verify(), [])
        self.assertEqual(conn.execute("PRAGMA foreign_keys").fetchall(), [(1,)])

    def test_a_no_op_start_up_sends_one_query_as_on_sqlite3(self):
        conn = self.dqlite()
        sqlmigrate.migrate(conn, self.dir)
        sent = []

        class Counting(type(conn)):
            """The real client, counting what its cursors send."""
            def cursor(self):
                cursor = super().cursor()
                execute = cursor.execute

                def counted(sql, *args):
                    sent.append(sql)
                    return execute(sql, *args)
                return _CountingCursor(cursor, counted)
        Counting.__module__ = type(conn).__module__  # still the dqlitedbapi driver
        counting = Counting(self.addresses[0], database=self.database, timeout=10)
        self.addCleanup(self._close, counting)
        self.assertEqual(sqlmigrate.migrate(counting, self.dir), [])
        self.assertEqual(len(sent), 1, sent)
        self.assertIn("schema_version", sent[0])
        # A feature that depends on the server's SQLite asks for its version then.
        self.assertTrue(sqlmigrate.drop_column(counting, "ollama_servers", "url"))
        self.assertIn("SELECT sqlite_version()", sent)

    def test_a_dry_run_changes_nothing_and_lists_the_statements(self):
        conn = self.dqlite()
        results = sqlmigrate.Migrator(conn, self.dir).up(dry_run=True)
        self.assertEqual([r.version for r in results], [1, 2, 3, 4, 5])
        self.assertTrue(any("CREATE TABLE ollama_servers" in sql
                            for sql in results[0].executed_sql))
        self.assertEqual(self.names(conn), [])
        self.assertEqual(conn.execute("PRAGMA foreign_keys").fetchall(), [(1,)])

    def test_a_table_rebuild_keeps_rows_that_reference_it(self):
        # rebuild_table copies api_keys with foreign keys off (usage_logs rows
        # point at it ON DELETE CASCADE: with them on, dropping the old table
        # would delete those rows) and legacy_alter_table on for the rename.
        self.write("006-rebuild-keys.py", """
            import sqlmigrate
            def up(db):
                db.execute("INSERT INTO api_keys (id, key_name, hashed_key) VALUES (7, 'k', 'h')")
                db.execute("INSERT INTO usage_logs (api_key_id, endpoint, status_code) "
                           "VALUES (7, '/x', 200)")
                sqlmigrate.rebuild_table(db, "api_keys", drop=["rate_limit_window_minutes"])
        """)
        conn = self.dqlite()
        self.assertEqual([r.version for r in sqlmigrate.migrate(conn, self.dir)],
                         [1, 2, 3, 4, 5, 6])
        columns = [row[1] for row in conn.execute("PRAGMA table_info(api_keys)")]
        self.assertNotIn("rate_limit_window_minutes", columns)
        self.assertIn("rate_limit_requests", columns)
        self.assertEqual(conn.execute("SELECT api_key_id FROM usage_logs").fetchall(), [(7,)])
        self.assertEqual(conn.execute("PRAGMA foreign_keys").fetchall(), [(1,)])
        self.assertEqual(conn.execute("PRAGMA legacy_alter_table").fetchall(), [(0,)])

    def test_the_journal_mode_migration_is_refused_before_it_reaches_a_node(self):
        shutil.copy(os.path.join(BUNDLED, "006-enable-wal.sql"), self.dir)
        conn = self.dqlite()
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(conn, self.dir)
        text = str(caught.exception)
        self.assertIn("006-enable-wal.sql", text)
        self.assertIn("PRAGMA journal_mode", text)
        self.assertIn("not sent", text)
        self.assertIn("dqlite", text)
        # Every node is alive, the migrations before it were kept, 006 was not recorded.
        self.assertTrue(all(_alive(pid) for pid in self.cluster["pids"]))
        self.assertEqual(self.history(conn), [1, 2, 3, 4, 5])
        self.assertEqual(self.version(conn), 5)
        conn.execute("SELECT 1").fetchall()

    def test_journal_mode_setters_are_refused_however_spelled_and_reads_pass(self):
        self.write("006-modes.py", """
            def up(db):
                assert db.execute("PRAGMA journal_mode").fetchall()  # a read is fine
                db.execute("-- why\\n PRAGMA main . \\"journal_mode\\" ( 'delete' )")
        """)
        conn = self.dqlite()
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(conn, self.dir)
        self.assertIn("PRAGMA journal_mode", str(caught.exception))
        self.assertIn("006-modes.py", str(caught.exception))
        self.assertTrue(all(_alive(pid) for pid in self.cluster["pids"]))
        self.assertEqual(self.version(conn), 5)


class Rollbacks(DqliteTestCase):
    def test_a_failing_migration_is_rolled_back(self):
        self.write("006-fails.py", """
            def up(db):
                db.execute("CREATE TABLE half_done (id INTEGER PRIMARY KEY)")
                db.execute("INSERT INTO api_keys (key_name, hashed_key) VALUES ('a', 'b')")
                raise RuntimeError("boom")
        """)
        conn = self.dqlite()
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(conn, self.dir)
        self.assertIn("boom", str(caught.exception))
        self.assertIn("006-fails.py", str(caught.exception))
        self.assertNotIn("half_done", self.names(conn))
        self.assertEqual(conn.execute("SELECT count(*) FROM api_keys").fetchall(), [(0,)])
        self.assertEqual(self.history(conn), [1, 2, 3, 4, 5])
        self.assertEqual(self.version(conn), 5)
        self.assertFalse(conn.in_transaction)
        self.assertEqual(conn.execute("PRAGMA foreign_keys").fetchall(), [(1,)])

    def test_a_foreign_key_violation_is_rolled_back(self):
        self.write_sql(6, "orphan-usage-log",
                       "CREATE TABLE extra (id INTEGER PRIMARY KEY);\n"
                       "INSERT INTO usage_logs (api_key_id, endpoint, status_code) "
                       "VALUES (42, '/x', 200);")
        conn = self.dqlite()
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(conn, self.dir)
        self.assertEqual(caught.exception.kind, "foreign-keys")
        self.assertIn("usage_logs", str(caught.exception))
        self.assertNotIn("extra", self.names(conn))
        self.assertEqual(conn.execute("SELECT count(*) FROM usage_logs").fetchall(), [(0,)])
        self.assertEqual(self.history(conn), [1, 2, 3, 4, 5])
        self.assertEqual(conn.execute("PRAGMA foreign_keys").fetchall(), [(1,)])


class CommandLine(DqliteTestCase):
    def dqlite_cli(self, address, *args):
        return self.cli("--driver", "dqlitedbapi", "--db", address, "--dir", self.dir, *args)

    def test_the_cli_migrates_a_cluster_database_named_by_address(self):
        address = "%s/%s" % (self.addresses[0], self.database)
        status, out, err = self.dqlite_cli(address, "up")
        self.assertEqual(status, 0, err)
        self.assertIn("Applied 5 migration(s)", out)
        # Through another node: the same, replicated database.
        status, out, err = self.dqlite_cli("%s/%s" % (self.addresses[2], self.database),
                                           "status", "--json")
        self.assertEqual(status, 0, err)
        self.assertEqual(json.loads(out)["current_version"], 5)
        status, out, err = self.dqlite_cli(address, "down")
        self.assertEqual(status, 0, err)
        self.assertEqual(self.history(self.dqlite(node=1)), [1, 2, 3, 4])

    def test_an_address_that_does_not_answer_exits_1_naming_it(self):
        with socket.socket() as free:  # a port nothing listens on
            free.bind(("127.0.0.1", 0))
            address = "127.0.0.1:%d/%s" % (free.getsockname()[1], self.database)
        status, out, err = self.cli("--driver", "dqlitedbapi", "--db", address,
                                    "--busy-timeout", "2000", "--dir", self.dir, "up")
        self.assertEqual(status, 1, err)
        self.assertIn("no database server answers at %s" % address, err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)

    def test_a_file_path_with_a_server_driver_is_a_bad_request(self):
        status, out, err = self.dqlite_cli(self.db, "status")
        self.assertEqual(status, 2, err)
        self.assertIn("takes a server address", err)
        self.assertFalse(os.path.exists(self.db))

    def test_a_port_outside_1_to_65535_is_a_bad_request(self):
        for address in ("127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:99999999999999999999"):
            status, out, err = self.dqlite_cli(address, "status")
            self.assertEqual(status, 2, err)
            self.assertIn("--db %s: the port must be 1 to 65535" % address, err)
            self.assertEqual(len(err.strip().splitlines()), 1, err)

    def test_a_backup_through_the_cluster_is_refused_and_up_backup_changes_nothing(self):
        address = "%s/%s" % (self.addresses[0], self.database)
        target = os.path.join(self.tmp, "copy.db")
        status, out, err = self.dqlite_cli(address, "backup", target)
        self.assertEqual(status, 1, err)
        self.assertIn("cannot back up", err)
        self.assertFalse(os.path.exists(target))
        status, out, err = self.dqlite_cli(address, "up", "--backup")
        self.assertEqual(status, 1, err)
        self.assertIn("cannot back up", err)
        self.assertEqual(self.names(self.dqlite()), [])


class ServerAddresses(unittest.TestCase):
    """--db HOST:PORT[/DATABASE] as read before any client or server is asked
    (runs without dqlitedbapi or a cluster)."""

    def test_an_address_gives_its_host_port_and_database(self):
        self.assertEqual(sqlmigrate._server_address("127.0.0.1:9001/app", "dqlitedbapi"),
                         ("127.0.0.1:9001", "app"))
        self.assertEqual(sqlmigrate._server_address("[::1]:65535", "dqlitedbapi"),
                         ("[::1]:65535", None))
        self.assertEqual(sqlmigrate._server_address("node-1:1", "dqlitedbapi"),
                         ("node-1:1", None))

    def test_a_port_outside_1_to_65535_is_a_bad_request(self):
        for address in ("127.0.0.1:0", "127.0.0.1:00000", "127.0.0.1:65536", "[::1]:70000/app",
                        "127.0.0.1:99999999999999999999"):
            with self.assertRaises(sqlmigrate.RequestError, msg=address) as caught:
                sqlmigrate._server_address(address, "dqlitedbapi")
            self.assertEqual(str(caught.exception),
                             "--db %s: the port must be 1 to 65535" % address)

    def test_an_address_without_a_port_is_a_bad_request(self):
        for address in ("host:", ":9001", "/tmp/app.db", "host"):
            with self.assertRaises(sqlmigrate.RequestError, msg=address) as caught:
                sqlmigrate._server_address(address, "dqlitedbapi")
            self.assertIn("takes a server address", str(caught.exception))


class Concurrency(DqliteTestCase):
    def test_two_runners_through_different_nodes_apply_each_migration_once(self):
        # 006 holds the write lock for a second, so the runners overlap.
        self.write("006-slow.py", "import time\n\ndef up(db):\n"
                   "    db.execute('CREATE TABLE slow (id INTEGER PRIMARY KEY)')\n"
                   "    time.sleep(1)\n")
        for busy in (10.0, 0.05):
            with self.subTest(busy_timeout=busy):
                self.database = "t%d_%s_%d" % (os.getpid(), self._testMethodName, busy * 100)
                runners = [self.run_runner(node, busy) for node in (1, 2)]
                outcomes = [runner.communicate(timeout=60) + (runner.returncode,)
                            for runner in runners]
                for out, err, status in outcomes:
                    # Exit 0, or a clean "locked" report (a short busy timeout).
                    self.assertTrue(status == 0 or status == 1 and "locked" in err
                                    and "Traceback" not in err, (status, out, err))
                self.assertIn(0, [status for _, _, status in outcomes], outcomes)
                conn = self.dqlite()
                self.assertEqual(self.history(conn), [1, 2, 3, 4, 5, 6])
                self.assertEqual(self.version(conn), 6)
                if all(status == 0 for _, _, status in outcomes):
                    # Between them, each migration ran exactly once.
                    ran = sorted(int(v) for out, _, _ in outcomes for v in out.split()[1:])
                    self.assertEqual(ran, [1, 2, 3, 4, 5, 6], outcomes)


class Backfills(DqliteTestCase):
    def test_a_backfill_through_the_cluster_finishes_and_every_node_stays_up(self):
        # dqlite checkpoints its replicated WAL itself (wal_autocheckpoint is
        # 0 there): a PRAGMA wal_checkpoint between two batches' COMMITs made
        # the leader's process die at the second COMMIT.
        self.addCleanup(_restart_cluster)  # should a node die after all
        self.write("006-backfill.py", """
            import sqlmigrate
            transaction = False
            def up(db):
                db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, n INTEGER)")
                for _ in range(5):
                    db.execute("INSERT INTO items (n) SELECT 0 FROM (SELECT 1 UNION ALL "
                               "SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL "
                               "SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL "
                               "SELECT 8 UNION ALL SELECT 9 UNION ALL SELECT 10) AS x, "
                               "(SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL "
                               "SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL "
                               "SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9 UNION ALL "
                               "SELECT 10) AS y")
                sqlmigrate.backfill(db, "items", set="n = 1", batch_rows=100, target_ms=None)
        """)
        conn = self.dqlite()
        self.assertEqual([r.version for r in sqlmigrate.Migrator(conn, self.dir).up()],
                         [1, 2, 3, 4, 5, 6])
        self.assertEqual(conn.execute("SELECT n, count(*) FROM items GROUP BY n").fetchall(),
                         [(1, 500)])
        self.assertEqual([_alive(pid) for pid in self.cluster["pids"]], [True] * 3)
        for node in range(3):
            self.assertEqual(self.dqlite(node=node).execute(
                "SELECT count(*) FROM items WHERE n = 1").fetchall(), [(500,)])


class LeaderLoss(DqliteTestCase):
    def test_killing_the_leader_mid_migration_keeps_the_committed_and_drops_the_in_flight(self):
        self.addCleanup(_restart_cluster)  # this test leaves the cluster with 2 nodes
        started, block = os.path.join(self.tmp, "started"), os.path.join(self.tmp, "block")
        open(block, "w").close()
        self.write("006-waits.py", """
            import os, time
            def up(db):
                db.execute("CREATE TABLE in_flight (id INTEGER PRIMARY KEY)")
                db.execute("INSERT INTO in_flight DEFAULT VALUES")
                open(%r, "w").close()
                deadline = time.monotonic() + 60
                while os.path.exists(%r) and time.monotonic() < deadline:
                    time.sleep(0.05)
        """ % (started, block))
        leader = _leader(self.addresses)
        self.assertIn(leader, self.addresses)
        # The runner connects through a node that will survive.
        survivors = [i for i, a in enumerate(self.addresses) if a != leader]
        runner = self.run_runner(survivors[0])
        deadline = time.monotonic() + 60
        while not os.path.exists(started):
            if runner.poll() is not None:
                self.fail("the runner ended before 006 started: %r" % (runner.communicate(),))
            self.assertLess(time.monotonic(), deadline, "006 never started")
            time.sleep(0.05)
        os.kill(self.cluster["pids"][self.addresses.index(leader)], signal.SIGKILL)
        os.remove(block)  # 006 returns; the runner's next statement meets the lost leader
        out, err = runner.communicate(timeout=60)
        self.assertEqual(runner.returncode, 1, (out, err))
        self.assertIn("006-waits.py", err)
        self.assertIn("lost the connection", err)
        self.assertIn("run again", err)
        self.assertNotIn("Traceback", err)

        conn = self._reconnect(survivors[1])
        self.assertEqual(self.history(conn), [1, 2, 3, 4, 5])  # the committed ones kept
        self.assertNotIn("in_flight", self.names(conn))       # the one in flight gone
        self.assertEqual(self.version(conn), 5)
        # A rerun through a surviving node completes.
        self.assertEqual([r.version for r in sqlmigrate.migrate(conn, self.dir)], [6])
        self.assertEqual(self.history(conn), [1, 2, 3, 4, 5, 6])
        self.assertEqual(conn.execute("SELECT count(*) FROM in_flight").fetchall(), [(1,)])

    def _reconnect(self, node):
        """A connection through `node` once the survivors have elected a leader."""
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = self.dqlite(node, timeout=2)
                conn.execute("SELECT 1").fetchall()
                return conn
            except dqlitedbapi.Error:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.25)
