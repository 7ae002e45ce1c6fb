"""Timing for one big .sql migration (seed data): `up` and `lint` against
the floor, the file's up section run by sqlite3's own executescript() in one
transaction.  Targets: up <= 3x the floor, lint <= 5x.

    python bench/bench_bigfile.py [--runs N] [--only NAME,...] [--cli] [--sqlmigrate PATH]

Cases: 300,000 INSERTs (about 12 MB) and 30,000 (the scaling: a tenth of the
work should cost a tenth of the time); one INSERT of 100,000 VALUES rows; a
trigger of 50,000 lines; a 10 MB string literal.  Each time is the median of
N in-process runs (default 3), floor, up and lint taking turns: up on a new
database file (fsync included, as the floor's), lint with no database (it
builds a scratch one in memory; the in-memory floor is printed beside it).
--cli also times `python sqlmigrate.py up` and `lint` as whole processes;
--sqlmigrate measures another copy of sqlmigrate.py (an older commit's).
Not a test: it prints numbers.
"""

import argparse
import importlib.util
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sqlmigrate = None  # the copy measured, imported by main()


def inserts(n):
    return "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT);\n" + "".join(
        "INSERT INTO items VALUES(%d,'n''%d');\n" % (i, i) for i in range(n))


def values_rows(n):
    return ("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT);\nINSERT INTO items VALUES\n"
            + ",\n".join("(%d,'it''s; %d')" % (i, i) for i in range(n)) + ";\n")


def trigger_lines(n):
    return ("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT);\n"
            "CREATE TABLE log (id INTEGER, note TEXT);\n"
            "CREATE TRIGGER items_log AFTER INSERT ON items BEGIN\n" + "".join(
                "  INSERT INTO log VALUES (NEW.id, 'step; %d');\n" % i for i in range(n))
            + "END;\n")  # not fired: SQLite's own time to run it grows as its square


def string_literal(megabytes):
    return ("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT);\n"
            "INSERT INTO items VALUES (1, '" + "it''s; a line --\n" * (megabytes * 2 ** 20 // 18)
            + "');\n")


CASES = [("300k INSERTs", lambda: inserts(300000)), ("30k INSERTs", lambda: inserts(30000)),
         ("INSERT of 100k rows", lambda: values_rows(100000)),
         ("50k-line trigger", lambda: trigger_lines(50000)),
         ("10 MB string", lambda: string_literal(10))]


def floor(path, up_sql):
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.executescript("BEGIN;\n" + up_sql + "\n;COMMIT;")
    finally:
        conn.close()


def fresh(path):
    for suffix in ("", "-journal", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)


def timed(function):
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", help="case names, comma-separated (prefixes)")
    parser.add_argument("--cli", action="store_true")
    parser.add_argument("--sqlmigrate", default=os.path.join(ROOT, "sqlmigrate.py"))
    args = parser.parse_args()
    global sqlmigrate
    spec = importlib.util.spec_from_file_location("sqlmigrate", args.sqlmigrate)
    sqlmigrate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sqlmigrate)
    tmp = tempfile.mkdtemp(prefix="sqlmigrate-bench-bigfile-")
    print("sqlmigrate %s, Python %s, SQLite %s; median of %d runs (min-max), seconds"
          % (sqlmigrate.__version__, sys.version.split()[0], sqlite3.sqlite_version, args.runs))
    try:
        for name, make in CASES:
            if args.only and not any(name.startswith(o) for o in args.only.split(",")):
                continue
            directory, db = os.path.join(tmp, "m"), os.path.join(tmp, "a.db")
            shutil.rmtree(directory, ignore_errors=True)
            os.mkdir(directory)
            up_sql = make()
            with open(os.path.join(directory, "001-seed.sql"), "w") as f:
                f.write("-- migrate:up\n%s-- migrate:down\nDROP TABLE items;\n" % up_sql)
            samples = {"floor": [], "floor in memory": [], "up": [], "lint": []}
            for _ in range(args.runs):
                fresh(db)
                samples["floor"].append(timed(lambda: floor(db, up_sql)))
                samples["floor in memory"].append(timed(lambda: floor(":memory:", up_sql)))
                fresh(db)
                samples["up"].append(timed(lambda: sqlmigrate.Migrator(db, directory).up()))
                fresh(db)
                samples["lint"].append(timed(lambda: sqlmigrate.Migrator(db, directory).lint()))
            if args.cli:
                for command in ("up", "lint"):
                    samples["CLI " + command] = []
                    for _ in range(args.runs):
                        fresh(db)
                        samples["CLI " + command].append(timed(lambda: subprocess.run(
                            [sys.executable, args.sqlmigrate, "--db", db, "--dir", directory,
                             command], stdout=subprocess.DEVNULL, check=True)))
            fresh(db)
            medians = dict((k, statistics.median(v)) for k, v in samples.items())
            print("%s (%.1f MB, %d statements):" % (name, len(up_sql) / 2.0 ** 20,
                                                     len(sqlmigrate._split_sql(up_sql))))
            for key, values in samples.items():
                ratio = "" if key.startswith("floor") else "  %.2fx floor" % (
                    medians[key] / medians["floor"])
                print("  %-16s %7.2f (%.2f-%.2f)%s" % (key, medians[key], min(values),
                                                       max(values), ratio))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
