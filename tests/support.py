"""Shared test fixtures: real files in a fresh temporary directory."""

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "sqlmigrate.py")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import sqlmigrate  # noqa: E402


def _write_bytecode_cache():
    """sqlmigrate's bytecode cache for this Python, written even under
    PYTHONDONTWRITEBYTECODE (CI hosts and the matrix set it): most CLI tests
    run `python -m sqlmigrate` in a subprocess, which reads the cache but
    never writes it, and compiling the file costs about 70 ms a process,
    40% of the suite's time.  The cache holds the file's hash (3.7+; 3.6:
    its mtime and size), checked before each use: an edit within one second
    that keeps the size is seen too."""
    import py_compile
    mode = getattr(py_compile, "PycInvalidationMode", None)
    try:
        py_compile.compile(SCRIPT, doraise=True, **(
            {"invalidation_mode": mode.CHECKED_HASH} if mode else {}))
    except (OSError, py_compile.PyCompileError):
        pass  # a read-only checkout: each process compiles, slower but the same


_write_bytecode_cache()


# For a child run under a file-size limit: a bytecode cache it wrote would be
# cut short, and PyPy then fails to import sqlmigrate in every later child.
NO_BYTECODE = {"PYTHONDONTWRITEBYTECODE": "1"}


def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class TempDirTestCase(unittest.TestCase):
    """A temporary directory with `migrations/` and a database path `app.db`."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sqlmigrate-test-")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.dir = os.path.join(self.tmp, "migrations")
        os.mkdir(self.dir)
        self.db = os.path.join(self.tmp, "app.db")

    def write(self, filename, text, directory=None, mode="w"):
        path = os.path.join(directory or self.dir, filename)
        if isinstance(text, bytes):
            with open(path, "wb") as f:
                f.write(text)
        else:
            with open(path, mode, encoding="utf-8", newline="") as f:
                f.write(textwrap.dedent(text).lstrip("\n"))
        return path

    def write_sql(self, version, description, up, down=None, options=""):
        text = "-- migrate:up %s\n%s\n" % (options, up)
        if down is not None:
            text += "-- migrate:down\n%s\n" % down
        return self.write("%03d-%s.sql" % (version, description), text)

    def connect(self, path=None):
        conn = sqlite3.connect(path or self.db, isolation_level=None)
        self.addCleanup(conn.close)
        return conn

    def tables(self, conn=None):
        conn = conn or self.connect()
        return sorted(r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"))

    def schema_version(self, path=None):
        conn = sqlite3.connect(path or self.db)
        try:
            return conn.execute("SELECT value FROM metadata WHERE key = 'schema_version'").fetchone()[0]
        finally:
            conn.close()

    def cli(self, *args, **kwargs):
        """Run the CLI as a real subprocess; returns (status, stdout, stderr)."""
        env = dict(os.environ)
        for name in ("SQLMIGRATE_DB", "DATABASE_PATH", "SQLMIGRATE_DIR"):
            env.pop(name, None)
        env.update(kwargs.pop("env", {}))
        python = kwargs.pop("python", sys.executable)
        # `python -m sqlmigrate` by default: a script run recompiles the
        # whole file each time; script=True for the tests of that form.
        command = [python, "-m", "sqlmigrate"] + list(args)
        env["PYTHONPATH"] = ROOT
        if kwargs.pop("script", False):
            command = [python, SCRIPT] + list(args)
        proc = subprocess.run(command, cwd=kwargs.pop("cwd", self.tmp), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=kwargs.pop("timeout", 60), **kwargs)
        return (proc.returncode, proc.stdout.decode("utf-8", "replace"),
                proc.stderr.decode("utf-8", "replace"))
