"""Timing for `sqlmigrate lint` (Migrator.lint()).  Targets (issue 15):
linting 100 .sql migrations <= 1 s; with Python migrations, <= 1.5x a dry
run of them.

    python bench/bench_lint.py [MIGRATIONS]

.sql set: MIGRATIONS files, each a table with a foreign key to the previous
one, an index and a row.  Python set: as many .py files, odd ones creating
such a table through db.executescript, even ones adding a column and
dropping the previous one's (drop_column) with an allow marker.  Each time is
the median of REPEAT in-process runs, each on a new Migrator (files read and
compiled anew, as in a new process), with no database (lint: a fresh build;
the dry run: in memory).  Not a test: it prints numbers.
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import sqlmigrate  # noqa: E402

MIGRATIONS = int(sys.argv[1]) if len(sys.argv) > 1 else 100
REPEAT = 11


def table_sql(i):
    return ("CREATE TABLE t%d (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "parent INTEGER REFERENCES t%d(id), score REAL);\n"
            "CREATE INDEX idx_t%d_name ON t%d(name);\n"
            "INSERT INTO t%d (name) VALUES ('first');" % (i, max(i - 2, 1), i, i, i))


def write_sql(directory, n):
    for i in range(1, n + 1):
        with open(os.path.join(directory, "%03d-table-%d.sql" % (i, i)), "w") as f:
            f.write("-- migrate:up\n%s\n-- migrate:down\nDROP INDEX idx_t%d_name;\n"
                    "DROP TABLE t%d;\n" % (table_sql(i), i, i))


def write_py(directory, n):
    for i in range(1, n + 1):
        if i % 2:
            text = ('def up(db):\n    db.executescript("""%s""")\n\n\ndef down(db):\n'
                    '    db.execute("DROP TABLE t%d")\n' % (table_sql(i), i))
        else:
            text = ("import sqlmigrate\n\n\ndef up(db):\n    db.execute('ALTER TABLE t%d ADD "
                    "COLUMN c%d TEXT')\n    # sqlmigrate: allow SM102 (bench)\n"
                    "    sqlmigrate.drop_column(db, 't%d', 'score')\n\n\ndef down(db):\n"
                    "    pass\n" % (i - 1, i, i - 1))
        with open(os.path.join(directory, "%03d-step-%d.py" % (i, i)), "w") as f:
            f.write(text)


def median_ms(function):
    samples = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(samples), min(samples), max(samples)


def main():
    tmp = tempfile.mkdtemp(prefix="sqlmigrate-bench-lint-")
    try:
        print("sqlmigrate %s, Python %s, SQLite %s; %d migrations, median of %d (min-max) ms"
              % (sqlmigrate.__version__, sys.version.split()[0], sqlmigrate.sqlite3.sqlite_version,
                 MIGRATIONS, REPEAT))
        for kind, write in (("sql", write_sql), ("py", write_py)):
            directory = os.path.join(tmp, kind)
            os.mkdir(directory)
            write(directory, MIGRATIONS)

            def lint():
                findings = sqlmigrate.Migrator(":memory:", directory).lint()
                assert not sqlmigrate._lint_fails(findings), findings

            def dry_run():
                assert len(sqlmigrate.Migrator(":memory:", directory).up(dry_run=True)) \
                    == MIGRATIONS

            times = {"lint": median_ms(lint), "dry run": median_ms(dry_run)}
            for name, (median, low, high) in sorted(times.items()):
                print("  %-3s %-8s %8.1f (%.1f-%.1f)" % (kind, name, median, low, high))
            print("  %-3s lint / dry run: %.2fx" % (kind, times["lint"][0] / times["dry run"][0]))
            command = [sys.executable, "-m", "sqlmigrate", "--dir", directory, "lint"]
            env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(
                os.path.abspath(__file__))))
            median, low, high = median_ms(lambda: subprocess.run(
                command, env=env, stdout=subprocess.DEVNULL, check=True))
            print("  %-3s CLI `lint` (a whole process) %.1f (%.1f-%.1f)" % (kind, median, low, high))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
