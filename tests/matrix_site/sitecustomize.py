"""Start-up hook for the CPython x SQLite matrix (tests/matrix.py).

tests/matrix.py puts this directory first on PYTHONPATH for every test run, so
Python imports this file at start-up (``site`` imports ``sitecustomize``), in
the test runner and in every child Python the tests start with the inherited
environment. It does three things:

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
3. Chaining.  Any other ``sitecustomize`` on sys.path (which this one shadows)
   is still executed afterwards.

Pure stdlib, Python 3.6+.  Nothing here is used outside the matrix runs.
"""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


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


def _chain_other_sitecustomize():
    paths = [p for p in sys.path
             if os.path.abspath(p or os.curdir) != _HERE]
    try:
        import importlib.util
        from importlib.machinery import PathFinder
        spec = PathFinder.find_spec("sitecustomize", paths)
        if spec is None or spec.loader is None:
            return
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as exc:  # never break start-up of the test run
        sys.stderr.write("matrix sitecustomize: chained sitecustomize failed: %r\n"
                         % (exc,))


_lazy_binding()
_record_at_exit()
_chain_other_sitecustomize()
