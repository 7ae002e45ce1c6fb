"""Start-up anywhere (issue 16): migrations inside packages, zip archives and
zipapps or in code; adopting a `PRAGMA user_version` database; readiness
(is_current, wait_until_current); LiteFS replicas; the start-up lock retry."""

import os
import sqlite3
import subprocess
import sys
import textwrap
import zipfile

from tests.support import ROOT, TempDirTestCase, sqlmigrate

USERS = ("CREATE TABLE users (id INTEGER PRIMARY KEY);", "DROP TABLE users;")
POSTS = ("CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER);", "DROP TABLE posts;")
PY_MIGRATION = "def up(db):\n    db.execute('CREATE TABLE notes (body TEXT)')\n"


def sql_file(up, down=None):
    return "-- migrate:up\n%s\n" % up + ("-- migrate:down\n%s\n" % down if down else "")


class StartupCase(TempDirTestCase):
    def cli(self, *args, **kwargs):
        """TempDirTestCase.cli; env's PYTHONPATH (an archive) goes after sqlmigrate's."""
        extra = kwargs.get("env", {}).pop("PYTHONPATH", None)
        if extra is None:
            return super().cli(*args, **kwargs)
        proc = self.run_python("import sys, sqlmigrate; sys.exit(sqlmigrate.main())", *args,
                               path=[extra])
        return proc.returncode, proc.stdout, proc.stderr

    def run_python(self, code, *args, **kwargs):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + kwargs.pop("path", [])))
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)] + list(args),
                              env=env, cwd=self.tmp, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, timeout=60,
                              **kwargs)

    def user_tables(self):
        return [t for t in self.tables() if t not in ("metadata", "metadata_migrations")]

    def build_zip(self, name="bundle.zip", files=None):
        """A real zip archive holding the package myapp.migrations."""
        path = os.path.join(self.tmp, name)
        files = files if files is not None else {
            "001-create-users.sql": sql_file(*USERS), "002-add-notes.py": PY_MIGRATION}
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("myapp/__init__.py", "")
            z.writestr("myapp/migrations/__init__.py", "")
            for filename, text in files.items():
                z.writestr("myapp/migrations/" + filename, text)
        return path


class PackageSources(StartupCase):
    def test_migrate_from_a_package_inside_a_zip_on_sys_path_applies_sql_and_python(self):
        archive = self.build_zip()
        proc = self.run_python("""
            import sys, sqlmigrate
            done = sqlmigrate.migrate(sys.argv[1], package="myapp.migrations")
            print([r.filename for r in done]); print(done[0].path)
            """, self.db, path=[archive])
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("['001-create-users.sql', '002-add-notes.py']", proc.stdout)
        # The path names the file inside the archive, as zipimport's __file__ does.
        self.assertIn(os.path.join(archive, "myapp", "migrations", "001-create-users.sql"),
                      proc.stdout)
        self.assertEqual(self.user_tables(), ["notes", "users"])

    def test_package_files_have_the_checksums_of_the_same_files_in_a_directory(self):
        archive = self.build_zip()
        self.write("001-create-users.sql", sql_file(*USERS))
        self.write("002-add-notes.py", PY_MIGRATION)
        sqlmigrate.migrate(self.db, self.dir)
        proc = self.run_python("""
            import sys, sqlmigrate
            m = sqlmigrate.Migrator(sys.argv[1], package="myapp.migrations")
            print(m.status()["clean"], m.pending())
            """, self.db, path=[archive])
        self.assertEqual(proc.stdout.split(), ["True", "[]"], proc.stderr)

    def test_cli_up_with_package_option_from_a_zip(self):
        archive = self.build_zip()
        status, out, err = self.cli("--db", self.db, "--package", "myapp.migrations", "up",
                                    env={"PYTHONPATH": archive})
        self.assertEqual(status, 0, err)
        self.assertIn("Applied 2 migration(s)", out)
        self.assertEqual(self.user_tables(), ["notes", "users"])

    def test_cli_up_lint_with_package_option_from_a_zip(self):
        archive = self.build_zip()
        status, out, err = self.cli("--db", self.db, "--package", "myapp.migrations", "up",
                                    "--lint", env={"PYTHONPATH": archive})
        self.assertEqual(status, 0, out + err)
        self.assertIn("Applied 2 migration(s)", out)

    def test_zipapp_whose_main_migrates_its_own_package(self):
        src = os.path.join(self.tmp, "app")
        os.makedirs(os.path.join(src, "myapp", "migrations"))
        for path, text in {"myapp/__init__.py": "", "myapp/migrations/__init__.py": "",
                           "myapp/migrations/001-create-users.sql": sql_file(*USERS),
                           "myapp/migrations/002-add-notes.py": PY_MIGRATION,
                           "__main__.py": "import sys, sqlmigrate\n"
                           "print(len(sqlmigrate.migrate(sys.argv[1], "
                           "package='myapp.migrations')))\n"}.items():
            with open(os.path.join(src, path), "w") as f:
                f.write(text)
        with open(os.path.join(ROOT, "sqlmigrate.py")) as f, \
                open(os.path.join(src, "sqlmigrate.py"), "w") as g:
            g.write(f.read())  # vendored, as the one-file module is meant to be
        pyz = os.path.join(self.tmp, "app.pyz")
        subprocess.run([sys.executable, "-m", "zipapp", src, "-o", pyz], check=True)
        import shutil
        shutil.rmtree(src)
        for expected in ("2", "0"):
            proc = subprocess.run([sys.executable, pyz, self.db], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, universal_newlines=True, timeout=60,
                                  env=dict(os.environ, PYTHONPATH=""))
            self.assertEqual((proc.returncode, proc.stdout.strip()), (0, expected), proc.stderr)
        self.assertEqual(self.user_tables(), ["notes", "users"])

    def up_from_package_folder(self, app, app_init=""):
        """`up --package <app>.migrations` from a folder on PYTHONPATH: app's
        __init__.py holds `app_init`, migrations/ one migration."""
        package = os.path.join(self.tmp, "lib", app, "migrations")
        os.makedirs(package)
        for path, text in {"../__init__.py": app_init, "__init__.py": "",
                           "001-create-users.sql": sql_file(*USERS)}.items():
            with open(os.path.join(package, path), "w") as f:
                f.write(text)
        return self.cli("--db", self.db, "--package", app + ".migrations", "up",
                        env={"PYTHONPATH": os.path.join(self.tmp, "lib")})

    def test_package_from_a_plain_directory_reads_its_files(self):
        status, out, err = self.up_from_package_folder("myapp")
        self.assertEqual(status, 0, err)
        self.assertEqual(self.user_tables(), ["users"])

    def test_a_namespace_package_in_two_folders_is_refused_naming_both(self):
        # No __init__.py: Python merges every folder of that name on sys.path,
        # and reading only the first would skip the other's migrations.
        roots = [os.path.join(self.tmp, "a"), os.path.join(self.tmp, "b")]
        for root, (filename, table) in zip(roots, [("001-one.sql", "one"),
                                                   ("002-two.sql", "two")]):
            os.makedirs(os.path.join(root, "nsapp", "migrations"))
            with open(os.path.join(root, "nsapp", "migrations", filename), "w") as f:
                f.write("-- migrate:up\nCREATE TABLE %s (x);\n" % table)
        status, out, err = self.cli("--db", self.db, "--package", "nsapp.migrations", "up",
                                    env={"PYTHONPATH": os.pathsep.join(roots)})
        self.assertEqual(status, 2, (out, err))
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        for root in roots:
            self.assertIn(os.path.join(root, "nsapp", "migrations"), err)
        self.assertFalse(os.path.exists(self.db))

    def test_a_pkgutil_namespace_package_in_two_folders_is_refused_naming_both(self):
        # __path__ = extend_path(...) (the pre-PEP 420 idiom) rebinds __path__:
        # the spec still names the first folder only, whose files alone were read.
        roots = [os.path.join(self.tmp, "a"), os.path.join(self.tmp, "b")]
        extend = "__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n"
        for root, (filename, table) in zip(roots, [("001-one.sql", "one"),
                                                   ("002-two.sql", "two")]):
            os.makedirs(os.path.join(root, "oldns", "migrations"))
            for init in ("oldns", os.path.join("oldns", "migrations")):
                with open(os.path.join(root, init, "__init__.py"), "w") as f:
                    f.write(extend)
            with open(os.path.join(root, "oldns", "migrations", filename), "w") as f:
                f.write("-- migrate:up\nCREATE TABLE %s (x);\n" % table)
        status, out, err = self.cli("--db", self.db, "--package", "oldns.migrations", "up",
                                    env={"PYTHONPATH": os.pathsep.join(roots)})
        self.assertEqual(status, 2, (out, err))
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        for root in roots:
            self.assertIn(os.path.join(root, "oldns", "migrations"), err)
        self.assertFalse(os.path.exists(self.db))

    def test_a_package_that_does_not_exist_is_a_bad_request_naming_it(self):
        status, out, err = self.cli("--db", self.db, "--package", "nosuch.migrations", "up")
        self.assertEqual(status, 2, err)
        self.assertIn("nosuch.migrations", err)
        self.assertFalse(os.path.exists(self.db))

    def test_a_path_or_relative_name_as_package_is_a_bad_request_pointing_at_dir(self):
        # ".migrations" and "./migrations" escaped import_module as "TypeError: the
        # 'package' argument is required to perform a relative import".
        for name in (".migrations", "./migrations", "migrations/", "app..migrations"):
            with self.subTest(name=name):
                status, out, err = self.cli("--db", self.db, "--package", name, "status")
                self.assertEqual(status, 2, err)
                self.assertEqual(len(err.strip().splitlines()), 1, err)
                self.assertIn(name, err)
                self.assertIn("--dir", err)
                self.assertNotIn("TypeError", err)
        self.assertFalse(os.path.exists(self.db))

    def test_a_package_whose_init_fails_to_import_is_one_line_naming_it(self):
        status, out, err = self.up_from_package_folder("brokenapp", app_init="x = (\n")
        self.assertEqual(status, 2, err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn("brokenapp.migrations", err)
        self.assertIn("SyntaxError", err)
        self.assertFalse(os.path.exists(self.db))

    def test_a_package_whose_init_calls_exit_is_refused_not_a_silent_success(self):
        # SystemExit is no Exception: it ended the run with status 0 and
        # nothing applied, as if the database were current.
        status, out, err = self.up_from_package_folder("exitapp", app_init="raise SystemExit(0)\n")
        self.assertEqual(status, 2, (out, err))
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn("exitapp.migrations", err)
        self.assertIn("sys.exit(0)", err)
        self.assertFalse(os.path.exists(self.db))

    def test_a_package_with_no_migrations_is_a_bad_request_naming_it(self):
        archive = self.build_zip(files={})
        status, out, err = self.cli("--db", self.db, "--package", "myapp.migrations", "up",
                                    env={"PYTHONPATH": archive})
        self.assertEqual(status, 2, err)
        self.assertIn("myapp.migrations", err)
        self.assertIn("no migration", err)

    def test_bad_names_inside_a_package_are_refused_like_a_directorys(self):
        archive = self.build_zip(files={"1-create-users.sql": sql_file(*USERS)})
        status, out, err = self.cli("--db", self.db, "--package", "myapp.migrations", "up",
                                    env={"PYTHONPATH": archive})
        self.assertEqual(status, 2, err)
        self.assertIn("1-create-users.sql: version must have at least 3 digits", err)

    def test_package_and_dir_together_are_refused(self):
        status, out, err = self.cli("--db", self.db, "--package", "x", "--dir", self.dir, "up")
        self.assertEqual(status, 2)
        self.assertIn("--package", err)


class InCodeMigrations(StartupCase):
    def test_migrator_with_a_list_of_from_sql_migrations_applies_and_rolls_back(self):
        migrations = [sqlmigrate.Migration.from_sql(1, "create users", *USERS),
                      sqlmigrate.Migration.from_sql(2, "create posts", *POSTS)]
        m = sqlmigrate.Migrator(self.db, migrations=migrations)
        self.assertEqual([r.version for r in m.up()], [1, 2])
        self.assertEqual(self.user_tables(), ["posts", "users"])
        self.assertEqual(m.migrations[0].name, "create users")
        m.down(to=0)
        self.assertEqual(self.user_tables(), [])

    def test_duplicate_versions_in_a_list_are_refused(self):
        migrations = [sqlmigrate.Migration.from_sql(1, "a", *USERS),
                      sqlmigrate.Migration.from_sql(1, "b", *POSTS)]
        with self.assertRaises(sqlmigrate.RequestError) as caught:
            sqlmigrate.Migrator(self.db, migrations=migrations).up()
        self.assertIn("two migrations have version 1", str(caught.exception))
        self.assertFalse(os.path.exists(self.db))


    def test_from_sql_refuses_a_version_or_sql_of_the_wrong_type_as_a_request_error(self):
        # A version that is not a whole number (or beyond SQLite's INTEGER)
        # escaped as a TypeError, ValueError or, at run time, OverflowError;
        # up_sql=None or bytes became the SQL text "None" / "b'...'".
        for args in [("1", "a", "SELECT 1;"), (None, "a", "SELECT 1;"),
                     (float("nan"), "a", "SELECT 1;"), (True, "a", "SELECT 1;"),
                     (2 ** 63, "a", "SELECT 1;"), (1, "a", None),
                     (1, "a", b"CREATE TABLE t (x);"), (1, "a", "SELECT 1;", b"SELECT 2;")]:
            with self.subTest(args=args):
                with self.assertRaises(sqlmigrate.RequestError):
                    sqlmigrate.Migration.from_sql(*args)
        self.assertFalse(os.path.exists(self.db))


    def test_api_arguments_of_the_wrong_type_are_refused_as_a_request_error_first(self):
        # down(steps="1"), table=5 escaped as a TypeError from deep inside;
        # mark(1.0) wrote schema_version '1.0', which every later run refused.
        self.write_sql(1, "create-users", *USERS)
        sqlmigrate.migrate(self.db, self.dir)
        with open(self.db, "rb") as f:
            before = f.read()
        m = sqlmigrate.Migrator(self.db, self.dir)
        for call in [lambda: sqlmigrate.migrate(self.db, self.dir, table=5),
                     lambda: sqlmigrate.Migrator(self.db, self.dir, table=None).up(),
                     lambda: sqlmigrate.Migrator(self.db, self.dir, busy_timeout="5").status(),
                     lambda: m.up(to="1"), lambda: m.up(to=True), lambda: m.up(to=1.0),
                     lambda: m.down(steps="1"), lambda: m.down(steps=1.5),
                     lambda: m.down(to="0"), lambda: m.down(to=0.5), lambda: m.down(to=False),
                     lambda: m.mark("1"), lambda: m.mark(1.0), lambda: m.mark(2 ** 63),
                     lambda: m.lint(to="1")]:
            with self.assertRaises(sqlmigrate.RequestError):
                call()
        with open(self.db, "rb") as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(m.current_version, 1)


class MarkFromUserVersion(StartupCase):
    def hand_rolled(self, user_version):
        conn = self.connect()
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
        conn.execute("PRAGMA user_version = %d" % user_version)

    def test_mark_from_user_version_records_those_migrations_and_up_runs_the_rest(self):
        self.hand_rolled(1)
        self.write_sql(1, "create-users", *USERS)
        self.write_sql(2, "create-posts", *POSTS)
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "mark",
                                    "--from-user-version")
        self.assertEqual(status, 0, err)
        self.assertIn("Marked 1 migration(s)", out)
        self.assertEqual(sqlmigrate.migrate(self.db, self.dir)[0].version, 2)
        self.assertEqual(self.user_tables(), ["posts", "users"])

    def test_mark_from_user_version_refuses_a_database_already_tracked(self):
        self.hand_rolled(1)
        self.write_sql(1, "create-users", "CREATE TABLE IF NOT EXISTS users (id INTEGER);")
        sqlmigrate.migrate(self.db, self.dir)
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.Migrator(self.db, self.dir).mark(from_user_version=True)
        self.assertIn("metadata", str(caught.exception))

    def test_mark_from_user_version_refuses_when_a_file_is_missing(self):
        self.hand_rolled(3)
        self.write_sql(1, "create-users", *USERS)
        self.write_sql(3, "create-posts", *POSTS)
        before = open(self.db, "rb").read()
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "mark",
                                    "--from-user-version")
        self.assertEqual(status, 2, err)
        self.assertIn("v2", err)
        self.assertEqual(open(self.db, "rb").read(), before)

    def test_mark_from_a_huge_user_version_names_the_first_missing_files_at_once(self):
        # A date-like (or the largest) user_version: the refusal must not list
        # two billion versions before it says one line.
        self.hand_rolled(2147483647)
        self.write_sql(1, "create-users", *USERS)
        with self.assertRaises(sqlmigrate.RequestError) as caught:
            sqlmigrate.Migrator(self.db, self.dir).mark(from_user_version=True)
        self.assertIn("v2, v3", str(caught.exception))
        self.assertLess(len(str(caught.exception)), 400)

    def test_mark_from_user_version_zero_is_refused(self):
        self.hand_rolled(0)
        self.write_sql(1, "create-users", *USERS)
        with self.assertRaises(sqlmigrate.RequestError):
            sqlmigrate.Migrator(self.db, self.dir).mark(from_user_version=True)

    def test_up_never_adopts_user_version_by_itself(self):
        self.hand_rolled(1)
        self.write_sql(1, "create-users", *USERS)
        with self.assertRaises(sqlmigrate.MigrationError):  # users exists: v1 runs and fails
            sqlmigrate.migrate(self.db, self.dir)

    def test_up_failing_on_a_hand_rolled_database_says_how_to_adopt_it(self):
        # A new user's first `up` on the database their old runner built fails
        # with "table users already exists": the error must name the way in.
        self.hand_rolled(1)
        self.write_sql(1, "create-users", *USERS)
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(self.db, self.dir)
        self.assertEqual(caught.exception.kind, "migration-failed")
        self.assertIn("already exists", str(caught.exception))
        self.assertIn("user_version 1", str(caught.exception))
        self.assertIn("mark --from-user-version", str(caught.exception))

    def test_up_failing_on_an_untracked_database_with_tables_suggests_mark(self):
        self.hand_rolled(0)
        self.write_sql(1, "create-users", *USERS)
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "up")
        self.assertEqual(status, 1, err)
        self.assertIn("`mark V`", err)
        self.assertNotIn("--from-user-version", err)

    def test_a_table_named_like_sqlite_but_not_reserved_still_gets_the_adoption_hint(self):
        # Only sqlite_... names are SQLite's own; sqliteusers is the user's.
        conn = sqlite3.connect(self.db)
        conn.execute("CREATE TABLE sqliteusers (id INTEGER PRIMARY KEY)")
        conn.close()
        self.write_sql(1, "create-users", "CREATE TABLE sqliteusers (id INTEGER PRIMARY KEY);")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(self.db, self.dir)
        self.assertIn("`mark V`", str(caught.exception))

    def test_tracking_tables_named_in_another_case_are_not_taken_for_the_users_tables(self):
        conn = sqlite3.connect(self.db)
        # A history table left without its metadata table (the only tracking
        # table the hint looks at by name), named in capitals.
        conn.execute("CREATE TABLE METADATA_MIGRATIONS (version INTEGER PRIMARY KEY, name TEXT, "
                     "checksum TEXT, applied_at TEXT, duration_ms INTEGER)")
        conn.close()
        self.write_sql(1, "broken", "SELECT nope;")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(self.db, self.dir)
        self.assertNotIn("mark", str(caught.exception))

    def test_a_failure_on_an_empty_database_has_no_adoption_hint(self):
        # Also when the failed migration ran outside a transaction and its
        # own table stays: marking it applied would record half a migration.
        for options in ("", "transaction:false"):
            with self.subTest(options=options):
                if os.path.exists(self.db):
                    os.remove(self.db)
                self.write_sql(1, "broken", "CREATE TABLE users (id INTEGER PRIMARY KEY);\n"
                                            "SELECT nope;", options=options)
                with self.assertRaises(sqlmigrate.MigrationError) as caught:
                    sqlmigrate.migrate(self.db, self.dir)
                self.assertNotIn("mark", str(caught.exception))


class Readiness(StartupCase):
    def test_is_current_is_false_with_pending_and_true_after_up(self):
        self.write_sql(1, "create-users", *USERS)
        m = sqlmigrate.Migrator(self.db, self.dir)
        self.assertFalse(m.is_current())
        m.up()
        self.assertTrue(m.is_current())
        self.write_sql(1, "create-users", "CREATE TABLE users (id INTEGER, x);")
        self.assertFalse(sqlmigrate.Migrator(self.db, self.dir).is_current())  # drift

    def test_is_current_is_false_when_the_database_is_ahead(self):
        path = self.write_sql(1, "create-users", *USERS)
        sqlmigrate.migrate(self.db, self.dir)
        os.remove(path)
        self.assertFalse(sqlmigrate.Migrator(self.db, self.dir).is_current())

    def test_is_current_runs_one_statement_like_a_no_op_migrate(self):
        self.write_sql(1, "create-users", *USERS)
        self.write_sql(2, "create-posts", *POSTS)
        sqlmigrate.migrate(self.db, self.dir)
        conn = self.connect()
        statements = []
        conn.set_trace_callback(lambda sql: statements.append(sql))  # 3.6: hashable callbacks
        self.assertEqual(sqlmigrate.migrate(conn, self.dir), [])
        self.assertEqual(len(statements), 1, statements)
        del statements[:]
        self.assertTrue(sqlmigrate.Migrator(conn, self.dir).is_current())
        self.assertEqual(len(statements), 1, statements)

    def test_wait_until_current_returns_once_another_process_migrated(self):
        self.write_sql(1, "create-users", *USERS)
        later = subprocess.Popen([sys.executable, "-c", "import sys, time, sqlmigrate; "
                                  "time.sleep(1); sqlmigrate.migrate(sys.argv[1], sys.argv[2])",
                                  self.db, self.dir], env=dict(os.environ, PYTHONPATH=ROOT))
        self.addCleanup(later.wait)
        sqlmigrate.wait_until_current(self.db, self.dir, timeout=30)
        self.assertEqual(self.user_tables(), ["users"])

    def test_wait_until_current_times_out_with_an_error(self):
        self.write_sql(1, "create-users", *USERS)
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.wait_until_current(self.db, self.dir, timeout=0.3)
        self.assertEqual(caught.exception.kind, "not-current")
        self.assertFalse(os.path.exists(self.db))

    def test_wait_until_current_returns_when_the_only_drift_is_an_edited_applied_file(self):
        # up() warns and applies nothing more: waiting could never end otherwise.
        self.write_sql(1, "create-users", *USERS)
        sqlmigrate.migrate(self.db, self.dir)
        self.write_sql(1, "create-users", USERS[0] + "\n-- tidied", USERS[1])
        with self.assertLogs("sqlmigrate", "WARNING") as logs:
            sqlmigrate.wait_until_current(self.db, self.dir, timeout=2)
        self.assertIn("001-create-users.sql", "\n".join(logs.output))

    def test_wait_until_current_raises_what_up_refuses_without_waiting_for_it(self):
        path = self.write_sql(1, "create-users", *USERS)
        sqlmigrate.migrate(self.db, self.dir)
        os.remove(path)  # the database is ahead of these files: no primary mends that
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.wait_until_current(self.db, self.dir, timeout=2)
        self.assertEqual(caught.exception.kind, "ahead")

    def test_wait_until_current_raises_at_once_below_a_baseline_whose_files_are_gone(self):
        # up() refuses this database (behind-baseline) on every node: nothing will mend it.
        first = self.write_sql(1, "create-users", *USERS)
        second = self.write_sql(2, "create-posts", *POSTS)
        sqlmigrate.migrate(self.db, self.dir, to=1)
        self.write("003-baseline.sql", "-- migrate:baseline\n-- sqlmigrate baseline of: 1 2 3\n"
                   "%s\n%s\n" % (USERS[0], POSTS[0]), directory=self.dir)
        os.remove(first)
        os.remove(second)
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.wait_until_current(self.db, self.dir, timeout=0.5)
        self.assertEqual(caught.exception.kind, "behind-baseline")

    def test_wait_until_current_refuses_a_timeout_that_is_not_a_number_of_seconds(self):
        # NaN compares false with everything: as a deadline it never passed.
        self.write_sql(1, "create-users", *USERS)
        proc = self.run_python("""
            import sys, sqlmigrate
            for bad in (float("nan"), -1, "5", None, True, float("inf"), 10 ** 400):
                try:
                    sqlmigrate.wait_until_current(sys.argv[1], sys.argv[2], timeout=bad)
                except sqlmigrate.RequestError as e:
                    print(e.kind, "timeout" in str(e))
            """, self.db, self.dir)
        self.assertEqual(proc.stdout.split("\n")[:7], ["bad-request True"] * 7, proc.stderr)
        self.assertFalse(os.path.exists(self.db))


class Replicas(StartupCase):
    def setUp(self):
        super().setUp()
        self.write_sql(1, "create-users", *USERS)
        self.litefs = os.path.join(self.tmp, "litefs")
        os.mkdir(self.litefs)
        self.replica_db = os.path.join(self.litefs, "app.db")

    def test_migrate_on_a_replica_does_not_write_and_returns_at_once_by_option(self):
        self.write(".primary", "node-a.internal\n", directory=self.litefs)
        with self.assertLogs("sqlmigrate", "INFO") as logs:
            self.assertEqual(sqlmigrate.migrate(self.replica_db, self.dir, replica="return"), [])
        self.assertIn("primary", "\n".join(logs.output))
        self.assertIn("node-a.internal", "\n".join(logs.output))
        self.assertFalse(os.path.exists(self.replica_db))

    def test_migrate_on_a_replica_waits_for_the_primary_to_migrate(self):
        self.write(".primary", "node-a.internal\n", directory=self.litefs)
        # The primary node (which has no .primary file) migrates the same file;
        # here a second process does so with Migrator.up(), which writes where told.
        sqlite3.connect(self.replica_db).close()
        later = subprocess.Popen([sys.executable, "-c", "import sys, time, sqlmigrate; "
                                  "time.sleep(1); print(len(sqlmigrate.Migrator(sys.argv[1], "
                                  "sys.argv[2]).up()))", self.replica_db, self.dir],
                                 env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE)
        self.addCleanup(later.wait)
        self.assertEqual(sqlmigrate.migrate(self.replica_db, self.dir, timeout=30), [])
        self.assertEqual(later.communicate()[0].strip(), b"1")  # the primary did the work
        self.assertIn("users", self.tables(self.connect(self.replica_db)))

    def test_migrate_to_on_a_replica_waits_only_for_the_migrations_up_to_that_version(self):
        self.write_sql(2, "create-posts", *POSTS)
        self.write(".primary", "node-a.internal\n", directory=self.litefs)
        sqlmigrate.Migrator(self.replica_db, self.dir).up(to=1)  # the primary, with to=1 too
        self.assertEqual(sqlmigrate.migrate(self.replica_db, self.dir, to=1, timeout=0.5), [])
        self.assertNotIn("posts", self.tables(self.connect(self.replica_db)))

    def test_a_replica_reached_through_a_symlink_is_still_a_replica(self):
        self.write(".primary", "node-a.internal\n", directory=self.litefs)
        sqlite3.connect(self.replica_db).close()
        elsewhere = os.path.join(self.tmp, "app")
        os.mkdir(elsewhere)
        os.symlink(self.replica_db, os.path.join(elsewhere, "app.db"))
        self.assertEqual(sqlmigrate.migrate(os.path.join(elsewhere, "app.db"), self.dir,
                                            replica="return"), [])
        self.assertEqual(self.tables(self.connect(self.replica_db)), [])

    def test_an_unreadable_primary_file_means_not_migrating_with_a_warning(self):
        os.mkdir(os.path.join(self.litefs, ".primary"))  # unreadable, even for root
        with self.assertLogs("sqlmigrate", "WARNING") as logs:
            self.assertEqual(sqlmigrate.migrate(self.replica_db, self.dir, replica="return"), [])
        self.assertIn(".primary", "\n".join(logs.output))
        self.assertFalse(os.path.exists(self.replica_db))

    def test_without_a_primary_file_migrate_runs_as_usual(self):
        self.assertEqual(len(sqlmigrate.migrate(self.replica_db, self.dir, replica="return")), 1)


class LockRetry(StartupCase):
    HOLDER = ("import sqlite3, sys, time\n"
              "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
              "conn.execute('BEGIN IMMEDIATE')\n"
              "print('locked', flush=True)\n"
              "time.sleep(float(sys.argv[2])) if sys.argv[2] != 'stdin' else sys.stdin.read()\n"
              "conn.execute('COMMIT')\n")

    def hold_lock(self, how_long):
        sqlite3.connect(self.db).close()
        holder = subprocess.Popen([sys.executable, "-c", self.HOLDER, self.db, how_long],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.addCleanup(holder.wait)
        self.addCleanup(holder.stdin.close)
        self.assertEqual(holder.stdout.readline().strip(), b"locked")
        return holder

    def test_migrate_wait_outlasts_a_lock_held_past_the_busy_timeout(self):
        self.write_sql(1, "create-users", *USERS)
        self.hold_lock("1.5")
        done = sqlmigrate.migrate(self.db, self.dir, busy_timeout=0.2, wait=30)
        self.assertEqual([r.version for r in done], [1])

    def test_cli_up_wait_outlasts_a_lock_held_past_the_busy_timeout(self):
        self.write_sql(1, "create-users", *USERS)
        self.hold_lock("1.5")
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "--busy-timeout", "200",
                                    "up", "--wait", "30")
        self.assertEqual(status, 0, err)
        self.assertIn("Applied 1 migration(s)", out)

    def test_cli_up_wait_gives_up_with_the_locked_error_when_the_time_is_up(self):
        self.write_sql(1, "create-users", *USERS)
        self.hold_lock("stdin")
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "--busy-timeout", "200",
                                    "up", "--wait", "1")
        self.assertEqual(status, 1, err)
        self.assertIn("is locked by another process", err)

    def test_without_wait_a_lock_past_the_busy_timeout_fails(self):
        self.write_sql(1, "create-users", *USERS)
        self.hold_lock("stdin")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(self.db, self.dir, busy_timeout=0.2)
        self.assertEqual(caught.exception.kind, "locked")

    def test_migrate_refuses_a_wait_or_timeout_that_is_not_a_number_of_seconds_at_once(self):
        # Found out only when the lock was contended (TypeError, or NaN: retry forever).
        self.write_sql(1, "create-users", *USERS)
        for option in ("wait", "timeout"):
            for bad in (float("nan"), -1, "30", True, float("inf"), 10 ** 400):
                with self.assertRaises(sqlmigrate.RequestError) as caught:
                    sqlmigrate.migrate(self.db, self.dir, **{option: bad})
                self.assertIn(option, str(caught.exception))
        with self.assertRaises(sqlmigrate.RequestError):
            sqlmigrate.Migrator(self.db, self.dir).up(wait="30")
        self.assertFalse(os.path.exists(self.db))

    def test_migrate_wait_returns_the_migrations_committed_before_the_lock_was_lost(self):
        # v1 commits; another process takes the lock before v2's BEGIN and keeps
        # it past the busy timeout: the retry applies v2, and v1 was this call's too.
        self.write_sql(1, "create-users", *USERS)
        self.write_sql(2, "create-posts", *POSTS)

        def progress(event, result, direction, **details):
            if event == "done" and result.version == 1:
                self.hold_lock("1.5")
        done = sqlmigrate.migrate(self.db, self.dir, busy_timeout=0.2, wait=30,
                                  progress=progress)
        self.assertEqual([r.version for r in done], [1, 2])

    def test_a_lock_lost_after_a_commit_says_which_migrations_were_applied(self):
        self.write_sql(1, "create-users", *USERS)
        self.write_sql(2, "create-posts", *POSTS)

        def progress(event, result, direction, **details):
            if event == "done" and result.version == 1:
                self.hold_lock("stdin")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(self.db, self.dir, busy_timeout=0.2, progress=progress)
        self.assertEqual(caught.exception.kind, "locked")
        self.assertIn("001-create-users.sql", str(caught.exception))
