"""Start-up hook for the CPython x SQLite matrix (tests/matrix.py).

tests/matrix.py gives every test run a private user site (PYTHONUSERBASE) whose
site-packages holds a ``sqlmigrate-matrix.pth`` that puts this directory on
sys.path and imports this module.  ``site`` processes .pth files at start-up,
before ``sitecustomize`` and before any user code, in the test runner and in
every child Python the tests start with the inherited environment, even one
whose PYTHONPATH the tests replaced (``python -m sqlmigrate`` runs do that).
It does two things:

1. Lazy symbol binding.  The ``_sqlite3`` extension of a Python compiled against
   a new SQLite references functions that an old ``libsqlite3.so.0`` does not
   export (``sqlite3_trace_v2`` for Python 3.10+, ``sqlite3_create_window_function``
   for 3.11+, ...).  With the default ``RTLD_NOW`` the import fails; with
   ``RTLD_LAZY`` it loads, and only a *call* of a missing function aborts the
   process ("symbol lookup error").  Set SQLMIGRATE_MATRIX_LAZY=0 to turn it off.
2. Evidence.  When SQLMIGRATE_MATRIX_RECORD names a file, each process that
   imported ``sqlite3`` appends, at exit, one line: pid, the SQLite version it
   really ran and the path of the libsqlite3 it mapped.  tests/matrix.py checks
   these lines, so a pair never silently runs on the wrong library.

It shadows nothing: any real ``sitecustomize``/``usercustomize`` still runs.
Pure stdlib, Python 3.6+.  Nothing here is used outside the matrix runs.
"""
import os
import sys

def _lazy_binding():
    if os.environ.get("SQLMIGRATE_MATRIX_LAZY", "1") == "0":
        return
    try:
        flags = sys.getdlopenflags()
    except AttributeError:  # not a dlopen platform
        return
    lazy = getattr(os, "RTLD_LAZY", 1)
    now = getattr(os, "RTLD_NOW", 2)
    sys.setdlopenflags((flags & ~now) | lazy)


def _loaded_libsqlite():
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                if "libsqlite3" in line:
                    return line.split(None, 5)[-1].strip()
    except (IOError, OSError):
        pass
    return "?"


def _record_at_exit():
    path = os.environ.get("SQLMIGRATE_MATRIX_RECORD")
    if not path:
        return
    import atexit

    def _write():
        mod = sys.modules.get("sqlite3")
        version = getattr(mod, "sqlite_version", None) if mod else None
        if not version:
            return
        line = "%d\t%s\t%s\n" % (os.getpid(), version, _loaded_libsqlite())
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode("utf-8", "replace"))
            finally:
                os.close(fd)
        except OSError:
            pass

    atexit.register(_write)


if not getattr(sys, "_sqlmigrate_matrix_hook", False):
    sys._sqlmigrate_matrix_hook = True
    _lazy_binding()
    _record_at_exit()
