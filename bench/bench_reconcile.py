"""Timing for reconcile(): a no-op check of a big schema, and adding columns.

    python bench/bench_reconcile.py [TABLES [ADD_TABLES]]

Adding columns costs O(tables^2) in SQLite (the schema is re-parsed after
every ALTER TABLE), so that part runs on a smaller schema of ADD_TABLES.

Not a test: it prints numbers.  "floor" is the one pragma join reconcile
itself uses; "bare" is the ALTER TABLE statements alone in one transaction.
"""

import os
import shutil
import sqlite3
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import sqlmigrate  # noqa: E402

TABLES = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
ADD_TABLES = int(sys.argv[2]) if len(sys.argv) > 2 else 300
REPEAT = 5


def make(path, tables):
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    for i in range(tables):
        conn.execute("CREATE TABLE t%d (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, "
                     "created_at DATETIME, score REAL DEFAULT 0, data JSON, owner INTEGER, "
                     "flag BOOLEAN DEFAULT 0 NOT NULL)" % i)
        conn.execute("CREATE INDEX idx_t%d_name ON t%d (name)" % (i, i))
        conn.execute("INSERT INTO t%d (name) VALUES ('x')" % i)
    conn.execute("COMMIT")
    conn.close()


def best(function, prepare=None):
    times = []
    for _ in range(REPEAT):
        state = prepare() if prepare else None
        started = time.perf_counter()
        function(state)
        times.append(time.perf_counter() - started)
    return min(times) * 1000.0


def main():
    tmp = tempfile.mkdtemp()
    try:
        template = os.path.join(tmp, "template.db")
        make(template, TABLES)
        declared = dict(("t%d" % i, {"name": "TEXT", "email": "TEXT", "score": "REAL",
                                     "flag": "BOOLEAN DEFAULT 0 NOT NULL"})
                        for i in range(TABLES))
        indexes = dict(("idx_t%d_name" % i, "t%d(name)" % i) for i in range(TABLES))
        conn = sqlite3.connect(template, isolation_level=None)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchall()  # parse the schema once
        names = ["t%d" % i for i in range(TABLES)]

        def floor(_):
            for chunk in (names[i:i + 500] for i in range(0, len(names), 500)):
                conn.execute("SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info("
                             "m.name) p WHERE m.type = 'table' AND m.name IN (%s)"
                             % ",".join("?" * len(chunk)), chunk).fetchall()

        def naive(_):  # the table list re-read for every table
            for name in names:
                conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
                conn.execute("PRAGMA table_info(%s)" % name).fetchall()

        print("SQLite %s, Python %s, %d tables" % (sqlite3.sqlite_version, sys.version.split()[0],
                                                    TABLES))
        if sqlmigrate._SQLITE3_DRIVER.has_pragma_functions:
            print("no-op floor (pragma join only):        %8.1f ms" % best(floor))
        print("no-op, table list re-read per table:   %8.1f ms" % best(naive))
        print("no-op reconcile, columns only:         %8.1f ms"
              % best(lambda _: sqlmigrate.reconcile(conn, columns=declared)))
        print("no-op reconcile, columns + indexes:    %8.1f ms"
              % best(lambda _: sqlmigrate.reconcile(conn, columns=declared, indexes=indexes)))
        conn.close()
        make(template + "-add", ADD_TABLES)
        names = names[:ADD_TABLES]

        def fresh():
            path = os.path.join(tmp, "copy.db")
            shutil.copyfile(template + "-add", path)
            c = sqlite3.connect(path, isolation_level=None)
            c.execute("SELECT count(*) FROM sqlite_master").fetchall()
            return c

        def bare(c):
            c.execute("BEGIN IMMEDIATE")
            for name in names:
                c.execute('ALTER TABLE "%s" ADD COLUMN "model" VARCHAR' % name)
                c.execute('ALTER TABLE "%s" ADD COLUMN "server_id" INTEGER DEFAULT 0' % name)
            c.execute("COMMIT")
            c.close()

        adding = dict((name, {"name": "TEXT", "model": "VARCHAR",
                              "server_id": "INTEGER DEFAULT 0"}) for name in names)

        def ours(c):
            assert len(sqlmigrate.reconcile(c, columns=adding)) == 2 * ADD_TABLES
            c.close()

        print("%d tables:" % ADD_TABLES)
        print("add 2 columns to every table, bare:    %8.1f ms" % best(bare, fresh))
        print("add 2 columns to every table, ours:    %8.1f ms" % best(ours, fresh))
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
