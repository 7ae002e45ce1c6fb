"""Which modules a start-up pulls in: `import sqlmigrate` plus a no-op
`migrate()`, and a CLI `status`, each in a fresh `python -S` child.

    python bench/imports.py

Prints, for each case, the stdlib modules of note it imported and its wall
time.  A check, not a test: what matters is the time W1 and W5 of run.py
measure; this shows where it goes (`-X importtime` gives the detail).
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WATCHED = ("argparse", "logging", "re", "json", "hashlib", "difflib", "inspect")

PROBES = {
    "import + no-op migrate()": (
        "import sys\nsys.path.insert(0, %(root)r)\nimport sqlmigrate\n"
        "assert sqlmigrate.migrate(%(db)r, %(dir)r) == []\n"),
    "CLI status": (
        "import sys\nsys.path.insert(0, %(root)r)\n"
        "sys.argv = ['sqlmigrate', '--db', %(db)r, '--dir', %(dir)r, 'status']\n"
        "import runpy\ntry:\n    runpy.run_module('sqlmigrate', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"),
}


def main():
    tmp = tempfile.mkdtemp(prefix="sqlmigrate-imports-")
    try:
        directory = os.path.join(tmp, "migrations")
        os.mkdir(directory)
        for version in range(1, 101):
            with open(os.path.join(directory, "%03d-step-%d.sql" % (version, version)), "w") as f:
                f.write("CREATE TABLE t%d (x);\n" % version)
        db = os.path.join(tmp, "app.db")
        sys.path.insert(0, ROOT)
        import sqlmigrate
        sqlmigrate.migrate(db, directory)
        for label, probe in PROBES.items():
            code = probe % {"root": ROOT, "db": db, "dir": directory}
            code += ("print(' '.join(m for m in %r if m in sys.modules), file=sys.stderr)"
                     % (WATCHED,))
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-S", "-c", code], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, universal_newlines=True)
            took = (time.perf_counter() - start) * 1000
            imported = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
            print("%-26s %6.1f ms  imports: %s" % (label, took, imported or "(none of note)"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
