"""Timing of a no-op start-up (issue 16): `migrate()` on an up-to-date
database with its migrations read from a directory, from a package on disk,
from a package inside a zip on sys.path and from inside a zipapp; and
`Migrator.is_current()` against the no-op `migrate()`.  Targets: package and
zipapp <= 1.2x directory; is_current() <= no-op migrate().

    python bench/bench_startup_sources.py [MIGRATIONS]

MIGRATIONS (default 50) .sql files (half of them .py, as in an application).
Each source is timed in its own subprocess (median of REPEAT in-process calls
after one warm-up, so the one-off imports are left out and listed apart: the
first call's cost).  Not a test: it prints numbers.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIGRATIONS = int(sys.argv[1]) if len(sys.argv) > 1 else 50
REPEAT = 301

TIMER = r"""
import statistics, sys, time
t0 = time.perf_counter()
import sqlmigrate
db, how, arg = sys.argv[1:4]
kwargs = {how: arg}
sqlmigrate.migrate(db, **kwargs)
first = time.perf_counter() - t0
def timed(*calls):  # interleaved, so a load that comes and goes hits both alike
    samples = [[] for _ in calls]
    for _ in range(%d):
        for call, times in zip(calls, samples):
            t = time.perf_counter(); call(); times.append(time.perf_counter() - t)
    return [statistics.median(times) * 1e6 for times in samples]
noop, current = timed(lambda: sqlmigrate.migrate(db, **kwargs),
                      lambda: sqlmigrate.Migrator(db, **kwargs).is_current())
print("%%.0f %%.0f %%.0f" %% (noop, current, first * 1e6))
""" % REPEAT


def files(n):
    for i in range(1, n + 1):
        if i % 2:
            yield "%03d-table-%d.sql" % (i, i), ("-- migrate:up\nCREATE TABLE t%d (id INTEGER "
                                                 "PRIMARY KEY, name TEXT);\n-- migrate:down\n"
                                                 "DROP TABLE t%d;\n" % (i, i))
        else:
            yield "%03d-index-%d.py" % (i, i), (
                "def up(db):\n    db.execute('CREATE INDEX i%d ON t%d(name)')\n\n\n"
                "def down(db):\n    db.execute('DROP INDEX i%d')\n" % (i, i - 1, i))


def main():
    tmp = tempfile.mkdtemp(prefix="sqlmigrate-bench-")
    try:
        package = os.path.join(tmp, "lib", "myapp", "migrations")
        os.makedirs(package)
        for path in (os.path.join(tmp, "lib", "myapp", "__init__.py"),
                     os.path.join(package, "__init__.py")):
            open(path, "w").close()
        archive = os.path.join(tmp, "bundle.zip")
        with zipfile.ZipFile(archive, "w") as z:
            z.writestr("myapp/__init__.py", "")
            z.writestr("myapp/migrations/__init__.py", "")
            for name, text in files(MIGRATIONS):
                with open(os.path.join(package, name), "w") as f:
                    f.write(text)
                z.writestr("myapp/migrations/" + name, text)
        # A zipapp: the same archive with sqlmigrate vendored inside it.
        pyz = os.path.join(tmp, "app.pyz")
        shutil.copy(archive, pyz)
        with zipfile.ZipFile(pyz, "a") as z:
            z.write(os.path.join(ROOT, "sqlmigrate.py"), "sqlmigrate.py")
            z.writestr("__main__.py", "import runpy, sys\nexec(sys.argv.pop(1))\n")
        db = os.path.join(tmp, "app.db")
        subprocess.run([sys.executable, "-c", "import sys, sqlmigrate; "
                        "sqlmigrate.migrate(sys.argv[1], sys.argv[2])", db, package],
                       check=True, env=dict(os.environ, PYTHONPATH=ROOT))
        runs = [("directory", package, [sys.executable, "-c", TIMER], ROOT),
                ("package (dir)", "myapp.migrations", [sys.executable, "-c", TIMER],
                 os.pathsep.join([ROOT, os.path.join(tmp, "lib")])),
                ("package (zip)", "myapp.migrations", [sys.executable, "-c", TIMER],
                 os.pathsep.join([ROOT, archive])),
                ("zipapp", "myapp.migrations", [sys.executable, pyz, TIMER], "")]
        print("%d migrations, Python %s, median of %d calls (microseconds)"
              % (MIGRATIONS, sys.version.split()[0], REPEAT))
        print("%-15s %12s %8s %14s %12s %12s" % ("source", "no-op migrate", "ratio",
                                                 "is_current()", "vs migrate", "first call"))
        base = None
        for label, arg, command, path in runs:
            how = "directory" if label == "directory" else "package"
            out = subprocess.run(command + [db, how, arg], check=True, stdout=subprocess.PIPE,
                                 env=dict(os.environ, PYTHONPATH=path)).stdout.split()
            noop, current, first = map(float, out)
            base = base or noop
            print("%-15s %12.0f %7.2fx %14.0f %11.2fx %12.0f"
                  % (label, noop, noop / base, current, current / noop, first))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
