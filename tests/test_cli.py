"""The command line (SPEC section 6) and its bad-input behaviour (section 7).

Every test runs `python sqlmigrate.py ...` (or `python -m sqlmigrate ...`) as a
real subprocess against real files in a fresh temporary directory.
"""

import glob
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import types
import unittest

from tests.support import SCRIPT, TempDirTestCase, file_sha256, sqlmigrate

try:
    import pty
except ImportError:  # not on Windows
    pty = None

PY36 = os.path.expanduser("~/.pyenv/versions/3.6.15/bin/python")
PY313 = os.path.expanduser("~/.pyenv/versions/3.13.0/bin/python")
_USABLE = {}


def usable_python(python):
    """Whether `python` exists and can import sqlite3 here.  Under the
    compatibility matrix another Python inherits the pair's old libsqlite3,
    which it may refuse (3.13 needs SQLite 3.15.2): such a case is not run."""
    if python not in _USABLE:
        _USABLE[python] = os.path.exists(python) and subprocess.call(
            [python, "-c", "import sqlite3"], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL) == 0
    return _USABLE[python]
SETPRIV = shutil.which("setpriv")

INITIAL_SCHEMA = '''\
"""Migration 001: Initial Schema."""
name = "Initial Schema"


def up(db):
    db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")


def down(db):
    db.execute("DROP TABLE users")
'''

# Holds an exclusive lock on the database named in argv[1] until killed.
LOCKER = (
    "import sqlite3, sys, time\n"
    "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "conn.execute('BEGIN EXCLUSIVE')\n"
    "print('locked', flush=True)\n"
    "time.sleep(60)\n"
)

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")


class CLITestCase(TempDirTestCase):
    """Helpers shared by every command's tests."""

    # -- migration files ------------------------------------------------------

    def add_initial(self):
        """v1 (.py): CREATE TABLE users; has a down."""
        return self.write("001-initial-schema.py", INITIAL_SCHEMA)

    def add_sessions(self):
        """v2 (.sql): CREATE TABLE sessions; has a down.  Name from the file name."""
        return self.write_sql(2, "add-user-field-to-sessions",
                              "CREATE TABLE sessions (id INTEGER PRIMARY KEY, user TEXT);",
                              "DROP TABLE sessions;")

    def add_table(self, version, table, down=True, options=""):
        """An .sql migration creating `table`, named after it."""
        return self.write_sql(version, "create-" + table.replace("_", "-"),
                              "CREATE TABLE %s (id INTEGER PRIMARY KEY);" % table,
                              ("DROP TABLE %s;" % table) if down else None, options)

    # -- running ----------------------------------------------------------------

    def run_ok(self, *args, **kwargs):
        status, out, err = self.cli(*args, **kwargs)
        self.assertEqual(status, 0, "%r failed:\nstdout:\n%s\nstderr:\n%s" % (args, out, err))
        self.assertNotIn("Traceback", err)
        return out, err

    def apply(self, *extra):
        """Apply every pending migration (optionally `--to V`) with the CLI."""
        return self.run_ok("--db", self.db, "up", *extra)

    def sha(self):
        return file_sha256(self.db)

    def make_plain_database(self):
        """A database file that sqlmigrate has never touched."""
        conn = sqlite3.connect(self.db)
        conn.execute("CREATE TABLE legacy (id INTEGER PRIMARY KEY)")
        conn.commit()
        conn.close()

    # -- assertions ---------------------------------------------------------------

    def assert_error(self, result, statuses, *fragments):
        """A failed command: expected exit status (an int or a tuple of allowed
        ones), one `sqlmigrate: error:` message without a traceback, and every
        fragment (case-insensitive) in stderr.  Returns stderr."""
        status, out, err = result
        if isinstance(statuses, int):
            statuses = (statuses,)
        self.assertIn(status, statuses, "exit status %d\nstdout:\n%s\nstderr:\n%s"
                      % (status, out, err))
        self.assertNotIn("Traceback", err)
        self.assertEqual(len(re.findall(r"(?m)^sqlmigrate: error:", err)), 1, err)
        for fragment in fragments:
            self.assertIn(fragment.lower(), err.lower(), "%r not in stderr:\n%s" % (fragment, err))
        return err

    def assert_bad_input(self, args, statuses, *fragments, **kwargs):
        """Run `args` against the existing database: it must fail with a clear
        message and leave the database file byte-for-byte as it was."""
        before = self.sha()
        err = self.assert_error(self.cli(*args, **kwargs), statuses, *fragments)
        self.assertEqual(self.sha(), before, "the database file changed")
        return err

    def assert_no_database_files(self):
        leftovers = [n for n in os.listdir(self.tmp) if n.startswith("app.db")]
        self.assertEqual(leftovers, [], "a database file was created")

    def status_line(self, out, version):
        lines = [l for l in out.splitlines() if re.search(r"\bv%d:" % version, l)]
        self.assertEqual(len(lines), 1, out)
        return lines[0]

    # -- an interpreter for which file permissions hold even when we are root --

    def unprivileged_python(self):
        """A `python=` for self.cli whose permission checks are real.  As
        root, chmod does not stop reads or writes, so the run drops the
        capabilities that let root ignore permissions (setpriv --bounding-set),
        and the probe below proves it worked; otherwise the test is skipped."""
        if not hasattr(os, "geteuid") or os.geteuid() != 0:
            return sys.executable
        if SETPRIV is None:
            self.skipTest("running as root, where chmod does not stop writes, and setpriv "
                          "(to drop CAP_DAC_OVERRIDE) is not installed")
        wrapper = os.path.join(self.tmp, "python-without-dac-override")
        with open(wrapper, "w") as f:
            f.write('#!/bin/sh\nexec "%s" --bounding-set -dac_override,-dac_read_search,'
                    '-fowner "%s" "$@"\n' % (SETPRIV, sys.executable))
        os.chmod(wrapper, 0o755)
        probe = os.path.join(self.tmp, "probe")
        with open(probe, "w") as f:
            f.write("x")
        os.chmod(probe, 0o444)
        proc = subprocess.run([wrapper, "-c", "open(%r, 'a')" % probe],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        os.remove(probe)
        if b"PermissionError" not in proc.stderr:
            self.skipTest("running as root, where chmod does not stop writes, and dropping "
                          "CAP_DAC_OVERRIDE with setpriv did not work here: %r" % proc.stderr)
        return wrapper


# ---------------------------------------------------------------------------
# How the CLI is started, global options, environment variables, --help
# ---------------------------------------------------------------------------

class InvocationTests(CLITestCase):

    def test_script_and_module_invocation_both_apply_migrations(self):
        self.add_initial()
        self.run_ok("--db", self.db, "up", "--to", "1")
        self.add_sessions()
        self.run_ok("--db", self.db, "up", script=True)
        self.assertEqual(self.schema_version(), "2")
        self.assertIn("sessions", self.tables())

    def test_migration_importing_sqlmigrate_gets_the_running_module(self):
        # A second copy of the module would have its own classes, and the
        # isinstance check inside the migration would fail.
        self.write("001-uses-helpers.py", '''
            import sqlmigrate

            def up(db):
                if not isinstance(db, sqlmigrate._MigrationConnection):
                    raise RuntimeError("second copy of sqlmigrate")
                db.execute("CREATE TABLE %s (id INTEGER)" % sqlmigrate._quote_identifier("a b"))
            ''')
        for script in (False, True):
            with self.subTest(script=script):
                if os.path.exists(self.db):
                    os.remove(self.db)
                self.run_ok("--db", self.db, "up", script=script)
                self.assertIn("a b", self.tables())

    def test_version_option_prints_the_version(self):
        for script in (False, True):
            with self.subTest(script=script):
                status, out, err = self.cli("--version", script=script)
                self.assertEqual(status, 0, err)
                self.assertIn("sqlmigrate", out + err)
                self.assertIn(self.module_version(), out + err)

    def module_version(self):
        with open(SCRIPT, encoding="utf-8") as f:
            return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)

    def test_help_of_every_command_shows_an_example(self):
        for command in ("status", "up", "down", "new", "mark", "verify", "schema", "backup"):
            with self.subTest(command=command):
                status, out, err = self.cli(command, "--help")
                self.assertEqual(status, 0, err)
                self.assertIn("usage:", out)
                self.assertRegex(out, r"(?i)example:.*sqlmigrate.*\b%s\b" % command)

    def test_main_help_lists_commands_and_an_example(self):
        status, out, err = self.cli("--help")
        self.assertEqual(status, 0, err)
        for command in ("status", "up", "down", "new", "mark", "verify", "schema", "backup"):
            self.assertIn(command, out)
        self.assertRegex(out, r"(?i)example:")


class ArgumentParsingTests(CLITestCase):
    """Every malformed request is exit 2 with one message that names the
    problem, and the database is left as it was."""

    def setUp(self):
        super().setUp()
        self.add_initial()
        self.apply()

    def test_option_with_equals_sign_and_options_after_the_command(self):
        out, _ = self.run_ok("status", "--db=" + self.db, "--table=metadata", "--json")
        self.assertEqual(json.loads(out)["current_version"], 1)

    def test_double_dash_ends_the_options(self):
        out, _ = self.run_ok("--db", self.db, "new", "--sql", "--", "-strip leading dash")
        self.assertTrue(out.strip().endswith("002-strip-leading-dash.sql"), out)

    def test_malformed_requests_exit_2_and_name_the_problem(self):
        cases = [
            (("stauts",), "invalid choice: 'stauts'", "'status', 'up', 'down'"),
            ((), "required: COMMAND"),
            (("status", "--jsn"), "unrecognized arguments: --jsn"),
            (("up", "--dry"), "unrecognized arguments: --dry"),  # never abbreviated
            (("up", "--to"), "--to: expected one argument"),
            (("up", "--to", "three"), "--to: needs a whole number (0 or more), not 'three'"),
            (("up", "--to", "-5"), "--to: needs a whole number (0 or more), not '-5'"),
            (("--busy-timeout", "1_000", "status"), "--busy-timeout: needs a whole number"),
            (("--busy-timeout", " 5", "status"), "--busy-timeout: needs a whole number"),
            (("--db=", "up"), "--db: needs a value"),
            (("--table=", "status"), "--table: needs a value"),
            (("status", "--table="), "--table: needs a value"),
            (("up", "--dry_run"), "unrecognized arguments: --dry_run"),
            (("--json", "status"), "unrecognized arguments: --json"),
            (("new", "-fix-typo"), "required: DESCRIPTION"),
            (("--busy-timeout=soon", "status"), "--busy-timeout: needs a whole number"),
            (("up", "--db", "--dry-run"), "--db: expected one argument"),
            (("status", "--json=yes"), "--json: ignored explicit argument 'yes'"),
            (("status", "extra"), "unrecognized arguments: extra"),
            (("mark",), "mark needs a version, or from_user_version=True (--from-user-version)"),
            (("mark", "3", "--from-user-version"), "and not both"),
            (("mark", "three"), "needs a whole number (0 or more), not 'three'"),
            (("mark", "-1"), "needs a whole number (0 or more), not '-1'"),
            (("new",), "required: DESCRIPTION"),
            (("down", "--steps", "1", "--to", "0"), "--to: not allowed with argument --steps"),
            (("-v", "status", "--quiet"), "--verbose and -q/--quiet cannot be used together"),
        ]
        for case in cases:
            args, fragments = case[0], case[1:]
            with self.subTest(args=args):
                self.assert_bad_input(("--db", self.db) + args if "--db" not in args
                                      else args, 2, *fragments)

    def test_version_and_help_work_before_or_after_the_command(self):
        for args in (("--version",), ("status", "--version")):
            out, _ = self.run_ok(*args)
            self.assertEqual(out.strip(), "sqlmigrate %s" % InvocationTests.module_version(self))
        out, _ = self.run_ok("--db", self.db, "down", "-h")
        self.assertIn("[--steps N | --to V]", out)
        out, _ = self.run_ok("up", "--help", env={"COLUMNS": "200"})
        self.assertIn("--busy-timeout MS", out)  # the global options, after the command too
        for command in ((), ("status",), ("up",), ("down",), ("new",), ("mark",), ("verify",),
                        ("schema",), ("backup",)):
            out, _ = self.run_ok(*(command + ("--help",)))
            self.assertTrue(all(len(line) <= 79 for line in out.splitlines()), out)

    def test_down_on_a_missing_database_says_it_does_not_exist(self):
        out, err = self.run_ok("--db", self.db + "x", "down")
        self.assertIn("Nothing to roll back", out)
        self.assertIn("does not exist", err)  # a log line of the runner's
        self.assertFalse(os.path.exists(self.db + "x"))

    def test_a_directory_given_as_the_database_is_a_bad_request(self):
        self.assert_error(self.cli("--db", self.tmp, "up"), 2, "is a directory, not a database")


class DatabaseOptionTests(CLITestCase):
    """--db, then $SQLMIGRATE_DB, then $DATABASE_PATH."""

    def setUp(self):
        super().setUp()
        self.add_initial()
        self.a = os.path.join(self.tmp, "a.db")
        self.b = os.path.join(self.tmp, "b.db")
        self.c = os.path.join(self.tmp, "c.db")

    def created(self):
        return sorted(n for n in os.listdir(self.tmp) if n.endswith(".db"))

    def test_db_option_wins_over_both_variables(self):
        self.run_ok("--db", self.c, "up", env={"SQLMIGRATE_DB": self.a, "DATABASE_PATH": self.b})
        self.assertEqual(self.created(), ["c.db"])

    def test_sqlmigrate_db_wins_over_database_path(self):
        self.run_ok("up", env={"SQLMIGRATE_DB": self.a, "DATABASE_PATH": self.b})
        self.assertEqual(self.created(), ["a.db"])
        self.assertEqual(self.schema_version(self.a), "1")

    def test_database_path_is_the_last_fallback(self):
        self.run_ok("up", env={"DATABASE_PATH": self.b})
        self.assertEqual(self.created(), ["b.db"])

    def test_db_option_after_the_command_works_too(self):
        self.run_ok("up", "--db", self.c)
        self.assertEqual(self.created(), ["c.db"])


class DirectoryOptionTests(CLITestCase):
    """--dir, then $SQLMIGRATE_DIR, then ./migrations."""

    def setUp(self):
        super().setUp()
        self.add_initial()  # in ./migrations
        self.other = os.path.join(self.tmp, "other")
        os.mkdir(self.other)
        self.write("001-other-table.sql", "CREATE TABLE other (id INTEGER);\n", directory=self.other)
        self.third = os.path.join(self.tmp, "third")
        os.mkdir(self.third)
        self.write("001-third-table.sql", "CREATE TABLE third (id INTEGER);\n", directory=self.third)

    def test_default_is_migrations_in_the_working_directory(self):
        self.apply()
        self.assertIn("users", self.tables())

    def test_sqlmigrate_dir_replaces_the_default(self):
        self.run_ok("--db", self.db, "up", env={"SQLMIGRATE_DIR": self.other})
        self.assertIn("other", self.tables())
        self.assertNotIn("users", self.tables())

    def test_dir_option_wins_over_sqlmigrate_dir(self):
        self.run_ok("--db", self.db, "--dir", self.third, "up", env={"SQLMIGRATE_DIR": self.other})
        self.assertIn("third", self.tables())
        self.assertNotIn("other", self.tables())

    def test_relative_dir_is_relative_to_the_working_directory(self):
        self.run_ok("--db", "app.db", "--dir", "other", "up", cwd=self.tmp)
        self.assertIn("other", self.tables())

    @unittest.skipIf(os.name != "posix", "a POSIX shell runs the advice")
    def test_a_missing_directorys_mkdir_advice_makes_it_when_run(self):
        # It said "(mkdir new dir/migs)": two directories, and no parent made.
        missing = os.path.join("new dir", "migs")
        err = self.assert_error(self.cli("--db", self.db, "--dir", missing, "status"), 2)
        advice = re.search(r"\((mkdir .*)\), or point", err)
        self.assertIsNotNone(advice, err)
        subprocess.check_call(["sh", "-c", advice.group(1)], cwd=self.tmp)
        self.assertEqual(os.listdir(self.tmp + "/new dir"), ["migs"])


class TableOptionTests(CLITestCase):

    def test_table_option_names_the_tracking_table(self):
        self.add_initial()
        self.run_ok("--db", self.db, "--table", "schema_info", "up")
        tables = self.tables()
        self.assertIn("schema_info", tables)
        self.assertNotIn("metadata", tables)
        value = self.connect().execute(
            "SELECT value FROM schema_info WHERE key = 'schema_version'").fetchone()[0]
        self.assertEqual(value, "1")
        out, _ = self.run_ok("--db", self.db, "--table", "schema_info", "status", "--json")
        self.assertEqual(json.loads(out)["current_version"], 1)

    def test_a_tracking_table_name_sqlite_reserves_is_a_bad_request(self):
        # It was found only as the first migration committed: exit 1, blamed
        # on the migration file ("001-...: object name reserved ...").
        self.add_initial()
        self.make_plain_database()
        for table in ("sqlite_x", "SQLITE_meta", "sqlite_master"):
            with self.subTest(table=table):
                for command in (["up"], ["mark", "1"], ["status"]):
                    err = self.assert_bad_input(["--db", self.db, "--table", table] + command,
                                                2, "--table", table)
                    self.assertNotIn("001-initial-schema.py", err)


class LoudnessOptionTests(CLITestCase):

    def test_quiet_hides_informational_logs(self):
        self.add_initial()
        self.make_plain_database()
        self.add_sessions()
        self.run_ok("--db", self.db, "mark", "1")
        _, loud = self.run_ok("--db", self.db, "up", "--backup")
        self.assertIn("app.db", loud)  # the INFO line naming the copy
        self.run_ok("--db", self.db, "down")
        _, quiet = self.run_ok("--db", self.db, "-q", "up", "--backup")
        self.assertEqual(quiet, "")

    def test_verbose_shows_the_traceback_of_an_error(self):
        self.write("001-broken.py", "def up(db):\n    db.execute('CREATE TABLE')\n")
        status, out, err = self.cli("--db", self.db, "-v", "up")
        self.assertEqual(status, 1, err)
        self.assertIn("Traceback", err)
        self.assertIn("001-broken.py", err)

    def test_main_logs_on_each_call_in_one_process_and_leaves_no_handler(self):
        # The CLI's log handler is attached at the first message; a second
        # main() in the same process (logging already loaded) must log too.
        import contextlib
        import io
        import logging
        from tests.support import sqlmigrate
        self.add_initial()
        self.make_plain_database()
        self.add_sessions()
        self.run_ok("--db", self.db, "mark", "1")

        def stream_handlers():
            return [h for h in logging.getLogger("sqlmigrate").handlers
                    if not isinstance(h, logging.NullHandler)]
        before = stream_handlers()
        for _ in range(2):
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                for command in (["up", "--backup"], ["down"]):
                    self.assertEqual(sqlmigrate.main(["--db", self.db, "--dir", self.dir]
                                                     + command), 0, err.getvalue())
            self.assertIn("sqlmigrate: INFO: Backed up the database to", err.getvalue())
            self.assertIn("Applied v2", out.getvalue())
        self.assertEqual(stream_handlers(), before)

    def test_verbose_and_quiet_together_is_a_bad_request(self):
        status, out, err = self.cli("--db", self.db, "-v", "-q", "status")
        self.assertEqual(status, 2)
        self.assertNotIn("Traceback", err)


# ---------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------

UTF8 = {"PYTHONIOENCODING": "utf-8"}


class StatusTests(CLITestCase):

    def setUp(self):
        super().setUp()
        self.add_initial()
        self.add_sessions()

    def test_status_prints_the_spec_layout(self):
        self.apply("--to", "1")
        out, _ = self.run_ok("--db", self.db, "status", env=UTF8)
        self.assertEqual(out, (
            "=================================\n"
            "Database Migration Status\n"
            "=================================\n"
            "\n"
            "Current schema version: 1\n"
            "\n"
            "Available migrations:\n"
            "\n"
            "  \u2713 Applied v1: Initial Schema (current)\n"
            "  \u25cb Pending v2: Add user field to sessions\n"
            "\n"
            "---------------------------------\n"
            "Applied: 1\n"
            "Pending: 1\n"
            "=================================\n"))

    def test_status_of_a_missing_database_shows_everything_pending_and_creates_no_file(self):
        out, _ = self.run_ok("--db", self.db, "status", env=UTF8)
        self.assertIn("Current schema version: 0", out)
        self.assertIn("\u25cb Pending v1: Initial Schema", out)
        self.assertIn("Pending: 2", out)
        self.assert_no_database_files()
        self.assertIn("(database %s does not exist yet)" % self.db, out)

    def test_status_json_says_whether_the_database_exists(self):
        out, _ = self.run_ok("--db", self.db, "status", "--json")
        self.assertIs(json.loads(out)["database_exists"], False)
        self.apply()
        out, _ = self.run_ok("--db", self.db, "status", "--json")
        self.assertIs(json.loads(out)["database_exists"], True)

    def test_up_and_down_with_nothing_to_do_on_a_missing_database_say_it_does_not_exist(self):
        empty = os.path.join(self.tmp, "empty")
        os.mkdir(empty)
        for command in ("up", "down"):
            status, out, err = self.cli("--db", self.db, "--dir", empty, command)
            self.assertEqual(status, 0, err)
            self.assertIn("Nothing to", out)
            # A mistyped --db: said by the runner (so the API's callers see it
            # too), on stderr, and the file is not created.
            self.assertIn("database %s does not exist" % self.db, err)
            self.assert_no_database_files()
        with self.assertLogs("sqlmigrate", "INFO") as logs:
            self.assertEqual(sqlmigrate.migrate(self.db, empty), [])
        self.assertIn("does not exist", "\n".join(logs.output))

    def test_status_never_writes_to_the_database(self):
        self.make_plain_database()  # no tracking table yet
        before = self.sha()
        self.run_ok("--db", self.db, "status")
        self.run_ok("--db", self.db, "status", "--json")
        self.assertEqual(self.sha(), before)
        self.assertEqual(self.tables(), ["legacy"])

    def test_status_marks_changed_missing_and_out_of_order_with_an_explanation(self):
        self.add_table(4, "four")
        self.apply()                                  # v1, v2, v4 applied
        with open(os.path.join(self.dir, "001-initial-schema.py"), "a") as f:
            f.write("# edited after it was applied\n")  # v1 changed
        os.remove(os.path.join(self.dir, "002-add-user-field-to-sessions.sql"))  # v2 missing
        self.add_table(3, "three")                    # v3 out of order
        out, _ = self.run_ok("--db", self.db, "status", env=UTF8)
        base = {1: "v1: Initial Schema", 2: "v2: Add user field to sessions",
                3: "v3: Create three"}
        for version, word in ((1, "changed"), (2, "missing"), (3, "out-of-order")):
            with self.subTest(state=word):
                line = self.status_line(out, version)
                self.assertIn(word, line.lower())
                self.assertIn(base[version], line)
                # an explanation follows, beyond "<mark> <State> vN: Name (current)"
                rest = line.split(base[version], 1)[1].replace("(current)", "")
                self.assertGreaterEqual(len(re.findall(r"[a-z]+", rest)), 3, line)
        self.assertIn("\u2713 Applied v4: Create four (current)", out)

    def test_status_reports_a_database_ahead_of_the_files(self):
        self.apply()
        os.remove(os.path.join(self.dir, "002-add-user-field-to-sessions.sql"))
        os.remove(os.path.join(self.dir, "001-initial-schema.py"))
        status, out, err = self.cli("--db", self.db, "status")
        self.assertEqual(status, 0, err)
        self.assertIn("Current schema version: 2", out)
        self.assertRegex(out, r"(?i)(ahead|above|newer|wrong)")
        status, out, err = self.cli("--db", self.db, "status", "--check")
        self.assertEqual(status, 1, out)

    def test_ascii_markers_when_stdout_cannot_encode_them(self):
        self.apply("--to", "1")
        env = {"LANG": "C", "LC_ALL": "C", "PYTHONIOENCODING": "ascii"}
        cases = [(PY36, env), (PY313, env),
                 # the bare host of the spec: Python 3.6 in the C locale
                 (PY36, {"LANG": "C", "LC_ALL": "C"})]
        ran = 0
        for python, environment in cases:
            if not usable_python(python):
                continue
            with self.subTest(python=python, env=environment):
                ran += 1
                status, out, err = self.cli("--db", self.db, "status", python=python,
                                            env=environment)
                self.assertEqual(status, 0, err)
                self.assertNotIn("Traceback", err)
                out.encode("ascii")  # raises if anything is not ASCII
                self.assertIn("Applied v1: Initial Schema (current)", out)
                self.assertIn("Pending v2: Add user field to sessions", out)
                self.assertIn("Applied: 1", out)
                applied_mark = self.status_line(out, 1).split()[0]
                pending_mark = self.status_line(out, 2).split()[0]
                self.assertNotEqual(applied_mark, pending_mark)
                self.assertNotEqual(applied_mark, "Applied")  # a marker is still there
        if not ran:
            self.skipTest("neither %s nor %s is installed and can load this SQLite"
                          % (PY36, PY313))

    def test_non_ascii_names_do_not_crash_a_c_locale_python_36(self):
        self.write("009-cafe.py", 'name = "Caf\u00e9 cr\u00e8me \u2713"\n\ndef up(db):\n'
                   '    db.execute("CREATE TABLE caf\u00e9 (x)")\n')
        python = PY36 if usable_python(PY36) else sys.executable
        env = {"LANG": "C", "LC_ALL": "C", "PYTHONIOENCODING": ""}
        for command in (["status"], ["up"], ["--db", self.db, "status", "--json"][2:]):
            with self.subTest(command=command):
                status, out, err = self.cli("--db", self.db, *command, python=python, env=env)
                self.assertEqual(status, 0, err)
                self.assertNotIn("Traceback", err)
                self.assertIn("Caf", out)

    def test_json_prints_one_object_with_the_spec_keys(self):
        self.apply("--to", "1")
        out, _ = self.run_ok("--db", self.db, "status", "--json")
        report = json.loads(out)
        self.assertTrue({"database", "current_version", "latest_version", "applied", "pending",
                         "migrations"} <= set(report), report)
        self.assertEqual(report["current_version"], 1)
        self.assertEqual(report["latest_version"], 2)
        self.assertEqual(report["applied"], 1)
        self.assertEqual(report["pending"], 1)
        self.assertTrue(report["database"].endswith("app.db"))
        first, second = report["migrations"]
        for entry in (first, second):
            self.assertTrue({"version", "name", "file", "state", "applied_at"} <= set(entry))
        self.assertEqual((first["version"], first["name"], first["file"], first["state"]),
                         (1, "Initial Schema", "001-initial-schema.py", "applied"))
        self.assertRegex(first["applied_at"], ISO_UTC)
        self.assertEqual((second["version"], second["name"], second["file"], second["state"],
                          second["applied_at"]),
                         (2, "Add user field to sessions", "002-add-user-field-to-sessions.sql",
                          "pending", None))

    def test_json_states_of_drifted_migrations(self):
        self.add_table(4, "four")
        self.apply()
        with open(os.path.join(self.dir, "001-initial-schema.py"), "a") as f:
            f.write("# edited\n")
        os.remove(os.path.join(self.dir, "002-add-user-field-to-sessions.sql"))
        self.add_table(3, "three")
        self.add_table(5, "five")
        out, _ = self.run_ok("--db", self.db, "status", "--json")
        report = json.loads(out)
        states = {m["version"]: m["state"] for m in report["migrations"]}
        self.assertEqual(states, {1: "changed", 2: "missing", 3: "out-of-order", 4: "applied",
                                  5: "pending"})
        self.assertEqual(report["latest_version"], 5)
        missing = [m for m in report["migrations"] if m["version"] == 2][0]
        self.assertEqual(missing["name"], "Add user field to sessions")

    def test_check_exits_0_when_up_to_date(self):
        self.apply()
        status, out, err = self.cli("--db", self.db, "status", "--check")
        self.assertEqual(status, 0, err)

    def test_check_exits_1_when_something_is_pending(self):
        self.apply("--to", "1")
        status, out, err = self.cli("--db", self.db, "status", "--check")
        self.assertEqual(status, 1)
        self.assertIn("Pending: 1", out)

    def test_check_exits_1_when_a_file_changed(self):
        self.apply()
        with open(os.path.join(self.dir, "001-initial-schema.py"), "a") as f:
            f.write("# edited\n")
        status, out, err = self.cli("--db", self.db, "status", "--check", "--json")
        self.assertEqual(status, 1)
        self.assertEqual(json.loads(out)["migrations"][0]["state"], "changed")


# ---------------------------------------------------------------------------
# up
# ---------------------------------------------------------------------------

class UpTests(CLITestCase):

    def setUp(self):
        super().setUp()
        self.add_initial()
        self.add_sessions()

    def test_up_prints_one_line_per_migration_with_milliseconds_and_a_summary(self):
        out, _ = self.apply()
        lines = out.splitlines()
        self.assertRegex(lines[0], r"^Applied v1: Initial Schema \(\d+(\.\d+)? ms\)$")
        self.assertRegex(lines[1], r"^Applied v2: Add user field to sessions \(\d+(\.\d+)? ms\)$")
        self.assertEqual(len(lines), 3, out)
        self.assertRegex(lines[2], r"\b2\b")
        self.assertEqual(self.schema_version(), "2")
        self.assertTrue({"users", "sessions"} <= set(self.tables()))

    def test_up_to_stops_at_that_version(self):
        out, _ = self.apply("--to", "1")
        self.assertIn("v1", out)
        self.assertNotIn("v2", out)
        self.assertEqual(self.schema_version(), "1")
        self.assertNotIn("sessions", self.tables())

    def test_up_to_a_version_no_file_has_is_refused_not_taken_as_the_one_below(self):
        # A mistyped target (12 for 120, or a file not yet pulled) applied
        # up to the file below it, or nothing, and reported success.
        for target in ("3", "99"):
            status, out, err = self.cli("--db", self.db, "up", "--to", target)
            self.assertEqual(status, 2, err)
            self.assertIn("no migration file has version %s" % target, err)
            self.assertEqual(len(err.strip().splitlines()), 1, err)
            self.assertFalse(os.path.exists(self.db))

    def test_up_to_zero_applies_nothing_as_mark_0_and_down_to_0_take_it(self):
        # 0, no migration, is every database's start: mark 0 and down --to 0
        # accept it, and up --to 0 was refused as "no migration file has version 0".
        status, out, err = self.cli("--db", self.db, "up", "--to", "0")
        self.assertEqual(status, 0, err)
        self.assertIn("Nothing to apply", out)
        self.assertNotIn("users", self.tables())

    def test_up_with_nothing_pending_says_so_and_leaves_the_file_alone(self):
        self.apply()
        before = self.sha()
        out, _ = self.apply()
        self.assertNotIn("Applied v", out)
        self.assertTrue(out.strip(), "up printed nothing")
        self.assertEqual(self.sha(), before)

    def test_failed_migration_exits_1_names_file_statement_and_keeps_earlier_ones(self):
        self.write_sql(3, "broken", "CREATE TABLE ok3 (id INTEGER);\nINSERT INTO nowhere VALUES (1);")
        result = self.cli("--db", self.db, "up")
        err = self.assert_error(result, 1, "003-broken.sql", "INSERT INTO nowhere", "no such table")
        self.assertRegex(result[1], r"Applied v1: .*\d+ ms\)\nApplied v2: ")  # shown as they commit
        self.assertEqual(self.schema_version(), "2")
        self.assertNotIn("ok3", self.tables())
        self.assertIn("rolled back", err)

    def test_non_transactional_migration_leaving_a_transaction_open_exits_1(self):
        self.write_sql(3, "open", "BEGIN;\nCREATE TABLE half (x);", options="transaction:false")
        result = self.cli("--db", self.db, "up")
        self.assert_error(result, 1, "003-open.sql", "left a transaction open", "not recorded")
        self.assertNotIn("Applied v3", result[1])
        self.assertEqual(self.schema_version(), "2")
        self.assertNotIn("half", self.tables())

    def test_migration_calling_exit_exits_1_and_is_not_applied(self):
        for where, text in (("up", "import sys\n\n\ndef up(db):\n"
                                   "    db.execute('CREATE TABLE t3 (x)')\n    sys.exit(0)\n"),
                            ("top level", "import sys\nsys.exit(0)\n\n\ndef up(db):\n    pass\n")):
            with self.subTest(where):
                path = self.write("003-exits.py", text)
                result = self.cli("--db", self.db, "up")
                self.assert_error(result, 1, "003-exits.py", "called exit", "sys.exit(0)")
                self.assertNotIn("Applied v3", result[1])
                self.assertNotIn("t3", self.tables())
                self.assertEqual(self.schema_version(), "2")
                os.remove(path)

    def test_a_migration_raising_an_odd_exception_exits_1_with_one_line_not_applied(self):
        # Not every exception derives from Exception, and not every one can
        # be turned into text: each still fails the migration, one line.
        odd = ("class Odd(BaseException):\n    pass\n\n\n"
               "class Unprintable(Exception):\n    def __str__(self):\n"
               "        raise ValueError('no text')\n\n\n")
        for raised, shown in (("GeneratorExit()", "GeneratorExit"), ("Odd()", "Odd"),
                              ("Unprintable()", "Unprintable")):
            for where, text in (("up", odd + "def up(db):\n    db.execute('CREATE TABLE t3 (x)')"
                                       "\n    raise %s\n" % raised),
                                ("top level", odd + "raise %s\n\n\ndef up(db):\n    pass\n"
                                 % raised)):
                with self.subTest(raised=raised, where=where):
                    path = self.write("003-odd.py", text)
                    result = self.cli("--db", self.db, "up")
                    self.assert_error(result, 1, "003-odd.py", shown)
                    self.assertNotIn("Applied v3", result[1])
                    self.assertNotIn("t3", self.tables())
                    self.assertEqual(self.schema_version(), "2")
                    os.remove(path)

    def test_dry_run_prints_the_sql_and_changes_nothing(self):
        self.apply("--to", "1")
        before = self.sha()
        out, _ = self.apply("--dry-run")
        self.assertIn("CREATE TABLE sessions (id INTEGER PRIMARY KEY, user TEXT)", out)
        self.assertIn("v2", out)
        self.assertRegex(out, r"(?i)nothing (was|has been) changed")
        self.assertEqual(self.sha(), before)
        self.assertEqual(self.schema_version(), "1")

    def test_dry_run_with_backup_says_it_made_no_backup(self):
        # `up --dry-run --backup` (a deploy command previewed) made no backup
        # and said nothing: a dry run writes no file, and now says so.
        self.apply("--to", "1")
        for command in ("up", "down"):
            with self.subTest(command=command):
                before = sorted(os.listdir(self.tmp))
                out, _ = self.run_ok("--db", self.db, command, "--dry-run", "--backup")
                self.assertRegex(out.splitlines()[-1], r"nothing was changed.*no backup made")
                self.assertEqual(sorted(os.listdir(self.tmp)), before)
        out, _ = self.apply("--dry-run")
        self.assertNotIn("backup", out)

    def test_dry_run_prints_sql_a_python_migration_executes(self):
        before_files = os.listdir(self.tmp)
        out, _ = self.apply("--dry-run", "--to", "1")
        self.assertIn("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)", out)
        self.assertEqual(os.listdir(self.tmp), before_files)

    def test_dry_run_prints_a_statement_that_opens_with_a_comment(self):
        # Only a trigger's sub-program is traced as one comment line.
        self.write("003-commented.py", '''
            def up(db):
                db.execute("-- why\\nCREATE TABLE x (a)")
                db.execute("CREATE TABLE y (b)")
            ''')
        out, _ = self.apply("--dry-run")
        self.assertIn("CREATE TABLE x (a)", out)
        self.assertIn("CREATE TABLE y (b)", out)

    def test_dry_run_says_once_that_a_non_transactional_migration_is_not_run(self):
        # stderr repeated stdout's "(non-transactional: not run)" as an INFO line.
        self.add_table(3, "three", options="transaction:false")
        out, err = self.apply("--dry-run")
        self.assertIn("-- v3: Create three (non-transactional: not run)", out)
        self.assertNotIn("not run", err)

    def test_dry_run_on_a_missing_database_creates_no_file(self):
        out, _ = self.apply("--dry-run")
        self.assertIn("CREATE TABLE users", out)
        self.assertRegex(out, r"(?i)nothing (was|has been) changed")
        self.assert_no_database_files()

    def test_dry_run_on_an_untracked_database_creates_no_tracking_table(self):
        self.make_plain_database()
        before = self.sha()
        self.apply("--dry-run")
        self.assertEqual(self.sha(), before)
        self.assertEqual(self.tables(), ["legacy"])

    def test_atomic_failure_leaves_the_database_exactly_as_it_was(self):
        self.apply("--to", "1")
        self.write_sql(3, "broken", "INSERT INTO nowhere VALUES (1);")
        before = self.sha()
        self.assert_error(self.cli("--db", self.db, "up", "--atomic"), 1, "003-broken.sql")
        self.assertEqual(self.sha(), before)
        self.assertNotIn("sessions", self.tables())

    def test_atomic_success_applies_everything(self):
        out, _ = self.apply("--atomic")
        self.assertIn("v2", out)
        self.assertEqual(self.schema_version(), "2")

    def test_backup_copies_the_database_before_changing_it(self):
        self.apply("--to", "1")
        out, err = self.apply("--backup")
        backups = [p for p in glob.glob(self.db + "*") if p != self.db]
        self.assertEqual(len(backups), 1, backups)
        self.assertIn(os.path.basename(backups[0]), out + err)  # the path is logged
        self.assertEqual(self.schema_version(backups[0]), "1")  # the state before `up`
        self.assertNotIn("sessions", self.tables(self.connect(backups[0])))
        self.assertEqual(self.schema_version(), "2")

    def test_backup_with_nothing_pending_writes_no_copy(self):
        self.apply()
        self.apply("--backup")
        self.assertEqual(glob.glob(self.db + "?*"), [])

    def test_changed_file_warns_and_goes_on(self):
        self.apply("--to", "1")
        with open(os.path.join(self.dir, "001-initial-schema.py"), "a") as f:
            f.write("# edited\n")
        out, err = self.apply()
        self.assertIn("001-initial-schema.py", err)
        self.assertIn("changed", err.lower())
        self.assertEqual(self.schema_version(), "2")

    def test_strict_refuses_while_a_file_has_changed(self):
        self.apply("--to", "1")
        with open(os.path.join(self.dir, "001-initial-schema.py"), "a") as f:
            f.write("# edited\n")
        self.assert_bad_input(("--db", self.db, "up", "--strict"), 1,
                              "001-initial-schema.py", "changed")
        self.assertEqual(self.schema_version(), "1")


# ---------------------------------------------------------------------------
# down
# ---------------------------------------------------------------------------

class ClosedStdoutTests(CLITestCase):
    """`up | head -1`: the reader of stdout goes away while migrations run."""

    def run_with_stdout(self, stdout, args, wait_for_line=False):
        """Run the CLI with `stdout` (a pipe's write end, or PIPE); returns
        (status, stderr).  With wait_for_line, read the first line, close the
        pipe, then let migration 2 (which waits for the flag file) go on."""
        env = dict(os.environ)
        env.pop("SQLMIGRATE_DB", None)
        with open(os.path.join(self.tmp, "stderr.txt"), "w+b") as err:
            proc = subprocess.Popen([sys.executable, SCRIPT, "--db", self.db] + list(args),
                                    cwd=self.tmp, env=env, stdout=stdout, stderr=err)
            if wait_for_line:
                first = proc.stdout.readline()
                proc.stdout.close()
                with open(os.path.join(self.tmp, "flag"), "w"):
                    pass
                self.assertIn(b"Applied v1", first)
            status = proc.wait(timeout=60)
            err.seek(0)
            return status, err.read().decode("utf-8", "replace")

    def assert_clean_stderr(self, err):
        for fragment in ("Traceback", "BrokenPipe", "Exception ignored"):
            self.assertNotIn(fragment, err)

    def test_reader_gone_after_the_first_line_the_run_finishes_and_says_so_on_stderr(self):
        self.add_table(1, "one")
        self.write("002-waits.py", '''
            import os
            import time

            def up(db):
                flag = os.path.join(os.path.dirname(os.path.dirname(__file__)), "flag")
                for _ in range(600):  # until the test closed the pipe (at most 60 s)
                    if os.path.exists(flag):
                        break
                    time.sleep(0.1)
                db.execute("CREATE TABLE two (x)")
            ''')
        self.add_table(3, "three")
        status, err = self.run_with_stdout(subprocess.PIPE, ["up"], wait_for_line=True)
        self.assert_clean_stderr(err)
        self.assertEqual(status, 0, err)
        self.assertIn("stdout was closed", err)
        self.assertIn("Applied v2", err)
        self.assertIn("Applied v3", err)
        self.assertEqual(self.schema_version(), "3")

    def test_stdout_closed_from_the_start_every_command_ends_cleanly(self):
        self.add_table(1, "one")
        self.add_table(2, "two")
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            status, err = self.run_with_stdout(write_end, ["up"])
            self.assert_clean_stderr(err)
            self.assertEqual(status, 0, err)
            self.assertIn("Applied v1", err)
            self.assertIn("Applied 2 migration(s)", err)
            self.assertEqual(self.schema_version(), "2")
            for command in (["status"], ["status", "--json"], ["verify"], ["schema"]):
                status, err = self.run_with_stdout(write_end, command)
                self.assert_clean_stderr(err)
                self.assertEqual(status, 0, err)
        finally:
            os.close(write_end)

    @unittest.skipUnless(os.path.exists("/dev/full"), "needs /dev/full")
    def test_stdout_on_a_full_disk_the_run_finishes_and_says_so_on_stderr(self):
        # `up > out.txt` on a full disk: v1's line failed after v1 committed,
        # and a traceback ended the run there, v2 never applied.
        self.add_table(1, "one")
        self.add_table(2, "two")
        with open("/dev/full", "w") as full:
            status, err = self.run_with_stdout(full, ["up"])
        self.assert_clean_stderr(err)
        self.assertEqual(status, 0, err)
        self.assertIn("No space left on device", err)
        self.assertIn("Applied v1", err)
        self.assertIn("Applied 2 migration(s)", err)
        self.assertEqual(self.schema_version(), "2")

    @unittest.skipIf(os.name != "posix", "preexec_fn")
    def test_no_stdout_at_all_every_command_ends_cleanly(self):
        # `up >&-`: Python gives a process without descriptor 1 sys.stdout None.
        self.add_table(1, "one")
        with open(os.path.join(self.tmp, "stderr.txt"), "w+b") as err:
            status = subprocess.call([sys.executable, SCRIPT, "--db", self.db, "up"],
                                     cwd=self.tmp, stderr=err, preexec_fn=lambda: os.close(1))
            err.seek(0)
            text = err.read().decode("utf-8", "replace")
        self.assert_clean_stderr(text)
        self.assertEqual(status, 0, text)
        self.assertIn("Applied 1 migration(s)", text)
        self.assertEqual(self.schema_version(), "1")

    @unittest.skipIf(os.name != "posix", "preexec_fn")
    def test_no_stderr_or_an_unwritable_one_keeps_every_exit_status(self):
        # `2>&-`: a bad request exited 1 (writing its message to a missing
        # stderr raised), and so did a successful `up`.
        self.add_table(1, "one")
        cases = ((["status", "--bogus"], 2), (["up", "--to", "9"], 2), (["up"], 0),
                 (["mark", "0"], 1), (["status"], 0))
        for how in ("closed", "/dev/full"):
            if how == "/dev/full" and not os.path.exists("/dev/full"):
                continue
            if os.path.exists(self.db):
                os.remove(self.db)
            for args, expected in cases:
                with self.subTest(stderr=how, args=args), open(os.devnull, "wb") as out, \
                        open("/dev/full" if how != "closed" else os.devnull, "wb") as full:
                    status = subprocess.call(
                        [sys.executable, SCRIPT, "--db", self.db] + args, cwd=self.tmp,
                        stdout=out, stderr=full if how != "closed" else None,
                        preexec_fn=(lambda: os.close(2)) if how == "closed" else None)
                    self.assertEqual(status, expected)
            self.assertEqual(self.schema_version(), "1")


class DownTests(CLITestCase):

    def setUp(self):
        super().setUp()
        self.add_initial()
        self.add_sessions()
        self.add_table(3, "three")
        self.apply()

    def test_down_rolls_back_the_newest_with_a_line_and_a_summary(self):
        status, out, err = self.cli("--db", self.db, "down")
        self.assertEqual(status, 0, err)
        lines = out.splitlines()
        self.assertRegex(lines[0], r"^Rolled back v3: Create three \(\d+(\.\d+)? ms\)$")
        self.assertEqual(len(lines), 2, out)
        self.assertRegex(lines[1], r"\b1\b")
        self.assertEqual(self.schema_version(), "2")
        self.assertNotIn("three", self.tables())

    def test_down_steps_rolls_back_that_many_newest_first(self):
        out, _ = self.run_ok("--db", self.db, "down", "--steps", "2")
        self.assertLess(out.index("v3"), out.index("v2"))
        self.assertEqual(self.schema_version(), "1")
        self.assertNotIn("sessions", self.tables())
        self.assertIn("users", self.tables())

    def test_down_to_zero_rolls_back_everything(self):
        self.run_ok("--db", self.db, "down", "--to", "0")
        self.assertEqual(self.schema_version(), "0")
        self.assertFalse({"users", "sessions", "three"} & set(self.tables()))

    def test_down_to_a_version_keeps_it(self):
        self.run_ok("--db", self.db, "down", "--to", "1")
        self.assertEqual(self.schema_version(), "1")
        self.assertIn("users", self.tables())

    def test_down_to_a_version_no_file_has_is_refused_not_taken_as_the_one_below(self):
        # A mistyped target (12 for 120) rolled back the file it meant to keep
        # too, while up --to 12 is refused.  A version above the current one
        # that a file has is "Nothing to roll back", as up --to below it is.
        self.write_sql(20, "twenty", "CREATE TABLE twenty (x);", "DROP TABLE twenty;")
        self.run_ok("--db", self.db, "up")
        before = self.sha()
        for target in ("12", "99"):
            status, out, err = self.cli("--db", self.db, "down", "--to", target)
            self.assertEqual(status, 2, err)
            self.assertIn("no migration file has version %s" % target, err)
            self.assertEqual(len(err.strip().splitlines()), 1, err)
            self.assertEqual(self.sha(), before)
        out, _ = self.run_ok("--db", self.db, "down", "--to", "20")
        self.assertIn("Nothing to roll back", out)
        # A version applied whose file is gone is still one to stop at.
        os.remove(glob.glob(os.path.join(self.dir, "002-*"))[0])
        self.run_ok("--db", self.db, "down", "--to", "2")
        self.assertEqual(self.schema_version(), "2")

    def test_down_dry_run_prints_the_sql_and_changes_nothing(self):
        before = self.sha()
        out, _ = self.run_ok("--db", self.db, "down", "--dry-run", "--steps", "2")
        self.assertIn("DROP TABLE three", out)
        self.assertIn("DROP TABLE sessions", out)
        self.assertRegex(out, r"(?i)nothing (was|has been) changed")
        self.assertEqual(self.sha(), before)

    def test_down_backup_copies_the_database_first(self):
        self.run_ok("--db", self.db, "down", "--backup")
        backups = [p for p in glob.glob(self.db + "*") if p != self.db]
        self.assertEqual(len(backups), 1, backups)
        self.assertEqual(self.schema_version(backups[0]), "3")
        self.assertEqual(self.schema_version(), "2")

    def test_steps_with_to_is_a_bad_request(self):
        status, out, err = self.cli("--db", self.db, "down", "--steps", "1", "--to", "0")
        self.assertEqual(status, 2)
        self.assertNotIn("Traceback", err)
        self.assertIn("--to", err)
        self.assertEqual(self.schema_version(), "3")

    def test_steps_zero_is_a_bad_request(self):
        self.assert_bad_input(("--db", self.db, "down", "--steps", "0"), 2, "--steps")

    def test_steps_below_one_is_refused_with_one_message_that_asks_for_1_or_more(self):
        # -1 was "needs a whole number (0 or more)", and then 0 was refused too
        # ("down needs --steps/steps of 1 or more, or --to/to of 0 or more").
        for steps in ("0", "-1"):
            with self.subTest(steps=steps):
                err = self.assert_bad_input(("--db", self.db, "down", "--steps", steps), 2,
                                            "argument --steps: needs a whole number (1 or more)")
                self.assertNotIn("0 or more", err)


# ---------------------------------------------------------------------------
# new
# ---------------------------------------------------------------------------

class NewTests(CLITestCase):

    def test_new_in_an_empty_directory_creates_001_and_prints_its_path(self):
        out, _ = self.run_ok("new", "add-user-email")
        path = os.path.join(self.dir, "001-add-user-email.py")
        self.assertTrue(os.path.isfile(path), os.listdir(self.dir))
        self.assertEqual(os.path.realpath(os.path.join(self.tmp, out.strip())),
                         os.path.realpath(path))

    def test_new_takes_the_next_number_after_the_highest(self):
        self.add_initial()
        self.add_table(7, "seven")
        self.run_ok("new", "add-user-email")
        self.assertTrue(os.path.isfile(os.path.join(self.dir, "008-add-user-email.py")),
                        os.listdir(self.dir))

    def test_new_keeps_the_width_of_the_existing_files(self):
        self.write("0001-initial.sql", "CREATE TABLE a (id INTEGER);\n")
        self.run_ok("new", "add-user-email")
        self.assertTrue(os.path.isfile(os.path.join(self.dir, "0002-add-user-email.py")),
                        os.listdir(self.dir))

    def test_new_turns_words_into_kebab_case(self):
        self.run_ok("new", "Add user email")
        self.assertEqual(os.listdir(self.dir), ["001-add-user-email.py"])

    def test_new_python_template_is_a_valid_migration_with_name_up_and_down(self):
        self.add_initial()
        self.run_ok("new", "add-user-email")
        path = os.path.join(self.dir, "002-add-user-email.py")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        self.assertRegex(text, r"(?m)^name = ")
        self.assertRegex(text, r"(?m)^def up\(db\):")
        self.assertRegex(text, r"(?m)^def down\(db\):")
        out, _ = self.apply()
        self.assertIn("Applied v2", out)
        self.assertEqual(self.schema_version(), "2")
        self.run_ok("--db", self.db, "verify")

    def test_new_sql_creates_an_sql_file_with_both_markers_that_runs(self):
        out, _ = self.run_ok("new", "Add user email", "--sql")
        path = os.path.join(self.dir, "001-add-user-email.sql")
        self.assertTrue(os.path.isfile(path), os.listdir(self.dir))
        with open(path, encoding="utf-8") as f:
            text = f.read()
        self.assertRegex(text, r"(?im)^\s*--\s*migrate:up\s*$")
        self.assertRegex(text, r"(?im)^\s*--\s*migrate:down\s*$")
        self.apply()
        self.assertEqual(self.schema_version(), "1")

    def test_new_uses_dir_option(self):
        other = os.path.join(self.tmp, "other")
        os.mkdir(other)
        self.run_ok("--dir", other, "new", "first")
        self.assertEqual(os.listdir(other), ["001-first.py"])
        self.assertEqual(os.listdir(self.dir), [])

    def test_new_refuses_while_a_file_name_is_invalid(self):
        self.write("1-initial.py", INITIAL_SCHEMA)
        self.assert_error(self.cli("new", "next"), 2, "1-initial.py")
        self.assertEqual(os.listdir(self.dir), ["1-initial.py"])

    def test_new_with_a_missing_directory_is_a_bad_request(self):
        missing = os.path.join(self.tmp, "nope")
        self.assert_error(self.cli("--dir", missing, "new", "first"), 2, missing)
        self.assertFalse(os.path.exists(missing))

    def test_new_without_letters_or_digits_is_a_bad_request(self):
        self.assert_error(self.cli("new", "!!!"), 2)
        self.assertEqual(os.listdir(self.dir), [])

    def test_new_run_twice_at_once_never_gives_two_files_one_number(self):
        # Two developers' (or scripts') `new` at the same instant: each must
        # take its own number, as a duplicate stops every command until fixed.
        env = dict(os.environ, PYTHONPATH=os.path.dirname(SCRIPT))
        for trial in range(6):
            directory = os.path.join(self.tmp, "trial%d" % trial)
            os.mkdir(directory)
            self.write("001-initial.sql", "CREATE TABLE a (id INTEGER);\n", directory)
            procs = [subprocess.Popen([sys.executable, "-m", "sqlmigrate", "--dir", directory,
                                       "new", "change %s" % who], cwd=self.tmp, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                     for who in "abc"]
            results = [(p.wait(60), p.stdout.read(), p.stderr.read()) for p in procs]
            for p in procs:
                p.stdout.close()
                p.stderr.close()
            for status, _, err in results:
                self.assertEqual(status, 0, err)
            # Each its own number, above the first file; a gap may be left
            # where one gave up a number a faster one had passed (allowed).
            versions = [int(name.split("-")[0]) for name in os.listdir(directory)]
            self.assertEqual(len(set(versions)), 4, sorted(os.listdir(directory)))
            self.assertEqual(min(versions), 1)


# ---------------------------------------------------------------------------
# mark, verify, schema, backup
# ---------------------------------------------------------------------------

class MarkTests(CLITestCase):

    def setUp(self):
        super().setUp()
        self.add_initial()
        self.add_sessions()
        self.add_table(3, "three")

    def test_mark_adopts_an_existing_database_without_running_anything(self):
        self.make_plain_database()
        out, _ = self.run_ok("--db", self.db, "mark", "2")
        self.assertIn("2", out)
        self.assertEqual(self.schema_version(), "2")
        self.assertNotIn("users", self.tables())  # v1 was not run
        report = json.loads(self.run_ok("--db", self.db, "status", "--json")[0])
        self.assertEqual([m["state"] for m in report["migrations"]],
                         ["applied", "applied", "pending"])
        out, _ = self.apply()
        self.assertIn("v3", out)
        self.assertNotIn("v1", out)
        self.assertIn("three", self.tables())

    def test_mark_again_counts_only_what_it_recorded_now(self):
        self.make_plain_database()
        out, _ = self.run_ok("--db", self.db, "mark", "2")
        self.assertIn("Marked 2 migration(s)", out)
        out, _ = self.run_ok("--db", self.db, "mark", "2")  # already recorded: nothing new
        self.assertIn("Marked 0 migration(s)", out)
        self.assertIn("schema version is now 2", out)
        with open(os.path.join(self.dir, "001-initial-schema.py"), "a") as f:
            f.write("# reworded\n")
        out, _ = self.run_ok("--db", self.db, "mark", "3")  # v1's edit accepted, v3 recorded
        self.assertIn("Marked 2 migration(s)", out)
        self.assertIn("schema version is now 3", out)

    def test_mark_says_what_it_did_once(self):
        # stderr repeated stdout's result as "INFO: Marked migrations up to v2 as applied".
        self.make_plain_database()
        out, err = self.run_ok("--db", self.db, "mark", "2")
        self.assertIn("Marked 2 migration(s)", out)
        self.assertNotIn("Marked", err)

    def test_mark_of_a_version_without_a_file_is_a_bad_request(self):
        self.make_plain_database()
        self.assert_bad_input(("--db", self.db, "mark", "9"), 2, "9")

    def test_mark_below_a_database_ahead_of_the_files_gives_advice_that_works(self):
        # It said "use down to go back", and down refuses that database: the
        # versions above every file cannot be rolled back without their files.
        self.apply()
        os.rename(os.path.join(self.dir, "003-create-three.sql"),
                  os.path.join(self.tmp, "003-create-three.sql"))
        err = self.assert_bad_input(("--db", self.db, "mark", "1"), 1, "version 3",
                                    "newest migration file is v2", "wrong --dir")
        self.assertNotIn("use down", err)
        self.assert_bad_input(("--db", self.db, "down"), 1, "wrong --dir")
        # With the file back, down is the way, as the advice then says.
        os.rename(os.path.join(self.tmp, "003-create-three.sql"),
                  os.path.join(self.dir, "003-create-three.sql"))
        self.assert_bad_input(("--db", self.db, "mark", "1"), 1, "use down to go back")
        self.run_ok("--db", self.db, "down", "--to", "1")
        self.assertEqual(self.schema_version(), "1")


class VerifyTests(CLITestCase):

    def setUp(self):
        super().setUp()
        self.add_initial()
        self.add_sessions()

    def test_verify_exits_0_on_clean_files_and_database(self):
        self.apply()
        out, _ = self.run_ok("--db", self.db, "verify")
        self.assertTrue(out.strip())

    def test_verify_exits_1_on_drift_and_names_the_file(self):
        self.apply()
        with open(os.path.join(self.dir, "002-add-user-field-to-sessions.sql"), "a") as f:
            f.write("-- edited\n")
        before = self.sha()
        status, out, err = self.cli("--db", self.db, "verify")
        self.assertEqual(status, 1)
        self.assertIn("002-add-user-field-to-sessions.sql", out + err)
        self.assertIn("changed", (out + err).lower())
        self.assertEqual(self.sha(), before)

    def test_verify_names_the_migration_applied_under_a_number_another_file_now_has(self):
        # Two developers both wrote v3; after the merge one renumbers hers to
        # v4, but her database applied it as v3.  "Changed ... accept it with
        # `mark 3`" would record the other v3 as applied without running it.
        self.write_sql(3, "add-scope", "ALTER TABLE sessions ADD COLUMN scope TEXT;")
        self.apply()
        os.rename(os.path.join(self.dir, "003-add-scope.sql"),
                  os.path.join(self.dir, "004-add-scope.sql"))
        self.write_sql(3, "add-phone", "ALTER TABLE users ADD COLUMN phone TEXT;")
        status, out, err = self.cli("--db", self.db, "verify")
        self.assertEqual(status, 1)
        self.assertIn('v3 was applied as "Add scope", not 003-add-phone.sql ("Add phone")',
                      out)
        self.assertIn("down --to 2", out)

    def test_verify_exits_1_on_a_migration_that_does_not_load(self):
        self.write("003-broken.py", "def up(db):\n    return (\n")
        status, out, err = self.cli("--db", self.db, "verify")
        self.assertEqual(status, 1)
        self.assertIn("003-broken.py", out + err)
        self.assertNotIn("Traceback", err)

    def test_verify_with_an_invalid_file_name_exits_2(self):
        # SPEC 6: invalid or duplicate names are a bad request "for every command".
        self.write("003_add_api_keys.py", "def up(db):\n    pass\n")
        status, out, err = self.cli("--db", self.db, "verify")
        self.assertIn("003_add_api_keys.py", out + err)
        self.assertEqual(status, 2)

    def test_verify_never_writes_and_creates_no_file(self):
        status, out, _ = self.cli("--db", self.db, "verify")
        self.assertEqual(status, 1)  # a --db typo must not pass a CI gate
        self.assertIn("does not exist", out)
        self.assert_no_database_files()
        self.make_plain_database()
        before = self.sha()
        self.cli("--db", self.db, "verify")
        self.assertEqual(self.sha(), before)
        self.assertEqual(self.tables(), ["legacy"])


class SchemaTests(CLITestCase):
    """SPEC 6 layout of `schema`."""

    def setUp(self):
        super().setUp()
        conn = sqlite3.connect(self.db)
        conn.executescript("""
            CREATE TABLE api_keys (id INTEGER PRIMARY KEY NOT NULL, key_name VARCHAR NOT NULL);
            CREATE TABLE users (id INTEGER PRIMARY KEY NOT NULL, email TEXT);
        """)
        conn.close()

    def test_schema_prints_the_report_layout(self):
        out, _ = self.run_ok("--db", self.db, "schema")
        self.assertIn(
            "============================================================\n"
            "DATABASE SCHEMA REPORT\n"
            "============================================================\n", out)
        self.assertIn(
            "Table: api_keys\n"
            "------------------------------------------------------------\n"
            "  - id: INTEGER [PK] NOT NULL\n"
            "  - key_name: VARCHAR NOT NULL\n", out)
        self.assertIn("Table: users\n", out)
        self.assertIn("  - email: TEXT\n", out)

    def test_schema_of_named_tables_only(self):
        out, _ = self.run_ok("--db", self.db, "schema", "users")
        self.assertIn("Table: users", out)
        self.assertNotIn("api_keys", out)

    def test_schema_json_is_valid_json_naming_tables_and_columns(self):
        out, _ = self.run_ok("--db", self.db, "schema", "--json")
        data = json.loads(out)
        text = json.dumps(data)
        for name in ("api_keys", "key_name", "users", "email"):
            self.assertIn(name, text)

    def test_schema_never_writes(self):
        before = self.sha()
        self.run_ok("--db", self.db, "schema")
        self.assertEqual(self.sha(), before)
        self.assertNotIn("metadata", self.tables())

    def test_schema_of_a_missing_database_creates_no_file(self):
        missing = os.path.join(self.tmp, "missing.db")
        status, out, err = self.cli("--db", missing, "schema")
        self.assertNotIn("Traceback", err)
        self.assertFalse(os.path.exists(missing))


class BackupTests(CLITestCase):

    def setUp(self):
        super().setUp()
        self.add_initial()
        self.apply()

    def test_backup_to_a_path_writes_a_consistent_copy(self):
        dest = os.path.join(self.tmp, "copy.db")
        out, _ = self.run_ok("--db", self.db, "backup", dest)
        self.assertIn("copy.db", out)
        self.assertEqual(self.schema_version(dest), "1")
        self.assertIn("users", self.tables(self.connect(dest)))
        self.assertEqual(self.connect(dest).execute("PRAGMA integrity_check").fetchone()[0], "ok")

    def test_backup_without_a_path_writes_next_to_the_database(self):
        out, err = self.run_ok("--db", self.db, "backup")
        backups = [p for p in glob.glob(self.db + "*") if p != self.db]
        self.assertEqual(len(backups), 1, backups)
        self.assertIn(os.path.basename(backups[0]), out)
        self.assertNotIn(os.path.basename(backups[0]), err)  # said once, on stdout
        self.assertEqual(self.schema_version(backups[0]), "1")

    def test_backup_does_not_overwrite_an_existing_file(self):
        dest = self.write("existing.db", "precious", directory=self.tmp)
        before = file_sha256(dest)
        self.assert_error(self.cli("--db", self.db, "backup", dest), (1, 2), "existing.db")
        self.assertEqual(file_sha256(dest), before)

    def test_backup_of_a_missing_database_fails_and_creates_nothing(self):
        missing = os.path.join(self.tmp, "missing.db")
        dest = os.path.join(self.tmp, "copy.db")
        self.assert_error(self.cli("--db", missing, "backup", dest), (1, 2), "missing.db")
        self.assertFalse(os.path.exists(missing))
        self.assertFalse(os.path.exists(dest))


# ---------------------------------------------------------------------------
# Exit status and error output
# ---------------------------------------------------------------------------

class ExitStatusTests(CLITestCase):

    def test_no_database_given_exits_2_and_says_how_to_give_one(self):
        self.add_initial()
        for command in (("status",), ("up",), ("down",), ("verify",), ("mark", "1"),
                        ("backup",), ("schema",)):
            with self.subTest(command=command):
                self.assert_error(self.cli(*command), 2, "--db", "$SQLMIGRATE_DB",
                                  "$DATABASE_PATH")  # both are read
        self.assert_no_database_files()

    def test_a_missing_database_exits_2_for_every_command_that_needs_one(self):
        # A --db naming no file is a wrong request, as no --db is: mark said 2,
        # backup and schema 1.  (status reports it, verify counts it a problem.)
        self.add_initial()
        for command in (("mark", "1"), ("backup",), ("schema",), ("schema", "--json"),
                        ("schema", "--sql"), ("schema", "users")):
            with self.subTest(command=command):
                self.assert_error(self.cli("--db", self.db, *command), 2,
                                  "database %s does not exist" % self.db)
                self.assert_no_database_files()

    def test_unknown_command_exits_2(self):
        status, out, err = self.cli("--db", self.db, "frobnicate")
        self.assertEqual(status, 2)
        self.assertNotIn("Traceback", err)
        self.assertIn("frobnicate", err)

    def test_missing_command_exits_2(self):
        status, out, err = self.cli("--db", self.db)
        self.assertEqual(status, 2)
        self.assertNotIn("Traceback", err)

    def test_non_numeric_version_exits_2(self):
        status, out, err = self.cli("--db", self.db, "up", "--to", "latest")
        self.assertEqual(status, 2)
        self.assertNotIn("Traceback", err)

    def test_error_is_one_line_without_traceback_and_v_adds_it(self):
        self.add_initial()
        self.make_plain_database()
        self.write("002-no-up.py", "name = 'nothing'\n")
        status, out, err = self.cli("--db", self.db, "up")
        self.assertEqual(status, 1)
        self.assertEqual(err.strip().count("\n"), 0, err)
        self.assertTrue(err.startswith("sqlmigrate: error:"), err)
        status, out, err = self.cli("--db", self.db, "-v", "up")
        self.assertEqual(status, 1)
        self.assertIn("Traceback", err)
        self.assertIn("002-no-up.py", err.splitlines()[-1])

    def test_results_go_to_stdout_and_errors_to_stderr(self):
        self.add_initial()
        out, _ = self.apply()
        self.assertIn("Applied v1", out)
        self.write("002-no-up.py", "name = 'nothing'\n")
        status, out, err = self.cli("--db", self.db, "up")
        self.assertNotIn("error", out.lower())
        self.assertIn("002-no-up.py", err)

    def test_what_a_migration_prints_goes_to_stderr_not_into_the_results(self):
        self.write("001-chatty.py", "def up(db):\n    print('hello from up')\n"
                                    "    db.execute('CREATE TABLE t (x)')\n\n"
                                    "def down(db):\n    db.execute('DROP TABLE t')\n")
        for args in (("test", "--json"), ("lint", "--json"), ("up", "--dry-run"), ("up",)):
            with self.subTest(args=args):
                out, err = self.run_ok("--db", self.db, *args)
                self.assertNotIn("hello from up", out)
                self.assertIn("hello from up", err)
                if "--json" in args:
                    json.loads(out)


    def test_main_called_by_an_application_leaves_its_stdout_alone(self):
        # Only the sqlmigrate process sends migrations' prints to stderr; an
        # application calling main() keeps its own sys.stdout (it may run
        # other threads that print).
        self.write("001-chatty.py", "def up(db):\n    print('hello from up')\n")
        script = ("import sys, sqlmigrate\nbefore = sys.stdout\n"
                  "code = sqlmigrate.main(['--db', sys.argv[1], '--dir', sys.argv[2], 'up'])\n"
                  "print('after', sys.stdout is before, code)\n")
        done = subprocess.run([sys.executable, "-c", script, self.db, self.dir],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, cwd=os.path.dirname(SCRIPT))
        self.assertIn("hello from up", done.stdout, done.stderr)
        self.assertIn("after True 0", done.stdout, done.stderr)


# ---------------------------------------------------------------------------
# SPEC 7: bad input, a clear message, the database unchanged
# ---------------------------------------------------------------------------

class BadInputTests(CLITestCase):
    """Each case starts from a database at v1 with v2 pending, so `up` would
    write if it did not stop; the file must be byte-identical afterwards."""

    def setUp(self):
        super().setUp()
        self.add_initial()
        self.apply()
        self.add_sessions()

    def up(self, *extra):
        """`up` with command options `extra`, against the database at v1."""
        return ("--db", self.db, "up") + extra

    # -- the migration directory ----------------------------------------------

    def test_missing_migration_directory(self):
        missing = os.path.join(self.tmp, "nope")
        for command in ("up", "status", "verify", "down"):
            with self.subTest(command=command):
                self.assert_bad_input(("--db", self.db, "--dir", missing, command), 2, missing)

    def test_a_file_numbered_zero_is_a_bad_name_not_an_applied_migration(self):
        # Version 0 is "nothing applied": such a file would never run, while
        # status listed it as applied and up said there was nothing to apply.
        self.write_sql(0, "seed", "CREATE TABLE seed (id INTEGER);")
        for command in ("up", "status", "verify", "mark 2", "down"):
            with self.subTest(command=command):
                self.assert_bad_input(("--db", self.db) + tuple(command.split()), 2,
                                      "000-seed.sql", "1 or more")

    def test_a_version_too_big_for_sqlite_is_a_bad_name_before_anything_runs(self):
        # SQLite's integers end at 2**63 - 1: such a file could never be recorded.
        self.write("9223372036854775808-huge.sql", "CREATE TABLE huge (id INTEGER);\n")
        for command in ("up", "status", "verify", "new next"):
            with self.subTest(command=command):
                self.assert_bad_input(("--db", self.db) + tuple(command.split()), 2,
                                      "9223372036854775808-huge.sql", "9223372036854775807")
        self.assertEqual(len(os.listdir(self.dir)), 3, os.listdir(self.dir))

    def test_migration_directory_that_is_a_file(self):
        path = self.write("not-a-dir", "x", directory=self.tmp)
        self.assert_bad_input(("--db", self.db, "--dir", path, "up"), 2, path)

    def test_unreadable_migration_directory(self):
        python = self.unprivileged_python()
        os.chmod(self.dir, 0)
        self.addCleanup(os.chmod, self.dir, 0o755)
        self.assert_bad_input(("--db", self.db, "--dir", self.dir, "up"), 2, self.dir,
                              python=python)

    # -- file names -------------------------------------------------------------

    def test_invalid_file_names_name_the_file_and_the_rule(self):
        cases = [("1-initial.py", "3 digits"),
                 ("002-AddUserField.py", "kebab-case"),
                 ("003_add_api_keys.py", "hyphen")]
        for filename, rule in cases:
            with self.subTest(filename=filename):
                path = self.write(filename, "def up(db):\n    db.execute('CREATE TABLE x (a)')\n")
                try:
                    for command in ("up", "status"):
                        self.assert_bad_input(("--db", self.db, command), 2, filename, rule)
                finally:
                    os.remove(path)
        self.assertNotIn("sessions", self.tables())

    def test_two_files_with_one_version_names_both(self):
        self.write("002-other-change.py", "def up(db):\n    pass\n")
        self.assert_bad_input(self.up(), 2, "002-add-user-field-to-sessions.sql",
                              "002-other-change.py")

    def test_ignored_files_are_not_errors(self):
        self.write("README.md", "# migrations\n")
        self.write("_helpers.py", "X = 1\n")
        self.write(".hidden.sql", "garbage\n")
        os.mkdir(os.path.join(self.dir, "__pycache__"))
        self.apply()
        self.assertEqual(self.schema_version(), "2")

    # -- file contents -----------------------------------------------------------

    def test_syntax_error_names_file_and_line(self):
        self.write("003-broken.py", "name = 'Broken'\n\ndef up(db)\n    pass\n")
        err = self.assert_bad_input(self.up(), 1, "003-broken.py")
        self.assertRegex(err, r"003-broken\.py.*(:|line )3\b")
        self.assertNotIn("sessions", self.tables())  # nothing applied

    def test_import_error_names_file_line_and_module(self):
        self.write("003-imports.py", "name = 'Imports'\nimport no_such_module_xyz\n\n"
                                     "def up(db):\n    pass\n")
        err = self.assert_bad_input(self.up(), 1, "003-imports.py", "no_such_module_xyz")
        self.assertRegex(err, r"003-imports\.py.*(:|line )2\b")

    def test_migration_without_up(self):
        self.write("003-no-up.py", "name = 'No up'\n\ndef down(db):\n    pass\n")
        self.assert_bad_input(self.up(), 1, "003-no-up.py", "up")

    def test_version_attribute_that_disagrees_with_the_file_name(self):
        self.write("003-wrong-version.py", "version = 4\n\ndef up(db):\n    pass\n")
        self.assert_bad_input(self.up(), 1, "003-wrong-version.py", "version")

    def test_non_utf8_sql_file(self):
        self.write("003-latin1.sql", "-- migrate:up\nINSERT INTO users (name) VALUES ('caf\xe9');\n"
                   .encode("latin-1"))
        self.assert_bad_input(self.up(), 1, "003-latin1.sql", "UTF-8")

    # -- the database --------------------------------------------------------------

    def test_database_in_a_directory_that_does_not_exist(self):
        missing_dir = os.path.join(self.tmp, "no-such-dir")
        path = os.path.join(missing_dir, "app.db")
        for command in ("up", "status", "mark"):
            with self.subTest(command=command):
                args = ("--db", path, command) + (("1",) if command == "mark" else ())
                self.assert_error(self.cli(*args), (1, 2), missing_dir)
                self.assertFalse(os.path.exists(missing_dir))

    def test_file_that_is_not_a_database(self):
        os.remove(self.db)
        with open(self.db, "wb") as f:
            f.write(b"this is a text file, not an SQLite database\n" * 100)
        for command in ("up", "status", "down"):
            with self.subTest(command=command):
                self.assert_bad_input(("--db", self.db, command), 1, self.db, "not", "database")

    def test_read_only_database(self):
        python = self.unprivileged_python()
        os.chmod(self.db, 0o444)
        self.addCleanup(os.chmod, self.db, 0o644)
        self.assert_bad_input(self.up(), 1, self.db, "read-only", python=python)
        self.assertEqual(self.schema_version(), "1")

    def test_dry_run_of_a_read_only_database_shows_the_plan(self):
        # A dry run writes nothing, so a user who may only read the database
        # (or its directory) can still see what up or down would do.
        python = self.unprivileged_python()
        before = self.sha()
        for path, mode in ((self.db, 0o444), (self.tmp, 0o555)):
            os.chmod(path, mode)
            try:
                for args, sql in ((("up",), "CREATE TABLE sessions"),
                                  (("down",), "DROP TABLE users")):
                    with self.subTest(read_only=path, args=args):
                        out, _ = self.run_ok("--db", self.db, *(args + ("--dry-run",)),
                                             python=python)
                        self.assertIn(sql, out)
            finally:
                os.chmod(path, 0o755 if path == self.tmp else 0o644)
        self.assertEqual(self.sha(), before)
        self.assertEqual([n for n in os.listdir(self.tmp) if n.startswith("app.db")], ["app.db"])

    def start_locker(self):
        """Another process holding the database's write lock (until killed)."""
        locker = subprocess.Popen([sys.executable, "-c", LOCKER, self.db],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(locker.stderr.close)
        self.addCleanup(locker.stdout.close)
        self.addCleanup(locker.wait)
        self.addCleanup(locker.kill)
        self.assertEqual(locker.stdout.readline().strip(), b"locked")
        return locker

    def test_locked_database_fails_quickly_with_busy_timeout(self):
        locker = self.start_locker()
        before = self.sha()
        started = time.monotonic()
        result = self.cli("--db", self.db, "--busy-timeout", "200", "up")
        elapsed = time.monotonic() - started
        err = self.assert_error(result, 1, "locked")
        self.assertRegex(err, r"(?i)(--busy-timeout|try again|wait|stop)")
        self.assertLess(elapsed, 4.0, "a 200 ms busy timeout took %.1f s" % elapsed)
        locker.kill()
        locker.wait()
        self.assertEqual(self.sha(), before)
        self.assertEqual(self.schema_version(), "1")

    def test_a_runner_still_locked_after_its_wait_says_it_waited_and_to_wait_longer(self):
        locker = self.start_locker()
        before = self.sha()
        result = self.cli("--db", self.db, "--busy-timeout", "100", "up", "--wait", "0.5")
        err = self.assert_error(result, 1, "locked", "--wait")
        error = [l for l in err.splitlines() if l.startswith("sqlmigrate: error:")][0]
        self.assertNotIn("--busy-timeout", error)  # it was --wait that ran out
        # The line saying it retries does not also tell the user to try again.
        retrying = [l for l in err.splitlines() if l.startswith("sqlmigrate: INFO:")]
        self.assertEqual(len(retrying), 1, err)
        self.assertNotIn("try again", retrying[0])
        locker.kill()
        locker.wait()
        self.assertEqual(self.sha(), before)

    def test_metadata_table_of_another_shape_suggests_table_option(self):
        os.remove(self.db)
        conn = sqlite3.connect(self.db)
        conn.execute("CREATE TABLE metadata (id INTEGER PRIMARY KEY, author TEXT)")
        conn.execute("INSERT INTO metadata (author) VALUES ('someone else')")
        conn.commit()
        conn.close()
        for command in ("up", "status"):
            with self.subTest(command=command):
                self.assert_bad_input(("--db", self.db, command), (1, 2), "metadata", "--table")

    def test_database_ahead_of_the_files(self):
        empty = os.path.join(self.tmp, "empty")
        os.mkdir(empty)
        self.write("001-something-else.sql", "CREATE TABLE else1 (id INTEGER);\n", directory=empty)
        self.apply()  # v2 applied: database at 2, the other directory only has v1
        for command in ("up", "down"):
            with self.subTest(command=command):
                self.assert_bad_input(("--db", self.db, "--dir", empty, command), 1, "version 2")
        self.assertNotIn("else1", self.tables())

    def test_out_of_order_migration_is_refused_and_named(self):
        v2 = os.path.join(self.dir, "002-add-user-field-to-sessions.sql")
        aside = os.path.join(self.tmp, "aside.sql")
        os.rename(v2, aside)
        self.add_table(3, "three")
        self.apply()                      # v1 and v3 applied, v2 not there yet
        os.rename(aside, v2)              # v2 arrives late: below the current version
        self.add_table(4, "four")
        err = self.assert_bad_input(self.up(), 1, "002-add-user-field-to-sessions.sql")
        self.assertRegex(err, r"(?i)(out.of.order|below|older|lower)")
        self.assertNotIn("sessions", self.tables())
        self.assertNotIn("four", self.tables())  # nothing is applied, not even v4

    def test_down_over_a_migration_without_down(self):
        self.write_sql(3, "no-way-back", "CREATE TABLE oneway (id INTEGER);")  # no down marker
        self.apply()
        err = self.assert_bad_input(("--db", self.db, "down", "--steps", "2"), 1,
                                    "003-no-way-back.sql", "down")
        self.assertIn("sessions", self.tables())  # v2 (which has a down) was not rolled back

    def test_atomic_with_a_non_transactional_migration(self):
        self.add_table(3, "three", options="transaction:false")
        err = self.assert_bad_input(self.up("--atomic"), (1, 2), "003-create-three.sql",
                                    "atomic")
        self.assertNotIn("sessions", self.tables())

    def test_steps_with_to(self):
        self.apply()
        status, out, err = self.cli("--db", self.db, "down", "--steps", "1", "--to", "0")
        self.assertEqual(status, 2)
        self.assertNotIn("Traceback", err)
        self.assertRegex(err, r"--steps|--to")

    def test_no_database_given(self):
        self.assert_error(self.cli("up"), 2, "--db")
        self.assertEqual(self.schema_version(), "1")


# ---------------------------------------------------------------------------
# Progress on a terminal
# ---------------------------------------------------------------------------

SLOW = '''\
name = "Slow backfill"
import time


def up(db):
    time.sleep(1.5)
    db.execute("CREATE TABLE slow (id INTEGER)")
'''


class ProgressTests(CLITestCase):

    def setUp(self):
        super().setUp()
        self.write("001-slow-backfill.py", SLOW)

    def test_quiet_in_a_pipe(self):
        status, out, err = self.cli("--db", self.db, "up")
        self.assertEqual(status, 0, err)
        self.assertIn("Slow backfill", out)   # the result line
        self.assertNotIn("Slow backfill", err)
        self.assertNotIn("\r", err)
        self.assertNotIn("\033[", err)

    def run_on_tty(self, *args):
        """Run the CLI with stderr on a pseudo-terminal; return (status, stdout, tty text)."""
        master, slave = pty.openpty()
        env = dict(os.environ)
        for name in ("SQLMIGRATE_DB", "DATABASE_PATH", "SQLMIGRATE_DIR"):
            env.pop(name, None)
        proc = subprocess.Popen([sys.executable, SCRIPT] + list(args), cwd=self.tmp, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        chunks = []

        def drain():
            while True:
                try:
                    data = os.read(master, 1024)
                except OSError:  # EIO once the child has closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)

        reader = threading.Thread(target=drain)
        reader.start()
        try:
            out = proc.communicate(timeout=60)[0]
        finally:
            reader.join(10)
            os.close(master)
        return proc.returncode, out.decode("utf-8", "replace"), \
            b"".join(chunks).decode("utf-8", "replace")

    @unittest.skipIf(pty is None, "no pty module on this platform")
    def test_terminal_shows_the_running_migration(self):
        status, out, tty = self.run_on_tty("--db", self.db, "up")
        self.assertEqual(status, 0, tty)
        self.assertIn("Slow backfill", tty)
        self.assertIn("Applied v1: Slow backfill", out)

    @unittest.skipIf(pty is None, "no pty module on this platform")
    def test_terminal_with_q_shows_no_progress(self):
        status, out, tty = self.run_on_tty("--db", self.db, "-q", "up")
        self.assertEqual(status, 0, tty)
        self.assertNotIn("Slow backfill", tty)
        self.assertIn("Applied v1: Slow backfill", out)

    def test_terminal_status_line_shows_a_table_copy_and_ignores_unknown_events(self):
        # The CLI's end of the progress interface: the runner forwards a
        # rebuild's copy progress as a "copy" event with table, copied, total.
        out, tty = io.StringIO(), io.StringIO()
        progress = sqlmigrate._Progress(out, tty, live=True)
        migration = types.SimpleNamespace(version=4, name="Split names")
        progress("start", migration, "up")
        progress("copy", migration, "up", table="users", copied=250000, total=1000000)
        progress("a-future-event", migration, "up", anything=1)
        progress("end", migration, "up")
        self.assertIn("applying v4: Split names", tty.getvalue())
        self.assertIn("copying users: 250000 of 1000000 rows", tty.getvalue())
        self.assertTrue(tty.getvalue().endswith("\r\033[K"))  # the status line is cleared
        self.assertEqual(out.getvalue(), "")

    def test_copy_progress_is_silent_off_a_terminal(self):
        out, err = io.StringIO(), io.StringIO()
        progress = sqlmigrate._Progress(out, err, live=False)
        migration = types.SimpleNamespace(version=4, name="Split names")
        for event, details in (("start", {}), ("copy", dict(table="users", copied=1, total=2)),
                               ("end", {})):
            progress(event, migration, "up", **details)
        self.assertEqual((out.getvalue(), err.getvalue()), ("", ""))


if __name__ == "__main__":
    unittest.main()
