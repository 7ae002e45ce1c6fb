"""Timing for `schema --sql` (sqlmigrate.schema_sql) on a big schema.

    python bench/bench_schema_sql.py [TABLES [RUNS]]

Not a test: it prints numbers.  The floor is what any dump must do: open the
database, one `SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY
type, name` and print each statement.  Both open the file afresh (and so pay
SQLite's parse of the schema) and write to /dev/null; they take turns, and
the ratio is of medians.  Each table has an index, every tenth a trigger and
a view (some views read others), as a real schema would.
"""

import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import sqlmigrate  # noqa: E402

TABLES = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 21


def make(path, tables):
    """A database made by sqlmigrate itself (so it has its tracking tables),
    from one migration file holding the whole schema."""
    statements = []
    for i in range(tables):
        statements.append("CREATE TABLE t%d (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                          "email TEXT, created_at DATETIME, score REAL DEFAULT 0, owner INTEGER)"
                          % i)
        statements.append("CREATE INDEX idx_t%d_name ON t%d (name)" % (i, i))
        if i % 10 == 0:
            statements.append("CREATE TRIGGER trg_t%d AFTER INSERT ON t%d BEGIN "
                              "UPDATE t%d SET score = 1 WHERE id = new.id; END" % (i, i, i))
            # every fifth view also reads the one before: 40 levels of views
            statements.append("CREATE VIEW v%d AS SELECT id, name FROM t%d%s" % (
                i, i, " UNION ALL SELECT id, name FROM v%d" % (i - 50) if i % 50 == 0 and i
                else ""))
    directory = os.path.join(os.path.dirname(path), "migrations")
    os.mkdir(directory)
    with open(os.path.join(directory, "001-big-schema.sql"), "w") as f:
        f.write("-- migrate:up\n" + ";\n".join(statements) + ";\n")
    sqlmigrate.Migrator(path, directory).up()


def main():
    tmp = tempfile.mkdtemp()
    try:
        path = os.path.join(tmp, "big.db")
        make(path, TABLES)
        out = open(os.devnull, "w")

        def floor():
            conn = sqlite3.connect(path)
            try:
                for _, _, _, sql in conn.execute("SELECT type, name, tbl_name, sql FROM "
                                                 "sqlite_master ORDER BY type, name"):
                    if sql is not None:
                        out.write(sql + ";\n")
            finally:
                conn.close()

        def subject():
            out.write(sqlmigrate.schema_sql(path))

        timings = {floor: [], subject: []}
        for function in (floor, subject):  # warm the page cache and the imports
            function()
        for _ in range(RUNS):
            for function in (floor, subject):
                started = time.perf_counter()
                function()
                timings[function].append((time.perf_counter() - started) * 1000.0)
        print("SQLite %s, Python %s, %d tables (+ as many indexes, %d triggers and views), "
              "%d runs" % (sqlite3.sqlite_version, sys.version.split()[0], TABLES,
                           (TABLES + 9) // 10, RUNS))
        for name, function in (("floor: SELECT ... FROM sqlite_master + print", floor),
                               ("sqlmigrate.schema_sql (schema --sql)", subject)):
            samples = timings[function]
            print("%-46s median %7.2f ms  (min %.2f, max %.2f)" % (
                name, statistics.median(samples), min(samples), max(samples)))
        ratio = statistics.median(timings[subject]) / statistics.median(timings[floor])
        print("ratio %.2fx (target <= 1.2x)%s" % (ratio, "" if ratio <= 1.2 else "  MISSED"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
