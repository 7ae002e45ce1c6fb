"""sqlmigrate: versioned, transactional schema migrations for SQLite in one file.

Numbered migration files (``001-initial-schema.py``, ``002-add-user-field.sql``)
run in order, each all-or-nothing; the highest applied version is kept in a
``metadata`` table inside the database.  Standard library only; CPython 3.6+
and SQLite 3.7.17+.  At start-up, ``sqlmigrate.migrate("app.db", "migrations")``
applies whatever is pending; ``Migrator`` has status, up, down, dry runs and
more; from a shell: ``python -m sqlmigrate --db app.db status | up | down``.
"""

import collections
import itertools
import os
import re
import sqlite3
import stat
import sys
import time
import weakref
from contextlib import contextmanager

__version__ = "0.1.0"
__all__ = [
    "MigrationError", "RequestError", "Migration", "Migrator", "migrate", "wait_until_current",
    "backup", "schema_sql",
    "reconcile", "merge_json_defaults", "schema_report", "schema_info",
    "rebuild_table", "drop_column", "backfill", "main",
]

_DEFAULT_TABLE = "metadata"
_DEFAULT_BUSY_TIMEOUT = 5.0  # seconds


def _what_was_rolled_back(rolled_back, direction):
    """What a failed migration left.  rolled_back: the whole run's name, True
    (the migration's own transaction) or False (it ran outside one)."""
    return ("the whole %s was rolled back; the database is as it was" % rolled_back
            if rolled_back in ("--atomic run", "dry run") else
            "it ran outside a transaction: the database may be partly changed (%s)" % (
                "not recorded: up runs it again" if direction == "up" else
                "still recorded, shown as partly rolled back: run down again, or up")
            if not rolled_back else
            "the migration was rolled back" if direction == "up" else
            "its down was rolled back, so it stays applied")


def _failure_outcome(whole_run, m, direction):
    """What a failure of m's run outside its own code (its COMMIT, its
    record) left; m None: the whole run's."""
    return _what_was_rolled_back(whole_run or m.transactional, direction) + (
        "" if m is None or m.transactional else ", and it is %s recorded as applied"
        % ("not" if direction == "up" else "still"))


class MigrationError(Exception):
    """Every error sqlmigrate raises on purpose.  Its fields say what it is
    about (None where they do not apply); str() is the message, composed from
    the fields unless one was given.  `kind`, for code to test: "locked",
    "read-only", "not-a-database", "cannot-open", "full", "sqlite" (another
    sqlite3 error), "no-database", "bad-name", "bad-directory", "bad-file",
    "bad-database", "bad-request", "drift", "ahead", "out-of-order", "no-down",
    "not-tracking-table", "changed-meanwhile", "mark-backwards", "not-atomic",
    "migration-failed", "foreign-keys", "transaction-ended", "backup",
    "refused-statement" (one the driver's server cannot take, or that would
    break the migration's rollback or its record: never sent, or undone; or a
    migration's db.create_function/collation of a name SQLite already has),
    "connection-lost" (a database server, e.g. a dqlite leader, went away),
    "unreachable" (no server answers at the CLI's --db address),
    "rebuild-refused", "reconcile-refused", "bad-json", "no-table", "no-column",
    "schema-file" (not ours, unreadable or unwritable), "baseline-refused", "behind-baseline",
    "not-current" (wait_until_current timed out), "lint" (up --lint found errors),
    "bad-sql" (SQL text that cannot be read: unbalanced parentheses...),
    "unaddressable" (rows a helper cannot find again by their key),
    "backfill-failed" (`batch`: the failed batch's (after, last) keys),
    "backfill-changed" (a backfill's migration changed under its saved position),
    "backfill-refused" (an up's backfill after its down's was cut short)."""

    path = database = version = statement = tables = kind = None
    direction = line = cause = hint = rolled_back = outcome = None
    batch = None
    problems = ()

    def __init__(self, message=None, **fields):
        for name in set(fields) - _ERROR_FIELDS:
            raise TypeError("MigrationError has no field %r" % name)
        self.__dict__.update(fields, message=message)
        Exception.__init__(self, *(() if message is None else (message,)))

    def __str__(self):
        return self._text() + ("; " + self.outcome if self.outcome else "")

    def _text(self):
        """The message without its outcome (for an error that wraps this one)."""
        text, where = self.message, self.database or "the database"
        named = "database " + self.database if self.database else "the database"
        at = "%s%s" % (self.path, "" if self.line is None else ":%s" % self.line)
        if text is None and self.kind == "migration-failed":
            parts = ["%s (%s) %s" % (at, self.direction, self.cause)]
            if self.statement:
                parts.append("statement: " + " ".join(self.statement.split())[:500])
            parts += [self.hint] * bool(self.hint) + [
                _what_was_rolled_back(self.rolled_back, self.direction)]
            text = "\n  ".join(parts)
        elif text is None and self.kind == "bad-file" and self.cause is not None:
            text = "%s: %s" % (at, self.cause)
        elif text is None and self.problems:
            text = ("invalid migration files:\n  " + "\n  ".join(self.problems)
                    if self.kind == "bad-name" else "; ".join(self.problems))
        elif text is None:
            text = {
                "locked": "%s is locked by another process; wait for it to finish "
                          "(or stop it) and try again, or raise --busy-timeout" % named,
                # No database name: a caller's connection, which may itself
                # be read-only (mode=ro, PRAGMA query_only) on a writable file.
                "read-only": "%s is read-only: %scheck the file's and its directory's "
                             "permissions" % (named, "" if self.database else
                                              "was the connection opened read-only "
                                              "(mode=ro, PRAGMA query_only)? else "),
                "not-a-database": "%s is not an SQLite database (%s)" % (where, self.cause),
                "foreign-keys": "foreign key violations: %s%s" % (
                    self.cause, " (%s)" % self.hint if self.hint else ""),
                "cannot-open": "cannot open %s: %s" % (named, self.cause),
                "unreachable": "no database server answers at %s (%s): check the address and "
                               "that the cluster is running" % (where, self.cause),
                "connection-lost": "lost the connection to %s's server (%s): what was in flight "
                                   "was not committed (or, if the loss came during COMMIT, may "
                                   "have been); connect again, through any live node, and run "
                                   "again: the runner re-reads what was applied under the write "
                                   "lock" % (where, self.cause),
            }.get(self.kind) or "%s: %s" % (where, self.cause)
            if self.path:  # the migration or file that met the database's problem
                text = "%s: %s" % (self.path, text)
        return text


_ERROR_FIELDS = frozenset(name for name in vars(MigrationError) if not name.startswith("_"))


class RequestError(MigrationError):
    """The request itself is wrong (bad file names, missing directory, bad
    arguments): nothing was tried.  The CLI exits with status 2 for these."""

    kind = "bad-request"


class _Result(object):
    """What up()/down() did to one migration (the Migration is not changed)."""

    __slots__ = ("migration", "direction", "duration_ms", "executed_sql")

    def __init__(self, migration, direction, duration_ms=None, executed_sql=None):
        self.migration, self.direction = migration, direction
        self.duration_ms, self.executed_sql = duration_ms, executed_sql

    def __getattr__(self, name):  # version, name, filename, path, kind, checksum...
        return getattr(self.migration, name)

    def __repr__(self):
        return "<%s v%d %s>" % (self.direction, self.version, self.filename)


# Messages go to logging.getLogger("sqlmigrate"), with `logging` imported at
# the first one: the import costs more than a whole CLI `status` (bench W1),
# and a start-up with nothing to do logs nothing.  _LOG_SETUP holds what is
# to be done with the module when it is first needed; a library's logger gets
# a NullHandler, so an application that configures no logging sees no "last
# resort" output from us.
_LOG_SETUP = [lambda logging: logging.getLogger("sqlmigrate").addHandler(logging.NullHandler())]


def _log(level, message, *args, **where):
    """logging.getLogger(where.get("logger", "sqlmigrate")).<level>(message,
    *args).  What the CLI prints as results on stdout instead (a line per
    applied migration, mark's, a dry run's skip) goes to "sqlmigrate.runner"."""
    import logging
    while _LOG_SETUP:
        try:
            _LOG_SETUP.pop(0)(logging)
        except IndexError:  # another thread ran the last one
            break
    getattr(logging.getLogger(where.get("logger", "sqlmigrate")), level)(message, *args)


# --- Compatibility shims ---------------------------------------------------
# Every version-dependent branch in the module reads one of these names.

_SQLITE_VERSION = sqlite3.sqlite_version_info
# Connection.backup() arrived in Python 3.7; 3.6 gets a locked file copy.
# So does PyPy: its backup() (7.3.11) raises TypeError on a busy source and
# leaks the backup (the connection can no longer close), and AttributeError
# instead of the error when a step fails (a full disk).
_HAS_BACKUP_API = hasattr(sqlite3.Connection, "backup") and sys.implementation.name != "pypy"
# Python 3.12 added Connection.autocommit; _LEGACY_TRANSACTION_CONTROL is its
# default, under which isolation_level rules (as on 3.6 to 3.11).
_LEGACY_TRANSACTION_CONTROL = getattr(sqlite3, "LEGACY_TRANSACTION_CONTROL", -1)
# The features that depend on the SQLite version are a _Driver's (below): a
# driver's library or server may be newer or older than the sqlite3 module's.
# A package that is not a directory (a zip archive or zipapp, an egg, any
# loader): importlib.resources.files() from Python 3.9; 3.6 to 3.8 have no
# files(), and there a zipimporter's own table of the archive's names and its
# get_data() serve.  (A package that is a directory is read as one.)
_HAS_RESOURCE_FILES = sys.version_info >= (3, 9)
_MIGRATION_LIKE = re.compile(r"(?is).*\.(py|sql)\Z").match  # only these files are read

# Where neither Connection.backup() (Python 3.6, PyPy; another driver) nor
# VACUUM INTO (SQLite before 3.27) can copy a database, its bytes are copied,
# but never by this process: closing a descriptor of the file drops every
# POSIX lock the process holds on it, those of its SQLite connections too (in
# WAL mode another process closing last then deletes the WAL under them, and
# their later commits are lost).  A child process's descriptors are its own.
_COPY_IN_CHILD = """
import os, shutil, sys
try:
    for i in range(1, len(sys.argv), 4):
        source, dest, flags, mode = sys.argv[i:i + 4]
        with open(source, "rb") as original, \\
                os.fdopen(os.open(dest, int(flags), int(mode)), "wb") as copy:
            shutil.copyfileobj(original, copy, 1 << 20)
except OSError as e:  # its errno, then the file named (for the parent's OSError)
    sys.stdout.write("%d\\n%s" % (e.errno or 0, e.filename or ""))
    sys.stdout.flush()
    sys.exit(3)
"""


_NEW_COPY = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)


def _copy_files(copies):
    """Copy each (source, dest, os.open flags for dest, mode) in a child
    process (see _COPY_IN_CHILD); an OSError naming the first that failed."""
    import subprocess
    if not sys.executable:  # an embedded Python: no child to run it in
        raise OSError(0, "this Python cannot start a child process to copy the database in")
    done = subprocess.run([sys.executable, "-S", "-E", "-c", _COPY_IN_CHILD] + [
        str(part) for copy in copies for part in copy], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    if done.returncode:
        number, _, filename = done.stdout.decode("utf-8", "replace").partition("\n")
        if done.returncode != 3 or not number.isdigit():  # the child itself failed
            raise OSError(0, "copying the database in a child process failed: %s" % (
                done.stderr.decode("utf-8", "replace").strip().splitlines() or
                ["exit status %d" % done.returncode])[-1])
        raise OSError(int(number), os.strerror(int(number)), filename or None)


def _archived_package_files(module, location):
    """{name: its bytes, or None for a directory} in package `module` at `location`."""
    if _HAS_RESOURCE_FILES:
        import importlib.resources
        root = importlib.resources.files(module)
        return dict((t.name, None if t.is_dir() else t.read_bytes() if _MIGRATION_LIKE(t.name)
                     else b"") for t in root.iterdir())
    loader = module.__spec__.loader
    if not (hasattr(loader, "archive") and hasattr(loader, "_files")):  # not a zipimporter
        raise RequestError("cannot list the files of package %s (its loader %s cannot): "
                           "install it as a directory, or use Python 3.9+"
                           % (module.__name__, type(loader).__name__), kind="bad-directory",
                           path=module.__name__)
    inner = os.path.join(location[len(loader.archive) + 1:], "")
    names = set(key[len(inner):].partition(os.sep)[:2] for key in loader._files
                if key.startswith(inner) and len(key) > len(inner))
    return dict((name, None if sep else loader.get_data(os.path.join(location, name))
                 if _MIGRATION_LIKE(name) else b"") for name, sep in names)


# Windows cannot open a directory to fsync it (after a rename, for instance).
_CAN_FSYNC_DIRECTORIES = os.name != "nt"
# The shadow tables of the core virtual-table modules, for SQLite before 3.37
# (no PRAGMA table_list): {module: the suffixes its xShadowName accepts}.  A
# table "<virtual table>_<suffix>" is a shadow table, as sqlite3ShadowTableName
# decides (split at the last "_"; names compared case-insensitively), so the
# output is the same on every version.  Extensions' modules are known only to
# PRAGMA table_list.
_FTS3_SHADOWS = frozenset(("content", "segments", "segdir", "docsize", "stat"))
_RTREE_SHADOWS = frozenset(("node", "rowid", "parent"))
_SHADOW_SUFFIXES = {"fts3": _FTS3_SHADOWS, "fts4": _FTS3_SHADOWS,
                    "fts5": frozenset(("data", "idx", "content", "docsize", "config")),
                    "rtree": _RTREE_SHADOWS, "rtree_i32": _RTREE_SHADOWS,
                    "geopoly": _RTREE_SHADOWS}


class _DB(object):
    """The exception classes of every driver seen so far (sqlite3's first),
    for `except` clauses: a driver's errors do not derive from sqlite3's."""
    Error, OperationalError = (sqlite3.Error,), (sqlite3.OperationalError,)
    # A server driver's errors that mean the connection to the server is gone
    # (dqlite-dbapi: InterfaceError once a lost leader invalidated it), and its
    # OperationalError, which has code None only when no server answered.
    Lost, ServerOperational = (), ()

    @classmethod
    def register(cls, driver):
        """Add a _Driver's or a DB-API module's classes."""
        for name in ("Error", "OperationalError"):
            known, new = getattr(cls, name), getattr(driver, name, driver.Error)
            if new not in known:
                setattr(cls, name, known + (new,))


# What the DB-API clients that raise NotSupportedError (instead of lacking the
# method) cannot do: dqlite-dbapi (dqlite's server has no such calls; its
# text_factory takes only str, which is what it always returns).
_UNSUPPORTED = {"dqlitedbapi": frozenset(("backup", "set_trace_callback", "row_factory",
                                          "set_authorizer", "text_factory"))}
# Drivers whose SQLite is a server's, which may differ between connections
# (and whose module's sqlite_version is a constant): probed per session.  The
# CLI's --db for them is an address, HOST:PORT[/DATABASE]: {driver: its
# connect()'s arguments for (address, database, busy timeout)}.
_SERVER_DRIVERS = {"dqlitedbapi": lambda address, database, timeout: ((address,), dict(
    database=database or "default", busy_timeout=timeout, dial_timeout=timeout))}
# Patterns that only some paths use are strings, compiled where used (re
# caches them): the module's import does not pay for them (bench/README.md).
_SERVER_ADDRESS = r"(?:\[[0-9a-fA-F:.]+\]|[^/:\[\]]+):[0-9]+(?:/(.+))?\Z"
# Pragma setters a driver's server cannot take: refused before they are sent
# (a statement a node cannot survive must never reach it).  Measured on
# Debian's dqlite 1.11: PRAGMA journal_mode = DELETE kills the leader
# ("free(): invalid pointer"); dqlite replicates its own write-ahead log, so the
# journal mode is the server's to choose, whatever the value asked for.
_REFUSED_PRAGMA_SETTERS = {"dqlitedbapi": {
    "journal_mode": "dqlite manages the journal itself, and this pragma crashes a dqlite node"}}


class _Driver(object):
    """One connection's DB-API driver: its exception classes, the SQLite
    version of the library or server behind it (which may not be the local
    sqlite3 module's), and which optional Connection methods it has."""

    def __init__(self, module, version, connection_type, server_connection=None):
        self.module, self.name = module, module.__name__
        self.Error = module.Error
        self.OperationalError = getattr(module, "OperationalError", module.Error)
        unsupported = _UNSUPPORTED.get(self.name.split(".")[0], ())
        self.server = self.name.split(".")[0] in _SERVER_DRIVERS
        self.refused_pragmas = _REFUSED_PRAGMA_SETTERS.get(self.name.split(".")[0], {})
        for capability in ("backup", "set_trace_callback", "row_factory", "text_factory",
                           "set_authorizer"):
            # PyPy's sqlite3.Connection has row_factory and text_factory only
            # on its instances.
            setattr(self, "has_" + capability, capability not in unsupported and (
                hasattr(connection_type, capability) or connection_type is sqlite3.Connection))
        # A server's version is asked for only when a feature first depends on
        # it (__getattr__): a no-op start-up stays one query, as on sqlite3.
        self._server_connection = server_connection
        if version is not None:
            self._set_version(version)
        _DB.register(self)
        if self.server and self.OperationalError not in _DB.ServerOperational:
            _DB.ServerOperational += (self.OperationalError,)
            _DB.Lost += tuple(getattr(module, name) for name in (
                "InterfaceError", "AmbiguousCommitError") if hasattr(module, name))

    def _set_version(self, version):
        self.sqlite_version, self.version_text = version, ".".join(map(str, version))
        # pragma_table_info() as a table-valued function: SQLite 3.16.
        self.has_pragma_functions = version >= (3, 16, 0)
        # ALTER TABLE ... RENAME COLUMN: 3.25; ... DROP COLUMN (without its 3.35.0-4 bugs): 3.35.5.
        self.has_rename_column = version >= (3, 25, 0)
        self.has_drop_column = version >= (3, 35, 5)
        # PRAGMA table_xinfo (table_info plus generated columns): 3.26; generated
        # columns themselves: 3.31, so table_info is complete before that.
        self.has_table_xinfo = version >= (3, 26, 0)
        self.has_generated_columns = version >= (3, 31, 0)
        self.has_vacuum_into = version >= (3, 27, 0)
        # printf() in SQL: 3.8.3.
        self.has_printf = version >= (3, 8, 3)
        # PRAGMA table_list, which names a virtual table's shadow tables (type
        # 'shadow', as the module's xShadowName says): 3.37.  Before, the core
        # modules' own list (_SHADOW_SUFFIXES) stands in for it.
        self.has_table_list = version >= (3, 37, 0)
        # ADD COLUMN tests a new column's CHECK, and a generated column's NOT
        # NULL, on the rows already there: 3.37.  Before, it adds them untested.
        self.tests_added_constraints = version >= (3, 37, 0)

    def __getattr__(self, name):  # only for what _set_version has not set yet
        conn = self.__dict__.get("_server_connection")
        if conn is None or name.startswith("_"):
            raise AttributeError(name)
        self._server_connection = None
        self._set_version(_Driver._queried_version(conn))
        return getattr(self, name)

    def refusal(self, sql):
        """Why `sql` must not be sent through this driver, or None."""
        if not self.refused_pragmas or "PRAGMA" not in sql.upper():
            return None
        for statement in _split_sql(sql):
            cursor = _Cursor(statement)
            if cursor.take("PRAGMA"):
                name = cursor.name()  # unquoted, past a schema qualifier
                why = self.refused_pragmas.get(_key(name or ""))
                if why and cursor.peek() in (("punct", "="), ("punct", "(")):
                    return "PRAGMA %s = ... was not sent: %s (driver %s)" % (
                        name, why, self.name)
        return None

    @classmethod
    def probe(cls, conn):
        """The _Driver of a connection that is not sqlite3's.  An in-process
        library's module knows its version; a server driver's (known to be
        SQLite) asks the server when needed; any other connection answers one
        query now, which also refuses one that is not SQLite at all."""
        module = _driver_module(type(conn))
        if module is not None and module.__name__.split(".")[0] in _SERVER_DRIVERS:
            return cls(module, None, type(conn), server_connection=conn)
        version = getattr(module, "sqlite_version_info", None)
        if not (isinstance(version, tuple) and len(version) == 3):
            version = cls._queried_version(conn)
        if module is None:
            raise RequestError("the connection (%s.%s) comes from no DB-API module with an "
                               "Error class" % (type(conn).__module__, type(conn).__name__))
        return cls(module, version, type(conn))

    @staticmethod
    def _queried_version(conn):
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT sqlite_version()")
            text = cursor.fetchone()[0]
            return tuple(int(part) for part in str(text).split(".")[:3])
        except Exception as e:  # whatever a foreign driver raises
            raise RequestError("the connection (%s.%s) is not an SQLite database: SELECT "
                               "sqlite_version() failed (%s: %s)" % (
                                   type(conn).__module__, type(conn).__name__,
                                   type(e).__name__, e))


def _driver_module(connection_type):
    """The DB-API module a connection class comes from: its module or the
    nearest package above it that has `Error` (e.g. pysqlite3.dbapi2)."""
    name = connection_type.__module__
    while name:
        module = sys.modules.get(name)
        if module is not None and isinstance(getattr(module, "Error", None), type):
            return module
        name = name.rpartition(".")[0]
    return None


# The stdlib module's driver: its library is in this process, so its version
# needs no query (a no-op start-up stays one query).
_SQLITE3_DRIVER = _Driver(sqlite3, _SQLITE_VERSION, sqlite3.Connection)
# {connection class: _Driver} for in-process libraries (pysqlite3, sqlcipher3),
# whose version is the same for every connection: probed once per process.
_drivers_by_type = {}
# {id(connection): (connection, _Driver)} while a session uses a server
# driver's connection (such classes take neither weak references nor attributes).
_drivers_in_use = {}


def _driver(conn):
    """The _Driver of `conn` (a connection, cursor or _MigrationConnection)."""
    raw = _raw(conn)
    if isinstance(raw, sqlite3.Connection):
        return _SQLITE3_DRIVER
    driver = _drivers_by_type.get(type(raw))
    if driver is not None:
        return driver
    entry = _drivers_in_use.get(id(raw))
    if entry is not None and entry[0] is raw:
        return entry[1]
    driver = _Driver.probe(raw)
    if not driver.server:
        _drivers_by_type[type(raw)] = driver
    return driver


@contextmanager
def _driver_session(conn, driver=None):
    """Probe a driver connection once for the whole session (nested ones reuse it)."""
    raw = _raw(conn)
    if (isinstance(raw, sqlite3.Connection) or type(raw) in _drivers_by_type or
            id(raw) in _drivers_in_use):
        yield
        return
    driver = driver or _driver(raw)
    if type(raw) in _drivers_by_type:
        yield
        return
    _drivers_in_use[id(raw)] = (raw, driver)
    try:
        yield
    finally:
        del _drivers_in_use[id(raw)]


def _is_connection(db):
    """A DB-API connection (any driver), as opposed to a path."""
    return isinstance(db, (sqlite3.Connection, _MigrationConnection)) or (
        not isinstance(db, (str, bytes, os.PathLike)) and hasattr(db, "cursor"))


# sqlite3.SQLITE_TRANSACTION (the authorizer's action code for BEGIN, COMMIT
# and ROLLBACK; SQLITE_ATTACH too) is missing from some builds' module; the values are fixed.
_SQLITE_TRANSACTION = getattr(sqlite3, "SQLITE_TRANSACTION", 22)
_SQLITE_ATTACH = getattr(sqlite3, "SQLITE_ATTACH", 24)
_SQLITE_PRAGMA = getattr(sqlite3, "SQLITE_PRAGMA", 19)
# set_authorizer(None) removes the authorizer from Python 3.11 on; 3.6 to 3.10
# install None as the callback, which denies every statement: there, an
# authorizer that allows everything stands for "none".
_NO_AUTHORIZER = None if sys.version_info >= (3, 11) else (lambda *args: sqlite3.SQLITE_OK)


def _authorizer_text(value):
    """An authorizer argument as str or None: PyPy's sqlite3 (7.3.11 at
    least) passes cffi `char *` pointers instead."""
    if value is None or isinstance(value, str):
        return value
    import _sqlite3  # PyPy's sqlite3 implementation, whose cffi handle reads the pointer
    return _sqlite3._ffi.string(value).decode("utf-8") if value else None  # NULL is falsy


# PyPy's sqlite3 (7.3.11 at least) turns every TEXT into str(bytes), "b'x'",
# once text_factory is set to `str` itself; a decoding function works there.
# CPython keeps `str`, which decodes in C.
_TEXT_AS_STR = (lambda data: data.decode("utf-8")) if sys.implementation.name == "pypy" else str

# SQLite's primary result codes (stable) and, for Pythons before 3.11 (no
# sqlite_errorcode), the fixed text SQLite gives each.
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_CONSTRAINT_FOREIGNKEY = 5, 6, 787
_SQLITE_KINDS = ((5, "locked", "database is locked"), (8, "read-only", "readonly database"),
                 (26, "not-a-database", "not a database"), (14, "cannot-open", "unable to open"),
                 (13, "full", "database or disk is full"))
_DATABASE_KINDS = frozenset(kind for _, kind, _ in _SQLITE_KINDS) | {"connection-lost"}


def _sqlite_kind(error):
    """What a sqlite3 error is: one of _DATABASE_KINDS (the database file's
    fault), "no-table", "no-column", "no-function", "foreign-key" (a FOREIGN
    KEY constraint failed), or None.  The only place that reads an error's
    text: missing tables, columns and functions share SQLITE_ERROR with every
    other mistake, and Python < 3.11 gives no code at all."""
    if isinstance(error, _DB.Lost) or (isinstance(error, _DB.ServerOperational) and
                                       getattr(error, "code", 0) is None):
        return "connection-lost"
    code = getattr(error, "sqlite_errorcode", None)
    if code is None and isinstance(getattr(error, "code", None), int):
        code = error.code  # dqlite-dbapi's errors carry the extended result code as .code
    text = str(error)
    for number, kind, message in _SQLITE_KINDS:
        if (code & 0xFF == number) if code is not None else message in text:
            return kind
    if code == _SQLITE_CONSTRAINT_FOREIGNKEY or code is None and \
            text == "FOREIGN KEY constraint failed":
        return "foreign-key"
    if isinstance(error, _DB.OperationalError):
        if text.startswith("no such table"):
            return "no-table"
        if text.startswith("no such column"):
            return "no-column"
        if text.startswith("no such function"):
            return "no-function"
    return None


def _sqlite_failure(error, database):
    """A sqlite3 error as a MigrationError a person can act on."""
    kind = _sqlite_kind(error)
    failure = MigrationError(kind=kind if kind in _DATABASE_KINDS else "sqlite",
                             database=database, cause=str(error))
    failure.__cause__ = error
    return failure


def _autocommit_mode(conn):
    return getattr(conn, "autocommit", _LEGACY_TRANSACTION_CONTROL)


# --- SQL text: one tokenizer, one splitter, one quoter ----------------------

# SQLite's spaces are ASCII space, tab, newline, form feed and carriage
# return only (tokenize.c): U+00A0 and the other Unicode spaces, which \s and
# str.strip() take, are characters of a name to it.
_SQL_SPACES = " \t\n\f\r"
# Compiled where used, as every pattern below (re caches them): `status` and a
# no-op migrate() read no SQL, and their start-up does not pay for them.
_TOKEN_RE = r"""(?xs)
    (?P<space>[\ \t\n\f\r]+)
  | (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<string>'(?:[^']|'')*(?:'|\Z))
  | (?P<ident>"(?:[^"]|"")*(?:"|\Z)|`(?:[^`]|``)*(?:`|\Z)|\[[^\]]*(?:\]|\Z))
  | (?P<word>[^\ \t\n\f\r'"`\[\]();,.+\-*/%<>=!|&~^]+)
  | (?P<punct>.)
"""


def _tokenize(sql):
    """(kind, text) pairs that join back to `sql`; kind: space, comment,
    string, ident (a quoted identifier), word or punct."""
    return [(match.lastgroup, match.group()) for match in re.compile(_TOKEN_RE).finditer(sql)]


# Strings, quoted identifiers and comments (trigger bodies are found by name).
_CAN_HIDE_A_SEMICOLON = ("'", '"', "`", "[", "--", "/*")


# Where a statement ends, decided as SQLite's own sqlite3_complete() decides
# it (its state machine in complete.c, rows = states, columns = tokens ; space
# other EXPLAIN CREATE TEMP TRIGGER END): a ';' ends a statement except inside
# CREATE TRIGGER ... BEGIN ... END, whose END counts only right after a ';'
# (so a column named `end` or CASE ... END does not end it).  In Python rather
# than sqlite3.complete_statement(): PyPy's sqlite3 and other drivers lack it,
# and calling it at each ';' re-reads the trigger so far (quadratic).
_COMPLETE_WORDS = {"EXPLAIN": 3, "CREATE": 4, "TEMP": 5, "TEMPORARY": 5, "TRIGGER": 6,
                   "END": 7}
_COMPLETE_STATES = ((1, 0, 2, 3, 4, 2, 2, 2), (1, 1, 2, 3, 4, 2, 2, 2),
                    (1, 2, 2, 2, 2, 2, 2, 2), (1, 3, 3, 2, 4, 2, 2, 2),
                    (1, 4, 2, 2, 2, 4, 5, 2), (6, 5, 5, 5, 5, 5, 5, 5),
                    (6, 6, 5, 5, 5, 5, 5, 7), (1, 7, 5, 5, 5, 5, 5, 5))
_START = 1
# In the states NORMAL and TRIGGER (a trigger's body) only a ';' changes the
# state, so the splitter skips to the next ';' outside strings, quoted names
# and comments in one match: _TOKEN_RE's tokens, read in C (a 10 MB file of
# INSERTs took seconds token by token).  Quoted text is matched unrolled
# ('[^']*(?:''[^']*)*'), the same text as _TOKEN_RE's '(?:[^']|'')*'.
_TO_SEMICOLON = (r"""(?:[^;'"`\[\-/]+|--[^\n]*|/\*.*?(?:\*/|\Z)|'[^']*(?:''[^']*)*(?:'|\Z)"""
                 r"""|"[^"]*(?:""[^"]*)*(?:"|\Z)|`[^`]*(?:``[^`]*)*(?:`|\Z)|\[[^\]]*(?:\]|\Z)"""
                 r"""|[-/])*""")
_TO_SEMICOLON_RE = "(?s)" + _TO_SEMICOLON
# A statement as most are: after spaces, comments and empty statements, its
# first token (a word, or "" where it is not one), then the rest up to its ';'
# -- which is its end when that word sends sqlite3_complete() to NORMAL.
_WORD = r"""(?P<word>[^ \t\n\f\r'"`\[\]();,.+\-*/%<>=!|&~^]*)"""  # _TOKEN_RE's, or ""
_STATEMENT_RE = r"(?s)(?:[ \t\n\f\r;]+|--[^\n]*|/\*.*?(?:\*/|\Z))*" + _WORD + _TO_SEMICOLON
# A statement's first word, past spaces and comments ("" if it starts otherwise).
_FIRST_WORD_RE = r"(?s)(?:[ \t\n\f\r]+|--[^\n]*|/\*.*?(?:\*/|\Z))*" + _WORD


def _split_sql(sql, offsets=False):
    """A script's statements, without ';' and empty ones; a ';' in a string,
    quoted name, comment or trigger body does not split.  offsets=True:
    (where it starts in `sql`, statement) for each."""
    statements = []
    if not any(mark in sql for mark in _CAN_HIDE_A_SEMICOLON) and "TRIGGER" not in sql.upper():
        # Nothing can hide a semicolon here, so the tokenizer would find the
        # same statements; most migrations take this path, at a tenth of the cost.
        at = 0
        for piece in sql.split(";"):
            statement = piece.strip(_SQL_SPACES)
            if statement:
                statements.append((at + len(piece) - len(piece.lstrip(_SQL_SPACES)), statement))
            at += len(piece) + 1
        return statements if offsets else [statement for _, statement in statements]
    at, end = 0, len(sql)
    statement_re, to_semicolon = re.compile(_STATEMENT_RE), re.compile(_TO_SEMICOLON_RE)
    first_word, token_re = re.compile(_FIRST_WORD_RE), re.compile(_TOKEN_RE)
    while True:
        match = statement_re.match(sql, at)
        start, at = match.start("word"), match.end()
        if start == end:
            break
        word = match.group("word").upper()
        if not word or word in _COMPLETE_WORDS:  # token by token, as sqlite3_complete()
            state, at = _START, start
            while at < end:
                if state in (2, 5):  # NORMAL, TRIGGER
                    at = to_semicolon.match(sql, at).end()
                    if at == end:
                        break
                    token, text = 0, ";"
                else:  # past spaces and comments, which change no state
                    match = first_word.match(sql, at)
                    at, text = match.start("word"), match.group("word")
                    if at == end:
                        break
                    if text:
                        token = _COMPLETE_WORDS.get(text.upper(), 2)
                    else:
                        text = token_re.match(sql, at).group()
                        token = 0 if text == ";" else 2
                state = _COMPLETE_STATES[state][token]
                if state == _START:
                    break
                at += len(text)
        statements.append((start, sql[start:at].rstrip(_SQL_SPACES)))
        at += 1  # past its ';'
    return statements if offsets else [statement for _, statement in statements]


def _quote_identifier(name):
    return '"' + str(name).replace('"', '""') + '"'


def _unquote(text):
    """The name an identifier token stands for: "a""b" -> a"b, [x] -> x."""
    if text[:1] == "[":
        return text[1:-1]
    if text[:1] in ('"', "`", "'"):
        quote = text[0]
        return text[1:-1].replace(quote * 2, quote)
    return text


def _key(name):
    """An identifier as SQLite compares it: case-insensitively in ASCII only
    (str.lower() alone would also fold non-ASCII letters, which SQLite keeps apart)."""
    try:
        name.encode("ascii")  # Python 3.6 has no str.isascii()
    except UnicodeEncodeError:
        return "".join(ch.lower() if ch < "\x80" else ch for ch in name)
    return name.lower()


class _Cursor(object):
    """The one way sqlmigrate reads SQL it did not write: a position in
    _tokenize(sql) that steps over spaces and comments.  `i` indexes
    `tokens` itself, so a reader can also cut or edit the original text
    there (the rebuild edits CREATE TABLE text token by token)."""

    def __init__(self, sql=None, tokens=None, i=0, end=None):
        self.tokens = _tokenize(sql) if tokens is None else tokens
        self.end = len(self.tokens) if end is None else end
        self.i = i
        self._skip()

    def _skip(self):
        while self.i < self.end and self.tokens[self.i][0] in ("space", "comment"):
            self.i += 1

    def at_end(self):
        return self.i >= self.end

    def peek(self):
        return self.tokens[self.i] if self.i < self.end else (None, "")

    def word(self):
        """The next token upper-cased if it is a bare word (keyword or name)."""
        kind, text = self.peek()
        return text.upper() if kind == "word" else None

    def advance(self):
        token = self.peek()
        self.i += 1
        self._skip()
        return token

    def take(self, *words):
        """Consume `words` if all come next, in order; say whether."""
        start = self.i
        for word in words:
            if self.word() != word:
                self.i = start
                return False
            self.advance()
        return True

    def skip_words(self, *words):
        while self.word() in words:
            self.advance()

    def punct(self, text):
        if self.peek() == ("punct", text):
            self.advance()
            return True
        return False

    def name(self):
        """A name, unquoted: a bare word, a "quoted", [bracketed] or `ticked`
        identifier, or a 'string' (SQLite takes one where a name must stand).
        A schema qualifier (main.t) is read past.  None if no name is next."""
        kind, text = self.peek()
        if kind not in ("word", "ident", "string"):
            return None
        self.advance()
        if self.peek() == ("punct", "."):
            start = self.i
            self.advance()
            if self.peek()[0] in ("word", "ident", "string"):
                return self.name()
            self.i = start  # a dot and no name after it: not a qualifier
        return _unquote(text)

    def group(self):
        """At '(': (first, close) token indexes of what it encloses; moves past it."""
        items = self.comma_list()
        return items[0][0], items[-1][1]

    def comma_list(self):
        """At '(': the (first, end) ranges of its top-level items; moves past it."""
        if self.peek() != ("punct", "("):
            raise MigrationError("expected '(' in: %s" % "".join(t for _, t in self.tokens),
                                 kind="bad-sql")
        items, depth, start = [], 0, self.i + 1
        for j in range(self.i, self.end):
            text = self.tokens[j][1] if self.tokens[j][0] == "punct" else None
            if text == "(":
                depth += 1
            elif text == ")":
                depth -= 1
                if not depth:
                    items.append((start, j))
                    self.i = j + 1
                    self._skip()
                    return items
            elif text == "," and depth == 1:
                items.append((start, j))
                start = j + 1
        raise MigrationError("unbalanced parentheses in: %s" % "".join(t for _, t in self.tokens),
                             kind="bad-sql")

    def rest(self):
        tokens = [token for token in self.tokens[self.i:self.end]
                  if token[0] not in ("space", "comment")]
        self.i = self.end
        return tokens


class _Create(object):
    """The head of a CREATE statement: CREATE [TEMP] [UNIQUE|VIRTUAL] kind
    [IF NOT EXISTS] [schema.]name, with `cursor` just after the name.  kind is
    TABLE, INDEX, VIEW or TRIGGER (None for any other statement)."""

    def __init__(self, sql, tokens=None):
        cursor = _Cursor(sql, tokens)
        self.kind = self.name = self.name_at = None
        self.temporary = self.unique = self.virtual = self.if_not_exists = False
        if cursor.take("CREATE"):
            self.temporary = cursor.word() in ("TEMP", "TEMPORARY") and bool(cursor.advance())
            self.unique = cursor.take("UNIQUE")
            self.virtual = cursor.take("VIRTUAL")
            if cursor.word() in ("TABLE", "INDEX", "VIEW", "TRIGGER"):
                self.kind = cursor.advance()[1].upper()
                self.if_not_exists = cursor.take("IF", "NOT", "EXISTS")
                self.name_at = cursor.i
                self.name = cursor.name()
        self.cursor = cursor


def _joined(tokens):
    """Significant tokens back to readable text: 'lower ( name )' -> 'lower(name)'."""
    text = ""
    for _, token in tokens:
        glue = not text or token in "().," or text[-1] in "(."
        text += token if glue else " " + token
    return text


_NAME_KEYWORDS = ("FROM", "JOIN", "INTO", "UPDATE", "TABLE", "REFERENCES")
_BEFORE_NAME_WORDS = ("IF", "NOT", "EXISTS", "OR", "ROLLBACK", "ABORT", "REPLACE", "FAIL",
                      "IGNORE", "ONLY")
_NOT_NAME_WORDS = ("SELECT", "VALUES", "DEFAULT", "WITH", "CONFLICT")


def _tables_named_in(statements):
    """The tables statements name (after FROM, JOIN, INTO, UPDATE, TABLE,
    REFERENCES, the ON of CREATE INDEX/TRIGGER), first mention first: what
    the runner shows the schema of when a migration fails."""
    names, seen = [], set()
    for statement in statements:
        # CREATE INDEX/TRIGGER name their table after ON; later ONs are joins.
        on_names_table = _Create(statement or "").kind in ("INDEX", "TRIGGER")
        cursor = _Cursor(statement or "")
        while not cursor.at_end():
            word = cursor.advance()[1].upper()
            if word == "ON" and on_names_table:
                on_names_table = False
            elif word not in _NAME_KEYWORDS:
                continue
            cursor.skip_words(*_BEFORE_NAME_WORDS)
            if cursor.peek()[0] in ("word", "ident") and cursor.word() not in _NOT_NAME_WORDS:
                name = cursor.name()
                if _key(name) not in seen:
                    seen.add(_key(name))
                    names.append(name)
    return names


_DATA_VERBS = ("INSERT", "UPDATE", "DELETE", "REPLACE")
# Pragmas whose value the database file keeps, which a baseline (the schema
# text) does not carry; user_version it does (_schema_sql writes it).
_PERSISTENT_PRAGMAS = ("APPLICATION_ID", "AUTO_VACUUM", "PAGE_SIZE", "ENCODING")


def _data_verb(sql, tokens=None):
    """The verb of statement `sql` (tokenized: `tokens`) if it changes rows
    (after a WITH clause too), else None; a trigger body's INSERT is schema,
    not data."""
    first = re.compile(_FIRST_WORD_RE).match(sql).group("word").upper()
    if first and first not in ("PRAGMA", "CREATE", "WITH"):  # a long INSERT is not read
        return first if first in _DATA_VERBS else None
    cursor = _Cursor(sql, tokens)
    if cursor.take("PRAGMA"):
        pragma = (cursor.name() or "").upper()  # past a schema qualifier
        setter = cursor.peek() in (("punct", "="), ("punct", "("))
        return "PRAGMA %s" % pragma.lower() if setter and pragma in _PERSISTENT_PRAGMAS else None
    if cursor.take("CREATE"):
        # CREATE TABLE ... AS SELECT copies rows; a column's "AS (expr)"
        # (generated) sits inside the parentheses, which are read past.
        cursor.skip_words("TEMP", "TEMPORARY")
        if not cursor.take("TABLE"):
            return None
        cursor.take("IF", "NOT", "EXISTS")
        cursor.name()
        return "CREATE TABLE AS SELECT" if cursor.take("AS") else None
    with_clause = cursor.take("WITH")
    while not cursor.at_end():
        if cursor.peek() == ("punct", "("):
            cursor.group()  # a common table expression's body or column names
            continue
        word = cursor.word()
        if word in _DATA_VERBS or not with_clause or word in ("SELECT", "VALUES"):
            return word if word in _DATA_VERBS else None
        cursor.advance()
    return None


# --- Migration files --------------------------------------------------------

_MARKER_RE = r"(?mi)^[ \t]*--[ \t]*migrate:(up|down)\b([^\n]*)$"
# A line meant as a marker that _MARKER_RE does not take (`-- migrate:dwon`,
# `-- migrate: down`, `-- migrate down`, a bare `-- down`, sql-migrate's
# `-- +migrate Down`, goose's `-- +goose Down`): as a mere comment it would
# make the down's SQL below it run in up.
_NEAR_MARKER_RE = (
    r"(?mi)^[ \t]*--[ \t]*(?:(?:migrate[ \t]*:|\+[ \t]*(?:migrate|goose)\b|"
    r"migrate[ \t]+(?:up|down)\b)[^\n]*|(?:up|down)[ \t]*:?[ \t]*\r?)$")
# A baseline (NNN-baseline.sql) starts with this line; name and marker must agree.
_BASELINE_RE = r"(?i)\A\s*--[ \t]*migrate:baseline[ \t]*\r?(?:\n|\Z)"
# The line after it that `baseline` writes: the versions the baseline holds,
# so a file numbered below it but added later is never taken as in it.
_BASELINE_OF_RE = r"(?mi)^--[ \t]*sqlmigrate baseline of:([0-9 \t]*)\r?$"
# The checksum column of the records a baseline wrote: this, then its checksum.
_BASELINE_PREFIX = "baseline:"
# `name = "..."` (or '...') on a line of its own, a comment allowed after it.
_NAME_LINE_RE = re.compile(r"""name\s*=\s*(?:"([^"]*)"|'([^']*)')\s*(?:#|$)""")
# <version: 3 or more digits>-<description: kebab-case>.py|.sql
_FILENAME_RE = re.compile(r"([0-9]{3,})-([a-z0-9]+(?:-[a-z0-9]+)*)\.(py|sql)\Z")
_DIGITS = frozenset("0123456789")
_MAX_VERSION = 2 ** 63 - 1  # SQLite's largest INTEGER
# Code flags (inspect.CO_*, the same on 3.6 to 3.13), read directly: importing
# inspect (with dis, tokenize and more) costs more than the whole check.
_DEFERRED_FLAGS = ((0x200, "an async generator function"), (0x80, "an async function"),
                   (0x20, "a generator function"))


# Where a line may start with a comment, after the first line: a search for a
# literal '\n' runs in C without trying each position (a (?m)^ pattern's
# search took a tenth of a second over a 10 MB seed file).
_LINE_COMMENT_RE = r"\n[ \t]*--"


def _comment_line_matches(pattern, text):
    """re.finditer(pattern, text) for a pattern of one line that starts with a
    comment ((?m)^[ \t]*--...$), tried only at such lines."""
    found, pattern = [], re.compile(pattern)
    lines = re.compile(_LINE_COMMENT_RE).finditer(text)
    for line in itertools.chain((0,), (m.start() + 1 for m in lines)):
        match = pattern.match(text, line)
        if match:
            found.append(match)
    return found


def _filename_problem(filename):
    """Why `filename`, which _FILENAME_RE refuses, breaks the naming rule."""
    stem, extension = filename.rsplit(".", 1)
    digits = stem[:len(stem) - len(stem.lstrip("0123456789"))]
    example = "e.g. 001-initial-schema.py"
    if extension not in ("py", "sql"):
        return "use the lower-case extension .%s" % extension.lower()
    if not digits:
        return "the name must start with a version of at least 3 digits (%s)" % example
    if len(digits) < 3:
        return "version must have at least 3 digits (%s)" % example
    if stem[len(digits):len(digits) + 1] != "-":
        return "use a hyphen after the version (%s)" % example
    return ("use kebab-case for the description: lower-case letters and digits joined by "
            "single hyphens (%s)" % example)


def _sql_file_text(text):
    """An .sql file's decoded text as it is read: a BOM (some Windows editors
    write one) is not SQL and would hide a first marker (the checksum still
    covers it; not decoded as utf-8-sig, whose errors count bytes after the
    BOM); lone CR line endings (classic Mac OS) become \n, since SQLite ends a
    -- comment only at \n and one would swallow every statement after it."""
    text = text[text.startswith("\ufeff"):]
    return text.replace("\r", "\n") if "\r" in text and "\n" not in text else text


class Migration(object):
    """One migration file.  Cheap to create: the file is read only when its
    checksum or code is needed, and a Python file is executed only by load()."""

    def __init__(self, directory, filename, version, description, kind, read=None):
        self.path = directory + filename  # directory ends with a separator
        self.filename = filename
        self.version, self.description, self.kind = version, description, kind
        self.baseline = (description, kind) == ("baseline", "sql")
        self._source = self._checksum = self._name = self._module = None
        self._read = read  # the file's bytes from a package's loader, for one not on disk
        self._up_sql = self._down_sql = None
        self._up_at = 0  # where the up section starts in the text (after a BOM)
        self._loaded, self._transactional = False, True

    def __repr__(self):
        return "<Migration v%d %s>" % (self.version, self.filename)

    @classmethod
    def from_sql(cls, version, description, up_sql, down_sql=None):
        """An in-code SQL migration (for Migrator(db, migrations=[...])), the
        same as a file NNN-<description in kebab-case>.sql with these sections;
        its name is `description` as given."""
        kebab = "-".join(re.findall(r"[a-z0-9]+", str(description).lower()))
        # bool is an int to Python; SQLite's INTEGER holds 63 bits, checked
        # here, not as an OverflowError in the middle of a run.
        whole = isinstance(version, int) and not isinstance(version, bool) and \
            1 <= version < 2 ** 63
        filename = "%03d-%s.sql" % (version, kebab) if whole else ""
        if not whole or not _FILENAME_RE.match(filename):
            raise RequestError("Migration.from_sql(%r, %r): needs a version of 1 or more and a "
                               "description with letters or digits" % (version, description))
        for sql in (up_sql, down_sql if down_sql is not None else ""):
            if not isinstance(sql, str):  # else None or b"..." would run as SQL text
                raise RequestError("Migration.from_sql(%r, %r): up_sql (and down_sql, when "
                                   "given) must be text (str), not %s"
                                   % (version, description, type(sql).__name__))
        text = "-- migrate:up\n%s\n" % up_sql + (
            "" if down_sql is None else "-- migrate:down\n%s\n" % down_sql)
        m = cls("<migrations list>/", filename, version, kebab, "sql")
        m.baseline, m._source, m._name = False, text.encode("utf-8"), str(description)
        return m

    def _error(self, reason, line=None):
        """A problem with this file: str() puts its path (and line) before `reason`."""
        return MigrationError(kind="bad-file", path=self.path, version=self.version, line=line,
                              cause=reason)

    @property
    def source(self):
        if self._source is None:
            try:
                if self._read is not None:
                    self._source = self._read(self.filename)
                else:
                    # O_NONBLOCK: opening a FIFO to read would wait for a writer forever.
                    with os.fdopen(os.open(self.path, os.O_RDONLY | getattr(
                            os, "O_NONBLOCK", 0)), "rb") as f:
                        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                            raise self._error("cannot read it: not a regular file")
                        self._source = f.read()
            except OSError as e:
                raise self._error("cannot read it: %s" % e.strerror)
        return self._source

    @property
    def checksum(self):
        # Line endings are normalised so a checkout with CRLF is not "changed".
        if self._checksum is None:
            normalised = self.source.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            import hashlib  # its OpenSSL load (~3 ms) is paid by the first checksum only
            self._checksum = hashlib.sha256(normalised).hexdigest()
        return self._checksum

    @property
    def name(self):
        """The `name` a Python file declares (read without running it), else
        the description in words: 002-add-user-field -> "Add user field"."""
        if self._name is None:
            # utf-8-sig: a BOM would hide a `name = ...` on the first line.
            source = self.source.decode("utf-8-sig", "replace") if self.kind == "py" else ""
            found = [m.group(1) or m.group(2) for m in map(_NAME_LINE_RE.match,
                                                            source.splitlines()) if m]
            self._name = found and found[0] or self.description.replace("-", " ").capitalize()
        return self._name

    @property
    def has_down(self):
        self.load()
        if self.kind == "py":
            return callable(getattr(self._module, "down", None))
        # An empty down section (as `new --sql` writes it) is no down: `down`
        # refuses up front instead of "rolling back" nothing.
        return self._down_sql is not None and bool(_split_sql(self._down_sql))

    @property
    def transactional(self):
        self.load()
        return self._transactional

    def load(self):
        """Read, compile and validate the file (a Python file's top level runs
        once); a problem raises MigrationError naming the file and line."""
        if not self._loaded:
            self._load_python() if self.kind == "py" else self._load_sql()
            self._loaded = True
        return self

    def _load_python(self):
        import types
        try:
            code = compile(self.source, self.path, "exec")
        except SyntaxError as e:
            raise self._error("syntax error: %s" % e.msg, e.lineno)
        module = types.ModuleType("sqlmigrate_migration_%d" % self.version)
        module.__file__ = self.path
        try:
            exec(code, module.__dict__)
        except BaseException as e:
            # SystemExit left alone would end the CLI with that status as if
            # all was well; another BaseException (GeneratorExit, its own) as
            # a traceback.  Only Ctrl-C stays an interruption.
            if isinstance(e, KeyboardInterrupt):
                raise
            line = _error_line(e, self.path)
            raise self._error(
                "the migration called exit (sys.exit(%r)) while loading; a migration fails by "
                "raising an exception" % (e.code,) if isinstance(e, SystemExit) else
                "error while loading the migration: %s" % _exception_text(e), line)
        if not callable(getattr(module, "up", None)):
            raise self._error("the migration has no up(db) function")
        for direction in ("up", "down"):
            function = getattr(module, direction, None)
            for _ in range(10):  # functools.partial and bound methods wrap a function
                function = getattr(function, "func", None) or getattr(function, "__func__", None) \
                    or function
            code = getattr(function, "__code__", None)
            if code is None and function is not None:  # an object with async def __call__
                code = getattr(getattr(type(function), "__call__", None), "__code__", None)
            for flag, kind in _DEFERRED_FLAGS:
                if getattr(code, "co_flags", 0) & flag:
                    raise self._error("%s(db) is %s, which the runner would call without "
                                      "running its body; make it a plain function (def %s(db):)"
                                      % (direction, kind, direction))
        declared = getattr(module, "version", None)
        if declared is not None and declared != self.version:
            raise self._error("version = %r disagrees with the file name (version %d); "
                              "fix one of them" % (declared, self.version))
        if getattr(module, "name", None) is not None:
            self._name = str(module.name)
        transaction = getattr(module, "transaction", True)
        if transaction not in (True, False):
            # bool() would take "False" as True and None as False: the other
            # way than the author meant, silently.
            raise self._error("transaction = %r: write transaction = True or False"
                              % (transaction,))
        self._transactional = bool(transaction)
        self._module = module

    def _load_sql(self):
        try:
            text = self.source.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self._error("not valid UTF-8 (byte %d); save it as UTF-8" % e.start,
                              self.source[:e.start].count(b"\n") + 1)
        text = _sql_file_text(text)
        baseline = re.compile(_BASELINE_RE).match(text)
        if bool(baseline) != self.baseline:
            raise self._error("it no longer starts with the line '-- migrate:baseline'"
                              if self.baseline else "it starts with '-- migrate:baseline' but a "
                              "baseline must be named %s-baseline.sql: rename it, or remove the "
                              "marker" % self.filename.split("-")[0])
        skipped = baseline.end() if baseline else 0
        whole, text = text, text[skipped:]
        markers = _comment_line_matches(_MARKER_RE, text)
        taken, comments = set(m.start() for m in markers), None
        for near in _comment_line_matches(_NEAR_MARKER_RE, text):
            if near.start() not in taken:
                if comments is None:  # only a line comment: not text in a string or /* */
                    comments = set(t.start() for t in re.compile(_TOKEN_RE).finditer(text)
                                   if t.lastgroup == "comment" and t.group().startswith("--"))
                if near.start() + len(near.group()) - len(near.group().lstrip(" \t")) \
                        not in comments:
                    continue
                raise self._error(
                    "%r is not a marker: write '-- migrate:up' or '-- migrate:down' alone on "
                    "its line (as a comment, the SQL below it would run in up)"
                    % near.group(0).strip(), whole.count("\n", 0, skipped + near.start()) + 1)
        if markers and self.baseline:
            raise self._error("a baseline has no '-- migrate:' sections: all of it is up")
        if markers and _split_sql(text[:markers[0].start()]):
            raise self._error("SQL before the first '-- migrate:' marker")
        sections = {} if markers else {"up": text}
        for marker, end in zip(markers, [m.start() for m in markers[1:]] + [len(text)]):
            direction, options = marker.group(1).lower(), marker.group(2).strip().lower()
            if direction in sections:
                raise self._error("more than one '-- migrate:%s' marker" % direction)
            if options not in ("", "transaction:false", "transaction:true"):
                raise self._error("unknown marker option %r (only transaction:false)"
                                  % options)
            sections[direction] = text[marker.end():end]  # down is split only if rolled back
            if direction == "up":
                self._transactional = options != "transaction:false"
                self._up_at = skipped + marker.end()
        if "up" not in sections:
            raise self._error("has '-- migrate:down' but no '-- migrate:up'")
        self._up_sql, self._down_sql = sections["up"], sections.get("down")
        self._up_at = self._up_at if markers else skipped

    @property
    def _covers(self):
        """The versions a baseline holds, as its `-- sqlmigrate baseline of:`
        line lists them; None for one written before that line (it holds
        every file up to its version)."""
        text = _sql_file_text(self.source.decode("utf-8", "replace"))
        marker = re.compile(_BASELINE_RE).match(text)
        listed = re.compile(_BASELINE_OF_RE).match(text, marker.end()) if marker else None
        return set(map(int, listed.group(1).split())) if listed else None

    def _stands_for(self, version):
        """Whether baseline self holds migration `version`."""
        covers = self._covers
        return version <= self.version if covers is None else version in covers

    def run(self, db, direction):
        """Run up or down against `db` (the runner's _MigrationConnection)."""
        self.load()
        if self.kind == "sql":
            cursor = db.cursor()  # one for all: db.execute() makes a cursor per statement
            for statement in _split_sql(self._up_sql if direction == "up" else self._down_sql):
                cursor.execute(statement)
            return
        result = getattr(self._module, direction)(db)
        # Work not yet done (a coroutine, generator or other awaitable), unlike
        # a result such as a cursor, which is fine.
        if result is not None and (hasattr(result, "__await__") or hasattr(result, "__anext__")
                                   or (hasattr(result, "send") and hasattr(result, "throw"))):
            if hasattr(result, "close"):
                result.close()  # no "coroutine ... was never awaited" warning
            raise TypeError("%s(db) returned a %s object instead of doing its work; the "
                            "runner does not await or iterate it: make %s a plain function"
                            % (direction, type(result).__name__, direction))


def _exception_text(error):
    """'Type: message' for an exception a migration raised, whatever its
    __str__ does (a broken one would replace the failure with its own)."""
    try:
        text = str(error)
    except Exception:
        text = "(its message cannot be shown: str() of it failed)"
    return "%s: %s" % (type(error).__name__, text)


def _error_line(error, path):
    tb, line = error.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line if line is not None else "?"


def _scan(directory):
    """(the ordinary migrations, the baselines), each sorted by version: a
    baseline may share its version with an ordinary file, not with another
    baseline.  Any invalid or duplicate name raises RequestError listing
    every problem, so nothing runs while one file is wrong."""
    directory = os.fspath(directory)
    try:
        with os.scandir(directory) as scan:  # scandir: no stat() per file
            entries = sorted((entry.name, entry.is_dir()) for entry in scan)
    except OSError as e:
        import shlex  # the advice is a command to paste: a space or a missing parent broke it
        raise RequestError(
            "migration directory %s does not exist: create it (mkdir -p %s), or point --dir / "
            "$SQLMIGRATE_DIR at it" % (directory, shlex.quote(directory))
            if isinstance(e, FileNotFoundError)
            else "%s is not a directory of migrations" % directory
            if isinstance(e, NotADirectoryError)
            else "cannot read migration directory %s: %s" % (directory, e.strerror),
            kind="bad-directory", path=directory)
    return _sort_out(entries, os.path.join(directory, ""), directory)


_ARCHIVED = {}  # {a package's location in an archive: its files, as _archived_package_files}


def _scan_package(package):
    """_scan() of the files in the package named `package`, read through the
    import system (a wheel, an egg, a zip archive or zipapp, a directory)."""
    import importlib
    if not all(part.isidentifier() for part in package.split(".")):  # ".x": a TypeError
        raise RequestError("%s is not a package name (such as myapp.migrations): a directory "
                           "goes to --dir" % package, kind="bad-directory", path=package)
    try:
        module = importlib.import_module(package)
    except ImportError as e:
        raise RequestError("cannot import the migration package %s (%s): check the name, and "
                           "that it is installed or on sys.path" % (package, e),
                           kind="bad-directory", path=package)
    except (Exception, SystemExit) as e:  # its own code (or a parent's __init__) failed as it ran
        # SystemExit left alone would end the CLI with that status, nothing done.
        reason = "%s: %s, line %s: %s" % (type(e).__name__, e.filename, e.lineno, e.msg) \
            if isinstance(e, SyntaxError) else "SystemExit: called exit (sys.exit(%r))" % (
                e.code,) if isinstance(e, SystemExit) else _exception_text(e)
        raise RequestError("cannot import the migration package %s: %s" % (package, reason),
                           kind="bad-directory", path=package)
    # __path__, not the spec's: an __init__.py may rebind it (pkgutil.extend_path,
    # the namespace idiom before PEP 420), and the import system reads __path__.
    locations = list(getattr(module, "__path__", None) or ())
    if not locations:
        raise RequestError("%s is a module, not a package of migration files" % package,
                           kind="bad-directory", path=package)
    if len(locations) > 1:
        # A namespace package (no __init__.py) merges every folder of its
        # name on sys.path: which holds which migration is not one answer.
        raise RequestError("the migration package %s is spread over %d folders (%s): give it "
                           "a plain __init__.py in one of them, or use --dir" % (
                               package, len(locations), ", ".join(locations)),
                           kind="bad-directory", path=package)
    if os.path.isdir(locations[0]):  # installed as files: read as a directory is
        found = _scan(locations[0])
    else:
        # Read once per process (a zipimporter reads its archive's table once
        # too): the no-op start-up then costs what a directory's does.
        if locations[0] not in _ARCHIVED:
            _ARCHIVED[locations[0]] = _archived_package_files(module, locations[0])
        files = _ARCHIVED[locations[0]]
        # Paths as zipimport names a module's __file__: <archive>/myapp/migrations/001-x.sql.
        found = _sort_out([(name, data is None) for name, data in files.items()],
                          os.path.join(locations[0], ""), package, files.__getitem__)
    if not found[0] and not found[1]:
        raise RequestError("the migration package %s (%s) has no migration files (named like "
                           "001-initial-schema.sql or .py)" % (package, locations[0]),
                           kind="bad-directory", path=package)
    return found


def _scan_list(migrations):
    """_scan() of an in-code list of Migration objects."""
    problems, found = [], []
    for m in migrations:
        if isinstance(m, Migration):
            found.append(m)
        else:
            problems.append("%r is not a Migration (make one with Migration.from_sql)" % (m,))
    return _by_version(found, problems, "<migrations list>")


def _by_version(migrations, problems, where):
    """(the ordinary migrations, the baselines), each sorted by version, or
    RequestError listing `problems` and every version used twice."""
    found = ({}, {})
    for m in migrations:
        by_version = found[m.baseline]
        if m.version in by_version:
            problems.append("two migrations have version %d: %s and %s; renumber one"
                            % (m.version, by_version[m.version].filename, m.filename))
        else:
            by_version[m.version] = m
    if problems:
        raise RequestError(kind="bad-name", problems=problems, path=where)
    return tuple([by_version[v] for v in sorted(by_version)] for by_version in found)


def _read_as_migration(filename):
    """Whether discovery reads this file (and names it right or refuses it):
    .py and .sql in any case (.SQL is flagged, not skipped: skipped, it would
    never run while `verify` says OK), unless the name starts with _ or '.'."""
    return bool(_MIGRATION_LIKE(filename)) and not filename.startswith(("_", "."))


def _sort_out(entries, prefix, where, read=None):
    """_scan() of the (name, is a directory) `entries` of `where`, whose
    files are read with read(name), or opened at prefix + name."""
    problems, migrations = [], []
    for filename, is_dir in sorted(entries):
        if is_dir or not _read_as_migration(filename):
            continue
        match = _FILENAME_RE.match(filename)
        if not match:
            problems.append("%s: %s" % (prefix + filename, _filename_problem(filename)))
            continue
        version = int(match.group(1))
        # Version 0 is a database with nothing applied: such a file would
        # read as applied and never run.  Above SQLite's largest integer it
        # could never be recorded.
        if not 0 < version <= _MAX_VERSION:
            problems.append("%s: the version must be 1 or more and at most %d (e.g. 001-initial-"
                            "schema.py)" % (prefix + filename, _MAX_VERSION))
            continue
        m = Migration(prefix, filename, version, *match.group(2, 3), read=read)
        # Only a file named as a baseline is read here: its marker decides
        # whether it is one (and may share a version); without it, it is an
        # ordinary migration, as "001-baseline.sql" always was.
        m.baseline = m.baseline and bool(re.compile(_BASELINE_RE).match(
            _sql_file_text(m.source.decode("utf-8", "replace"))))
        migrations.append(m)
    return _by_version(migrations, problems, where)


# --- Connections and transactions -------------------------------------------

def _uri(path, mode):
    """The URI naming the very file sqlite3.connect(path) opens."""
    # Not os.path.abspath: it folds "link/.." away as text, while the system
    # (and so sqlite3.connect) resolves the symlink first: another file.
    if not os.path.isabs(path):
        path = os.path.join(os.getcwd(), path)
    path = path.replace(os.sep, "/")
    # In a URI's path these three are syntax; everything else is literal.
    for char, escaped in (("%", "%25"), ("?", "%3F"), ("#", "%23")):
        path = path.replace(char, escaped)
    # "file://" and an empty authority before the path: a path that itself
    # starts with "//" would otherwise be read as an authority and refused.
    return "file://%s%s?mode=%s" % ("/" if not path.startswith("/") else "", path, mode)


_NOT_REGULAR_FILES = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                      (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _database_exists(path):
    """Whether the file exists; a missing directory, or a path naming anything
    but a regular file, is a RequestError."""
    path = os.fspath(path)
    if isinstance(path, str) and path.endswith(tuple(filter(None, (os.sep, os.altsep)))):
        # SQLite drops the slash ("app.db/" opens app.db, "new/" creates a file
        # "new"), while stat() fails on it: that file would be taken for new.
        raise RequestError("%s ends with %s, naming a directory, not a database file"
                           % (path, path[-1]), kind="bad-database", database=path)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        directory = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(directory):
            return False
        why = "cannot open database %s: directory %s does not exist" % (path, directory)
    except OSError as e:
        # A symlink loop, or a directory that may not be searched: the file
        # may well exist, so taking it for a new database would report one
        # with nothing applied.
        raise MigrationError(kind="cannot-open", database=path, cause=e.strerror)
    else:
        if stat.S_ISREG(mode):
            return True
        # Refused before any open: opening a FIFO blocks until a writer comes,
        # and SQLite would create "<device>-journal" next to a device.
        kind = next((name for test, name in _NOT_REGULAR_FILES if test(mode)), None)
        why = ("%s is a directory, not a database file (check --db)" % path if stat.S_ISDIR(mode)
               else "%s is %s, not a regular file: --db must name an SQLite database file"
               % (path, kind or "a special file"))
    raise RequestError(why, kind="bad-database", database=path)


def _server_address(address, driver):
    """(HOST:PORT, DATABASE or None) of a server driver's --db; a malformed
    one, or a port no server can listen on, is a bad request (not the
    client's own error when it dials)."""
    match = re.compile(_SERVER_ADDRESS).match(address)
    if match is None:
        raise RequestError("--db %s: driver %s takes a server address, HOST:PORT or "
                           "HOST:PORT/DATABASE" % (address, driver))
    database = match.group(1)
    host = address[:len(address) - len(database or "") - bool(database)]
    if not 1 <= int(host.rpartition(":")[2]) <= 65535:
        raise RequestError("--db %s: the port must be 1 to 65535" % address)
    return host, database


class _Opener(object):
    """How a path is opened: a DB-API module's connect (sqlite3, or the CLI's
    --driver) and, for SQLCipher, the key ($SQLMIGRATE_KEY)."""

    def __init__(self, module=sqlite3, key=None):
        self.module, self.key = module, key
        self.server = _SERVER_DRIVERS.get(module.__name__.split(".")[0])
        _DB.register(module)  # its connections' errors may escape before any _driver()

    def connect_server(self, address, busy_timeout):
        """A server driver's connection to --db HOST:PORT[/DATABASE], opened
        now: the client would dial at its first query, and an address that
        does not answer is best named as such (within the busy timeout)."""
        host, database = _server_address(address, self.module.__name__)
        if self.key is not None:
            raise RequestError("$SQLMIGRATE_KEY is set, but driver %s does not encrypt"
                               % self.module.__name__)
        args, kwargs = self.server(host, database, busy_timeout)
        conn = self.module.connect(*args, **kwargs)
        try:
            getattr(conn, "connect", lambda: None)()
        except self.module.Error as e:
            conn.close()
            raise MigrationError(kind="unreachable", database=address, cause=str(e))
        return conn

    def connect(self, target, where, **kwargs):
        conn = self.module.connect(target, **kwargs)
        if self.key is None:
            return conn
        try:
            # Before any other statement: SQLCipher reads the key when it
            # first reads a page.  A pragma takes no bound parameters.
            conn.execute("PRAGMA key = '%s'" % self.key.replace("'", "''"))
            if not conn.execute("PRAGMA cipher_version").fetchall():
                # Any other SQLite ignores an unknown pragma: the file would
                # silently stay unencrypted.
                raise RequestError("$SQLMIGRATE_KEY is set, but driver %s does not encrypt "
                                   "(use --driver sqlcipher3)" % self.module.__name__)
            try:
                # SQLCipher's own way to test a key: read the schema.
                conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
            except self.module.Error as e:
                if _sqlite_kind(e) != "not-a-database":
                    raise
                raise MigrationError(kind="not-a-database", database=where,
                                     cause="not a database or wrong key ($SQLMIGRATE_KEY)")
        except BaseException:
            conn.close()
            raise
        return conn


# The CLI's opener while a command runs; the API opens paths with sqlite3.
_OPENER = _Opener()


def _real_path(path):
    """The file a database path names, through a symlink: SQLite 3.10+ opens
    that file and names its journal after it; before, a journal named after
    the link was not the one a crashed writer using the real name left (it
    read, or wrote over, uncommitted pages)."""
    return os.path.realpath(path) if os.path.islink(path) else path


# Next to the database these names are its own journal files: SQLite would
# roll a "hot journal" back into the database, or discard it.
_JOURNAL_SUFFIXES = ("-journal", "-wal", "-shm")
# And the lock a runner holds while it applies a non-transactional migration
# (_run_lock), which may be deleted by hand while no runner runs.
_RUN_LOCK_SUFFIX = "-sqlmigrate-lock"


def _files_beside(path):
    """The real paths of the files SQLite (its journals) and sqlmigrate (the
    run lock) keep beside database `path`, however `path` is spelled: named
    after the file a link leads to (SQLite 3.10+), or after the link (before).
    A file of ours written under one of them would be lost, or destroy it."""
    bases = (os.path.realpath(path), os.path.join(
        os.path.realpath(os.path.dirname(os.path.abspath(path))), os.path.basename(path)))
    return set(base + suffix for base in bases
               for suffix in _JOURNAL_SUFFIXES + (_RUN_LOCK_SUFFIX,))


def _hot_journal(real):
    """Whether the database file `real` has a journal that may be hot (a
    crashed writer's): one stat() when there is none; an empty (truncated)
    one is never hot."""
    try:
        return os.stat(real + "-journal").st_size > 0
    except OSError:
        return False


def _connect(path, busy_timeout=_DEFAULT_BUSY_TIMEOUT, mode="rwc"):
    """Open the database at `path` in autocommit mode (transactions are
    explicit).  mode: "ro" read-only, "rw" existing file, "rwc" create."""
    path = os.fspath(path)
    if path == ":memory:":
        return _OPENER.connect(":memory:", path, isolation_level=None)
    if not _database_exists(path) and mode != "rwc":  # a --db naming nothing: a bad request
        raise RequestError("database %s does not exist" % path, kind="no-database",
                           database=path)
    real = _real_path(path)

    def connect(mode):
        return _OPENER.connect(_uri(real, mode), path, uri=True, timeout=busy_timeout,
                               isolation_level=None)
    journal = real + "-journal"
    try:
        conn = connect(mode)
        if mode == "ro" and _hot_journal(real):
            try:
                # Reading page 1 takes the shared lock, where SQLite checks the
                # journal (SQLITE_READONLY_ROLLBACK when it is hot).
                _query(conn, "PRAGMA schema_version")
            except _DB.Error as e:
                conn.close()
                # Only a read-write connection may roll a crashed writer's
                # journal back; mode=rw never creates a file.
                if _sqlite_kind(e) != "read-only" or not all(os.access(p, os.W_OK) for p in (
                        real, journal, os.path.dirname(os.path.abspath(real)))):
                    raise
                conn = connect("rw")
                try:
                    _query(conn, "PRAGMA schema_version")
                finally:
                    conn.close()
                _log("warning", "Rolled back the hot journal %s that a crashed process had left",
                             journal)
                conn = connect(mode)
    except _DB.Error as e:
        if _sqlite_kind(e) == "read-only" and mode == "ro":
            raise MigrationError(
                "database %s has a hot journal (%s) left by a crashed process, and this "
                "read-only command cannot roll it back without write permission on both files "
                "and their directory: run `up` (or any write command) with that permission, or "
                "open the database read-write once, to roll it back" % (path, journal),
                kind="read-only", database=path)
        raise _sqlite_failure(e, path)
    return conn


@contextmanager
def _using(db, busy_timeout=_DEFAULT_BUSY_TIMEOUT, mode="rw"):
    """Yield a connection for `db`: a connection as it is (never closed), or
    a path opened for the duration; sqlite3 errors become MigrationErrors."""
    if _is_connection(db):
        conn, path = db, None
    else:
        path = os.fspath(db)
        conn = _connect(path, busy_timeout, mode)
    try:
        with _driver_session(conn):
            yield conn
    except _DB.Error as e:
        raise _sqlite_failure(e, path)
    finally:
        if path is not None:
            conn.close()


@contextmanager
def _transaction(conn):
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error.  Inside a
    transaction the caller holds, a SAVEPOINT instead, so a failure undoes
    only our part and the caller decides what to commit."""
    if conn.in_transaction:
        name = "sqlmigrate_%d" % id(conn)
        conn.execute("SAVEPOINT " + name)
        try:
            yield conn
        except BaseException:
            # SQLite may have rolled back the caller's whole transaction
            # itself (RAISE(ROLLBACK) in a trigger, a full disk): then there
            # is no savepoint left, and the error to show is the one raised.
            if conn.in_transaction:
                conn.execute("ROLLBACK TO " + name)
                conn.execute("RELEASE " + name)
            raise
        conn.execute("RELEASE " + name)
        return
    with _explicit_transactions(conn), _rollback_journal(conn):
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


@contextmanager
def _rollback_journal(conn, run=False):
    """A rollback journal for the transaction, when the connection has none
    (a caller's, set to journal_mode OFF: the connection's setting, not the
    file's): without one SQLite cannot undo pages it has already spilled to
    the file, yet reports the ROLLBACK done, so a failed migration (or a dry
    run) would leave its changes half made.  OFF again afterwards.  run: for
    a whole run, whose transactions then need no look of their own (a
    migration's OFF is set back after it: _connection_kept_as_it_was)."""
    raw = _raw(conn)
    if _journaled.get(id(raw)) is raw:
        yield
        return
    off = "journal_mode" not in _driver(conn).refused_pragmas and \
        _query(conn, "PRAGMA main.journal_mode")[0][0].lower() == "off"
    # An in-memory database has no DELETE mode: it stays OFF, then MEMORY.
    if off and _query(conn, "PRAGMA main.journal_mode = DELETE")[0][0].lower() == "off":
        _query(conn, "PRAGMA main.journal_mode = MEMORY")
    if run:
        _journaled[id(raw)] = raw
    try:
        yield
    finally:
        if run:
            del _journaled[id(raw)]
        if off and not conn.in_transaction:
            _query(conn, "PRAGMA main.journal_mode = OFF")


# {id(connection): connection} while a run has seen to its rollback journal.
_journaled = {}


@contextmanager
def _explicit_transactions(conn):
    """Let us issue BEGIN/COMMIT ourselves on a connection of any mode, and put
    its mode back afterwards.  Only called outside a transaction: setting
    isolation_level or autocommit commits a pending one (Python 3.6-3.13)."""
    mode = _autocommit_mode(conn)
    name, saved = ("isolation_level", conn.isolation_level) \
        if mode == _LEGACY_TRANSACTION_CONTROL else ("autocommit", mode)
    explicit = None if name == "isolation_level" else True  # False: Python 3.12+ PEP 249 mode
    isolation_level = conn.isolation_level  # ignored under autocommit, yet the caller's
    if saved != explicit:
        setattr(conn, name, explicit)
    try:
        yield
    finally:
        # Also when it was already explicit: a non-transactional migration
        # may have changed the mode of the connection it was given.
        if getattr(conn, name) != saved:
            setattr(conn, name, saved)
        if conn.isolation_level != isolation_level:
            conn.isolation_level = isolation_level


def _raw(conn):
    """The sqlite3.Connection behind a _MigrationConnection, or conn itself."""
    return getattr(conn, "_conn", conn)


def _query(conn, sql, params=()):
    """Rows as plain tuples with TEXT as str, whatever row_factory and
    text_factory the caller's connection has: a checksum read as bytes would
    differ from every file's, a name decoded as Latin-1 would match no table.
    sqlite3 has text_factory only per connection: it is set around the fetch."""
    raw = _raw(conn)
    cursor = raw.cursor()
    cursor.row_factory = None
    saved = raw.text_factory
    raw.text_factory = _TEXT_AS_STR
    try:
        return cursor.execute(sql, params).fetchall()
    finally:
        raw.text_factory = saved


def _foreign_keys_enabled(conn):
    return bool(_query(conn, "PRAGMA foreign_keys")[0][0])


def _set_pragma(conn, name, on):
    """PRAGMA name = ON/OFF, its success judged by reading the value back:
    dqlite answers a setter pragma with an error ("not an error") though it
    took effect, so the answer cannot tell, and the value can."""
    try:
        conn.execute("PRAGMA %s = %s" % (name, "ON" if on else "OFF"))
    except _DB.Error:
        if _query(conn, "PRAGMA " + name) != [(int(bool(on)),)]:
            raise
        if isinstance(conn, _MigrationConnection):  # it did not fail after all
            conn._db.__dict__["failed_statement"] = None


@contextmanager
def _foreign_keys_off_outside_transaction(conn, wanted=True):
    """Foreign keys off around a transaction and back on after: the pragma is
    a no-op inside one.  Yields whether _check_foreign_keys() must run."""
    was_on = wanted and not conn.in_transaction and _foreign_keys_enabled(conn)
    try:
        if was_on:
            # Inside the try: a driver may raise though the pragma took effect
            # (dqlite answers a setter pragma "not an error").
            _set_pragma(conn, "foreign_keys", False)
        yield was_on
    finally:
        if was_on:
            _set_pragma(conn, "foreign_keys", True)


def _wal_witness(path):
    """A read-only connection to hold `path` open while a dry run's closes,
    or None: the last read-write connection to close folds the WAL into the
    database file (a checkpoint) and deletes it, which would change the file
    of a crashed writer's database; a read-only one closing last cannot."""
    if not os.path.exists(_real_path(path) + "-wal"):
        return None
    try:
        witness = _connect(path, mode="ro")
        _query(witness, "SELECT count(*) FROM sqlite_master")  # joins the WAL
        return witness
    except _DB.Error + (MigrationError,):  # _DB.Error is a tuple: one level, or TypeError
        return None  # then the dry run's own close may fold it, as before


def _may_write(path):
    """Whether this process may write the database file at `path` and create
    its journal beside it (as root: always)."""
    real = _real_path(path)
    return all(os.access(p, os.W_OK) for p in (real, os.path.dirname(os.path.abspath(real))))


# A scratch copy of a database is made in memory up to this size, else in a
# temporary file: a big production copy must not cost its size in memory.
_MEMORY_COPY_BYTES = 64 * 1024 * 1024


@contextmanager
def _scratch_copy(source, busy_timeout):
    """A copy of `source`, never written: a database file opened read-only
    and read inside one read transaction (a consistent snapshot), copied
    through the backup API (into memory up to _MEMORY_COPY_BYTES, else a
    temporary file), or (Python 3.6, PyPy, a local driver other than sqlite3)
    its files copied into a temporary directory while the read lock holds.  A
    file with a hot journal is copied with it and rolled back in the copy.
    `source` may also be an sqlite3 connection: backed up as it sees its
    database."""
    import shutil
    import tempfile
    directory = copy = None

    def backup(raw):  # into memory, or a temporary file for a big database
        nonlocal directory
        page_size, pages = (_query(raw, "PRAGMA " + name)[0][0]
                            for name in ("page_size", "page_count"))
        target = ":memory:"
        if page_size * pages > _MEMORY_COPY_BYTES:
            directory = tempfile.mkdtemp(prefix="sqlmigrate-test-")
            target = os.path.join(directory, "copy.db")
        copy = sqlite3.connect(target, isolation_level=None)
        try:
            raw.backup(copy)
        except BaseException:
            copy.close()
            raise
        return copy

    try:
        if _is_connection(source):
            raw = _raw(source)
            if isinstance(raw, sqlite3.Connection) and _HAS_BACKUP_API:
                try:
                    copy = backup(raw)
                except sqlite3.Error as e:
                    raise _sqlite_failure(e, None)
                yield copy
                return
            # Python 3.6, PyPy, another driver: a copy of the file it has open.
            source = _main_file(raw)
            if not source:
                raise RequestError("test(source=<connection>): this connection's database is "
                                   "no file and it has no backup API here: pass a database file")
        if not _database_exists(source):
            raise RequestError("--from %s: no such database file" % source, database=source)
        # --from is always a local file: with a server driver (--driver
        # dqlitedbapi, whose --db is an address) it is still opened with sqlite3.
        opener = _OPENER if not _OPENER.server else _Opener()
        real = _real_path(source)  # messages name the path as given
        hot = _hot_journal(real)
        if hot:
            # A crashed writer's journal: opening the source would roll it back
            # in the source (a write).  The journal is copied first: should a
            # writer roll it back meanwhile, the copied journal only restores the
            # pages it held to what they are anyway.
            directory = tempfile.mkdtemp(prefix="sqlmigrate-test-")
            _copy_files([(real + suffix, os.path.join(directory, "copy.db" + suffix), _NEW_COPY,
                          0o600) for suffix in ("-journal", "")])
        else:
            try:
                src = opener.connect(_uri(real, "ro"), source, uri=True, timeout=busy_timeout,
                                     isolation_level=None)
                try:
                    with _driver_session(src):
                        src.execute("BEGIN")  # deferred: the read below takes the shared lock
                        try:
                            _query(src, "SELECT count(*) FROM sqlite_master")  # locked?
                            if opener.module is sqlite3 and _HAS_BACKUP_API:
                                copy = backup(_raw(src))
                            else:
                                directory = tempfile.mkdtemp(prefix="sqlmigrate-test-")
                                _copy_files([(real + suffix, os.path.join(
                                    directory, "copy.db" + suffix), _NEW_COPY, 0o600)
                                    for suffix in ("", "-wal")
                                    if os.path.exists(real + suffix)])
                        finally:
                            src.execute("ROLLBACK")
                finally:
                    src.close()
            except _DB.Error as e:
                raise _sqlite_failure(e, source)
        if copy is None:
            target = os.path.join(directory, "copy.db")
            try:
                copy = opener.connect(target, target, isolation_level=None)
                if hot:
                    _query(copy, "PRAGMA schema_version")  # rolls the copy's journal back
            except _DB.Error as e:
                raise _sqlite_failure(e, source)
        yield copy
    finally:
        if copy is not None:
            copy.close()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def _main_file(conn):
    """The file of a connection's main database; "" when it is in memory
    (or temporary).  (The main database is always PRAGMA database_list's first row.)"""
    return _query(conn, "PRAGMA database_list")[0][2] or ""


def _check_foreign_keys(conn, **fields):
    """MigrationError (kind "foreign-keys", with `fields`: the migration's
    path and version, the outcome) if PRAGMA foreign_key_check finds any."""
    rows = _query(conn, "PRAGMA foreign_key_check")
    if rows:
        shown = ["%s rowid %s -> %s" % row[:3] for row in rows[:20]]
        more = " (and %d more)" % (len(rows) - 20) if len(rows) > 20 else ""
        raise MigrationError(kind="foreign-keys", cause="; ".join(shown) + more,
                             tables=sorted(set(row[0] for row in rows)), **fields)


def _traced_trigger_program(sql):
    """Whether a trace callback's `sql` is a trigger's sub-program: SQLite
    traces one as a single comment line ("-- TRIGGER tr", then "-- <its
    statement>" with its line breaks made spaces), while a statement of the
    migration's own may open with a comment, with more lines after it."""
    return sql.lstrip().startswith("--") and "\n" not in sql.strip()


# Journal modes under which SQLite cannot roll a transaction back once its
# pages have spilled to the file (OFF), or after a crash (MEMORY).
_UNSAFE_JOURNALS = ("off", "memory")


class _MigrationConnection(object):
    """What a migration's up(db)/down(db) receives, and what its cursor()
    returns: the real connection (or cursor) with two changes that keep a
    transactional migration atomic on every Python: executescript() runs
    statement by statement inside the transaction (the stdlib's commits
    first), and commit()/rollback() raise.  _copy_progress(table, copied,
    total) passes a table copy's progress to the runner's callback.
    _close_cursors() ends the statements whose rows the migration left
    unfetched: a writing one (PRAGMA journal_mode, RETURNING) keeps COMMIT
    from working, and on PyPy (no reference counting) a dropped cursor keeps
    its statement active until a garbage collection."""

    _REFUSED = ("commit", "rollback", "set_authorizer")

    def __init__(self, conn, transactional, copy_progress=None, tracking=None, scratch=False,
                 registered=None):
        # _target: the connection or cursor that runs statements; _db: the
        # wrapper a cursor's statements are recorded on; _tracking: (the
        # tracking table, the migration's version, "up" or "down", its
        # checksum), for backfill's position and what it belongs to; _scratch:
        # a connection sqlmigrate made (test, lint), where ATTACH is refused;
        # _backfills: the backfill keys run, shared with every cursor taken;
        # _registered: the functions and collations migrations registered (see
        # _register); _probing: a lookup of _register's runs, not the migration's.
        self.__dict__.update(_conn=conn, _target=conn, _db=self, _transactional=transactional,
                             _scratch=scratch, _registered=set() if registered is None
                             else registered,
                             _copy_progress=copy_progress, _driver=_driver(conn),
                             _tracking=tracking, _no_pragma=False, _probing=False,
                             failed_statement=None, refused=None, executed=[],
                             _cursors=weakref.WeakSet(), _backfills=[])

    def __getattr__(self, name):
        if self._transactional and name in self._REFUSED:
            def refuse(*args):
                raise self._refusal("db.%s()" % name)
            return refuse
        if name == "close" and self._target is self._conn:  # a cursor's close() is fine
            def refuse_close(*args):
                # Closed, the connection would roll back a transactional
                # migration behind the runner's back, and leave a
                # non-transactional one applied but never recorded.
                raise MigrationError("db.close() is not allowed in a migration: the runner "
                                     "records the migration on this connection after "
                                     "up()/down() returns", kind="transaction-ended")
            return refuse_close
        if name == "connection" and self._target is not self._conn:
            # A cursor's: the migration's db, with its refusals (sqlite3 code
            # reaches the connection through it, e.g. to create_function).
            return self._db
        return getattr(self._target, name)

    def __setattr__(self, name, value):
        if self._transactional and name in ("isolation_level", "autocommit"):
            raise MigrationError("a migration must not change db.%s: it would commit "
                                 "the migration's transaction" % name, kind="transaction-ended")
        setattr(self._target, name, value)

    def __iter__(self):
        return iter(self._target)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @contextmanager
    def _guarding(self):
        """SQLite itself refuses BEGIN, COMMIT/END and ROLLBACK in a
        transactional migration, however comments or spelling hide them (the
        regex in _run only gives the early, clear message); savepoints cannot
        end the transaction.  An authorizer already set is lost: sqlite3
        cannot read it back."""
        if not (self._transactional or self._scratch) or \
                not _driver(self._conn).has_set_authorizer:
            yield  # without an authorizer, _run's in_transaction check still guards
            return
        self._conn.set_authorizer(self._authorize)
        self.__dict__["_no_pragma"] = True  # until _authorize sees one
        try:
            yield
        finally:
            self._conn.set_authorizer(_NO_AUTHORIZER)

    def _authorize(self, action, operation, value, *_):
        if action == _SQLITE_PRAGMA:
            self.__dict__["_no_pragma"] = False  # the runner puts settings back after it
        if action == _SQLITE_TRANSACTION and self._transactional:
            self.__dict__["refused"] = self._refusal(_authorizer_text(operation))
            return sqlite3.SQLITE_DENY
        if action == _SQLITE_PRAGMA and self._transactional and \
                (_authorizer_text(operation) or "").lower() == "journal_mode" and \
                (_authorizer_text(value) or "").lower() in _UNSAFE_JOURNALS:
            # Honoured before the transaction's first write, and not undone
            # after it: without a rollback journal SQLite cannot roll back
            # pages it has spilled, yet still reports the rollback done.
            self.__dict__["refused"] = MigrationError(
                "PRAGMA journal_mode = %s is not allowed inside a transactional migration: "
                "without a rollback journal a failed migration cannot be rolled back (set "
                "transaction = False to change the journal mode)" % _authorizer_text(value),
                kind="refused-statement")
            return sqlite3.SQLITE_DENY
        attached = _authorizer_text(operation) if action == _SQLITE_ATTACH else None
        if attached not in (None, "", ":memory:") and self._scratch:
            self.__dict__["refused"] = MigrationError(
                "ATTACH %s: test and lint run migrations on scratch copies and never write "
                "another file, so this migration cannot run there" % attached,
                kind="refused-statement")
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    def _refusal(self, what):
        return MigrationError(
            "%s is not allowed inside a transactional migration: the runner commits when "
            "up()/down() returns (set transaction = False to manage transactions yourself)"
            % what, kind="transaction-ended")

    def create_function(self, name, *args, **kwargs):
        return self._register("create_function", name, args, kwargs)

    def create_aggregate(self, name, *args, **kwargs):
        return self._register("create_aggregate", name, args, kwargs)

    def create_window_function(self, name, *args, **kwargs):
        return self._register("create_window_function", name, args, kwargs)

    def create_collation(self, name, *args, **kwargs):
        return self._register("create_collation", name, args, kwargs)

    def _register(self, method, name, args, kwargs):
        """The rule for a migration's SQL functions and collations: a name
        SQLite already knows on this connection (built in, loaded, or the
        application's) is refused, at any number of arguments (a variadic
        one, or one of another arity, can take over calls of the existing
        one).  Replaced on this connection only, it would build index
        entries, UNIQUE, CHECK and generated-column results that every other
        connection computes differently: wrong query results and
        integrity_check errors afterwards, and no undoing it (sqlite3 cannot
        remove a function).  A name an earlier migration of this runner
        registered may be registered again: each migration that uses one must
        (a later run is a new process, without it)."""
        register = getattr(self._target, method)  # a driver without it fails as before
        if not isinstance(name, str):
            return register(name, *args, **kwargs)  # the driver's own TypeError
        collation = method == "create_collation"
        key = (collation, _key(name))
        known = False
        if key not in self._registered:
            self._db.__dict__["_probing"] = True  # a dry run lists no statement of it
            try:
                known = _sql_name_known(self._conn, name, collation)
            finally:
                self._db.__dict__["_probing"] = False
        if known:
            raise MigrationError(
                "db.%s(%r): SQLite already has a %s named %s on this connection (built in, "
                "loaded, or registered by the application); replacing it here would make the "
                "indexes and constraints that use it disagree with every other connection: "
                "give yours another name" % (method, name, "collation" if collation
                                              else "function", name),
                kind="refused-statement")
        result = register(name, *args, **kwargs)
        self._registered.add(key)
        return result

    def cursor(self, *args):
        wrapper = object.__new__(_MigrationConnection)
        wrapper.__dict__.update(self.__dict__, _target=self._target.cursor(*args))
        return wrapper

    def execute(self, sql, parameters=()):
        return self._run("execute", sql, parameters)

    def executemany(self, sql, seq_of_parameters):
        return self._run("executemany", sql, seq_of_parameters)

    def executescript(self, sql):
        result = self if self._target is not self._conn else self._conn.cursor()
        for statement in _split_sql(sql):
            result = self.execute(statement)
            for _ in result:  # as the stdlib's does: each statement runs to its end
                pass
        return result

    def _close_cursors(self):
        for cursor in list(self._cursors):
            try:
                cursor.close()
            except _DB.Error:
                pass  # the migration closed the connection: what runs next reports it

    def _run(self, name, sql, parameters):
        ending = self._transactional and _transaction_statement(sql)
        if ending:
            raise self._refusal(ending)
        self.executed.append(sql)
        method = getattr(self._target, name)
        try:
            if self._transactional and not self._conn.in_transaction:
                # SQLite ended the transaction itself after an error the
                # migration caught (RAISE(ROLLBACK), a full disk): run now, the
                # statement would commit at once, unrecorded.
                raise MigrationError(
                    "not run: SQLite had already rolled back the migration's transaction "
                    "after an earlier error (RAISE(ROLLBACK), a full disk...) that the "
                    "migration caught; let that error propagate", kind="transaction-ended")
            refusal = self._driver.refused_pragmas and self._driver.refusal(sql)
            if refusal:
                raise MigrationError(refusal, kind="refused-statement", statement=sql)
            # executemany is not retried: in autocommit mode the rows before a
            # failure stay written.
            if name == "execute" and not self._transactional:
                result = _retrying_busy(_raw(self._conn), method, sql, parameters)
            else:
                result = method(sql, parameters)
            if self._transactional and not self._conn.in_transaction:
                # A last line of defence (a driver without an authorizer, a
                # statement neither reader knew): the transaction is gone.
                raise MigrationError(
                    "%s ended the migration's transaction" % sql.strip().split(None, 1)[0],
                    kind="transaction-ended", outcome="what the migration ran before it was "
                    "committed or rolled back by it; the migration was not recorded")
        except _DB.Error + (MigrationError,):
            self._db.__dict__["failed_statement"] = sql
            raise
        if result.description is not None:  # a statement with rows: maybe not fetched
            try:
                self._cursors.add(result)
            except TypeError:  # a driver's cursors that take no weak reference
                pass           # (dqlitedbapi's) are left to the driver
        return self if result is self._target else result


def _sql_name_known(conn, name, collation):
    """Whether SQLite knows a function (at any number of arguments) or a
    collation named `name` on `conn`; both kinds of name compare
    case-insensitively (ASCII), as _key()."""
    if collation:  # PRAGMA collation_list: every version
        return any(_key(row[1]) == _key(name) for row in _query(conn, "PRAGMA collation_list"))
    # PRAGMA function_list lists every function, the application's too, from
    # SQLite 3.30 (earlier only in SQLITE_INTROSPECTION_PRAGMAS builds); a
    # build without it answers no rows.
    rows = _query(conn, "PRAGMA function_list")
    if rows:
        return any(_key(row[0]) == _key(name) for row in rows)
    # Else SQLite's resolver answers: EXPLAIN prepares a call without making
    # it, and fails "no such function" only for a name it knows at no number
    # of arguments ("wrong number of arguments" for one it knows).
    try:
        _query(conn, "EXPLAIN SELECT %s()" % _quote_identifier(name))
    except _DB.OperationalError as e:
        kind = _sqlite_kind(e)
        if kind in _DATABASE_KINDS:
            raise
        return kind != "no-function"
    return True


def _transaction_statement(sql):
    """BEGIN, COMMIT, END or ROLLBACK if `sql` starts a statement that begins or
    ends a transaction (ROLLBACK TO a savepoint does not), else None: its first
    words as SQLite reads them, past comments.  Lazily: a long INSERT is not
    read to its end."""
    first = re.compile(_FIRST_WORD_RE).match(sql).group("word").upper()
    if first != "ROLLBACK":  # one match: the runner asks this of every statement
        return first if first in ("BEGIN", "COMMIT", "END") else None
    words = []
    for match in re.compile(_TOKEN_RE).finditer(sql):
        if match.lastgroup in ("space", "comment"):
            continue
        words.append(match.group().upper() if match.lastgroup == "word" else None)
        if len(words) == 3 or words[0] != "ROLLBACK":
            break
    first = words[0] if words else None
    if first == "ROLLBACK" and "TO" in words[1:] and words[1] in ("TO", "TRANSACTION"):
        return None
    return first if first in ("BEGIN", "COMMIT", "END", "ROLLBACK") else None


def _retrying_busy(conn, method, sql, parameters):
    """One statement of a non-transactional migration, run again while it
    fails with SQLITE_BUSY, for up to the connection's busy timeout in all.
    SQLite answers some statements (PRAGMA journal_mode = WAL while another
    connection writes) with SQLITE_BUSY at once, without calling the busy
    handler, because waiting while holding a read lock could deadlock.  A
    statement that failed in autocommit mode changed nothing and released
    its locks, so it is safe to run again; inside a transaction it is not."""
    started, deadline, pause = time.monotonic(), None, 0.001
    while True:
        try:
            return method(sql, parameters)
        except _DB.Error as e:
            if _sqlite_kind(e) != "locked" or conn.in_transaction:
                raise
            if deadline is None:
                deadline = started + _query(conn, "PRAGMA busy_timeout")[0][0] / 1000.0
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.1)


# --- Tracking ---------------------------------------------------------------
# metadata(key, value) holds 'schema_version'; <table>_migrations holds one row
# per applied migration: version, name, checksum, applied_at, duration_ms.

_Record = collections.namedtuple("_Record", "version name checksum applied_at duration_ms")
_RECORD_COLUMNS = ", ".join(_Record._fields)


def _tracking_table(name):
    """The tracking table `name` as SQL, in the main database: unqualified,
    SQLite resolves a name in main, then in each attached database, so with
    main not yet tracked a caller's connection attaching a tracked database
    would read its version (and report main's work done) and write main's
    records into it."""
    return "main." + _quote_identifier(name)


class _TrackingState(object):
    def __init__(self, version=0, records=None, has_metadata=False, has_history=False,
                 backfills=(), exists=True, rolling_back=None):
        self.version = version
        self.exists = exists  # False: no database file (none is created to read this)
        self.records = records or {}   # {version: _Record}
        self.backfills = backfills     # [(key, value)] of backfills under way
        self.rolling_back = rolling_back  # see _ROLLING_BACK
        self.has_metadata, self.has_history = has_metadata, has_history

    def applied(self, files):
        """Applied versions.  Without a history table (a database adopted from
        another runner) every file up to schema_version counts as applied."""
        if self.has_history:
            return set(self.records)
        return set(m.version for m in files if m.version <= self.version)


# The tracking table's row of this key names (value) the non-transactional
# migration whose down is under way: written before it runs, deleted with its
# record.  One a down that failed or was killed left behind says that the
# migration, still recorded, is partly rolled back (status, verify), and `up`
# applies it again (a non-transactional migration must be idempotent).
_ROLLING_BACK = "rolling_back"

def _rolling_back(conn, table, version):
    """Under the write lock: whether migration `version`'s down was cut short
    (the _ROLLING_BACK row names it)."""
    return bool(_query(conn, "SELECT 1 FROM %s WHERE key = ? AND value = ?" % _tracking_table(
        table), (_ROLLING_BACK, str(version))))


# A backfill's position is the tracking table's row of key
# 'backfill:[v<migration version>:<up or down>:]<name or table>'.
_BACKFILL_PREFIX = "backfill:"
_BackfillKey = collections.namedtuple("_BackfillKey", "version direction name")


def _backfill_key(version, direction, name):
    """The key of a backfill's position; version None: outside a migration."""
    # The direction in the key: a down's backfill must not find the up's position.
    return "%s%s%s" % (_BACKFILL_PREFIX, "" if version is None else "v%d:%s:" % (
        version, direction), name)


def _parse_backfill_key(key):
    """The _BackfillKey of a position's key (one _backfill_keys selects);
    Nones but the name for a backfill outside a migration."""
    rest = key[len(_BACKFILL_PREFIX):]
    parts = rest.split(":", 2)
    # ASCII digits only: str.isdigit() also takes '\u00b2', which int() refuses.
    if len(parts) > 1 and parts[0][:1] == "v" and parts[0][1:] and \
            _DIGITS.issuperset(parts[0][1:]):
        up_or_down = len(parts) == 3 and parts[1] in ("up", "down")
        return _BackfillKey(int(parts[0][1:]), parts[1] if up_or_down else "up",
                            parts[2] if up_or_down else
                            rest.split(":", 1)[1])  # v1:name: before 'up:'
    return _BackfillKey(None, None, rest)


def _backfill_keys(version=None, direction=None):
    """(low, high): the keys low <= key < high are the positions of the
    backfills of migration `version` (in `direction`, or both), or of all
    backfills."""
    low = _BACKFILL_PREFIX if version is None else "%sv%d:%s" % (
        _BACKFILL_PREFIX, version, direction + ":" if direction else "")
    return low, low[:-1] + ";"  # ';' sorts right after ':'


def _read_state(conn, table):
    """The tracking state; one query on an established database."""
    try:
        # With the positions of backfills under way (keys 'backfill:...').
        rows = _query(conn, "SELECT NULL, value, key, NULL, NULL FROM %s WHERE key IN "
                      "('schema_version', '%s') OR key >= ? AND key < ? "
                      "UNION ALL SELECT %s FROM %s"
                      % (_tracking_table(table), _ROLLING_BACK, _RECORD_COLUMNS,
                         _tracking_table(table + "_migrations")), _backfill_keys())
    except _DB.OperationalError as e:
        if _sqlite_kind(e) not in ("no-table", "no-column"):
            raise  # e.g. locked: waiting a second busy timeout would not help
        return _read_state_step_by_step(conn, table)
    records = dict((row[0], _Record(*row)) for row in rows if row[0] is not None)
    values = dict((row[2], row[1]) for row in rows if row[0] is None)
    return _TrackingState(_parse_version([values.get("schema_version")], table), records, True,
                          True, [row[2:0:-1] for row in rows if row[0] is None and
                                 row[2] not in ("schema_version", _ROLLING_BACK)],
                          rolling_back=_parse_version([values.get(_ROLLING_BACK)], table,
                                                       _ROLLING_BACK) or None)


def _read_state_step_by_step(conn, table):
    """A new, adopted or foreign database: find out which tables exist."""
    history, state = table + "_migrations", _TrackingState()

    def read(sql, name, shape):
        try:
            return _query(conn, sql)
        except _DB.OperationalError as e:
            if _sqlite_kind(e) == "no-column":
                raise MigrationError("table %r exists but is not %s (%s); choose another "
                                     "tracking table with --table / table=" % (name, shape, e),
                                     kind="not-tracking-table", tables=[name])
            if _sqlite_kind(e) != "no-table":
                raise
            return None

    rows = read("SELECT value FROM %s WHERE key = 'schema_version'" % _tracking_table(table),
                table, "a key/value metadata table")
    if rows is not None:
        state.version, state.has_metadata = _parse_version([r[0] for r in rows], table), True
    # Looked at even without a metadata table: an application's table of this
    # name would otherwise break `up` after its first migration.
    rows = read("SELECT %s FROM %s%s" % (_RECORD_COLUMNS, _quote_identifier(history),
                                         "" if state.has_metadata else " LIMIT 0"),
                history, "the migration history that tracking table %r keeps there" % table)
    if rows is not None and state.has_metadata:
        state.records, state.has_history = dict((r[0], _Record(*r)) for r in rows), True
    return state


def _applied_by_baseline(record):
    """The checksum of the baseline that wrote `record`, or None."""
    checksum = record and record.checksum or ""
    return checksum[len(_BASELINE_PREFIX):] if checksum.startswith(_BASELINE_PREFIX) else None


def _parse_version(values, table, key="schema_version"):
    value = values[0] if values else None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a REAL column's 2.0
    # ASCII digits only: int() also takes 1.5 (as 1), '1_0' and other scripts' digits.
    if value is None or isinstance(value, int) or isinstance(value, str) and \
            re.match(r"[ \t\n]*-?[0-9]+[ \t\n]*\Z", value):
        return int(value or 0)
    raise MigrationError("%s.%s is %r, not a whole number" % (table, key, values[0]),
                         kind="not-tracking-table", tables=[table])


def _ensure_tracking(conn, table, state, files):
    """Create the tracking tables inside the caller's transaction; an adopted
    database gets a history row for each migration its version covers.
    Returns the tracking state's records with those rows."""
    records = dict(state.records)
    if not state.has_metadata:
        conn.execute("CREATE TABLE IF NOT EXISTS %s (key TEXT PRIMARY KEY, value TEXT)"
                     % _tracking_table(table))
    if not state.has_history:
        conn.execute("CREATE TABLE IF NOT EXISTS %s (version INTEGER PRIMARY KEY, "
                     "name TEXT NOT NULL, checksum TEXT, applied_at TEXT, duration_ms REAL)"
                     % _tracking_table(table + "_migrations"))
        for m in files:
            if m.version <= state.version:
                records[m.version] = _Record(m.version, m.name, None, None, None)
                _write_record(conn, table, records[m.version])
    return records


def _history_under_lock(conn, table, version, files):
    """Inside the write transaction: (is `version` applied, the newest applied
    version or 0).  Makes sure the tracking tables exist.  Index look-ups
    only, so a run of N migrations does not read N * N rows."""
    sql = "SELECT EXISTS (SELECT 1 FROM %s WHERE version = ?), %s" % (
        _tracking_table(table + "_migrations"), _newest_recorded(table))
    try:
        return _query(conn, sql, (version,))[0]
    except _DB.OperationalError as e:
        if _sqlite_kind(e) != "no-table":
            raise
    _ensure_tracking(conn, table, _read_state(conn, table), files)  # a new or adopted database
    return _query(conn, sql, (version,))[0]


def _newest_recorded(table):
    """SQL for the highest recorded version, 0 when none is.  No SQL
    functions (max, coalesce): create_function() replaces even built-in ones
    on a connection, for its whole life, so a migration (or the application
    owning the connection) could make the runner write a wrong version."""
    return ("CASE WHEN EXISTS (SELECT 1 FROM {0}) THEN (SELECT version FROM {0} "
            "ORDER BY version DESC LIMIT 1) ELSE 0 END").format(
        _tracking_table(table + "_migrations"))


def _write_record(conn, table, record):
    _written(conn.execute("INSERT OR REPLACE INTO %s (%s) VALUES (?, ?, ?, ?, ?)" % (
        _tracking_table(table + "_migrations"), _RECORD_COLUMNS), record), table + "_migrations")


def _written(cursor, table):
    """A write to tracking table `table` that changed no row: a trigger's
    RAISE(IGNORE) skipped it, and the run would report work it did not
    record (or unrecord).  (-1: a driver that does not count.)"""
    if cursor.rowcount == 0:
        raise MigrationError(kind="not-tracking-table", cause=(
            "a trigger on %s skipped sqlmigrate's change to it (RAISE(IGNORE)): drop that "
            "trigger or let it pass" % table))


def _write_version(conn, table, version=None):
    """schema_version := `version`, or by default the highest recorded version
    (0 when none is), computed by SQLite in the same statement."""
    if version is None:
        value, params = "CAST(%s AS TEXT)" % _newest_recorded(table), ()
    else:
        value, params = "?", (str(version),)
    # UPDATE first: an adopted metadata table may lack the UNIQUE key that
    # INSERT OR REPLACE would need.
    # The INSERT only where no row is: an UPDATE a trigger skipped changed none either.
    if conn.execute("UPDATE %s SET value = %s WHERE key = 'schema_version'"
                    % (_tracking_table(table), value), params).rowcount == 0:
        _written(conn.execute("INSERT INTO %s (key, value) SELECT 'schema_version', %s WHERE "
                              "NOT EXISTS (SELECT 1 FROM %s WHERE key = 'schema_version')"
                              % (_tracking_table(table), value, _tracking_table(table)),
                              params), table)


def _utc_now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- Files written beside the database: backups, the schema file -----------
# A backup is complete or absent: it is written under a temporary name in the
# destination's directory, checked and fsynced, and only then linked to its
# name, which never replaces an existing file.  It is created with no
# permission bits the database file lacks, so a private database never has a
# readable copy, not even for a moment.  The schema file is replaced
# atomically, and only if it is ours.



def _backup_path(path, version):
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    candidate, n = "%s.%s-v%d.bak" % (path, stamp, version), 1
    while os.path.lexists(candidate):
        n += 1
        candidate = "%s.%s-v%d.%d.bak" % (path, stamp, version, n)
    return candidate


def backup(db, dest=None, busy_timeout=_DEFAULT_BUSY_TIMEOUT, table=_DEFAULT_TABLE):
    """Write a consistent copy of `db` (path or connection) to `dest`; return
    the path.  Default name (also inside `dest` when it is a directory): the
    database's file name with the time and the version recorded in `table`.
    A connection inside a write transaction is refused at once (a copy
    cannot read past its own lock)."""
    if dest is not None:
        dest = os.fspath(dest)
        if dest in ("", ":memory:"):
            raise _bad_destination(dest, "is not a file path; give a file name or a directory")
    with _using(db, busy_timeout) as conn:
        source = _main_file(conn)
        shown = source or "the in-memory database"
        driver = _driver(conn)
        if driver.server:  # VACUUM INTO would write a file on one of the servers
            raise MigrationError(
                "cannot back up %s through driver %s: the database lives on its servers; back "
                "it up with the cluster's own tools" % (shown, driver.name), kind="backup",
                database=shown)
        if driver is not _SQLITE3_DRIVER and not driver.has_backup and \
                not driver.has_vacuum_into:
            raise MigrationError(
                "cannot back up %s: driver %s has no Connection.backup() and its SQLite %s is "
                "older than 3.27 (no VACUUM INTO); copy the database with the driver's own "
                "tools" % (shown, driver.name, driver.version_text), kind="backup",
                database=shown)
        if not _HAS_BACKUP_API and _raw(conn).in_transaction:
            raise _inside_transaction(shown)  # the locked copy must take the write lock itself
        base = None  # a default name: another is chosen if one is taken meanwhile
        if dest is None or os.path.isdir(dest):
            if not source:
                raise RequestError("an in-memory database needs a backup file path")
            base = (os.path.join(dest if dest is not None else os.path.dirname(source),
                                 os.path.basename(source)), _read_state(conn, table).version)
            dest = _backup_path(*base)
        elif dest.endswith(tuple(filter(None, (os.sep, os.altsep)))):  # meant as a directory
            raise RequestError("backup directory %s does not exist; create it first" % dest,
                               path=dest)
        elif not os.path.isdir(os.path.dirname(os.path.abspath(dest))):
            raise RequestError("cannot write backup %s: directory %s does not exist; create it "
                               "first" % (dest, os.path.dirname(os.path.abspath(dest))), path=dest)
        elif source and os.path.exists(dest) and os.path.samefile(dest, source):
            raise _bad_destination(dest, "is the database itself; give another file name")
        elif os.path.lexists(dest):
            raise _exists_already(dest)
        elif source and os.path.realpath(dest) in _files_beside(source):
            raise _bad_destination(dest, "is the name of the database's journal or lock file; "
                                         "give another file name")
        # An in-memory database has no permissions to keep: owner only.
        mode = stat.S_IMODE(os.stat(source).st_mode) & 0o777 if source else 0o600
        return _write_backup(conn, shown, dest, mode, busy_timeout, base)


def _bad_destination(dest, why):
    return RequestError("backup destination %s %s" % (dest if dest else repr(dest), why), path=dest)


def _exists_already(dest):
    return _bad_destination(dest, "exists already; a backup never replaces a file: give a "
                                  "new name or remove it")


def _inside_transaction(source):
    return MigrationError("cannot back up %s from inside a transaction on the same "
                          "connection: commit or roll back first" % source, kind="backup",
                          database=source)


def _write_backup(conn, source, dest, mode, busy_timeout, base):
    """Copy into a new temporary file beside `dest`, quick_check it, fsync it
    and link it to `dest` (or, from `base`, to a new default name while one
    keeps being taken); return the name.  On any failure nothing is left."""
    temporary = "%s.%s.tmp" % (dest, "".join("%02x" % b for b in os.urandom(6)))
    created = False
    try:
        # O_EXCL: never a file someone else made; `mode` so no moment of
        # wider permissions (the umask may narrow it further), plus the
        # owner's write bit while the copy is filled (a read-only database's
        # copy could not be written), taken away before the copy is named.
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode | stat.S_IWUSR))
        created = True
        driver = _driver(conn)
        if driver is _SQLITE3_DRIVER and _HAS_BACKUP_API or (
                driver is not _SQLITE3_DRIVER and driver.has_backup and
                not driver.has_vacuum_into):
            _copy_with_backup_api(conn, source, temporary, busy_timeout)
        elif driver is _SQLITE3_DRIVER:
            # Not VACUUM INTO: PyPy's sqlite3 leaves statements in progress,
            # which VACUUM refuses.
            _copy_under_write_lock(conn, temporary)
        else:
            # Another driver: VACUUM INTO where it exists, since it also copies
            # an SQLCipher database encrypted with its key (backup() into a
            # connection without the key fails).  It fills the empty
            # placeholder, which keeps its mode: never a moment more readable.
            _raw(conn).execute("VACUUM INTO ?", (temporary,))
        copy = _backup_opener(driver).connect(_uri(temporary, "rw"), dest, uri=True)
        try:
            result = [row[0] for row in copy.execute("PRAGMA quick_check").fetchall()]
        finally:
            copy.close()
        if result != ["ok"]:
            raise MigrationError("backup %s was not written: the copy fails PRAGMA quick_check "
                                 "(%s); check the database itself with PRAGMA integrity_check"
                                 % (dest, "; ".join(map(str, result[:3]))), kind="backup",
                                 path=dest)
        _fsync(temporary, os.O_RDWR)  # only a durable file is given the backup's name
        if not mode & stat.S_IWUSR:
            os.chmod(temporary, stat.S_IMODE(os.stat(temporary).st_mode) & mode)
        while not _link_new_name(temporary, dest):
            if base is None:
                raise _exists_already(dest)
            dest = _backup_path(*base)
        return dest
    except _DB.Error + (OSError,) as e:
        kind = _sqlite_kind(e) if isinstance(e, _DB.Error) else None
        if kind in _DATABASE_KINDS and kind != "full":
            raise _sqlite_failure(e, source)  # the source's fault
        import errno
        full = getattr(e, "errno", None) in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
        cause = "disk is full (%s)" % e.strerror if full else getattr(e, "strerror", None) or str(e)
        raise MigrationError("cannot write backup %s: %s; nothing was written" % (dest, cause),
                             kind="backup", path=dest, cause=cause) from e
    finally:
        if created:
            for path in [temporary] + [temporary + s for s in _JOURNAL_SUFFIXES]:
                try:
                    os.remove(path)
                except OSError:
                    pass


def _copy_with_backup_api(conn, source, path, busy_timeout):
    """Connection.backup() retries a busy source forever, sleeping 250 ms at a
    time, and a source connection's own write transaction keeps it busy for
    good: give up at once in that case, after busy_timeout otherwise."""
    deadline = [None]

    def progress(status, remaining, total):
        if status not in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return
        if _raw(conn).in_transaction:
            raise _inside_transaction(source)
        if deadline[0] is None:
            deadline[0] = time.time() + busy_timeout
        elif time.time() >= deadline[0]:
            raise MigrationError(kind="locked", database=source)

    target = _backup_opener(_driver(conn)).connect(_uri(path, "rw"), path, uri=True)
    try:
        _raw(conn).backup(target, progress=progress)
    finally:
        target.close()


def _backup_opener(driver):
    """Opens the copy with the source's driver (backup() takes only its own
    connections) and, when the CLI opened the source with a key, that key:
    a copy of an encrypted database is encrypted alike."""
    if driver.Error is getattr(_OPENER.module, "Error", None):  # sqlcipher3 or its dbapi2
        return _OPENER
    return _Opener(driver.module)


def _fsync(path, flags):
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _new_temporary(path):
    # O_EXCL: never a file someone else made.  0o666 under the umask, as for
    # any file the user writes (mkstemp's 0o600 would stay on a new file).
    name = "%s.%s.tmp" % (path, os.urandom(4).hex())
    os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    return name


def _link_new_name(path, dest):
    """Give `path` the name `dest` unless that exists (then False).  A hard
    link, unlike a rename, never replaces a file that appeared meanwhile."""
    try:
        os.link(path, dest)
    except FileExistsError:
        return False
    except OSError:  # no hard links on this file system (FAT, some shares)
        # The name is claimed first (O_EXCL: no file that appears meanwhile
        # is ever replaced), then the file renamed over our own empty claim.
        try:
            os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            return False
        try:
            os.replace(path, dest)
        except BaseException:  # an interrupt too: never an empty file under the name
            os.remove(dest)
            raise
    if _CAN_FSYNC_DIRECTORIES:  # make the new name itself durable
        try:
            _fsync(os.path.dirname(os.path.abspath(dest)), os.O_RDONLY)
        except OSError:
            os.remove(dest)  # ours: a failed backup leaves nothing behind
            raise
    return True


def _write_new_file(path, data):
    """Write `data` (bytes) as a new file `path`, never over one (then False):
    written beside it, flushed to disk, then linked into place, so a reader
    listing the directory meanwhile (an `up`), or a crash, never finds the
    name holding part of it.  An OSError leaves nothing behind."""
    temporary = None
    try:
        temporary = _new_temporary(path)
        with open(temporary, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return _link_new_name(temporary, path)
    finally:
        if temporary is not None and os.path.exists(temporary):
            os.remove(temporary)


@contextmanager
def _read_lock(conn):
    """A read transaction holding SQLite's shared lock until it ends."""
    with _explicit_transactions(conn):
        conn.execute("BEGIN")
        try:
            _query(conn, "SELECT count(*) FROM sqlite_master")
            yield
        finally:
            conn.execute("ROLLBACK")


def _copy_under_write_lock(conn, dest):
    """Python 3.6 has no backup API: hold the write lock (no commit can happen,
    and a hot journal has been rolled back by the read) while the file and
    its WAL are copied into the existing file `dest` and a new `dest`-wal
    with the same permissions (by a child process: _copy_files), then fold
    the WAL into the copy."""
    source_path = _main_file(conn)
    mode = stat.S_IMODE(os.stat(dest).st_mode)
    # SQLite before 3.34 refuses the write lock on a file this process may
    # only read.  Outside WAL mode a read lock stops every commit as well (a
    # writer needs the file to itself); in WAL mode writers append meanwhile.
    shared = not _may_write(source_path) and \
        _query(conn, "PRAGMA journal_mode")[0][0].lower() != "wal"
    with _read_lock(conn) if shared else _transaction(conn):
        _query(conn, "SELECT count(*) FROM sqlite_master")
        # Into the file `dest` made (keeping its mode), and a new -wal.
        _copy_files([(source_path + suffix, dest + suffix,
                      _NEW_COPY & ~os.O_TRUNC | os.O_EXCL if suffix else _NEW_COPY, mode)
                     for suffix in ("", "-wal")
                     if not suffix or os.path.exists(source_path + suffix)])
    if os.path.exists(dest + "-wal"):
        copy = sqlite3.connect(dest, isolation_level=None)
        try:
            copy.execute("PRAGMA journal_mode = DELETE")
        finally:
            copy.close()


# The first line of every schema file sqlmigrate writes: no other file is replaced.
_SCHEMA_FILE_MARK = b"-- sqlmigrate schema"


def _check_schema_file(path):
    """Refuse a schema file we must not or cannot replace, before the
    database changes: it is ours only if absent or its first line is our mark."""
    problem = None
    try:
        with open(path, "rb") as f:
            if f.readline(len(_SCHEMA_FILE_MARK)) != _SCHEMA_FILE_MARK:
                problem = ("the schema file %s was not written by sqlmigrate (its first line is "
                           "not '-- sqlmigrate schema ...'): refusing to overwrite it; move it "
                           "away or choose another --schema-file" % path)
    except FileNotFoundError:
        pass
    except OSError as e:
        problem = "cannot read the schema file %s (%s)" % (path, e.strerror or e)
    if problem is None:
        try:  # proves the directory writable now, not after migrating
            os.remove(_new_temporary(os.path.realpath(path)))  # where _write_schema_file writes
        except OSError as e:
            problem = "cannot write the schema file %s (%s)" % (path, e.strerror or e)
    if problem is not None:
        raise MigrationError(problem, kind="schema-file", path=path, outcome="nothing was changed")


def _schema_file_version(path):
    """The version on the first line of a schema file we wrote, else None
    (no file, not ours, unreadable: nothing to repair)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(200)
    except OSError:
        return None
    found = re.match(re.escape(_SCHEMA_FILE_MARK) + br", version (\d+)\r?\n", first)
    return int(found.group(1)) if found else None


def _write_schema_file(path, text):
    """Replace `path` by `text` atomically: readers see the old file or the
    new one, never a part (a temporary file beside it, fsynced, os.replace).
    A symbolic link stays one: its target is replaced (os.replace on the link's
    path would put a regular file in its place and leave the target stale)."""
    path = os.path.realpath(path)
    temporary = _new_temporary(path)
    try:
        with open(temporary, "wb") as f:  # bytes: "\n" on every system
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.chmod(temporary, stat.S_IMODE(os.stat(path).st_mode))
        except FileNotFoundError:
            pass
        os.replace(temporary, path)
    except BaseException:
        try:
            os.remove(temporary)
        except OSError:
            pass
        raise
    if _CAN_FSYNC_DIRECTORIES:
        _fsync(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)


# --- Runner -----------------------------------------------------------------

class Migrator(object):
    """Migrations in `directory` against `db` (a path or an open connection).

    A connection you pass is used as it is and never closed; its
    isolation_level, autocommit and foreign_keys are as before on return, and
    databases a non-transactional migration attached are detached.  An
    authorizer set on it is removed while a transactional migration runs
    (sqlite3 cannot read it back to restore it): set it again afterwards.
    progress(event, migration, direction, **details) hears "start" and "end"
    around each migration's body, "done" with its result once it is
    committed, and "copy" (table=, copied=, total=) while rebuild_table or
    drop_column, given the migration's db, copies a table.
    """

    def __init__(self, db, directory=None, table=_DEFAULT_TABLE,
                 busy_timeout=_DEFAULT_BUSY_TIMEOUT, progress=None, schema_file=None,
                 package=None, migrations=None):
        given = [name for name, value in (("directory", directory), ("package", package),
                                          ("migrations", migrations)) if value is not None]
        if len(given) > 1:
            raise RequestError("the migrations come from one of directory, package or "
                               "migrations, not %s" % " and ".join(given))
        if isinstance(table, str) and _key(table).startswith("sqlite_"):  # else found mid-run
            raise RequestError("the tracking table cannot be named %s: SQLite reserves names "
                               "starting with sqlite_; choose another with --table / table="
                               % table)
        if _is_connection(db):
            self.connection, self.path = db, None
            _driver(db)  # a connection that is not SQLite is refused here, up front
        else:
            self.connection, self.path = None, os.fspath(db)
        # One source of files: a directory (by default ./migrations), a
        # package (read through its loader) or an in-code list.
        self.directory = os.fspath(directory if directory is not None else "migrations")
        self.package = package
        self._sources = {"package": package} if package is not None else \
            {"migrations": list(migrations)} if migrations is not None else \
            {"directory": self.directory}
        _check_arguments("text", table=table)
        self.table, self.busy_timeout = table, _seconds("busy_timeout", busy_timeout)
        self.progress = progress or (lambda *args, **kwargs: None)
        self.schema_file = None if schema_file is None else os.fspath(schema_file)
        self._migrations = self._baselines = None
        self._scratch = False  # a connection sqlmigrate made: see _scratch_runner
        self._registered = set()  # what its migrations registered: _MigrationConnection._register

    @property
    def migrations(self):
        if self._migrations is None:
            self._migrations, self._baselines = \
                _scan_package(self.package) if self.package is not None else \
                _scan_list(self._sources["migrations"]) if "migrations" in self._sources else \
                _scan(self.directory)
        return self._migrations

    @property
    def current_version(self):
        return self._read_state().version

    def pending(self):
        return self._plan_up(self._read_state(), None)[0]

    def status(self):
        """The data of `status --json`; `clean` is what `status --check` tests."""
        return self._report(self._read_state())

    def is_current(self):
        """True when up() has nothing to do and nothing to refuse: no pending
        migration, no drift that strict=True refuses, the database not ahead
        of the files.  One query, as a no-op start-up; never writes."""
        return self.status()["clean"]

    @property
    def _latest_version(self):
        """The newest version a file (or baseline) has; 0 without files."""
        return max([m.version for m in self.migrations + self._baselines] or [0])

    def _report(self, state):
        rows, by_version = [], {m.version: m for m in self.migrations}
        baselines = self._baselines
        for b in baselines:
            by_version.setdefault(b.version, b)  # it stands in for its version's file
        applied = state.applied(self.migrations)
        # A new database is built from the newest baseline: a file below it
        # that it does not hold (added after it was written) would never run.
        fresh_from = baselines[-1] if baselines and not applied and not state.version else None
        for version in sorted(set(by_version) | set(state.records)):
            m, record = by_version.get(version), state.records.get(version)
            covering = [b for b in baselines if b.version >= version]
            via = _applied_by_baseline(record)
            by = [b for b in covering if b.checksum == via] or covering
            changed = False
            if via and covering and by is covering:
                entry_state = changed = "changed"  # the baseline that applied it was edited since
            elif m is None or m.baseline and version in applied and not via:
                entry_state = "in baseline" if covering else "missing"
            elif version in applied:
                changed = bool(not via and record and record.checksum and
                               record.checksum != m.checksum)
                # Partly rolled back first: `mark`, the advice for an edited
                # file, would record its half-undone effects as whole.
                entry_state = "partly rolled back" if version == state.rolling_back \
                    else "changed" if changed else "applied"
            elif m.baseline and version < state.version:
                entry_state = "in baseline"  # skipped: the database is past it
            elif fresh_from and not m.baseline and version < fresh_from.version and \
                    not fresh_from._stands_for(version):
                entry_state, by = "out-of-order", [fresh_from]
            else:
                entry_state = "out-of-order" if version < state.version else "pending"
            rows.append({"version": version, "name": m.name if m else record.name,
                         "file": m.filename if m else None, "state": entry_state,
                         "changed": bool(changed),  # the file differs from what was applied
                         "applied_at": record.applied_at if record else None,
                         "applied_name": record.name if record else None,
                         "baseline": by[0].filename if by and (
                             via or entry_state in ("in baseline", "out-of-order")) else None})
        latest = self._latest_version
        return {
            "database": self.path if self.path is not None else "<connection>",
            "database_exists": state.exists,
            "current_version": state.version,
            "latest_version": latest,
            "applied": sum(1 for r in rows if r["state"] in ("applied", "changed") or
                           r["state"] == "in baseline" and r["version"] in applied),
            "pending": sum(1 for r in rows if r["state"] in ("pending", "out-of-order",
                                                             "partly rolled back")),
            "ahead": state.version > latest,
            "clean": state.version <= latest and all(r["state"] in ("applied", "in baseline")
                                                     for r in rows),
            "migrations": rows,
            "backfills": [_backfill_entry(key, value) for key, value in state.backfills],
        }

    def verify(self):
        """Every problem with the files or the drift, as sentences; [] if clean."""
        try:
            migrations = self.migrations
        except RequestError as e:
            return list(e.problems) or [str(e)]
        problems = []
        for m in migrations + self._baselines:
            try:
                m.load()
            except MigrationError as e:
                problems.append(str(e))
        # A fresh build of files that do not load would only repeat their errors.
        schema_file = [] if problems or self.schema_file is None else self._schema_file_problems()
        if self.path is not None and not _database_exists(self.path):
            problems.append("database %s does not exist (check --db): drift cannot be checked"
                            % self.path)
        state = self._read_state()
        # What up() refuses besides drift (a database below a baseline whose
        # files are gone): verify, a CI gate, must not pass it.
        refusal = self._plan_up(state, None)[1]
        return problems + [text for _, text in _drift(self._report(state))] + (
            [refusal._text()] if refusal else []) + schema_file

    def up(self, to=None, dry_run=False, atomic=False, backup=False, strict=False, wait=None):
        """Apply pending migrations (up to version `to`); return their results.
        wait: for this many seconds, retry with back-off while another process
        holds the write lock past the busy timeout (workers starting together)."""
        _check_arguments("version", to=to)
        self._refuse_target(to)
        if wait is not None and _seconds("wait", wait):
            return _retrying_locked(lambda: self._up(to, dry_run, atomic, backup, strict), wait)
        return self._up(to, dry_run, atomic, backup, strict)

    def _refuse_target(self, to, records=()):
        """RequestError for a target `to` no file has (12 for 120, a file not
        yet pulled): up would stop at the one below it, or apply nothing, and
        down would roll that one back too, as if asked.  0 (no migration, as
        for mark 0) and a version applied (`records`), its file gone, are
        versions too."""
        if to is not None and to not in set(m.version for m in self.migrations).union(
                [0], records, *[[b.version] + list(b._covers or ()) for b in self._baselines]):
            raise RequestError("no migration file has version %r" % (to,), version=to)

    def _up(self, to=None, dry_run=False, atomic=False, backup=False, strict=False):
        """up(), to any version: a scratch database is built up to the one
        below a migration being proved."""
        with self._session(dry_run) as session:
            drift = _drift(self._report(session.state))
            _refuse_drift(drift)
            # Not a migration partly rolled back: this up mends it (applies it again).
            refused = [text for kind, text in drift if kind != "rolling-back"]
            if refused and strict:
                raise MigrationError(kind="drift", problems=refused,
                                     outcome="strict mode: nothing was applied")
            for _, text in drift:
                _log("warning", text)
            plan, refusal = self._plan_up(session.state, to)
            if refusal:
                raise refusal
            return self._execute(session, plan, "up", dry_run, atomic, backup)

    def _plan_up(self, state, to):
        """(what up(to) runs, None or the MigrationError why it cannot).  A
        database with nothing applied gets the newest baseline (up to `to`)
        instead of the files it holds.  Where a baseline's files are gone, a
        database cannot be built by the files across that gap: not one part-way
        below the baseline, nor a new one stopped (`to`) below it."""
        files, baselines = self.migrations, self._baselines
        applied = state.applied(files)
        fresh = not applied and not state.version
        plan = [m for m in files if (m.version not in applied or m.version == state.rolling_back)
                and (to is None or m.version <= to)]
        usable = [b for b in baselines if fresh and (to is None or b.version <= to)]
        start = usable[-1].version if usable else 0  # what a usable baseline builds
        if usable:
            plan = usable[-1:] + [m for m in plan if m.version > start]
        newest, versions = max(list(applied) + [state.version]), set(m.version for m in files)
        for b in baselines:
            # Refused even with no file above the baseline: the database
            # would stay below it, short of what it holds, while up succeeds.
            if 0 < newest < b.version and b.version not in versions and \
                    (to is None or to >= b.version):
                return plan, MigrationError(
                    "the database is at v%d, below the baseline %s (v%d), whose earlier files "
                    "are gone: a baseline applies only to a database with no migration applied; "
                    "restore the files above v%d up to v%d (from version control) to upgrade "
                    "this database" % (newest, b.filename, b.version, newest, b.version),
                    kind="behind-baseline", path=b.path, version=b.version,
                    outcome="nothing was applied")
            gone = sorted(v for v in b._covers or () if start < v <= to and v not in versions) \
                if fresh and to is not None and to < b.version else ()
            if gone:
                return plan, MigrationError(
                    "a new database cannot stop at v%d: the baseline %s (v%d) holds %s, whose "
                    "file%s gone; use --to %d or higher, or restore %s (from version control)"
                    % (to, b.filename, b.version, ", ".join("v%d" % v for v in gone),
                       "s are" if gone[1:] else " is", b.version, "them" if gone[1:] else "it"),
                    kind="behind-baseline", path=b.path, version=b.version,
                    outcome="nothing was applied")
        return plan, None

    def down(self, to=None, steps=1, dry_run=False, backup=False):
        """Roll back the newest `steps` migrations, or all above version `to`;
        return their results."""
        _check_arguments("version", to=to, steps=steps)
        if to is None and steps is not None and steps < 1:
            raise RequestError("down needs --steps/steps of 1 or more, or --to/to of 0 or more")
        with self._session(dry_run) as session:
            ahead = [text for kind, text in _drift(self._report(session.state)) if kind == "ahead"]
            if ahead:
                raise MigrationError(kind="ahead", problems=ahead)
            self._refuse_target(to, session.state.records)
            applied = sorted(session.state.applied(self.migrations), reverse=True)
            targets = [v for v in applied if v > to] if to is not None else applied[:steps or 1]
            by_version = {m.version: m for m in self.migrations}
            problems = ["v%d has no migration file%s" % (v, " (a baseline applied it, and a "
                                                       "baseline has no down)" * bool(
                            _applied_by_baseline(session.state.records.get(v))))
                        if v not in by_version
                        else "%s has no down (%s)" % (
                            by_version[v].filename, "no down(db)" if by_version[v].kind == "py"
                            else "an empty or no '-- migrate:down' section")
                        for v in targets if v not in by_version or not by_version[v].has_down]
            if problems:
                raise MigrationError("cannot roll back: " + "; ".join(problems), kind="no-down",
                                     problems=problems,
                                     outcome="nothing was rolled back")
            plan = [by_version[v] for v in targets]
            return self._execute(session, plan, "down", dry_run, False, backup)

    def mark(self, version=None, from_user_version=False):
        """Record every migration up to `version` as applied without running
        it.  from_user_version=True adopts a database a hand-rolled runner kept
        at PRAGMA user_version N (and never tracked here): versions 1..N, each
        of which must have a file.  Never done by up() on its own.  Returns
        the migrations it recorded now (a changed file's accepted checksum
        too), not those recorded already."""
        if from_user_version == (version is not None):
            raise RequestError("mark needs a version, or from_user_version=True "
                               "(--from-user-version), and not both")
        _check_arguments("version", version=version)
        if self.path is not None and not _database_exists(self.path):
            raise RequestError("database %s does not exist; mark adopts an existing database "
                               "(check --db)" % self.path, database=self.path)
        if from_user_version:
            version = self._user_version_to_adopt()
        files = [m for m in self.migrations if m.version <= version]
        # A version only a baseline has (its files deleted after the squash)
        # is marked as applying the baseline would record it.
        baseline = [b for b in self._baselines if b.version == version] \
            if version not in {m.version for m in files} else []
        if version < 0 or version and version not in {m.version for m in files + baseline}:
            raise RequestError("no migration file has version %d" % version,
                               version=version)
        if version < self.current_version:
            raise _mark_backwards(self.current_version, self._latest_version)
        # The run lock: a mark while another runner rolls back a
        # non-transactional migration would record versions above the one
        # that runner then unrecords, a hole in the history.
        with self._session(False) as session, \
                _run_lock(session.conn, self.busy_timeout) as made_since, \
                _transaction(session.conn) as conn:
            made_since()
            state = _read_state(conn, self.table)
            if from_user_version:  # again under the write lock: another process may have
                self._user_version_to_adopt(conn, state, version)
            records = _ensure_tracking(conn, self.table, state, self.migrations)
            # Again under the write lock: an `up` may have applied more since
            # the check above, and writing `version` would then put
            # schema_version below an applied migration.
            newest = max([state.version] + list(records))
            if version < newest:
                raise _mark_backwards(newest, self._latest_version)
            recorded = []
            for m in files:
                record = records.get(m.version)
                if record is None or record.checksum != m.checksum and \
                        not _applied_by_baseline(record):
                    if record is not None and record.checksum is not None:
                        _log("warning", "Accepting the changed file %s as applied", m.filename)
                    _write_record(conn, self.table, _Record(
                        m.version, m.name, m.checksum, record and record.applied_at or _utc_now(),
                        record and record.duration_ms))
                    recorded.append(m)
            for b in baseline:
                if b.version not in records:
                    _write_record(conn, self.table, _Record(
                        b.version, "(baseline)", _BASELINE_PREFIX + b.checksum, _utc_now(), None))
                    recorded.append(b)
            # A down that did not finish (at or below `version`, the newest):
            # marked, its effects are taken as all there.
            conn.execute("DELETE FROM %s WHERE key = ?" % _tracking_table(self.table),
                         (_ROLLING_BACK,))
            _write_version(conn, self.table, version)
        _log("info", "Marked migrations up to v%d as applied", version, logger="sqlmigrate.runner")
        return recorded

    def _user_version_to_adopt(self, conn=None, state=None, expected=None):
        """The PRAGMA user_version that mark(from_user_version=True) records."""
        if conn is None:
            with _using(self.connection if self.path is None else self.path, self.busy_timeout,
                        mode="ro") as conn:
                return self._user_version_to_adopt(conn, _read_state(conn, self.table))
        user_version = _query(conn, "PRAGMA user_version")[0][0]
        where = self.path or "the database"
        if state.has_metadata or state.has_history:
            raise RequestError("%s is tracked by sqlmigrate already (its %s table is at version "
                               "%d): --from-user-version adopts only a database that has no "
                               "tracking table; use mark V" % (where, self.table, state.version),
                               database=self.path, version=state.version)
        if expected is not None and user_version != expected:
            raise MigrationError("%s: user_version changed from %d to %d meanwhile; run again"
                                 % (where, expected, user_version), kind="changed-meanwhile",
                                 database=self.path)
        if user_version <= 0:
            raise RequestError("%s has PRAGMA user_version %d: there is nothing to adopt"
                               % (where, user_version), database=self.path)
        versions = set(m.version for m in self.migrations)
        # The first few only: a date-like user_version would list millions.
        missing = ["v%d" % v for v in itertools.islice((
            v for v in range(1, user_version + 1) if v not in versions), 11)]
        if missing:
            raise RequestError("%s has PRAGMA user_version %d, but no migration file has %s: "
                               "--from-user-version records versions 1..%d, each of which "
                               "needs its file" % (where, user_version, ", ".join(missing[:10]) +
                                                  " ..." * (len(missing) > 10), user_version),
                               database=self.path, version=user_version)
        return user_version

    def test(self, source=None):
        """Prove the migrations on scratch copies, never writing the database
        or the files: a fresh build with each down's round trip and generated
        rows that must survive the later ups; with `source` (a database file),
        also its pending migrations applied to a copy.  Returns the report as
        data (`test --json`); "ok" is False on any failure."""
        for m in self.migrations:
            m.load()  # a file that cannot load is an error before anything runs
        result = _MigrationTest(self).run()
        if self.schema_file is not None:
            result["failures"] += [_test_failure("schema-file", problem)
                                   for problem in self._schema_file_problems()]
            result["ok"] = result["ok"] and not result["failures"]
        if source is not None:
            result["from"] = _test_upgrade(
                self, source if _is_connection(source) else os.fspath(source))
            result["ok"] = result["ok"] and result["from"]["ok"]
        return result

    def lint(self, files=None, round_trip=False, to=None):
        """Check migrations for SQLite mistakes without writing the database:
        the pending ones (all without a database) up to version `to`, or
        `files`.  Returns the findings (code, level, path, line, statement,
        message, fix, allowed); `lint` exits 1 when an error-level one is not
        allowed.  round_trip: also run the round trips of test() (SM802)."""
        _check_arguments("version", to=to)
        return _lint(self, files, round_trip, to)

    def baseline(self, to, force=False):
        """Write NNN-baseline.sql (never over a file): a `-- migrate:baseline`
        line, then the schema as of version `to` from a fresh build; return
        its path.  Refused when migrations up to `to` change data or run
        outside a transaction (a baseline holds only the schema), unless `force`."""
        if "directory" not in self._sources:
            raise RequestError("baseline writes a file into a migration directory; it cannot "
                               "write into a package or a list of migrations")
        if to is not None and (not isinstance(to, int) or isinstance(to, bool)):
            raise RequestError("baseline needs a whole number for to=, not %r" % (to,))
        files, baselines = self.migrations, self._baselines
        versions = set(m.version for m in files + baselines)
        if to is None or to not in versions:
            raise RequestError("baseline needs to=V, the version of a migration file"
                               if to is None else "cannot write a baseline of v%d: no migration "
                               "file has that version (the newest is v%d)"
                               % (to, max(versions or [0])), version=to)
        for b in baselines:
            if b.version == to:
                raise RequestError("%s already exists; a baseline is never overwritten (delete "
                                   "it first to write it again)" % b.path, kind="bad-file",
                                   path=b.path, version=to)
        earlier = [b for b in baselines if b.version < to][-1:]  # what a fresh build uses
        since = earlier[0].version if earlier else 0  # checked then
        # The versions the new baseline holds: those the earlier one holds,
        # and the files after it.
        covers = set(m.version for m in files if since < m.version <= to or
                     earlier and m.version <= since and earlier[0]._stands_for(m.version))
        covers |= set([since]) - set([0]) | (earlier and earlier[0]._covers or set())
        losses = [loss for loss in (_baseline_loss(m) for m in files
                                    if since < m.version <= to) if loss]
        # Refused by the files alone before a build, which could fail first.
        conn = None if losses and not force else self._fresh_build(to=to)
        try:
            # The schema leaves the tracking tables out with what is on them:
            # an index or trigger of the migrations' there, it would not carry.
            losses += ["%s %s is on the tracking table %s, which a baseline leaves out"
                       % (kind, name, on) for kind, name, on in _query(
                           conn, "SELECT type, name, tbl_name FROM sqlite_master WHERE sql IS "
                           "NOT NULL AND type <> 'table' AND tbl_name COLLATE NOCASE IN (?, ?) "
                           "ORDER BY name", (self.table, self.table + "_migrations"))
                       ] if conn is not None else []
            if losses and not force:
                raise MigrationError("cannot write a baseline of v%d: it holds only the schema, "
                                     "and these migrations do more: %s; move their data work "
                                     "out, or write it anyway with --force (force=True)"
                                     % (to, "; ".join(losses)), kind="baseline-refused",
                                     problems=losses, version=to)
            # SQLite keeps comments inside a statement's text: a line there
            # that reads as a section marker would make a baseline that never
            # loads (nor lets any command load the directory), --force or not.
            for kind, name, sql in _query(conn, "SELECT type, name, sql FROM sqlite_master "
                                                "WHERE sql IS NOT NULL ORDER BY name"):
                marker = re.compile(_MARKER_RE).search(sql)
                if marker:
                    raise MigrationError(
                        "cannot write a baseline of v%d: the text of %s %s holds the line %r, "
                        "which a baseline would read as a section marker; rebuild that %s "
                        "without it in a migration first" % (to, kind, name,
                                                            marker.group(0).strip(), kind),
                        kind="baseline-refused", version=to)
            text = "-- migrate:baseline\n-- sqlmigrate baseline of: %s\n" % " ".join(
                map(str, sorted(covers))) + _schema_sql(conn, to, self.table)
        finally:
            if conn is not None:
                conn.close()
        width = max([m.filename.index("-") for m in files + baselines] + [3])
        path = os.path.join(self.directory, "%0*d-baseline.sql" % (width, to))
        try:  # an `up` listing the directory meanwhile must not apply half a baseline
            linked = _write_new_file(path, text.encode("utf-8"))  # bytes: "\n" everywhere
        except OSError as e:
            raise MigrationError("cannot write the baseline %s: %s" % (path, e.strerror),
                                 kind="bad-file", path=path, version=to)
        if not linked:
            raise RequestError("%s already exists; a baseline is never overwritten (delete "
                               "it first to write it again)" % path, kind="bad-file",
                               path=path, version=to)
        if losses:
            _log("warning", "%s does not carry the data effects of: %s", path, "; ".join(losses))
        return path

    # -- machinery ----------------------------------------------------------

    def _fresh_build(self, to=None, baselines=None):
        """A new in-memory database with the migrations up to `to` applied
        (with these baselines instead of the files' own, if given)."""
        conn = sqlite3.connect(":memory:", isolation_level=None)
        try:
            _scratch_runner(conn, self, baselines)._up(to)
        except BaseException:
            conn.close()
            raise
        return conn

    def _read_state(self):
        if self.connection is None and not _database_exists(self.path):
            return _TrackingState(exists=False)
        with _using(self.connection if self.path is None else self.path, self.busy_timeout,
                    mode="ro") as conn:
            return _read_state(conn, self.table)

    @contextmanager
    def _session(self, dry_run):
        """Validate the files, then read the state on a connection that can
        write only if something may need to: a dry run against a file that
        does not exist runs in memory, and nothing creates a file early."""
        self.migrations  # noqa: B018 - names are validated before any connection
        session, copy, crashed_wal = _Session(), None, False
        exists = self.connection is None and _database_exists(self.path)
        if self.connection is not None:
            session.conn = self.connection
            # Python 3.12's autocommit=False keeps a transaction open at all
            # times; leaving that mode commits it, as Python documents.  (A
            # closed connection raises here: a MigrationError like elsewhere.)
            try:
                open_transaction = self.connection.in_transaction
            except _DB.Error as e:
                raise _sqlite_failure(e, self.path)
            if open_transaction and _autocommit_mode(self.connection) is not False:
                raise RequestError("the connection has an open transaction; commit or roll "
                                   "it back before migrating")
        elif dry_run and exists and not _may_write(self.path):
            # A dry run changes nothing, but its migrations run in a transaction
            # it rolls back, which a file we may only read refuses: a copy.
            copy = _scratch_copy(self.path, self.busy_timeout)
            session.conn = copy.__enter__()
        elif exists:
            # A crashed writer's WAL must outlive the dry run's connection (a
            # witness, below); a WAL the dry run's own open creates must not.
            crashed_wal = dry_run and os.path.exists(_real_path(self.path) + "-wal")
            session.conn = _connect(self.path, self.busy_timeout, mode="rw")
        elif dry_run:
            session.conn = _connect(":memory:")
        try:
            if session.conn is None:
                session.state = _TrackingState(exists=False)
                yield session
            else:
                # A caller's connection in any mode gets explicit BEGIN/COMMIT
                # for the session and its own mode back afterwards.
                with _driver_session(session.conn), _explicit_transactions(session.conn):
                    # (A dry run of a database that does not exist: in memory.)
                    session.state = _read_state(session.conn, self.table) if exists or \
                        self.connection is not None else _TrackingState(exists=False)
                    yield session
        except _DB.Error as e:
            raise _sqlite_failure(e, self.path)
        finally:
            # A new database whose first transaction rolled back (or whose lock
            # wait timed out) stays behind as an empty file, on purpose: another
            # process may hold it open, waiting to fill it, and SQLite does not
            # notice that an empty file was unlinked under it, so its commits
            # would go to a file nobody can open again.  An empty file is a
            # valid empty database.
            if copy is not None:
                copy.__exit__(None, None, None)
            elif session.conn is not None and session.conn is not self.connection:
                witness = _wal_witness(self.path) if crashed_wal else None
                try:
                    session.conn.close()
                finally:
                    if witness is not None:
                        witness.close()

    def _execute(self, session, plan, direction, dry_run, atomic, backup_wanted):
        for m in plan:
            m.load()  # every file validated before the first one runs
        stepwise = [m.filename for m in plan if not m.transactional]
        if atomic and stepwise:
            raise MigrationError("--atomic cannot include non-transactional migrations: %s"
                                 % ", ".join(stepwise), kind="not-atomic")
        misplaced = self.schema_file is not None and self._schema_file_misplaced()
        if misplaced:
            raise RequestError(misplaced, kind="schema-file", path=self.schema_file)
        if not plan:
            if not session.state.exists:  # a mistyped path, most likely
                _log("info", "database %s does not exist; with nothing to %s, it was not "
                     "created", self.path, "apply" if direction == "up" else "roll back")
            elif self.schema_file is not None and not dry_run and session.conn is not None \
                    and _schema_file_version(self.schema_file) not in (
                        None, session.state.version):
                # A run killed between its COMMIT and this rewrite left the
                # old file, which no later run would have rewritten.
                self._rewrite_schema_file(session.conn)
            return []
        if self.schema_file is not None and not dry_run:
            _check_schema_file(self.schema_file)  # before any change to the database
        if session.conn is None:  # a new database file, created only now
            if self.path == ":memory:":
                # SQLite's name for a database that ends with its connection:
                # the run would report migrations applied to nothing that lasts.
                raise RequestError("%s is an in-memory database, gone when this run ends; "
                                   "give a database file path"
                                   % self.path, kind="bad-database", database=self.path)
            # A database made under the name of another one's journal would be
            # taken for it, found not valid and deleted when that one opens
            # (its -shm overwritten; its lock file deleted by hand, as allowed).
            # Only beside such a database: "notes-journal" alone is a name.
            for suffix in _JOURNAL_SUFFIXES + (_RUN_LOCK_SUFFIX,):  # (see _files_beside)
                if self.path.endswith(suffix) and len(self.path) > len(suffix) and \
                        os.path.isfile(self.path[:-len(suffix)]):
                    raise RequestError(
                        "%s is the name of a file SQLite (or sqlmigrate) keeps beside database "
                        "%s: a database made there would be taken for that file and lost; "
                        "check --db"
                        % (self.path, self.path[:-len(suffix)]), kind="bad-database",
                        database=self.path)
            session.conn = _connect(self.path, self.busy_timeout, mode="rwc")
        elif backup_wanted and not dry_run:
            # A caller's connection: the default name beside its file (an
            # in-memory database is refused rather than silently not copied).
            # A path: its directory, where the default name is taken anew when
            # another process starting together took it meanwhile.
            dest = None if self.path is None else os.path.dirname(os.path.abspath(self.path))
            _log("info", "Backed up the database to %s",
                 backup(session.conn, dest, self.busy_timeout, self.table))
        conn, done = session.conn, []
        # A dry run is one transaction rolled back at the end, like an
        # --atomic run that is never committed.
        whole_run = "dry run" if dry_run else "--atomic run" if atomic else None
        # Read before anything runs: tables a failed first migration made
        # itself (outside a transaction) must not read as a database to adopt.
        adoption = _adoption_hint(conn, self.table) if direction == "up" and \
            not session.state.has_metadata else None
        # The connection's settings before the run, which each migration's
        # are put back to (see _CONNECTION_PRAGMAS): read once, as nothing
        # between two migrations changes them.
        settings = _connection_settings(conn)
        try:
            # An --atomic run changes the history too, in one transaction that
            # holds no non-transactional migration (refused above): it waits
            # for one another runner has in flight, as a transactional one does.
            with _rollback_journal(conn, run=True), \
                    _run_lock(conn, self.busy_timeout, wanted=whole_run == "--atomic run") \
                    as made_since, _write_transaction(conn, whole_run) as check_fk:
                made_since()
                for m in plan:
                    try:
                        # Every migration, not only non-transactional ones:
                        # one that changes the history (a down, an up above)
                        # while a non-transactional one runs would leave a
                        # hole when that one is recorded (or unrecorded).
                        with _run_lock(conn, self.busy_timeout, m, direction,
                                       wanted=not whole_run) as made_since:
                            result = self._apply(conn, m, direction, whole_run, check_fk,
                                                 settings, made_since)
                    except _DB.Error as e:
                        failure = self._database_failure(conn, e, whole_run, m, direction)
                        if _sqlite_kind(e) == "locked" and done and not whole_run:
                            failure = _still_locked(_sqlite_failure(e, self.path), done)
                        raise failure
                    if result:
                        done.append(result)
                        if not whole_run:
                            self.progress("done", result, direction)  # committed
                if dry_run:
                    raise _DryRunRollback()
        except _DryRunRollback:
            return done
        except _DB.Error as e:  # the whole run's BEGIN or COMMIT
            raise self._database_failure(conn, e, whole_run)
        except MigrationError as failure:
            _log_schema_of(conn, failure.tables)
            if failure.kind == "foreign-keys" and _query(conn, "PRAGMA foreign_key_check"):
                # Still there once it is rolled back (each migration committed
                # before it passed this check): not the migration's doing.
                failure.hint = "there before %s ran: fix them first; PRAGMA foreign_key_check " \
                               "lists them" % os.path.basename(failure.path or "it")
            if adoption and not done and failure.kind == "migration-failed" and not failure.hint:
                failure.hint = adoption
            if done and not whole_run:  # those before the failure were committed
                if failure.kind != "locked":  # (a locked one says so already)
                    failure.outcome = "; ".join(filter(None, (failure.outcome, _committed(done))))
                self._rewrite_schema_file(conn, failure)
            raise
        finally:
            if whole_run:  # its transaction has ended: what SQLite refused inside it too
                _put_back_connection_settings(conn, settings, False)
        for result in done if atomic else ():
            self.progress("done", result, direction)
        if done:
            self._rewrite_schema_file(conn)
        return done

    def _database_failure(self, conn, error, whole_run, m=None, direction=None):
        """A database error outside a migration's own code (its COMMIT or its
        record meeting a full disk, an I/O error or a lock) as one naming the
        migration in flight and what is left; a lock error stays as it is."""
        kind = _sqlite_kind(error)
        if kind != "connection-lost" and conn.in_transaction:
            # SQLite rolls back itself after a failed write, but a COMMIT that
            # met a reader's lock leaves the transaction open: a caller's
            # connection would keep the lock and the migration, which its next
            # commit would apply unrecorded by us.
            try:
                conn.execute("ROLLBACK")
            except _DB.Error:
                pass  # a connection that cannot roll back is closed or lost
        if kind == "locked" or m is None and whole_run is None:
            return error
        failure = _sqlite_failure(error, self.path)
        if m is not None:
            failure.path, failure.version, failure.direction = m.path, m.version, direction
        if kind == "connection-lost":  # its message says what may have happened
            return failure
        failure.outcome = _failure_outcome(whole_run, m, direction)
        return failure

    def _rewrite_schema_file(self, conn, failure=None):
        if self.schema_file is None:
            return
        try:
            _write_schema_file(self.schema_file, _schema_sql(
                conn, _read_state(conn, self.table).version, self.table))
        except (OSError,) + _DB.Error as e:  # _DB.Error is a tuple: one level, or TypeError
            error = MigrationError(
                "the database was changed, but the schema file %s could not be written (%s): "
                "write it with `schema --sql > FILE`" % (self.schema_file, e),
                kind="schema-file", path=self.schema_file, cause=e)
            if failure is None:
                raise error
            _log("warning", "%s", error)  # the migration's failure is the error to show

    def _schema_file_misplaced(self):
        """Why the schema file must not be where it is, or None: in the
        migration directory, under a name discovery reads (the path's own, or
        its link's target's), it would be read as a migration file; the
        database itself, which it would replace, or one of its journal files,
        which SQLite would take for a crashed writer's and delete; or the run
        lock file."""
        if self.path is not None and self.path != ":memory:":
            if os.path.realpath(self.schema_file) in _files_beside(self.path) | set([
                    os.path.realpath(self.path)]):
                return ("the schema file %s is the database %s or one of its journal or lock "
                        "files: writing it would destroy one of them; choose another path"
                        % (self.schema_file, self.path))
        if "directory" not in self._sources:
            return None
        directory = os.path.realpath(self.directory)
        own_folder, own_name = os.path.split(os.path.abspath(self.schema_file))
        for folder, name in ((os.path.realpath(own_folder), own_name),
                             os.path.split(os.path.realpath(self.schema_file))):
            if folder == directory and _read_as_migration(name):
                return ("the schema file %s is in the migration directory %s, where it would be "
                        "read as a migration file: put it elsewhere (e.g. beside the directory), "
                        "or start its name with '_'" % (self.schema_file, self.directory))
        return None

    def _schema_file_problems(self):
        misplaced = self._schema_file_misplaced()
        if misplaced:
            return [misplaced]
        try:
            with open(self.schema_file, "rb") as f:
                text = f.read().decode("utf-8")
        except FileNotFoundError:
            return ["schema file %s does not exist: write it with `schema --sql > FILE` on an "
                    "up-to-date database (up writes it only when it changes the database)"
                    % self.schema_file]
        except (OSError, UnicodeError) as e:
            return ["cannot read the schema file %s (%s)" % (self.schema_file, e)]
        try:
            conn = self._fresh_build()
        except MigrationError as e:
            return ["a fresh build of the migrations failed, so the schema file %s cannot be "
                    "checked: %s" % (self.schema_file, e)]
        try:
            built = _schema_sql(conn, _read_state(conn, self.table).version, self.table)
        finally:
            conn.close()
        # CRLF and LF line ends are the same schema: the file's line ends are
        # git's business (core.autocrlf checks it out with CRLF on Windows).
        if built.replace("\r\n", "\n") == text.replace("\r\n", "\n"):
            return []
        import difflib
        return ["schema file %s is not what a fresh build of the migrations gives (run up, or "
                "`schema --sql > FILE` on an up-to-date database):\n%s" % (
                    self.schema_file, "\n".join(difflib.unified_diff(
                        text.splitlines(), built.splitlines(), self.schema_file, "fresh build",
                        lineterm="")))]

    def _apply(self, conn, m, direction, whole_run, check_fk, settings, made_since):
        """Run and record m; its result, or None if another process did it
        meanwhile (re-read under the write lock).  settings: the connection's
        before the run, put back after m; made_since: see _run_lock."""
        if whole_run == "dry run" and not m.transactional:
            _log("info", "dry run: v%d %s is non-transactional; not run", m.version, m.name,
                 logger="sqlmigrate.runner")
            return _Result(m, direction)
        # The settings are put back as soon as m's body ends (_run_body);
        # those SQLite refuses to set inside a transaction, once it has ended
        # (left).
        left, failed, tracking = {}, False, _tracking_table(self.table)
        try:
            with _write_transaction(conn, not whole_run) as check_fk_here:
                applied, newest = _history_under_lock(conn, self.table, m.version,
                                                      self.migrations)
                # An up of m still applied: its down did not finish.
                again = bool(applied) and direction == "up" and \
                    _rolling_back(conn, self.table, m.version)
                if bool(applied) != (direction == "down") and not again:
                    _log("info", "v%d was %s by another process meanwhile; skipped", m.version,
                         "applied" if direction == "up" else "rolled back")
                    return None
                made_since()  # before m changes the history
                if whole_run != "dry run":  # a dry run records no non-transactional migration
                    self._check_order(m, direction, newest, whole_run, again)
                if m.transactional:
                    result, left = self._run_body(conn, m, direction, whole_run,
                                                  check_fk or check_fk_here, settings)
                    # A down ends the mark too: its file may have been made
                    # transactional since the non-transactional down was cut short.
                    self._record(conn, result, again or direction == "down", whole_run)
                    return result
                if direction == "down":  # until it is recorded: see _ROLLING_BACK
                    conn.execute("INSERT OR REPLACE INTO %s (key, value) VALUES (?, ?)"
                                 % tracking, (_ROLLING_BACK, str(m.version)))
            with _connection_kept_as_it_was(conn, m, direction):
                result, left = self._run_body(conn, m, direction, None, False, settings)
            with _transaction(conn):
                _history_under_lock(conn, self.table, m.version, self.migrations)  # tables exist
                self._record(conn, result, True)
            return result
        except BaseException:
            failed = True
            raise
        finally:
            if failed:  # m's may not have been put back: all, after its rollback
                left = settings
            if left:  # after m's transaction; a failure's own error is not hidden
                left = _put_back_connection_settings(conn, left, not failed)
                if left and not failed:  # inside an --atomic run's or a dry run's transaction
                    _log("warning", "v%d set PRAGMA %s, which SQLite cannot set back inside "
                         "the run's transaction: the later migrations of the run get it too "
                         "(set back when the run ends)", m.version, ", ".join(sorted(left)))

    def _check_order(self, m, direction, newest, whole_run, again=False):
        """The plan was made before this process held the write lock; another
        process may have applied or rolled back migrations since.  Just before
        m runs, under the lock: m must still be the newest applied (down, or
        an up `again` after a down that did not finish), or go right above the
        newest applied (up), else the history would get a hole.  Refuse rather
        than guess what the request meant now."""
        # A baseline goes only where nothing is applied: there is no "below".
        below = [f.version for f in self.migrations if f.version < m.version and not m.baseline]
        if (direction == "down" or again) and newest <= m.version or direction == "up" and \
                newest < m.version and (newest >= below[-1] if below else not
                                        (m.baseline and newest)):
            return
        raise MigrationError(
            "cannot %s %s: another process changed the database meanwhile (%s); check status "
            "and run again" % ("apply" if direction == "up" else "roll back", m.filename,
                               "v%d was applied above it" % newest if newest > m.version
                               else "v%d below it was rolled back" % below[-1] if below
                               else "v%d was applied meanwhile" % newest),
            kind="changed-meanwhile", path=m.path, version=m.version, direction=direction,
            outcome="the whole %s was rolled back" % whole_run if whole_run else
            "nothing more was %s" % ("applied" if direction == "up" else "rolled back"))

    def _run_body(self, conn, m, direction, whole_run, check_fk, settings):
        """Run m's up or down; return its result and the connection settings
        SQLite refused to put back (as `settings`) inside the transaction.
        whole_run: the transaction holding the whole run ("--atomic run",
        "dry run"), if any."""
        db = _MigrationConnection(conn, m.transactional, lambda table, copied, total, **more:
                                  self.progress("copy", m, direction, table=table, copied=copied,
                                                total=total, **more), _BackfillOwner(
                                      self.table, m.version, direction, m.checksum), self._scratch,
                                  self._registered)
        driver, statements = _driver(conn), []
        factories = [name for name in ("row_factory", "text_factory")
                     if getattr(driver, "has_" + name)]
        saved_factories = [getattr(conn, name) for name in factories]
        # Without a trace callback, the statements the migration ran through
        # db (the proxy records them): the same text, less trigger programs.
        # Not on a caller's connection: sqlite3 cannot read its own trace
        # callback back, so ours would replace it for good.
        traced = whole_run == "dry run" and driver.has_set_trace_callback and \
            (self.connection is None or self._scratch)

        def trace(sql):
            # Skip trigger sub-programs and the repeats some Pythons report
            # when SQLite re-prepares a statement.
            if not db._probing and not _traced_trigger_program(sql) and \
                    (not statements or statements[-1] != sql):
                statements.append(sql)

        self.progress("start", m, direction)
        started = time.perf_counter()
        try:
            if traced:
                conn.set_trace_callback(trace)
            with db._guarding():
                m.run(db, direction)
        except BaseException as e:  # exit() in a migration is a failure, not a stop
            if isinstance(e, KeyboardInterrupt):  # Ctrl-C: an interruption, rolled back as one
                raise
            raise _migration_failure(m, direction, e, db, self.path,
                                     whole_run or m.transactional)
        finally:
            if traced:
                conn.set_trace_callback(None)
            db._close_cursors()
            for name, saved in zip(factories, saved_factories):
                setattr(conn, name, saved)
            duration_ms = (time.perf_counter() - started) * 1000.0
            self.progress("end", m, direction)
        # Before the checks and the record (query_only would refuse it); not
        # where the authorizer saw no PRAGMA prepared (SQLite re-prepares a
        # cached statement once an authorizer is set, so it sees every one).
        left = {} if db._no_pragma else _put_back_connection_settings(conn, settings, False)
        shadowing = _shadowing_tracking(conn, self.table)  # after the trace: not the migration's
        if shadowing is not None:
            raise _migration_failure(m, direction, shadowing, db, self.path,
                                     whole_run or m.transactional)
        if m.transactional and not conn.in_transaction:
            raise MigrationError("%s ended the runner's transaction (COMMIT or VACUUM?); set "
                                 "transaction = False for such a migration" % m.path,
                                 kind="transaction-ended", path=m.path, version=m.version)
        if check_fk:
            _check_foreign_keys(conn, path=m.path, version=m.version, outcome=(
                "the whole %s was rolled back" % whole_run if whole_run
                else "the migration was rolled back"))
        return _Result(m, direction, duration_ms, None if whole_run != "dry run" else
                       list(statements) if traced else list(db.executed)), left

    def _record(self, conn, result, rolling_back=False, whole_run=None):
        """Record (or unrecord) what m did; rolling_back: and end its mark as
        being rolled back (_ROLLING_BACK), if any."""
        try:
            self._write_history(conn, result, rolling_back)
        except MigrationError as failure:  # a trigger skipped a write (_written)
            m = result.migration
            failure.path, failure.version, failure.database = m.path, m.version, self.path
            failure.outcome = _failure_outcome(whole_run, m, result.direction)
            raise

    def _write_history(self, conn, result, rolling_back):
        m, history = result.migration, _tracking_table(self.table + "_migrations")
        if result.direction == "up":
            # A baseline records each version it stands for (those with a file
            # now, and its own), named after the file, its checksum marked as its.
            names = dict((f.version, f.name) for f in self.migrations
                         if m.baseline and f.version <= m.version and m._stands_for(f.version))
            names.setdefault(m.version, "(baseline)" if m.baseline else m.name)
            for version in sorted(names):
                _write_record(conn, self.table, _Record(
                    version, names[version], _BASELINE_PREFIX * m.baseline + m.checksum,
                    _utc_now(), round(result.duration_ms, 3) if version == m.version else None))
        else:
            _written(conn.execute("DELETE FROM %s WHERE version = ?" % history, (m.version,)),
                     self.table + "_migrations")
        if not m.transactional:  # its backfills' positions, kept until now (see backfill)
            conn.execute("DELETE FROM %s WHERE key >= ? AND key < ?" % _tracking_table(
                self.table), _backfill_keys(m.version))
        if rolling_back:
            conn.execute("DELETE FROM %s WHERE key = ?" % _tracking_table(self.table),
                         (_ROLLING_BACK,))
        # Positions no run can rightly resume any more, whatever left them (a
        # kill): an up's of a version above the one now current (its rows may
        # be gone with a rolled-back table), a down's below it.
        current = _query(conn, "SELECT " + _newest_recorded(self.table))[0][0]
        for (key,) in _query(conn, "SELECT key FROM %s WHERE key >= ? AND key < ?" % (
                _tracking_table(self.table)), _backfill_keys()):
            of = _parse_backfill_key(key)
            if of.version is not None and (of.version > current or of.version < current and
                                           of.direction == "down"):
                conn.execute("DELETE FROM %s WHERE key = ?" % _tracking_table(self.table),
                             (key,))
        _log("info", "%s v%d: %s (%.0f ms)", "Applied" if result.direction == "up" else
             "Rolled back", m.version, m.name, result.duration_ms, logger="sqlmigrate.runner")
        _write_version(conn, self.table)


def _baseline_loss(m):
    """Why a baseline (schema only) would not carry what migration m does, or None."""
    if m.kind == "py":
        return "%s is a Python migration (its effects may be more than schema)" % m.filename
    if not m.load().transactional:
        return "%s is non-transactional (e.g. a journal mode or VACUUM)" % m.filename
    verbs = sorted(set(filter(None, map(_data_verb, _split_sql(m._up_sql)))))
    return "%s changes data (%s)" % (m.filename, ", ".join(verbs)) if verbs else None


@contextmanager
def _write_transaction(conn, wanted=True):
    """When wanted: a write transaction with foreign keys off where that works
    (outside a transaction); yields whether they must be checked before COMMIT."""
    if not wanted:
        yield False
        return
    with _foreign_keys_off_outside_transaction(conn) as check_fk, _transaction(conn):
        yield check_fk


# Beside the database file, a lock (_RUN_LOCK_SUFFIX) a runner holds while it
# applies a non-transactional migration: one that commits as it goes cannot
# run under the database's write lock, so without it a second runner starting
# meanwhile would find it not yet recorded and run it again.
@contextmanager
def _run_lock(conn, busy_timeout, m=None, direction=None, wanted=True):
    """Hold the run lock of conn's database file (waiting up to busy_timeout
    seconds, then failing as locked) while m runs: taken before the check
    that m is still to run and kept until it is recorded, so a second runner
    waits, then finds it done.  Without m: around a change to the history
    that runs no non-transactional migration (mark, an --atomic run), which
    only waits for one in flight.  It is SQLite's own lock on a file of its
    own (an exclusive transaction that writes nothing), released by the OS
    when its process dies: a runner killed meanwhile leaves no lock behind.
    None for a database in memory (no second process) or on a server (no
    local file).

    Only a non-transactional m makes the file: a database without such
    migrations gets none.  So the caller calls what this yields once it holds
    the database's write lock: a lock file made since it looked (the very
    first non-transactional run, which reads the history only after taking
    it) is taken then, or fails as locked while that run goes on: going ahead
    would change the history beneath it."""
    path = "" if not wanted or _driver(conn).server else _main_file(conn)
    if not path:
        yield lambda: None
        return
    # The real file's name: every spelling of its path (a link) meets here.
    name, held = os.path.realpath(path) + _RUN_LOCK_SUFFIX, []
    creates = m is not None and not m.transactional

    def take(timeout):
        lock = None
        try:
            if creates:
                _create_like(name, path)
            if os.path.samefile(name, path):  # locking it would lock out the runner itself
                raise OSError(0, "it is a link to the database itself")
            lock = sqlite3.connect(_uri(name, "rw"), uri=True, timeout=timeout,
                                   isolation_level=None)
            # It writes nothing, so it needs no journal file: none left by a
            # kill.  (Switching needs a lock on the file too: the busy timeout
            # applies here first, and a wait ends as locked, as below.)
            lock.execute("PRAGMA journal_mode = MEMORY")
            lock.execute("BEGIN EXCLUSIVE")
        except (OSError, sqlite3.Error) as e:
            if lock is not None:
                lock.close()
            if isinstance(e, sqlite3.Error) and _sqlite_kind(e) == "locked":
                raise  # another runner is applying one: as when it holds the database's lock
            # Never run without it: one present but unusable may be held.
            raise MigrationError(
                "cannot take the lock file %s (%s), which non-transactional migrations run "
                "under; check that the database's directory and that file are writable"
                % (name, getattr(e, "strerror", None) or e), kind="cannot-open",
                database=path, path=m and m.path, version=m and m.version,
                direction=direction, outcome="%s was not run" % m.filename if m
                else "nothing was changed")
        held.append(lock)

    def made_since():
        if not held and os.path.lexists(name):
            take(0)  # not waiting: this runner holds the database's write lock

    if creates or os.path.lexists(name):
        take(busy_timeout)
    try:
        yield made_since
    finally:
        for lock in held:
            lock.close()


def _create_like(name, model):
    """Create file `name`, if absent, with the permission bits of file
    `model` and, when running as root, its owner: as SQLite does for a
    database's journal files, else a run as root would leave a file that
    the database's own user cannot open."""
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        model = os.stat(model)
        os.chmod(name, stat.S_IMODE(model.st_mode))
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # owners are POSIX's
            os.chown(name, model.st_uid, model.st_gid)
    finally:
        os.close(fd)


# Connection-level pragmas: SQLite neither rolls them back nor keeps them in
# the file, so one a migration sets lives as long as the connection: into every
# later migration of the run, and into a caller's own connection afterwards
# (synchronous OFF: COMMITs that skip fsync; ignore_check_constraints: rows
# the schema's CHECKs forbid; query_only: the migration's own record refused,
# then a read-only caller; max_page_count: later writes failing as a full
# disk; wal_autocheckpoint 0: a WAL that grows unchecked; locking_mode
# EXCLUSIVE: the file locked against every other process; full_column_names:
# other names in a caller's cursor.description).  They are read before the
# run and set back after each migration that may have changed them.  One
# this SQLite lacks reads as no row (query_only before 3.8.0,
# legacy_alter_table before 3.25, trusted_schema before 3.31) and is left
# alone.  "main.": a per-database setting, kept for the main database.
# Not here: foreign_keys (_write_transaction and _connection_kept_as_it_was
# keep it), defer_foreign_keys (SQLite clears it at every COMMIT and
# ROLLBACK), and the file's own settings (journal_mode WAL, user_version,
# application_id, auto_vacuum, page_size...), which are the migration's to
# change.  case_sensitive_like cannot be read back: what LIKE answers for
# 'a' LIKE 'A' stands for it (_LIKE_PROBE).
_CONNECTION_PRAGMAS = ("main.synchronous", "ignore_check_constraints", "query_only",
                       "writable_schema", "recursive_triggers", "reverse_unordered_selects",
                       "legacy_alter_table", "trusted_schema", "cell_size_check",
                       "main.secure_delete", "temp_store", "main.cache_size", "automatic_index",
                       "busy_timeout", "read_uncommitted", "main.max_page_count",
                       "wal_autocheckpoint", "main.journal_size_limit", "cache_spill",
                       "locking_mode", "main.locking_mode", "full_column_names",
                       "short_column_names")
_LIKE_PROBE = "SELECT 'a' LIKE 'A'"


def _connection_settings(conn, names=_CONNECTION_PRAGMAS + ("case_sensitive_like",)):
    """{pragma: its value} of `names` on this connection (see
    _CONNECTION_PRAGMAS), less those this SQLite lacks and those the
    driver's server refuses to set (they must not be sent)."""
    refused, settings = _driver(conn).refused_pragmas, {}
    for name in names:
        if name.rpartition(".")[2] in refused:
            continue
        try:
            rows = _query(conn, _LIKE_PROBE if name == "case_sensitive_like" else "PRAGMA " + name)
        except _DB.Error:  # a like() of the caller's own that raises: not known, not restored
            continue
        if rows:
            settings[name] = rows[0][0]
    return settings


def _put_back_connection_settings(conn, saved, strict):
    """Set back each of `saved` ({pragma: value}) that is no longer as it was;
    the ones SQLite refused to set ({pragma: value}), e.g. temp_store inside
    a transaction that has used temporary storage, to be put back once it
    ends.  strict: refused ones outside a transaction raise; else nothing
    raises (after a failed migration the file may refuse even a read)."""
    left, unlocked = {}, False
    # A setting that cannot even be read (a damaged file) is skipped there.
    for name, now in _connection_settings(conn, tuple(saved)).items():
        was = saved[name]
        if now == was:
            continue
        # case_sensitive_like = OFF brings back the built-in, case-insensitive
        # LIKE (for ASCII), which answers 1 for 'a' LIKE 'A'.
        # locking_mode reads as a word (NORMAL releases EXCLUSIVE's lock at
        # the file's next use, below); unqualified, it is the mode of
        # databases attached later.
        value = (("OFF" if was else "ON") if name == "case_sensitive_like" else
                 was if name.endswith("locking_mode") else str(int(was)))
        try:
            conn.execute("PRAGMA %s = %s" % (name, value))
            if name == "main.locking_mode" and not conn.in_transaction and \
                    _connection_settings(conn, (name,)).get(name) != was and \
                    "journal_mode" not in _driver(conn).refused_pragmas and \
                    _query(conn, "PRAGMA main.journal_mode")[0][0].lower() == "wal":
                # A connection that entered WAL mode in EXCLUSIVE locking
                # mode keeps the wal-index in its own memory and ignores
                # NORMAL, silently, until it leaves WAL: it would keep the
                # file locked against every other process.  Out of WAL and
                # back (the file stays as the migration left it).
                _query(conn, "PRAGMA main.journal_mode = DELETE")
                conn.execute("PRAGMA %s = %s" % (name, value))
                _query(conn, "PRAGMA main.journal_mode = WAL")
            unlocked = unlocked or name == "main.locking_mode"
        except _DB.Error:
            # dqlite answers a setter with an error though it took effect (as
            # in _set_pragma): the value read back decides.
            if _connection_settings(conn, (name,)).get(name) == was:
                continue
            if strict and not conn.in_transaction:
                raise
            left[name] = was
    if unlocked and not conn.in_transaction:
        # A read, so that SQLite lets the file go now: after a failed
        # migration nothing of ours uses it again, and until the caller's
        # connection did, every other process would stay locked out.  Not
        # raised: the migration is recorded (or failed) by now; the lock
        # then goes at the connection's next use.
        try:
            _query(conn, "PRAGMA main.schema_version")
        except _DB.Error:
            pass
    return left


@contextmanager
def _connection_kept_as_it_was(conn, m, direction):
    """Around a non-transactional migration: foreign keys off, then the
    connection as it was: a transaction it left open rolled back (an error:
    its work would be lost on close, or stay pending on a caller's), databases
    it attached detached, foreign_keys as before (after the rollback: the
    pragma is a no-op inside a transaction), and a rollback journal if it
    turned it OFF or to MEMORY (the connection's, not the file's, setting):
    later migrations need one to roll back."""
    fk_was_on = _foreign_keys_enabled(conn)
    attached = set(row[1] for row in _query(conn, "PRAGMA database_list"))
    journal = None if "journal_mode" in _driver(conn).refused_pragmas else \
        _query(conn, "PRAGMA main.journal_mode")[0][0]
    left_open, failed = False, True
    try:
        if fk_was_on:  # inside the try: restored even if the pragma itself raises
            _set_pragma(conn, "foreign_keys", False)
        yield
        left_open, failed = conn.in_transaction, False
    except MigrationError as failure:
        if journal is not None:
            _say_if_damaged(conn, failure)
        raise
    finally:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for row in _query(conn, "PRAGMA database_list"):
                if row[1] not in attached and row[1] not in ("main", "temp"):
                    conn.execute("DETACH DATABASE " + _quote_identifier(row[1]))
            if _foreign_keys_enabled(conn) != fk_was_on:
                _set_pragma(conn, "foreign_keys", fk_was_on)
            if journal is not None and journal.lower() not in _UNSAFE_JOURNALS and \
                    _query(conn, "PRAGMA main.journal_mode")[0][0].lower() in _UNSAFE_JOURNALS:
                _query(conn, "PRAGMA main.journal_mode = " + journal)
        except _DB.Error:
            # After a failed migration the file may refuse even these (damaged
            # under journal_mode OFF): its own failure says what happened.
            if not failed:
                raise
    if left_open:
        raise MigrationError(
            "%s (%s) left a transaction open (BEGIN without COMMIT): it was rolled back and "
            "the migration was not recorded; statements it ran before that BEGIN stay, so "
            "the database may be partly changed; end the migration's transaction with COMMIT"
            % (m.path, direction), kind="transaction-ended", path=m.path, version=m.version,
            direction=direction)


def _say_if_damaged(conn, failure):
    """Under journal_mode OFF SQLite cannot undo a statement that failed part
    way (a full disk, an I/O error): the pages it wrote stay, and the file's
    b-tree may be damaged, which "may be partly changed" does not say."""
    try:
        if _query(conn, "PRAGMA main.journal_mode")[0][0].lower() != "off":
            return
        found = [row[0] for row in _query(conn, "PRAGMA main.quick_check(3)")]
    except _DB.Error as e:
        # sqlite3 raises its bare DatabaseError for SQLITE_CORRUPT and NOTADB
        # (too damaged to check); anything else (busy, an I/O error): not
        # checked, and the failure says what it knows.
        if type(e) is not sqlite3.DatabaseError:
            return
        found = [str(e)]
    if found != ["ok"]:
        failure.outcome = "%sthe database is damaged (PRAGMA quick_check: %s): journal_mode " \
            "OFF cannot undo a failed statement; restore the database from a backup" % (
                failure.outcome + "; " if failure.outcome else "",
                " ".join("; ".join(map(str, found)).split())[:300])


def _shadowing_tracking(conn, table):
    """A MigrationError if a temporary table or view has a tracking table's
    name, else None: SQLite resolves an unqualified name to temp before main,
    so the runner would record the migration in it, lost with the connection,
    and report it applied.  (Compared in Python: lower() may be redefined.)"""
    if "temp" not in [row[1] for row in _query(conn, "PRAGMA database_list")]:
        return None  # no temporary database yet (reading its schema would open one)
    names = dict((_key(name), name) for name in (table, table + "_migrations"))
    for kind, name in _query(conn, "SELECT type, name FROM sqlite_temp_master "
                                   "WHERE type IN ('table', 'view')"):
        if _key(name) in names:
            return MigrationError(
                "a temporary %s named %s exists, which would hide the tracking table %s from "
                "the runner: the migration would be recorded in it and lost; drop it before "
                "up()/down() returns, or name it otherwise" % (kind, name, names[_key(name)]),
                kind="refused-statement", tables=[name])
    return None


def _mark_backwards(current, latest):
    # down rolls back only versions it has files for: to a database above
    # every file (which it refuses), "use down" would be no advice.
    return MigrationError("the database is at version %d already; mark only moves forward (%s)"
                          % (current, "use down to go back" if current <= latest else
                             "and down needs the files of v%d and above, the newest migration "
                             "file is v%d: wrong --dir, or files missing?" % (latest + 1, latest)),
                          kind="mark-backwards", version=current)


class _Session(object):
    conn = state = None


def _scratch_runner(conn, migrator, baselines=None, progress=None):
    """A Migrator on a connection sqlmigrate made for test, lint or a fresh
    build, with `migrator`'s files (loaded once) and its baselines or those
    given.  Its migrations may not ATTACH a file: that would write outside
    the scratch copy (_MigrationConnection._authorize)."""
    runner = Migrator(conn, table=migrator.table, progress=progress, **migrator._sources)
    runner._migrations = migrator.migrations
    runner._baselines = migrator._baselines if baselines is None else baselines
    runner._scratch = True
    return runner


class _DryRunRollback(Exception):
    pass


def _migration_failure(m, direction, error, db, database, rolled_back):
    """The MigrationError for an exception m's up/down raised on `db`.
    rolled_back: the whole run's name, True (m's transaction) or False."""
    if isinstance(error, _DB.Error) and db.refused is not None:
        error = db.refused.with_traceback(error.__traceback__)  # for the line
    if isinstance(error, MigrationError) and error.kind == "transaction-ended" and error.outcome:
        rolled_back = False  # the statement itself ended the transaction: nothing to roll back
    kind = _sqlite_kind(error) if isinstance(error, _DB.Error) else None
    if kind in ("read-only", "not-a-database", "cannot-open"):
        failure = _sqlite_failure(error, database)  # the database, not the migration, is at fault
        failure.path, failure.version = m.path, m.version
        return failure
    line = _error_line(error, m.path) if m.kind == "py" else "?"
    cause = ("called exit (sys.exit(%r)); a migration fails by raising an exception" % (
        error.code,) if isinstance(error, SystemExit) else "failed: " + _exception_text(error))
    failure = MigrationError(
        kind="migration-failed", path=m.path, version=m.version, direction=direction,
        line=None if line == "?" else line, cause=cause, statement=db.failed_statement,
        hint=_LOCK_HINTS[db._transactional] if kind == "locked" else None,
        rolled_back=rolled_back, tables=_tables_named_in(db.executed))
    failure.__cause__ = error
    return failure


def _adoption_hint(conn, table):
    """For an untracked database that already has tables, whose first
    migration may fail ("table ... already exists"): how to adopt it; None
    for one without tables."""
    # SQLite reserves only names starting sqlite_ ('_' is LIKE's wildcard, so
    # escaped); identifiers compare case-insensitively for ASCII, as NOCASE.
    if not _query(conn, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name NOT LIKE "
                  "'sqlite\\_%' ESCAPE '\\' AND name COLLATE NOCASE NOT IN (?, ?) LIMIT 1",
                  (table, table + "_migrations")):
        return None
    user_version = _query(conn, "PRAGMA user_version")[0][0]
    if user_version > 0:
        return ("the database has tables and PRAGMA user_version %d but no sqlmigrate "
                "history: if a hand-rolled runner built it, adopt it with `mark "
                "--from-user-version` (or `mark V`), then run up" % user_version)
    return ("the database has tables but no sqlmigrate history: if these migrations (or "
            "another tool) built them, record the version it is at with `mark V`, then run up")


# For a lock error inside up()/down().  In a transactional migration this
# run holds the write lock itself, so the waiter is almost surely a second
# connection the migration opened; outside a transaction it may be either.
_LOCK_HINTS = {
    True: "this run holds the database's write lock while the migration runs, so the lock is "
          "probably wanted by a second connection the migration opened itself (sqlite3.connect "
          "in up/down): run every statement through the db it is given",
    False: "the lock is held by another process (wait for it to finish, or raise --busy-timeout) "
           "or by a second connection the migration opened itself (run every statement through "
           "the db it is given)"}


def _log_schema_of(conn, tables):
    """After a failed migration: the schema of the tables it named, to help see why."""
    try:
        if tables:
            _log("info", "Schema of the tables the failed migration named:\n%s",
                      schema_report(conn, tables).rstrip())
    except Exception as e:  # the report is a courtesy; never mask the real error
        _log("debug", "no schema report: %s", e)


def _drift(report):
    """(kind, sentence) for each way the database and the files disagree."""
    found, current = [], report["current_version"]
    if report["ahead"]:
        newest = ("the newest migration file is v%d" % report["latest_version"]
                  if report["latest_version"] else "there are no migration files")
        found.append(("ahead", "database is at version %d but %s: wrong --dir, or files "
                               "missing?" % (current, newest)))
    for r in report["migrations"]:
        if r["state"] == "changed" and r.get("baseline"):
            found.append(("drift", "%s was changed after it applied v%d: restore it (a baseline "
                                   "runs once, on a new database)" % (r["baseline"], r["version"])))
        elif r["state"] == "changed" and r["applied_name"] not in (None, r["name"]):
            found.append(("drift", "v%d was applied as \"%s\", not %s (\"%s\"): if another "
                                   "migration took its number, move %s aside, put back the file "
                                   "v%d ran, roll it back (down --to %d), then restore the files "
                                   "and run up; if it is that migration, edited: restore it, or "
                                   "accept it with `mark %d`" % (
                                       r["version"], r["applied_name"], r["file"], r["name"],
                                       r["file"], r["version"], r["version"] - 1, current)))
        elif r["state"] == "changed":
            found.append(("drift", "%s (v%d) was changed after it was applied: restore it, or "
                                   "accept it with `mark %d`" % (r["file"], r["version"], current)))
        elif r["state"] == "missing":
            found.append(("drift", "v%d (%s) is applied but its file is gone"
                          % (r["version"], r["name"])))
        elif r["state"] == "out-of-order" and r.get("baseline"):
            found.append(("out-of-order", "%s (v%d) is below the baseline %s but not in it (added "
                                          "after the baseline was written): a new database, "
                                          "built from the baseline, would never run it; give it "
                                          "a version above the baseline's, or delete the "
                                          "baseline and write it again"
                          % (r["file"], r["version"], r["baseline"])))
        elif r["state"] == "partly rolled back":
            found.append(("rolling-back", "%s (v%d) is partly rolled back: its down "
                                          "(non-transactional) is running or did not finish; run "
                                          "down to finish it, or up to apply it again"
                                          % (r["file"], r["version"])))
            if r["changed"]:  # drift, which up --strict refuses
                found.append(("drift", "%s (v%d) was changed after it was applied: restore it "
                                       "before down or up run it" % (r["file"], r["version"])))
        elif r["state"] == "out-of-order":
            found.append(("out-of-order", "%s (v%d) is below the current version %d and was "
                                          "never applied; give it a version above %d"
                          % (r["file"], r["version"], current, current)))
    return found


def migrate(db, directory=None, **options):
    """Apply every pending migration: the start-up one-liner.  Returns the
    results of the migrations applied ([] when the database is up to date).
    Options: Migrator's (package=, migrations=, table=, busy_timeout=...),
    up()'s (wait=SECONDS, to=, strict=...), and for a LiteFS replica (a
    `.primary` file beside the database; one that cannot be read counts as
    one): nothing is written there, and replica="wait" (the default) waits up
    to timeout=SECONDS (default 60) until the primary has migrated
    (wait_until_current), replica="return" returns [] at once.  Only a path
    is checked for `.primary`: a connection's file would cost a query."""
    up_options = {k: options.pop(k) for k in ("to", "dry_run", "atomic", "backup", "strict",
                                              "wait") if k in options}
    replica, timeout = options.pop("replica", "wait"), options.pop("timeout", 60.0)
    if replica not in ("wait", "return"):
        raise RequestError("replica must be \"wait\" or \"return\", not %r" % (replica,))
    _seconds("timeout", timeout)  # checked on every node, not only where it is used
    if up_options.get("wait") is not None:
        _seconds("wait", up_options["wait"])
    migrator = Migrator(db, directory, **options)
    if migrator.path is not None and _litefs_replica(migrator.path):
        migrator.migrations  # noqa: B018 - bad files are an error on every node
        if replica == "wait":
            _wait_until_current(migrator, timeout, up_options.get("to"))
        return []
    return migrator.up(**up_options)


def wait_until_current(db, directory=None, timeout=60.0, **options):
    """Wait, polling with back-off, until another process (a primary node,
    the worker that migrates) has left `db` with nothing pending; after
    `timeout` seconds, raise MigrationError (kind "not-current").  Drift is
    as for up(): an edited or deleted applied file is logged as a warning,
    and what up() refuses (kind "ahead", "out-of-order", "behind-baseline")
    is raised at once.
    Options are Migrator's (package=, ...)."""
    _wait_until_current(Migrator(db, directory, **options), _seconds("timeout", timeout))


def _refuse_drift(drift):
    """Raise the MigrationError up() raises for this drift, if any: a
    database ahead of the files, or a pending file below its version."""
    for kind, outcome in (("ahead", None), ("out-of-order", "nothing was applied")):
        if any(k == kind for k, _ in drift):
            raise MigrationError(kind=kind, outcome=outcome,
                                 problems=[text for k, text in drift if k == kind])


def _wait_until_current(migrator, timeout, to=None):
    # Done when up() would have nothing to do: other drift (an edited or a
    # deleted applied file) is a warning there and here, and what up()
    # refuses is raised at once, since no other process will mend it.
    deadline, delay = time.monotonic() + timeout, 0.05
    while True:
        try:
            state = migrator._read_state()  # the files are read once, the state each time
            report = migrator._report(state)
            drift = _drift(report)
            _refuse_drift(drift)
            # What up(to) would run (migrate(to=) on a replica: the primary
            # stops there too); refused below a baseline whose files are gone.
            plan, refusal = migrator._plan_up(state, to)
            if refusal:
                raise refusal
            if not plan:
                for _, text in drift:
                    _log("warning", text)
                return
            why = "%d migration(s) pending" % len(plan)
        except MigrationError as e:
            if e.kind != "locked":  # a writer committing (rollback journal): look again
                raise
            why = str(e)
        left = deadline - time.monotonic()
        if left <= 0:
            raise MigrationError("%s is not up to date after waiting %g s: %s" % (
                migrator.path or "the database", timeout, why), kind="not-current",
                database=migrator.path)
        time.sleep(min(delay, left))
        delay = min(delay * 2, 1.0)


def _seconds(name, value):
    """`value`, a number of seconds for option `name`, or RequestError.  NaN
    would be a deadline that never passes (it compares false), and a string
    or None would fail only when a lock is contended: refused up front, as
    an int too big for a float (OverflowError when added to the clock)."""
    try:
        seconds = float(value) if isinstance(value, (int, float)) and \
            not isinstance(value, bool) else -1.0
    except OverflowError:
        # (Not str(value): Python 3.11+ refuses to print an int of over 4300 digits.)
        raise RequestError("%s must be a number of seconds (0 or more), not an int too "
                           "big for a float" % name)
    if not 0 <= seconds < float("inf"):
        raise RequestError("%s must be a number of seconds (0 or more), not %.40r"
                           % (name, value))
    return seconds


def _check_arguments(kind, **values):
    """RequestError for an argument (name=value) not of `kind`: "version" (a
    whole number, 0 or more, in SQLite's 63 bits; None: not given; a bool is
    none) or "text" (a str): refused before anything is read or written, not
    as a TypeError from deep inside, nor (mark(1.0)) as a schema_version
    '1.0' that every later run refuses."""
    for name, value in sorted(values.items()):
        if not isinstance(value, str) if kind == "text" else value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or
                not 0 <= value < 2 ** 63):
            raise RequestError("%s must be %s, not %.40r" % (
                name, "text (a str)" if kind == "text" else "a whole number (0 or more)", value))


def _committed(done):
    """What a failed run had committed before the failure: `done`, its results."""
    return "this run had already %s %s (committed)" % (
        "applied" if done[0].direction == "up" else "rolled back",
        ", ".join(r.filename for r in done))


def _still_locked(error, done=(), wait=None):
    """The "locked" MigrationError `error` once more, carrying the results
    `done` (_done, for a retry) committed before it and saying they were;
    after `wait` seconds of retries ran out, advising to wait longer, not to
    raise --busy-timeout."""
    message = error.message
    if wait:
        message = ("%s is still locked by another process after %g s of retrying (--wait): "
                   "wait for it to finish (or stop it) and try again, or raise --wait"
                   % ("database " + error.database if error.database else "the database", wait))
    failure = MigrationError(message, kind="locked", database=error.database, cause=error.cause,
                             outcome=_committed(done) if done else error.outcome)
    failure.__cause__, failure._done = error.__cause__, list(done)
    return failure


def _retrying_locked(call, wait):
    """call(), retried with back-off for `wait` seconds while it fails because
    the database is locked; then that error, as without wait.  What a try
    committed before it lost the lock is part of the result."""
    deadline, delay, done = time.monotonic() + wait, 0.05, []
    while True:
        try:
            return done + call()
        except MigrationError as e:
            done += getattr(e, "_done", [])
            left = deadline - time.monotonic()
            if e.kind != "locked" or left <= 0:
                raise _still_locked(e, done, wait) if e.kind == "locked" and (wait or done) \
                    else e
            if delay == 0.05:  # not e's text: its "try again" is what this already does
                _log("info", "%s is locked by another process; retrying for up to %.1f s more",
                     "database " + e.database if e.database else "the database", left)
        time.sleep(min(delay, left))
        delay = min(delay * 2, 1.0)


def _litefs_replica(path):
    """Whether `path` is on a LiteFS replica node: LiteFS puts a `.primary`
    file, naming the primary, in the mount directory of replicas only.  One
    that cannot be read: not sure, so treated as a replica (never migrate
    where writes may fail part-way), with a warning."""
    # The real file's directory: a symlink from elsewhere to the mount must
    # not hide the replica.
    primary = os.path.join(os.path.dirname(os.path.realpath(path)), ".primary")
    try:
        with open(primary, "rb") as f:
            name = f.read().decode("utf-8", "replace").strip()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as e:
        _log("warning", "cannot read %s (%s): not sure whether this is a LiteFS replica, so "
             "not migrating here", primary, e.strerror)
        return True
    _log("info", "%s is on a LiteFS replica (%s names the primary: %s): migrations run on the "
         "primary, not here", path, primary, name or "?")
    return True


# --- Testing migrations (`sqlmigrate test`) --------------------------------
# One pass over a scratch database in memory: each migration is applied once
# and, where it has a down, rolled back and applied again right there, so the
# whole test costs about three ups (bench/bench_test.py).  Rows generated for
# each table as it appears must survive every later up.

_ROWS_PER_TABLE = 3


def _schema_entries(conn, table):
    """{(type, name): (tbl_name, sql)} of sqlite_master, plus user_version
    and the order each table's triggers were made in, less the tracking
    tables and SQLite's own tables, which it makes (and never drops) by
    itself: sqlite_sequence, sqlite_stat*."""
    left_out = (_key(table), _key(table + "_migrations"))
    rows = _query(conn, "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY rowid")
    entries = dict(((kind, name), (on, sql)) for kind, name, on, sql in rows if _key(
        on) not in left_out and not (kind == "table" and _key(name).startswith("sqlite_")))
    entries[("pragma", "user_version")] = (None, _query(conn, "PRAGMA user_version")[0][0])
    # SQLite fires a table's triggers newest first: the same triggers made in
    # another order do something else (see _schema_statements).
    # By the table's own name: a trigger's tbl_name is spelt as its ON was.
    made = collections.OrderedDict((_key(name), (name, [])) for kind, name, _, _ in rows
                                   if kind == "table")
    for kind, name, on, _ in rows:
        if kind == "trigger" and _key(on) not in left_out:
            made.setdefault(_key(on), (on, []))[1].append(name)
    for on, names in made.values():
        if len(names) > 1:
            entries[("trigger order", on)] = (on, ", ".join(names))
    return entries


def _significant(sql):
    # Whitespace, comments, keyword case and the quoting of names are no
    # difference: ALTER TABLE and a rebuild's rename edit the text (CREATE
    # TABLE "t").  Each token: (its text case-folded, its exact text when
    # quoted, else None): a double-quoted token may be a string literal to
    # SQLite (DEFAULT "Active"), whose case matters.
    return sql if not isinstance(sql, str) else [
        (_key(_unquote(text)), _unquote(text) if kind == "ident" else None)
        if kind in ("word", "ident") else (text, text)
        for kind, text in _tokenize(sql) if kind not in ("space", "comment")]


def _same_sql(a, b):
    """Whether two _significant() forms are the same: a quoted token against
    a quoted one compares case and all; against a bare word (then a name,
    not a literal) it compares as SQLite compares names."""
    if not isinstance(a, list) or not isinstance(b, list):
        return a == b
    return len(a) == len(b) and all(
        x[0] == y[0] and (x[1] is None or y[1] is None or x[1] == y[1]) for x, y in zip(a, b))


def _schema_diff(expected, got):
    """The entries that differ, as {change, type, name, before, after}."""
    diff = []
    for key in sorted(set(expected) | set(got)):
        old, new = expected.get(key), got.get(key)
        if old == new or old and new and old[0] == new[0] and \
                _same_sql(_significant(old[1]), _significant(new[1])):
            continue
        diff.append({"change": "added" if old is None else "removed" if new is None else
                     "changed", "type": key[0], "name": key[1],
                     "before": old and old[1], "after": new and new[1]})
    return diff


def _user_tables(conn, entries):
    """{key: (name, sql)} of the ordinary tables rows can be generated for:
    not virtual, nor a virtual table's shadow table (the module writes those)."""
    tables = [(name, sql) for (kind, name), (_, sql) in entries.items() if kind == "table"]
    left_out = set(_key(name) for name, sql in tables if _is_virtual(sql)) | _shadow_tables(
        conn, tables)
    return dict((_key(name), (name, sql)) for name, sql in tables if _key(name) not in left_out)


def _count_rows(conn, names):
    counts = []
    for start in range(0, len(names), _MAX_IN_LIST):  # one query, not one per table
        part = names[start:start + _MAX_IN_LIST]
        counts += _query(conn, "SELECT " + ", ".join("(SELECT count(*) FROM %s)" % (
            _quote_identifier(name)) for name in part))[0] if part else []
    return dict(zip(names, counts))


def _test_failure(check, message, **details):
    return dict(check=check, message=message, **details)


def _check_pragmas(conn, message):
    """PRAGMA integrity_check and foreign_key_check: ({"integrity": "ok" or
    "failed", "foreign-keys": ...}, [a failure, message % (pragma, findings),
    for each bad one])."""
    checks, failures = {}, []
    for check, pragma in (("integrity", "integrity_check"),
                          ("foreign-keys", "foreign_key_check")):
        rows = [" ".join(map(str, row)) for row in _query(conn, "PRAGMA " + pragma)]
        checks[check] = "ok" if rows in ([], ["ok"]) else "failed"
        failures += [_test_failure(check, message % (pragma, "; ".join(rows[:20])))] * (
            checks[check] != "ok")
    return checks, failures


class _MigrationTest(object):
    """The one pass of Migrator.test() over a fresh in-memory database."""

    def __init__(self, migrator):
        self.migrator, self.n = migrator, 0
        self.result = {"ok": True, "migrations": [], "fresh_build": {}, "failures": [],
                       "notes": [], "rows_generated": {}}
        # The pass starts from a baseline whose earlier files are gone (as a
        # new database does after a squash), else from the files alone.
        files = migrator.migrations
        # No file at all (every one squashed into a baseline): the newest
        # baseline is where a new database starts.
        first = min([m.version for m in files] or [float("inf")])
        versions = set(m.version for m in files)
        self.start = ([b for b in migrator._baselines if b.version < first or
                       b.version == first and (b._covers or set()) - versions] or [None])[-1]

    def connect(self, conn):
        # Foreign keys on: the runner then checks them after each migration,
        # and generated rows must respect them.
        _set_pragma(conn, "foreign_keys", True)
        self.conn, self.runner = conn, _scratch_runner(  # the files loaded once
            conn, self.migrator, [self.start] if self.start else [])
        self.tracked, self.schema = {}, _schema_entries(conn, self.migrator.table)

    def run(self):
        self.connect(sqlite3.connect(":memory:", isolation_level=None))
        stopped, start = False, self.start
        for m in [start] * bool(start) + self.migrator.migrations:
            if start and not m.baseline and m.version <= start.version:
                self.result["notes"].append("%s: held by %s, whose earlier files are gone: not "
                                            "checked on its own" % (m.filename, start.filename))
                continue
            entry = {"version": m.version, "name": m.name, "file": m.filename, "ok": True,
                     "checks": {"up": "not run", "round-trip": "not run", "data": "not run"},
                     "failures": []}
            entry.update({"baseline": True} if m.baseline else {})
            self.result["migrations"].append(entry)
            if not stopped:
                stopped = not self.step(m, entry)
            entry["ok"] = not entry["failures"]
        fresh = self.result["fresh_build"]
        if stopped:
            fresh.update({"integrity": "not run", "foreign-keys": "not run"})
        else:
            checks, failures = _check_pragmas(self.conn, "fresh build: PRAGMA %s: %s")
            fresh.update(checks)
            self.result["failures"] += failures
        self.conn.close()
        for b in self.migrator._baselines:
            if not start or b.version > start.version:
                self.result["migrations"].append(self.compare_baseline(b))
        self.result["migrations"].sort(key=lambda e: (e["version"], bool(e.get("baseline"))))
        self.result["ok"] = not self.result["failures"] and all(
            entry["ok"] for entry in self.result["migrations"])
        return self.result

    def build(self, to):
        """A fresh build up to `to` the way this pass makes it (not the way
        up() would: that takes the newest baseline, checked on its own)."""
        return self.migrator._fresh_build(to, [self.start] if self.start else [])

    def compare_baseline(self, b):
        """Build from baseline b and from what it replaces (the files, or the
        start baseline and the files after it): the schemas must be one."""
        entry = {"version": b.version, "name": b.name, "file": b.filename, "ok": True,
                 "baseline": True, "checks": {"up": "not run", "baseline": "not run"},
                 "failures": []}
        built = []
        for baselines in ([b], [self.start] if self.start else []):
            try:
                conn = self.migrator._fresh_build(b.version, baselines)
            except MigrationError as e:
                check = "up" if baselines == [b] else "baseline"
                entry["checks"][check] = "failed"
                entry["failures"].append(_test_failure(check, "%s: %s" % (
                    b.filename if check == "up" else "the files it replaces", e)))
                break
            try:
                built.append(_schema_entries(conn, self.migrator.table))
            finally:
                conn.close()
            entry["checks"]["up"] = entry["checks"]["up"].replace("not run", "ok")
        if len(built) == 2:
            diff = _schema_diff(built[1], built[0])
            entry["checks"]["baseline"] = "failed" if diff else "ok"
            entry["failures"] += [_test_failure(
                "baseline", "%s builds another schema than the files up to v%d it replaces"
                % (b.filename, b.version), diff=diff)] * bool(diff)
        entry["ok"] = not entry["failures"]
        return entry

    def up(self, m, entry, check):
        try:
            self.runner._up(m.version)
            return True
        except MigrationError as e:
            entry["checks"][check] = "failed"
            entry["failures"].append(_test_failure(check, str(e)))
            return False

    def step(self, m, entry):
        """Apply m (with its round trip) and check the generated rows after
        each up and down; False when the pass cannot go on."""
        checks, before = entry["checks"], self.schema
        if not self.up(m, entry, "up"):
            return False
        checks["up"] = "ok"
        after = _schema_entries(self.conn, self.migrator.table)
        self.check_rows(entry, _user_tables(self.conn, after), "v%d" % m.version)
        checks["round-trip"] = "ok" if m.has_down else "no down"
        if m.has_down:
            try:
                self.runner.down(steps=1)
            except MigrationError as e:
                checks["round-trip"] = "failed"
                entry["failures"].append(_test_failure("round-trip", "down failed: %s" % e))
            else:
                now = _schema_entries(self.conn, self.migrator.table)
                # The down must give the rows back as they were before the up
                # (in the columns it leaves): a down that rewrites values
                # keeps the schema, so the diff alone cannot see it.
                self.check_rows(entry, _user_tables(self.conn, now), "v%d's down" % m.version)
                diff = _schema_diff(before, now)
                again = not diff and self.up(m, entry, "round-trip")
                if again:
                    now = _schema_entries(self.conn, self.migrator.table)
                    diff = _schema_diff(after, now)
                    self.check_rows(entry, _user_tables(self.conn, now),
                                    "v%d applied again after its down" % m.version)
                if diff:
                    checks["round-trip"] = "failed"
                    entry["failures"].append(_test_failure(
                        "round-trip", "v%d's down did not restore the schema before it" % m.version
                        if not again else "up after down gave another schema than the first up",
                        diff=diff))
                if not again or diff:
                    # The scratch database is not what v<m> alone would make:
                    # go on from a fresh build up to m, generating rows anew.
                    self.conn.close()
                    self.connect(self.build(m.version))
                    self.result["notes"].append(
                        "v%d: after its failed round trip, the later checks run on a fresh build "
                        "up to v%d with rows generated anew" % (m.version, m.version))
                    after = self.schema
        self.schema = after
        checks["data"] = "failed" if checks["data"] == "failed" else "ok"
        self.generate_rows(m, _user_tables(self.conn, after))
        return True

    def check_rows(self, entry, tables, step):
        """Whether each tracked generated row is still there with its values
        (in the columns the table still has): one query per table, by rowid,
        and a search by value only for a row not found so (a rebuild may
        renumber the rowids of a table without an INTEGER PRIMARY KEY)."""
        for key in [key for key in self.tracked if key not in tables]:
            del self.tracked[key]  # dropped: its rows went with it, on purpose
        for key, (sql, names, rows) in list(self.tracked.items()):
            name, now_sql = tables[key]
            quoted = _quote_identifier(name)
            if now_sql != sql:
                # A column this step dropped took its values with it, on
                # purpose: it is no longer compared, even if a down adds it back.
                columns = set(_key(d[0]) for d in self.conn.execute(
                    "SELECT * FROM %s LIMIT 0" % quoted).description)
                keep = [i for i, column in enumerate(names) if _key(column) in columns]
                names = [names[i] for i in keep]
                rows = [(rowid, tuple(values[i] for i in keep)) for rowid, values in rows]
            rowids = [rowid for rowid, _ in rows if rowid is not None]
            found = dict((row[0], row[1:]) for row in self.conn.execute(
                "SELECT rowid%s FROM %s WHERE rowid IN (%s)" % (
                    "".join(", " + _quote_identifier(column) for column in names), quoted,
                    ", ".join(map(str, rowids))))) if rowids else {}
            lost, kept = 0, []
            for rowid, values in rows:
                if found.get(rowid) != values:
                    # SQLite's IS decides (1 IS 1.0), and finds a row renumbered.
                    match = _query(self.conn, "SELECT %s FROM %s WHERE %s LIMIT 1" % (
                        "NULL" if rowid is None else "rowid", quoted, " AND ".join(
                            "%s IS ?" % _quote_identifier(column) for column in names) or "1"),
                        values)
                    lost += not match
                    rowid = match[0][0] if match else rowid
                kept.append((rowid, values))
            self.tracked[key] = (now_sql, names, kept)
            if lost:
                entry["checks"]["data"] = "failed"
                entry["failures"].append(_test_failure("data", "%s lost %d of %d generated "
                                                       "rows of table %s (or changed their "
                                                       "values)" % (step, lost, len(rows), name),
                                                       table=name))
                del self.tracked[key]  # rows are generated anew for the later checks

    def generate_rows(self, m, tables):
        for key, (name, sql) in self.parents_first(dict(
                (key, table) for key, table in tables.items() if key not in self.tracked)):
            rows = self.insert_rows(name, sql)
            names = [column for column, _ in rows[0][1].values()] if rows else []
            self.tracked[key] = (sql, names, [(rowid, tuple(row[_key(column)][1]
                                                            for column in names))
                                              for rowid, row in rows])
            self.result["rows_generated"][name] = len(rows)
            if len(rows) < _ROWS_PER_TABLE:
                self.result["notes"].append(
                    "v%d: could generate only %d of %d rows for table %s (constraints this "
                    "test cannot satisfy): its data survival is checked with those"
                    % (m.version, len(rows), _ROWS_PER_TABLE, name))

    def parents_first(self, tables):
        """tables' items, each after those of them its foreign keys name (a
        child gets the parent's keys only if the parent has rows), else by name."""
        parents = dict((key, set(_key(fk.parent) for fk in _foreign_keys(self.conn, name)) &
                            set(tables)) for key, (name, _) in tables.items())
        ordered, placed = [], set()
        while len(ordered) < len(tables):
            ready = [key for key in sorted(tables) if key not in placed and
                     parents[key] - set([key]) <= placed]
            ready = ready or [min(key for key in tables if key not in placed)]  # a cycle
            ordered += ready
            placed.update(ready)
        return [(key, tables[key]) for key in ordered]

    def insert_rows(self, name, sql):
        """Up to _ROWS_PER_TABLE rows that the table's constraints accept,
        tried with typed distinct values, then the literals its CREATE TABLE
        holds (CHECK (x IN ('a', 'b'))), 0, 1 and NULL in the CHECKed columns;
        foreign keys take the parent's existing keys (or NULL)."""
        quoted = _quote_identifier(name)
        table = _CreateTable(sql, "table %s" % name)
        checked, literals = set(), []
        for item in table.items:
            words = [(kind, text) for kind, text in table.tokens[item.start:item.end]
                     if kind in ("word", "ident", "string")]
            if ("word", "CHECK") in [(kind, text.upper()) for kind, text in words]:
                checked |= set([item.key]) if item.key else set(
                    _key(_unquote(text)) for kind, text in words if kind != "string")
                literals += [_unquote(text) if kind == "string" else int(text)
                             for kind, text in words if kind == "string" or text.isdigit()]
        parents = {}
        for fk in _foreign_keys(self.conn, name):
            # PRAGMA, not _read_columns: REFERENCES may spell the name in another case.
            target = fk.to or next((c.name for c in (_Column._make(tuple(row) + (0,)) for row in (
                _query(self.conn, "PRAGMA table_info(%s)" % _quote_identifier(fk.parent))))
                if c.pk), "rowid")
            parents[_key(fk.column)] = [r[0] for r in _query(self.conn, "SELECT %s FROM %s" % (
                _quote_identifier(target), _quote_identifier(fk.parent)))] + [None]
        columns = [c for c in _read_columns(self.conn, [name])[name] if not c.hidden]
        rowid_alias = [c.name for c in columns if c.pk] if table.rowid else []
        rowid_alias = rowid_alias if len(rowid_alias) == 1 and [c.type.upper() for c in columns
                                                               if c.pk] == ["INTEGER"] else []
        given = [c for c in columns if c.name not in rowid_alias]
        insert = "INSERT INTO %s (%s) VALUES (%s)" % (quoted, ", ".join(
            _quote_identifier(c.name) for c in given), ", ".join("?" * len(given))) \
            if given else "INSERT INTO %s DEFAULT VALUES" % quoted
        rows = []
        for i in range(_ROWS_PER_TABLE):
            for attempt in range(6 + 2 * len(literals)):
                self.n += 1
                values = [self.value(c, i, attempt, checked, literals, parents) for c in given]
                try:
                    rowid = self.conn.execute(insert, values).lastrowid
                except _DB.Error:
                    continue  # a constraint refused it: try other values
                # Read back as stored (type affinity may have converted it).
                stored = zip(columns, _query(self.conn, "SELECT %s FROM %s WHERE rowid = ?" % (
                    ", ".join(_quote_identifier(c.name) for c in columns), quoted), (rowid,))[0]) \
                    if table.rowid else zip(given, values)
                rows.append((rowid if table.rowid else None,
                             dict((_key(c.name), (c.name, v)) for c, v in stored)))
                break
        return rows

    def value(self, column, i, attempt, checked, literals, parents):
        key = _key(column.name)
        if key in parents:
            choices = parents[key][:-1] or parents[key]
            return choices[(i + attempt) % len(choices)]
        typed = {"INTEGER": self.n, "TEXT": "text %d" % self.n, "REAL": self.n + 0.5,
                 "BLOB": ("blob %d" % self.n).encode()}.get(_affinity(column.type), self.n)
        if key not in checked or not attempt:
            return typed
        choices = literals + [0, 1, typed, None]
        return choices[(attempt - 1 + i) % len(choices)]


def _test_upgrade(migrator, source):
    """Apply the pending migrations to a copy of `source` and check the copy:
    integrity, foreign keys, and the row counts of the tables no pending
    migration names (found in what a dry run of them executed)."""
    report = {"source": "(connection)" if _is_connection(source) else source, "ok": True,
              "migrations": [], "failures": [], "notes": [],
              "checks": {"integrity": "not run", "foreign-keys": "not run",
                         "row-counts": "not run"}, "untouched": []}
    with _scratch_copy(source, migrator.busy_timeout) as conn:
        _set_pragma(conn, "foreign_keys", True)
        runner = _scratch_runner(conn, migrator)
        report["version"] = runner.current_version
        pending = runner.pending()
        touched = set()
        try:
            for result in runner.up(dry_run=True):
                if result.executed_sql is None:
                    touched = None
                    report["notes"].append("%s is non-transactional (not dry-run): every table "
                                           "counts as touched" % result.filename)
                    break
                touched |= set(map(_key, _tables_named_in(result.executed_sql)))
        except MigrationError:
            touched = None  # the real run below reports the failure
        # A trigger on a touched table writes the tables its body names:
        # those are touched too (and so on, through their own triggers).
        triggers = [(_key(on), sql) for on, sql in _query(
            conn, "SELECT tbl_name, sql FROM sqlite_master WHERE type = 'trigger'")]
        grown = touched is not None
        while grown:
            written = set(_key(name) for on, sql in triggers if on in touched
                          for name in _tables_named_in([sql]))
            grown = not written <= touched
            touched |= written
        tables = sorted(name for name, _ in _user_tables(conn, _schema_entries(
            conn, migrator.table)).values())
        untouched = [name for name in tables if touched is not None and _key(name) not in touched]
        counts = _count_rows(conn, untouched)
        entries = dict((m.version, {"version": m.version, "name": m.name, "file": m.filename,
                                    "ok": True, "checks": {"up": "not run"}, "failures": []})
                       for m in pending)
        report["migrations"] = [entries[m.version] for m in pending]
        try:
            for result in runner.up():
                entries[result.version]["checks"]["up"] = "ok"
        except MigrationError as e:
            entry = entries.get(e.version)
            (entry["failures"] if entry else report["failures"]).append(
                _test_failure("up", str(e)))
            if entry:
                entry["ok"], entry["checks"]["up"] = False, "failed"
        found, failures = _check_pragmas(conn, "PRAGMA %s on the upgraded copy: %s")
        checks = report["checks"]
        checks.update(found)
        report["failures"] += failures
        now = _count_rows(conn, [name for name in untouched if ("table", name) in
                                 _schema_entries(conn, migrator.table)])
        checks["row-counts"] = "ok"
        for name in untouched:
            if now.get(name) != counts[name]:
                checks["row-counts"] = "failed"
                report["failures"].append(_test_failure(
                    "row-counts", "table %s, which no pending migration names, had %d rows and "
                    "now has %s" % (name, counts[name], now.get(name, "none (it is gone)")),
                    table=name))
        report["untouched"] = untouched
        if touched is None and pending:
            checks["row-counts"] = "not run"
    report["ok"] = not report["failures"] and all(e["ok"] for e in report["migrations"])
    return report


# --- Lint (`sqlmigrate lint`) -----------------------------------------------
# Rules over each statement a migration's up runs: an .sql file's read with
# the one SQL reader (lines from its text); a Python file's as a scratch run
# executes them, traced, with the line in the file that ran each.  The
# scratch run applies the migrations for real (to a copy of the database, or
# a fresh build of the earlier ones) rather than as a dry run: a dry run
# skips non-transactional migrations, whose idempotency is one of the rules.

_LintFinding = collections.namedtuple(
    "LintFinding", "code level path line statement message fix allowed")

# code: (level, what it catches, what to do) -- `lint --help` prints this table.
_LINT_RULES = collections.OrderedDict((rule[0], rule[1:]) for rule in (
    ("SM001", "error", "the file cannot be read or parsed", "fix the file"),
    ("SM002", "warning", "an allow marker names an unknown code", "use a code from this table"),
    ("SM003", "error", "the migration fails on the scratch database",
     "run `sqlmigrate test` for details and fix the migration"),
    ("SM004", "note", "not run: an earlier migration failed", "fix that one first"),
    ("SM101", "error", "DROP TABLE loses the table's rows",
     "keep the table, or allow SM101 with the reason the data may go"),
    ("SM102", "error", "DROP COLUMN (native, drop_column or rebuild_table(drop=)) loses its data",
     "keep the column, or allow SM102 with the reason the data may go"),
    ("SM103", "error", "a rebuild whose create_sql leaves out existing columns",
     "list every column in create_sql, or allow SM103"),
    ("SM104", "error", "DELETE without WHERE empties the table", "add a WHERE, or allow SM104"),
    ("SM105", "warning", "UPDATE without WHERE changes every row", "add a WHERE, or allow SM105"),
    ("SM201", "error", "ADD COLUMN ... NOT NULL without a default fails on a non-empty table",
     "give it a DEFAULT, or use reconcile()/rebuild_table()"),
    ("SM202", "error", "ADD COLUMN with UNIQUE or PRIMARY KEY: SQLite refuses it",
     "add the column, then CREATE UNIQUE INDEX (it cannot keep an ON CONFLICT clause); or "
     "use reconcile() or rebuild_table(create_sql=...)"),
    ("SM203", "error", "ADD COLUMN with a non-constant default (or STORED): SQLite refuses it "
     "on a non-empty table", "use reconcile() or rebuild_table(create_sql=...)"),
    ("SM301", "error", "PRAGMA foreign_keys in a transactional migration is a no-op",
     "drop it: the runner turns foreign keys off around each migration"),
    ("SM302", "warning", "PRAGMA legacy_alter_table in a transactional migration changes how "
     "the rest of it renames (the runner sets it back after the migration)",
     "use rebuild_table(), which sets and restores it"),
    ("SM303", "error", "PRAGMA journal_mode or synchronous cannot change inside a transaction",
     "move it to a migration with transaction:false (transaction = False)"),
    ("SM401", "warning", "a rebuild or DROP COLUMN rewrites a big table under the write lock",
     "run it when writers can wait, or allow SM401 with the downtime accepted"),
    ("SM402", "warning", "CREATE INDEX on a big table holds the write lock while it builds",
     "run it when writers can wait, or allow SM402 with the downtime accepted"),
    ("SM501", "error", "a table rename under legacy_alter_table (or SQLite < 3.26) leaves the "
     "views and triggers that use it pointing at the old name",
     "use rebuild_table(), or recreate those views and triggers"),
    ("SM502", "warning", "renaming a table other tables reference: their foreign keys follow "
     "it to the new name", "to replace a table, use rebuild_table(create_sql=...)"),
    ("SM601", "error", "a non-transactional migration that is not idempotent: one a crash "
     "cut short runs again from its start", "use IF NOT EXISTS / IF EXISTS / OR IGNORE, or make it "
     "transactional"),
    ("SM701", "error", "an applied migration whose file changed (--db)",
     "restore the file; put the change in a new migration"),
    ("SM702", "error", "a new file numbered below the current version (--db)",
     "renumber it above the current version"),
    ("SM801", "note", "a migration without down", "write a down, or allow SM801"),
    ("SM802", "error", "a down that does not undo its up (--round-trip)",
     "make the down restore the schema before the up"),
))
_LINT_BIG_ROWS = 100000  # a table from this many rows is big (SM401/SM402)
_LINT_SAMPLE_ROWS = 20000
_ALLOW_RE = (r"(?:--|#)[ \t]*sqlmigrate:[ \t]*allow[ \t]+([^(\n]*?)[ \t]*"
                       r"(?:\(([^\n]*)\))?[ \t]*$")
# The runner's statement plumbing between a migration's call and SQLite.
_LINT_PLUMBING = ("_run", "execute", "executemany", "executescript", "_retrying_busy", "trace")


def _lint_fails(findings):
    return any(f.level == "error" and not f.allowed for f in findings)


class _LintStatement(object):
    """What the rules need of one statement, read once."""

    def __init__(self, sql):
        self.sql = sql
        self.object = self.name = self.table = self.action = self.column = None
        self.where = self.guarded = self.sets = False
        self.value = None
        verb = re.compile(_FIRST_WORD_RE).match(sql).group("word").upper()
        if verb in ("INSERT", "REPLACE"):
            # Only its first words are read: seed data is 100,000s of these.
            upper = sql.upper()
            words = list(itertools.islice(_words(sql), 3)) if "OR" in upper else []
            self.verb, self.insert_guarded = verb, verb == "REPLACE" or words[1:3] in (
                ["OR", "IGNORE"], ["OR", "REPLACE"]) or "CONFLICT" in upper and \
                "CONFLICT" in _words(sql)
            return
        cursor = _Cursor(sql)
        self.verb = _data_verb(sql, cursor.tokens) or cursor.word()
        if self.verb == "CREATE":
            head = _Create(sql, cursor.tokens)
            self.object, self.name, self.guarded = head.kind, head.name, head.if_not_exists
            if head.kind == "INDEX" and head.cursor.take("ON"):
                self.table = head.cursor.name()
        elif self.verb == "DROP":
            cursor.advance()
            self.object = cursor.word() and cursor.advance()[1].upper()
            self.guarded = cursor.take("IF", "EXISTS")
            self.name = cursor.name()
        elif self.verb == "ALTER" and cursor.take("ALTER", "TABLE"):
            self.table = cursor.name()
            self.action = cursor.word() and cursor.advance()[1].upper()
            if self.action == "RENAME" and cursor.take("TO"):
                self.action, self.name = "RENAME TO", cursor.name()
            elif self.action in ("ADD", "DROP"):
                cursor.take("COLUMN")
                self.column = cursor.name()
                self.declaration = _ColumnDeclaration(
                    "".join(text for _, text in cursor.tokens[cursor.i:]))
        elif self.verb == "PRAGMA":
            cursor.advance()
            self.name = (cursor.name() or "").lower()
            self.sets = cursor.punct("=") or cursor.peek() == ("punct", "(")
            # The value as SQLite's pragma parser takes it: unquoted, its sign kept.
            value = "".join(_unquote(text) for kind, text in cursor.rest()
                            if text not in ("=", "(", ")"))
            self.value = value.upper() if self.sets and value else None
        elif self.verb in ("DELETE", "UPDATE"):
            while not cursor.at_end():  # a WHERE inside parentheses is a subquery's
                if cursor.peek() == ("punct", "("):
                    cursor.group()
                elif cursor.advance()[1].upper() == "WHERE":
                    self.where = True
                    break
        words = [text.upper() for kind, text in cursor.tokens if kind == "word"] \
            if self.verb == "INSERT" else []
        self.insert_guarded = self.verb == "REPLACE" or words[1:3] in (
            ["OR", "IGNORE"], ["OR", "REPLACE"]) or "CONFLICT" in words


def _words(sql):
    """The bare words of `sql` upper-cased, read as they are taken."""
    return (match.group().upper() for match in re.compile(_TOKEN_RE).finditer(sql)
            if match.lastgroup == "word")


def _lint_destructive(s, transactional, context):
    if s.verb == "DROP" and s.object == "TABLE":
        yield "SM101", "drops table %s and every row in it" % s.name
    elif s.verb == "ALTER" and s.action == "DROP":
        yield "SM102", "drops column %s.%s and its data" % (s.table, s.column)
    elif s.verb == "DELETE" and not s.where:
        yield "SM104", "deletes every row (no WHERE)"
    elif s.verb == "UPDATE" and not s.where:
        yield "SM105", "updates every row (no WHERE)"


def _lint_add_column(s, transactional, context):
    if s.verb != "ALTER" or s.action != "ADD":
        return
    d = s.declaration
    if "NOT" in d.words and not d.generated and d.default_kind in ("none", "null"):
        yield "SM201", "adds %s NOT NULL without a default: fails once %s has a row" % (
            s.column, s.table)
    if d.words & set(("UNIQUE", "PRIMARY")):
        yield "SM202", "adds %s with %s, which ALTER TABLE ADD COLUMN refuses" % (
            s.column, "UNIQUE" if "UNIQUE" in d.words else "PRIMARY KEY")
    if _rebuild_reason(d):
        yield "SM203", "adds %s with a %s, which ALTER TABLE refuses on a non-empty table" % (
            s.column, _rebuild_reason(d))


_LINT_PRAGMAS = {"foreign_keys": "SM301", "legacy_alter_table": "SM302", "journal_mode": "SM303",
                 "synchronous": "SM303"}


def _lint_pragmas(s, transactional, context):
    if transactional and s.verb == "PRAGMA" and s.sets and s.name in _LINT_PRAGMAS:
        yield _LINT_PRAGMAS[s.name], "sets PRAGMA %s inside the migration's transaction" % s.name


def _lint_renames(s, transactional, context):
    if s.verb == "PRAGMA" and s.name == "legacy_alter_table" and s.sets:
        context.legacy = _lint_pragma_boolean(s.value or "")
    if s.verb != "ALTER" or s.action != "RENAME TO" or context.schema is None:
        return
    key, uses, references = _key(s.table), [], []
    for kind, name, on, sql in context.schema:
        if sql and _key(on) != key and key in map(_key, _tables_named_in([sql])):
            (uses if kind in ("view", "trigger") else references).append("%s %s" % (kind, name))
    if uses and (context.legacy or _SQLITE_VERSION < (3, 26, 0)):
        yield "SM501", "renames %s while %s use it and legacy_alter_table is on: they keep the " \
                       "old name" % (s.table, ", ".join(uses))
    elif references and not context.legacy:
        yield "SM502", "renames %s, which %s reference: their foreign keys now point at %s" % (
            s.table, ", ".join(references), s.name)


def _lint_pragma_boolean(value):
    """A flag pragma's value as SQLite reads it (sqlite3GetBoolean): a number
    (its leading digits, or 0x hex) that is not 0, or YES, ON or TRUE."""
    number = re.match(r"0X([0-9A-F]+)|[0-9]+", value)
    if number:
        return int(number.group(1), 16) != 0 if number.group(1) else int(number.group()) != 0
    return value in ("YES", "ON", "TRUE")


def _lint_idempotent(s, transactional, context):
    if transactional:
        return
    if s.verb in ("CREATE", "DROP") and s.object and not s.guarded:
        yield "SM601", "%s %s %s without IF %sEXISTS fails when run twice" % (
            s.verb, s.object, s.name, "NOT " * (s.verb == "CREATE"))
    elif s.verb == "ALTER":
        yield "SM601", "ALTER TABLE %s %s fails (or repeats) when run twice" % (s.table, s.action)
    elif s.verb in ("INSERT", "REPLACE") and not s.insert_guarded:
        yield "SM601", "INSERT without OR IGNORE / ON CONFLICT repeats its rows when run twice"


_LINT_STATEMENT_RULES = (_lint_destructive, _lint_add_column, _lint_pragmas, _lint_renames,
                         _lint_idempotent)


def _lint_rebuild(plan, transactional):
    """(code, message) for a rebuild_table/drop_column/reconcile rebuild."""
    if plan.dropped:
        yield ("SM102" if plan.create_sql is None else "SM103"), "the rebuild of %s drops " \
            "column%s %s and its data" % (plan.table, "s" * (len(plan.dropped) > 1),
                                          ", ".join(plan.dropped))
        if not transactional:
            yield "SM601", "the rebuild of %s fails when run twice" % plan.table


class _LintContext(object):
    schema = None  # sqlite_master rows (type, name, tbl_name, sql) when the migration started
    legacy = False


class _LintAllows(object):
    """A file's allow markers: (first line, last line, {code: reason}), and
    the SM002 findings of markers that name no lint code."""

    def __init__(self, m, text, spans, first_line):
        self.ranges, self.findings = [], []
        if "sqlmigrate:" not in text:
            return  # no marker: no line of a big seed file needs a look
        # Lines as the statements' line numbers count them: SQL's end at \n
        # (a lone \r ends no -- comment), Python's at \r too; neither's at
        # the \f, \x1c or U+2028 where str.splitlines() also breaks.
        lines = re.split(r"\r?\n" if m.kind == "sql" else r"\r\n|\r|\n", text)
        blank = [i + 1 for i, line in enumerate(lines) if not line.strip()]
        first_def = next((i + 1 for i, line in enumerate(lines) if line.startswith((
            "def ", "async def ", "class "))), None)
        statements = _py_statement_lines(text) if m.kind == "py" else None
        for number, line in enumerate(lines, 1):
            match = "sqlmigrate:" in line and re.compile(_ALLOW_RE).search(line)
            if not match:
                continue
            codes = dict((code, (match.group(2) or "").strip() or "no reason given")
                         for code in re.split(r"[\s,]+", match.group(1).upper()) if code)
            for code in [code for code in codes if code not in _LINT_RULES]:
                self.findings.append(_lint_finding("SM002", m.path, number, line.strip(),
                                                   "the allow marker names %s, which is no "
                                                   "lint code" % code))
            if m.kind == "sql":
                ahead = [(a, b) for a, b in spans if b >= number]
                whole = not spans or number < spans[0][0] and (number <= first_line or any(
                    number < n < spans[0][0] for n in blank))
                first, last = (1, None) if whole else ahead[0] if ahead else (number, number)
            elif first_def is None or number < first_def and not line[:1].isspace():
                first, last = 1, None
            else:
                first = number
                last = _py_statement_end(statements, number) if statements else next(
                    (n - 1 for n in blank if n > number), None)
            self.ranges.append((first, last, codes))

    def reason(self, code, line):
        for first, last, codes in self.ranges:
            if code in codes and (first == 1 and last is None or line is not None and
                                  first <= line and (last is None or line <= last)):
                return codes[code]
        return False


def _py_statement_lines(text):
    """(first line, last line) of each statement in a Python migration's
    source (a loop or a with block with its body), or None if it does not
    parse.  Before Python 3.8 there is no end_lineno: the last line any of
    its nodes starts on (a string over lines has its last line there)."""
    import ast
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):  # ValueError: a NUL byte (3.6 to 3.11)
        return None
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt):
            out.append((node.lineno, getattr(node, "end_lineno", None) or max(
                getattr(n, "lineno", node.lineno) for n in ast.walk(node))))
    return out


def _py_statement_end(statements, line):
    """The last line of the statement a marker on `line` stands above (or
    trails): the first to start there or below; the outermost of those that
    start on the same line.  None (the rest of the file) if none follows."""
    following = [(first, -last) for first, last in statements if first >= line]
    return -min(following)[1] if following else None


def _lint_finding(code, path, line, statement, message, allowed=False):
    level, _, fix = _LINT_RULES[code]
    return _LintFinding(code, level, path, line, statement, message, fix, allowed)


def _sql_statements(m):
    """m's up statements with their (first, last) lines in the file, and the
    line of its `-- migrate:up` marker (0 without one)."""
    text = _sql_file_text(m.source.decode("utf-8", "replace"))
    out, first, counted = [], 1, 0
    for at, statement in _split_sql(m._up_sql or "", offsets=True):
        # Counted on from the last statement: from the top each time is
        # quadratic (minutes for a 10 MB file of inserts).
        first += text.count("\n", counted, m._up_at + at)
        counted = m._up_at + at
        out.append((statement, (first, first + statement.count("\n"))))
    marker = text.count("\n", 0, m._up_at) + 1 if _comment_line_matches(_MARKER_RE, text) \
        else 0
    return text, out, marker


class _LintRun(object):
    """The scratch run: applies the migrations up to the last linted one,
    recording for each linted one the schema when it started and, for a
    Python one, each statement it ran with its line and the helper (if any)."""

    def __init__(self, linted):
        self.linted = dict((m.version, m) for m in linted)
        self.schemas, self.statements, self.current, self.conn = {}, {}, None, None
        self.own_file = _LintRun.trace.__code__.co_filename

    def progress(self, event, m, direction, **details):
        if event == "start" and m.version in self.linted and direction == "up":
            # The schema before m, which a table rename's rules read; only
            # where m's text can rename (a tenth of a Python lint's time).
            if b"RENAME" in m.source.upper():
                self.schemas[m.version] = _query(
                    self.conn, "SELECT type, name, tbl_name, sql FROM sqlite_master")
            self.statements[m.version], self.current = [], m if m.kind == "py" else None
        elif event == "end":
            self.current = None

    def trace(self, sql):
        m = self.current
        if m is None or _traced_trigger_program(sql):
            return
        frame, line, helper, plan = sys._getframe(1), None, False, None
        while frame is not None:
            code = frame.f_code
            if code.co_filename == m.path:
                line = frame.f_lineno
                break
            if code is _run_rebuild.__code__:
                plan = frame.f_locals.get("plan")
            if code.co_filename == self.own_file and code.co_name not in _LINT_PLUMBING:
                helper = True
            frame = frame.f_back
        recorded = self.statements[m.version]
        if plan is not None:
            if not any(p is plan for _, _, p in recorded):
                recorded.append((line, None, plan))
        elif not helper:
            recorded.append((line, sql, None))
        elif sql.lstrip()[:6].upper() == "CREATE" and _Create(sql).kind == "INDEX":
            recorded.append((line, sql, "helper"))  # reconcile's: only its size matters

    def run(self, migrator, conn, to):
        self.conn = conn
        runner = _scratch_runner(conn, migrator, progress=self.progress)
        conn.set_trace_callback(self.trace)
        try:
            runner._up(to)
        finally:
            conn.set_trace_callback(None)


def _lint_big_tables(conn, sites):
    """The SM401/SM402 findings for the sites (code, m, line, statement, table) on tables
    that are big in `conn`, with an estimate of the write lock's length from
    copying a sample of the table into a TEMP table here."""
    names = dict((_key(row[0]), row[0]) for row in _query(
        conn, "SELECT name FROM sqlite_master WHERE type = 'table'"))
    wanted = sorted(set(names[_key(t)] for _, _, _, _, t in sites if _key(t) in names))
    counts, rates, findings = _count_rows(conn, wanted), {}, []
    for code, m, line, statement, table in sites:
        rows = counts.get(names.get(_key(table)), 0)
        if rows < _LINT_BIG_ROWS:
            continue
        name = names[_key(table)]
        if name not in rates:
            sample = min(rows, _LINT_SAMPLE_ROWS)
            started = time.perf_counter()
            conn.execute("CREATE TEMP TABLE _sqlmigrate_lint_sample AS SELECT * FROM main.%s "
                         "LIMIT %d" % (_quote_identifier(name), sample))
            rates[name] = sample / max(time.perf_counter() - started, 1e-6)
            conn.execute("DROP TABLE temp._sqlmigrate_lint_sample")
        passes = 1 + (code == "SM401") * len(_query(conn, "PRAGMA index_list(%s)"
                                                     % _quote_identifier(name)))
        findings.append(_lint_finding(code, m.path, line, statement, (
            "%s has %d rows: %s holds the write lock for about %.1f s on this machine "
            "(copying measured at %.0f rows/s)" % (name, rows, "the rebuild" if code == "SM401"
                                                   else "building the index",
                                                   rows * passes / rates[name], rates[name]))))
    return findings


def _lint(migrator, files, round_trip, to=None):
    """Migrator.lint(): the findings, allowed or not, in file and line order."""
    everything = migrator.migrations
    if files is None:
        named = None
    else:
        by_name, named = dict((m.filename, m) for m in everything), []
        for item in files:
            item = os.fspath(item)
            m = by_name.get(os.path.basename(item))  # a file name, or the file's path
            if m is None or os.path.dirname(item) and os.path.realpath(item) \
                    != os.path.realpath(m.path):
                raise RequestError("%s is not a migration file %s" % (item, (
                    "of package %s (check --package)" % migrator.package
                    if migrator.package is not None else "in %s (check --dir)"
                    % migrator.directory if "directory" in migrator._sources
                    else "among the migrations given")), path=item)
            named.append(m)
    has_db = migrator.connection is not None or _database_exists(migrator.path)
    report = migrator.status() if has_db else None
    if named is not None:
        linted = sorted(set(named), key=lambda m: m.version)
    elif has_db:
        linted = [m for m in migrator.pending() if not m.baseline and
                  (to is None or m.version <= to)]
    else:
        linted = [m for m in everything if to is None or m.version <= to]
    findings, loaded = [], []
    for m in linted:
        try:
            m.load()
            loaded.append(m)
        except MigrationError as e:
            findings.append(_lint_finding("SM001", m.path, e.line, None, e.cause or str(e)))
    paths = set(m.path for m in linted)
    for row in report["migrations"] if report else ():
        path = os.path.join(migrator.directory, row["file"] or row["baseline"] or "")
        code = {"changed": "SM701", "out-of-order": "SM702"}.get(row["state"])
        if code and (named is None or path in paths):
            findings.append(_lint_finding(code, path, None, None, "v%d %s" % (
                row["version"], "was changed after it was applied" if code == "SM701" else
                "is below the current version %d and was never applied"
                % report["current_version"])))
    bad = [m.version for m in linted if m not in loaded]
    run = _LintRun(loaded)
    stop = min(bad + [max([m.version for m in loaded] or [0]) + 1]) - 1
    blocked = min(bad) if bad else None
    if loaded and stop >= loaded[0].version:
        first = linted[0].version
        pending = set(m.version for m in migrator.pending()) if has_db else set()
        try:
            # --db is copied only while that fits in memory; a bigger one gets a
            # fresh build of its schema (its data would cost the time of every
            # rebuild the migrations do; the big-table rules read --db itself).
            real = migrator.path is not None and _real_path(migrator.path)
            if has_db and real and not _drift(report) and \
                    all(m.version in pending for m in linted) and sum(
                        os.path.getsize(real + suffix) for suffix in ("", "-wal")
                        if os.path.exists(real + suffix)) <= _MEMORY_COPY_BYTES:
                with _scratch_copy(migrator.path, migrator.busy_timeout) as conn:
                    run.run(migrator, conn, stop)
            else:
                conn = migrator._fresh_build(to=first - 1)
                try:
                    run.run(migrator, conn, stop)
                finally:
                    conn.close()
        except MigrationError as e:
            if e.kind in _DATABASE_KINDS and e.path is None:
                raise  # --db itself (locked, unreadable): no finding about a migration
            blocked = e.version if e.version is not None else blocked
            m = next((f for f in everything if f.path == e.path), None)
            line = e.line
            if m is not None and m.kind == "sql" and e.statement and m in loaded:
                line = next((lines[0] for sql, lines in _sql_statements(m)[1]
                             if sql == e.statement.strip(_SQL_SPACES)), None)
            findings.append(_lint_finding("SM003", e.path or migrator.directory, line,
                                          e.statement, "on the scratch database it %s" % e.cause
                                          if e.cause else str(e)))
    sites, allows_by_path = [], {}
    for m in loaded:
        if m.kind == "sql":
            text, statements, marker = _sql_statements(m)
        else:
            text = m.source.decode("utf-8", "replace")
            text = text[text.startswith("\ufeff"):]  # a BOM would hide the first `def`
            statements, marker = [], 0
        allows = _LintAllows(m, text, [lines for _, lines in statements], marker)
        findings += allows.findings
        context = _LintContext()
        context.schema = run.schemas.get(m.version)
        mine = []
        if m.kind == "sql":
            mine = [(line, sql, None) for sql, (line, _) in statements]
        elif m.version in run.statements:
            mine = run.statements[m.version]
        elif blocked is not None:
            findings.append(_lint_finding("SM004", m.path, None, None, "its statements were "
                                          "not seen: v%s failed before it" % blocked))
        for_file, transactional = [], m.transactional
        for line, sql, plan in mine:
            if plan == "helper":
                sites.append(("SM402", m, line, sql, _LintStatement(sql).table))
            elif plan is not None:
                statement = "rebuild of %s" % plan.table
                for_file += [(code, line, statement, message)
                             for code, message in _lint_rebuild(plan, transactional)]
                sites.append(("SM401", m, line, statement, plan.table))
            else:
                try:
                    s = _LintStatement(sql)
                    for rule in _LINT_STATEMENT_RULES:
                        for code, message in rule(s, transactional, context):
                            for_file.append((code, line, sql, message))
                except MigrationError as e:  # unbalanced parentheses and the like
                    for_file.append(("SM001", line, sql, str(e)))
                    continue
                if s.verb == "ALTER" and s.action == "DROP":
                    sites.append(("SM401", m, line, sql, s.table))
                elif s.verb == "CREATE" and s.object == "INDEX" and s.table:
                    sites.append(("SM402", m, line, sql, s.table))
        if not m.has_down:
            for_file.append(("SM801", None, None, "has no down: it cannot be rolled back"))
        allows_by_path[m.path] = allows
        findings += [_lint_finding(code, m.path, line, sql, message)
                     for code, line, sql, message in for_file]
    if has_db and sites:
        with _using(migrator.connection if migrator.path is None else migrator.path,
                    migrator.busy_timeout, mode="ro") as conn:
            findings += _lint_big_tables(conn, sites)
    if round_trip and loaded:
        versions = dict((m.version, m) for m in loaded)
        for entry in _MigrationTest(migrator).run()["migrations"]:
            m = versions.get(entry["version"])
            for failure in entry["failures"] if m else ():
                if failure["check"] == "round-trip":
                    findings.append(_lint_finding("SM802", m.path, None, None, failure[
                        "message"] + "".join("; %s %s %s" % (d["change"], d["type"], d["name"])
                                             for d in failure.get("diff", ()))))
    findings = [f._replace(allowed=f.path in allows_by_path and allows_by_path[f.path].reason(
        f.code, f.line) or f.statement is not None and _lint_inline_allow(f.statement, f.code))
        for f in findings]
    return sorted(findings, key=lambda f: (f.path or "", f.line or 0, f.code))


def _lint_inline_allow(sql, code):
    for match in re.compile(_ALLOW_RE).finditer(sql) if "sqlmigrate:" in sql else ():
        if code in re.split(r"[\s,]+", match.group(1).upper()):
            return (match.group(2) or "").strip() or "no reason given"
    return False


# --- Helpers: reading the schema ------------------------------------------
# Shared by the runner (schema file, baselines), `test` and the helpers below.

# Old SQLite limits a statement to 999 parameters.
_MAX_IN_LIST = 500


def _temp_tables(conn):
    """The keys of this connection's TEMP tables.  Such a table is what an
    unqualified name reaches first (ALTER TABLE, CREATE INDEX, UPDATE,
    pragma_table_info): a helper's change would land there, and the
    database would still lack it; see _hidden_by_temp."""
    return set(_key(name) for (name,) in _query(
        conn, "SELECT name FROM sqlite_temp_master WHERE type = 'table'"))


def _hidden_by_temp(name):
    return "a TEMP table named %s hides table main.%s on this connection; drop it first" % (
        name, name)


# A row of sqlite_master; _NO_SCHEMA_ROW (every field None) is a name nothing has.
_SchemaRow = collections.namedtuple("_SchemaRow", "type name tbl_name sql")
_NO_SCHEMA_ROW = _SchemaRow(None, None, None, None)


class _SchemaObjects(object):
    """sqlite_master rows (_SchemaRow) by name, looked up exactly first:
    case folding is only paid for when that misses."""

    def __init__(self, conn):
        self.rows = [_SchemaRow._make(row) for row in
                     _query(conn, "SELECT type, name, tbl_name, sql FROM sqlite_master")]
        self._by_name = dict((row.name, row) for row in self.rows)
        self._by_key = None

    def get(self, name):
        """The object named `name`, or _NO_SCHEMA_ROW."""
        row = self._by_name.get(name)
        if row is None:
            if self._by_key is None:
                self._by_key = dict((_key(row.name), row) for row in self.rows)
            row = self._by_key.get(_key(name), _NO_SCHEMA_ROW)
        return row


# How sqlite_master's text starts for a virtual table: SQLite writes that
# text itself, this and then the rest as given (vtab.c, every version), as an
# ordinary table's starts "CREATE TABLE ".
_VIRTUAL_TEXT = "CREATE VIRTUAL TABLE "


def _is_virtual(sql):
    """Whether sqlite_master's text `sql` makes a virtual table."""
    return bool(sql) and sql.startswith(_VIRTUAL_TEXT)


# A column as PRAGMA table_xinfo gives it ('hidden' 0 where only table_info exists).
_Column = collections.namedtuple("_Column", "cid name type notnull dflt_value pk hidden")
# table_xinfo's 'hidden' for a generated column, and its kind: INSERT ...
# VALUES skips such a column, SQLite computes it.
_GENERATED_KINDS = {2: "VIRTUAL", 3: "STORED"}


def _affinity(declared, strict=False):
    """A column's type affinity from its declared type, by SQLite's rules in
    their order (datatype3.html 3.1): INT, then CHAR, CLOB or TEXT, then BLOB
    (or no type), then REAL, FLOA or DOUB, else NUMERIC.  In a STRICT table
    ANY converts nothing (as BLOB); elsewhere it is NUMERIC."""
    # In ASCII only, as SQLite: str.upper() makes "\ufb02oat" FLOAT, NUMERIC to SQLite.
    declared = "".join(ch.upper() if ch < "\x80" else ch for ch in declared)
    if strict and declared == "ANY":
        return "BLOB"
    for affinity, marks in (("INTEGER", ("INT",)), ("TEXT", ("CHAR", "CLOB", "TEXT")),
                            ("BLOB", ("BLOB",)), ("REAL", ("REAL", "FLOA", "DOUB"))):
        if any(mark in declared for mark in marks):
            return affinity
    return "NUMERIC" if declared else "BLOB"


# A row of PRAGMA foreign_key_list: the parent table, the child's column and
# the parent's (None: the parent's primary key).
_ForeignKey = collections.namedtuple("_ForeignKey", "parent column to")


def _foreign_keys(conn, table):
    """The foreign keys of main.`table`, one _ForeignKey per column pair."""
    return [_ForeignKey(row[2], row[3], row[4]) for row in _query(
        conn, "PRAGMA main.foreign_key_list(%s)" % _quote_identifier(table))]


def _read_columns(conn, tables, names_only=False):
    """{table: [_Column per column]} for existing tables (exact names); with
    names_only {table: [column name]}, all a check of a big schema reads
    (one field a column, and no record made for it)."""
    columns, driver = dict((table, []) for table in tables), _driver(conn)
    if driver.has_pragma_functions:
        function = "pragma_table_xinfo" if driver.has_table_xinfo else "pragma_table_info"
        select = "p.name" if names_only else ", ".join(
            "0" if field == "hidden" and not driver.has_table_xinfo
            else "p." + _quote_identifier(field) for field in _Column._fields)
        if len(columns) <= _MAX_IN_LIST:
            wanted, params = "m.name IN (%s)" % ", ".join("?" * len(columns)), list(columns)
        else:
            # Many tables: one pass over the whole schema, which costs less than
            # several IN lists (each rescans sqlite_master).  Virtual tables are
            # left out: their pragma needs their module, which may not be loaded.
            wanted, params = "substr(m.sql, 1, %d) <> ?" % len(_VIRTUAL_TEXT), (_VIRTUAL_TEXT,)
        for row in _query(conn, "SELECT m.name, %s FROM sqlite_master AS m JOIN %s(m.name) AS p "
                          "WHERE m.type = 'table' AND %s" % (select, function, wanted), params):
            if row[0] in columns:
                columns[row[0]].append(row[1] if names_only else _Column._make(row[1:]))
        return columns
    pragma = "table_xinfo" if driver.has_table_xinfo else "table_info"
    width = len(_Column._fields)
    for table in tables:
        rows = _query(conn, "PRAGMA %s(%s)" % (pragma, _quote_identifier(table)))
        columns[table] = [row[1] if names_only else _Column._make((tuple(row) + (0,))[:width])
                          for row in rows]
    return columns


_ROWID_NAMES = ("rowid", "oid", "_rowid_")


def _rowid_alias(column_names):
    """A name that reaches the rowid (a column may take rowid, oid or _rowid_
    for itself); None if all three are taken."""
    taken = set(_key(name) for name in column_names)
    return next((alias for alias in _ROWID_NAMES if alias not in taken), None)


def _free_name(raw, base, planned=()):
    """`base`, or base_2, base_3 ...: the first name free in main and temp,
    and not among the `planned` keys (names a caller will create)."""
    taken = set(_key(row[0]) for row in _query(
        raw, "SELECT name FROM sqlite_master UNION ALL SELECT name FROM sqlite_temp_master"))
    taken.update(planned)
    name, n = base, 1
    while _key(name) in taken:
        n += 1
        name = "%s_%d" % (base, n)
    return name


# An ASCII name: any token naming it holds it whole, case aside, between
# characters no _WORD_RE word takes (quotes, spaces, punctuation).
_PLAIN_NAME_RE = r"[a-z0-9_]+\Z"
_WORD_RE = r"[a-z0-9_]+"
_ONLY_WORDS_RE = r"[A-Za-z0-9_ \t\n\f\r(),.*=<>+\-]*\Z"


def _schema_statements(conn, table=_DEFAULT_TABLE):
    """The schema's CREATE statements as SQLite stored them, in a stable
    order that replays: tables, indexes, views, each by name (views after
    the views they read), then triggers by table, each table's in the order
    they were made (the order they fire depends on it).  Left out: SQLite's
    own objects (sqlite_*, indexes made by constraints), the tracking tables
    and what is on them, and virtual tables' shadow tables (x_data...: the
    virtual table makes them)."""
    # SQLite leaves out its own objects and the tracking tables (NOCASE folds
    # ASCII only, as SQLite compares names).  Sorted here: Python's str order,
    # whatever the database's text encoding (SQLite's BINARY order differs
    # under UTF-16).  Three columns and no CASE: each costs a fifth of the
    # query on a big schema, where the sort and grouping here cost less.
    grouped = {"table": [], "index": [], "view": [], "trigger": []}
    for kind, name, sql in _query(conn, "SELECT type, name, sql FROM sqlite_master WHERE sql "
                                        "IS NOT NULL AND substr(tbl_name, 1, 7) COLLATE NOCASE "
                                        "<> 'sqlite_' AND tbl_name COLLATE NOCASE NOT IN (?, ?)",
                                  (table, table + "_migrations")):
        if kind in grouped:
            grouped[kind].append((name, sql))
    tables, indexes, views, triggers = [sorted(grouped[kind]) for kind in
                                        ("table", "index", "view", "trigger")]
    if len(triggers) > 1:
        # SQLite fires a table's triggers newest first (it loads them in
        # sqlite_master's rowid order, each put ahead of the others): replayed
        # by name (a baseline), two on one table could fire the other way
        # round and do something else.  So by table, each table's in the order
        # they were made; triggers made on other tables meanwhile change nothing.
        made = dict((name, (_key(on), i)) for i, (name, on) in enumerate(_query(
            conn, "SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger' "
                  "ORDER BY rowid")))
        triggers.sort(key=lambda trigger: made[trigger[0]])
    shadow = _shadow_tables(conn, tables)
    head = [sql for name, sql in tables if not (shadow and _key(name) in shadow)]
    head += [sql for _, sql in indexes]
    views = [(_key(name), sql) for name, sql in views]
    # Each view is tokenized once, and only when another view could be among
    # its names; it goes one level after the deepest view it reads (by name
    # within a level), found in one pass (Kahn's), not by rescanning all views
    # per level (a chain of views made that quadratic).
    names = set(name for name, _ in views) if len(views) > 1 else set()
    # With plain names (the usual case) a regex finds a view's words in C.
    # They are the tokenizer's words when the text has nothing but names,
    # spaces and operators (no quotes or comments, "--" included, which may
    # hold a name that is no reference); else the tokenizer decides.
    plain_name, word = re.compile(_PLAIN_NAME_RE), re.compile(_WORD_RE)
    only_words = re.compile(_ONLY_WORDS_RE)
    plain = all(plain_name.match(name) for name in names)
    reads = {}
    for name, sql in views if names else ():
        read = names.intersection(word.findall(sql.lower())) - set([name]) if plain else True
        if read and not (plain and "--" not in sql and only_words.match(sql)):
            read = names.intersection(_key(_unquote(text)) for kind, text in _tokenize(sql)
                                      if kind in ("word", "ident")) - set([name])
        reads[name] = read
    level, readers, left = {}, {}, dict((name, len(read)) for name, read in reads.items())
    for name, read in reads.items():
        for other in read:
            readers.setdefault(other, []).append(name)
    done = [name for name, _ in views if not left.get(name)]
    for name in done:  # grows while it is read
        for reader in readers.get(name, ()):
            level[reader] = max(level.get(reader, 0), level.get(name, 0) + 1)
            left[reader] -= 1
            if not left[reader]:
                done.append(reader)
    ordered = sorted(views, key=lambda view: level.get(view[0], 0))
    if len(done) < len(views):
        # A seeming cycle (a real one cannot be created): a view's name used
        # as a column alias reads as a reference.  The views in it go last,
        # in the order they were made, which SQLite before 3.9 required to be
        # an order that replays (it checked a view's tables at CREATE).
        made = dict((_key(name), i) for i, (name,) in enumerate(_query(
            conn, "SELECT name FROM sqlite_master WHERE type = 'view' ORDER BY rowid")))
        finished = set(done)
        ordered = [view for view in ordered if view[0] in finished] + sorted(
            [view for view in views if view[0] not in finished], key=lambda view: made[view[0]])
    return head + [sql for _, sql in ordered] + [sql for _, sql in triggers]


def _shadow_tables(conn, tables):
    """The keys of those of `tables` [(name, CREATE)] that are shadow tables
    of the virtual tables among them: only those (a user's "posts_tags" beside
    an fts5 "posts" is no shadow table).  SQLite's word where it has one."""
    virtual = [(name, sql) for name, sql in tables if _is_virtual(sql)]
    if not virtual:
        return set()
    if _driver(conn).has_table_list:
        return set(_key(row[1]) for row in _query(conn, "PRAGMA main.table_list")
                   if row[2] == "shadow")
    modules = {}
    for name, sql in virtual:
        cursor = _Create(sql).cursor
        if cursor.take("USING"):
            modules[_key(name)] = _key(cursor.name() or "")
    shadow = set()
    for name in (_key(name) for name, _ in tables):
        prefix, _, suffix = name.rpartition("_")
        if suffix in _SHADOW_SUFFIXES.get(modules.get(prefix), ()):
            shadow.add(name)
    return shadow


def _schema_sql(conn, version, table=_DEFAULT_TABLE):
    """The schema as an SQL script (`schema --sql`, the schema file):
    byte-identical for the same schema on every Python and SQLite."""
    user_version = _query(conn, "PRAGMA user_version")[0][0]
    lines = ["-- sqlmigrate schema, version %d" % version]
    lines += ["PRAGMA user_version = %d;" % user_version] if user_version else []
    return "\n".join(lines + [_terminated(sql) for sql in _schema_statements(conn, table)]) + "\n"


def _terminated(sql):
    """`sql` with its ";".  SQLite keeps a trailing "-- comment" in the text
    of an index or a view (not always with its newline): a ";" right after it
    would be commented out, so it goes on a line of its own."""
    if "--" in sql and _tokenize(sql)[-1][1].startswith("--"):
        return sql + "\n;"
    return sql + ";"


# --- Helpers: table rebuild -------------------------------------------------
# Where ALTER TABLE cannot (DROP COLUMN before 3.35.5, RENAME COLUMN before
# 3.25, any type or constraint change), SQLite's "generalized ALTER TABLE
# procedure" (sqlite.org/lang_altertable.html): new table under a free name,
# copy, drop, rename, recreate indexes and triggers, check views.  The new
# table is the old CREATE TABLE text edited token by token, never SQL made from
# PRAGMA table_info (which forgets CHECK, COLLATE, generated columns, STRICT...).

# With a progress callback, tables over 4 such ranges are copied range by range.
_COPY_CHUNK_ROWS = 250000
_ALL_ROWIDS = (-2 ** 63, 2 ** 63 - 1)

_TABLE_CONSTRAINT_WORDS = ("CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN")
# A name right after one of these words is a table, alias, type or collation,
# not a column.
_NOT_A_COLUMN_AFTER = ("COLLATE", "AS", "FROM", "JOIN", "INTO", "UPDATE", "TABLE")
# Where triggers and views that use a main table may live (TEMP: this connection's).
_SCHEMAS = (("main", "sqlite_master"), ("temp", "sqlite_temp_master"))
_NAMES = ("word", "ident", "string")

# SQLite's reserved words, never a name when bare (`t(a DESC)` or `a IS NOT
# NULL` uses no column "null"), and the keywords it also takes as names:
# where an operand may stand those may be a column, after an operand not.
_RESERVED = frozenset("""ADD ALL ALTER AND AS AUTOINCREMENT BETWEEN CASE CHECK COLLATE COMMIT
    CONSTRAINT CREATE DEFAULT DEFERRABLE DELETE DISTINCT DROP ELSE ESCAPE EXCEPT EXISTS FOREIGN
    FROM GROUP HAVING IN INDEX INSERT INTERSECT INTO IS ISNULL JOIN LIMIT NOT NOTHING NOTNULL
    NULL ON OR ORDER PRIMARY REFERENCES RETURNING SELECT SET TABLE THEN TO TRANSACTION UNION
    UNIQUE UPDATE USING VALUES WHEN WHERE""".split())
_KEYWORD_NAMES = frozenset("""ABORT ACTION AFTER ALWAYS ANALYZE ASC ATTACH BEFORE BEGIN BY
    CASCADE CAST COLUMN CONFLICT CURRENT DATABASE DEFERRED DESC DETACH DO EACH END EXCLUDE
    EXCLUSIVE EXPLAIN FAIL FILTER FIRST FOLLOWING FOR GENERATED GLOB GROUPS IF IGNORE IMMEDIATE
    INITIALLY INSTEAD KEY LAST LIKE MATCH MATERIALIZED NO NULLS OF OFFSET OTHERS OVER PARTITION
    PLAN PRAGMA PRECEDING QUERY RAISE RANGE RECURSIVE REGEXP REINDEX RELEASE RENAME REPLACE
    RESTRICT ROLLBACK ROW ROWS SAVEPOINT TEMP TEMPORARY TIES TRIGGER UNBOUNDED VACUUM VIEW
    VIRTUAL WINDOW WITH WITHOUT""".split())
# Keywords that are whole operands (a NULL, the time now).
_VALUE_WORDS = ("NULL", "CURRENT_DATE", "CURRENT_TIME", "CURRENT_TIMESTAMP")
# After an operand, these close it (`a DESC`, `CASE ... END`): what follows is
# still "after an operand" (NULLS LAST, an alias).
_CLOSING_WORDS = ("ASC", "DESC", "END", "NULLS", "FIRST", "LAST")
# A '(' after one of these opens a list of this table's column names (table
# constraints, an upsert target), where SQLite reads a 'string' as a name.
_NAME_LIST_AFTER = ("KEY", "UNIQUE", "CONFLICT")


def _column_refs(tokens, start, end, skip=(), name_lists=(), whole_list=False):
    """Indexes of tokens in [start, end) that may name a column: not a
    function, qualifier, table, alias, type, collation, keyword or the x of
    x'00'; 'strings' only where SQLite reads them as names (an entry of a
    column-name list - a '(' in name_lists, or [start, end) if whole_list -
    or SET 'b' = ...).  Errs towards "may": callers refuse on it."""
    cursor = _Cursor(tokens=tokens, i=start, end=end)
    refs, lists, back = [], [whole_list], [(None, None)] * 4
    # Whether the previous token ended an operand: a bare word after one is a
    # keyword or an alias (`a DESC`, `SELECT a b`), not a column.
    operand_end = False
    while not cursor.at_end():
        i = cursor.i
        (kind, text), before, after = cursor.advance(), back[-1], cursor.peek()
        prev, back = back, back[1:] + [(kind, text)]
        before_word = before[1].upper() if before[0] == "word" else None
        if kind == "punct":
            if text == "(":
                # INTO name ( / INTO schema.name ( opens an INSERT's column list.
                k = -3 if prev[-2] == ("punct", ".") else -1
                lists.append(i in name_lists or before_word in _NAME_LIST_AFTER or (
                    prev[k][0] in _NAMES and prev[k - 1][0] == "word"
                    and prev[k - 1][1].upper() == "INTO"))
            elif text == ")" and len(lists) > 1:
                lists.pop()
            operand_end = text == ")"
            continue
        if kind == "word":
            word = text.upper()
            if not (text[0].isalpha() or text[0] == "_" or ord(text[0]) > 127):
                operand_end = True  # a number
                continue
            if word in _RESERVED:
                operand_end = word in _VALUE_WORDS
                continue
            if word == "OF" and before_word == "UPDATE":
                operand_end = False  # a trigger's UPDATE OF column list follows
                continue
        was_operand_end, operand_end = operand_end, True
        if i in skip or kind not in _NAMES or before_word in _NOT_A_COLUMN_AFTER \
                or after in (("punct", "("), ("punct", ".")):
            continue
        if kind == "string":
            entry = lists[-1] and before in (("punct", "("), ("punct", ","), (None, None)) and (
                after in (("punct", ","), ("punct", ")"), (None, ""))
                or (after[0] == "word" and after[1].upper() in ("COLLATE", "ASC", "DESC")))
            if entry or after == ("punct", "=") and (before_word == "SET"
                                                     or before == ("punct", ",")):
                refs.append(i)
        elif kind == "ident":
            if not was_operand_end:
                refs.append(i)
        elif word == "X" and i + 1 < len(tokens) and tokens[i + 1][0] == "string":
            continue  # a blob literal x'00'
        elif was_operand_end:
            # A keyword after an operand (a DESC, a LIKE b) or an alias.
            operand_end = word in _CLOSING_WORDS or word not in _KEYWORD_NAMES
        elif word in _KEYWORD_NAMES:
            # Where an operand may stand a keyword-name may be a column, but
            # is more likely a keyword: what follows is not after an operand.
            operand_end = False
            if not (before_word == "NOT" or (word == "END" and before == ("punct", ";"))):
                refs.append(i)  # not NOT LIKE, nor a trigger's closing END
        else:
            refs.append(i)
    return refs


def _mentions(tokens, refs, keys):
    """The subset of `keys` that the tokens at `refs` name."""
    found = set(_key(_unquote(tokens[i][1])) for i in refs)
    return [k for k in keys if k in found]


# The words that start a column constraint, and so end its type name.
# (GENERATED does only before ALWAYS: SQLite drops a trailing "GENERATED
# ALWAYS" from the type, and takes a lone GENERATED as a type name.)
_COLUMN_CONSTRAINT_WORDS = ("CONSTRAINT", "PRIMARY", "NOT", "NULL", "UNIQUE", "CHECK",
                            "DEFAULT", "COLLATE", "REFERENCES", "GENERATED", "AS")


def _refused(message):
    """A rebuild refused before it changed anything."""
    return MigrationError(message, kind="rebuild-refused", outcome="nothing was changed")


def _cannot(verb, t, key, why, fix="change or drop that first"):
    return _refused("cannot %s column %s of table %s: %s; %s"
                    % (verb, t.old.column(key).name, t.name, why, fix))


def _names_in(sql):
    # 'strings' too: SQLite takes FROM 't' or INSERT INTO 'T T' as table names.
    cursor, names = _Cursor(sql), set()
    while not cursor.at_end():
        kind, text = cursor.advance()
        if kind in _NAMES:
            names.add(_key(_unquote(text)))
    return names


# An entry of a CREATE TABLE list, tokens [start, end), its first significant
# one at `first`: a column (name, key) or a table constraint (None, None).
_Item = collections.namedtuple("_Item", "start end first name key")


class _CreateTable(object):
    """A CREATE TABLE statement split into its entries (_Item)."""

    def __init__(self, sql, what):
        head = _Create(sql)
        cursor = head.cursor
        if head.kind != "TABLE":
            raise _refused("%s is not a CREATE TABLE statement: %s" % (what, sql))
        if head.virtual:
            raise _refused("%s is a virtual table; rebuild_table handles ordinary tables" % what)
        if cursor.peek() != ("punct", "("):
            raise _refused("%s has no column list (CREATE TABLE ... AS SELECT?): %s" % (what, sql))
        self.sql, self.tokens, self.name, self.temporary = sql, cursor.tokens, head.name, \
            head.temporary
        self.name_span = head.name_at, cursor.i
        self.items = []
        for start, end in cursor.comma_list():
            first = _Cursor(tokens=self.tokens, i=start, end=end)
            if first.at_end():
                raise _refused("empty entry in column list: %s" % sql)
            name = None if first.word() in _TABLE_CONSTRAINT_WORDS else _unquote(first.peek()[1])
            self.items.append(_Item(start, end, first.i, name, name and _key(name)))
        self.columns = [item for item in self.items if item.name is not None]
        self.rowid, self.strict = True, False
        while not cursor.at_end():  # the table options: WITHOUT ROWID, STRICT
            self.rowid = self.rowid and not cursor.take("WITHOUT", "ROWID")
            self.strict = self.strict or cursor.word() == "STRICT"
            at = cursor.i
            if cursor.advance() != ("punct", ";"):
                continue
            if not cursor.at_end() and not all(
                    token == ("punct", ";") for token in cursor.rest()):
                # The rebuild writes this text as one statement: a second one
                # would run (another driver) or fail half-way, unexplained (sqlite3).
                raise MigrationError("%s holds more than one statement: %s" % (what, sql),
                                     kind="bad-sql")
            self.tokens = self.tokens[:at]  # nor ';;', which sqlite3 takes for two

    def column(self, key):
        return next((item for item in self.columns if item.key == key), None)

    def text(self, start, end):
        return "".join(text for _, text in self.tokens[start:end])

    def groups(self, item):
        """(kind, lo, hi, parent) for each (...) of an entry that names
        columns: "expr" CHECK, "generated" AS, "list" PRIMARY KEY/UNIQUE/FOREIGN
        KEY, "ref" REFERENCES parent (parent's key only there)."""
        cursor, found, back = _Cursor(tokens=self.tokens, i=item.first, end=item.end), [], []
        while not cursor.at_end():
            if cursor.peek() != ("punct", "("):
                back.append(cursor.advance())
                continue
            words = [text.upper() if kind == "word" else None
                     for kind, text in ([(None, "")] * 2 + back)[-2:]]
            lo, hi = cursor.group()
            if words[1] == "CHECK":
                found.append(("expr", lo, hi, None))
            elif words[1] == "AS":
                found.append(("generated", lo, hi, None))
            elif words[1] == "UNIQUE" or words == ["PRIMARY", "KEY"] or words == ["FOREIGN", "KEY"]:
                found.append(("list", lo, hi, None))
            elif words[0] == "REFERENCES":
                found.append(("ref", lo, hi, _key(_unquote(back[-1][1]))))
            back.append(("punct", ")"))
        return found

    def has_word(self, item, word):
        return (("word", word) in ((k, t.upper()) for k, t in self.tokens[item.first:item.end]))

    def generated(self, item):
        return any(group[0] == "generated" for group in self.groups(item))

    def affinity(self, item):
        """The column's type affinity, from its type name."""
        return _affinity(self.type_name(item), self.strict)

    def type_name(self, item):
        """The column's declared type: the words after its name (unquoted, as
        SQLite reads them), up to its first constraint, and a (size) after
        them, which ends it."""
        cursor, words = _Cursor(tokens=self.tokens, i=item.first, end=item.end), []
        cursor.advance()  # the column's name
        while not cursor.at_end():
            if cursor.word() in _COLUMN_CONSTRAINT_WORDS:
                start = cursor.i
                if not (cursor.take("GENERATED") and cursor.word() != "ALWAYS"):
                    break
                cursor.i = start  # a lone GENERATED: a word of the type name
            if cursor.peek() == ("punct", "("):
                lo, hi = cursor.group()
                words.append("(%s)" % self.text(lo, hi))
                break
            kind, text = cursor.advance()
            words.append(_unquote(text) if kind in ("ident", "string") else text)
        return " ".join(words)

    def rowid_key(self):
        """The key of the column that is the table's rowid, as SQLite decides
        it: the only PRIMARY KEY column, declared exactly INTEGER, unless DESC
        follows PRIMARY KEY in the column's own definition (a quirk SQLite
        keeps); else None."""
        found = []  # (key, DESC after its PRIMARY KEY)
        for item in self.items if self.rowid else ():
            cursor = _Cursor(tokens=self.tokens, i=item.first, end=item.end)
            if item.name is None:
                if cursor.take("CONSTRAINT"):
                    cursor.advance()  # its name
                if cursor.take("PRIMARY", "KEY"):
                    for start, end in cursor.comma_list():
                        name = _Cursor(tokens=self.tokens, i=start, end=end).name()
                        found.append((name and _key(name), False))
                continue
            while not cursor.at_end():
                if cursor.take("PRIMARY", "KEY"):
                    found.append((item.key, cursor.word() == "DESC"))
                    break
                cursor.advance()
        if len(found) != 1 or found[0][1] or found[0][0] is None:
            return None
        column = self.column(found[0][0])
        return found[0][0] if column and _key(self.type_name(column)) == "integer" else None


def _refs_in(kind, sql):
    """A schema object's tokens and which may name a column: an index's from
    its column list (a list of names: ON t('b') indexes b), a view's from AS,
    a trigger's all but its own name and its table's."""
    tokens = _tokenize(sql)
    head = _Create(None, tokens)
    cursor, start, skip, lists = head.cursor, 0, set(), ()
    if kind == "trigger":
        skip.update(range(head.name_at or 0, cursor.i))
        while not cursor.at_end() and cursor.word() not in ("ON", "BEGIN"):
            cursor.advance()
        at = cursor.i
        if cursor.take("ON") and cursor.name() is not None:
            skip.update(range(at, cursor.i))
    elif kind == "index":
        cursor.take("ON")
        cursor.name()
        start, lists = cursor.i, (cursor.i,)
    else:
        while not cursor.at_end() and cursor.word() != "AS":
            cursor.advance()
        start = cursor.i
    return tokens, _column_refs(tokens, start, len(tokens), skip, lists)


def _uses(kind, sql, keys):
    """Which of `keys` (column keys) a schema object's SQL may use."""
    return _mentions(*_refs_in(kind, sql), keys)


def _describe(kind, schema, name):
    return "%s%s %s" % ("TEMP " if schema == "temp" else "", kind, name)


def _inserts_without_column_list(sql, key):
    """Whether a trigger's SQL has INSERT/REPLACE INTO <table `key`> followed
    by VALUES or SELECT rather than a column list (or DEFAULT VALUES)."""
    cursor = _Cursor(sql)
    while not cursor.at_end():
        if not cursor.take("INTO"):
            cursor.advance()
            continue
        name = cursor.name()
        if name is not None and _key(name) == key and \
                cursor.peek() != ("punct", "(") and cursor.word() != "DEFAULT":
            return True
    return False


class _Table(object):
    """What a rebuild must know about the table it changes, read from the schema."""

    def __init__(self, raw, table):
        rows = _query(raw, "SELECT name, sql FROM sqlite_master WHERE type = 'table' "
                           "AND name = ? COLLATE NOCASE", (table,))
        if not rows:
            raise _refused("no table named %r in the database" % (table,))
        self.name, sql = rows[0]
        self.key = _key(self.name)
        if self.key.startswith("sqlite_"):
            raise _refused("%s is an internal SQLite table; it cannot be rebuilt" % self.name)
        if self.key in _temp_tables(raw):
            raise _refused(_hidden_by_temp(self.name))
        self.old = _CreateTable(sql, "table %s" % self.name)
        self.quoted = "main." + _quote_identifier(self.name)
        columns = _read_columns(raw, [self.name])[self.name]
        if [c.name for c in self.old.columns] != [row.name for row in columns]:
            # A safety net for the parser: touch nothing it misreads.
            raise _refused("could not read the column list of %s from its CREATE TABLE text "
                           "(found %s, SQLite says %s); please report this with the table's SQL"
                           % (self.quoted, [c.name for c in self.old.columns],
                              [r.name for r in columns]))
        self.pk_keys = set(_key(row.name) for row in columns if row.pk)
        self.rowid_key = self.old.rowid_key()  # the column that is the rowid, if any
        self.pk_names = [row.name for row in sorted(columns, key=lambda row: row.pk) if row.pk]
        self.affinities = dict((_key(row.name), _affinity(row.type, self.old.strict))
                               for row in columns)
        # Generated columns, which INSERT ... VALUES skips.
        self.generated_keys = set(_key(row.name) for row in columns
                                  if row.hidden in _GENERATED_KINDS)
        self.indexes = _query(raw, "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                                   "AND tbl_name = ? COLLATE NOCASE AND sql IS NOT NULL "
                                   "ORDER BY rowid", (self.name,))
        # A TEMP trigger on a main table lives on this connection only, and
        # DROP TABLE drops it too: it must be recreated, not lost silently.
        self.triggers, self.others, self.views = [], [], []
        for schema, master in _SCHEMAS:
            for kind, name, tbl, sql in _query(
                    raw, "SELECT type, name, tbl_name, sql FROM %s WHERE type IN "
                         "('view', 'trigger') ORDER BY rowid" % master):
                if kind == "trigger" and _key(tbl) == self.key:
                    self.triggers.append((schema, name, sql))
                elif sql and self.key in _names_in(sql):
                    self.others.append((schema, kind, name, sql))  # views, others' triggers
                if kind == "view" and _view_compiles(raw, schema, name):
                    self.views.append((schema, name))
        self.children = []  # (table, from, to): other tables' foreign keys to this one
        for (other,) in _query(raw, "SELECT name FROM sqlite_master WHERE type = 'table' "
                                    "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"):
            if _key(other) != self.key:
                self.children += [(other, fk.column, fk.to) for fk in _foreign_keys(raw, other)
                                  if _key(fk.parent) == self.key]
        self.dependents = [(s, "trigger", n, sql) for s, n, sql in self.triggers] + self.others
        self.own_foreign_keys = _foreign_keys(raw, self.name)  # (parent, column, to)


def _view_compiles(raw, schema, name):
    try:
        _query(raw, "SELECT * FROM %s.%s LIMIT 0" % (schema, _quote_identifier(name)))
        return True
    except _DB.Error:
        return False


class _RebuildPlan(object):
    """Everything a rebuild will do, decided before anything changes; never
    changed after.  `native`: SQLite's own ALTER TABLE, else the copy."""

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def __setattr__(self, name, value):
        raise AttributeError("a rebuild plan is not changed once made")


def _plan_rebuild(conn, table, drop=(), rename=None, create_sql=None, native=None):
    """Read the table, check every refusal and decide every statement,
    changing nothing.  native=False takes the copy path, the only one
    SQLite < 3.25 has, as if the native ALTER TABLE were missing."""
    raw, rename = _raw(conn), dict(rename or {})
    t = _Table(raw, table)
    old = t.old
    for name in list(drop) + list(rename):
        if old.column(_key(name)) is None:
            raise _refused("table %s has no column %r; its columns are %s"
                           % (t.name, name, ", ".join(c.name for c in old.columns)))
    drop_keys = [_key(name) for name in drop]
    rename = dict((_key(k), v) for k, v in rename.items())
    for key in drop_keys:
        if key in rename:
            raise _refused("column %s is both dropped and renamed" % old.column(key).name)
    if create_sql is None:
        new = None
        if len(set(drop_keys)) >= len(old.columns):
            raise _refused("cannot drop every column of table %s; drop the table instead"
                           % t.name)
        mapping = [(rename.get(c.key, c.name), c.name) for c in old.columns
                   if c.key not in drop_keys]
        keys = [_key(new_name) for new_name, _ in mapping]
        for i, (new_name, _) in enumerate(mapping):
            if keys[i] in keys[:i]:
                raise _refused("renaming would give table %s two columns named %s"
                               % (t.name, new_name))
        dropped = sorted(set(drop_keys), key=drop_keys.index)
        for key in dropped:
            _check_own_constraints(t, key)
    else:
        new = _CreateTable(create_sql, "create_sql")
        if new.temporary:
            raise _refused("create_sql must create an ordinary table, not a TEMP one")
        if _key(new.name) != t.key:
            raise _refused("create_sql creates table %s, not %s" % (new.name, t.name))
        renamed_to = dict((_key(v), k) for k, v in rename.items())
        for target in renamed_to:
            if new.column(target) is None:
                raise _refused("rename gives column %s but create_sql has no such column"
                               % rename[renamed_to[target]])
        mapping = []
        for column in new.columns:
            source = renamed_to.get(column.key)
            if source is None and column.key not in rename and old.column(column.key):
                source = column.key
            mapping.append((column.name, old.column(source).name if source else None))
        sources = set(_key(old_name) for _, old_name in mapping if old_name)
        for key in drop_keys:
            if key in sources:
                raise _refused("column %s is in drop= but create_sql keeps it"
                               % old.column(key).name)
        dropped = [c.key for c in old.columns if c.key not in sources]
    renamed = [(old.column(k).name, v) for k, v in rename.items()
               if _key(v) != k or old.column(k).name != v]
    dropped_indexes = _check_dependents(t, dropped, mapping, create_sql)
    _refuse_foreign_keys_on(raw, t, copy=False)
    driver = _driver(raw)
    # RENAME COLUMN runs one rename at a time: a new name that is another
    # renamed column's old one (a swap, a chain) would find it taken.
    olds = set(_key(o) for o, _ in renamed)
    one_by_one = not set(_key(v) for _, v in renamed) & olds
    if native is None:
        # Native DROP COLUMN refuses a column with its own UNIQUE constraint.
        native = create_sql is None and (
            not renamed or driver.has_rename_column and one_by_one) and (
            not dropped or driver.has_drop_column and
            not any(old.has_word(old.column(k), "UNIQUE") for k in dropped))
        # Else RENAME COLUMN after the copy (if the renames can run one by
        # one): SQLite then rewrites every trigger, view and foreign key.
        tail = bool(renamed) and driver.has_rename_column and one_by_one and not (
            new is not None and olds & set(c.key for c in new.columns))
    else:
        native = tail = False
    fields = dict(table=t.name, quoted=t.quoted, native=native, create_sql=create_sql,
                  dropped=tuple(old.column(k).name for k in dropped), renamed=tuple(renamed),
                  dropped_indexes=tuple((name, "it uses a dropped column")
                                        for name, _ in dropped_indexes))
    if native:
        return _RebuildPlan(tail_renames=False, copy_sql=None, checks=(), **fields)
    for old_name, _ in [] if tail else renamed:
        # Without RENAME COLUMN only the table's own text and its indexes
        # can be rewritten safely: refuse rather than leave anything broken.
        user = _user_of(t, [_key(old_name)])
        if user and driver.has_rename_column and not one_by_one:
            raise _cannot("rename", t, _key(old_name), "%s, and RENAME COLUMN, which renames "
                          "one column at a time, cannot give columns each other's names" % user,
                          "rename in two calls, through a name no column has")
        if user:
            raise _cannot("rename", t, _key(old_name), "%s, and without RENAME COLUMN (SQLite "
                          "3.25+; this is %s) it would keep the old name" % (
                              user, driver.version_text),
                          "drop it, rebuild, and create it again with the new name")
    _refuse_foreign_keys_on(raw, t, copy=True)
    temp = _free_name(raw, "sqlmigrate_new_%s" % t.name)
    if new is None:
        new_sql = old.sql
        for key in dropped:
            new_sql = _cut_column(_CreateTable(new_sql, "table %s" % t.name), key)
        if renamed and not tail:
            new_sql = _renamed_columns_sql(_CreateTable(new_sql, "table %s" % t.name), t.key,
                                           rename)
        # Keys in the new table's names: renamed already unless the renames come last.
        generated = t.generated_keys if tail else set(
            _key(rename.get(k, k)) for k in t.generated_keys)
    else:
        new_sql = create_sql
        if tail:  # the new table takes the old names until the final RENAME COLUMN
            back = dict((_key(v), o) for o, v in renamed)
            new_sql = _renamed_columns_sql(new, t.key, back)
        generated = set(c.key for c in new.columns if new.generated(c))
    new = _without_own_qualifiers(_CreateTable(new_sql, "the new table"), t.key)
    if tail:
        mapping = [(o, o) if o else (n, o) for n, o in mapping]
    rowid = _rowid_alias([c.name for c in old.columns + new.columns]) \
        if old.rowid and new.rowid else None
    # A column whose type affinity changes has its values converted as they
    # are copied (TEXT '007' -> INTEGER 7, REAL 0.1 + 0.2 -> TEXT '0.3').
    converted = [(n, o) for n, o in mapping if o is not None and _key(n) not in generated
                 and new.affinity(new.column(_key(n))) != t.affinities[_key(o)]]
    # A stored column made generated: SQLite computes it instead of taking
    # the copy, and a stored value the expression does not give is lost.
    computed = [(n, o) for n, o in mapping if o is not None and _key(n) in generated
                and _key(o) not in t.generated_keys]
    # A column that becomes the rowid (INT PRIMARY KEY made INTEGER PRIMARY
    # KEY) gives each row its value as rowid, where the copy gave the old
    # one: a row whose value is not its rowid (or NULL, which gets a new
    # number, maybe another row's) would change.  Checked on the old table
    # before the copy for the column the new text makes the rowid; and,
    # since SQLite is the judge, after the copy for any INTEGER column
    # (the check finds a row only where that column is the rowid now).
    becomes_rowid = [o for n, o in mapping if rowid and create_sql is not None and o is not None
                     and _key(n) == new.rowid_key() and _key(o) != t.rowid_key]
    before_copy = tuple(_RebuildStep("rowid-check", (
        "SELECT o.{r}, o.{o} FROM {table} AS o WHERE o.{o} IS NOT o.{r} ORDER BY o.{r} "
        "LIMIT 1").format(r=rowid, o=_quote_identifier(o), table=t.quoted), o)
        for o in becomes_rowid)
    rowid_checks = tuple(_RebuildStep("rowid-check", (
        "SELECT o.{r}, o.{o} FROM {table} AS o WHERE NOT EXISTS (SELECT 1 FROM main.{temp} "
        "WHERE {n} IS NOT {r}) AND o.{o} IS NOT o.{r} ORDER BY o.{r} LIMIT 1").format(
            r=rowid, o=_quote_identifier(o), n=_quote_identifier(n), table=t.quoted,
            temp=_quote_identifier(temp)), o)
        for n, o in mapping if rowid and create_sql is not None and o is not None
        and _key(n) not in generated and _key(o) != t.rowid_key
        and new.affinity(new.column(_key(n))) == "INTEGER")
    # SQLite computes generated columns itself.  The rowid goes first, so an
    # INTEGER PRIMARY KEY column listed after it wins.
    pairs = [(rowid, rowid)] if rowid else []
    pairs += [(_quote_identifier(n), _quote_identifier(o)) for n, o in mapping
              if o is not None and _key(n) not in generated]
    copy_sql = None
    if pairs:
        # OR ABORT overrides the new table's own ON CONFLICT IGNORE/REPLACE,
        # which would skip, delete or rewrite copied rows without an error.
        copy_sql = "INSERT OR ABORT INTO main.%s (%s) SELECT %s FROM %s%s" % (
            _quote_identifier(temp), ", ".join(n for n, _ in pairs),
            ", ".join(o for _, o in pairs), t.quoted,
            " WHERE %s BETWEEN ? AND ?" % rowid if rowid else "")
    sequence = None
    if any(new.has_word(item, "AUTOINCREMENT") for item in new.items):
        rows = _query(raw, "SELECT seq FROM sqlite_sequence WHERE name = ?", (t.name,)) \
            if _query(raw, "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'") else []
        sequence = (rows[0][0] if rows else None,)
    renames = dict((_key(o), v) for o, v in renamed)
    final, renames = (renames, {}) if tail else ({}, renames)
    gone = set(name for name, _ in dropped_indexes)
    return _RebuildPlan(
        tail_renames=tail, temp=temp, rowid=rowid, copy_sql=copy_sql, sequence=sequence,
        strict=new.strict, before_copy=before_copy,
        checks=rowid_checks + _conversion_checks(t, temp, rowid, mapping, converted, computed,
                                                 driver.has_printf),
        new_sql=new.text(0, new.name_span[0]) + _quote_identifier(temp) + " " +
        new.text(new.name_span[1], len(new.tokens)),
        columns=tuple((final.get(c.key, c.name), c.key in generated or new.generated(c),
                       new.affinity(c)) for c in new.columns),
        indexes=tuple(_renamed(*_refs_in("index", sql) + (renames,)) if renames else sql
                      for name, sql in t.indexes if name not in gone),
        # sqlite_temp_master keeps "CREATE TRIGGER ..." without TEMP; run as
        # it is, it would create the trigger in main for every connection.
        triggers=tuple(sql if schema == "main" else re.sub(r"^(\s*\w+)", r"\1 TEMP", sql, count=1)
                       for schema, _, sql in t.triggers),
        views=tuple(t.views), **fields)


def _conversion_checks(t, temp, rowid, mapping, converted, computed, printf):
    """For each column the copy converts, a _RebuildStep "check": a query for
    the first row whose new value does not convert back, as the old value's
    type, to the old value (REAL 0.30000000000000004 read back from TEXT
    '0.3'); for each one made generated (`computed`), whose new value is not
    the old one, type included.  Rows are matched by rowid, else by the old
    key; the row's key (rowid, else PRIMARY KEY) comes first, then the old
    and new values.  TEXT made REAL also keeps a value written with 15, 16
    or 17 digits (Python's repr: '0.30000000000000004'), where SQL has printf()."""
    if not converted and not computed:
        return ()
    q, kept = _quote_identifier, dict((_key(o), n) for n, o in mapping if o is not None)
    if rowid:
        on = [(rowid, rowid)]
    else:
        on = [(q(kept[_key(k)]), q(k)) for k in t.pk_names if _key(k) in kept]
        if not on or len(on) < len(t.pk_names):
            raise _refused("changing the type of column %s of table %s converts its values, "
                           "and without a rowid or a kept PRIMARY KEY the copy cannot be matched "
                           "to the old rows to check that none changed"
                           % ((list(converted) + list(computed))[0][1], t.name))
    shown = [k for k in t.pk_names] if t.pk_names else [rowid]
    keys = ", ".join("o.%s" % (k if k == rowid else q(k)) for k in shown)
    checks = []
    for n, o, is_computed in [c + (False,) for c in converted] + [c + (True,) for c in computed]:
        n, o = "n." + q(n), "o." + q(o)
        same = ("typeof({o}) = typeof({n}) OR CASE typeof({o}) "
                "WHEN 'text' THEN CAST({n} AS TEXT) = {o} COLLATE BINARY {digits}"
                "WHEN 'integer' THEN CAST({n} AS INTEGER) = {o} "
                # CAST saturates: REAL 2^63 (from 2^63 - 1) comes back as 2^63 - 1.
                "AND (typeof({n}) <> 'real' OR {n} < 9223372036854775807.0) "
                "WHEN 'real' THEN CAST({n} AS REAL) = {o} ELSE 0 END").format(o=o, n=n, digits=(
                    "OR typeof({n}) = 'real' AND {o} COLLATE BINARY IN (printf('%!.15g', {n}), "
                    "printf('%!.16g', {n}), printf('%!.17g', {n})) ".format(o=o, n=n)
                    if printf else ""))
        if is_computed:
            same = "typeof({o}) = typeof({n}) AND {o} IS {n} COLLATE BINARY".format(o=o, n=n)
        checks.append(_RebuildStep("check", (
            "SELECT {keys}, {o}, {n} FROM {table} AS o LEFT JOIN main.{temp} AS n ON {on} "
            "WHERE NOT (n.{first} IS NOT NULL AND ({same})) ORDER BY {keys} LIMIT 1").format(
                keys=keys, o=o, n=n, table=t.quoted, temp=q(temp), first=on[0][0], same=same,
                on=" AND ".join("n.%s = o.%s" % pair for pair in on)),
            (o[2:], tuple(shown), is_computed)))
    return tuple(checks)


def _check_own_constraints(t, key):
    """A dropped column must not be needed by the rest of its own table."""
    old, column = t.old, t.old.column(key)
    fix = "with rebuild_table(create_sql=...)"
    if key in t.pk_keys:
        raise _cannot("drop", t, key, "it is (part of) the PRIMARY KEY",
                      "give the table its new key " + fix)
    for item in old.items:
        for kind, lo, hi, parent in old.groups(item):
            if (kind == "ref" and parent != t.key) or (item is column and kind in ("expr", "generated")):
                continue  # another table's key; its own CHECK goes with it
            if _mentions(old.tokens, _column_refs(old.tokens, lo, hi, whole_list=kind == "list"),
                         [key]):
                what = ("column %s" % item.name) if item.name is not None else \
                    "constraint %s" % " ".join(old.text(item.first, item.end).split())
                raise _cannot("drop", t, key, what + " needs it", "change that " + fix)
    for parent, source, target in t.own_foreign_keys:
        if _key(source) == key or (_key(parent) == t.key and target and _key(target) == key):
            raise _cannot("drop", t, key, "a foreign key of %s uses it (REFERENCES %s)"
                          % (t.name, parent), "change it " + fix)


def _user_of(t, keys):
    """What else (another table's foreign key, a trigger, a view) uses one of
    the columns `keys`, as a sentence; None if nothing does."""
    for child, source, target in t.children:
        if target is not None and _key(target) in keys:
            return "table %s has a foreign key to it (%s.%s)" % (child, child, source)
    for schema, kind, name, sql in t.dependents:
        if _uses(kind, sql, keys):
            return "%s uses it" % _describe(kind, schema, name)
    return None


def _check_dependents(t, dropped, mapping, create_sql):
    """Refuse where a trigger, view or other table's foreign key would
    break; return the indexes that go with the dropped columns."""
    old = t.old
    for key in dropped:
        user = _user_of(t, [key])
        if user:
            raise _cannot("drop", t, key, user)
    if [k for k in dropped if k not in t.generated_keys] or (
            create_sql is not None and len(mapping) != len(old.columns)):
        # INSERT INTO t VALUES (...) lists a value per column: once the table
        # has another number of columns the trigger fails at every firing.
        for schema, kind, name, sql in t.dependents:
            if kind == "trigger" and _inserts_without_column_list(sql, t.key):
                raise _refused(
                    "cannot change the columns of table %s: %s inserts into it without a "
                    "column list (INSERT INTO %s VALUES ...), which would no longer match; "
                    "name the columns in the trigger first"
                    % (t.name, _describe("trigger", schema, name), t.name))
    dropped_indexes = [(index, sql) for index, sql in t.indexes if _uses("index", sql, dropped)]
    # A dropped column named rowid, oid or _rowid_ leaves its name to the
    # table's rowid: an index that used the column would silently index (or,
    # partial or UNIQUE, filter on) the rowid instead, as SQLite's own DROP
    # COLUMN leaves it; refuse rather than drop or change it.
    kept = set(_key(new) for new, _ in mapping)
    for key in dropped if old.rowid else ():
        if key in _ROWID_NAMES and key not in kept:
            for index, sql in dropped_indexes:
                if _uses("index", sql, [key]):
                    raise _cannot("drop", t, key, "index %s uses it, and without the column "
                                  "the name %s there would mean the table's rowid" % (
                                      index, old.column(key).name), "drop the index first")
    return dropped_indexes


def _renamed(tokens, indexes, renamed):
    """The text of `tokens` with the names at `indexes` renamed ({key: new})."""
    out = [text for _, text in tokens]
    for i in indexes:
        key = _key(_unquote(tokens[i][1]))
        if key in renamed:
            out[i] = _quote_identifier(renamed[key])
    return "".join(out)


def _renamed_columns_sql(parsed, table_key, renamed):
    """The CREATE TABLE text with columns renamed wherever its own text names them."""
    indexes = [c.first for c in parsed.columns]
    for item in parsed.items:
        for kind, lo, hi, parent in parsed.groups(item):
            if kind != "ref" or parent == table_key:
                indexes += _column_refs(parsed.tokens, lo, hi, whole_list=kind in ("list", "ref"))
    return _renamed(parsed.tokens, indexes, renamed)


def _cut_column(parsed, key):
    """The text without one column, cut exactly as SQLite's own DROP COLUMN cuts it."""
    columns = parsed.columns
    n = [c.key for c in columns].index(key)
    if n + 1 < len(columns):
        # From its name to the next column's name, comma and comments included.
        return parsed.text(0, columns[n].first) + parsed.text(columns[n + 1].first, len(
            parsed.tokens))
    # The last column: from the comma before it to the end of its entry.
    return parsed.text(0, columns[n].start - 1) + parsed.text(columns[n].end, len(parsed.tokens))


def _without_own_qualifiers(parsed, key):
    """The table without `t.` before column names in its CHECK and generated
    expressions: the copy is created under a temporary name, where t.a would
    name no table."""
    tokens, cut = parsed.tokens, set()
    for item in parsed.items:
        for kind, lo, hi, _ in parsed.groups(item):
            if kind not in ("expr", "generated"):
                continue
            cursor, before = _Cursor(tokens=tokens, i=lo, end=hi), None
            while not cursor.at_end():
                i = cursor.i
                kind_, text = cursor.advance()
                if kind_ in _NAMES and before != ("punct", ".") and \
                        _key(_unquote(text)) == key and cursor.punct("."):
                    cut.update(range(i, cursor.i))
                before = (kind_, text)
    if not cut:
        return parsed
    return _CreateTable("".join(t for i, (_, t) in enumerate(tokens) if i not in cut),
                        "the new table")


def _refuse_foreign_keys_on(raw, t, copy):
    """Foreign keys on inside the caller's transaction (where the pragma
    cannot be switched off): dropping the old table would fire ON DELETE
    actions in every table referencing it; and on the copy path, copying rows
    with deferred foreign keys (DEFERRABLE INITIALLY DEFERRED, or PRAGMA
    defer_foreign_keys) moves SQLite's count of deferred violations, which
    only the caller's COMMIT reads - and SQLite counts some valid rows too (a
    REAL column referencing an INTEGER PRIMARY KEY) - so we could report
    success for a COMMIT that then fails."""
    if not _foreign_keys_enabled(raw):
        return
    referencing = sorted(set(child for child, _, _ in t.children))
    if any(_key(parent) == t.key for parent, _, _ in t.own_foreign_keys):
        referencing.append("%s itself" % t.name)
    why = referencing and "%s references it, and dropping the old table would fire their " \
        "ON DELETE actions" % ", ".join(referencing)
    if not why and copy and t.own_foreign_keys:
        # PRAGMA defer_foreign_keys arrived in SQLite 3.8.0; before, it returns no row.
        rows = _query(raw, "PRAGMA defer_foreign_keys")
        deferred = bool(rows and rows[0][0])
        cursor = _Cursor(t.old.sql)
        while not (deferred or cursor.at_end()):
            if not cursor.take("NOT", "DEFERRABLE"):
                deferred = cursor.take("DEFERRABLE", "INITIALLY", "DEFERRED")
                cursor.advance()
        why = deferred and "its foreign keys are deferred, and copying its rows would leave " \
            "SQLite's count of deferred violations for your COMMIT to trip on"
    if why:
        raise _refused("cannot rebuild table %s inside your transaction while foreign keys are "
                       "on: %s; call it outside a transaction (it switches foreign keys off "
                       "itself) or set PRAGMA foreign_keys = OFF before BEGIN" % (t.name, why))


# One statement a rebuild runs, and how: "execute" it; "copy" the rows with
# it (_copy_rows: range by range under a progress callback); "check" or
# "rowid-check" the copy with its query (_check_conversion, _check_rowid_column:
# a row found refuses); or "legacy_alter_table": set that connection flag to
# `value` with _set_pragma (`sql` says the same, for a reader).
_RebuildStep = collections.namedtuple("_RebuildStep", "action sql value")


def _executed(statements):
    return [_RebuildStep("execute", sql, None) for sql in statements]


def _legacy_alter_table(on):
    return _RebuildStep("legacy_alter_table",
                        "PRAGMA legacy_alter_table = %s" % ("ON" if on else "OFF"), on)


def _rebuild_statements(plan):
    """The statements a plan runs, in order, as _RebuildSteps.  With a rowid,
    the copy's two parameters are the first and last rowid of a range
    (_ALL_ROWIDS: all)."""
    q, out = _quote_identifier, []
    renames = _executed("ALTER TABLE %s RENAME COLUMN %s TO %s" % (plan.quoted, q(old), q(new))
                        for old, new in plan.renamed)
    if plan.native:
        out += _executed("DROP INDEX main.%s" % q(index) for index, _ in plan.dropped_indexes)
        # Drops first: a column may be renamed to the name of one being dropped.
        return out + [_legacy_alter_table(False)] + _executed(
            "ALTER TABLE %s DROP COLUMN %s" % (plan.quoted, q(c)) for c in plan.dropped) + renames
    out += list(plan.before_copy) + _executed([plan.new_sql])
    out += [_RebuildStep("copy", plan.copy_sql, None)] if plan.copy_sql else []
    out += list(plan.checks) if plan.copy_sql else []
    # Legacy mode for the rename back: nothing refers to the temporary name,
    # and SQLite 3.26+ would otherwise re-check (and may rewrite) every view
    # and trigger in the schema while the old table is gone.
    out += _executed(["DROP TABLE " + plan.quoted]) + [_legacy_alter_table(True)] + _executed(
        ["ALTER TABLE main.%s RENAME TO %s" % (q(plan.temp), q(plan.table))])
    if plan.sequence:
        # The copy set the AUTOINCREMENT counter to the highest rowid copied;
        # the old counter may be higher (its last rows deleted), and ids must
        # not be reused.  No counter before: none after.
        name = "'%s'" % plan.table.replace("'", "''")
        out += _executed(["DELETE FROM sqlite_sequence WHERE name = %s" % name])
        if plan.sequence[0] is not None:
            out += _executed(["INSERT INTO sqlite_sequence (name, seq) VALUES (%s, %d)"
                              % (name, plan.sequence[0])])
    out += _executed(plan.indexes) + _executed(plan.triggers)
    if plan.tail_renames:
        out += [_legacy_alter_table(False)] + renames
    return out


def _run_rebuild(conn, plan, progress=None, chunk_rows=_COPY_CHUNK_ROWS):
    """Run a plan's statements; the rows copied (None in place).  The caller
    holds the transaction."""
    raw, copied = _raw(conn), None
    legacy = _query(raw, "PRAGMA legacy_alter_table")  # no row before SQLite 3.25
    try:
        for step in _rebuild_statements(plan):
            if step.action == "copy":
                copied = _copy_rows(conn, plan, progress, chunk_rows)
            elif step.action == "check":
                _check_conversion(raw, plan, step)
            elif step.action == "rowid-check":
                _check_rowid_column(raw, plan, step)
            elif step.action == "legacy_alter_table":
                _set_pragma(conn, "legacy_alter_table", step.value)
            else:
                conn.execute(step.sql)
    finally:
        if legacy:  # a connection flag, which a rollback does not undo
            _set_pragma(conn, "legacy_alter_table", legacy[0][0])
    if plan.native:
        return None
    columns = [(row.name, row.hidden in _GENERATED_KINDS, _affinity(row.type, plan.strict))
               for row in _read_columns(raw, [plan.table])[plan.table]]
    if columns != list(plan.columns):
        raise MigrationError("the rebuilt table %s has columns %s, not %s as read from its "
                             "CREATE TABLE text" % (plan.table, columns, list(plan.columns)),
                             outcome="the rebuild was rolled back - please report this")
    # The 12-step procedure's step 9: views that compiled before must still
    # (a view over a view over the table, which our reading does not follow).
    for schema, name in plan.views:
        if not _view_compiles(raw, schema, name):
            raise MigrationError("after rebuilding table %s, %s no longer compiles" % (
                plan.table, _describe("view", schema, name)), outcome="the rebuild was rolled back")
    return copied


def _check_conversion(raw, plan, step):
    rows = _query(raw, step.sql)
    if rows:
        column, key, computed = step.value
        *row, old, new = rows[0]
        if None in row:  # a rowid table's PRIMARY KEY may hold NULL, which joins no row
            raise _refused("changing column %s of table %s converts its values, and a row whose "
                           "%s is NULL cannot be matched to its copy to check that none changed"
                           % (_unquote(column), plan.table, ", ".join(key)))
        raise _refused(
            "%s column %s of table %s%s would change a stored value: the row with %s = %s "
            "holds %r, which would be %s as %r; change such values first (so that they %s), "
            "or keep the column%s" % (
                "making" if computed else "changing the type of", _unquote(column), plan.table,
                " generated" if computed else "",
                key[0] if len(key) == 1 else "(%s)" % ", ".join(key),
                repr(row[0]) if len(row) == 1 else "(%s)" % ", ".join(map(repr, row)), old,
                "computed" if computed else "stored", new,
                "are what the expression gives" if computed else "convert back unchanged",
                " stored" if computed else "'s type"))


def _check_rowid_column(raw, plan, step):
    rows = _query(raw, step.sql)
    if rows:
        raise _refused(
            "column %s of table %s would become its rowid (INTEGER PRIMARY KEY), but the row "
            "with rowid %r holds %r there: its rowid or its %s would change; give every row "
            "a distinct %s equal to its rowid first (NULLs filled in, then UPDATE %s SET rowid "
            "= %s), or keep the column's type"
            % (step.value, plan.table, rows[0][0], rows[0][1], step.value, step.value,
               _quote_identifier(plan.table), _quote_identifier(step.value)))


def _copy_rows(conn, plan, progress, chunk_rows):
    """INSERT ... SELECT inside SQLite: no row passes through Python.  Range
    by range only when a progress callback watches a big table: finding each
    range's end (an OFFSET scan) costs about 3%."""
    if plan.rowid is None:
        return max(conn.execute(plan.copy_sql).rowcount, 0)
    raw, (low, last), copied = _raw(conn), _ALL_ROWIDS, 0
    total = _query(raw, "SELECT count(*) FROM %s" % plan.quoted)[0][0] if progress else 0
    while True:
        ends = _query(raw, "SELECT {0} FROM {1} WHERE {0} >= ? ORDER BY {0} LIMIT 1 OFFSET ?"
                      .format(plan.rowid, plan.quoted), (low, chunk_rows - 1)) \
            if total > 4 * chunk_rows else []
        high = ends[0][0] if ends else last
        copied += max(conn.execute(plan.copy_sql, (low, high)).rowcount, 0)
        if progress:
            progress(plan.table, copied, total)
        if high == last:
            return copied
        low = high + 1


def _log_changes(plan, rows):
    changes = []
    for index, why in plan.dropped_indexes:
        changes.append("dropped index %s on %s: %s" % (index, plan.table, why))
        _log("warning", changes[-1])
    parts = ["dropped column%s %s" % ("s" if len(plan.dropped) > 1 else "",
                                      ", ".join(plan.dropped))] if plan.dropped else []
    parts += ["renamed column %s to %s" % pair for pair in sorted(plan.renamed)]
    if plan.create_sql is not None:
        parts.append("new definition from create_sql")
    changes.append("rebuilt table %s (%s)%s" % (
        plan.table, "in place" if rows is None else "copied, %d rows copied" % rows,
        ": " + "; ".join(parts) if parts else ""))
    _log("info", changes[-1])
    return changes


def rebuild_table(db, table, drop=(), rename=None, create_sql=None):
    """Change a table the way SQLite's ALTER TABLE cannot, losing nothing.

    drop: column names to remove; rename: {old: new}; create_sql: the whole
    new CREATE TABLE statement (columns are copied by name, through `rename`;
    old columns it lacks are dropped; new ones get their defaults; a new type
    converts values by affinity, and a value that would not convert back to
    what was stored refuses the rebuild).
    Rows, rowids, the AUTOINCREMENT counter, indexes, triggers (TEMP ones too)
    and everything the CREATE TABLE text says about the kept columns stay.
    Works inside the caller's transaction (a savepoint) or in its own; never
    lets a foreign-key action fire.  Returns the changes made, as sentences.
    """
    # A migration's db carries the runner's progress callback; nothing else reports.
    progress = getattr(db, "_copy_progress", None)
    return _rebuild_table(db, table, drop, rename, create_sql,
                          progress=progress if callable(progress) else None)


def _rebuild_table(db, table, drop=(), rename=None, create_sql=None, native=None,
                   progress=None, chunk_rows=_COPY_CHUNK_ROWS):
    drop = [drop] if isinstance(drop, str) else list(drop)
    with _using(db) as conn:
        raw = _raw(conn)
        # DROP TABLE with foreign keys on would run ON DELETE actions on child
        # tables; inside the caller's transaction _refuse_foreign_keys_on guards.
        with _write_transaction(conn) as check_fk:
            plan = None
            try:
                plan = _plan_rebuild(conn, table, drop, rename, create_sql, native)
                rows = _run_rebuild(conn, plan, progress, chunk_rows)
            except _DB.Error as e:
                cause, kind = str(e), _sqlite_kind(e)
                if kind == "foreign-key" and not check_fk:
                    # Inside the caller's transaction with foreign keys on,
                    # SQLite checks each copied row at once, and takes some
                    # valid rows for violations (foreign_key_check does not).
                    cause = "%s (SQLite checks each copied row's foreign keys inside your " \
                        "transaction, and counts a REAL value referencing an INTEGER " \
                        "PRIMARY KEY as missing; call it outside a transaction (it switches " \
                        "foreign keys off itself) or set PRAGMA foreign_keys = OFF before " \
                        "BEGIN)" % cause
                elif plan is not None and isinstance(e, getattr(
                        _driver(raw).module, "IntegrityError", ())):
                    # SQLite names the copy, a table the caller never made.
                    cause = "%s (a row of %s breaks the new definition's constraint: change "\
                        "those rows before the rebuild)" % (
                            cause.replace(plan.temp + ".", table + "."), table)
                # A full disk is the database's state, not a refusal: code
                # that tests kind == "full" must see it here too.
                failure = MigrationError("rebuilding table %s failed: %s" % (table, cause),
                                         kind=kind if kind in _DATABASE_KINDS
                                         else "rebuild-refused", tables=[table], cause=cause,
                                         outcome="nothing was changed")
                failure.__cause__ = e
                raise failure
            if check_fk:
                _check_foreign_keys(raw, outcome="the rebuild of %s was rolled back" % table)
    return _log_changes(plan, rows)


def drop_column(db, table, column):
    """Drop one column, by SQLite's DROP COLUMN where it can, else by a rebuild."""
    return rebuild_table(db, table, drop=[column])


# --- Helpers: backfill ------------------------------------------------------
# A data migration over a big table in short write transactions, so other
# processes' writes interleave: each batch is one BEGIN IMMEDIATE ... COMMIT
# that reads the position (a row of the tracking table) under the write lock,
# changes the next rows in key order and writes the new position.  A batch is
# thus done exactly once, whatever kills or other runners do.  Inside a
# migration the position stays, marked done, until the runner records the
# migration (_record deletes it in the same transaction), so a runner that
# finds no position checks the history before starting over.

# A writer waiting for the lock (sqlite3's busy timeout: SQLite's default busy
# handler) tries again at most 25 ms apart in its first 128 ms of waiting.  A
# pause this long between batches lets it in, so a backfill holding the lock
# for 50 ms delays it by about that much; and a backfill that never pauses
# would starve it.  Paused only while other writers are seen (a second).
_BACKFILL_PAUSE = 0.025

# The migration a backfill runs in (its version, "up" or "down", its
# checksum; Nones outside one) and the tracking table keeping its position.
_BackfillOwner = collections.namedtuple("_BackfillOwner", "tracking version direction checksum")


def _backfill_work(set, apply):
    """What a backfill called outside a migration does to each row, as it is
    stored with its position: another set= (or apply=) resuming that position
    would skip the rows the first reached.  (A changed where= may resume it:
    narrowing it past a row that fails is how a stopped backfill is fixed.)"""
    return "set: " + set if apply is None else "apply: %s.%s" % (
        getattr(apply, "__module__", None), getattr(apply, "__qualname__", type(apply).__name__))


class _Batch(collections.namedtuple("_Batch", "table where params after last")):
    """What backfill(apply=) gets for each batch, with the connection (inside
    the batch's transaction, which it must not end): `where` (SQL) and
    `params` select the batch's rows (key > after AND key <= last, and the
    caller's where); after/last: key tuples, None for the start and the open
    end; `table` as named in the schema."""


def _position_text(position):
    import json  # only where JSON is used: it is not on a start-up's path
    # Keys may be blobs, which JSON cannot carry: {"blob": hex}.
    return json.dumps(dict(position, after=None if position["after"] is None else [
        {"blob": bytes(v).hex()} if isinstance(v, (bytes, bytearray, memoryview)) else v
        for v in position["after"]]), sort_keys=True)


def _position(text):
    import json
    position = json.loads(text)
    if position.get("after") is not None:
        position["after"] = [bytes.fromhex(v["blob"]) if isinstance(v, dict) else v
                             for v in position["after"]]
    return position


def _key_range(columns, after, last):
    """SQL and parameters for after < key <= last (row values are SQLite
    3.15+).  A composite key's OR of terms gets its first column's bound
    (a >= ?) before it: with the OR alone SQLite searched each term apart and
    sorted every row past the position, for every batch."""
    parts, params = [], []
    for bound, op, final in ((after, ">", ">"), (last, "<", "<=")):
        if bound is None:
            continue
        terms, first = [], len(params)
        for i, column in enumerate(columns):
            terms.append("(%s)" % " AND ".join(["%s = ?" % c for c in columns[:i]] + [
                "%s %s ?" % (column, final if i == len(columns) - 1 else op)]))
            params += list(bound[:i]) + [bound[i]]
        if len(terms) == 1:
            parts.append(terms[0])
        else:
            parts.append("%s %s= ? AND (%s)" % (columns[0], op, " OR ".join(terms)))
            params.insert(first, bound[0])
    return " AND ".join(parts) or "1", params


def _range_text(columns, after, last):
    """after < key <= last as a reader would write it: rowid > 700 AND rowid <= 800."""
    name = columns[0] if len(columns) == 1 else "(%s)" % ", ".join(columns)
    shown = [(op, repr(key[0]) if len(key) == 1 else "(%s)" % ", ".join(map(repr, key)))
             for op, key in ((">", after), ("<=", last)) if key is not None]
    return " AND ".join("%s %s %s" % (name, op, key) for op, key in shown) or "all rows"


def _sql_fragment(what, text, helper="backfill"):
    """`text` checked to stay one expression (or SET list) in our statement:
    no ';', no unbalanced parenthesis (`1) OR (1` would escape the batch's
    range), no unterminated comment; a newline after it ends a -- comment."""
    depth = 0
    for kind, token in _tokenize(text):
        depth += (token == "(") - (token == ")") if kind == "punct" else 0
        if depth < 0 or token == ";" and kind == "punct" or kind == "comment" and \
                token.startswith("/*") and not token.endswith("*/") or \
                kind in ("string", "ident") and len(token) < 2:
            break
    else:
        if depth == 0 and text.strip():
            return text + "\n"
    raise RequestError("%s %s=%r is not one SQL %s" % (
        helper, what, text, "expression" if what == "where" else "SET list"))


def backfill(db, table, set=None, where=None, apply=None, batch_rows=1000, target_ms=50,
             dry_run=False, name=None, tracking=_DEFAULT_TABLE):
    """UPDATE table SET `set` WHERE `where`, or apply(db, batch) for each
    batch (see _Batch), in batches in rowid order (primary key order for a
    WITHOUT ROWID table), each its own transaction, sized to hold the write
    lock about target_ms (the first batch_rows rows; target_ms=None: all
    batch_rows).  Resumable: the position is kept in the tracking table's row
    'backfill:[v<migration version>:<up or down>:]<name or table>'; two
    backfills of one table in one migration need their own name=.  Only in a non-transactional
    migration, or on a path or connection outside a transaction.  Returns
    the rows changed (apply's int return values summed); with dry_run, the
    rows `where` selects from the stored position on, changing nothing."""
    if (set is None) == (apply is None):
        raise RequestError("backfill needs set= (an UPDATE's SET list) or apply= (a function), "
                           "one of them")
    # Checked before the first batch: a bad size found after it left some
    # batches committed; and OFFSET takes a 64-bit integer.
    if type(batch_rows) is not int or not 0 < batch_rows < 2 ** 63:
        raise RequestError("backfill batch_rows=%r is not a whole number of rows from 1 to "
                           "2**63 - 1" % (batch_rows,))
    if target_ms is not None and (type(target_ms) not in (int, float) or
                                  not 0 < target_ms < float("inf")):
        raise RequestError("backfill target_ms=%r is not a positive number of milliseconds "
                           "(None: batches of batch_rows)" % (target_ms,))
    if isinstance(db, _MigrationConnection) and db._transactional:
        raise RequestError("backfill commits batch by batch, which a transactional migration "
                           "cannot: set transaction = False in the migration")
    owner = getattr(db, "_tracking", None) or _BackfillOwner(tracking, None, None, None)
    work = _backfill_work(set, apply) if owner.version is None else None
    key = _backfill_key(owner.version, owner.direction, name or table)
    if owner.version is None and _parse_backfill_key(key).version is not None:
        # The runner deletes a migration's positions when it records it (or
        # goes below it): this one would be lost, and its rows done again.
        raise RequestError("backfill name %r reads as a migration's position (v<version>:...): "
                           "pass another name=" % (name or table))
    if owner.version is not None:  # a second one of this key would find the first's "done"
        used = db._backfills
        if key in used:
            raise RequestError("this migration already ran a backfill named %r: give each "
                               "backfill of one table its own name=" % (name or table))
        used.append(key)
    progress = getattr(db, "_copy_progress", None)
    with _using(db) as conn:
        raw = _raw(conn)
        if raw.in_transaction and _autocommit_mode(raw) is not False:
            raise RequestError("backfill commits batch by batch: call it outside a transaction")
        job = _plan_backfill(raw, table, set, where)
        schema_key = _backfill_key(None, None, job.table)
        if owner.version is None and name is None and key != schema_key and _stored_position(
                raw, _quote_identifier(owner.tracking), key) is None:
            # Table names compare case-insensitively: one table, one position
            # however the caller spells it (a position under another spelling
            # was not found, and every row before it was done again).  One
            # stored under the caller's spelling before this is still resumed.
            key = schema_key
        with _explicit_transactions(raw), _backfill_settings(raw) as checkpoint_each:
            return _run_backfill(raw, job, key, owner, work, apply, batch_rows, target_ms,
                                 dry_run, progress if callable(progress) else None,
                                 checkpoint_each, getattr(db, "_registered", None))


# A backfill's page cache, at least: each batch rewrites the pages at the
# ends of the index ranges the one before wrote; kept in the cache they are
# not read again (10M rows: 0.80x -> 0.98x one UPDATE; 2 MiB is the default).
_BACKFILL_CACHE_KIB = 16 * 1024


@contextmanager
def _backfill_settings(raw):
    """The connection's settings for a backfill's run, its own put back after:
    the page cache raised to _BACKFILL_CACHE_KIB, and in WAL mode the
    autocheckpoint (SQLite checkpoints at a COMMIT that takes the WAL past
    wal_autocheckpoint pages, 1000 by default) raised to 16 MiB, so a
    checkpoint writes a page that several batches rewrote once rather than
    once per batch, and the WAL stays far below 64 MiB.  Yields True where
    the autocheckpoint is off: checkpoint after each batch."""
    if _driver(raw).server:
        # A server (dqlite) keeps its own cache and checkpoints the WAL it
        # replicates itself (wal_autocheckpoint 0): a wal_checkpoint between
        # two batches made the leader's process die at the next COMMIT.
        yield False
        return
    # _query: these statements return a row, and a statement not read to its
    # end stays in progress on PyPy (no reference counting) and blocks COMMIT.
    page_size = _query(raw, "PRAGMA page_size")[0][0]
    cache = _query(raw, "PRAGMA cache_size")[0][0]
    auto = _query(raw, "PRAGMA wal_autocheckpoint")[0][0]
    wal = _query(raw, "PRAGMA journal_mode")[0][0].lower() == "wal"
    changes = []  # (pragma, the connection's value, ours)
    if (-cache if cache < 0 else cache * page_size // 1024) < _BACKFILL_CACHE_KIB:
        changes.append(("cache_size", cache, -_BACKFILL_CACHE_KIB))
    wal_pages = 16 * 2 ** 20 // page_size
    if wal and 0 < auto < wal_pages:
        changes.append(("wal_autocheckpoint", auto, wal_pages))
    made = []
    try:
        for change in changes:
            _query(raw, "PRAGMA %s = %d" % (change[0], change[2]))
            made.append(change)
        yield wal and auto <= 0
    finally:
        for pragma, own, _ in made:
            _query(raw, "PRAGMA %s = %d" % (pragma, own))


class _BackfillJob(object):
    table = quoted = columns = key_list = where = update = None


def _plan_backfill(raw, table, set, where):
    """Everything checked before the first batch: the table, its key, and the
    statement compiled (EXPLAIN prepares it, with every name resolved)."""
    rows = _query(raw, "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name = ? "
                       "COLLATE NOCASE", (table,))
    if not rows:
        raise RequestError("backfill: no table %r" % table, kind="no-table", tables=[table])
    job = _BackfillJob()
    job.table, job.quoted = rows[0][0], _quote_identifier(rows[0][0])
    info = _query(raw, "PRAGMA table_info(%s)" % job.quoted)
    alias = _rowid_alias([row[1] for row in info])
    try:
        _query(raw, "SELECT %s FROM %s LIMIT 0" % (alias, job.quoted)) if alias else None
        job.columns = [alias] if alias else None
    except _DB.OperationalError as e:
        if _sqlite_kind(e) != "no-column":
            raise
        job.columns = None  # WITHOUT ROWID
    pk = sorted((row[5], row[1], row[2].upper(), row[3]) for row in info if row[5])
    # The names that reach the key: what a `set` must not assign.  (`set`
    # is the parameter here, hence the comprehensions.)
    if job.columns:  # the rowid: the rowid names no column takes, and its alias
        taken = {_key(row[1]) for row in info}
        key_names = {n for n in _ROWID_NAMES if n not in taken}
        key_names |= {_key(n) for _, n, _, _ in pk if [p[2] for p in pk] == ["INTEGER"]}
    else:
        key_names = {_key(n) for _, n, _, _ in pk}
    if job.columns is None:
        job.columns = [_quote_identifier(n) for _, n, _, _ in pk] or None
        # A rowid table's PRIMARY KEY, but the rowid's alias, may hold NULL
        # (SQLite's legacy quirk), which `key > ?` never selects.  Not every
        # INTEGER one is the alias: INTEGER PRIMARY KEY DESC is not (rowid_key).
        nullable = [n for _, n, _, notnull in pk if not notnull] if job.columns else []
        create = nullable and _CreateTable(rows[0][1], "table %s" % table)
        if nullable and create.rowid and create.rowid_key() is None:
            raise RequestError(
                "backfill: table %s has no usable key: its columns take all of rowid, oid and "
                "_rowid_, and its PRIMARY KEY column %s may hold NULL, whose rows paging by key "
                "would skip; rename one of those columns, or declare the key NOT NULL"
                % (table, nullable[0]), tables=[table])
    if job.columns is None:
        raise RequestError("backfill: table %s has neither a reachable rowid nor a primary key"
                           % table, tables=[table])
    job.key_list = ", ".join(job.columns)
    job.where = "" if where is None else " AND (%s)" % _sql_fragment("where", where)
    assigned = [] if set is None else [n for n in _set_targets(_sql_fragment("set", set))
                                       if _key(n) in key_names]
    if assigned:
        # Paging walks the key in order: a row whose key moves past the
        # position would be updated again in a later batch.
        raise RequestError("backfill of %s: set= assigns %s, which is the key backfill pages "
                           "by; change the key in a migration of its own (one UPDATE), or "
                           "use apply=" % (table, assigned[0]), tables=[table], statement=set)
    # Joined, not %-formatted: the caller's SQL may hold a '%'.
    job.update = None if set is None else "UPDATE %s SET %s WHERE " % (
        job.quoted, _sql_fragment("set", set))
    try:
        _query(raw, "EXPLAIN " + (job.update + "1" + job.where if job.update else
                                  "SELECT 1 FROM %s WHERE 1%s" % (job.quoted, job.where)))
    except _DB.Error as e:
        raise RequestError("backfill of %s: %s" % (table, e), tables=[table],
                           statement=job.update or job.where)
    return job


def _set_targets(text):
    """The column names an UPDATE's SET list assigns: a = 1, (b, c) = (2, 3)."""
    names, tokens = [], _tokenize("(" + text + ")")
    for start, end in _Cursor(tokens=tokens).comma_list():
        cursor = _Cursor(tokens=tokens, i=start, end=end)
        if cursor.peek() == ("punct", "("):
            for first, last in cursor.comma_list():
                names.append(_Cursor(tokens=cursor.tokens, i=first, end=last).name())
        else:
            names.append(cursor.name())
    return [name for name in names if name is not None]


def _run_backfill(raw, job, key, owner, work, apply, batch_rows, target_ms, dry_run,
                  progress, checkpoint_each, registered):
    """owner: a _BackfillOwner; work: _backfill_work's, outside a migration;
    registered: the migration's functions and collations (_register)."""
    metadata, changed, version = _tracking_table(owner.tracking), 0, owner.version
    registered = set() if registered is None else registered  # shared by the batches
    if dry_run:  # the rows from the stored position on, read without a write lock
        after = _same_work(_stored_position(raw, metadata, key) or {}, metadata, key, work,
                           job.table)
        if after.get("done"):
            return 0
        where, params = _key_range(job.columns, after.get("after"), None)
        return _query(raw, "SELECT count(*) FROM %s WHERE %s%s" % (
            job.quoted, where, job.where), params)[0][0]
    total = _query(raw, "SELECT count(*) FROM %s" % job.quoted)[0][0] if progress else 0
    rows, started_at, first = batch_rows, time.perf_counter(), None
    # Outside a migration the last batch deletes the position: one seen (or
    # written by us) that is gone at a BEGIN is another runner's finish, and
    # starting over would do every row again.  Read before our first BEGIN
    # too: waiting for it, we may wait out the other's whole run.
    begun = version is None and _stored_position(raw, metadata, key) is not None
    # PRAGMA data_version changes when another connection commits (SQLite
    # 3.8.8+; before, only a wait for our own BEGIN shows other writers).
    others, pause_until = _query(raw, "PRAGMA data_version"), None
    while True:
        asked = time.perf_counter()
        position = _begin_batch(raw, metadata, key, owner, work, job.table)
        if position is not None and position.get("done") or position is None and begun:
            raw.execute("ROLLBACK")
            return changed
        begun = version is None
        position = position or {"after": None, "rows": 0}
        after, first = position["after"], position["rows"] if first is None else first
        start, last, where = time.perf_counter(), None, None
        try:
            where, params = _key_range(job.columns, after, None)
            ends = _query(raw, "SELECT %s FROM %s WHERE %s ORDER BY %s LIMIT 1 OFFSET ?" % (
                job.key_list, job.quoted, where, job.key_list), params + [rows - 1])
            last = tuple(ends[0]) if ends else None
            where, params = _key_range(job.columns, after, last)
            scanned = rows if last else _query(raw, "SELECT count(*) FROM %s WHERE %s" % (
                job.quoted, where), params)[0][0]
            if apply is None:
                changed += max(raw.execute(job.update + where + job.where, params).rowcount, 0)
            else:
                # Through the migration wrapper: COMMIT, ROLLBACK or BEGIN there
                # would commit the batch without its position (done twice).
                guarded = _MigrationConnection(raw, True, registered=registered)
                with guarded._guarding():
                    done = apply(guarded, _Batch(job.table, where + job.where, params,
                                                 None if after is None else tuple(after), last))
                changed += done if isinstance(done, int) else 0
            position = {"after": list(last) if last else after, "rows": position["rows"] + scanned}
            # What wrote it: refused if the file changes (_begin_batch).
            if owner.checksum is not None:
                position["migration"] = owner.checksum
            if work is not None:
                position["work"], position["table"] = work, job.table
            if last is None and version is None:
                raw.execute("DELETE FROM %s WHERE key = ?" % metadata, (key,))
            else:
                position["done"] = last is None
                text = _position_text(position)
                if raw.execute("UPDATE %s SET value = ? WHERE key = ?" % metadata,
                               (text, key)).rowcount == 0:
                    raw.execute("INSERT INTO %s (key, value) VALUES (?, ?)" % metadata,
                                (key, text))
            worked = time.perf_counter()
            raw.execute("COMMIT")
        except BaseException as e:
            if raw.in_transaction:
                raw.execute("ROLLBACK")
            if not isinstance(e, Exception):
                raise
            why = "%s: %s" % (type(e).__name__, e)
            if isinstance(e, MigrationError) and e.kind == "transaction-ended":
                why = "apply must leave BEGIN, COMMIT and ROLLBACK to backfill (it ran %s), " \
                      "or the batch would be committed without its position" % (
                          " ".join((guarded.failed_statement or "commit() or rollback()")
                                   .split())[:80])
            failure = MigrationError(
                "backfill of %s failed in the batch of rows %s: %s" % (
                    job.table, _range_text(job.columns, after, last), why),
                kind="backfill-failed", tables=[job.table], cause=why,
                batch=(None if after is None else tuple(after), last),
                statement=job.update + where + job.where if apply is None and where else None,
                outcome="that batch was rolled back; the batches before it stay committed, and "
                        "running it again continues with that batch")
            failure.__cause__ = e
            raise failure
        # The next batch sized to hold the write lock about target_ms, COMMIT
        # included; but its work gets half the target at least, or a slow
        # disk's fsync would shrink batches to a row each.  At most twice
        # this one, so one fast batch does not make a huge one.
        if target_ms is not None:
            now, target = time.perf_counter(), target_ms / 1000.0
            share = max(target - (now - worked), target / 2) / max(worked - start, 1e-4)
            rows = max(1, min(rows * 2, int(rows * share)))
        if progress:
            progress(job.table, position["rows"], max(total, position["rows"]),
                     action="backfilling", rate=(position["rows"] - first) / max(
                         time.perf_counter() - started_at, 1e-6))
        if last is None:
            return changed
        if checkpoint_each:
            _query(raw, "PRAGMA wal_checkpoint(PASSIVE)")
        seen, now = _query(raw, "PRAGMA data_version"), time.perf_counter()
        if seen != others or start - asked > 0.002 or pause_until is None:  # once at first
            others, pause_until = seen, now + (1.0 if pause_until else 0)
        if now <= pause_until:
            time.sleep(_BACKFILL_PAUSE)


def _same_work(position, metadata, key, work, table):
    """`position`, refused if other work (_backfill_work's) stored it, or the
    same work on another table: a name= reused there would start that table
    past the first one's position, skipping its rows."""
    stored = position.get("table", table) if work is not None else table
    if _key(stored) != _key(table):
        raise MigrationError(
            "the backfill position %r is of table %s, stopped at %s rows, not of %s: run that "
            "one again to finish it, give this one its own name=, or start over by deleting "
            "that row (DELETE FROM %s WHERE key = '%s')"
            % (key, stored, position.get("rows"), table, metadata, key.replace("'", "''")),
            kind="backfill-changed", tables=[table])
    if work is not None and position.get("work", work) != work:
        raise MigrationError(
            "another backfill of %s stopped at %s rows under the position %r (it "
            "ran %s): run that one again to finish it, give this one its own name=, "
            "or start over by deleting that row (DELETE FROM %s WHERE key = '%s')"
            % (_parse_backfill_key(key).name, position.get("rows"), key, position["work"],
               metadata, key.replace("'", "''")), kind="backfill-changed")
    return position


def _stored_position(raw, metadata, key, create=False):
    """The position stored under `key`; None if none, or if there is no
    table `metadata` (then created, if `create`)."""
    try:
        stored = _query(raw, "SELECT value FROM %s WHERE key = ?" % metadata, (key,))
    except _DB.OperationalError as e:
        if _sqlite_kind(e) != "no-table":
            raise
        if create:
            raw.execute("CREATE TABLE %s (key TEXT PRIMARY KEY, value TEXT)" % metadata)
        stored = []
    return _position(stored[0][0]) if stored else None


def _backfill_entry(key, value):
    """A stored position as status reports it."""
    of = _parse_backfill_key(key)
    try:
        position = _position(value)
    except (ValueError, TypeError, KeyError, AttributeError):
        position = {"after": value}  # not ours to judge: shown as it is
    after = position.get("after")
    # The report is `status --json`'s: a blob key as it is stored, {"blob": hex}.
    return {"version": of.version, "direction": of.direction, "table": of.name,
            "after": after if after is None or isinstance(after, str) else [
                {"blob": bytes(v).hex()} if isinstance(v, bytes) else v for v in after],
            "rows": position.get("rows"), "done": bool(position.get("done"))}


def _key_text(value):
    """A key value of status's report as SQL writes it: x'3b' for a blob."""
    return "x'%s'" % value["blob"] if isinstance(value, dict) else repr(value)


def _begin_batch(raw, metadata, key, owner, work, table):
    """BEGIN IMMEDIATE and the position as stored; {"done": True} also when
    none is stored because the runner recorded the migration's up (or
    removed its record, for a down): another runner finished it.  A position
    another version of the migration file wrote, unfinished, is refused: the
    rows before it got the old code, the rest would get the new one."""
    raw.execute("BEGIN IMMEDIATE")
    try:
        position = _stored_position(raw, metadata, key, create=True)
        if position is not None:
            position = _same_work(position, metadata, key, work, table)
            changed = owner.checksum is not None and \
                position.get("migration", owner.checksum) != owner.checksum
            if changed and position.get("done"):
                # Every row got the earlier file's code; what failed after it
                # (the step being fixed) must not force the backfill twice.
                _log("warning", "%s: the backfill %r finished with an earlier version of the "
                     "migration file; not run again", key, key, logger="sqlmigrate.runner")
            elif changed:
                raise MigrationError(
                    "the migration file changed since its backfill started (the position "
                    "%r, at %s rows, was written by the earlier file): restore that file and "
                    "run again, or start the backfill over by deleting that row (DELETE FROM "
                    "%s WHERE key = '%s'), making sure the rows it did suit the new code"
                    % (key, position.get("rows"), metadata, key.replace("'", "''")),
                    kind="backfill-changed", version=owner.version, direction=owner.direction)
            return position
        if owner.version is not None and owner.direction == "up" and \
                _rolling_back(raw, owner.tracking, owner.version):
            # Applied again after a down that did not finish: which rows that
            # down's backfill reached, if it began, no position here tells,
            # and from the start a non-idempotent set would do rows twice.
            raise MigrationError(
                "v%d is partly rolled back: its up cannot tell which rows of %s its down's "
                "backfill reached; run down to finish rolling it back (that backfill resumes "
                "where it stopped), then up" % (owner.version, table),
                kind="backfill-refused", version=owner.version, direction=owner.direction)
        # An up recorded already is done (a down: its record removed).
        if owner.version is not None and bool(_query(
                raw, "SELECT count(*) FROM %s WHERE version = ?" % _tracking_table(
                    owner.tracking + "_migrations"), (owner.version,))[0][0]) == \
                (owner.direction == "up"):
            return {"done": True}
        return None
    except BaseException:
        raw.execute("ROLLBACK")
        raise


# --- Helpers: reconcile, JSON defaults, schema report -----------------------
# reconcile() reads the schema in one pass (sqlite_master, then one
# pragma_table_info join over the declared tables), decides everything, and
# only then opens a transaction: a database that needs nothing costs two
# queries and takes no write lock.

# Literals ALTER TABLE ADD COLUMN takes as a constant DEFAULT, tested on the
# joined tokens (the tokenizer splits 1.5e+3 at '.' and '+'): a number, a blob,
# or a bare word, which SQLite reads as a string (TRUE/FALSE too before 3.23).
_CONSTANT_RE = (r"(?:[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|0[xX][0-9a-fA-F]+)"
                          r"|[xX]'[0-9a-fA-F]*'|(?P<bare>[A-Za-z_][A-Za-z0-9_$]*))\Z")


class _ColumnDeclaration(object):
    """A column declaration ("BOOLEAN DEFAULT 1 NOT NULL") split into the
    constraints that decide how, or whether, ALTER TABLE ADD COLUMN can add it:
    `clauses` are (word, start, end) token ranges, from any CONSTRAINT <name>
    or GENERATED ALWAYS before the word."""

    def __init__(self, text):
        self.problem = self.generated = self.default = None
        self.default_kind = "none"
        cursor = _Cursor(text)
        self.tokens, heads, prefix = cursor.tokens, [], None  # heads: (word, start, at)
        while not cursor.at_end():
            at, word = cursor.i, cursor.word()
            current = heads[-1][0] if heads else None
            if current == "REFERENCES" and (cursor.take("NOT", "DEFERRABLE") or cursor.take("SET")):
                cursor.take("NULL") or cursor.take("DEFAULT")  # ON DELETE SET NULL ...
            elif cursor.take("CONSTRAINT") or cursor.take("GENERATED", "ALWAYS"):
                if word == "CONSTRAINT":
                    cursor.advance()  # its name: any word
                prefix = at if prefix is None else prefix
            elif word in _COLUMN_CONSTRAINT_WORDS:
                heads.append((word, at if prefix is None else prefix, at))
                cursor.advance()
                prefix = None
                if word in ("NOT", "DEFAULT"):
                    cursor.take("NULL")  # NOT NULL; DEFAULT NULL
                self.generated = "VIRTUAL" if word == "AS" else self.generated
            elif cursor.peek() == ("punct", "("):
                try:
                    cursor.group()
                except MigrationError:  # no matching ')'
                    self.problem = "unbalanced parentheses"
                    break
            else:
                kind, token = cursor.advance()
                if current == "AS" and word == "STORED":
                    self.generated = "STORED"
                elif kind == "punct" and token == ")":
                    self.problem = "unbalanced parentheses"
                elif kind == "punct" and token in ",;":
                    self.problem = "not a single column declaration (found %r)" % token
        ends = [start for _, start, _ in heads[1:]] + [len(self.tokens)]
        self.clauses = [(word, start, end) for (word, start, _), end in zip(heads, ends)]
        self.words = set(word for word, _, _ in heads)
        self.unique_conflict = None  # UNIQUE's ON CONFLICT resolution: ABORT, REPLACE ...
        for (word, _, at), end in zip(heads, ends):
            clause = [text.upper() for kind, text in self.tokens[at:end] if kind == "word"]
            if word == "UNIQUE" and "CONFLICT" in clause[:-1]:
                self.unique_conflict = clause[clause.index("CONFLICT") + 1]
            if word == "DEFAULT" and self.default is None:
                self.default = "".join(text for kind, text in self.tokens[at + 1:end]
                                       if kind != "comment").strip()
                self.default_kind = _default_kind(_Cursor(tokens=self.tokens, i=at + 1, end=end))

    def without(self, word=None):
        """The declaration text without its comments and without the
        constraints that start with `word`: SQL to write.  A comment would
        hide what follows it (a -- one: the rest of the line, where ADD
        COLUMN puts the table's ')' and a rebuild the next column).  Only
        the spaces between tokens are collapsed, never those in a string."""
        dropped = set(i for clause, start, end in self.clauses if clause == word
                      for i in range(start, end))
        parts = []
        for i, (kind, text) in enumerate(self.tokens):
            if i in dropped or kind in ("space", "comment"):
                text = " "
            if text != " " or parts and parts[-1] != " ":
                parts.append(text)
        return "".join(parts).strip()


def _default_kind(cursor):
    """'null', 'constant' or 'expression' for a DEFAULT value, the way ALTER
    TABLE ADD COLUMN sees it: a literal, possibly signed and in parentheses
    (SQLite keeps no node for those), or a bare word, is constant;
    CURRENT_TIMESTAMP or anything computed is not.  Unsure means
    'expression': a rebuild always works."""
    bare = True
    while cursor.peek() == ("punct", "("):
        first, close = cursor.group()
        if not cursor.at_end():
            return "expression"  # (a) + (b)
        cursor, bare = _Cursor(tokens=cursor.tokens, i=first, end=close), False
    tokens = cursor.rest()
    text = "".join(token for _, token in tokens)
    match = re.compile(_CONSTANT_RE).match(text)
    if text.upper() == "NULL":
        return "null"
    if [kind for kind, _ in tokens] == ["string"] or match and (not match.group("bare") or bare
            and text.upper() not in ("CURRENT_TIME", "CURRENT_DATE", "CURRENT_TIMESTAMP")):
        return "constant"
    return "expression"


class _IndexDeclaration(object):
    """A CREATE [UNIQUE] INDEX statement, read far enough to compare two of
    them (`definition`) and to list the table and the columns they use."""

    def __init__(self, sql, name=None):
        # With `name`, `sql` may also be an `indexes` entry: "table(col, ...) [WHERE ...]".
        cursor = None if name is None else _Cursor(sql)
        if cursor and cursor.word() != "CREATE" and cursor.peek()[0] in ("word", "ident"):
            table = _quote_identifier(cursor.name())
            sql = "CREATE INDEX %s ON %s %s" % (_quote_identifier(name), table,
                                                "".join(t for _, t in cursor.tokens[cursor.i:]))
        self.sql = sql.strip().rstrip(";").strip()
        create = _Create(self.sql)
        cursor = self._list = create.cursor
        self.name, self.unique, self.table, self.definition = create.name, create.unique, None, None
        if create.kind == "INDEX" and cursor.word() == "ON":
            on = cursor.i
            cursor.advance()
            kind, table = cursor.peek()[0], cursor.name()
            if kind in ("word", "ident") and cursor.peek() == ("punct", "("):
                self.table = table
                # "T" and t are one name, as are ON and on: names compare as keys.
                self.definition = tuple(
                    ("name", _key(_unquote(text))) if kind in ("word", "ident") else (kind, text)
                    for kind, text in _Cursor(tokens=cursor.tokens, i=on).rest() if text != ";")

    def column_list(self):
        """(plain column names, every item as text, the WHERE text or None);
        only a report or a missing index asks, so it is not read before."""
        names, texts, cursor = [], [], self._list
        for first, end in cursor.comma_list():
            item = _Cursor(tokens=cursor.tokens, i=first, end=end).rest()
            tail = item[1:]
            if item[0][0] in ("word", "ident") and \
                    (not tail or tail[0][1].upper() in ("COLLATE", "ASC", "DESC")):
                names.append(_unquote(item[0][1]))
                texts.append(" ".join([names[-1], _joined(tail)]) if tail else names[-1])
            else:
                texts.append(_joined(item))
        return names, texts, _joined(cursor.rest()) if cursor.take("WHERE") else None


# -- reconcile ---------------------------------------------------------------------

# One change reconcile() makes: run `sql`, or rebuild `table` as the CREATE
# TABLE `sql`; `changes` are what reconcile() returns for it.
_Step = collections.namedtuple("_Step", "what sql changes table")
# Steps in order (columns before the indexes that may use them); any problem
# means nothing is done; warnings are logged and skipped.
_ReconcilePlan = collections.namedtuple("_ReconcilePlan", "steps problems warnings")


def reconcile(db, columns=None, indexes=None):
    """Add the declared columns and indexes the database lacks; never drop,
    rename or change anything.  Returns the changes as readable strings,
    e.g. ["added column usage_logs.model", "created index idx_usage_logs_model"];
    [] when the schema already has everything.

    columns: {table: {column: "declaration"}}, e.g. {"api_keys": {"is_active":
    "BOOLEAN DEFAULT 1 NOT NULL"}}.  indexes: {name: "table(col, ...)"} or
    {name: "CREATE [UNIQUE] INDEX name ON table (...)"}.  Everything is checked
    first; one declaration that cannot be added means nothing is changed and the
    MigrationError lists every such declaration."""
    columns, indexes = columns or {}, indexes or {}
    _check_declarations(columns, indexes)
    with _using(db) as conn:
        conn = _raw(conn)
        # Bumped by SQLite on every schema change, by any connection.
        schema_version = _query(conn, "PRAGMA schema_version")
        plan = _plan_reconcile(conn, columns, indexes)
        if not plan.steps:
            _log("debug", "Schema has every declared column and index")
            return []
        own_transaction = not conn.in_transaction
        # A table rebuild must not fire foreign-key actions.
        with _foreign_keys_off_outside_transaction(
                conn, any(step.table for step in plan.steps)) as fk_were_on:
            with _transaction(conn):
                if own_transaction and _query(conn, "PRAGMA schema_version") != schema_version:
                    # Another process changed the schema since we looked (and
                    # may have reconciled): look again under the write lock.
                    plan = _plan_reconcile(conn, columns, indexes, quiet=True)
                changes = _apply_reconcile(conn, plan)
                if fk_were_on:
                    _check_foreign_keys(conn, outcome="nothing was changed")
        _log("info", "Reconcile made %d change(s)", len(changes))
        return changes


def _check_declarations(columns, indexes):
    """reconcile()'s arguments have the shapes it reads: a list where a dict
    belongs would be read as column names and "find" them all present."""
    def text_map(value):
        return isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    if not (isinstance(columns, dict) and all(isinstance(t, str) and text_map(d)
                                              for t, d in columns.items())):
        raise RequestError("reconcile: columns must be {table: {column: \"declaration\"}} "
                           "with text names and declarations, not %r" % (columns,))
    if not text_map(indexes):
        raise RequestError("reconcile: indexes must be {name: \"table(column, ...)\"} or "
                           "{name: \"CREATE INDEX ...\"} with text names, not %r" % (indexes,))


def _plan_reconcile(conn, columns, indexes, quiet=False):
    plan, master = _ReconcilePlan([], [], []), _SchemaObjects(conn)
    hidden = _temp_tables(conn)
    declared_indexes = [(name, text, _IndexDeclaration(text, name))
                        for name, text in indexes.items()]
    tables = {}  # declared name -> the existing ordinary table's name
    for table in list(columns) + [d.table for _, _, d in declared_indexes if d.table]:
        row = master.get(table)
        if row.type == "table" and not _is_virtual(row.sql) and _key(row.name) not in hidden:
            tables[table] = row.name
    existing = _read_columns(conn, sorted(set(tables.values())), names_only=True)

    def refuse(table, skipped):  # a declared table that is not an ordinary one
        kind = master.get(table).type
        if kind is None:
            plan.warnings.append("Table '%s' does not exist; %s" % (table, skipped))
        elif kind != "table":
            plan.problems.append("'%s' is a %s, not a table" % (table, kind))
        elif _key(table) in hidden:
            plan.problems.append(_hidden_by_temp(table))
        else:
            plan.problems.append("table '%s' is a virtual table: ALTER TABLE cannot change it"
                                 % table)
    added = {}  # existing table name -> names of the columns being added
    planned = set(_key(name) for name in indexes)  # index names this call will create
    for table, declared in columns.items():
        actual = tables.get(table)
        if actual is None:
            refuse(table, "skipped its declared columns (%s)" % ", ".join(declared))
        elif actual in added:
            plan.problems.append("table %s: declared twice (names compare case-insensitively)"
                                 % table)
        else:
            adding = _plan_columns(conn, master, actual, declared, existing[actual], planned)
            planned.update(adding.index_names)
            added[actual] = adding.added
            plan.steps.extend(adding.steps)
            plan.problems.extend(adding.problems)
    for name, text, declaration in declared_indexes:
        taken = master.get(name)  # _NO_SCHEMA_ROW if nothing has the name
        kind, sql = taken.type, taken.sql
        table = tables.get(declaration.table)
        if declaration.definition is None:
            plan.problems.append("index %s %r: expected 'table(column, ...)' or a CREATE "
                                 "[UNIQUE] INDEX statement" % (name, text))
        elif len(_split_sql(declaration.sql)) > 1:
            plan.problems.append("index %s %r: holds more than one statement" % (name, text))
        elif _key(declaration.name) != _key(name):
            plan.problems.append("index %s: the statement creates an index named %s"
                                 % (name, declaration.name))
        elif kind is not None and kind != "index":
            plan.problems.append("index %s: the name is taken by a %s" % (name, kind))
        elif kind is not None:
            found = sql != declaration.sql and _IndexDeclaration(sql or "")
            if found and (found.unique, found.definition) != (declaration.unique,
                                                              declaration.definition):
                plan.warnings.append("Index '%s' exists with a different definition; not "
                                     "replaced (database: %s; declared: %s)"
                                     % (name, sql or "a constraint's index", declaration.sql))
        elif table is None:
            refuse(declaration.table, "skipped index '%s'" % name)
        else:
            unknown = _absent_names(existing[table] + added.get(table, []),
                                    declaration.column_list()[0])
            if unknown:
                plan.problems.append("index %s: table %s has no column %s"
                                     % (name, table, ", ".join(unknown)))
            else:
                plan.steps.append(_Step("creating missing index '%s' on table '%s'"
                                        % (name, table), declaration.sql,
                                        ["created index %s" % name], None))
    if plan.problems:
        raise MigrationError("reconcile: nothing was changed; cannot add:\n  "
                             + "\n  ".join(plan.problems), problems=tuple(plan.problems),
                             kind="reconcile-refused")
    for warning in [] if quiet else plan.warnings:
        _log("warning", warning)
    return plan


# What _plan_columns plans for one table: the names of the columns it adds,
# and the steps and the problems, in order.
_ColumnsPlan = collections.namedtuple("_ColumnsPlan", "added steps problems index_names")


def _plan_columns(conn, master, table, declared, existing, planned):
    """Plan the declared columns `table` lacks (_ColumnsPlan), naming the
    indexes it creates apart from the `planned` names (keys) of this call."""
    absent = _absent_names(existing, declared)
    if not absent:  # the common case, once per declared table: keep it short
        return _ColumnsPlan([], (), (), ())
    missing = [(column, declared[column], _ColumnDeclaration(declared[column]))
               for column in absent]
    seen, steps, problems, index_names = set(), [], [], set()
    for column, text, declaration in missing:
        problem = "declared twice (names compare case-insensitively)" if _key(column) in seen \
            else _column_problem(conn, table, declaration)
        if problem:
            problems.append("%s.%s %r: %s" % (table, column, text, problem))
        seen.add(_key(column))
    # CREATE UNIQUE INDEX has no ON CONFLICT: an index standing in for a
    # UNIQUE ON CONFLICT REPLACE or IGNORE would make those INSERTs fail.
    untested = not _driver(conn).tests_added_constraints
    reason = next(filter(None, (_rebuild_reason(d) or d.unique_conflict not in (None, "ABORT")
                                and "UNIQUE ON CONFLICT %s" % d.unique_conflict
                                or untested and _untested_constraint(d)
                                for _, _, d in missing)), None)
    if reason:
        # One rebuild per table carries every missing column, in declared order.
        steps.append(_Step(
            "adding missing column(s) %s to table '%s' (rebuilding the table: %s)"
            % (", ".join("'%s'" % c for c in absent), table, reason),
            _with_columns_appended(master.get(table).sql, [
                "%s %s" % (_quote_identifier(column), d.without()) for column, _, d in missing]),
            ["added column %s.%s (table rebuilt: %s)" % (table, c, reason) for c in absent],
            table))
        return _ColumnsPlan(absent, steps, problems, ())
    quoted = _quote_identifier(table)
    for column, text, declaration in missing:
        unique = "UNIQUE" in declaration.words  # ADD COLUMN refuses UNIQUE: an index instead
        steps.append(_Step(
            "adding missing column '%s' to table '%s'" % (column, table),
            "ALTER TABLE %s ADD COLUMN %s %s" % (quoted, _quote_identifier(column),
                                                 declaration.without("UNIQUE" if unique else None)),
            ["added column %s.%s" % (table, column)], None))
        if unique:
            name = _free_name(conn, "idx_%s_%s_unique" % (table, column), planned | index_names)
            index_names.add(_key(name))
            steps.append(_Step(
                "creating unique index '%s' for column '%s' of table '%s'" % (name, column, table),
                "CREATE UNIQUE INDEX %s ON %s (%s)" % (_quote_identifier(name), quoted,
                                                      _quote_identifier(column)),
                ["created unique index %s for column %s.%s" % (name, table, column)], None))
    return _ColumnsPlan(absent, steps, problems, index_names)


def _absent_names(names, wanted):
    """The names in `wanted` that `names` lacks, compared as SQLite compares
    identifiers; exact tests first, as they nearly always decide."""
    exact = set(names)
    absent = [name for name in wanted if name not in exact]
    if absent:
        keys = set(_key(name) for name in names)
        absent = [name for name in absent if _key(name) not in keys]
    return absent


def _rebuild_reason(declaration):
    if declaration.generated == "STORED":
        return "a STORED generated column"
    if declaration.default_kind == "expression":
        return "non-constant DEFAULT %s" % declaration.default
    return None


def _untested_constraint(declaration):
    """What ADD COLUMN before SQLite 3.37 would leave untested on the rows
    already there (the copy of a rebuild tests it), or None."""
    if "CHECK" in declaration.words:
        return "a CHECK, which ADD COLUMN before SQLite 3.37 does not test on existing rows"
    if declaration.generated and "NOT" in declaration.words:
        return ("a generated column's NOT NULL, which ADD COLUMN before SQLite 3.37 does not "
                "test on existing rows")
    return None


def _column_problem(conn, table, declaration):
    """Why this declaration cannot be added to an existing table, or None."""
    kind, words = declaration.default_kind, declaration.words
    if declaration.problem:
        return declaration.problem
    if "PRIMARY" in words:
        return ("a PRIMARY KEY cannot be added to an existing table; rebuild it with "
                "rebuild_table(create_sql=...)")
    if declaration.generated and not _driver(conn).has_generated_columns:
        return ("generated columns need SQLite 3.31 or newer (this is %s)"
                % _driver(conn).version_text)
    if "NOT" in words and not declaration.generated and kind in ("none", "null"):
        return "NOT NULL needs a non-NULL DEFAULT: existing rows need a value"
    if _rebuild_reason(declaration):
        return None
    if "REFERENCES" in words and kind not in ("none", "null") and _foreign_keys_enabled(conn):
        return ("with foreign keys on, a REFERENCES column must default to NULL "
                "(SQLite refuses DEFAULT %s)" % declaration.default)
    if "UNIQUE" in words and kind == "constant" and len(_query(
            conn, "SELECT 1 FROM %s LIMIT 2" % _quote_identifier(table))) > 1:
        return ("UNIQUE with DEFAULT %s: the existing rows would all get the same value"
                % declaration.default)
    return None


def _apply_reconcile(conn, plan):
    """Run a checked plan inside the open transaction, which undoes it all on a failure."""
    changes = []
    for step in plan.steps:
        _log("info", "%s%s", step.what[0].upper(), step.what[1:])
        try:
            if step.table:
                rebuild_table(conn, step.table, create_sql=step.sql)
            else:
                conn.execute(step.sql)
        except _DB.Error as e:
            kind = _sqlite_kind(e)
            if kind == "locked":
                raise
            raise MigrationError("reconcile: %s failed: %s (statement: %s)"
                                 % (step.what, e, step.sql), statement=step.sql, cause=str(e),
                                 kind=kind if kind in _DATABASE_KINDS else "sqlite",
                                 outcome="nothing was changed")
        except MigrationError as e:  # rebuild_table's
            # What went wrong, said once: SQLite's error where the rebuild met
            # one, else its text without its outcome (the rebuild's alone: the
            # whole reconcile's is said below).
            cause = e.cause if e.cause and (e.kind == "rebuild-refused" or
                                            e.kind in _DATABASE_KINDS) else e._text()
            raise MigrationError("reconcile: %s failed: %s" % (step.what, cause), kind=e.kind,
                                 tables=e.tables, cause=cause, outcome="nothing was changed")
        changes.extend(step.changes)
    return changes


def _with_columns_appended(create_sql, definitions):
    """CREATE TABLE text with column definitions added after the last column:
    SQLite wants every column before the table constraints."""
    cursor = _Create(create_sql).cursor
    tokens, end = cursor.tokens, None
    for first, item_end in cursor.comma_list():
        item = _Cursor(tokens=tokens, i=first, end=item_end)
        if item.word() in _TABLE_CONSTRAINT_WORDS:
            break
        while not item.at_end():  # end after its last token, before a comment
            end = item.i + 1
            item.advance()
    return "%s, %s%s" % ("".join(text for _, text in tokens[:end]), ", ".join(definitions),
                         "".join(text for _, text in tokens[end:]))


# -- JSON defaults -----------------------------------------------------------------

def merge_json_defaults(db, table, column, defaults, where=None, params=()):
    """Add the keys of `defaults` that the JSON object in `table.column` lacks,
    recursively for nested objects, in every row (or those matching `where`,
    an SQL condition with `params`).  Never overwrites a value that is there,
    even false, 0, "", [] or null; NULL or '' counts as {}.  A value that is
    not a JSON object (or is not UTF-8, has NaN/Infinity, a repeated key, or
    nesting too deep to read) is a MigrationError naming the rows, and no row
    changes.  A row that gains no key is not rewritten; one that does keeps
    its numbers' text (1.10, 1e400).  Defaults that are not JSON (NaN, inf,
    a non-string key, a set ...) are a RequestError before anything is read.
    Returns the number of rows changed."""
    if not isinstance(defaults, dict):
        raise RequestError("merge_json_defaults: defaults must be a dict, not %s"
                           % type(defaults).__name__)
    try:
        _json_text(defaults)  # not json.dumps: it writes a key 1 as "1", maybe next to a "1"
    except ValueError as e:
        raise RequestError("merge_json_defaults: defaults are not JSON: %s" % e)
    with _using(db) as conn:
        conn = _raw(conn)
        with _transaction(conn):
            found = _SchemaObjects(conn).get(table)
            if found.type != "table":
                raise MigrationError("merge_json_defaults: no table %s" % table, kind="no-table")
            name, sql = found.name, found.sql
            if _is_virtual(sql):
                # Its module decides what a rowid is and whether UPDATE works.
                raise MigrationError("merge_json_defaults: table %s is a virtual table; only an "
                                     "ordinary table's rows can be found again to write them"
                                     % name, kind="unaddressable", tables=[table])
            if _key(name) in _temp_tables(conn):
                raise MigrationError("merge_json_defaults: " + _hidden_by_temp(name),
                                     kind="unaddressable", tables=[table])
            columns = _read_columns(conn, [name])[name]
            names = [c.name for c in columns]
            if _absent_names(names, [column]):
                raise MigrationError("merge_json_defaults: table %s has no column %s"
                                     % (table, column), kind="no-column")
            # What finds a row again for its UPDATE: the rowid, or a WITHOUT ROWID table's key.
            keys = [_rowid_alias(names)] if _CreateTable(sql, "table %s" % table).rowid else [
                pk_name for _, pk_name in sorted((c.pk, c.name) for c in columns if c.pk)]
            if keys == [None]:
                raise MigrationError("merge_json_defaults: table %s has columns named rowid, "
                                     "_rowid_ and oid: no way to address its rows" % table,
                                     kind="unaddressable", tables=[table])
            select = "SELECT %s FROM %s%s" % (
                ", ".join(map(_quote_identifier, keys + [column])), _quote_identifier(table),
                "" if where is None else " WHERE (%s)" % _sql_fragment(
                    "where", where, "merge_json_defaults"))
            try:
                _query(conn, "EXPLAIN " + select, params)  # the caller's SQL, checked alone
            except _DB.Error as e:
                raise RequestError("merge_json_defaults: where=%r with params=%r: %s"
                                   % (where, params, e), tables=[table], statement=where)
            cursor = conn.cursor()
            cursor.row_factory = None
            # Text as str whatever the caller set; text that is not UTF-8 comes back as
            # bytes and is refused naming its row (str would fail the whole SELECT).
            factory = _driver(conn).has_text_factory  # else text is always str
            saved = conn.text_factory if factory else None
            if factory:
                conn.text_factory = _utf8_or_bytes
            try:
                rows = cursor.execute(select, params).fetchall()
            finally:
                if factory:
                    conn.text_factory = saved
            updates, bad = [], []
            for *key, value in rows:
                try:
                    document = _json_object(value)
                    if _merge_missing(document, defaults):
                        # JSON stored as a BLOB is written back as one, not as TEXT.
                        text = _json_text(document)
                        updates.append([text.encode("utf-8") if isinstance(value, bytes)
                                        else text] + key)
                except ValueError as e:
                    bad.append("row %s (%s)" % (", ".join(map("%s=%r".__mod__, zip(keys, key))), e))
            if bad:
                raise MigrationError("merge_json_defaults: %s.%s is not a JSON object in %s%s; "
                                     "no row was changed" % (table, column, "; ".join(bad[:10]), (
                                         " (and %d more)" % (len(bad) - 10) if bad[10:] else "")),
                                     kind="bad-json", problems=tuple(bad))
            if updates:
                written = conn.executemany("UPDATE %s SET %s = ? WHERE %s" % (
                    _quote_identifier(table), _quote_identifier(column),
                    " AND ".join("%s = ?" % _quote_identifier(k) for k in keys)),
                    updates).rowcount
                if written != len(updates):
                    # A primary key that is TEXT but not UTF-8 was read back as
                    # bytes, binds as a BLOB and matches no row; a BEFORE UPDATE
                    # trigger's RAISE(IGNORE) skips its row: never count a row as
                    # changed that was not (the transaction rolls back).
                    raise MigrationError(
                        "merge_json_defaults: %s.%s: %d of %d row(s) could not be found again "
                        "by their key (%s) to write them, or a trigger skipped their UPDATE; "
                        "no row was changed"
                        % (table, column, len(updates) - written, len(updates), ", ".join(keys)),
                        kind="unaddressable", tables=[table])
                _log("info", "Merged default keys into %d row(s) of %s.%s", len(updates), table,
                          column)
    return len(updates)


def _utf8_or_bytes(data):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


class _JsonNumber(str):
    """A number as the row wrote it: Python's int or float would change its
    text (1.10 -> 1.1, -0 -> 0, 1e400 -> inf, which JSON cannot write), and
    Python 3.11 refuses int() of a 5000-digit text."""

    def __new__(cls, text):
        # json.loads passes NaN, Infinity and -Infinity here too; JSON has none of them.
        if text in ("NaN", "Infinity", "-Infinity"):
            raise ValueError("%s is not a JSON value" % text)
        return str.__new__(cls, text)


def _json_object_without_repeats(pairs):
    # json.loads keeps the last of repeated keys: rewriting the row would
    # silently drop the others.
    document = dict(pairs)
    if len(document) != len(pairs):
        keys = [key for key, _ in pairs]
        raise ValueError("key %r appears twice in one object"
                         % next(key for key in keys if keys.count(key) > 1))
    return document


def _json_object(value):
    if value is None or value == "" or value == b"":
        return {}
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError("not UTF-8 text: %s" % e)
    if not isinstance(value, str):
        raise ValueError("a %s, not JSON text" % type(value).__name__)
    import json
    try:
        document = json.loads(value, parse_float=_JsonNumber, parse_int=_JsonNumber,
                              parse_constant=_JsonNumber,
                              object_pairs_hook=_json_object_without_repeats)
    except RecursionError:
        raise ValueError("nested too deeply for Python's JSON parser")
    if not isinstance(document, dict):
        raise ValueError("JSON %s, not an object" % type(document).__name__)
    return document


_LONE_SURROGATE_RE = "[\ud800-\udfff]"


def _json_text(document):
    """`document` as json.dumps(document, ensure_ascii=False) writes it, except:
    a _JsonNumber keeps its text; a lone surrogate is a \\u escape (valid JSON,
    and the only way to store it as UTF-8); NaN, inf, non-string keys, circular
    references and other types are a ValueError.  Iterative: a row nested as
    deep as the parser took must not hit the recursion limit here."""
    import json  # only where JSON is used: it is not on a start-up's path
    string = json.JSONEncoder(ensure_ascii=False).encode
    parts, stack, open_ids, value = [], [], set(), document
    while True:
        if isinstance(value, str):
            parts.append(value if isinstance(value, _JsonNumber) else string(value))
        elif value is None or value is True or value is False:
            parts.append({None: "null", True: "true", False: "false"}[value])
        elif isinstance(value, int):
            parts.append(int.__repr__(value))  # an IntEnum too: its number, as json.dumps
        elif isinstance(value, float) and float("-inf") < value < float("inf"):
            parts.append(float.__repr__(value))
        elif isinstance(value, (dict, list, tuple)):
            if id(value) in open_ids:
                raise ValueError("circular reference")
            open_ids.add(id(value))
            parts.append("{" if isinstance(value, dict) else "[")
            stack.append((value, iter(value.items() if isinstance(value, dict) else value)))
        else:
            raise ValueError("%s is not a JSON value" % (
                repr(value) if isinstance(value, float) else "a " + type(value).__name__))
        while stack:  # the next value, closing the containers it ends
            container, items = stack[-1]
            value = next(items, stack)
            if value is not stack:
                break
            stack.pop()
            open_ids.discard(id(container))
            parts.append("}" if isinstance(container, dict) else "]")
        else:
            return re.compile(_LONE_SURROGATE_RE).sub(
                lambda match: "\\u%04x" % ord(match.group()), "".join(parts))
        if parts[-1] not in ("{", "["):
            parts.append(", ")
        if isinstance(container, dict):
            key, value = value
            if not isinstance(key, str):
                raise ValueError("key %r is not a string" % (key,))
            parts.append(string(key) + ": ")


def _merge_missing(document, defaults):
    """Add missing keys in place, recursing into objects on both sides;
    returns whether anything was added.  Only objects json.loads made are
    changed, never a default, so rows can share the defaults' objects."""
    changed = False
    for key, default in defaults.items():
        if key not in document:
            document[key], changed = default, True
        elif isinstance(document[key], dict) and isinstance(default, dict):
            changed = _merge_missing(document[key], default) or changed
    return changed


# -- schema report ---------------------------------------------------------------

def schema_info(db, tables=None):
    """The schema report as data: {"tables": [{"name", "columns": [{"name",
    "type", "primary_key", "not_null", "default", "generated"}], "indexes":
    [{"name", "unique", "columns", "where", "sql"}]}], "missing": [names]}.
    Tables are sorted by name unless `tables` names them; reads only."""
    if isinstance(tables, str):
        tables = [tables]
    with _using(db, mode="ro") as conn:
        conn = _raw(conn)
        master = _SchemaObjects(conn)
        sqls, indexes = {}, {}
        for row in sorted(master.rows, key=lambda row: (_key(row.name), row)):
            if row.type == "table":
                sqls[row.name] = row.sql
            elif row.type == "index":
                indexes.setdefault(_key(row.tbl_name), []).append((row.name, row.sql))
        if tables is None:
            names = [name for name in sqls if not _key(name).startswith("sqlite_")]
            missing = []
        else:
            found = [(table, master.get(table)) for table in tables]
            names = [row.name for _, row in found if row.type == "table"]
            missing = [table for table, row in found if row.type != "table"]
        columns = _read_columns(conn, [name for name in names if not _is_virtual(sqls[name])])
        info = []
        for name in names:
            if name not in columns:  # a virtual table: its module may not be loaded here
                info.append({"name": name, "virtual": True, "columns": [], "indexes": []})
                continue
            # A rowid alias or a WITHOUT ROWID key can never hold NULL; an
            # INTEGER PRIMARY KEY DESC column is no alias (rowid_key) and can.
            create = _CreateTable(sqls[name], "table %s" % name)
            never_null = create.rowid_key() is not None or not create.rowid
            info.append({"name": name, "columns": [{
                "name": c.name, "type": c.type, "primary_key": bool(c.pk),
                "not_null": bool(c.notnull) or bool(c.pk) and never_null, "default": c.dflt_value,
                "generated": _GENERATED_KINDS.get(c.hidden),
            } for c in columns[name]],
                "indexes": [_index_info(conn, index, sql)
                            for index, sql in indexes.get(_key(name), [])]})
        return {"tables": info, "missing": missing}


def _index_info(conn, name, sql):
    if sql is None:  # made by a UNIQUE or PRIMARY KEY constraint
        columns, where = [column for _, _, column in _query(
            conn, "PRAGMA index_info(%s)" % _quote_identifier(name))], None
    else:
        declaration = _IndexDeclaration(sql)
        _, columns, where = declaration.column_list()
    return {"name": name, "unique": sql is None or declaration.unique, "columns": columns,
            "where": where, "sql": sql}


def schema_sql(db, table=_DEFAULT_TABLE):
    """The schema as SQL (`schema --sql`): `_schema_sql` at the version the
    tracking table records (0 without one); reads only."""
    with _using(db, mode="ro") as conn:
        return _schema_sql(conn, _read_state(conn, table).version, table)


def schema_report(db, tables=None):
    """The schema as text (the `schema` command's output): every table, or
    those named, with its columns and indexes."""
    info = schema_info(db, tables)
    lines = ["=" * 60, "DATABASE SCHEMA REPORT", "=" * 60]
    for table in info["tables"]:
        lines += ["", "Table: %s" % table["name"], "-" * 60]
        if table.get("virtual"):
            lines.append("  (virtual table)")
        for column in table["columns"]:
            lines.append("  - %s: %s" % (column["name"], " ".join(filter(None, [
                column["type"] or "(no type)", column["primary_key"] and "[PK]",
                column["not_null"] and "NOT NULL",
                column["default"] is not None and "DEFAULT %s" % column["default"],
                column["generated"] and "GENERATED %s" % column["generated"]]))))
        lines += ["  Indexes:"] if table["indexes"] else []
        lines += ["    - %s: %s(%s)%s" % (
            index["name"], "UNIQUE " if index["unique"] else "", ", ".join(index["columns"]),
            " WHERE %s" % index["where"] if index["where"] else "") for index in table["indexes"]]
    for name in info["missing"]:
        lines += ["", "Table: %s" % name, "-" * 60, "  (does not exist)"]
    if not info["tables"] and not info["missing"]:
        lines += ["", "(no tables)"]
    return "\n".join(lines + ["", "=" * 60]) + "\n"


# --- Command line -----------------------------------------------------------
# A thin layer over the API above: it parses, calls, prints; no SQL here.

# state: (mark, its ASCII stand-in, label, why)
_STATES = {
    "applied": ("\u2713", "+", "Applied", ""),
    "pending": ("\u25cb", "o", "Pending", ""),
    "changed": ("!", "!", "Changed", " - file changed after it was applied (see verify)"),
    "missing": ("!", "!", "Missing", " - applied, but its file is gone"),
    "in baseline": ("\u2713", "+", "In baseline", " - covered by a baseline"),
    "partly rolled back": ("!", "!", "Partly rolled back",
                           " - its down is running or did not finish: run down, or up to "
                           "apply it again"),
    "out-of-order": ("!", "!", "Out-of-order",
                     " - below the current version and never applied; `up` refuses"),
}


def _print_status(report, stream):
    try:
        "\u2713\u25cb".encode(getattr(stream, "encoding", None) or "ascii")
        ascii_only = False
    except (UnicodeEncodeError, LookupError):
        ascii_only = True
    rule, current = "=" * 33, report["current_version"]
    lines = [rule, "Database Migration Status", rule, "", "Current schema version: %d" % current,
             ""]
    if report["ahead"]:
        lines += ["! The database is at version %d, above every migration file (v%d): wrong "
                  "--dir?" % (current, report["latest_version"]), ""]
    lines += ["Available migrations:", ""]
    for r in report["migrations"]:
        mark, ascii_mark, label, why = _STATES[r["state"]]
        lines.append("  %s %s v%d: %s%s%s" % (
            ascii_mark if ascii_only else mark, label, r["version"], r["name"],
            " (current)" if r["version"] == current and r["state"] != "pending" else "", why))
    lines += ["  (no migration files)"] * (not report["migrations"])
    for b in report.get("backfills", ()):
        lines.append("  backfill %s%s: %s, after %s, %s rows done" % (
            b["table"], "" if b["version"] is None else " (v%d%s)" % (
                b["version"], " down" if b.get("direction") == "down" else ""),
            "done, not yet recorded" if b["done"] else "in progress",
            "the start" if b["after"] is None else "key %s" % ", ".join(
                map(_key_text, b["after"])),
            b["rows"]))
    drifted = sum(r["state"] not in ("applied", "pending", "in baseline")
                  for r in report["migrations"])
    lines += ["", "-" * 33, "Applied: %d" % report["applied"], "Pending: %d" % report["pending"]]
    lines += ["Drifted: %d" % drifted] * bool(drifted) + [rule]
    stream.write("\n".join(lines) + "\n")


def _print_test(result, out):
    def failed(failures, indent):
        for f in failures:
            lines.append("%s%s: %s" % (indent, f["check"], f["message"].replace(
                "\n", "\n" + indent)))  # its later lines ("  statement: ...") under it
            for d in f.get("diff", ()):
                lines.append("%s  %s %s %s%s" % (indent, d["change"], d["type"], d["name"], (
                    ": %s" % (d["after"] if d["before"] is None else d["before"])) if
                    d["change"] != "changed" else ""))
                lines.extend("%s    %s: %s" % (indent, when, d[when]) for when in
                             ("before", "after") if d["change"] == "changed")

    def summary(entries):
        for e in entries:
            bad = [check for check, state in e["checks"].items() if state == "failed"]
            lines.append("  v%d %s: %s" % (e["version"], e["file"] if e.get("baseline") else
                                            e["name"], "FAILED " + ", ".join(bad)
                                            if bad else "not run" if e["checks"]["up"] ==
                                            "not run" else "ok" + " (no down)" * (
                                                e["checks"].get("round-trip") == "no down")))
            failed(e["failures"], "      ")
    lines = ["Fresh build of %d migration(s) on a scratch copy (round trips, generated rows):"
             % len(result["migrations"])]
    summary(result["migrations"])
    lines.append("fresh build: " + ", ".join("%s %s" % item for item in sorted(
        result["fresh_build"].items())))
    failed(result["failures"], "  ")
    lines += ["note: " + note for note in result["notes"]]
    upgrade = result.get("from")
    if upgrade:
        lines.append("--from %s (at version %d): %d pending migration(s)" % (
            upgrade["source"], upgrade["version"], len(upgrade["migrations"])))
        summary(upgrade["migrations"])
        lines.append("upgraded copy: " + ", ".join("%s %s" % item for item in sorted(
            upgrade["checks"].items())) + " (%d untouched table(s))" % len(upgrade["untouched"]))
        failed(upgrade["failures"], "  ")
        lines += ["note: " + note for note in upgrade["notes"]]
    lines.append("OK: every check passed" if result["ok"] else "FAILED: see above")
    out.write("\n".join(lines) + "\n")


class _Progress(object):
    """On a terminal, a status line shows which migration runs, for how long,
    and how far a table copy has got; silent in a pipe or with -q.  Each
    committed migration's result is printed at once, so a later failure still
    shows what was applied.  Events it does not know are ignored."""

    def __init__(self, out, err, live):
        self.out, self.err, self.live = out, err, live
        self._stop = None

    def __call__(self, event, migration, direction, **details):
        if event == "start" and self.live:
            import threading
            self._stop, self._lock, self._started, self._copying = \
                threading.Event(), threading.Lock(), time.time(), ""
            self._label = "%s v%d: %s" % ("applying" if direction == "up" else "rolling back",
                                          migration.version, migration.name)
            threading.Thread(target=self._tick, args=(self._stop,), daemon=True).start()
        elif event == "copy" and self._stop is not None:
            copied, total, rate = details["copied"], details["total"], details.get("rate")
            self._copying = "" if copied >= total else ", %s %s: %d of %d rows%s" % (
                details.get("action", "copying"), details["table"], copied, total,
                ", %.0f rows/s, about %.0f s left" % (rate, (total - copied) / rate)
                if rate else "")  # a backfill's rows/s
            self._draw(self._stop)
        elif event == "end" and self._stop is not None:
            self._stop.set()
            self._draw(self._stop)
            self._stop = None
        elif event == "done":  # `migration` is the result record
            self.out.write("%s v%d: %s (%.0f ms)\n" % (
                "Applied" if direction == "up" else "Rolled back", migration.version,
                migration.name, migration.duration_ms))
            self.out.flush()

    def _tick(self, stop):
        while not stop.wait(0.5):
            self._draw(stop)

    def _draw(self, stop):
        # Both the ticking thread and the runner's (a copy's progress) draw.
        with self._lock:
            self.err.write("\r\033[K" if stop.is_set() else "\r  %s ... %.0fs%s\033[K" % (
                self._label, time.time() - self._started, self._copying))
            self.err.flush()


_PY_TEMPLATE = '''"""Migration {version}: {name}."""

name = "{name}"


def up(db):
    # db works like a sqlite3.Connection inside this migration's transaction.
    # db.executescript("""
    #     ALTER TABLE users ADD COLUMN email TEXT;
    # """)
    pass


def down(db):
    raise NotImplementedError("v{version} ({name}) cannot be rolled back yet")
'''

_SQL_TEMPLATE = "-- Migration {version}: {name}\n\n-- migrate:up\n\n\n-- migrate:down\n\n"


# Longest description part of a new file's name: with any version and the
# extension it stays within the 255 bytes most file systems allow a name.
_MAX_SLUG = 200


def _new_migration(directory, description, sql=False):
    """Create the next numbered migration file from a template; return its path."""
    # File names allow only a-z, 0-9 and hyphens (SPEC section 2): refuse
    # other letters rather than drop them from the name without a word.
    foreign = "".join(sorted(set(c for c in description if c.isalnum() and ord(c) > 127)))
    if foreign:
        raise RequestError("the description %r has letters or digits a migration file name "
                           "cannot hold (%s): names use only a-z, 0-9 and hyphens; describe "
                           "it with those, e.g. \"add user email\"" % (description, foreign))
    slug = "-".join(re.findall(r"[a-z0-9]+", description.lower()))
    if not slug:
        raise RequestError("the description %r has no letters or digits (a-z, 0-9) to name "
                           "the file with" % description)
    if len(slug) > _MAX_SLUG:
        raise RequestError("the description is too long: %d characters in the file name, and "
                           "the limit is %d; say it in fewer words" % (len(slug), _MAX_SLUG))
    number, reserved = 0, None
    try:
        while True:
            existing = sorted(sum(_scan(directory), []), key=lambda m: m.version)  # baselines
            width = max([m.filename.index("-") for m in existing] + [3])
            newest = existing[-1].version if existing else 0
            if reserved is not None:
                if number > newest:
                    break  # no file took the number before it was reserved
                os.remove(reserved)
                reserved = None
            number = max(newest, number) + 1
            try:
                number, reserved = _reserve_number(directory, number)
            except OSError as e:  # the directory is read-only, say: name the file not made
                raise MigrationError("cannot write the migration file %s: %s" % (os.path.join(
                    directory, "%0*d-%s.%s" % (width, number, slug, "sql" if sql else "py")),
                    e.strerror), kind="bad-file", path=directory)
        version = "%0*d" % (width, number)
        path = os.path.join(directory, "%s-%s.%s" % (version, slug, "sql" if sql else "py"))
        text = (_SQL_TEMPLATE if sql else _PY_TEMPLATE).format(
            version=version, name=slug.replace("-", " ").capitalize())
        try:  # a half-written template would be picked up as a migration
            linked = _write_new_file(path, text.encode("utf-8"))
        except OSError as e:
            raise MigrationError("cannot write the migration file %s: %s" % (path, e.strerror),
                                 kind="bad-file", path=path)
    finally:
        if reserved is not None:
            os.remove(reserved)
    if not linked:
        raise MigrationError("cannot write the migration file %s: it exists already (made "
                             "meanwhile?); run new again" % path, kind="bad-file", path=path)
    return path


def _reserve_number(directory, number):
    """(the number, the path of the hidden file reserving it) for the first
    number from `number` on that no other `new` has reserved.  Two `new`s at
    once would both scan the same newest file and write two files with one
    number, which stops every command; the reservation is made with
    O_EXCL (atomic on every file system) and held until the file is linked.
    A reservation a killed `new` left is skipped: a gap, which is allowed.
    Another OSError (a read-only directory) is raised."""
    while True:
        path = os.path.join(directory, ".sqlmigrate-new-%d" % number)  # `.`: never scanned
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            number += 1
            continue
        return number, path


def _print_lint(findings, out, quiet_allowed=False):
    lines = []
    for f in findings:
        if f.allowed and quiet_allowed:
            continue
        where = "%s:%s" % (f.path, f.line) if f.line is not None else f.path
        lines.append("%s: %s %s%s: %s" % (where, f.code, f.level, " (allowed: %s)" % f.allowed
                                          if f.allowed else "", f.message))
        if not f.allowed:
            if f.statement:
                text = " ".join(f.statement.split())
                lines.append("    statement: %s" % (text[:97] + "..." if len(text) > 100 else text))
            lines.append("    fix: %s" % f.fix)
    counts = dict((level, sum(1 for f in findings if f.level == level and not f.allowed))
                  for level in ("error", "warning", "note"))
    lines.append("%s: %d error(s), %d warning(s), %d note(s); %d allowed" % (
        "FAILED" if _lint_fails(findings) else "OK", counts["error"], counts["warning"],
        counts["note"], sum(1 for f in findings if f.allowed)))
    out.write("\n".join(lines) + "\n")


# The command line as data, turned into argparse parsers only when the CLI
# runs (importing argparse costs a few milliseconds that an application
# calling migrate() should not pay).  An option is ("flags METAVAR", help): no
# METAVAR makes an on/off flag, and V and MS take whole numbers, N 1 or more; a
# positional argument is ("destination METAVAR", help), with argparse's nargs
# ("*", "?") after the METAVAR; options in one inner tuple exclude each other.
_GLOBAL_OPTIONS = (
    ("--db PATH", "database file, or HOST:PORT[/DATABASE] with --driver dqlitedbapi "
                  "(default: $SQLMIGRATE_DB, then $DATABASE_PATH)"),
    ("--dir DIR", "migration directory (default: $SQLMIGRATE_DIR, then ./migrations)"),
    ("--package NAME", "read the migrations from this importable package instead of a "
                       "directory, e.g. myapp.migrations (inside a wheel, zip or zipapp too)"),
    ("--table NAME", "tracking table (default: metadata)"),
    ("--busy-timeout MS", "how long to wait for a lock (default: 5000)"),
    ("--schema-file PATH", "rewrite this file with `schema --sql` after up/down change the "
                           "database; verify checks it against a fresh build (default: "
                           "$SQLMIGRATE_SCHEMA_FILE)"),
    ("--driver MODULE", "DB-API module that opens --db, e.g. sqlcipher3 or pysqlite3.dbapi2 "
                        "(default: $SQLMIGRATE_DRIVER, then sqlite3); SQLCipher's key comes "
                        "from $SQLMIGRATE_KEY"),
    ("-v --verbose", "log more, and show tracebacks"),
    ("-q --quiet", "only warnings and errors on stderr"),
)
_DRY_RUN = ("--dry-run", "run in a transaction, print the SQL, roll back")
_BACKUP = ("--backup", "back up the database first")
# name, what it does, example arguments, its options and arguments
_COMMANDS = (
    ("status", "show applied, pending and drifted migrations", "--db app.db status --check", (
        ("--json", "print one JSON object"),
        ("--check", "exit 1 if anything is pending or drifted, or the database is ahead of "
                    "the files: a readiness/health check (one read, never a write)"))),
    ("up", "apply pending migrations", "--db app.db up --backup", (
        ("--to V", "stop after version V"), _DRY_RUN,
        ("--atomic", "all migrations in one transaction"), _BACKUP,
        ("--strict", "refuse to run while files have drifted"),
        ("--wait S", "while another process holds the write lock, retry with back-off for up "
                     "to S seconds before failing"),
        ("--lint", "lint the migrations to apply first; apply nothing if lint would exit 1"))),
    ("down", "roll back the newest migration(s)", "--db app.db down --steps 2", (
        (("--steps N", "roll back the newest N (default 1)"),
         ("--to V", "roll back everything above V")), _DRY_RUN, _BACKUP)),
    ("new", "create the next numbered migration file", 'new "add user email" --sql', (
        ("--sql", "an .sql file instead of .py"),
        ("description DESCRIPTION", 'what it does, e.g. "add user email"'))),
    ("mark", "record migrations up to V as applied without running them",
     "--db legacy.db mark 3", (
         ("version V?", "the version to record as the current one"),
         ("--from-user-version", "record 1..PRAGMA user_version (a hand-rolled runner's "
                                 "database, not yet tracked)"))),
    ("verify", "check file names, loading and drift; exit 1 on any problem",
     "--db app.db verify", ()),
    ("schema", "print the schema report", "--db app.db schema users --json", (
        (("--json", "print JSON"), ("--sql", "print the whole schema as SQL (as --schema-file "
                                              "holds it)")),
        ("tables TABLE*", "only these tables (default: all)"))),
    ("baseline", "write NNN-baseline.sql: the schema as of version V, for new databases",
     "baseline --to 40", (("--to V", "the version it stands for (migrations 1..V)"),
                          ("--force", "write it even when migrations up to V change data"))),
    ("backup", "write a consistent copy of the database", "--db app.db backup /backups/app.db",
     (("path PATH?", "where (default: next to it, with time and version)"),)),
    ("test", "prove the migrations on scratch copies: fresh build, down round trips, data "
             "survival; exit 1 on any failure", "test --from prod-copy.db", (
        ("--from DB", "also apply the pending migrations to a copy of DB (never written)"),
        ("--json", "print the report as JSON"))),
    ("lint", "check migrations for SQLite mistakes before they run; exit 1 on an error not "
             "allowed", "--db app.db lint --json", (
        ("files FILE*", "migration files in --dir (default: the pending ones; all without --db)"),
        ("--json", "print the findings as JSON"),
        ("--round-trip", "also check that each down undoes its up (test's round trips)"))),
)
_DEFAULTS = {"db": None, "dir": None, "package": None, "table": _DEFAULT_TABLE, "driver": None,
             "schema_file": None, "busy_timeout": int(_DEFAULT_BUSY_TIMEOUT * 1000), "verbose": False, "quiet": False}


def _lint_codes_text():
    return "\n\ncodes (allow one with -- sqlmigrate: allow CODE (reason)):\n" + "".join(
        "  %s %-7s %s\n" % (code, level, what) for code, (level, what, _) in _LINT_RULES.items())


def _command_named_in(argv):
    """The command `argv` names, or None: the first word that is not an option
    or a global option's value."""
    takes_value = set(option[0].split()[0] for option in _GLOBAL_OPTIONS
                      if option[0].split()[-1][0] != "-")
    words = iter(argv)
    for word in words:
        if word in takes_value:
            next(words, None)
        elif word == "--" or not word.startswith("-"):
            return word
    return None


def _command_line_parser(argv):
    """The argparse parser of the command line `argv`, built from the tables
    above.  Global options are accepted before or after the command."""
    import argparse

    # argparse makes a formatter for every add_argument, and each one asks
    # shutil (imported with bz2 and lzma) for the terminal's width: about 2 ms
    # of a `status` (bench W1).  The same width once, from os.
    try:
        columns = int(os.environ.get("COLUMNS", "")) or 0
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):  # no stdout, or not a terminal
            columns = 0
    columns = columns if columns > 0 else 80

    def formatter(cls):
        return lambda prog: cls(prog, width=columns - 2)

    class Parser(argparse.ArgumentParser):
        def __init__(self, formatter_class=argparse.HelpFormatter, **options):
            argparse.ArgumentParser.__init__(self, formatter_class=formatter(formatter_class),
                                             **options)

        def error(self, message):  # one line and exit 2, like every bad request
            raise RequestError("%s (see %s --help)" % (message, self.prog))

    def whole_number(text, least=0):
        # Not int() alone: it takes " 5", "1_000" and "-1".
        if not text or not set(text) <= _DIGITS or int(text) < least:
            raise argparse.ArgumentTypeError("needs a whole number (%d or more), not %r"
                                             % (least, text))
        return int(text)

    def given(text):
        # An empty --db= must not fall back to $SQLMIGRATE_DB silently.
        if not text:
            raise argparse.ArgumentTypeError("needs a value")
        return text

    def seconds(text):
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not value >= 0 or value == float("inf"):
            raise argparse.ArgumentTypeError("needs a number of seconds, not %r" % text)
        return value

    def add(parser, options, **extra):
        for option in options:
            if isinstance(option[0], tuple):
                add(parser.add_mutually_exclusive_group(), option, **extra)
                continue
            words, text = option[0].split(), option[1]
            flags, metavar = [w for w in words if w[0] == "-"], words[-1].rstrip("*?")
            if not flags:
                parser.add_argument(words[0], metavar=metavar, help=text,
                                    nargs=words[-1][len(metavar):] or None,
                                    type=whole_number if metavar == "V" else None)
            elif metavar == flags[-1]:
                parser.add_argument(*flags, action="store_true", help=text, **extra)
            else:
                parser.add_argument(*flags, metavar=metavar, help=text, **extra, type=(
                    whole_number if metavar in ("V", "MS") else seconds if metavar == "S"
                    else (lambda text: whole_number(text, 1)) if metavar == "N" else given))

    top = Parser(prog="sqlmigrate", allow_abbrev=False,
                 description="Versioned, transactional schema migrations for SQLite.",
                 epilog="example: python -m sqlmigrate --db app.db up")
    add(top, _GLOBAL_OPTIONS)
    top.set_defaults(**_DEFAULTS)
    version = "sqlmigrate " + __version__
    top.add_argument("--version", action="version", version=version)
    commands = top.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    commands.required = True  # a keyword argument only from Python 3.7
    wanted = _command_named_in(argv)
    names = [command[0] for command in _COMMANDS]
    for name, text, example, options in _COMMANDS:
        if wanted in names and name != wanted:
            continue  # building all eight sub-parsers costs more than a `status` (bench W1)
        sub = commands.add_parser(name, help=text, description=text, allow_abbrev=False,
                                  epilog="example: python -m sqlmigrate " + example + (
                                      _lint_codes_text() if name == "lint" else ""),
                                  **({"formatter_class": argparse.RawDescriptionHelpFormatter}
                                     if name == "lint" else {}))
        add(sub, options)
        group = sub.add_argument_group("global options (also before the command)")
        add(group, _GLOBAL_OPTIONS, default=argparse.SUPPRESS)
        group.add_argument("--version", action="version", version=version)
    return top


# The PyPI distributions of the drivers whose import name differs.
_DRIVER_PACKAGES = {"sqlcipher3": "sqlcipher3-binary", "pysqlite3": "pysqlite3-binary",
                    "dqlitedbapi": "dqlite-dbapi"}


def _cli_opener(args):
    """The opener for --driver / $SQLMIGRATE_DRIVER and $SQLMIGRATE_KEY."""
    name = args.driver or os.environ.get("SQLMIGRATE_DRIVER") or "sqlite3"
    # An empty $SQLMIGRATE_KEY is no key (SQLCipher would take it as "no encryption").
    key = os.environ.get("SQLMIGRATE_KEY") or None
    if name == "sqlite3":
        if key is not None:
            raise RequestError("$SQLMIGRATE_KEY is set, but the sqlite3 module does not "
                               "encrypt: use --driver sqlcipher3 (or unset it)")
        return _Opener()
    # Checked before importing: import_module takes ".x" as a relative
    # import and raises TypeError, and a path is no package to pip install.
    if not all(part.isidentifier() for part in name.split(".")):
        raise RequestError("driver %r is not a module name (such as sqlcipher3 or "
                           "pysqlite3.dbapi2)" % name)
    import importlib
    try:
        module = importlib.import_module(name)
    except ImportError as e:
        top = name.split(".")[0]
        raise RequestError("cannot import driver module %s (%s): install it into this Python, "
                           "e.g. %s -m pip install %s" % (name, e, os.path.basename(
                               sys.executable or "python3"), _DRIVER_PACKAGES.get(top, top)))
    except (Exception, SystemExit) as e:  # its own code failed as it ran
        # SystemExit left alone would end the CLI with that status, nothing done.
        raise RequestError("cannot import driver module %s: %s" % (name, (
            "called exit (sys.exit(%r))" % (e.code,) if isinstance(e, SystemExit)
            else _exception_text(e))))
    if not callable(getattr(module, "connect", None)) or \
            not isinstance(getattr(module, "Error", None), type):
        raise RequestError("driver module %s is not a DB-API module (no connect() and Error)"
                           % name)
    return _Opener(module, key)


def _run_command(args, out, err):
    if args.package is not None and (args.dir is not None or args.command == "new"):
        raise RequestError("--package reads migrations from a package: it takes no --dir, and "
                           "`new` writes into a directory (--dir)")
    directory = args.dir or os.environ.get("SQLMIGRATE_DIR") or "migrations"
    source = {"package": args.package} if args.package else {"directory": directory}
    # What every command's Migrator takes (an empty variable is no schema file).
    options = dict(source, table=args.table, busy_timeout=args.busy_timeout / 1000.0,
                   schema_file=args.schema_file or os.environ.get("SQLMIGRATE_SCHEMA_FILE")
                   or None)
    if args.command == "new":
        out.write(_new_migration(directory, args.description, args.sql) + "\n")
        return 0
    if args.command == "baseline":  # the files only: no database is opened
        if args.to is None:  # refused in the CLI's words (the API's name to=)
            raise RequestError("baseline needs --to V, the version of a migration file")
        path = Migrator(":memory:", table=args.table, **source).baseline(args.to, args.force)
        out.write("Wrote %s: the schema as of v%d\n" % (path, args.to))
        return 0
    db = args.db or os.environ.get("SQLMIGRATE_DB") or os.environ.get("DATABASE_PATH")
    if args.command == "test":  # scratch copies only: --db is not used
        result = Migrator(db or ":memory:", **options).test(getattr(args, "from"))
        if args.json:
            import json
            out.write(json.dumps(result, indent=2) + "\n")
        else:
            _print_test(result, out)
        return 0 if result["ok"] else 1
    if not db and args.command == "lint":
        return _run_on(args, ":memory:", options, out, err)  # the files only
    if not db:
        raise RequestError("no database given: use --db PATH or set $SQLMIGRATE_DB (or "
                           "$DATABASE_PATH)")
    if not _OPENER.server:
        return _run_on(args, db, options, out, err)
    conn = _OPENER.connect_server(db, options["busy_timeout"])
    try:  # the commands take the open connection as the API's callers do
        return _run_on(args, conn, options, out, err)
    finally:
        conn.close()


def _run_on(args, db, options, out, err):
    if args.command == "schema" and args.sql:
        if args.tables:
            raise RequestError("schema --sql prints the whole schema; it takes no table names")
        out.write(schema_sql(db, args.table))
        return 0
    if args.command == "schema":
        import json
        out.write(json.dumps(schema_info(db, args.tables or None), indent=2) + "\n" if args.json
                  else schema_report(db, args.tables or None))
        return 0
    if args.command == "backup":
        out.write("Backed up to %s\n" % backup(db, args.path, options["busy_timeout"],
                                                args.table))
        return 0
    migrator = Migrator(db, **options,
                        progress=_Progress(out, err, not args.quiet and err.isatty()))
    if args.command == "status":
        report = migrator.status()
        if args.json:
            import json
            out.write(json.dumps(report, indent=2) + "\n")
        else:
            _print_status(report, out)
            if not report["database_exists"]:
                out.write("(database %s does not exist yet)\n" % migrator.path)
        return 1 if args.check and not report["clean"] else 0
    if args.command == "verify":
        migrator.migrations  # noqa: B018 - bad names are a bad request (exit 2) here too
        problems = migrator.verify()
        out.write("".join("problem: %s\n" % problem for problem in problems))
        out.write("%d problem(s) found\n" % len(problems) if problems
                  else "OK: %d migration file(s), no drift%s\n" % (len(migrator.migrations), "" if
                       migrator.schema_file is None else "; a fresh build gives the schema file"))
        return 1 if problems else 0
    if args.command == "mark":
        marked = migrator.mark(args.version, from_user_version=args.from_user_version)
        # `marked`: only what this run recorded (none when all were already).
        out.write("Marked %d migration(s) as applied; schema version is now %d\n"
                  % (len(marked), max([m.version for m in marked] + [args.version or 0])))
        return 0
    if args.command == "lint":
        findings = migrator.lint(args.files or None, args.round_trip)
        if args.json:
            import json
            out.write(json.dumps({"ok": not _lint_fails(findings), "findings": [
                dict(f._asdict()) for f in findings]}, indent=2) + "\n")
        else:
            _print_lint(findings, out)
        return 1 if _lint_fails(findings) else 0
    if args.command == "up" and args.lint:
        import logging
        _log("debug", "linting the migrations to apply")  # sets the CLI's logging up first
        logger, saved = logging.getLogger("sqlmigrate"), logging.getLogger("sqlmigrate").level
        logger.setLevel(logging.ERROR)  # the scratch run's messages would read as the real run's
        try:
            findings = migrator.lint(to=args.to)
        finally:
            logger.setLevel(saved)
        _print_lint(findings, out, quiet_allowed=True)
        if _lint_fails(findings):
            raise MigrationError("lint found %d error(s) not allowed (see above)" % sum(
                1 for f in findings if f.level == "error" and not f.allowed), kind="lint",
                outcome="nothing was applied")
    if args.command == "up":
        done = migrator.up(to=args.to, dry_run=args.dry_run, atomic=args.atomic,
                           backup=args.backup, strict=args.strict, wait=args.wait)
    else:
        done = migrator.down(to=args.to, steps=args.steps, dry_run=args.dry_run,
                             backup=args.backup)
    verb = "applied" if args.command == "up" else "rolled back"
    for result in done if args.dry_run else ():  # _Progress printed each result already
        out.write("-- v%d: %s%s\n" % (result.version, result.name, "" if result.executed_sql
                                      is not None else " (non-transactional: not run)"))
        out.write("".join(sql.rstrip().rstrip(";") + ";\n" for sql in result.executed_sql or ()))
    out.write("Dry run: %d migration(s) would be %s; nothing was changed%s.\n" % (
        len(done), verb, ", no backup made" if args.backup else "") if args.dry_run
        else "%s %d migration(s).\n" % (verb.capitalize(), len(done)) if done
        else "Nothing to %s.\n" % ("apply" if args.command == "up" else "roll back"))
    return 0


def main(argv=None):
    """The command line; returns the exit status (0 done, 1 failed, 2 bad request)."""
    return _main(argv, sys.stdout, sys.stderr)


def _main(argv, out, err, own_process=False):
    """main(), writing results to `out` and messages to `err`.  own_process:
    the process is the CLI's (_main_exit), so while a command runs, what a
    migration print()s goes to `err`: stdout holds only results (--json, a
    dry run's SQL)."""
    import types
    args = types.SimpleNamespace(**_DEFAULTS)  # for the error handling if parsing fails
    try:
        try:
            argv = sys.argv[1:] if argv is None else argv
            parsed = _command_line_parser(argv).parse_args(argv)
        except SystemExit as e:  # argparse printed --help or --version
            return e.code or 0
        if parsed.verbose and parsed.quiet:
            raise RequestError("-v/--verbose and -q/--quiet cannot be used together")
        args, handlers = parsed, []

        def set_up(logging):  # at the first message, or now if logging is loaded
            handlers.append(logging.StreamHandler(err))
            handlers[0].setFormatter(logging.Formatter("sqlmigrate: %(levelname)s: %(message)s"))
            logger = logging.getLogger("sqlmigrate")
            logger.addHandler(handlers[0])
            # `test` runs every migration several times over: only its report counts.
            logger.setLevel(logging.DEBUG if args.verbose else logging.WARNING if args.quiet or
                            args.command in ("test", "lint") else logging.INFO)
            # The per-migration lines are printed as results on stdout already.
            logging.getLogger("sqlmigrate.runner").setLevel(
                logging.INFO if args.verbose else logging.WARNING)

        _LOG_SETUP.append(set_up)
        if "logging" in sys.modules:
            _log("debug", "sqlmigrate %s", __version__)
        global _OPENER
        try:
            _OPENER = _cli_opener(args)
            sys.stdout = err if own_process else sys.stdout
            return _run_command(args, out, err)
        finally:
            sys.stdout = out if own_process else sys.stdout
            _OPENER = _Opener()
            if set_up in _LOG_SETUP:
                _LOG_SETUP.remove(set_up)
            for handler in handlers:
                sys.modules["logging"].getLogger("sqlmigrate").removeHandler(handler)
    except RequestError as e:
        status, error = 2, e
    except MigrationError as e:
        status, error = 1, e
    except _DB.Error as e:
        status, error = 1, _sqlite_failure(e, args.db)
    except KeyboardInterrupt:
        err.write("sqlmigrate: interrupted\n")
        return 130
    if args.verbose:
        import traceback
        traceback.print_exception(type(error), error, error.__traceback__, file=err)
    err.write("sqlmigrate: error: %s\n" % error)
    return status


def _tolerant_stream(stream):
    """Python 3.6 in the C locale writes ASCII and raises on anything else
    (3.7+ coerces to UTF-8); show such characters escaped instead."""
    if getattr(stream, "errors", None) in ("strict", "surrogateescape"):
        if hasattr(stream, "reconfigure"):  # Python 3.7+
            stream.reconfigure(errors="backslashreplace")
        elif hasattr(stream, "buffer"):
            import io
            stream = io.TextIOWrapper(stream.buffer, encoding=stream.encoding,
                                      errors="backslashreplace", line_buffering=True)
    return stream


class _ReaderMayLeave(object):
    """The process's stdout, for when its reader goes away (`up | head -1`)
    or it cannot be written (a full disk, `>&-`): the run goes on to the end
    (the migrations committed so far stay either way, and stopping at a
    random one would surprise), and what could not be written, with
    everything after, goes to stderr instead."""

    def __init__(self, out, err):
        self._out, self._err = out, err
        self._unflushed = []  # written since the last flush that reached the reader

    def __getattr__(self, name):
        return getattr(self._out, name)

    def write(self, text):
        self._unflushed.append(text)
        self._safely("write", text)
        return len(text)

    def flush(self):
        self._safely("flush")
        del self._unflushed[:]

    def _safely(self, method, *args):
        try:
            if self._out is None:  # started without descriptor 1: Python's sys.stdout is None
                raise BrokenPipeError(0, "no stdout")
            getattr(self._out, method)(*args)
        except OSError as e:
            # Point the descriptor at devnull: the text still in the stream's
            # buffer is flushed there at exit, instead of Python printing
            # "Exception ignored ... BrokenPipeError".
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                try:
                    os.dup2(devnull, self._out.fileno())
                finally:
                    os.close(devnull)
            except (OSError, ValueError, AttributeError):
                pass
            self._out = self._err
            self._err.write("sqlmigrate: stdout %s; the rest of the output follows here\n" % (
                "was closed" if isinstance(e, BrokenPipeError) else "cannot be written (%s)"
                % (e.strerror or e)) + "".join(self._unflushed))
            self._err.flush()


class _MessagesMayBeLost(object):
    """The process's stderr, for when it cannot be written (`2>&-`, a full
    disk): the messages are lost, but not the run, nor its exit status (a
    failed write ended it with a traceback's 1, a bad request's 2 included)."""

    def __init__(self, err):
        # Without descriptor 2 Python's sys.stderr is None; devnull opened now
        # takes descriptor 2, which a database file opened later would get.
        self._err = err if err is not None else open(os.devnull, "w")

    def __getattr__(self, name):
        return getattr(self._err, name)

    def write(self, text):
        self._safely("write", text)
        return len(text)

    def flush(self):
        self._safely("flush")

    def _safely(self, method, *args):
        try:
            getattr(self._err, method)(*args)
        except (OSError, ValueError):
            # Nowhere from now on: the text left in the stream's buffer would
            # fail again as Python exits, making the status 120.
            self._err = open(os.devnull, "w")


def _main_exit():
    """Entry point of the process (script, -m, installed command)."""
    sys.stdout = _tolerant_stream(sys.stdout)
    sys.stderr = _MessagesMayBeLost(_tolerant_stream(sys.stderr))
    sys.stdout = _ReaderMayLeave(sys.stdout, sys.stderr)
    sys.exit(_main(None, sys.stdout, sys.stderr, own_process=True))


if __name__ == "__main__":
    # Migrations that `import sqlmigrate` must get this very module, not a
    # second copy with its own MigrationError class.
    sys.modules.setdefault("sqlmigrate", sys.modules[__name__])
    _main_exit()
