"""`sqlmigrate test` / Migrator.test(): fresh build, round trips, data survival
and upgrading a copy of a real database, all on scratch copies."""

import json
import os
import shutil
import sqlite3
import tempfile

from tests.support import ROOT, TempDirTestCase, file_sha256, sqlmigrate


def _failures(result, version, check=None):
    entry = [m for m in result["migrations"] if m["version"] == version][0]
    return [f for f in entry["failures"] if check is None or f["check"] == check]


class CleanHistoryTest(TempDirTestCase):

    def write_clean_history(self):
        self.write_sql(1, "users", """
            CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE,
                                status TEXT NOT NULL CHECK (status IN ('active', 'gone')),
                                score REAL, avatar BLOB);
            """, "DROP TABLE users;")
        self.write_sql(2, "posts", """
            CREATE TABLE posts (id INTEGER PRIMARY KEY,
                                user_id INTEGER NOT NULL REFERENCES users(id),
                                title TEXT NOT NULL CHECK (length(title) > 0));
            CREATE INDEX idx_posts_user ON posts(user_id);
            """, "DROP INDEX idx_posts_user; DROP TABLE posts;")
        self.write("003-add-post-body.py", '''
            import sqlmigrate

            def up(db):
                db.execute("ALTER TABLE posts ADD COLUMN body TEXT")

            def down(db):
                sqlmigrate.drop_column(db, "posts", "body")
            ''')
        self.write_sql(4, "tags", "CREATE TABLE tags (name TEXT PRIMARY KEY)%s;" % (
            " WITHOUT ROWID" if sqlite3.sqlite_version_info >= (3, 8, 2) else ""))

    def test_clean_history_passes_every_check_and_writes_nothing(self):
        self.write_clean_history()
        before = {name: (file_sha256(os.path.join(self.dir, name)),
                         os.stat(os.path.join(self.dir, name)).st_mtime_ns)
                  for name in os.listdir(self.dir)}
        result = sqlmigrate.Migrator(self.db, self.dir).test()
        self.assertTrue(result["ok"], result)
        self.assertEqual([m["version"] for m in result["migrations"]], [1, 2, 3, 4])
        checks = {m["version"]: m["checks"] for m in result["migrations"]}
        self.assertEqual(checks[1], {"up": "ok", "round-trip": "ok", "data": "ok"})
        self.assertEqual(checks[4]["round-trip"], "no down")
        self.assertEqual(result["fresh_build"], {"integrity": "ok", "foreign-keys": "ok"})
        # Rows were generated for every table, CHECK, UNIQUE and the foreign key respected.
        self.assertEqual(result["notes"], [])
        self.assertEqual(sorted(result["rows_generated"]), ["posts", "tags", "users"])
        self.assertTrue(all(n == 3 for n in result["rows_generated"].values()), result)
        self.assertFalse(os.path.exists(self.db))
        self.assertEqual(before, {name: (file_sha256(os.path.join(self.dir, name)),
                                         os.stat(os.path.join(self.dir, name)).st_mtime_ns)
                                  for name in os.listdir(self.dir)})

    def test_cli_clean_history_exits_0_with_a_summary_and_json(self):
        self.write_clean_history()
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "test")
        self.assertEqual(status, 0, out + err)
        self.assertIn("v1 Users: ok", out)
        self.assertIn("OK", out)
        status, out, err = self.cli("--dir", self.dir, "test", "--json")  # no --db needed
        self.assertEqual(status, 0, out + err)
        data = json.loads(out)
        self.assertTrue(data["ok"])
        self.assertEqual(data["migrations"][1]["name"], "Posts")
        self.assertFalse(os.path.exists(self.db))

    def test_a_table_no_row_can_be_generated_for_is_a_note_not_a_failure(self):
        self.write_sql(1, "odd", "CREATE TABLE odd (x INTEGER NOT NULL CHECK (x < 0 AND x > 0));")
        result = sqlmigrate.Migrator(self.db, self.dir).test()
        self.assertTrue(result["ok"], result)
        self.assertEqual(len(result["notes"]), 1)
        self.assertIn("odd", result["notes"][0])


class BundledMigrationsTest(TempDirTestCase):
    def test_the_bundled_migrations_pass_every_check_quietly(self):
        # 005's down rebuilds the table with the column back in its place, and
        # a rebuild's quoted name ("ollama_servers") is no schema difference.
        status, out, err = self.cli("--dir", os.path.join(ROOT, "migrations"), "test")
        self.assertEqual(status, 0, out + err)
        self.assertIn("OK: every check passed", out)
        self.assertEqual(err, "")  # the helpers' INFO lines would repeat at every run


class RoundTripTest(TempDirTestCase):

    def test_a_down_that_leaves_a_table_behind_fails_naming_it_with_the_diff(self):
        self.write_sql(1, "base", "CREATE TABLE base (id INTEGER PRIMARY KEY);", "DROP TABLE base;")
        self.write_sql(2, "two-tables",
                       "CREATE TABLE kept (a TEXT); CREATE TABLE left_over (b TEXT);",
                       "DROP TABLE kept;")
        self.write_sql(3, "later", "CREATE TABLE later (c TEXT);", "DROP TABLE later;")
        result = sqlmigrate.Migrator(self.db, self.dir).test()
        self.assertFalse(result["ok"])
        [failure] = _failures(result, 2)
        self.assertEqual(failure["check"], "round-trip")
        self.assertEqual(failure["diff"], [{"change": "added", "type": "table", "name": "left_over",
                                            "before": None,
                                            "after": "CREATE TABLE left_over (b TEXT)"}])
        # The migrations after it are still checked (on a rebuilt scratch copy).
        self.assertEqual(_failures(result, 1) + _failures(result, 3), [])
        self.assertEqual([m["checks"]["up"] for m in result["migrations"]], ["ok"] * 3)

    def test_cli_shows_the_diff_and_exits_1(self):
        self.write_sql(1, "two-tables",
                       "CREATE TABLE kept (a TEXT); CREATE TABLE left_over (b TEXT);",
                       "DROP TABLE kept;")
        status, out, err = self.cli("--dir", self.dir, "test")
        self.assertEqual(status, 1, out + err)
        self.assertIn("v1 Two tables: FAILED round-trip", out)
        self.assertIn("left_over", out)
        self.assertIn("CREATE TABLE left_over (b TEXT)", out)
        status, out, err = self.cli("--dir", self.dir, "test", "--json")
        self.assertEqual(status, 1)
        self.assertFalse(json.loads(out)["ok"])

    def test_a_down_that_does_not_restore_an_index_fails(self):
        self.write_sql(1, "t", "CREATE TABLE t (a TEXT); CREATE INDEX idx_t_a ON t(a);",
                       "DROP TABLE t;")
        self.write_sql(2, "drop-index", "DROP INDEX idx_t_a;", "SELECT 1;")
        result = sqlmigrate.Migrator(self.db, self.dir).test()
        self.assertFalse(result["ok"])
        [failure] = _failures(result, 2)
        self.assertEqual(failure["check"], "round-trip")
        self.assertEqual(failure["diff"], [{"change": "removed", "type": "index", "name": "idx_t_a",
                                            "before": "CREATE INDEX idx_t_a ON t(a)",
                                            "after": None}])

    def test_a_down_that_does_not_restore_user_version_fails(self):
        self.write_sql(1, "uv", "PRAGMA user_version = 7;", "SELECT 1;")
        result = sqlmigrate.Migrator(self.db, self.dir).test()
        [failure] = _failures(result, 1)
        self.assertEqual(failure["diff"], [{"change": "changed", "type": "pragma",
                                            "name": "user_version", "before": 0, "after": 7}])

    def test_a_down_that_remakes_a_tables_triggers_in_another_order_fails(self):
        # SQLite fires a table's triggers newest first: the same triggers made
        # in another order do something else.
        self.write_sql(1, "log", """
            CREATE TABLE t (a TEXT); CREATE TABLE log (who TEXT);
            CREATE TRIGGER first_made AFTER INSERT ON t BEGIN INSERT INTO log VALUES ('1'); END;
            CREATE TRIGGER next_made AFTER INSERT ON t BEGIN INSERT INTO log VALUES ('2'); END;
            """, "DROP TABLE t; DROP TABLE log;")
        self.write_sql(2, "edit-trigger", "DROP TRIGGER first_made;", """
            CREATE TRIGGER first_made AFTER INSERT ON t BEGIN INSERT INTO log VALUES ('1'); END;
            """)
        result = sqlmigrate.Migrator(self.db, self.dir).test()
        self.assertFalse(result["ok"])
        [failure] = _failures(result, 2)
        self.assertEqual(failure["check"], "round-trip")
        self.assertEqual(failure["diff"], [{"change": "changed", "type": "trigger order",
                                            "name": "t", "before": "first_made, next_made",
                                            "after": "next_made, first_made"}])

    def test_a_failing_up_is_reported_and_the_rest_not_run(self):
        self.write_sql(1, "t", "CREATE TABLE t (a TEXT);")
        self.write_sql(2, "broken", "INSERT INTO nowhere VALUES (1);")
        self.write_sql(3, "later", "CREATE TABLE later (c TEXT);")
        result = sqlmigrate.Migrator(self.db, self.dir).test()
        self.assertFalse(result["ok"])
        [failure] = _failures(result, 2)
        self.assertEqual(failure["check"], "up")
        self.assertIn("nowhere", failure["message"])
        self.assertEqual(result["migrations"][2]["checks"]["up"], "not run")

    def test_cli_indents_every_line_of_a_failure_under_its_migration(self):
        # A failure's second line ("  statement: ...") was printed at the
        # migrations' indent, reading as a line of the list.
        self.write_sql(1, "t", "CREATE TABLE t (a TEXT);")
        self.write_sql(2, "broken", "INSERT INTO nowhere VALUES (1);")
        status, out, err = self.cli("--dir", self.dir, "test")
        self.assertEqual(status, 1, out + err)
        lines = out.splitlines()
        first = [i for i, line in enumerate(lines) if line.lstrip().startswith("up: ")][0]
        statement = [line for line in lines if "statement: INSERT INTO nowhere" in line][0]
        indent = len(lines[first]) - len(lines[first].lstrip())
        self.assertGreater(len(statement) - len(statement.lstrip()), indent, out)


class ParentsBeforeChildrenTest(TempDirTestCase):

    def test_rows_go_into_parent_tables_first_so_a_child_gets_its_rows(self):
        # "posts" sorts before "users", whose rows it needs.
        self.write_sql(1, "init", "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);\n"
                                  "CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER "
                                  "NOT NULL REFERENCES users(id));", "DROP TABLE posts;\n"
                                  "DROP TABLE users;")
        result = sqlmigrate.Migrator(self.db, self.dir).test()
        self.assertTrue(result["ok"], result)
        self.assertEqual(result["rows_generated"], {"posts": 3, "users": 3})

    def test_a_child_naming_its_parent_in_another_case_gets_the_parents_key(self):
        # REFERENCES users, no column: the parent's PRIMARY KEY (a TEXT one,
        # so its rowids would not do), found whatever case the name is in.
        self.write_sql(1, "init", "CREATE TABLE Users (code TEXT PRIMARY KEY, name TEXT);\n"
                                  "CREATE TABLE posts (id INTEGER PRIMARY KEY, user_code TEXT "
                                  "NOT NULL REFERENCES users);", "DROP TABLE posts;\n"
                                  "DROP TABLE Users;")
        result = sqlmigrate.Migrator(self.db, self.dir).test()
        self.assertTrue(result["ok"], result)
        self.assertEqual(result["rows_generated"], {"posts": 3, "Users": 3})

    def test_a_migration_that_points_rows_at_an_empty_parent_fails(self):
        self.write_sql(1, "init", "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);\n"
                                  "CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER "
                                  "NOT NULL REFERENCES users(id));")
        self.write_sql(2, "accounts", "CREATE TABLE accounts (id INTEGER PRIMARY KEY);\n"
                                      "CREATE TABLE posts_new (id INTEGER PRIMARY KEY, user_id "
                                      "INTEGER NOT NULL REFERENCES accounts(id));\n"
                                      "INSERT INTO posts_new SELECT id, user_id FROM posts;\n"
                                      "DROP TABLE posts;\n"
                                      "ALTER TABLE posts_new RENAME TO posts;")
        result = sqlmigrate.Migrator(self.db, self.dir).test()
        self.assertFalse(result["ok"])
        self.assertEqual(result["migrations"][1]["checks"]["up"], "failed", result)


class NothingOutsideTheScratchCopyTest(TempDirTestCase):

    def test_a_migration_that_attaches_a_file_fails_in_test_and_lint_and_writes_nothing(self):
        archive = os.path.join(self.tmp, "archive.db")
        self.write_sql(1, "t", "CREATE TABLE t (a);", "DROP TABLE t;")
        self.write("002-archive.sql", "-- migrate:up transaction:false\n"
                   "ATTACH '%s' AS ar;\nCREATE TABLE ar.old (x);\n"
                   "INSERT INTO ar.old VALUES (42);\nDETACH ar;\n" % archive)
        result = sqlmigrate.Migrator(self.db, self.dir).test()
        self.assertFalse(result["ok"])
        [failure] = _failures(result, 2)
        self.assertIn("ATTACH %s" % archive, failure["message"])
        findings = sqlmigrate.Migrator(self.db, self.dir).lint()
        self.assertIn("ATTACH %s" % archive, " ".join(f.message for f in findings))
        self.assertEqual(sorted(os.listdir(self.tmp)), ["migrations"])


class DataSurvivesTest(TempDirTestCase):

    def test_a_rebuild_that_drops_rows_fails_data_survives(self):
        self.write_sql(1, "t", "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL);")
        self.write_sql(2, "rebuild", """
            CREATE TABLE t_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL, extra TEXT);
            INSERT INTO t_new (id, name) SELECT id, name FROM t WHERE id > 1;
            DROP TABLE t;
            ALTER TABLE t_new RENAME TO t;
            """)
        result = sqlmigrate.Migrator(self.db, self.dir).test()
        self.assertFalse(result["ok"])
        [failure] = _failures(result, 2)
        self.assertEqual(failure["check"], "data")
        self.assertEqual(failure["table"], "t")
        self.assertIn("1 of 3", failure["message"])

    def test_a_rebuild_that_changes_values_fails_and_one_that_keeps_them_passes(self):
        self.write_sql(1, "t", "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, gone TEXT);")
        self.write("002-rebuild.py", '''
            import sqlmigrate

            def up(db):
                sqlmigrate.drop_column(db, "t", "gone")
            ''')
        self.assertTrue(sqlmigrate.Migrator(self.db, self.dir).test()["ok"])
        self.write_sql(3, "mangle", """
            CREATE TABLE t_new (id INTEGER PRIMARY KEY, name TEXT);
            INSERT INTO t_new SELECT id, upper(name) || '!' FROM t;
            DROP TABLE t;
            ALTER TABLE t_new RENAME TO t;
            """)
        result = sqlmigrate.Migrator(self.db, self.dir).test()
        [failure] = _failures(result, 3)
        self.assertEqual((failure["check"], failure["table"]), ("data", "t"))

    def test_a_table_named_like_a_shadow_table_gets_rows_and_the_real_shadows_none(self):
        # "posts_tags" beside the fts4 table "posts" is the user's own table;
        # "posts_content" is one the module writes.
        self.write_sql(1, "t", "CREATE VIRTUAL TABLE posts USING fts4(body);\n"
                               "CREATE TABLE posts_tags (tag TEXT NOT NULL);")
        result = sqlmigrate.Migrator(self.db, self.dir).test()
        self.assertTrue(result["ok"], result)
        self.assertEqual(result["rows_generated"], {"posts_tags": 3})

    def test_dropping_a_table_is_not_a_loss_of_rows(self):
        self.write_sql(1, "t", "CREATE TABLE t (a TEXT);")
        self.write_sql(2, "drop", "DROP TABLE t;", "CREATE TABLE t (a TEXT);")
        self.assertTrue(sqlmigrate.Migrator(self.db, self.dir).test()["ok"])


class FromCopyTest(TempDirTestCase):

    def make_prod(self):
        self.write_sql(1, "schema", """
            CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT);
            CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id));
            CREATE TABLE audit (id INTEGER PRIMARY KEY, what TEXT);
            CREATE TABLE other (id INTEGER PRIMARY KEY);
            CREATE TRIGGER parent_gone AFTER DELETE ON parent BEGIN DELETE FROM audit; END;
            """)
        sqlmigrate.Migrator(self.db, self.dir).up()
        conn = self.connect()
        conn.executescript("""
            INSERT INTO parent VALUES (1, 'a'), (2, 'b');
            INSERT INTO child VALUES (1, 1), (2, 2);
            INSERT INTO audit VALUES (1, 'x');
            INSERT INTO other VALUES (1), (2), (3);
            """)
        conn.close()
        return file_sha256(self.db), os.stat(self.db).st_mtime_ns

    def test_from_applies_the_pending_migrations_to_a_copy_and_leaves_the_file_alone(self):
        original = self.make_prod()
        self.write_sql(2, "more", "ALTER TABLE parent ADD COLUMN note TEXT;")
        result = sqlmigrate.Migrator(self.db, self.dir).test(source=self.db)
        self.assertTrue(result["ok"], result)
        self.assertEqual(result["from"]["version"], 1)
        self.assertEqual([m["version"] for m in result["from"]["migrations"]], [2])
        self.assertEqual(result["from"]["checks"], {"integrity": "ok", "foreign-keys": "ok",
                                                    "row-counts": "ok"})
        # audit counts as touched: parent's trigger writes it.
        self.assertEqual(result["from"]["untouched"], ["child", "other"])
        self.assertEqual(original, (file_sha256(self.db), os.stat(self.db).st_mtime_ns))
        self.assertEqual(sqlmigrate.Migrator(self.db, self.dir).current_version, 1)

    def test_from_a_callers_connection_without_the_backup_api_loses_no_commit_of_others(self):
        # Python 3.6 and PyPy have no backup API.  Closing our descriptor of
        # the copied file dropped every POSIX lock this process holds on it,
        # the caller's connection's too: another process closing its
        # connection then deleted the WAL under it, and the two went on
        # writing to different WALs: a commit was lost.
        self.make_prod()
        import subprocess
        import sys
        import textwrap
        code = textwrap.dedent("""
            import sqlite3, subprocess, sys
            import sqlmigrate
            sqlmigrate._HAS_BACKUP_API = False  # the path Python 3.6 and PyPy take

            def other(id):  # another process: opens, commits, closes (the last to)
                subprocess.run([sys.executable, "-c", "import sqlite3, sys; "
                                "c = sqlite3.connect(sys.argv[1], isolation_level=None); "
                                "c.execute('INSERT INTO other VALUES (?)', (sys.argv[2],)); "
                                "c.close()", sys.argv[1], str(id)], check=True)

            conn = sqlite3.connect(sys.argv[1], isolation_level=None)
            # (fetchall: PyPy holds a statement's lock until it is read out.)
            conn.execute("PRAGMA journal_mode = WAL").fetchall()
            conn.execute("INSERT INTO other VALUES (10)").fetchall()
            print(sqlmigrate.Migrator(conn, sys.argv[2]).test(source=conn)["ok"])
            other(11)
            conn.execute("INSERT INTO other VALUES (12)").fetchall()
            other(13)
            conn.close()
            """)
        proc = subprocess.run([sys.executable, "-c", code, self.db, self.dir], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
                              universal_newlines=True)
        self.assertEqual((proc.returncode, proc.stdout), (0, "True\n"), proc.stderr)
        self.assertEqual([row[0] for row in self.connect().execute(
            "SELECT id FROM other WHERE id >= 10 ORDER BY id")], [10, 11, 12, 13])

    def test_from_with_a_pending_migration_that_violates_a_foreign_key_fails(self):
        original = self.make_prod()
        self.write_sql(2, "orphans", "DELETE FROM parent WHERE id = 1;")
        status, out, err = self.cli("--dir", self.dir, "test", "--from", self.db)
        self.assertEqual(status, 1, out + err)
        self.assertIn("foreign key", out)
        self.assertIn("child", out)
        self.assertEqual(original, (file_sha256(self.db), os.stat(self.db).st_mtime_ns))
        status, out, err = self.cli("--dir", self.dir, "test", "--from", self.db, "--json")
        data = json.loads(out)
        self.assertFalse(data["from"]["ok"])
        self.assertEqual(data["from"]["migrations"][0]["failures"][0]["check"], "up")

    def test_from_fails_when_an_untouched_table_changes_its_row_count(self):
        self.make_prod()
        # Tables a migration names (or a trigger of them writes) are touched;
        # this one names `other` only when it really runs (not in the dry
        # run that collects the names): the row count is the safety net.
        self.write("002-prune.py", '''
            runs = []

            def up(db):
                runs.append(1)  # the fresh build's up, --from's dry run, its real run
                if len(runs) == 3:
                    db.execute("DELETE FROM other WHERE id = 1")
            ''')
        result = sqlmigrate.Migrator(self.db, self.dir).test(source=self.db)
        self.assertFalse(result["ok"])
        self.assertEqual(result["from"]["checks"]["row-counts"], "failed", result["from"])
        [failure] = result["from"]["failures"]
        self.assertEqual((failure["check"], failure["table"]), ("row-counts", "other"))

    def test_from_a_file_that_is_not_a_database_exits_1_and_leaves_it_alone(self):
        self.write_sql(1, "t", "CREATE TABLE t (a TEXT);")
        path = self.write("notes.db", "this is not a database\n" * 100, directory=self.tmp)
        original = file_sha256(path), os.stat(path).st_mtime_ns
        status, out, err = self.cli("--dir", self.dir, "test", "--from", path)
        self.assertEqual(status, 1, out + err)
        self.assertIn("not an SQLite database", err)
        self.assertIn("notes.db", err)
        self.assertEqual(original, (file_sha256(path), os.stat(path).st_mtime_ns))
        self.assertEqual(sorted(os.listdir(self.tmp)), ["migrations", "notes.db"])

    def test_from_a_locked_database_exits_1_and_leaves_it_alone(self):
        original = self.make_prod()
        holder = self.connect()
        holder.execute("BEGIN EXCLUSIVE")
        try:
            status, out, err = self.cli("--dir", self.dir, "--busy-timeout", "300", "test",
                                        "--from", self.db)
        finally:
            holder.execute("ROLLBACK")
        self.assertEqual(status, 1, out + err)
        self.assertIn("locked", err)
        self.assertEqual(original, (file_sha256(self.db), os.stat(self.db).st_mtime_ns))

    def test_from_a_missing_file_is_a_bad_request(self):
        self.write_sql(1, "t", "CREATE TABLE t (a TEXT);")
        status, out, err = self.cli("--dir", self.dir, "test", "--from", self.db)
        self.assertEqual(status, 2, out + err)
        self.assertIn("app.db", err)
        self.assertFalse(os.path.exists(self.db))


class BaselineTest(TempDirTestCase):
    def setUp(self):
        super().setUp()
        for i in (1, 2, 3):
            self.write_sql(i, "t%d" % i, "CREATE TABLE t%d (x);" % i, "DROP TABLE t%d;" % i)

    def baseline_entries(self, result):
        return [e for e in result["migrations"] if e.get("baseline")]

    def test_a_baseline_that_builds_another_schema_than_its_files_fails(self):
        self.assertEqual(self.cli("--dir", self.dir, "baseline", "--to", "2")[0], 0)
        result = sqlmigrate.Migrator(":memory:", self.dir).test()
        self.assertTrue(result["ok"], result)
        self.assertEqual([e["file"] for e in self.baseline_entries(result)],
                         ["002-baseline.sql"])
        path = os.path.join(self.dir, "002-baseline.sql")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        self.write("002-baseline.sql", text.replace("CREATE TABLE t2 (x)", "CREATE TABLE t2 (x, extra)"))
        status, out, err = self.cli("--dir", self.dir, "test")
        self.assertEqual(status, 1, out + err)
        self.assertIn("002-baseline.sql", out)
        self.assertIn("t2", out)
        result = sqlmigrate.Migrator(":memory:", self.dir).test()
        failures = self.baseline_entries(result)[0]["failures"]
        self.assertEqual([f["check"] for f in failures], ["baseline"])
        self.assertEqual([d["name"] for d in failures[0]["diff"]], ["t2"])

    def test_after_the_squash_test_starts_from_the_baseline_and_passes(self):
        self.assertEqual(self.cli("--dir", self.dir, "baseline", "--to", "2")[0], 0)
        os.remove(os.path.join(self.dir, "001-t1.sql"))
        os.remove(os.path.join(self.dir, "002-t2.sql"))
        status, out, err = self.cli("--dir", self.dir, "test")
        self.assertEqual(status, 0, out + err)
        self.assertIn("002-baseline.sql", out)
        result = sqlmigrate.Migrator(":memory:", self.dir).test()
        self.assertEqual([(e["version"], e["file"]) for e in result["migrations"]],
                         [(2, "002-baseline.sql"), (3, "003-t3.sql")])
        self.assertEqual(result["migrations"][1]["checks"]["round-trip"], "ok")
        # v3's down dropping a baseline table is still caught.
        self.write_sql(3, "t3", "CREATE TABLE t3 (x);", "DROP TABLE t3; DROP TABLE t1;")
        self.assertEqual(_failures(sqlmigrate.Migrator(":memory:", self.dir).test(), 3)[0]["check"],
                         "round-trip")

    def test_a_baseline_whose_every_file_is_gone_passes(self):
        # Right after the squash, before any new migration: only the baseline.
        self.assertEqual(self.cli("--dir", self.dir, "baseline", "--to", "3")[0], 0)
        for i in (1, 2, 3):
            os.remove(os.path.join(self.dir, "%03d-t%d.sql" % (i, i)))
        status, out, err = self.cli("--dir", self.dir, "test")
        self.assertEqual(status, 0, out + err)
        result = sqlmigrate.Migrator(":memory:", self.dir).test()
        self.assertEqual([(e["file"], e["checks"]["up"]) for e in result["migrations"]],
                         [("003-baseline.sql", "ok")])


class ValuesSurviveEveryStepTest(TempDirTestCase):
    """The generated rows' values are compared after each up and each down,
    not only when a table's definition or row count changes."""

    def test_a_down_that_nulls_columns_fails_the_data_check(self):
        self.write_sql(1, "users",
                       "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, bio TEXT);",
                       "DROP TABLE users;")
        self.write_sql(2, "index", "CREATE INDEX users_email ON users(email);",
                       "DROP INDEX users_email; UPDATE users SET email = NULL, bio = NULL;")
        result = sqlmigrate.Migrator(self.db, self.dir).test()
        self.assertFalse(result["ok"])
        [failure] = _failures(result, 2)
        self.assertEqual((failure["check"], failure["table"]), ("data", "users"))
        self.assertIn("down", failure["message"])
        self.assertIn("3 of 3", failure["message"])
        self.assertEqual(_failures(result, 1), [])

    def test_an_up_that_deletes_rows_and_reinserts_bare_ids_fails_the_data_check(self):
        self.write_sql(1, "users",
                       "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, bio TEXT);",
                       "DROP TABLE users;")
        self.write_sql(2, "logs", """
            CREATE TABLE logs (id INTEGER PRIMARY KEY, msg TEXT);
            DELETE FROM users;
            INSERT INTO users (id) VALUES (1), (2), (3);
            """, "DROP TABLE logs;")
        result = sqlmigrate.Migrator(self.db, self.dir).test()
        self.assertFalse(result["ok"])
        [failure] = _failures(result, 2)
        self.assertEqual((failure["check"], failure["table"]), ("data", "users"))
        self.assertIn("3 of 3", failure["message"])

    def test_an_up_that_adds_a_column_and_a_down_that_drops_it_keep_the_values(self):
        self.write_sql(1, "t", "CREATE TABLE t (a TEXT, b INTEGER) ;")
        self.write("002-column.py", '''
            import sqlmigrate

            def up(db):
                db.execute("ALTER TABLE t ADD COLUMN c TEXT")
                db.execute("UPDATE t SET c = 'x'")

            def down(db):
                sqlmigrate.drop_column(db, "t", "c")
            ''')
        result = sqlmigrate.Migrator(self.db, self.dir).test()
        self.assertTrue(result["ok"], result)


class QuotedStringsRoundTripTest(TempDirTestCase):

    def test_a_down_that_changes_the_case_of_double_quoted_literals_fails_the_round_trip(self):
        self.write_sql(1, "a", 'CREATE TABLE t (id INTEGER PRIMARY KEY, status TEXT NOT NULL '
                       'DEFAULT "Active" CHECK (status IN ("Active", "Done")));')
        self.write("002-b.py", '''
            import sqlmigrate

            def up(db):
                db.execute("ALTER TABLE t ADD COLUMN note TEXT")

            def down(db):
                sqlmigrate.rebuild_table(db, "t", create_sql='CREATE TABLE t (id INTEGER PRIMARY '
                    'KEY, status TEXT NOT NULL DEFAULT "active" '
                    'CHECK (status IN ("active", "done")))')
            ''')
        result = sqlmigrate.Migrator(self.db, self.dir).test()
        self.assertFalse(result["ok"])
        [failure] = _failures(result, 2, "round-trip")
        self.assertEqual([d["name"] for d in failure["diff"]], ["t"])

    def test_quoting_and_keyword_case_are_still_no_difference(self):
        self.write_sql(1, "a", 'CREATE TABLE Things (id INTEGER PRIMARY KEY, Name TEXT '
                       'DEFAULT "Active");')
        self.write("002-b.py", '''
            import sqlmigrate

            def up(db):
                db.execute("ALTER TABLE Things ADD COLUMN note TEXT")

            def down(db):
                sqlmigrate.rebuild_table(db, "Things", create_sql='create table "Things" '
                    '("id" integer primary key, "Name" text default "Active")')
            ''')
        result = sqlmigrate.Migrator(self.db, self.dir).test()
        self.assertTrue(result["ok"], result)


class FromSourceTest(TempDirTestCase):

    def test_from_counts_a_table_a_trigger_of_a_touched_table_writes_as_touched(self):
        self.write_sql(1, "a", """
            CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT);
            CREATE TABLE audit (id INTEGER PRIMARY KEY, what TEXT);
            CREATE TABLE audit2 (id INTEGER PRIMARY KEY, what TEXT);
            CREATE TABLE other (id INTEGER PRIMARY KEY);
            CREATE TRIGGER items_ai AFTER INSERT ON items
                BEGIN INSERT INTO audit(what) VALUES ('added ' || new.name); END;
            CREATE TRIGGER audit_ai AFTER INSERT ON audit
                BEGIN INSERT INTO audit2(what) VALUES (new.what); END;
            """)
        sqlmigrate.Migrator(self.db, self.dir).up()
        self.write_sql(2, "seed", "INSERT INTO items(name) VALUES ('default');",
                       "DELETE FROM items WHERE name = 'default';")
        result = sqlmigrate.Migrator(self.db, self.dir).test(source=self.db)
        self.assertTrue(result["ok"], result)
        self.assertEqual(result["from"]["untouched"], ["other"])

    def make_hot_journal(self, path):
        """A real crashed writer: a child process in rollback-journal mode
        writes more than its page cache holds (so pages reach the file) and
        is killed with SIGKILL mid-transaction."""
        import signal
        import subprocess
        import sys
        child = subprocess.Popen([sys.executable, "-c", """if True:
            import os, signal, sqlite3, sys
            c = sqlite3.connect(sys.argv[1], isolation_level=None)
            c.execute("PRAGMA journal_mode = DELETE").fetchall()  # (PyPy: read to the end)
            c.execute("PRAGMA cache_size = 5")
            c.execute("CREATE TABLE t (x)")
            c.execute("BEGIN")  # (no WITH RECURSIVE: SQLite 3.7.17 lacks it)
            c.executemany("INSERT INTO t VALUES (randomblob(1000))", [()] * 300)
            c.execute("COMMIT")
            c.execute("BEGIN")
            c.execute("UPDATE t SET x = randomblob(1000)")
            os.kill(os.getpid(), signal.SIGKILL)
            """, path])
        self.assertEqual(child.wait(), -signal.SIGKILL)
        self.assertGreater(os.path.getsize(path + "-journal"), 0)

    def test_from_a_source_with_a_hot_journal_rolls_it_back_in_a_copy_never_in_the_source(self):
        self.write_sql(1, "n", "CREATE TABLE n (x);", "DROP TABLE n;")
        source = os.path.join(self.tmp, "src.db")
        self.make_hot_journal(source)
        files = lambda: dict((p, (file_sha256(p), os.stat(p).st_mtime_ns))  # noqa: E731
                             for p in (source, source + "-journal"))
        before = files()
        # What SQLite itself makes of the crash: a copy of both files, rolled
        # back by an ordinary read-write open (on PyPy the child's journal
        # can hold less, and the rollback then leaves no table t).
        reference = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, reference)
        for suffix in ("-journal", ""):
            shutil.copyfile(source + suffix, os.path.join(reference, "r.db" + suffix))
        conn = sqlite3.connect(os.path.join(reference, "r.db"))
        tables = [row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        conn.close()
        status, out, err = self.cli("--dir", self.dir, "test", "--from", source, "--json")
        self.assertEqual(status, 0, out + err)
        data = json.loads(out)
        self.assertEqual(data["from"]["version"], 0)
        self.assertEqual(data["from"]["untouched"], tables)
        self.assertEqual(before, files())
        self.assertEqual(sorted(os.listdir(self.tmp)), ["migrations", "src.db", "src.db-journal"])

    def test_from_a_symlink_to_a_source_with_a_hot_journal_copies_the_journal_beside_it(self):
        self.write_sql(1, "n", "CREATE TABLE n (x);", "DROP TABLE n;")
        source = os.path.join(self.tmp, "src.db")
        self.make_hot_journal(source)
        link = os.path.join(self.tmp, "link.db")
        os.symlink(source, link)
        before = dict((p, file_sha256(p)) for p in (source, source + "-journal"))
        status, out, err = self.cli("--dir", self.dir, "test", "--from", link, "--json")
        self.assertEqual(status, 0, out + err)
        self.assertEqual(json.loads(out)["from"]["version"], 0)
        self.assertEqual(before, dict((p, file_sha256(p)) for p in before))

    def test_scratch_copy_opens_the_source_with_sqlite3_when_the_driver_is_a_server_one(self):
        import types
        dialed = []
        driver = types.ModuleType("dqlitedbapi")  # a stand-in server driver module

        class Error(Exception):
            pass

        def connect(*args, **kwargs):
            dialed.append(args)
            raise Error("dialed %r as a server" % (args,))
        driver.Error, driver.connect = Error, connect
        saved = sqlmigrate._OPENER, sqlmigrate._DB.Error, sqlmigrate._DB.OperationalError

        def restore():
            sqlmigrate._OPENER, sqlmigrate._DB.Error, sqlmigrate._DB.OperationalError = saved
        self.addCleanup(restore)
        conn = self.connect()
        conn.execute("CREATE TABLE prod (y)")
        conn.execute("INSERT INTO prod VALUES (42)")
        conn.close()
        sqlmigrate._OPENER = sqlmigrate._Opener(driver)
        with sqlmigrate._scratch_copy(self.db, 5.0) as copy:
            self.assertEqual(copy.execute("SELECT y FROM prod").fetchall(), [(42,)])
        self.assertEqual(dialed, [])

    def test_a_source_over_the_memory_limit_is_copied_to_a_temporary_file(self):
        # (The limit, 64 MiB, lowered here rather than writing such a file.)
        conn = self.connect()
        conn.execute("CREATE TABLE prod (y)")
        conn.execute("INSERT INTO prod VALUES (42)")
        conn.commit()
        limit = sqlmigrate._MEMORY_COPY_BYTES
        self.addCleanup(setattr, sqlmigrate, "_MEMORY_COPY_BYTES", limit)
        sqlmigrate._MEMORY_COPY_BYTES = 1024
        for source in (self.db, conn):
            with sqlmigrate._scratch_copy(source, 5.0) as copy:
                self.assertEqual(copy.execute("SELECT y FROM prod").fetchall(), [(42,)])
                where = copy.execute("PRAGMA database_list").fetchall()[0][2]
                self.assertTrue(where and os.path.exists(where), where)
                self.assertNotEqual(os.path.realpath(where), os.path.realpath(self.db))
            self.assertFalse(os.path.exists(where))
        sqlmigrate._MEMORY_COPY_BYTES = limit
        if sqlmigrate._HAS_BACKUP_API:  # else (3.6, PyPy) every copy is a file copy
            with sqlmigrate._scratch_copy(self.db, 5.0) as copy:  # a small one: in memory
                self.assertEqual(copy.execute("PRAGMA database_list").fetchall()[0][2], "")


class TestWithAConnectionTest(TempDirTestCase):

    def test_test_with_a_connection_as_source_checks_a_copy_of_it(self):
        self.write_sql(1, "t", "CREATE TABLE t (a TEXT);", "DROP TABLE t;")
        sqlmigrate.Migrator(self.db, self.dir).up()
        self.write_sql(2, "u", "CREATE TABLE u (b TEXT);", "DROP TABLE u;")
        conn = self.connect()
        conn.execute("INSERT INTO t VALUES ('kept')")
        result = sqlmigrate.Migrator(self.db, self.dir).test(source=conn)
        self.assertTrue(result["ok"], result)
        self.assertEqual(result["from"]["version"], 1)
        self.assertEqual(result["from"]["untouched"], ["t"])
        self.assertEqual(conn.execute(
            "SELECT name FROM sqlite_master WHERE name = 'u'").fetchall(), [])
        self.assertEqual(sqlmigrate.Migrator(conn, self.dir).current_version, 1)
