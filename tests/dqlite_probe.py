"""What the dqlite DB-API client (dqlite-dbapi) really does, checked against a live cluster.

Not a unittest: a script that prints one line per fact, so the findings can be re-checked
after an upgrade of the server (Debian's go-dqlite / libdqlite0) or of the client.

    bash .ci/dqlite.sh install && bash .ci/dqlite.sh start
    "$(bash .ci/dqlite.sh install)" tests/dqlite_probe.py            # every section
    "$(bash .ci/dqlite.sh install)" tests/dqlite_probe.py locks ...  # some sections
    bash .ci/dqlite.sh stop

Sections: module, nodes, transactions, pragmas, schema, locks, odd, crash, failover.
`crash` and `failover` kill a node: each restarts the cluster (.ci/dqlite.sh stop; start)
before it runs, and leaves it degraded (2 of 3 nodes) afterwards.
Each line reads `LABEL: OK <result>` or `LABEL: <module.Exception> code=<code> <message>`,
with the time the call took; lines starting `FACT` state a conclusion the script asserted
(it exits non-zero, with `CHANGED`, when one no longer holds).
"""

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import dqlitedbapi

HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER_SH = os.path.join(HERE, os.pardir, ".ci", "dqlite.sh")
STATE_FILE = os.path.join(os.environ.get("SQLMIGRATE_DQLITE_DIR", "/tmp/sqlmigrate-dqlite"),
                          "cluster.env")
RUN = "probe%d" % os.getpid()  # a database name of our own on each run
changed = []


def cluster():
    """(addresses, pids) from the state file that .ci/dqlite.sh start wrote."""
    env = {}
    with open(STATE_FILE) as f:
        for line in f:
            key, _, value = line.strip().partition("=")
            env[key] = value.strip("'")
    return env["DQLITE_ADDRESSES"].split(), [int(p) for p in env["DQLITE_PIDS"].split()]


def restart():
    t = time.monotonic()
    for cmd in ("stop", "start"):
        subprocess.run(["bash", CLUSTER_SH, cmd], check=True, stdout=subprocess.DEVNULL)
    print("(cluster restarted in %.1fs)" % (time.monotonic() - t))


def leader_of(address):
    out = subprocess.run(["dqlite", "-s", address, "ci", ".leader"], capture_output=True,
                         text=True, timeout=10).stdout.strip()
    return out or None


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def show(label, fn):
    """Run fn, print what happened, return (ok, result_or_exception)."""
    t = time.monotonic()
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001 - reporting every outcome is the point
        print("%s: %s.%s code=%s %s [%.2fs]" % (label, type(e).__module__, type(e).__name__,
                                                getattr(e, "code", None), e,
                                                time.monotonic() - t))
        return False, e
    print("%s: OK %r [%.2fs]" % (label, result, time.monotonic() - t))
    return True, result


def fact(text, holds):
    print("FACT %s: %s" % ("holds" if holds else "CHANGED", text))
    if not holds:
        changed.append(text)


def q(conn, sql, params=None):
    return lambda: conn.execute(sql, params).fetchall() if params else conn.execute(sql).fetchall()


def connect(address, **kw):
    kw.setdefault("database", RUN)
    return dqlitedbapi.connect(address, **kw)


def is_not_an_error(e):
    return isinstance(e, dqlitedbapi.OperationalError) and e.code == 1 and \
        str(e).startswith("not an error")


# ---------------------------------------------------------------------------- sections

def section_module(addresses, pids):
    print("dqlite-dbapi", dqlitedbapi.__version__, "on Python", sys.version.split()[0])
    names = ["Error", "Warning", "InterfaceError", "DatabaseError", "DataError",
             "OperationalError", "IntegrityError", "InternalError", "ProgrammingError",
             "NotSupportedError", "AmbiguousCommitError", "paramstyle", "apilevel",
             "threadsafety", "sqlite_version", "Row", "connect"]
    print("module attributes present:", [n for n in names if hasattr(dqlitedbapi, n)])
    print("paramstyle=%r apilevel=%r threadsafety=%r sqlite_version (a constant, not the "
          "server's)=%r" % (dqlitedbapi.paramstyle, dqlitedbapi.apilevel,
                            dqlitedbapi.threadsafety, dqlitedbapi.sqlite_version))
    for n in names[:11]:
        print("  %s: %s" % (n, " -> ".join(k.__name__ for k in getattr(dqlitedbapi, n).__mro__)))
    fact("dqlitedbapi.Error is not a subclass of sqlite3.Error",
         not issubclass(dqlitedbapi.Error, sqlite3.Error))
    conn = connect(addresses[0])
    fact("the connection's class lives in module dqlitedbapi.connection",
         type(conn).__module__ == "dqlitedbapi.connection")
    fact("a dqlite connection is not a sqlite3.Connection",
         not isinstance(conn, sqlite3.Connection))
    for name in ("executescript", "set_trace_callback", "backup", "iterdump", "interrupt",
                 "create_function", "total_changes"):
        ok, e = show(name, lambda: getattr(conn, name)("SELECT 1;") if name == "executescript"
                     else getattr(conn, name)(print) if name == "set_trace_callback"
                     else getattr(conn, name)())
        fact("%s raises NotSupportedError" % name, isinstance(e, dqlitedbapi.NotSupportedError))
    show("two statements in one execute", q(conn, "SELECT 1; SELECT 2"))
    show("isolation_level", lambda: conn.isolation_level)
    show("isolation_level = None (a no-op)", lambda: setattr(conn, "isolation_level", None))
    show("isolation_level = 'IMMEDIATE' (a no-op)",
         lambda: setattr(conn, "isolation_level", "IMMEDIATE"))
    show("autocommit", lambda: conn.autocommit)
    ok, e = show("autocommit = False", lambda: setattr(conn, "autocommit", False))
    fact("autocommit cannot be turned off", isinstance(e, dqlitedbapi.NotSupportedError))
    show("session_mode (bare BEGIN is sent as BEGIN <mode>)", lambda: conn.session_mode)
    ok, e = show("row_factory = sqlite3.Row (setting it)",
                 lambda: setattr(conn, "row_factory", sqlite3.Row))
    ok2, e2 = show("... then a query", q(conn, "SELECT 1 AS x"))
    fact("sqlite3.Row is accepted as row_factory but every fetch then fails with DataError",
         ok and isinstance(e2, dqlitedbapi.DataError))
    conn.row_factory = dqlitedbapi.Row
    show("row_factory = dqlitedbapi.Row", lambda: [tuple(r) + (r["x"],) for r in
                                                            conn.execute("SELECT 1 AS x")])
    conn.row_factory = None
    conn.close()


def section_nodes(addresses, pids):
    leader = leader_of(addresses[0])
    print("leader:", leader)
    for a in addresses:
        conn = connect(a)
        show("via %s: sqlite_version()" % a, q(conn, "SELECT sqlite_version()"))
        ok, e = show("via %s: error names the node that ran it" % a, q(conn, "SELEC 1"))
        fact("a statement sent through %s runs on the leader %s" % (a, leader),
             str(e).endswith("to %s" % leader))
        show("via %s: repr" % a, lambda: repr(conn))
        conn.close()


def section_transactions(addresses, pids):
    conn = connect(addresses[1])
    show("create", q(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"))
    show("in_transaction (fresh)", lambda: conn.in_transaction)
    show("BEGIN IMMEDIATE", q(conn, "BEGIN IMMEDIATE"))
    fact("in_transaction is True after BEGIN IMMEDIATE", conn.in_transaction)
    show("insert", q(conn, "INSERT INTO t(v) VALUES (?)", ("rolled back",)))
    show("ROLLBACK", q(conn, "ROLLBACK"))
    fact("in_transaction is False after ROLLBACK", not conn.in_transaction)
    show("BEGIN", q(conn, "BEGIN"))
    show("CREATE TABLE inside", q(conn, "CREATE TABLE ddl_rb(a)"))
    show("insert", q(conn, "INSERT INTO t(v) VALUES (?)", ("committed",)))
    show("COMMIT", q(conn, "COMMIT"))
    ok, rows = show("rows", q(conn, "SELECT v FROM t"))
    fact("BEGIN/INSERT/ROLLBACK then BEGIN/INSERT/COMMIT keeps only the committed row",
         rows == [("committed",)])
    show("BEGIN", q(conn, "BEGIN"))
    show("CREATE TABLE then ROLLBACK", q(conn, "CREATE TABLE ddl_gone(a)"))
    show("ROLLBACK", q(conn, "ROLLBACK"))
    ok, rows = show("sqlite_master after DDL rollback",
                    q(conn, "SELECT name FROM sqlite_master ORDER BY name"))
    fact("DDL is transactional (a rolled-back CREATE TABLE is gone)",
         rows == [("ddl_rb",), ("t",)])
    other = connect(addresses[2])
    ok, rows = show("another node sees the committed schema",
                    q(other, "SELECT name FROM sqlite_master ORDER BY name"))
    other.close()
    show("commit() with no transaction (a no-op)", lambda: conn.commit())
    show("COMMIT with no transaction", q(conn, "COMMIT"))
    # savepoints
    show("SAVEPOINT a (no transaction open)", q(conn, "SAVEPOINT a"))
    show("insert", q(conn, "INSERT INTO t(v) VALUES ('sp a')"))
    show("SAVEPOINT b", q(conn, "SAVEPOINT b"))
    show("insert", q(conn, "INSERT INTO t(v) VALUES ('sp b')"))
    show("ROLLBACK TO b", q(conn, "ROLLBACK TO b"))
    show("RELEASE b", q(conn, "RELEASE b"))
    show("RELEASE a", q(conn, "RELEASE a"))
    fact("in_transaction stays True after the outermost RELEASE (client-side tracking)",
         conn.in_transaction)
    ok, rows = show("rows", q(conn, "SELECT v FROM t ORDER BY id"))
    fact("savepoints work: ROLLBACK TO undoes, RELEASE keeps",
         rows == [("committed",), ("sp a",)])
    show("BEGIN after the stale in_transaction", q(conn, "BEGIN IMMEDIATE"))
    show("ROLLBACK", q(conn, "ROLLBACK"))
    show("BEGIN IMMEDIATE; SAVEPOINT s; insert; ROLLBACK TO s; RELEASE s; COMMIT",
         lambda: [conn.execute(s).fetchall() for s in (
             "BEGIN IMMEDIATE", "SAVEPOINT s", "INSERT INTO t(v) VALUES ('gone')",
             "ROLLBACK TO s", "RELEASE s", "COMMIT")])
    ok, rows = show("rows", q(conn, "SELECT count(*) FROM t WHERE v = 'gone'"))
    fact("savepoint inside BEGIN IMMEDIATE rolls back", rows == [(0,)])
    show("rowcount/lastrowid of an INSERT", lambda: (
        lambda c: (c.rowcount, c.lastrowid))(conn.execute("INSERT INTO t(v) VALUES ('x')")))
    conn.close()


def section_pragmas(addresses, pids):
    conn = connect(addresses[2])
    ok, rows = show("PRAGMA foreign_keys (default)", q(conn, "PRAGMA foreign_keys"))
    fact("foreign keys default ON", rows == [(1,)])
    show("PRAGMA journal_mode", q(conn, "PRAGMA journal_mode"))
    for name in ("foreign_keys", "legacy_alter_table", "recursive_triggers", "user_version"):
        before = conn.execute("PRAGMA %s" % name).fetchall()[0][0]
        value = 0 if before else 1
        ok, e = show("PRAGMA %s = %d" % (name, value), q(conn, "PRAGMA %s = %d" % (name, value)))
        ok, after = show("PRAGMA %s" % name, q(conn, "PRAGMA %s" % name))
        fact("a setter pragma answers OperationalError code=1 'not an error' (%s)" % name,
             is_not_an_error(e))
        print("  -> %s took effect: %s" % (name, after == [(value,)]))
        if name == "user_version":
            fact("PRAGMA user_version = N does NOT take effect", after == [(before,)])
        else:
            fact("PRAGMA %s = N takes effect despite the error" % name, after == [(value,)])
        try:
            conn.execute("PRAGMA %s = %d" % (name, before))
        except dqlitedbapi.OperationalError:
            pass
    show("PRAGMA foreign_keys(0) (function form)", q(conn, "PRAGMA foreign_keys(0)"))
    show("PRAGMA foreign_keys", q(conn, "PRAGMA foreign_keys"))
    try:
        conn.execute("PRAGMA foreign_keys = ON")
    except dqlitedbapi.OperationalError:
        pass
    show("BEGIN", q(conn, "BEGIN"))
    ok, e = show("PRAGMA foreign_keys = OFF inside a transaction",
                 q(conn, "PRAGMA foreign_keys = OFF"))
    ok, rows = show("PRAGMA foreign_keys inside", q(conn, "PRAGMA foreign_keys"))
    fact("PRAGMA foreign_keys = OFF inside a transaction is a no-op (as in SQLite)",
         rows == [(1,)])
    show("PRAGMA defer_foreign_keys = ON inside", q(conn, "PRAGMA defer_foreign_keys = ON"))
    ok, rows = show("PRAGMA defer_foreign_keys", q(conn, "PRAGMA defer_foreign_keys"))
    fact("defer_foreign_keys = ON inside a transaction takes effect", rows == [(1,)])
    show("ROLLBACK", q(conn, "ROLLBACK"))
    ok, rows = show("PRAGMA busy_timeout (answered by the driver)", q(conn, "PRAGMA busy_timeout"))
    ok, rows = show("PRAGMA busy_timeout = 250", q(conn, "PRAGMA busy_timeout = 250"))
    fact("PRAGMA busy_timeout = N sets the driver's busy_timeout (seconds)",
         conn.busy_timeout == 0.25)
    for sql in ("PRAGMA database_list", "PRAGMA schema_version", "PRAGMA integrity_check",
                "PRAGMA quick_check", "PRAGMA main.quick_check", "PRAGMA compile_options",
                "PRAGMA page_size", "PRAGMA synchronous", "PRAGMA wal_checkpoint"):
        show(sql, q(conn, sql))
    conn.close()


def section_schema(addresses, pids):
    conn = connect(addresses[0])
    conn.execute("CREATE TABLE p(id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT 'x')")
    conn.execute("CREATE TABLE c(id INTEGER PRIMARY KEY, pid INTEGER REFERENCES p(id))")
    conn.execute("CREATE INDEX c_pid ON c(pid)")
    conn.execute("CREATE VIEW v AS SELECT * FROM c")
    conn.execute("CREATE TRIGGER tr AFTER INSERT ON p BEGIN UPDATE p SET name = name; END")
    show("sqlite_master", q(conn, "SELECT type, name, tbl_name, sql FROM sqlite_master"))
    ok, rows = show("PRAGMA table_info(p)", q(conn, "PRAGMA table_info(p)"))
    fact("table_info rows are (cid, name, type, notnull, dflt_value, pk)",
         rows == [(0, "id", "INTEGER", 0, None, 1), (1, "name", "TEXT", 1, "'x'", 0)])
    show("PRAGMA table_info description", lambda: [d[0] for d in conn.execute(
        "PRAGMA table_info(p)").description])
    for sql in ("PRAGMA table_xinfo(c)", "PRAGMA index_list(c)", "PRAGMA index_info(c_pid)",
                "PRAGMA index_xinfo(c_pid)", "PRAGMA foreign_key_list(c)",
                "SELECT * FROM pragma_table_info('c')"):
        show(sql, q(conn, sql))
    ok, e = show("insert violating the FK", q(conn, "INSERT INTO c(pid) VALUES (99)"))
    fact("FK violation is IntegrityError (FKs enforced)", isinstance(e, dqlitedbapi.IntegrityError))
    ok, e = show("NOT NULL violation", q(conn, "INSERT INTO p(name) VALUES (NULL)"))
    fact("constraint errors are IntegrityError with an extended code",
         isinstance(e, dqlitedbapi.IntegrityError) and e.code > 255)
    show("BEGIN", q(conn, "BEGIN"))
    show("PRAGMA defer_foreign_keys = ON", q(conn, "PRAGMA defer_foreign_keys = ON"))
    show("insert orphan (deferred)", q(conn, "INSERT INTO c(pid) VALUES (42)"))
    ok, rows = show("PRAGMA foreign_key_check", q(conn, "PRAGMA foreign_key_check"))
    fact("foreign_key_check lists the orphan inside the transaction", rows == [("c", 1, "p", 0)])
    ok, e = show("COMMIT with a deferred violation", q(conn, "COMMIT"))
    show("in_transaction", lambda: conn.in_transaction)
    show("ROLLBACK", q(conn, "ROLLBACK"))
    ok, e = show("ALTER TABLE p DROP COLUMN name", q(conn, "ALTER TABLE p DROP COLUMN name"))
    show("ALTER TABLE p RENAME COLUMN", q(conn, "ALTER TABLE p RENAME COLUMN name TO title"))
    show("SELECT no such table", q(conn, "SELECT * FROM nope"))
    show("syntax error", q(conn, "SELEC 1"))
    conn.close()


def section_locks(addresses, pids):
    a = connect(addresses[1])
    b = connect(addresses[2], busy_timeout=0.5)
    a.execute("CREATE TABLE t(v)")
    show("a: BEGIN IMMEDIATE", q(a, "BEGIN IMMEDIATE"))
    show("a: insert", q(a, "INSERT INTO t VALUES (1)"))
    ok, e = show("b (other node, busy_timeout=0.5): BEGIN IMMEDIATE", q(b, "BEGIN IMMEDIATE"))
    fact("a lock conflict is OperationalError code=5 'database is locked ...'",
         isinstance(e, dqlitedbapi.OperationalError) and e.code == 5
         and str(e).startswith("database is locked"))
    show("b: in_transaction after the failed BEGIN", lambda: b.in_transaction)
    show("b: autocommit insert", q(b, "INSERT INTO t VALUES (2)"))
    show("b: read while a writes", q(b, "SELECT count(*) FROM t"))
    show("b: BEGIN DEFERRED", q(b, "BEGIN DEFERRED"))
    show("b: write in the deferred transaction", q(b, "INSERT INTO t VALUES (3)"))
    show("b: ROLLBACK", q(b, "ROLLBACK"))
    b.busy_timeout = 0
    ok, e = show("b (busy_timeout=0): BEGIN IMMEDIATE", q(b, "BEGIN IMMEDIATE"))
    b.busy_timeout = 3
    show("a: COMMIT", q(a, "COMMIT"))
    show("b: BEGIN IMMEDIATE after a committed", q(b, "BEGIN IMMEDIATE"))
    show("b: COMMIT", q(b, "COMMIT"))
    # A busy_timeout long enough for the holder to finish: the driver retries.
    a.execute("BEGIN IMMEDIATE")
    c = connect(addresses[0], busy_timeout=5, check_same_thread=False)
    done = {}

    def waiter():
        t0 = time.monotonic()
        try:
            c.execute("BEGIN IMMEDIATE")
            done["ok"] = time.monotonic() - t0
            c.execute("ROLLBACK")
        except Exception as e:  # noqa: BLE001
            done["err"] = e
    th = threading.Thread(target=waiter)
    th.start()
    time.sleep(1.0)
    a.execute("COMMIT")
    th.join()
    print("c waited for a's COMMIT (busy_timeout=5):", done)
    fact("the driver's busy_timeout retries BEGIN IMMEDIATE until the holder commits",
         "ok" in done and done["ok"] >= 0.9)
    for x in (a, b):
        x.close()


def section_odd(addresses, pids):
    conn = connect(addresses[0])
    conn.execute("CREATE TABLE t(v)")
    conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
    show("VACUUM", q(conn, "VACUUM"))
    show("BEGIN; VACUUM", lambda: [conn.execute("BEGIN"), conn.execute("VACUUM")])
    show("ROLLBACK", q(conn, "ROLLBACK"))
    show("ATTACH DATABASE 'other' AS o", q(conn, "ATTACH DATABASE 'other' AS o"))
    ok, e = show("CREATE TABLE o.x", q(conn, "CREATE TABLE o.x(a)"))
    show("SELECT FROM o.sqlite_master", q(conn, "SELECT * FROM o.sqlite_master"))
    show("DETACH", q(conn, "DETACH DATABASE o"))
    show("ATTACH ':memory:' AS m", q(conn, "ATTACH DATABASE ':memory:' AS m"))
    show("CREATE TABLE m.x", q(conn, "CREATE TABLE m.x(a)"))
    show("DETACH m", q(conn, "DETACH DATABASE m"))
    show("CREATE TEMP TABLE", q(conn, "CREATE TEMP TABLE tt(a)"))
    show("PRAGMA journal_mode = WAL", q(conn, "PRAGMA journal_mode = WAL"))
    show("PRAGMA journal_mode", q(conn, "PRAGMA journal_mode"))
    show("PRAGMA wal_checkpoint(TRUNCATE)", q(conn, "PRAGMA wal_checkpoint(TRUNCATE)"))
    show("SELECT 1 still works", q(conn, "SELECT 1"))
    fact("no node died in the 'odd' section", all(alive(p) for p in pids))
    conn.close()


def section_crash(addresses, pids):
    restart()
    addresses, pids = cluster()
    leader = leader_of(addresses[0])
    conn = connect(addresses[1])
    conn.execute("CREATE TABLE t(v)")
    conn.execute("INSERT INTO t VALUES ('before')")
    ok, e = show("PRAGMA journal_mode = DELETE", q(conn, "PRAGMA journal_mode = DELETE"))
    time.sleep(1)
    dead = [a for a, p in zip(addresses, pids) if not alive(p)]
    print("nodes dead after it:", dead, "leader was", leader)
    fact("PRAGMA journal_mode = DELETE kills the leader", dead == [leader])
    log = os.path.join(os.path.dirname(STATE_FILE), "n%d.log" % (addresses.index(leader) + 1))
    with open(log, errors="replace") as f:
        print("leader's log ends:", f.read()[-200:].strip())
    show("same connection afterwards", q(conn, "SELECT 1"))
    show("closed, invalidated", lambda: (conn.closed, conn.invalidated))
    survivor = next(a for a in addresses if a != leader)
    t = time.monotonic()
    while time.monotonic() - t < 30:
        try:
            rows = connect(survivor, timeout=2).execute("SELECT v FROM t").fetchall()
            print("new connection via %s works %.1fs after: %r" % (survivor,
                                                                    time.monotonic() - t, rows))
            break
        except dqlitedbapi.Error as e:
            print("  new connection: %s: %s" % (type(e).__name__, e))
            time.sleep(0.5)
    for sql in ("PRAGMA journal_mode = MEMORY", "PRAGMA journal_mode = OFF"):
        print("(not sent: %s; assume it is as dangerous)" % sql)


def section_failover(addresses, pids):
    restart()
    addresses, pids = cluster()
    leader = leader_of(addresses[0])
    others = [a for a in addresses if a != leader]
    conn = connect(others[0])
    idle = connect(others[1])
    conn.execute("CREATE TABLE t(v)")
    conn.execute("INSERT INTO t VALUES ('committed')")
    idle.execute("SELECT 1")
    show("BEGIN IMMEDIATE", q(conn, "BEGIN IMMEDIATE"))
    show("insert (uncommitted)", q(conn, "INSERT INTO t VALUES ('uncommitted')"))
    os.kill(pids[addresses.index(leader)], signal.SIGKILL)
    t0 = time.monotonic()
    print("SIGKILLed the leader", leader)
    time.sleep(0.2)
    ok, e = show("next statement in the open transaction", q(conn, "INSERT INTO t VALUES ('x')"))
    fact("the in-transaction statement fails with OperationalError (code None) 'Connection "
         "closed by server'", isinstance(e, dqlitedbapi.OperationalError) and e.code is None)
    show("in_transaction", lambda: conn.in_transaction)
    ok, e = show("COMMIT", q(conn, "COMMIT"))
    fact("afterwards the connection is invalidated: InterfaceError on every call",
         isinstance(e, dqlitedbapi.InterfaceError) and conn.invalidated)
    show("rollback()", lambda: conn.rollback())
    ok, e = show("idle connection's next statement", q(idle, "SELECT 1"))
    fact("an idle connection is lost too (no reconnect)", not ok and idle.closed)
    show("close() an invalidated connection", lambda: conn.close())
    t = time.monotonic()
    while time.monotonic() - t0 < 30:
        try:
            new = connect(others[1], timeout=2)
            rows = new.execute("SELECT v FROM t").fetchall()
            break
        except dqlitedbapi.Error as e:
            print("  new connection %.1fs after the kill: %s: %s" % (time.monotonic() - t0,
                                                                   type(e).__name__, e))
            time.sleep(0.25)
    print("new connection via %s works %.1fs after the kill" % (others[1], time.monotonic() - t0))
    fact("committed data survives, the open transaction is gone", rows == [("committed",)])
    ok, _ = show("write through the new leader", q(new, "INSERT INTO t VALUES ('new')"))
    print("new leader:", leader_of(others[0]))


SECTIONS = ["module", "nodes", "transactions", "pragmas", "schema", "locks", "odd", "crash",
            "failover"]


def main(argv):
    wanted = argv or SECTIONS
    for name in wanted:
        if name not in SECTIONS:
            sys.exit("unknown section %r; sections: %s" % (name, " ".join(SECTIONS)))
    for name in wanted:
        print("\n== %s" % name)
        global RUN
        RUN = "probe%d_%s" % (os.getpid(), name)
        addresses, pids = cluster()
        globals()["section_" + name](addresses, pids)
    print("\n%d fact(s) changed%s" % (len(changed), "".join("\n  " + c for c in changed)))
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
