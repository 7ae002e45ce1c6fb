"""sqlmigrate: versioned, transactional schema migrations for SQLite in one file.

Numbered migration files (``001-initial-schema.py``, ``002-add-user-field.sql``)
run in order, each all-or-nothing, and the highest applied version is kept in a
``metadata`` table inside the database.  Standard library only; CPython 3.6+
and SQLite 3.7.17+.  Usage::

    import sqlmigrate

    # at start-up: apply whatever is pending (a no-op costs one query)
    sqlmigrate.migrate("data/app.db", "migrations")

    m = sqlmigrate.Migrator("data/app.db", "migrations")
    print(m.current_version, [p.name for p in m.pending()])
    m.up(dry_run=True)            # run inside a transaction, print SQL, roll back
    m.down(steps=1)               # roll back the newest migration

    # from a shell:  python sqlmigrate.py --db data/app.db status | up | down
"""

import logging
import os
import re
import sqlite3
import sys
import time
from contextlib import contextmanager

__version__ = "0.1.0"
__all__ = [
    "MigrationError", "RequestError", "Migration", "Migrator", "migrate", "backup",
    "connect", "transaction", "quote_identifier", "split_sql",
    "reconcile", "merge_json_defaults", "schema_report", "schema_info",
    "rebuild_table", "drop_column",
]

log = logging.getLogger("sqlmigrate")
log.addHandler(logging.NullHandler())
# One line per applied migration; the CLI prints those as results instead.
_runner_log = logging.getLogger("sqlmigrate.runner")

DEFAULT_TABLE = "metadata"
DEFAULT_BUSY_TIMEOUT = 5.0  # seconds


class MigrationError(Exception):
    """Every error sqlmigrate raises on purpose; the message says what to do."""


class RequestError(MigrationError):
    """The request itself is wrong (bad file names, missing directory, bad
    arguments): nothing was tried.  The CLI exits with status 2 for these."""


# --- Compatibility shims ---------------------------------------------------
# Every version-dependent branch in the module reads one of these names.

SQLITE_VERSION = sqlite3.sqlite_version_info
# Connection.backup() arrived in Python 3.7; 3.6 gets a locked file copy.
HAS_BACKUP_API = hasattr(sqlite3.Connection, "backup")
# Python 3.12 added Connection.autocommit; LEGACY_TRANSACTION_CONTROL is its
# default, under which isolation_level rules (as on 3.6 to 3.11).
LEGACY_TRANSACTION_CONTROL = getattr(sqlite3, "LEGACY_TRANSACTION_CONTROL", -1)
# pragma_table_info() as a table-valued function: SQLite 3.16.
HAS_PRAGMA_FUNCTIONS = SQLITE_VERSION >= (3, 16, 0)
# ALTER TABLE ... RENAME COLUMN: 3.25; ... DROP COLUMN (without its 3.35.0-4 bugs): 3.35.5.
HAS_RENAME_COLUMN = SQLITE_VERSION >= (3, 25, 0)
HAS_DROP_COLUMN = SQLITE_VERSION >= (3, 35, 5)


class _LazyRegex(object):
    """A regex compiled on first use, so `import sqlmigrate` costs about what
    importing sqlite3 does (compiling them all would add ~1.7 ms)."""

    def __init__(self, pattern, flags=0):
        self._args = (pattern, flags)

    def __getattr__(self, name):
        compiled = re.compile(*self._args)
        for method in ("match", "search", "finditer"):
            setattr(self, method, getattr(compiled, method))
        return getattr(compiled, name)


# Windows needs O_BINARY for os.open() to leave line endings alone.
_O_BINARY_READ = os.O_RDONLY | getattr(os, "O_BINARY", 0)


def _tolerant_stream(stream):
    """Python 3.6 in the C locale writes ASCII and raises on anything else
    (3.7+ coerces to UTF-8); show such characters escaped instead."""
    if getattr(stream, "errors", None) not in ("strict", "surrogateescape"):
        return stream
    if hasattr(stream, "reconfigure"):  # Python 3.7+
        stream.reconfigure(errors="backslashreplace")
        return stream
    if hasattr(stream, "buffer"):
        import io
        return io.TextIOWrapper(stream.buffer, encoding=stream.encoding,
                                errors="backslashreplace", line_buffering=True)
    return stream


def _autocommit_mode(conn):
    return getattr(conn, "autocommit", LEGACY_TRANSACTION_CONTROL)


# --- SQL text: one tokenizer, one splitter, one quoter ----------------------

_TOKEN_RE = _LazyRegex(r"""
    (?P<space>\s+)
  | (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<string>'(?:[^']|'')*(?:'|\Z))
  | (?P<ident>"(?:[^"]|"")*(?:"|\Z)|`(?:[^`]|``)*(?:`|\Z)|\[[^\]]*(?:\]|\Z))
  | (?P<word>[^\s'"`\[\]();,.+\-*/%<>=!|&~^]+)
  | (?P<punct>.)
""", re.X | re.S)


def tokenize(sql):
    """Split SQL text into (kind, text) pairs; kind is space, comment, string,
    ident (a quoted identifier), word or punct.  Joining the texts gives `sql`."""
    return [(match.lastgroup, match.group()) for match in _TOKEN_RE.finditer(sql)]


def split_sql(sql):
    """Split a script into statements (without the final ';').

    Semicolons inside strings, quoted identifiers, comments and trigger bodies
    do not split; a last statement without ';' is kept; empty ones are dropped.
    """
    statements, current, words = [], [], []
    in_trigger = trigger_done = False
    case_depth = 0
    for kind, text in tokenize(sql):
        if not current and kind in ("space", "comment"):
            continue  # a statement starts at its first real token
        if kind == "punct" and text == ";" and (not in_trigger or trigger_done):
            if current:
                statements.append("".join(current).rstrip())
            current, words = [], []
            in_trigger = trigger_done = False
            case_depth = 0
            continue
        current.append(text)
        if kind != "word":
            continue
        word = text.upper()
        if len(words) < 3:
            words.append(word)
            if words[0] == "CREATE" and word == "TRIGGER":
                in_trigger = True
        elif in_trigger:
            # CASE ... END inside a trigger body must not end the trigger.
            if word == "CASE":
                case_depth += 1
            elif word == "END":
                if case_depth:
                    case_depth -= 1
                else:
                    trigger_done = True
    tail = "".join(current).rstrip()
    if tail:
        statements.append(tail)
    return statements


def quote_identifier(name):
    """Quote an SQL identifier by doubling its double quotes; safe on any SQLite."""
    return '"' + str(name).replace('"', '""') + '"'


# --- Migration files --------------------------------------------------------

_NAME_RE = _LazyRegex(r"^(\d{3,})-([a-z0-9]+(?:-[a-z0-9]+)*)\.(py|sql)$")
_DESCRIPTION_RE = _LazyRegex(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_MARKER_RE = _LazyRegex(r"^[ \t]*--[ \t]*migrate:(up|down)\b([^\n]*)$", re.M | re.I)
_PY_NAME_RE = _LazyRegex(r"""^name\s*=\s*(?P<q>['"])(?P<name>(?:(?!(?P=q)).)*)(?P=q)\s*(?:#.*)?$""",
                         re.M)


def _filename_problem(filename):
    """Why `filename` breaks the naming rule."""
    stem = filename.rsplit(".", 1)[0]
    digits = re.match(r"\d*", stem).group()
    example = "e.g. 001-initial-schema.py"
    if not digits:
        return "the name must start with a version of at least 3 digits (%s)" % example
    if len(digits) < 3:
        return "version must have at least 3 digits (%s)" % example
    rest = stem[len(digits):]
    if not rest.startswith("-"):
        return "use a hyphen after the version (%s)" % example
    if not _DESCRIPTION_RE.match(rest[1:]):
        return ("use kebab-case for the description: lower-case letters and digits "
                "joined by single hyphens (%s)" % example)
    return "the name does not follow <version>-<description>.py|.sql (%s)" % example


class Migration(object):
    """One migration file.  Cheap to create: the file is read only when its
    checksum or code is needed, and a Python file is executed only by load()."""

    def __init__(self, directory, filename, version, description, kind):
        self.path = directory + filename  # directory ends with a separator
        self.filename = filename
        self.version, self.description, self.kind = version, description, kind
        self._source = self._checksum = None
        self._name = None
        self._loaded = False
        self._module = None
        self._up_sql = self._down_sql = None
        self._transactional = True
        self.duration_ms = None     # set when the runner applies or rolls it back
        self.executed_sql = None    # set by a dry run: the statements it executed

    def __repr__(self):
        return "<Migration v%d %s>" % (self.version, self.filename)

    @property
    def source(self):
        if self._source is None:
            # os.read rather than open(): a third of the cost, which matters
            # when a no-op start-up hashes every applied migration.
            try:
                fd = os.open(self.path, _O_BINARY_READ)
                try:
                    chunks = []
                    chunk = os.read(fd, 1 << 16)
                    while chunk:
                        chunks.append(chunk)
                        chunk = os.read(fd, 1 << 16)
                finally:
                    os.close(fd)
            except OSError as e:
                raise MigrationError("cannot read migration %s: %s" % (self.path, e.strerror))
            self._source = b"".join(chunks)
        return self._source

    @property
    def checksum(self):
        # Line endings are normalised so a checkout with CRLF is not "changed".
        if self._checksum is None:
            import hashlib  # lazily: OpenSSL's import costs more than sqlite3's
            normalised = self.source.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            self._checksum = hashlib.sha256(normalised).hexdigest()
        return self._checksum

    @property
    def name(self):
        """The `name` a Python file declares (read without running it), else
        the description in words: 002-add-user-field -> "Add user field"."""
        if self._name is None:
            name = None
            if self.kind == "py":
                match = _PY_NAME_RE.search(self.source.decode("utf-8", "replace"))
                name = match.group("name") if match else None
            self._name = name or self.description.replace("-", " ").capitalize()
        return self._name

    @property
    def has_down(self):
        self.load()
        if self.kind == "py":
            return callable(getattr(self._module, "down", None))
        return self._down_sql is not None

    @property
    def transactional(self):
        self.load()
        return self._transactional

    def load(self):
        """Read, compile and validate the file; raise MigrationError naming the
        file (and line) on any problem.  Runs a Python file's top level once."""
        if not self._loaded:
            if self.kind == "py":
                self._load_python()
            else:
                self._load_sql()
            self._loaded = True
        return self

    def _load_python(self):
        import types
        try:
            code = compile(self.source, self.path, "exec")
        except SyntaxError as e:
            raise MigrationError("%s:%s: syntax error: %s" % (self.path, e.lineno, e.msg))
        module = types.ModuleType("sqlmigrate_migration_%d" % self.version)
        module.__file__ = self.path
        try:
            exec(code, module.__dict__)
        except Exception as e:
            raise MigrationError("%s:%s: error while loading the migration: %s: %s"
                                 % (self.path, _error_line(e, self.path), type(e).__name__, e))
        if not callable(getattr(module, "up", None)):
            raise MigrationError("%s: the migration has no up(db) function" % self.path)
        declared = getattr(module, "version", None)
        if declared is not None and declared != self.version:
            raise MigrationError("%s: version = %r disagrees with the file name (version %d); "
                                 "fix one of them" % (self.path, declared, self.version))
        name = getattr(module, "name", None)
        if name is not None:
            self._name = str(name)
        self._transactional = bool(getattr(module, "transaction", True))
        self._module = module

    def _load_sql(self):
        try:
            text = self.source.decode("utf-8")
        except UnicodeDecodeError as e:
            raise MigrationError("%s is not valid UTF-8 (byte %d); save it as UTF-8"
                                 % (self.path, e.start))
        markers = list(_MARKER_RE.finditer(text))
        if not markers:
            self._up_sql = text
            return
        if split_sql(text[:markers[0].start()]):
            raise MigrationError("%s: SQL before the first '-- migrate:' marker" % self.path)
        for i, marker in enumerate(markers):
            end = markers[i + 1].start() if i + 1 < len(markers) else len(text)
            body = text[marker.end():end]
            direction = marker.group(1).lower()
            options = marker.group(2).strip().lower()
            if (self._up_sql if direction == "up" else self._down_sql) is not None:
                raise MigrationError("%s: more than one '-- migrate:%s' marker"
                                     % (self.path, direction))
            if options not in ("", "transaction:false", "transaction:true"):
                raise MigrationError("%s: unknown marker option %r (only transaction:false)"
                                     % (self.path, options))
            if direction == "up":
                self._up_sql = body
                self._transactional = options != "transaction:false"
            else:
                self._down_sql = body
        if self._up_sql is None:
            raise MigrationError("%s: has '-- migrate:down' but no '-- migrate:up'" % self.path)

    def run(self, db, direction):
        """Run up or down against `db` (the runner's MigrationConnection)."""
        self.load()
        if self.kind == "py":
            getattr(self._module, direction)(db)
        else:
            for statement in split_sql(self._up_sql if direction == "up" else self._down_sql):
                db.execute(statement)


def _error_line(error, path):
    tb = error.__traceback__
    line = "?"
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def discover(directory):
    """Every migration in `directory`, sorted by version.  All names are
    checked first: any invalid or duplicate name raises RequestError listing
    every problem, so nothing runs while one file is wrong."""
    directory = os.fspath(directory)
    try:
        with os.scandir(directory) as scan:  # scandir: no stat() per file
            entries = sorted((entry.name, entry.is_dir()) for entry in scan)
    except FileNotFoundError:
        raise RequestError("migration directory %s does not exist (use --dir or $SQLMIGRATE_DIR)"
                           % directory)
    except NotADirectoryError:
        raise RequestError("%s is not a directory of migrations" % directory)
    except OSError as e:
        raise RequestError("cannot read migration directory %s: %s" % (directory, e.strerror))
    problems, by_version, prefix = [], {}, os.path.join(directory, "")
    for filename, is_dir in entries:
        if is_dir or filename.startswith(("_", ".")) or not filename.endswith((".py", ".sql")):
            continue
        match = _NAME_RE.match(filename)
        if not match:
            problems.append("%s: %s" % (os.path.join(directory, filename),
                                        _filename_problem(filename)))
            continue
        version = int(match.group(1))
        if version in by_version:
            problems.append("two migrations have version %d: %s and %s; renumber one"
                            % (version, by_version[version].filename, filename))
            continue
        by_version[version] = Migration(prefix, filename, version, match.group(2),
                                        match.group(3))
    if problems:
        raise RequestError("invalid migration files:\n  " + "\n  ".join(problems))
    return [by_version[v] for v in sorted(by_version)]


# --- Connections and transactions -------------------------------------------

def _uri(path, mode):
    path = os.path.abspath(path).replace(os.sep, "/")
    for char, escaped in (("%", "%25"), ("?", "%3F"), ("#", "%23")):
        path = path.replace(char, escaped)
    return "file:%s%s?mode=%s" % ("/" if not path.startswith("/") else "", path, mode)


def _database_exists(path):
    """Whether the file exists; a path in a missing directory is an error."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise RequestError("cannot open database %s: directory %s does not exist"
                           % (path, directory))
    return os.path.exists(path)


def connect(path, busy_timeout=DEFAULT_BUSY_TIMEOUT, mode="rwc"):
    """Open the database at `path` in autocommit mode (transactions are
    explicit).  mode: "ro" read-only, "rw" existing file, "rwc" create."""
    path = os.fspath(path)
    if path == ":memory:":
        return sqlite3.connect(":memory:", isolation_level=None)
    if not _database_exists(path) and mode != "rwc":
        raise MigrationError("database %s does not exist" % path)
    try:
        return sqlite3.connect(_uri(path, mode), uri=True, timeout=busy_timeout,
                               isolation_level=None)
    except sqlite3.Error as e:
        raise MigrationError("cannot open database %s: %s" % (path, e))


@contextmanager
def using(db, busy_timeout=DEFAULT_BUSY_TIMEOUT, mode="rw"):
    """Yield a connection for `db`: a connection as it is (never closed), or
    a path opened for the duration; sqlite3 errors become MigrationErrors."""
    if isinstance(db, (sqlite3.Connection, MigrationConnection)):
        conn, path = db, None
    else:
        path = os.fspath(db)
        conn = connect(path, busy_timeout, mode)
    try:
        yield conn
    except sqlite3.Error as e:
        raise explain_sqlite_error(e, path)
    finally:
        if path is not None:
            conn.close()


@contextmanager
def transaction(conn, immediate=True):
    """One transaction: BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error.
    Inside a transaction the caller already holds, a SAVEPOINT instead, so a
    failure undoes only our part and the caller decides what to commit."""
    if conn.in_transaction:
        name = "sqlmigrate_%d" % id(conn)
        conn.execute("SAVEPOINT " + name)
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK TO " + name)
            conn.execute("RELEASE " + name)
            raise
        conn.execute("RELEASE " + name)
        return
    with _explicit_transactions(conn):
        conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


@contextmanager
def _explicit_transactions(conn):
    """Let us issue BEGIN/COMMIT ourselves on a connection of any mode, and put
    its mode back afterwards.  Only called outside a transaction: setting
    isolation_level or autocommit commits a pending one (Python 3.6-3.13)."""
    if _autocommit_mode(conn) is True or (_autocommit_mode(conn) == LEGACY_TRANSACTION_CONTROL
                                          and conn.isolation_level is None):
        yield
        return
    if _autocommit_mode(conn) is False:  # Python 3.12+ PEP 249 mode
        conn.autocommit = True
        try:
            yield
        finally:
            conn.autocommit = False
        return
    saved = conn.isolation_level
    conn.isolation_level = None
    try:
        yield
    finally:
        conn.isolation_level = saved


def _raw(conn):
    """The sqlite3.Connection behind a MigrationConnection, or conn itself."""
    return getattr(conn, "_conn", conn)


def _query(conn, sql, params=()):
    """Rows as plain tuples, whatever row_factory the caller's connection has."""
    cursor = conn.cursor()
    cursor.row_factory = None
    return cursor.execute(sql, params).fetchall()


def foreign_keys_enabled(conn):
    return bool(_query(conn, "PRAGMA foreign_keys")[0][0])


@contextmanager
def foreign_keys_off(conn):
    """Switch foreign keys off around a transaction (the pragma is a no-op
    inside one) and back on after; yields whether they had been on."""
    was_on = foreign_keys_enabled(conn)
    if was_on:
        conn.execute("PRAGMA foreign_keys = OFF")
    try:
        yield was_on
    finally:
        if was_on:
            conn.execute("PRAGMA foreign_keys = ON")


def check_foreign_keys(conn):
    """Raise MigrationError naming every row that breaks a foreign key."""
    rows = _query(conn, "PRAGMA foreign_key_check")
    if rows:
        shown = ["%s rowid %s -> %s" % (table, rowid, parent) for table, rowid, parent, _ in rows[:20]]
        more = " (and %d more)" % (len(rows) - 20) if len(rows) > 20 else ""
        raise MigrationError("foreign key violations: %s%s" % ("; ".join(shown), more))


def explain_sqlite_error(error, path):
    """A sqlite3 error as a MigrationError a person can act on."""
    where = path if path else "the database"
    return database_problem(error, path) or MigrationError("%s: %s" % (where, error))


def database_problem(error, path):
    """The MigrationError for an error that is the database file's fault
    (locked, read-only, not a database), or None for any other error."""
    message = str(error)
    where = path if path else "the database"
    if "database is locked" in message or "busy" in message:
        return MigrationError(
            "database %s is locked by another process; wait for it to finish (or stop it) "
            "and try again, or raise --busy-timeout" % where)
    if "readonly" in message or "read-only" in message:
        return MigrationError("database %s is read-only: check the file's and its "
                              "directory's permissions" % where)
    if "not a database" in message or "encrypted" in message:
        return MigrationError("%s is not an SQLite database (%s)" % (where, message))
    if "unable to open" in message:
        return MigrationError("cannot open database %s: %s" % (where, message))
    return None


# --- Tracking ---------------------------------------------------------------
# metadata(key, value) holds 'schema_version'; <table>_migrations holds one row
# per applied migration: version, name, checksum, applied_at, duration_ms.

class TrackingState(object):
    def __init__(self, version, records, has_metadata, has_history):
        self.version = version
        self.records = records          # {version: (name, checksum, applied_at, duration_ms)}
        self.has_metadata = has_metadata
        self.has_history = has_history

    def applied(self, files):
        """Applied versions.  Without a history table (a database adopted from
        another runner) every file up to schema_version counts as applied."""
        if self.has_history:
            return set(self.records)
        return set(m.version for m in files if m.version <= self.version)


def _missing_table(error):
    return isinstance(error, sqlite3.OperationalError) and "no such table" in str(error)


def read_state(conn, table):
    """The tracking state; one query on an established database."""
    metadata, history = quote_identifier(table), quote_identifier(table + "_migrations")
    try:
        rows = _query(conn, "SELECT NULL, value, NULL, NULL, NULL FROM %s WHERE key = "
                      "'schema_version' UNION ALL SELECT version, name, checksum, applied_at, "
                      "duration_ms FROM %s" % (metadata, history))
    except sqlite3.OperationalError:
        return _read_state_step_by_step(conn, table)
    version_rows = [row[1] for row in rows if row[0] is None]
    records = dict((row[0], row[1:]) for row in rows if row[0] is not None)
    return TrackingState(_parse_version(version_rows, table), records, True, True)


def _read_state_step_by_step(conn, table):
    """A new, adopted or foreign database: find out which tables exist."""
    try:
        version_rows = [row[0] for row in _query(
            conn, "SELECT value FROM %s WHERE key = 'schema_version'" % quote_identifier(table))]
        has_metadata = True
    except sqlite3.OperationalError as e:
        if not _missing_table(e):
            if "no such column" in str(e):
                raise MigrationError(
                    "table %r exists but is not a key/value metadata table (%s); "
                    "choose another tracking table with --table / table=" % (table, e))
            raise
        version_rows, has_metadata = [], False
    records, has_history = {}, False
    if has_metadata:
        try:
            for row in _query(conn, "SELECT version, name, checksum, applied_at, duration_ms "
                              "FROM %s" % quote_identifier(table + "_migrations")):
                records[row[0]] = row[1:]
            has_history = True
        except sqlite3.OperationalError as e:
            if not _missing_table(e):
                raise
    return TrackingState(_parse_version(version_rows, table), records, has_metadata, has_history)


def _parse_version(values, table):
    try:
        return int(values[0]) if values and values[0] is not None else 0
    except (TypeError, ValueError):
        raise MigrationError("%s.schema_version is %r, not a whole number" % (table, values[0]))


def _ensure_tracking(conn, table, state, files):
    """Create the tracking tables inside the caller's transaction; an adopted
    database gets a history row for each migration its version covers."""
    if not state.has_metadata:
        conn.execute("CREATE TABLE IF NOT EXISTS %s (key TEXT PRIMARY KEY, value TEXT)"
                     % quote_identifier(table))
    if not state.has_history:
        conn.execute("CREATE TABLE IF NOT EXISTS %s (version INTEGER PRIMARY KEY, "
                     "name TEXT NOT NULL, checksum TEXT, applied_at TEXT, duration_ms REAL)"
                     % quote_identifier(table + "_migrations"))
        for m in files:
            if m.version <= state.version:
                _write_record(conn, table, m, None, None, checksum=None)
                state.records[m.version] = (m.name, None, None, None)
        state.has_metadata = state.has_history = True


def _write_record(conn, table, m, applied_at, duration_ms, checksum):
    conn.execute("INSERT OR REPLACE INTO %s (version, name, checksum, applied_at, duration_ms) "
                 "VALUES (?, ?, ?, ?, ?)" % quote_identifier(table + "_migrations"),
                 (m.version, m.name, checksum, applied_at, duration_ms))


def _write_version(conn, table, version):
    # UPDATE first: an adopted metadata table may lack the UNIQUE key that
    # INSERT OR REPLACE would need.
    if conn.execute("UPDATE %s SET value = ? WHERE key = 'schema_version'"
                    % quote_identifier(table), (str(version),)).rowcount == 0:
        conn.execute("INSERT INTO %s (key, value) VALUES ('schema_version', ?)"
                     % quote_identifier(table), (str(version),))


def _utc_now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- Runner -----------------------------------------------------------------

class MigrationConnection(object):
    """What a migration's up(db)/down(db) receives: the real connection with
    two changes that keep a transactional migration atomic on every Python:
    executescript() runs statement by statement inside the transaction (the
    stdlib's commits first), and commit()/rollback() raise."""

    _ENDS_TRANSACTION = _LazyRegex(r"\s*(BEGIN|COMMIT|END|ROLLBACK(?!\s+(TRANSACTION\s+)?TO\b))\b",
                                   re.I)

    def __init__(self, conn, transactional):
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_transactional", transactional)
        object.__setattr__(self, "failed_statement", None)

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def __setattr__(self, name, value):
        if self._transactional and name in ("isolation_level", "autocommit"):
            raise MigrationError("a migration must not change db.%s: it would commit "
                                 "the migration's transaction" % name)
        setattr(self._conn, name, value)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def _refuse(self, what):
        raise MigrationError("%s is not allowed inside a transactional migration: the runner "
                             "commits when up()/down() returns (set transaction = False to "
                             "manage transactions yourself)" % what)

    def commit(self):
        if self._transactional:
            self._refuse("db.commit()")
        self._conn.commit()

    def rollback(self):
        if self._transactional:
            self._refuse("db.rollback()")
        self._conn.rollback()

    def execute(self, sql, parameters=()):
        return self._run(self._conn.execute, sql, parameters)

    def executemany(self, sql, seq_of_parameters):
        return self._run(self._conn.executemany, sql, seq_of_parameters)

    def _run(self, method, sql, parameters):
        if self._transactional and self._ENDS_TRANSACTION.match(sql):
            self._refuse(sql.strip().split(None, 1)[0].upper())
        try:
            return method(sql, parameters)
        except sqlite3.Error:
            object.__setattr__(self, "failed_statement", sql)
            raise

    def executescript(self, sql):
        cursor = None
        for statement in split_sql(sql):
            cursor = self.execute(statement)
        return cursor if cursor is not None else self._conn.cursor()

    def cursor(self, *args):
        return _MigrationCursor(self, self._conn.cursor(*args))


class _MigrationCursor(object):
    def __init__(self, db, cursor):
        self._db, self._cursor = db, cursor

    def __getattr__(self, name):
        return getattr(self._cursor, name)

    def __iter__(self):
        return iter(self._cursor)

    def execute(self, sql, parameters=()):
        self._db._run(lambda s, p: self._cursor.execute(s, p), sql, parameters)
        return self

    def executemany(self, sql, seq_of_parameters):
        self._db._run(lambda s, p: self._cursor.executemany(s, p), sql, seq_of_parameters)
        return self

    def executescript(self, sql):
        for statement in split_sql(sql):
            self.execute(statement)
        return self


class Migrator(object):
    """Migrations in `directory` against `db` (a path or an open connection).

    A connection you pass is used as it is and never closed; its
    isolation_level, autocommit and foreign_keys are as before on return.
    """

    def __init__(self, db, directory="migrations", table=DEFAULT_TABLE,
                 busy_timeout=DEFAULT_BUSY_TIMEOUT, progress=None):
        if isinstance(db, (sqlite3.Connection, MigrationConnection)):
            self.connection, self.path = db, None
        else:
            self.connection, self.path = None, os.fspath(db)
        self.directory = os.fspath(directory)
        self.table = table
        self.busy_timeout = busy_timeout
        self.progress = progress or (lambda event, migration, direction: None)
        self._migrations = None

    # -- reading ------------------------------------------------------------

    @property
    def migrations(self):
        if self._migrations is None:
            self._migrations = discover(self.directory)
        return self._migrations

    @property
    def current_version(self):
        return self._read_state().version

    def pending(self):
        state = self._read_state()
        applied = state.applied(self.migrations)
        return [m for m in self.migrations if m.version not in applied]

    def status(self):
        """The data of `status --json`."""
        return self._report(self._read_state())

    def _report(self, state):
        rows, by_version = [], {m.version: m for m in self.migrations}
        applied = state.applied(self.migrations)
        for version in sorted(set(by_version) | set(state.records)):
            m = by_version.get(version)
            record = state.records.get(version)
            if m is None:
                entry_state = "missing"
            elif version in applied:
                entry_state = "changed" if record and record[1] and record[1] != m.checksum \
                    else "applied"
            else:
                entry_state = "out-of-order" if version < state.version else "pending"
            rows.append({
                "version": version,
                "name": m.name if m else (record[0] if record else None),
                "file": m.filename if m else None,
                "state": entry_state,
                "applied_at": record[2] if record else None,
            })
        latest = self.migrations[-1].version if self.migrations else 0
        return {
            "database": self.path if self.path is not None else "<connection>",
            "current_version": state.version,
            "latest_version": latest,
            "applied": sum(1 for r in rows if r["state"] in ("applied", "changed")),
            "pending": sum(1 for r in rows if r["state"] in ("pending", "out-of-order")),
            "ahead": state.version > latest,
            "migrations": rows,
        }

    def verify(self):
        """Every problem with the files or the drift, as sentences; [] if clean."""
        try:
            migrations = self.migrations
        except RequestError as e:
            return str(e).split("\n  ")[1:] or [str(e)]
        problems = []
        for m in migrations:
            try:
                m.load()
            except MigrationError as e:
                problems.append(str(e))
        report = self.status()
        problems.extend(_drift_sentences(report, self.table))
        return problems

    # -- changing -------------------------------------------------------------

    def up(self, to=None, dry_run=False, atomic=False, backup=False, strict=False):
        """Apply pending migrations (up to version `to`); return them."""
        with self._session(dry_run) as session:
            state = session.state
            report = self._report(state)
            problems = _drift_sentences(report, self.table)
            if report["ahead"]:
                raise MigrationError(problems[0])
            out_of_order = [r for r in report["migrations"] if r["state"] == "out-of-order"]
            if out_of_order:
                raise MigrationError("; ".join(_drift_sentences(
                    dict(report, migrations=out_of_order), self.table)) + "; nothing was applied")
            if problems:
                if strict:
                    raise MigrationError("; ".join(problems) + " (strict mode: nothing applied)")
                for problem in problems:
                    log.warning(problem)
            applied = state.applied(self.migrations)
            plan = [m for m in self.migrations if m.version not in applied
                    and (to is None or m.version <= to)]
            return self._execute(session, plan, "up", dry_run, atomic, backup)

    def down(self, to=None, steps=1, dry_run=False, backup=False):
        """Roll back the newest `steps` migrations, or all above version `to`."""
        if to is not None and to < 0 or steps is not None and steps < 1 and to is None:
            raise RequestError("down needs steps >= 1 or to >= 0")
        with self._session(dry_run) as session:
            state = session.state
            report = self._report(state)
            if report["ahead"]:
                raise MigrationError(_drift_sentences(report, self.table)[0])
            applied = sorted(state.applied(self.migrations), reverse=True)
            targets = [v for v in applied if v > to] if to is not None else applied[:steps]
            by_version = {m.version: m for m in self.migrations}
            problems = []
            for v in targets:
                if v not in by_version:
                    problems.append("v%d has no migration file" % v)
                elif not by_version[v].has_down:
                    problems.append("%s has no down()" % by_version[v].filename)
            if problems:
                raise MigrationError("cannot roll back: %s; nothing was rolled back"
                                     % "; ".join(problems))
            plan = [by_version[v] for v in targets]
            return self._execute(session, plan, "down", dry_run, False, backup)

    def mark(self, version):
        """Record every migration up to `version` as applied without running it."""
        files = [m for m in self.migrations if m.version <= version]
        if version < 0 or version and version not in {m.version for m in self.migrations}:
            raise RequestError("no migration file has version %d" % version)
        if version < self.current_version:
            raise MigrationError("the database is at version %d already; mark only moves "
                                 "forward (use down to go back)" % self.current_version)
        with self._session(False, create=True) as session:
            conn = session.conn
            with transaction(conn):
                state = read_state(conn, self.table)
                _ensure_tracking(conn, self.table, state, self.migrations)
                for m in files:
                    if m.version not in state.records or state.records[m.version][1] is None:
                        _write_record(conn, self.table, m, _utc_now(), None, m.checksum)
                _write_version(conn, self.table, version)
        log.info("Marked migrations up to v%d as applied", version)
        return files

    # -- machinery ----------------------------------------------------------

    def _read_state(self):
        if self.connection is not None:
            return self._guarded(read_state, self.connection, self.table)
        if not _database_exists(self.path):
            return TrackingState(0, {}, False, False)
        conn = connect(self.path, self.busy_timeout, mode="ro")
        try:
            return self._guarded(read_state, conn, self.table)
        finally:
            conn.close()

    def _guarded(self, function, *args):
        try:
            return function(*args)
        except sqlite3.Error as e:
            raise explain_sqlite_error(e, self.path)

    @contextmanager
    def _session(self, dry_run, create=False):
        """Validate the files, then read the state on a connection that can
        write only if something may need to: a dry run against a file that
        does not exist runs in memory, and nothing creates a file early."""
        self.migrations  # noqa: B018 - names are validated before any connection
        session = _Session()
        if self.connection is not None:
            session.conn = self.connection
            # Python 3.12's autocommit=False keeps a transaction open at all
            # times; leaving that mode commits it, as Python documents.
            if self.connection.in_transaction and _autocommit_mode(self.connection) is not False:
                raise MigrationError("the connection has an open transaction; commit or roll "
                                     "it back before migrating")
        elif _database_exists(self.path):
            session.conn = connect(self.path, self.busy_timeout, mode="rw")
        elif dry_run:
            session.conn = connect(":memory:")
        elif create:
            session.conn = connect(self.path, self.busy_timeout, mode="rwc")
        try:
            if session.conn is None:
                session.state = TrackingState(0, {}, False, False)
                session.opener = lambda: connect(self.path, self.busy_timeout, mode="rwc")
                yield session
            else:
                # A caller's connection in any mode gets explicit BEGIN/COMMIT
                # for the session and its own mode back afterwards.
                with _explicit_transactions(session.conn):
                    session.state = self._guarded(read_state, session.conn, self.table)
                    yield session
        except sqlite3.Error as e:
            raise explain_sqlite_error(e, self.path)
        finally:
            if session.conn is not None and session.conn is not self.connection:
                session.conn.close()

    def _execute(self, session, plan, direction, dry_run, atomic, backup_wanted):
        for m in plan:
            m.load()  # every file validated before the first one runs
        if atomic or dry_run:
            stepwise = [m for m in plan if not m.transactional]
            if atomic and stepwise:
                raise MigrationError("--atomic cannot include non-transactional migrations: %s"
                                     % ", ".join(m.filename for m in stepwise))
        if not plan:
            return []
        if dry_run:
            return self._dry_run(session.conn, plan, direction)
        if session.conn is None:
            session.conn = session.opener()
        conn = session.conn
        if backup_wanted and self.path is not None and session.opener is None:
            backup(conn, _backup_path(self.path, session.state.version))
        done = []
        if atomic:
            with foreign_keys_off(conn) as checked, transaction(conn):
                for m in plan:
                    if self._apply(conn, m, direction, checked):
                        done.append(m)
            return done
        for m in plan:
            if m.transactional:
                with foreign_keys_off(conn) as checked, transaction(conn):
                    applied = self._apply(conn, m, direction, checked)
            else:
                applied = self._apply_outside_transaction(conn, m, direction)
            if applied:
                done.append(m)
        return done

    def _apply(self, conn, m, direction, check_fk):
        """Run one migration inside the open transaction and record it.
        The state is re-read under the write lock, so a migration another
        process applied meanwhile is skipped, not run twice."""
        state = read_state(conn, self.table)
        applied = state.applied(self.migrations)
        if (m.version in applied) != (direction == "down"):
            log.info("v%d was %s by another process meanwhile; skipped", m.version,
                     "applied" if direction == "up" else "rolled back")
            return False
        _ensure_tracking(conn, self.table, state, self.migrations)
        self._run_body(conn, m, direction, True)
        if check_fk:
            try:
                check_foreign_keys(conn)
            except MigrationError as e:
                raise MigrationError("%s: %s; the migration was rolled back" % (m.path, e))
        self._record(conn, m, direction, state, applied)
        return True

    def _apply_outside_transaction(self, conn, m, direction):
        state = read_state(conn, self.table)
        if (m.version in state.applied(self.migrations)) != (direction == "down"):
            return False
        with foreign_keys_off(conn):
            self._run_body(conn, m, direction, False)
        with transaction(conn):
            state = read_state(conn, self.table)
            _ensure_tracking(conn, self.table, state, self.migrations)
            self._record(conn, m, direction, state, state.applied(self.migrations))
        return True

    def _run_body(self, conn, m, direction, transactional):
        db = MigrationConnection(conn, transactional)
        saved_factories = conn.row_factory, conn.text_factory
        self.progress("start", m, direction)
        started = time.perf_counter()
        try:
            m.run(db, direction)
        except Exception as e:
            problem = isinstance(e, sqlite3.Error) and database_problem(e, self.path)
            if problem:  # the database, not the migration, is at fault
                raise MigrationError("%s: %s" % (m.path, problem))
            raise _migration_failure(m, direction, e, db.failed_statement, transactional)
        finally:
            conn.row_factory, conn.text_factory = saved_factories
            m.duration_ms = (time.perf_counter() - started) * 1000.0
            self.progress("end", m, direction)
        if transactional and not conn.in_transaction:
            raise MigrationError("%s ended the runner's transaction (COMMIT or VACUUM?); "
                                 "set transaction = False for such a migration" % m.path)

    def _record(self, conn, m, direction, state, applied):
        if direction == "up":
            _write_record(conn, self.table, m, _utc_now(), round(m.duration_ms, 3), m.checksum)
            _write_version(conn, self.table, max(applied | {m.version}))
            _runner_log.info("Applied v%d: %s (%.0f ms)", m.version, m.name, m.duration_ms)
        else:
            conn.execute("DELETE FROM %s WHERE version = ?"
                         % quote_identifier(self.table + "_migrations"), (m.version,))
            _write_version(conn, self.table, max(applied - {m.version} or {0}))
            _runner_log.info("Rolled back v%d: %s (%.0f ms)", m.version, m.name, m.duration_ms)

    def _dry_run(self, conn, plan, direction):
        """Run the plan in one transaction, keep every statement executed, roll back."""
        statements = []

        def trace(sql):
            if not sql.lstrip().startswith("--"):  # trigger sub-programs
                statements.append(sql)

        done = []
        try:
            with transaction(conn):
                for m in plan:
                    if not m.transactional:
                        m.executed_sql = None
                        log.info("dry run: v%d %s is non-transactional; not run", m.version,
                                 m.name)
                        done.append(m)
                        continue
                    state = read_state(conn, self.table)
                    _ensure_tracking(conn, self.table, state, self.migrations)
                    del statements[:]
                    conn.set_trace_callback(trace)
                    try:
                        self._run_body(conn, m, direction, True)
                    finally:
                        conn.set_trace_callback(None)
                    m.executed_sql = list(statements)
                    self._record(conn, m, direction, state, state.applied(self.migrations))
                    done.append(m)
                raise _DryRunRollback()
        except _DryRunRollback:
            pass
        return done


class _Session(object):
    conn = state = opener = None


class _DryRunRollback(Exception):
    pass


def _migration_failure(m, direction, error, statement, transactional):
    if isinstance(error, MigrationError) and not isinstance(error, sqlite3.Error) \
            and str(error).startswith(m.path):
        return error
    parts = ["%s (%s) failed: %s: %s" % (m.path, direction, type(error).__name__, error)]
    if statement:
        parts.append("statement: %s" % " ".join(statement.split())[:500])
    if transactional:
        parts.append("the migration was rolled back; earlier migrations stay applied")
    else:
        parts.append("it ran outside a transaction: the database may be partly changed")
    failure = MigrationError("\n  ".join(parts))
    failure.__cause__ = error
    return failure


def _drift_sentences(report, table):
    sentences = []
    if report.get("ahead"):
        sentences.append("database is at version %d but the newest migration file is v%d: "
                         "wrong --dir, or files missing? nothing was changed"
                         % (report["current_version"], report["latest_version"]))
    for r in report["migrations"]:
        if r["state"] == "changed":
            sentences.append("%s (v%d) was changed after it was applied" % (r["file"], r["version"]))
        elif r["state"] == "missing":
            sentences.append("v%d (%s) is applied but its file is gone" % (r["version"], r["name"]))
        elif r["state"] == "out-of-order":
            sentences.append("%s (v%d) is below the current version %d and was never applied; "
                             "give it a version above %d" % (r["file"], r["version"],
                                                              report["current_version"],
                                                              report["current_version"]))
    return sentences


def migrate(db, directory="migrations", **options):
    """Apply every pending migration: the start-up one-liner.  Returns the
    migrations applied (an empty list when the database is up to date)."""
    up_options = {k: options.pop(k) for k in ("to", "dry_run", "atomic", "backup", "strict")
                  if k in options}
    return Migrator(db, directory, **options).up(**up_options)


# --- Backups ----------------------------------------------------------------

def _backup_path(path, version):
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    candidate = "%s.%s-v%d.bak" % (path, stamp, version)
    n = 1
    while os.path.exists(candidate):
        n += 1
        candidate = "%s.%s-v%d.%d.bak" % (path, stamp, version, n)
    return candidate


def backup(db, dest=None, busy_timeout=DEFAULT_BUSY_TIMEOUT):
    """Write a consistent copy of `db` (path or connection) to `dest`; return
    the path.  Default name: next to the database, with the time and version."""
    with using(db, busy_timeout) as conn:
        if dest is None:
            source_path = _query(conn, "PRAGMA database_list")[0][2]
            if not source_path:
                raise RequestError("an in-memory database needs a backup path")
            dest = _backup_path(source_path, read_state(conn, DEFAULT_TABLE).version)
        dest = os.fspath(dest)
        if os.path.exists(dest):
            raise RequestError("backup destination %s exists already" % dest)
        if HAS_BACKUP_API:
            target = sqlite3.connect(dest)
            try:
                _raw(conn).backup(target)
            finally:
                target.close()
        else:
            _copy_under_write_lock(conn, dest)
        log.info("Backed up the database to %s", dest)
        return dest


def _copy_under_write_lock(conn, dest):
    """Python 3.6 has no backup API: hold the write lock (no commit can happen,
    and a hot journal has been rolled back by the read) while the file and
    its WAL are copied, then fold the WAL into the copy."""
    import shutil
    source_path = _query(conn, "PRAGMA database_list")[0][2]
    with transaction(conn):
        _query(conn, "SELECT count(*) FROM sqlite_master")
        shutil.copyfile(source_path, dest)
        if os.path.exists(source_path + "-wal"):
            shutil.copyfile(source_path + "-wal", dest + "-wal")
    if os.path.exists(dest + "-wal"):
        copy = sqlite3.connect(dest, isolation_level=None)
        try:
            copy.execute("PRAGMA journal_mode = DELETE")
        finally:
            copy.close()


# --- Helpers: reconcile, JSON defaults, schema report -----------------------

def reconcile(db, columns=None, indexes=None):
    raise MigrationError("reconcile() is not implemented yet")


def merge_json_defaults(db, table, column, defaults, where=None, params=()):
    raise MigrationError("merge_json_defaults() is not implemented yet")


def schema_info(db, tables=None):
    raise MigrationError("schema_info() is not implemented yet")


def schema_report(db, tables=None):
    raise MigrationError("schema_report() is not implemented yet")


# --- Helpers: table rebuild -------------------------------------------------

def rebuild_table(db, table, drop=(), rename=None, create_sql=None):
    raise MigrationError("rebuild_table() is not implemented yet")


def drop_column(db, table, column):
    return rebuild_table(db, table, drop=[column])


# --- Command line -----------------------------------------------------------
# A thin layer over the API above: it parses, calls, prints; no SQL here.

_MARKS_UNICODE = {"applied": "\u2713", "pending": "\u25cb", "drift": "!"}
_MARKS_ASCII = {"applied": "+", "pending": "o", "drift": "!"}
_STATE_LABELS = {
    "applied": ("applied", "Applied", ""),
    "pending": ("pending", "Pending", ""),
    "changed": ("drift", "Changed", " - file changed after it was applied (see verify)"),
    "missing": ("drift", "Missing", " - applied, but its file is gone"),
    "out-of-order": ("drift", "Out-of-order",
                     " - below the current version and never applied; `up` refuses"),
}

_EXAMPLES = {
    "status": "example: python sqlmigrate.py --db app.db status --check",
    "up": "example: python sqlmigrate.py --db app.db up --backup",
    "down": "example: python sqlmigrate.py --db app.db down --steps 2",
    "new": "example: python sqlmigrate.py new \"add user email\" --sql",
    "mark": "example: python sqlmigrate.py --db legacy.db mark 3",
    "verify": "example: python sqlmigrate.py --db app.db verify",
    "schema": "example: python sqlmigrate.py --db app.db schema users --json",
    "backup": "example: python sqlmigrate.py --db app.db backup /backups/app.db",
}


def _marks(stream):
    try:
        "".join(_MARKS_UNICODE.values()).encode(getattr(stream, "encoding", None) or "ascii")
        return _MARKS_UNICODE
    except (UnicodeEncodeError, LookupError):
        return _MARKS_ASCII


def _print_status(report, stream):
    marks, rule = _marks(stream), "=" * 33
    lines = [rule, "Database Migration Status", rule, "",
             "Current schema version: %d" % report["current_version"], ""]
    if report["ahead"]:
        lines += ["! The database is at version %d, above every migration file (v%d): wrong "
                  "--dir?" % (report["current_version"], report["latest_version"]), ""]
    lines += ["Available migrations:", ""]
    for r in report["migrations"]:
        mark, label, why = _STATE_LABELS[r["state"]]
        current = " (current)" if r["version"] == report["current_version"] \
            and r["state"] != "pending" else ""
        lines.append("  %s %s v%d: %s%s%s" % (marks[mark], label, r["version"], r["name"],
                                              current, why))
    if not report["migrations"]:
        lines.append("  (no migration files)")
    lines += ["", "-" * 33, "Applied: %d" % report["applied"], "Pending: %d" % report["pending"]]
    drifted = sum(1 for r in report["migrations"] if _STATE_LABELS[r["state"]][0] == "drift")
    if drifted:
        lines.append("Drifted: %d" % drifted)
    lines.append(rule)
    stream.write("\n".join(lines) + "\n")


class _Progress(object):
    """On a terminal, shows which migration runs and for how long; silent in a
    pipe or with -q.  Finished migrations are printed as result lines."""

    def __init__(self, out, err, live):
        self.out, self.err, self.live = out, err, live
        self._stop = None

    def __call__(self, event, migration, direction):
        if event == "start" and self.live:
            import threading
            self._stop = threading.Event()
            started = time.time()
            label = "%s v%d: %s" % ("applying" if direction == "up" else "rolling back",
                                    migration.version, migration.name)

            def tick():
                while not self._stop.wait(0.5):
                    self.err.write("\r  %s ... %.0fs " % (label, time.time() - started))
                    self.err.flush()
            threading.Thread(target=tick, daemon=True).start()
        elif event == "end" and self._stop is not None:
            self._stop.set()
            self.err.write("\r\033[K")
            self.err.flush()
            self._stop = None


def _print_run(done, direction, dry_run, out):
    verb = {"up": "Applied", "down": "Rolled back"}[direction]
    for m in done:
        if dry_run:
            out.write("-- v%d: %s%s\n" % (m.version, m.name, "" if m.executed_sql is not None
                                          else " (non-transactional: not run)"))
            for statement in m.executed_sql or []:
                out.write(statement.rstrip().rstrip(";") + ";\n")
        else:
            out.write("%s v%d: %s (%.0f ms)\n" % (verb, m.version, m.name, m.duration_ms or 0))
    if dry_run:
        out.write("Dry run: %d migration(s) would be %s; nothing was changed.\n"
                  % (len(done), "applied" if direction == "up" else "rolled back"))
    elif done:
        out.write("%s %d migration(s).\n" % (verb, len(done)))
    else:
        out.write("Nothing to %s.\n" % ("apply" if direction == "up" else "roll back"))


def _slug(description):
    return "-".join(re.findall(r"[a-z0-9]+", description.lower()))


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

_SQL_TEMPLATE = """-- Migration {version}: {name}

-- migrate:up


-- migrate:down

"""


def new_migration(directory, description, sql=False):
    """Create the next numbered migration file from a template; return its path."""
    slug = _slug(description)
    if not slug:
        raise RequestError("the description %r has no letters or digits" % description)
    existing = discover(directory)
    width = max([len(_NAME_RE.match(m.filename).group(1)) for m in existing] + [3])
    version = existing[-1].version + 1 if existing else 1
    path = os.path.join(directory, "%0*d-%s.%s" % (width, version, slug, "sql" if sql else "py"))
    name = slug.replace("-", " ").capitalize()
    template = _SQL_TEMPLATE if sql else _PY_TEMPLATE
    with open(path, "x") as f:
        f.write(template.format(version="%0*d" % (width, version), name=name))
    return path


def build_parser():
    import argparse

    def global_options(defaults):
        parser = argparse.ArgumentParser(add_help=False)
        d = (lambda value: value) if defaults else (lambda value: argparse.SUPPRESS)
        parser.add_argument("--db", default=d(None), metavar="PATH",
                            help="database file (default: $SQLMIGRATE_DB, then $DATABASE_PATH)")
        parser.add_argument("--dir", default=d(None), metavar="DIR",
                            help="migration directory (default: $SQLMIGRATE_DIR, then ./migrations)")
        parser.add_argument("--table", default=d(DEFAULT_TABLE), metavar="NAME",
                            help="tracking table (default: metadata)")
        parser.add_argument("--busy-timeout", type=int, default=d(int(DEFAULT_BUSY_TIMEOUT * 1000)),
                            metavar="MS", help="how long to wait for a lock (default: 5000)")
        loudness = parser.add_mutually_exclusive_group()
        loudness.add_argument("-v", "--verbose", action="store_true", default=d(False),
                              help="log more, and show tracebacks")
        loudness.add_argument("-q", "--quiet", action="store_true", default=d(False),
                              help="only warnings and errors on stderr")
        return parser

    main_parser = argparse.ArgumentParser(
        prog="sqlmigrate", parents=[global_options(True)],
        description="Versioned, transactional schema migrations for SQLite.",
        epilog="example: python sqlmigrate.py --db app.db up")
    main_parser.add_argument("--version", action="version", version="sqlmigrate " + __version__)
    commands = main_parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    shared = [global_options(False)]

    def command(name, help_text):
        return commands.add_parser(name, parents=shared, help=help_text, description=help_text,
                                   epilog=_EXAMPLES[name])

    p = command("status", "show applied, pending and drifted migrations")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--check", action="store_true", help="exit 1 if anything is pending or drifted")
    p = command("up", "apply pending migrations")
    p.add_argument("--to", type=int, metavar="V", help="stop after version V")
    p.add_argument("--dry-run", action="store_true",
                   help="run in a transaction, print the SQL, roll back")
    p.add_argument("--atomic", action="store_true", help="all migrations in one transaction")
    p.add_argument("--backup", action="store_true", help="back up the database first")
    p.add_argument("--strict", action="store_true", help="refuse to run while files have drifted")
    p = command("down", "roll back the newest migration(s)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--steps", type=int, metavar="N", help="roll back the newest N (default 1)")
    group.add_argument("--to", type=int, metavar="V", help="roll back everything above V")
    p.add_argument("--dry-run", action="store_true",
                   help="run in a transaction, print the SQL, roll back")
    p.add_argument("--backup", action="store_true", help="back up the database first")
    p = command("new", "create the next numbered migration file")
    p.add_argument("description", help='what it does, e.g. "add user email"')
    p.add_argument("--sql", action="store_true", help="an .sql file instead of .py")
    p = command("mark", "record migrations up to V as applied without running them")
    p.add_argument("version", type=int, metavar="V")
    command("verify", "check file names, loading and drift; exit 1 on any problem")
    p = command("schema", "print the schema report")
    p.add_argument("tables", nargs="*", metavar="TABLE")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command("backup", "write a consistent copy of the database")
    p.add_argument("path", nargs="?", help="where (default: next to it, with time and version)")
    return main_parser


def _configure_logging(args, stream):
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("sqlmigrate: %(levelname)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if args.verbose else logging.WARNING if args.quiet
                 else logging.INFO)
    # The per-migration lines are printed as results on stdout already.
    _runner_log.setLevel(logging.INFO if args.verbose else logging.WARNING)
    return handler


def run_command(args, out, err):
    import json
    directory = args.dir or os.environ.get("SQLMIGRATE_DIR") or "migrations"
    if args.command == "new":
        out.write(new_migration(directory, args.description, args.sql) + "\n")
        return 0
    db = args.db or os.environ.get("SQLMIGRATE_DB") or os.environ.get("DATABASE_PATH")
    if not db:
        raise RequestError("no database given: use --db PATH or set $SQLMIGRATE_DB")
    if args.command == "schema":
        if args.json:
            out.write(json.dumps(schema_info(db, args.tables or None), indent=2) + "\n")
        else:
            out.write(schema_report(db, args.tables or None))
        return 0
    if args.command == "backup":
        out.write("Backed up to %s\n" % backup(db, args.path, args.busy_timeout / 1000.0))
        return 0
    live = not args.quiet and err.isatty()
    migrator = Migrator(db, directory, table=args.table, busy_timeout=args.busy_timeout / 1000.0,
                        progress=_Progress(out, err, live))
    if args.command == "status":
        report = migrator.status()
        if args.json:
            report = dict(report)
            del report["ahead"]
            out.write(json.dumps(report, indent=2) + "\n")
        else:
            _print_status(report, out)
        drifted = report["pending"] or any(r["state"] != "applied" for r in report["migrations"])
        return 1 if args.check and (drifted or report["current_version"] > report["latest_version"]) \
            else 0
    if args.command == "verify":
        migrator.migrations  # noqa: B018 - bad names are a bad request (exit 2) here too
        problems = migrator.verify()
        for problem in problems:
            out.write("problem: %s\n" % problem)
        out.write("%d problem(s) found\n" % len(problems) if problems
                  else "OK: %d migration file(s), no drift\n" % len(migrator.migrations))
        return 1 if problems else 0
    if args.command == "mark":
        marked = migrator.mark(args.version)
        out.write("Marked %d migration(s) as applied; schema version is now %d\n"
                  % (len(marked), args.version))
        return 0
    if args.command == "up":
        done = migrator.up(to=args.to, dry_run=args.dry_run, atomic=args.atomic,
                           backup=args.backup, strict=args.strict)
    else:
        if args.steps is not None and args.steps < 1 or args.to is not None and args.to < 0:
            raise RequestError("--steps must be 1 or more and --to 0 or more")
        done = migrator.down(to=args.to, steps=args.steps or 1, dry_run=args.dry_run,
                             backup=args.backup)
    _print_run(done, args.command, args.dry_run, out)
    return 0


def main(argv=None):
    """The command line; returns the exit status (0 done, 1 failed, 2 bad request)."""
    out, err = sys.stdout, sys.stderr
    args = build_parser().parse_args(argv)
    handler = _configure_logging(args, err)
    try:
        return run_command(args, out, err)
    except RequestError as e:
        status, error = 2, e
    except MigrationError as e:
        status, error = 1, e
    except sqlite3.Error as e:
        status, error = 1, explain_sqlite_error(e, args.db)
    except KeyboardInterrupt:
        err.write("sqlmigrate: interrupted\n")
        return 130
    finally:
        log.removeHandler(handler)
    if args.verbose:
        import traceback
        traceback.print_exception(type(error), error, error.__traceback__, file=err)
    err.write("sqlmigrate: error: %s\n" % error)
    return status


def main_exit():
    """Entry point of the process (script, -m, installed command)."""
    sys.stdout, sys.stderr = _tolerant_stream(sys.stdout), _tolerant_stream(sys.stderr)
    sys.exit(main())


if __name__ == "__main__":
    # Migrations that `import sqlmigrate` must get this very module, not a
    # second copy with its own MigrationError class.
    sys.modules.setdefault("sqlmigrate", sys.modules[__name__])
    main_exit()
