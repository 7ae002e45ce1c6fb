"""Baselines: `baseline --to N` squashes migrations 1..N into NNN-baseline.sql."""

import json
import os
import sqlite3

from tests.support import TempDirTestCase, file_sha256, sqlmigrate


class BaselineTestCase(TempDirTestCase):
    def setUp(self):
        super().setUp()
        self.write_sql(1, "users", "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);",
                       "DROP TABLE users;")
        self.write_sql(2, "posts", """
            CREATE TABLE posts (id INTEGER PRIMARY KEY AUTOINCREMENT,
                                user_id INTEGER REFERENCES users(id), body TEXT);
            CREATE INDEX idx_posts_user ON posts(user_id);
            CREATE VIEW post_count AS SELECT user_id, count(*) AS n FROM posts GROUP BY user_id;
            CREATE TRIGGER posts_no_empty BEFORE INSERT ON posts WHEN new.body = ''
            BEGIN SELECT RAISE(ABORT, 'empty'); END;
            -- ADD COLUMN: SQLite stores the edited CREATE TABLE text, which the baseline copies.
            ALTER TABLE users ADD COLUMN email TEXT;""",
                       "DROP VIEW post_count; DROP TABLE posts;")
        self.write_sql(3, "user-email", "CREATE TABLE emails (address TEXT PRIMARY KEY);\n"
                                        "PRAGMA user_version = 7;",
                       "DROP TABLE emails;")

    def run_cli(self, *args, **kwargs):
        return self.cli("--db", kwargs.pop("db", self.db), "--dir", kwargs.pop("dir", self.dir),
                        *args, **kwargs)

    def ok(self, *args, **kwargs):
        status, out, err = self.run_cli(*args, **kwargs)
        self.assertEqual(status, 0, out + err)
        return out, err

    def baseline_path(self, version=3):
        return os.path.join(self.dir, "%03d-baseline.sql" % version)

    def delete_files(self, *versions):
        for name in os.listdir(self.dir):
            if int(name[:3]) in versions and not name.endswith("-baseline.sql"):
                os.remove(os.path.join(self.dir, name))

    def schema(self, path=None, version=4):
        conn = self.connect(path)
        return sqlmigrate._schema_sql(conn, version)

    def records(self, path=None):
        return dict((row[0], row[1:]) for row in self.connect(path).execute(
            "SELECT version, name, checksum FROM metadata_migrations"))

    def states(self, path=None):
        out, _ = self.ok("status", "--json", db=path or self.db)
        return dict((r["version"], r["state"]) for r in json.loads(out)["migrations"])


class WritingABaseline(BaselineTestCase):
    def test_baseline_holds_the_marker_then_the_schema_of_a_fresh_build_to_that_version(self):
        out, _ = self.ok("baseline", "--to", "3")
        self.assertIn("003-baseline.sql", out)
        with open(self.baseline_path(), encoding="utf-8") as f:
            text = f.read()
        migrator = sqlmigrate.Migrator(":memory:", self.dir)
        expected = sqlmigrate._schema_sql(migrator._fresh_build(to=3), 3)
        self.assertEqual(text, "-- migrate:baseline\n-- sqlmigrate baseline of: 1 2 3\n"
                         + expected)
        self.assertIn("PRAGMA user_version = 7;", text)
        self.assertFalse(os.path.exists(self.db), "writing a baseline never opens the database")

    def test_baseline_of_an_earlier_version_leaves_out_later_migrations(self):
        self.ok("baseline", "--to", "1")
        with open(self.baseline_path(1), encoding="utf-8") as f:
            text = f.read()
        self.assertIn("CREATE TABLE users", text)
        self.assertNotIn("posts", text)

    def test_api_returns_the_path_written_with_the_files_zero_padding(self):
        os.rename(os.path.join(self.dir, "003-user-email.sql"),
                  os.path.join(self.dir, "0003-user-email.sql"))
        path = sqlmigrate.Migrator(self.db, self.dir).baseline(3)
        self.assertEqual(path, os.path.join(self.dir, "0003-baseline.sql"))
        self.assertTrue(os.path.isfile(path))
        self.assertFalse(os.path.exists(self.db))

    def test_an_existing_baseline_is_never_overwritten(self):
        self.ok("baseline", "--to", "3")
        before = file_sha256(self.baseline_path())
        status, out, err = self.run_cli("baseline", "--to", "3")
        # A wrong request, nothing tried (SPEC 6): 2, as for a backup over a file.
        self.assertEqual(status, 2, out + err)
        self.assertIn("003-baseline.sql", err)
        self.assertIn("already exists", err)
        self.assertEqual(file_sha256(self.baseline_path()), before)

    def test_to_a_version_without_a_file_or_above_the_newest_is_a_bad_request(self):
        os.rename(os.path.join(self.dir, "003-user-email.sql"),
                  os.path.join(self.dir, "005-user-email.sql"))
        for to in ("0", "4", "9"):
            with self.subTest(to=to):
                status, out, err = self.run_cli("baseline", "--to", to)
                self.assertEqual(status, 2, out + err)
                self.assertIn("v%s" % to, err)
        status, out, err = self.run_cli("baseline")
        self.assertEqual(status, 2, out + err)
        self.assertIn("--to", err)
        self.assertNotIn("to=", err)  # the CLI names its flags, not the API's keywords
        with self.assertRaises(sqlmigrate.RequestError) as caught:
            sqlmigrate.Migrator(self.db, self.dir).baseline(None)
        self.assertIn("to=", str(caught.exception))  # and the API its keywords
        self.assertNotIn("--to", str(caught.exception))
        self.assertEqual(sorted(os.listdir(self.dir)), ["001-users.sql", "002-posts.sql",
                                                        "005-user-email.sql"])

    def test_python_data_and_non_transactional_migrations_are_refused_without_force(self):
        cases = {
            "python": ("002-seed.py", "def up(db):\n    db.execute('CREATE TABLE t (x)')\n",
                       "Python"),
            "data": ("002-seed.sql", "CREATE TABLE t (x);\nINSERT INTO t VALUES (1);\n",
                     "INSERT"),
            "cte data": ("002-seed.sql", "CREATE TABLE t (x);\n"
                         "WITH s(v) AS (SELECT 1) DELETE FROM t WHERE x IN s;\n", "DELETE"),
            "non-transactional": ("002-seed.sql", "-- migrate:up transaction:false\n"
                                  "PRAGMA journal_mode = WAL;\n", "non-transactional"),
        }
        os.remove(os.path.join(self.dir, "002-posts.sql"))
        os.remove(os.path.join(self.dir, "003-user-email.sql"))
        for case, (filename, text, reason) in sorted(cases.items()):
            with self.subTest(case=case):
                self.write(filename, text)
                self.addCleanup(lambda p=os.path.join(self.dir, filename): os.path.exists(p)
                                and os.remove(p))
                status, out, err = self.run_cli("baseline", "--to", "2")
                self.assertEqual(status, 1, out + err)
                self.assertIn(filename, err)
                self.assertIn(reason, err)
                self.assertIn("--force", err)
                self.assertFalse(os.path.exists(self.baseline_path(2)))
                os.remove(os.path.join(self.dir, filename))

    def test_create_table_as_select_and_persistent_pragmas_are_refused_without_force(self):
        os.remove(os.path.join(self.dir, "002-posts.sql"))
        os.remove(os.path.join(self.dir, "003-user-email.sql"))
        cases = {"ctas": ("CREATE TABLE roles AS SELECT 'admin' AS name;", "CREATE TABLE AS"),
                 "temp ctas": ("CREATE TEMP TABLE IF NOT EXISTS r AS SELECT 1;",
                               "CREATE TABLE AS"),
                 "application_id": ("PRAGMA application_id = 1234;", "application_id"),
                 "call form": ("PRAGMA main.application_id(1234);", "application_id")}
        for case, (sql, reason) in sorted(cases.items()):
            with self.subTest(case=case):
                self.write("002-seed.sql", sql + "\n")
                status, out, err = self.run_cli("baseline", "--to", "2")
                written = os.path.exists(self.baseline_path(2))
                if written:  # so the next case is not refused as "already exists"
                    os.remove(self.baseline_path(2))
                self.assertEqual(status, 1, out + err)
                self.assertIn(reason, err)
                self.assertIn("--force", err)
                self.assertFalse(written)
        # Schema-only statements and per-connection pragmas stay allowed.
        generated = "a AS (1)" if sqlite3.sqlite_version_info >= (3, 31, 0) else "a"
        self.write("002-seed.sql", "CREATE TABLE x (%s, b);\nPRAGMA foreign_keys = ON;\n"
                                   "PRAGMA user_version = 3;\n" % generated)
        self.ok("baseline", "--to", "2")

    def test_an_index_or_trigger_on_the_tracking_tables_is_refused_without_force(self):
        # The schema (and so the baseline) leaves the tracking tables out with
        # what is on them: a new database built from it would lack these.
        os.remove(os.path.join(self.dir, "003-user-email.sql"))
        for sql, name in (("CREATE INDEX meta_value ON metadata (value);", "meta_value"),
                          ("CREATE TRIGGER audit AFTER INSERT ON metadata_migrations "
                           "BEGIN SELECT 1; END;", "audit")):
            with self.subTest(name=name):
                self.write_sql(3, "on-tracking", sql)
                status, out, err = self.run_cli("baseline", "--to", "3")
                self.assertEqual(status, 1, out + err)
                self.assertEqual(len(err.strip().splitlines()), 1, err)
                self.assertIn(name, err)
                self.assertIn("--force", err)
                self.assertFalse(os.path.exists(self.baseline_path(3)))
        self.ok("baseline", "--to", "3", "--force")
        self.assertTrue(os.path.exists(self.baseline_path(3)))

    def test_a_schema_with_a_marker_line_inside_a_statement_is_refused_even_with_force(self):
        # Written, the baseline would not load ("a baseline has no sections"),
        # and every later command on the directory would fail on it.
        for name in ("002-posts.sql", "003-user-email.sql"):
            os.remove(os.path.join(self.dir, name))
        self.write("002-odd.py", 'def up(db):\n'
                                 '    db.execute("CREATE TABLE odd (\\n-- migrate:down\\nx)")\n')
        status, out, err = self.run_cli("baseline", "--to", "2", "--force")
        self.assertEqual(status, 1, out + err)
        self.assertIn("odd", err.splitlines()[-1])
        self.assertIn("-- migrate:down", err.splitlines()[-1])
        self.assertFalse(os.path.exists(self.baseline_path(2)))
        self.ok("status")  # the directory still loads

    def test_api_baseline_with_a_version_that_is_not_a_number_is_a_request_error(self):
        with self.assertRaises(sqlmigrate.RequestError) as caught:
            sqlmigrate.Migrator(self.db, self.dir).baseline(to="2")
        self.assertIn("'2'", str(caught.exception))
        self.assertFalse(os.path.exists(self.baseline_path(2)))

    def test_the_baseline_appears_whole_or_not_at_all_and_never_over_a_file(self):
        # Written under another name, then linked into place: a process
        # listing the directory meanwhile sees no baseline or all of it.
        seen = []
        real_link = os.link

        def link(src, dst):
            seen.append((os.path.basename(src), os.path.exists(dst)))
            with open(src, encoding="utf-8") as f:
                seen.append(f.read())
            return real_link(src, dst)
        os.link = link
        self.addCleanup(setattr, os, "link", real_link)
        path = sqlmigrate.Migrator(self.db, self.dir).baseline(3)
        self.assertNotEqual(seen[0][0], "003-baseline.sql")
        self.assertFalse(seen[0][1])
        with open(path, encoding="utf-8") as f:
            self.assertEqual(f.read(), seen[1])
        self.assertEqual(sorted(os.listdir(self.dir)), ["001-users.sql", "002-posts.sql",
                                                        "003-baseline.sql", "003-user-email.sql"])

    def test_a_trigger_that_inserts_is_schema_not_data(self):
        self.write_sql(4, "audit", "CREATE TABLE audit (x);\nCREATE TRIGGER a AFTER INSERT ON "
                                   "users BEGIN INSERT INTO audit VALUES (new.id); END;")
        self.ok("baseline", "--to", "4")

    def test_force_writes_it_and_names_what_the_baseline_does_not_carry(self):
        self.write("004-seed.sql", "INSERT INTO users (name) VALUES ('root');\n")
        self.write("005-fill.py", "def up(db):\n    db.execute(\"UPDATE users SET email = 'x'\")\n")
        out, err = self.ok("baseline", "--to", "5", "--force")
        self.assertTrue(os.path.isfile(self.baseline_path(5)))
        self.assertIn("004-seed.sql", err)
        self.assertIn("005-fill.py", err)
        self.assertIn("not carry", err)


class ApplyingABaseline(BaselineTestCase):
    def setUp(self):
        super().setUp()
        self.files_db = os.path.join(self.tmp, "files.db")
        self.ok("up", db=self.files_db)  # the same migrations, by their files
        self.ok("baseline", "--to", "3")
        self.write_sql(4, "tags", "CREATE TABLE tags (id INTEGER PRIMARY KEY, "
                                  "user_id INTEGER REFERENCES users(id));", "DROP TABLE tags;")
        self.ok("up", db=self.files_db)

    def test_fresh_database_gets_the_same_schema_via_the_baseline_as_via_the_files(self):
        out, _ = self.ok("up")
        self.assertIn("Applied 2 migration(s)", out)
        self.assertEqual(self.schema(), self.schema(self.files_db))
        checksum = "baseline:" + file_sha256(self.baseline_path())
        records = self.records()
        self.assertEqual(records[1], ("Users", checksum))
        self.assertEqual(records[2], ("Posts", checksum))
        self.assertEqual(records[3], ("User email", checksum))
        self.assertNotEqual(records[4][1], checksum)
        self.assertEqual(self.schema_version(), "4")
        self.assertEqual(set(self.states().values()), {"applied"})
        self.ok("verify")

    def test_a_database_that_has_the_migrations_skips_the_baseline(self):
        out, _ = self.ok("status", "--json", db=self.files_db)
        self.assertTrue(json.loads(out)["clean"])
        before = self.records(self.files_db)
        self.assertFalse(any(c.startswith("baseline:") for _, c in before.values()))
        self.write_sql(5, "more", "CREATE TABLE more (x);")
        out, _ = self.ok("up", db=self.files_db)
        self.assertIn("Applied 1 migration(s)", out)
        self.assertEqual(set(self.records(self.files_db)) - set(before), {5})

    def test_a_database_with_some_of_the_migrations_gets_the_missing_files_not_the_baseline(self):
        self.ok("up", "--to", "1")
        self.ok("up")
        self.assertEqual(self.schema(), self.schema(self.files_db))
        self.assertFalse(any(c.startswith("baseline:") for _, c in self.records().values()))

    def test_status_and_pending_name_the_baseline_for_a_fresh_database(self):
        pending = sqlmigrate.Migrator(self.db, self.dir).pending()
        self.assertEqual([m.filename for m in pending], ["003-baseline.sql", "004-tags.sql"])
        self.assertFalse(os.path.exists(self.db))

    def test_dry_run_of_a_baseline_prints_its_sql_and_changes_nothing(self):
        out, _ = self.ok("up", "--dry-run")
        self.assertIn("CREATE TABLE users", out)
        self.assertFalse(os.path.exists(self.db) and self.tables())

    def test_down_below_the_baseline_runs_the_files_downs_while_they_exist(self):
        self.ok("up")
        self.ok("down", "--to", "2")
        self.assertNotIn("emails", self.schema())
        self.ok("up")
        self.assertEqual(self.schema(), self.schema(self.files_db))

    def test_processes_starting_together_apply_the_baseline_once(self):
        import subprocess
        import sys
        from tests.support import ROOT
        env = dict(os.environ, PYTHONPATH=ROOT)
        procs = [subprocess.Popen([sys.executable, "-m", "sqlmigrate", "--db", self.db, "--dir",
                                   self.dir, "--busy-timeout", "60000", "up"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(4)]
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            self.assertEqual(proc.returncode, 0, out + err)
        self.assertEqual(self.schema(), self.schema(self.files_db))
        self.assertEqual(sorted(self.records()), [1, 2, 3, 4])
        self.ok("verify")


    def test_triggers_on_one_table_fire_in_the_same_order_via_the_baseline_as_via_the_files(self):
        # SQLite fires a table's triggers newest first: a baseline that made
        # them in another order (by name) would change what they do.
        self.write_sql(5, "audit", """
            CREATE TABLE audit_log (id INTEGER PRIMARY KEY, who TEXT);
            CREATE TRIGGER zz_first_made AFTER INSERT ON tags BEGIN
                INSERT INTO audit_log (who) VALUES ('zz'); END;
            CREATE TRIGGER aa_made_next AFTER INSERT ON tags BEGIN
                INSERT INTO audit_log (who) VALUES ('aa'); END;""")
        self.ok("up", db=self.files_db)
        self.ok("baseline", "--to", "5")
        self.ok("up")
        fired = []
        for path in (self.files_db, self.db):
            conn = self.connect(path)
            conn.execute("INSERT INTO tags (id) VALUES (1)")
            fired.append([row[0] for row in conn.execute("SELECT who FROM audit_log ORDER BY id")])
        self.assertEqual(fired[0], ["aa", "zz"])
        self.assertEqual(fired[1], fired[0])


class DeletedFiles(BaselineTestCase):
    def setUp(self):
        super().setUp()
        self.old_db = os.path.join(self.tmp, "old.db")
        self.ok("up", db=self.old_db)  # migrated by the files, before the squash
        self.ok("baseline", "--to", "3")
        self.delete_files(1, 2, 3)
        self.write_sql(4, "tags", "CREATE TABLE tags (id INTEGER PRIMARY KEY);",
                       "DROP TABLE tags;")

    def test_old_database_shows_deleted_files_in_baseline_and_verify_passes(self):
        self.assertEqual(self.states(self.old_db),
                         {1: "in baseline", 2: "in baseline", 3: "in baseline", 4: "pending"})
        self.ok("up", db=self.old_db)
        self.assertEqual(self.states(self.old_db)[4], "applied")
        out, _ = self.ok("verify", db=self.old_db)
        self.assertIn("OK", out)
        out, _ = self.ok("status", db=self.old_db)
        self.assertIn("In baseline v1", out)
        self.assertNotIn("issing", out)
        self.assertNotIn("Drifted", out)

    def test_fresh_database_is_built_by_the_baseline_then_the_later_files(self):
        self.ok("up")
        self.ok("up", db=self.old_db)
        self.assertEqual(self.schema(), self.schema(self.old_db))
        self.assertEqual(self.states(), {3: "applied", 4: "applied"})
        self.assertEqual(self.records()[3][0], "(baseline)")
        self.ok("verify")
        self.ok("status", "--check")

    def test_an_edited_baseline_is_drift_for_databases_it_built(self):
        self.ok("up")
        with open(self.baseline_path(), "a", encoding="utf-8") as f:
            f.write("CREATE TABLE sneaky (x);\n")
        status, out, err = self.run_cli("verify")
        self.assertEqual(status, 1, out + err)
        self.assertIn("003-baseline.sql", out)
        self.assertIn("changed", out)
        status, out, err = self.run_cli("verify", db=self.old_db)  # not built by it
        self.assertEqual(status, 0, out + err)

    def test_down_into_the_baseline_without_its_files_is_refused(self):
        self.ok("up")
        self.ok("down")  # v4 has its file and a down
        status, out, err = self.run_cli("down")
        self.assertEqual(status, 1, out + err)
        self.assertIn("baseline", err)
        self.assertIn("nothing was rolled back", err)
        self.assertEqual(self.schema_version(), "3")

    def partial_db(self):
        """A database the files took to v1 only, before they were deleted."""
        partial = os.path.join(self.tmp, "partial.db")
        conn = sqlite3.connect(partial)
        conn.executescript("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);"
                           "CREATE TABLE metadata (key TEXT PRIMARY KEY, value TEXT);"
                           "INSERT INTO metadata VALUES ('schema_version', '1');"
                           "CREATE TABLE metadata_migrations (version INTEGER PRIMARY KEY, "
                           "name TEXT NOT NULL, checksum TEXT, applied_at TEXT, "
                           "duration_ms REAL);"
                           "INSERT INTO metadata_migrations VALUES (1, 'Users', 'x', NULL, 1);")
        conn.close()
        return partial

    def test_a_database_part_way_below_a_baseline_whose_files_are_gone_is_refused(self):
        partial = self.partial_db()
        before = file_sha256(partial)
        status, out, err = self.run_cli("up", db=partial)
        self.assertEqual(status, 1, out + err)
        self.assertIn("003-baseline.sql", err)
        self.assertIn("restore", err)
        self.assertEqual(file_sha256(partial), before)

    def test_a_database_below_a_baseline_with_no_file_above_it_is_refused_not_current(self):
        # The squash, right before any new migration: old.db went only to v1.
        os.remove(os.path.join(self.dir, "004-tags.sql"))
        partial = self.partial_db()
        before = file_sha256(partial)
        status, out, err = self.run_cli("up", db=partial)
        self.assertEqual(status, 1, out + err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn("003-baseline.sql", err)
        self.assertIn("nothing was applied", err)
        self.assertEqual(file_sha256(partial), before)
        self.assertEqual(self.run_cli("status", "--check", db=partial)[0], 1)

    def test_verify_flags_a_database_below_a_baseline_whose_files_are_gone(self):
        # up refuses it: verify, the CI gate, must not say OK.
        status, out, err = self.run_cli("verify", db=self.partial_db())
        self.assertEqual(status, 1, out + err)
        self.assertIn("003-baseline.sql", out)
        self.assertIn("restore", out)

    def test_up_to_a_version_inside_the_baseline_on_a_new_database_is_refused(self):
        # Only v1's file is gone: v2's alone would build posts without users.
        self.write_sql(2, "posts", "CREATE TABLE posts (id INTEGER PRIMARY KEY, "
                                   "user_id INTEGER REFERENCES users(id));",
                       "DROP TABLE posts;")
        for to in ("1", "2"):
            status, out, err = self.run_cli("up", "--to", to)
            self.assertEqual(status, 1, out + err)
            self.assertEqual(len(err.strip().splitlines()), 1, err)
            self.assertIn("003-baseline.sql", err)
            self.assertIn("v1", err)
            self.assertIn("nothing was applied", err)
            self.assertFalse(os.path.exists(self.db))
        self.ok("up", "--to", "3")
        self.assertEqual(self.states(), {2: "applied", 3: "applied", 4: "pending"})

    def test_new_numbers_after_the_baseline(self):
        self.delete_files(4)
        out, _ = self.ok("new", "next")
        self.assertTrue(out.strip().endswith("004-next.py"), out)


class Discovery(BaselineTestCase):
    def test_a_baseline_may_share_its_version_with_the_ordinary_file(self):
        self.ok("baseline", "--to", "3")
        found = sqlmigrate.Migrator(":memory:", self.dir).migrations
        self.assertEqual([m.filename for m in found],
                         ["001-users.sql", "002-posts.sql", "003-user-email.sql"])

    def test_two_baselines_of_one_version_are_an_error(self):
        self.ok("baseline", "--to", "3")
        self.write("0003-baseline.sql", "-- migrate:baseline\nCREATE TABLE x (y);\n")
        status, out, err = self.run_cli("status")
        self.assertEqual(status, 2, out + err)
        self.assertIn("0003-baseline.sql and 003-baseline.sql", err)

    def test_a_file_named_baseline_without_the_marker_is_an_ordinary_migration(self):
        # Projects have long named their first migration 001-baseline.sql.
        self.write("004-baseline.sql", "CREATE TABLE x (y);\n")
        found = sqlmigrate.Migrator(":memory:", self.dir).migrations
        self.assertEqual([m.filename for m in found][-1], "004-baseline.sql")
        self.assertFalse(found[-1].baseline)
        status, out, err = self.run_cli("up")
        self.assertEqual(status, 0, out + err)
        self.assertIn("x", [r[0] for r in sqlite3.connect(self.db).execute(
            "SELECT name FROM sqlite_master")])

    def test_an_ordinary_file_with_the_baseline_marker_is_refused(self):
        self.write("004-squashed.sql", "\n-- migrate:baseline\nCREATE TABLE x (y);\n")
        status, out, err = self.run_cli("verify")
        self.assertEqual(status, 1, out + err)
        self.assertIn("004-squashed.sql", out)
        self.assertIn("004-baseline.sql", out)
        status, out, err = self.run_cli("up")
        self.assertEqual(status, 1, out + err)
        self.assertIn("rename", err)


class FileAddedBelowABaseline(BaselineTestCase):
    """A file numbered below a baseline, added after the baseline was written
    (merged from a branch), is not in it: never skipped, never recorded."""

    def setUp(self):
        super().setUp()
        os.rename(os.path.join(self.dir, "003-user-email.sql"),
                  os.path.join(self.dir, "030-user-email.sql"))
        self.ok("baseline", "--to", "30")
        self.write_sql(25, "late", "CREATE TABLE late (x);", "DROP TABLE late;")

    def test_the_baseline_names_the_versions_it_holds(self):
        with open(self.baseline_path(30), encoding="utf-8") as f:
            self.assertEqual(f.read().splitlines()[:2],
                             ["-- migrate:baseline", "-- sqlmigrate baseline of: 1 2 30"])

    def test_up_on_a_new_database_refuses_naming_the_file_and_writes_nothing(self):
        status, out, err = self.run_cli("up")
        self.assertEqual(status, 1, out + err)
        self.assertIn("025-late.sql", err)
        self.assertIn("030-baseline.sql", err)
        self.assertIn("nothing was applied", err)
        self.assertNotIn("late", self.tables()) if os.path.exists(self.db) else None
        if os.path.exists(self.db):
            self.assertEqual(self.records(), {})

    def test_verify_status_and_test_flag_it(self):
        status, out, err = self.run_cli("verify")
        self.assertEqual(status, 1, out + err)
        self.assertIn("025-late.sql", out)
        self.assertIn("030-baseline.sql", out)
        self.assertEqual(self.run_cli("status", "--check")[0], 1)
        self.assertEqual(self.states()[25], "out-of-order")
        status, out, err = self.run_cli("test")
        self.assertEqual(status, 1, out + err)
        self.assertIn("025-late.sql", out, err)

    def test_renumbered_above_the_baseline_it_runs_after_it(self):
        os.rename(os.path.join(self.dir, "025-late.sql"), os.path.join(self.dir, "031-late.sql"))
        self.ok("up")
        self.assertIn("late", self.tables())
        self.assertEqual(sorted(self.records()), [1, 2, 30, 31])

    def test_a_baseline_without_the_list_still_stands_for_every_file_up_to_it(self):
        os.remove(os.path.join(self.dir, "025-late.sql"))
        path = self.baseline_path(30)
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines(True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(lines[0] + "".join(lines[2:]))  # as baselines were written before the list
        self.ok("up")
        self.assertEqual(sorted(self.records()), [1, 2, 30])
        self.ok("verify")


class BaselineLineEndings(BaselineTestCase):
    def test_a_baseline_saved_with_lone_cr_line_endings_or_a_bom_is_still_one(self):
        # As an .sql file is read everywhere: one BOM off, lone CRs as line ends.
        self.ok("baseline", "--to", "2")
        path = self.baseline_path(2)
        with open(path, "rb") as f:
            text = f.read()
        for saved in (text.replace(b"\n", b"\r"), b"\xef\xbb\xbf" + text):
            with self.subTest(saved=saved[:24]):
                with open(path, "wb") as f:
                    f.write(saved)
                self.delete_files(1, 2)
                fresh = os.path.join(self.tmp, "fresh%d.db" % len(saved))
                self.ok("up", "--to", "2", db=fresh)
                self.assertEqual(sorted(self.records(fresh)), [2])


class MarkToABaseline(BaselineTestCase):
    def test_mark_to_a_baseline_whose_files_are_gone_records_what_it_holds(self):
        self.ok("baseline", "--to", "2")
        self.delete_files(1, 2)
        conn = self.connect()
        conn.executescript(sqlmigrate._schema_sql(
            sqlmigrate.Migrator(":memory:", self.dir)._fresh_build(to=2), 2))
        out, err = self.ok("mark", "2")
        self.assertEqual(self.schema_version(), "2")
        self.assertEqual(sorted(self.records()), [2])
        self.ok("verify")
        self.ok("up")
        self.assertIn("emails", self.tables())
