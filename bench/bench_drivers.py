#!/usr/bin/env python3
"""Per-migration overhead of sqlmigrate on a driver connection (issue 13, Speed).

    ~/.cache/sqlmigrate-drivers/venv/bin/python bench/bench_drivers.py            # sqlcipher3, pysqlite3
    ~/.cache/sqlmigrate-dqlite/venv/bin/python bench/bench_drivers.py --driver dqlite

Target: the marginal cost per migration of `Migrator(conn, dir).up()` on a
caller's driver connection ≤ 1.2× a bare loop that sends the same statements
through the same driver.  Marginal cost as in bench/run.py's W2:
(t(N) - t(10)) / (N - 10), which removes the start-up and the one-time creation
of the tracking tables.

Subject and floor see the same thing: a new database (an encrypted file for
sqlcipher3, a new file for pysqlite3, a new database name on the dqlite cluster
for dqlite), a connection opened and warmed up untimed (sqlcipher3's key
derivation happens when it first writes the file, ~0.1 s, which is no migration
cost: `PRAGMA user_version = 0` writes page 1 of the still empty database),
then the timed call.  Rounds interleave floor and subject (alternating order),
in one process per driver; every figure is a median.

The bare loop sends per migration what the runner sends: it reads
`PRAGMA foreign_keys`; if that is on, `PRAGMA foreign_keys = OFF` (and, when a
driver answers the setter with an error, as dqlite does though it took effect,
`PRAGMA foreign_keys` again to check it), `BEGIN IMMEDIATE`, the history probe
(`SELECT EXISTS (... version = ?), max(version)`), the migration's statement,
`PRAGMA foreign_key_check` (when foreign keys were on), the history
`INSERT OR REPLACE`, the `schema_version` `UPDATE`, `COMMIT`, and the setter
back ON (and its read-back).  Before timing, the script checks this: it
records both statement lists (the driver's set_trace_callback where it has one;
dqlite has none, so there a subclass of its Connection counts what its cursors
send, and the sqlite3 module's trace of the same run with foreign keys on,
dqlite's default, is printed beside it) and prints whether the per-migration
blocks are identical once literal values are masked.

Stdlib + the driver only.  --profile runs cProfile over sqlmigrate's up() of N
migrations on the driver and prints the top functions by own time.
"""
import argparse
import cProfile
import gc
import hashlib
import io
import os
import platform
import pstats
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import sqlmigrate  # noqa: E402

KEY = "correct horse battery staple"
CLUSTER_ENV = "/tmp/sqlmigrate-dqlite/cluster.env"
N0 = 10
HISTORY = "metadata_migrations"
TARGET = 1.2


# --------------------------------------------------------------------------- migrations

def write_migrations(d, n):
    """n one-statement .sql migrations, as bench/run.py's W2 writes them."""
    os.makedirs(d)
    for i in range(1, n + 1):
        with open(os.path.join(d, "%03d-create-table-%d.sql" % (i, i)), "w") as f:
            f.write("-- migrate:up\nCREATE TABLE t_%d (id INTEGER PRIMARY KEY, v TEXT);\n\n"
                    "-- migrate:down\nDROP TABLE t_%d;\n" % (i, i))
    return d


# --------------------------------------------------------------------------- drivers

class FileDriver(object):
    """sqlcipher3 (encrypted with PRAGMA key) or pysqlite3: a new file per run."""

    def __init__(self, name, module, key, workdir):
        self.name, self.module, self.key, self.workdir = name, module, key, workdir
        self.count = 0
        self.version = module.sqlite_version

    def connect(self):
        self.count += 1
        path = os.path.join(self.workdir, "%s-%d.db" % (self.name, self.count))
        conn = self.module.connect(path, isolation_level=None)
        if self.key:
            conn.execute("PRAGMA key = '%s'" % self.key)
        # Untimed: sqlcipher derives the key when it first writes the file
        # (~100 ms); this writes page 1 of a still empty database.
        conn.execute("PRAGMA user_version = 0")
        return conn

    def traced(self, conn, sent):
        conn.set_trace_callback(sent.append)
        return conn

    def describe(self):
        return "%s %s (SQLite %s), %s file DB in %s" % (
            self.name, getattr(self.module, "version", ""), self.version,
            "encrypted (PRAGMA key)" if self.key else "plain", self.workdir)


class DqliteDriver(object):
    """dqlitedbapi through one node of the running cluster: a new database per run."""

    def __init__(self, module, address):
        self.name, self.module, self.address = "dqlite", module, address
        self.count = 0
        self.version = None

    def _connect(self, cls):
        self.count += 1
        conn = cls(self.address, database="bench%d_%d" % (os.getpid(), self.count), timeout=10)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchall()  # the session: untimed
        if self.version is None:
            self.version = conn.execute("SELECT sqlite_version()").fetchone()[0]
        return conn

    def connect(self):
        return self._connect(self.module.connect)

    def traced(self, conn, sent):
        """A connection of a subclass that records what its cursors send (the
        client has no trace callback; Connection.execute goes through cursor())."""
        conn.close()

        class Cursor(object):
            def __init__(self, cursor):
                self._cursor = cursor

            def execute(self, sql, *args):
                sent.append(sql)
                return self._cursor.execute(sql, *args)

            def __getattr__(self, name):
                return getattr(self._cursor, name)

            def __iter__(self):
                return iter(self._cursor)

        base = self.module.Connection

        class Counting(base):
            def cursor(self, **kwargs):
                return Cursor(base.cursor(self, **kwargs))
        Counting.__module__ = base.__module__  # still the dqlitedbapi driver for sqlmigrate
        return self._connect(lambda address, **kw: Counting(address, **kw))

    def describe(self):
        return "dqlitedbapi %s via %s (server SQLite %s), a new database per run" % (
            getattr(self.module, "__version__", ""), self.address, self.version)


def make_drivers(names, workdir):
    drivers = []
    for name in names:
        if name == "sqlcipher3":
            import sqlcipher3
            drivers.append(FileDriver("sqlcipher3", sqlcipher3, KEY, workdir))
        elif name == "pysqlite3":
            from pysqlite3 import dbapi2
            drivers.append(FileDriver("pysqlite3", dbapi2, None, workdir))
        elif name == "sqlite3":
            drivers.append(FileDriver("sqlite3", sqlite3, None, workdir))
        elif name == "dqlite":
            import dqlitedbapi
            env = dict(re.findall(r"^(\w+)='([^']*)'", open(CLUSTER_ENV).read(), re.M))
            drivers.append(DqliteDriver(dqlitedbapi, env["DQLITE_ADDRESSES"].split()[0]))
        else:
            raise SystemExit("unknown driver %r (sqlcipher3, pysqlite3, sqlite3, dqlite)" % name)
    return drivers


# --------------------------------------------------------------------------- the two tools

def subject(conn, d):
    return len(sqlmigrate.Migrator(conn, d).up())


def bare_loop(conn, d, error):
    """What the runner sends per migration, with nothing else around it."""
    history = '"%s"' % HISTORY
    probe = ('SELECT EXISTS (SELECT 1 FROM %s WHERE version = ?), '
             'coalesce((SELECT max(version) FROM %s), 0)' % (history, history))
    insert = ("INSERT OR REPLACE INTO %s (version, name, checksum, applied_at, duration_ms) "
              "VALUES (?, ?, ?, ?, ?)" % history)
    version_value = ("(SELECT CAST(coalesce(max(version), 0) AS TEXT) FROM %s)" % history)
    update = ("UPDATE \"metadata\" SET value = %s WHERE key = 'schema_version'" % version_value)

    def query(sql, params=()):
        cursor = conn.cursor()
        cursor.execute(sql, params)
        return cursor.fetchall()

    def set_fk(on):
        try:
            conn.execute("PRAGMA foreign_keys = %s" % ("ON" if on else "OFF"))
        except error:  # dqlite answers "not an error" though it took effect
            if query("PRAGMA foreign_keys") != [(int(on),)]:
                raise

    first, count = True, 0
    for name in sorted(os.listdir(d)):
        with open(os.path.join(d, name), "rb") as f:
            data = f.read()
        statement = data.decode("utf-8").split("-- migrate:down")[0]
        statement = statement.replace("-- migrate:up", "").strip().rstrip(";")
        version = int(name.split("-", 1)[0])
        fk = query("PRAGMA foreign_keys")[0][0]
        if fk:
            set_fk(False)
        conn.execute("BEGIN IMMEDIATE")
        if first:  # one-time, as the runner's first migration (cancels in the marginal cost)
            conn.execute('CREATE TABLE IF NOT EXISTS "metadata" (key TEXT PRIMARY KEY, value TEXT)')
            conn.execute("CREATE TABLE IF NOT EXISTS %s (version INTEGER PRIMARY KEY, name TEXT "
                         "NOT NULL, checksum TEXT, applied_at TEXT, duration_ms REAL)" % history)
        query(probe, (version,))
        started = time.perf_counter()
        conn.execute(statement)
        if fk:
            query("PRAGMA foreign_key_check")
        conn.execute(insert, (version, name, hashlib.sha256(data).hexdigest(),
                              time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              round((time.perf_counter() - started) * 1000.0, 3)))
        if conn.execute(update).rowcount == 0:
            conn.execute("INSERT INTO \"metadata\" (key, value) SELECT 'schema_version', %s"
                         % version_value)
        conn.execute("COMMIT")
        if fk:
            set_fk(True)
        first, count = False, count + 1
    return count


# --------------------------------------------------------------------------- statement check

_LITERAL = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b|\?")


def masked(sql):
    return _LITERAL.sub("?", " ".join(sql.split()))


def blocks(statements):
    """Per-migration blocks, each ending at its COMMIT and the foreign_keys
    setter (and read-back) after it; the first block (one-time work) dropped."""
    ends, i = [], 0
    while i < len(statements):
        if statements[i] == "COMMIT":
            if statements[i + 1:i + 2] == ["PRAGMA foreign_keys = ON"]:
                i += 1
                # A read-back of the setter (dqlite), not the next block's first read.
                if statements[i + 1:i + 2] == ["PRAGMA foreign_keys"] and \
                        statements[i + 2:i + 3] in ([], ["PRAGMA foreign_keys"]):
                    i += 1
            ends.append(i + 1)
        i += 1
    return [statements[a:b] for a, b in zip(ends, ends[1:])]


def check_statements(driver, d, n):
    """Both tools' statement lists on this driver; prints the comparison."""
    lists = {}
    for tool, run in (("sqlmigrate", subject), ("bare loop", bare_loop_for(driver))):
        sent = []
        conn = driver.traced(driver.connect(), sent)
        run(conn, d)
        conn.close()
        lists[tool] = [masked(s) for s in sent if not s.lstrip().startswith("--")]
    sub, bare = blocks(lists["sqlmigrate"]), blocks(lists["bare loop"])
    same = sub == bare and len(sub) == n - 1
    per = sorted(set(len(b) for b in sub))
    print("%s: per migration sqlmigrate sends %s statements, the bare loop %s; blocks 2..%d "
          "identical (literals masked): %s; whole run %d vs %d statements" % (
              driver.name, "/".join(map(str, per)),
              "/".join(map(str, sorted(set(len(b) for b in bare)))), n,
              "yes" if same else "NO", len(lists["sqlmigrate"]), len(lists["bare loop"])))
    for s in (sub[0] if sub else []):
        print("    " + s)
    if not same:
        for i, (a, b) in enumerate(zip(sub, bare)):
            if a != b:
                print("  first difference in block %d:\n    sqlmigrate %s\n    bare loop  %s"
                      % (i + 2, a, b))
                break
    return same


def sqlite3_trace(d, foreign_keys):
    """The sqlite3 module's trace of sqlmigrate's run (dqlite has no trace
    callback: this is the list derived from the same run on sqlite3)."""
    tmp = tempfile.mkdtemp()
    try:
        conn = sqlite3.connect(os.path.join(tmp, "trace.db"), isolation_level=None)
        conn.execute("PRAGMA foreign_keys = %s" % ("ON" if foreign_keys else "OFF"))
        sent = []
        conn.set_trace_callback(sent.append)
        sqlmigrate.Migrator(conn, d).up()
        conn.close()
        return blocks([masked(s) for s in sent])
    finally:
        shutil.rmtree(tmp)


def bare_loop_for(driver):
    return lambda conn, d: bare_loop(conn, d, driver.module.Error)


# --------------------------------------------------------------------------- timing

def timed(driver, run, d, expect):
    conn = driver.connect()
    gc.collect()
    t0 = time.perf_counter()
    done = run(conn, d)
    t = time.perf_counter() - t0
    version = conn.execute("SELECT value FROM metadata WHERE key = 'schema_version'").fetchone()
    conn.close()
    if done != expect or int(version[0]) != expect:
        raise SystemExit("%s applied %r, schema_version %r; expected %d" % (
            driver.name, done, version, expect))
    return t


def measure(driver, dirs, sizes, rounds):
    tools = [("floor: bare loop, same statements", bare_loop_for(driver)),
             ("sqlmigrate Migrator.up()", subject)]
    samples = dict(((name, n), []) for name, _ in tools for n in [N0] + sizes)
    for name, run in tools:  # warm-up: imports, the driver probe, page cache
        timed(driver, run, dirs[N0], N0)
    for r in range(rounds):
        order = tools if r % 2 == 0 else tools[::-1]
        for n in [N0] + sizes:
            for name, run in order:
                samples[(name, n)].append(timed(driver, run, dirs[n], n))
        print("  %s round %d/%d done" % (driver.name, r + 1, rounds), file=sys.stderr)
    rows, floor = [], {}
    for name, _ in tools:
        for n in sizes:
            small = statistics.median(samples[(name, N0)])
            big = samples[(name, n)]
            per = [(t - small) / (n - N0) for t in big]
            median = (statistics.median(big) - small) / (n - N0)
            row = dict(case="N=%d, per migration" % n, tool=name, median=median,
                       low=min(per), high=max(per), whole=statistics.median(big))
            if name.startswith("floor"):
                floor[n] = median
            else:
                row["ratio"] = median / floor[n]
            rows.append(row)
    return rows


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = re.search(r"^model name\s*:\s*(.*)$", f.read(), re.M).group(1)
        with open("/proc/meminfo") as f:
            kib = int(re.search(r"^MemTotal:\s*(\d+)", f.read(), re.M).group(1))
        return "%s, %d cores, %d GiB" % (cpu, os.cpu_count(), round(kib / 1048576.0))
    except (OSError, AttributeError):
        return "%s, %d cores" % (cpu, os.cpu_count())


def ms(x):
    x *= 1000.0
    return "%.0f" % x if x >= 100 else "%.1f" % x if x >= 10 else "%.2f" % x


def table(results):
    out = ["| driver | case | tool | median | min–max | × floor | target | result | notes |",
           "|---|---|---|---|---|---|---|---|---|"]
    for driver, rows in results:
        for row in rows:
            ratio = row.get("ratio")
            out.append("| %s | %s | %s | %s ms | %s–%s | %s | %s | %s | whole run %s ms |" % (
                driver, row["case"], row["tool"], ms(row["median"]), ms(row["low"]),
                ms(row["high"]), "" if ratio is None else "%.2f" % ratio,
                "" if ratio is None else "≤ %.1f×" % TARGET,
                "" if ratio is None else "ok" if ratio <= TARGET else "**MISSED**",
                ms(row["whole"])))
    return "\n".join(out)


def profile(driver, d, n):
    conn = driver.connect()
    prof = cProfile.Profile()
    prof.enable()
    subject(conn, d)
    prof.disable()
    conn.close()
    s = io.StringIO()
    stats = pstats.Stats(prof, stream=s)
    stats.sort_stats("tottime").print_stats(25)
    print("\n## cProfile: %s, up() of %d migrations, by own time\n" % (driver.name, n))
    print(s.getvalue())
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats("sqlmigrate.py", 25)
    print(s.getvalue())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--driver", default=None,
                    help="comma-separated: sqlcipher3, pysqlite3, dqlite, sqlite3 (default: "
                         "sqlcipher3,pysqlite3 if importable, else dqlite)")
    ap.add_argument("--n", type=int, default=100, help="the big run size (default 100)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--profile", action="store_true",
                    help="also cProfile one up() of N migrations per driver")
    ap.add_argument("--dir", default=None,
                    help="where the file databases go (default: the system temp directory; "
                         "/dev/shm takes fsync out and leaves the CPU cost)")
    args = ap.parse_args()
    names = args.driver.split(",") if args.driver else None
    if names is None:
        try:
            import sqlcipher3  # noqa: F401
            names = ["sqlcipher3", "pysqlite3"]
        except ImportError:
            names = ["dqlite"]
    workdir = tempfile.mkdtemp(prefix="bench-drivers-", dir=args.dir)
    try:
        dirs = dict((n, write_migrations(os.path.join(workdir, "m%d" % n), n))
                    for n in (N0, args.n))
        drivers = make_drivers(names, workdir)
        results, checks = [], []
        for driver in drivers:
            checks.append(check_statements(driver, dirs[N0], N0))
            if driver.name == "dqlite":
                trace = sqlite3_trace(dirs[N0], foreign_keys=True)
                print("sqlite3's trace of the same run, foreign keys on (dqlite's default): %d "
                      "statements per migration; dqlite adds a PRAGMA foreign_keys read-back "
                      "after each setter (it answers a setter with an error)" % len(trace[0]))
                for s in trace[0]:
                    print("    " + s)
            results.append((driver.name, measure(driver, dirs, [args.n], args.rounds)))
            if args.profile:
                profile(driver, dirs[args.n], args.n)
        print()
        print("Machine: %s; Python %s; %s" % (
            machine(), platform.python_version(), "; ".join(d.describe() for d in drivers)))
        print("Rounds: %d, interleaved; marginal cost (t(%d) - t(%d)) / %d from medians; "
              "min–max: each N-run against the %d-run median.\n" % (
                  args.rounds, args.n, N0, args.n - N0, N0))
        print(table(results))
        if not all(checks):
            print("\nWARNING: the bare loop does not send the same statements (see above)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
