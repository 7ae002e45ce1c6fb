"""Timing for `sqlmigrate test` (Migrator.test()) against `up` of the same
migrations: the issue's target is test <= 4x up.

    python bench/bench_test.py [MIGRATIONS]

MIGRATIONS (default 100) migrations, each with a down: odd ones create a
table with a foreign key to the previous table and an index, even ones add a
column to the previous table (down: drop_column).  Times are the median of
REPEAT in-process runs, `up` both to a new database file (what a deploy
pays, fsync included) and to an in-memory database (no I/O: the stricter
comparison, since test itself runs in memory).  Not a test: it prints numbers.
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

MIGRATIONS = int(sys.argv[1]) if len(sys.argv) > 1 else 100
REPEAT = 7


def write(directory, n):
    for i in range(1, n + 1):
        if i % 2:
            up = ("CREATE TABLE t%d (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                  "parent INTEGER REFERENCES t%d(id), score REAL);\n"
                  "CREATE INDEX idx_t%d_name ON t%d(name);" % (i, max(i - 2, 1), i, i))
            text = "-- migrate:up\n%s\n-- migrate:down\nDROP INDEX idx_t%d_name;\nDROP TABLE t%d;\n" \
                % (up, i, i)
            name = "%03d-table-%d.sql" % (i, i)
        else:
            text = ("import sqlmigrate\n\n\ndef up(db):\n    db.execute('ALTER TABLE t%d ADD COLUMN "
                    "c%d TEXT')\n\n\ndef down(db):\n    sqlmigrate.drop_column(db, 't%d', 'c%d')\n"
                    % (i - 1, i, i - 1, i))
            name = "%03d-column-%d.py" % (i, i)
        with open(os.path.join(directory, name), "w") as f:
            f.write(text)


def median_ms(function, prepare=lambda: None):
    samples = []
    for _ in range(REPEAT):
        prepare()
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(samples), min(samples), max(samples)


def main():
    tmp = tempfile.mkdtemp(prefix="sqlmigrate-bench-test-")
    try:
        directory = os.path.join(tmp, "migrations")
        os.mkdir(directory)
        write(directory, MIGRATIONS)
        db = os.path.join(tmp, "app.db")

        def fresh():
            if os.path.exists(db):
                os.remove(db)

        def test():
            result = sqlmigrate.Migrator(db, directory).test()
            assert result["ok"], result

        def up_memory():
            conn = sqlite3.connect(":memory:", isolation_level=None)
            sqlmigrate.Migrator(conn, directory).up()
            conn.close()
        rows = [("up, new database file", median_ms(lambda: sqlmigrate.Migrator(
            db, directory).up(), fresh)), ("up, in memory", median_ms(up_memory)),
            ("test", median_ms(test))]
        print("%d migrations with downs; Python %s, SQLite %s; median of %d" % (
            MIGRATIONS, sys.version.split()[0], sqlite3.sqlite_version, REPEAT))
        for label, (median, low, high) in rows:
            print("  %-24s %8.1f ms  (%.1f-%.1f)" % (label, median, low, high))
        test_ms = rows[2][1][0]
        print("  test / up (file)   = %.2fx   (target <= 4x)" % (test_ms / rows[0][1][0]))
        print("  test / up (memory) = %.2fx" % (test_ms / rows[1][1][0]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
