"""`sqlmigrate lint` / Migrator.lint(): one failing and one passing (or
allowed) example per rule, allow markers, the CLI's exit codes, --json and
`up --lint`, and the bundled migrations linting clean."""

import json
import os
import sqlite3
import sys
import unittest

from tests.support import ROOT, TempDirTestCase, file_sha256, sqlmigrate

_HAS_DROP_COLUMN = sqlite3.sqlite_version_info >= (3, 35, 0)

PY_TABLE = '''
def up(db):
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT)")


def down(db):
    db.execute("DROP TABLE t")
'''


class LintTestCase(TempDirTestCase):
    def lint(self, *files, **kwargs):
        db = kwargs.pop("db", ":memory:")
        return sqlmigrate.Migrator(db, self.dir).lint(list(files) or None, **kwargs)

    def codes(self, findings, allowed=False):
        return sorted(f.code for f in findings if bool(f.allowed) == allowed)

    def table_migration(self, version=1):
        return self.write_sql(version, "table", "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, "
                                                "b TEXT);", "DROP TABLE t;")

    def only(self, findings, code):
        found = [f for f in findings if f.code == code]
        self.assertEqual(len(found), 1, findings)
        return found[0]


class DestructiveRules(LintTestCase):
    def test_drop_table_is_an_error_and_its_down_is_not_linted(self):
        self.table_migration()
        path = self.write_sql(2, "drop", "\nDROP TABLE t;", "CREATE TABLE t (id INTEGER);")
        f = self.only(self.lint(), "SM101")
        self.assertEqual((f.level, f.path, f.line, f.statement, f.allowed),
                         ("error", path, 3, "DROP TABLE t", False))
        self.assertIn("t", f.message)
        self.assertTrue(f.fix)

    def test_a_statement_quoted_in_a_comment_above_it_gets_its_own_line(self):
        self.table_migration()
        # The statement's text also stands in the file's header and in a
        # comment above it: the finding is at the statement itself.
        self.write("002-drop.sql", "-- DROP TABLE t;\n-- migrate:up\n-- was: DROP TABLE t;\n"
                                   "\nDROP TABLE t;\n-- migrate:down\nSELECT 1;\n")
        self.assertEqual(self.only(self.lint(), "SM101").line, 5)

    def test_drop_table_allowed_by_a_marker_above_it(self):
        self.table_migration()
        self.write_sql(2, "drop", "-- sqlmigrate: allow SM101 (replaced by u)\nDROP TABLE t;")
        f = self.only(self.lint(), "SM101")
        self.assertEqual(f.allowed, "replaced by u")

    def test_marker_covers_only_the_statement_below_it(self):
        self.table_migration()
        self.write_sql(2, "drop", "CREATE TABLE u (x);\n\n-- sqlmigrate: allow SM101 (gone)\n"
                                  "DROP TABLE t;\nDROP TABLE u;")
        findings = [f for f in self.lint() if f.code == "SM101"]
        self.assertEqual([(f.line, bool(f.allowed)) for f in findings], [(5, True), (6, False)])

    def test_marker_covers_the_statement_below_it_after_form_feeds_and_lone_crs(self):
        # str.splitlines() breaks lines at \f, \x1c and U+2028 too; the
        # statements' lines count \n only.
        self.write_sql(1, "t", "CREATE TABLE a (x);\nCREATE TABLE b (x);\nCREATE TABLE c (x);",
                       "SELECT 1;")
        self.write("002-drop.sql", "-- migrate:up\n-- a\fb\x1cc\u2028d\re\n"
                                   "-- sqlmigrate: allow SM101 (a is unused)\nDROP TABLE a;\n"
                                   "DROP TABLE b;\nDROP TABLE c;\n-- migrate:down\nSELECT 1;\n")
        findings = [f for f in self.lint() if f.code == "SM101"]
        self.assertEqual([(f.line, bool(f.allowed)) for f in findings],
                         [(4, True), (5, False), (6, False)])

    def test_python_marker_covers_the_statement_below_it_after_a_form_feed(self):
        self.write("001-t.py", PY_TABLE)
        self.write("002-drop.py", "\f\n\f\ndef up(db):\n    db.execute(\"CREATE TABLE u (x)\")\n"
                                  "\n    # sqlmigrate: allow SM101 (u is unused)\n"
                                  "    db.execute(\"DROP TABLE u\")\n\n"
                                  "    db.execute(\"DROP TABLE t\")\n")
        findings = [f for f in self.lint() if f.code == "SM101"]
        self.assertEqual([(f.line, bool(f.allowed)) for f in findings], [(7, True), (9, False)])

    def test_marker_at_the_top_of_a_file_covers_all_of_it(self):
        self.table_migration()
        self.write("002-drop.sql", "-- sqlmigrate: allow SM101, SM104 (clean slate)\n\n"
                                   "-- migrate:up\nDELETE FROM t;\nDROP TABLE t;\n-- migrate:down\nSELECT 1;\n")
        self.assertEqual(self.codes(self.lint()), [])
        self.assertEqual(self.codes(self.lint(), allowed=True), ["SM101", "SM104"])

    def test_alter_table_drop_column_is_an_error(self):
        self.table_migration()
        self.write_sql(2, "drop-col", "ALTER TABLE t DROP COLUMN b;")
        self.assertEqual(self.only(self.lint(), "SM102").line, 2)

    def test_drop_column_helper_seen_in_the_scratch_run_with_its_line(self):
        self.write("001-t.py", PY_TABLE)
        path = self.write("002-drop.py", '''
            import sqlmigrate


            def up(db):
                sqlmigrate.drop_column(db, "t", "b")


            def down(db):
                sqlmigrate.reconcile(db, columns={"t": {"b": "TEXT"}})
            ''')
        f = self.only(self.lint(), "SM102")
        self.assertEqual((f.path, f.line), (path, 5))
        self.assertIn("b", f.message)

    def test_python_marker_allows_the_statement_below_it(self):
        self.write("001-t.py", PY_TABLE)
        self.write("002-drop.py", '''
            import sqlmigrate


            def up(db):
                # sqlmigrate: allow SM102 (b was never read)
                sqlmigrate.drop_column(db, "t", "b")
                db.execute("DROP TABLE t")
            ''')
        findings = self.lint()
        self.assertEqual(self.only(findings, "SM102").allowed, "b was never read")
        self.assertFalse(self.only(findings, "SM101").allowed)  # the marker names SM102 only
        self.assertEqual(self.only(findings, "SM101").line, 7)

    def test_python_statement_that_starts_with_a_comment_is_linted(self):
        # SQLite traces a trigger's sub-program as "-- TRIGGER name"; a
        # statement of the migration's own that opens with a comment is not one.
        self.write("001-t.py", PY_TABLE)
        self.write("002-drop.py", '''
            def up(db):
                db.execute("-- the old table goes\\nDROP TABLE t")
            ''')
        self.assertEqual(self.only(self.lint(), "SM101").line, 2)

    def test_a_trigger_fired_by_a_python_statement_is_not_a_statement_of_its_own(self):
        self.write("001-t.py", PY_TABLE)
        self.write("002-trigger.py", '''
            def up(db):
                db.execute("CREATE TABLE log (x)")
                db.execute("CREATE TRIGGER tr AFTER INSERT ON t BEGIN DELETE FROM log; END")
                db.execute("INSERT INTO t (a) VALUES ('x')")


            def down(db):
                pass
            ''')
        self.assertEqual(self.codes(self.lint()), [])

    def test_python_marker_does_not_reach_the_next_statement_of_its_block(self):
        self.write("001-t.py", PY_TABLE)
        self.write("002-drop.py", '''
            def up(db):
                db.execute("CREATE TABLE old_a (x)")
                # sqlmigrate: allow SM101 (old_a was never used)
                db.execute("DROP TABLE old_a")
                db.execute("DROP TABLE t")
            ''')
        findings = [f for f in self.lint() if f.code == "SM101"]
        self.assertEqual([(f.line, bool(f.allowed)) for f in findings], [(4, True), (5, False)])

    def test_python_marker_above_a_loop_or_a_call_over_lines_covers_all_of_it(self):
        self.write("001-t.py", PY_TABLE)
        self.write("002-drop.py", '''
            def up(db):
                db.execute("CREATE TABLE a (x)")
                db.execute("CREATE TABLE b (x)")
                # sqlmigrate: allow SM101 (a and b were never used)
                for name in ("a", "b"):
                    db.execute(
                        "DROP TABLE " + name)
                # sqlmigrate: allow SM104 (t is rebuilt by the next release)
                db.execute(
                    """DELETE
                    FROM t""")
                db.execute("DROP TABLE t")
            ''')
        findings = [f for f in self.lint() if f.code in ("SM101", "SM104")]
        self.assertEqual([(f.code, bool(f.allowed)) for f in findings],
                         [("SM101", True), ("SM101", True), ("SM104", True), ("SM101", False)])

    def test_python_marker_in_a_file_with_a_bom_covers_only_the_statement_below_it(self):
        self.write("001-t.py", PY_TABLE)
        self.write("002-drop.py", "\ufeffdef up(db):\n    db.execute(\"CREATE TABLE u (x)\")\n"
                                  "    # sqlmigrate: allow SM101 (u is unused)\n"
                                  "    db.execute(\"DROP TABLE u\")\n    db.execute(\"DROP TABLE t\")\n")
        findings = [f for f in self.lint() if f.code == "SM101"]
        self.assertEqual([(f.line, bool(f.allowed)) for f in findings], [(4, True), (5, False)])

    def test_rebuild_whose_create_sql_leaves_out_a_column(self):
        self.write("001-t.py", PY_TABLE)
        self.write("002-rebuild.py", '''
            import sqlmigrate


            def up(db):
                sqlmigrate.rebuild_table(db, "t", create_sql="CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT)")
            ''')
        self.assertEqual(self.only(self.lint(), "SM103").line, 5)

    def test_rebuild_keeping_every_column_is_clean(self):
        self.write("001-t.py", PY_TABLE)
        self.write("002-rebuild.py", '''
            import sqlmigrate


            def up(db):
                sqlmigrate.rebuild_table(db, "t", create_sql="CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT NOT NULL DEFAULT '', b TEXT)")


            def down(db):
                pass
            ''')
        self.assertEqual(self.codes(self.lint()), [])

    def test_delete_and_update_without_where(self):
        self.table_migration()
        self.write_sql(2, "data", "DELETE FROM t;\nUPDATE t SET a = (SELECT b FROM t WHERE id = 1);")
        findings = self.lint()
        self.assertEqual((self.only(findings, "SM104").line, self.only(findings, "SM105").level),
                         (2, "warning"))

    def test_delete_and_update_with_where_are_clean(self):
        self.table_migration()
        self.write_sql(2, "data", "DELETE FROM t WHERE a IS NULL;\nUPDATE t SET a = 'x' WHERE id IN "
                                  "(SELECT id FROM t);", "SELECT 1;")
        self.assertEqual(self.codes(self.lint()), [])


class FailsOnNonEmptyTable(LintTestCase):
    def test_add_column_rules(self):
        self.table_migration()
        self.write_sql(2, "add", "ALTER TABLE t ADD COLUMN c TEXT NOT NULL;\n"
                                 "ALTER TABLE t ADD COLUMN d TEXT UNIQUE;\n"
                                 "ALTER TABLE t ADD e TEXT DEFAULT CURRENT_TIMESTAMP;")
        findings = self.lint("002-add.sql")
        self.assertEqual([(f.code, f.line) for f in findings if f.code.startswith("SM2")],
                         [("SM201", 2), ("SM202", 3), ("SM203", 4)])
        self.assertIn("reconcile", self.only(findings, "SM203").fix)

    def test_unique_on_conflict_is_one_finding_whose_fix_keeps_the_clause(self):
        # An index cannot carry ON CONFLICT; ALTER TABLE refuses UNIQUE on any table.
        self.table_migration()
        self.write_sql(2, "add", "ALTER TABLE t ADD COLUMN b TEXT UNIQUE ON CONFLICT REPLACE;")
        findings = self.lint("002-add.sql")
        self.assertEqual([f.code for f in findings if f.code.startswith("SM2")], ["SM202"])
        self.assertIn("ON CONFLICT", self.only(findings, "SM202").fix)

    def test_add_column_with_a_constant_default_is_clean(self):
        self.table_migration()
        self.write_sql(2, "add", "ALTER TABLE t ADD COLUMN c TEXT NOT NULL DEFAULT '';\n"
                                 "ALTER TABLE t ADD COLUMN d INTEGER DEFAULT -1;", "SELECT 1;")
        self.assertEqual(self.codes(self.lint("002-add.sql")), [])


class PragmasThatDoNothing(LintTestCase):
    def test_pragmas_in_a_transactional_migration(self):
        self.table_migration()
        self.write_sql(2, "pragmas", "PRAGMA foreign_keys = OFF;\nPRAGMA legacy_alter_table=ON;\n"
                                     "PRAGMA journal_mode = WAL;")
        codes = [(f.code, f.line) for f in self.lint() if f.code.startswith("SM3")]
        self.assertEqual(codes, [("SM301", 2), ("SM302", 3), ("SM303", 4)])

    def test_synchronous_in_a_transactional_migration_says_where_it_can_go(self):
        # SQLite refuses it there ("Safety level may not be changed inside a
        # transaction"); the finding says to move it to transaction:false.
        self.table_migration()
        self.write_sql(2, "sync", "PRAGMA main.synchronous = OFF;")
        codes = [(f.code, f.line) for f in self.lint() if f.code.startswith("SM3")]
        self.assertEqual(codes, [("SM303", 2)])

    def test_a_schema_qualifier_with_spaces_or_comments_around_the_dot_is_read_past(self):
        self.table_migration()
        self.write_sql(2, "pragmas", "PRAGMA main . journal_mode = WAL;\n"
                                     "PRAGMA main/* the file */.foreign_keys = OFF;")
        codes = [(f.code, f.line) for f in self.lint() if f.code.startswith("SM3")]
        self.assertEqual(codes, [("SM303", 2), ("SM301", 3)])

    def test_pragmas_outside_a_transaction_or_only_read_are_clean(self):
        self.write_sql(1, "wal", "PRAGMA journal_mode = WAL;\nPRAGMA foreign_keys = OFF;",
                       "PRAGMA journal_mode = DELETE;", options="transaction:false")
        self.write_sql(2, "read", "PRAGMA foreign_keys;", "SELECT 1;")
        self.assertEqual(self.codes(self.lint()), [])


class Renames(LintTestCase):
    def test_rename_under_legacy_alter_table_with_a_view_on_it(self):
        self.table_migration()
        self.write_sql(2, "view", "CREATE VIEW v AS SELECT a FROM t;", "DROP VIEW v;")
        self.write_sql(3, "rename", "-- sqlmigrate: allow SM302 (on purpose)\n"
                                    "PRAGMA legacy_alter_table = ON;\nALTER TABLE t RENAME TO t2;")
        f = self.only(self.lint("003-rename.sql"), "SM501")
        self.assertEqual(f.line, 4)
        self.assertIn("view v", f.message)

    def test_legacy_alter_table_turned_on_by_a_quoted_or_numeric_value(self):
        # SQLite reads the value as a boolean: 'on', "yes", 2 and 0x1 are on.
        self.table_migration()
        self.write_sql(2, "view", "CREATE VIEW v AS SELECT a FROM t;", "DROP VIEW v;")
        for value in ("'on'", '"yes"', "2", "0x1"):
            self.write_sql(3, "rename", "-- sqlmigrate: allow SM302 (on purpose)\n"
                                        "PRAGMA legacy_alter_table = %s;\n"
                                        "ALTER TABLE t RENAME TO t2;" % value)
            self.assertEqual(self.only(self.lint("003-rename.sql"), "SM501").line, 4, value)

    def test_legacy_alter_table_turned_off_again_before_the_rename(self):
        self.table_migration()
        self.write_sql(2, "view", "CREATE VIEW v AS SELECT a FROM t;", "DROP VIEW v;")
        self.write_sql(3, "rename", "-- sqlmigrate: allow SM302 (on purpose)\n"
                                    "PRAGMA legacy_alter_table = ON;\n"
                                    "PRAGMA legacy_alter_table = 'off';\n"
                                    "ALTER TABLE t RENAME TO t2;", "ALTER TABLE t2 RENAME TO t;")
        findings = self.lint("003-rename.sql")
        self.assertEqual([f.code for f in findings if f.code == "SM501"],
                         ["SM501"] if sqlite3.sqlite_version_info < (3, 26, 0) else [])

    @unittest.skipIf(sqlite3.sqlite_version_info < (3, 26, 0), "renames are legacy there")
    def test_rename_with_a_view_on_it_in_modern_mode_is_clean(self):
        self.table_migration()
        self.write_sql(2, "view", "CREATE VIEW v AS SELECT a FROM t;", "DROP VIEW v;")
        self.write_sql(3, "rename", "ALTER TABLE t RENAME TO t2;", "ALTER TABLE t2 RENAME TO t;")
        self.assertEqual(self.codes(self.lint("003-rename.sql")), [])

    def test_rename_of_a_table_other_tables_reference(self):
        self.table_migration()
        self.write_sql(2, "child", "CREATE TABLE c (id INTEGER PRIMARY KEY, t_id INTEGER "
                                   "REFERENCES t(id));", "DROP TABLE c;")
        self.write("003-rename.py", '''
            def up(db):
                db.execute("ALTER TABLE t RENAME TO t_old")
            ''')
        f = self.only(self.lint("003-rename.py"), "SM502")
        self.assertEqual((f.line, f.level), (2, "warning"))
        self.assertIn("table c", f.message)


class NonTransactional(LintTestCase):
    def test_not_idempotent_statements(self):
        self.write_sql(1, "setup", "CREATE TABLE t (a);\nCREATE INDEX IF NOT EXISTS i ON t(a);\n"
                                   "INSERT INTO t VALUES (1);", "DROP TABLE IF EXISTS t;",
                       options="transaction:false")
        self.assertEqual([(f.code, f.line) for f in self.lint()], [("SM601", 2), ("SM601", 4)])

    def test_guarded_statements_are_idempotent(self):
        upsert = "INSERT INTO t VALUES (2) ON CONFLICT DO NOTHING;\n" if \
            sqlite3.sqlite_version_info >= (3, 24, 0) else ""  # upsert: SQLite 3.24+
        self.write_sql(1, "setup", "CREATE TABLE IF NOT EXISTS t (a UNIQUE);\n"
                                   "INSERT OR IGNORE INTO t VALUES (1);\n"
                                   + upsert + "INSERT INTO t VALUES ('or ignore');\n"
                                   "DROP VIEW IF EXISTS v;", "SELECT 1;", options="transaction:false")
        self.assertEqual([(f.code, f.line) for f in self.lint()], [("SM601", 4 + bool(upsert))])

    def test_insert_guards_count_as_words_past_comments_not_inside_strings(self):
        upsert = sqlite3.sqlite_version_info >= (3, 24, 0)  # ON CONFLICT DO: SQLite 3.24+
        self.write_sql(1, "setup", "\n".join([
            "CREATE TABLE IF NOT EXISTS t (a UNIQUE, b);",
            "insert /* guarded: */ or -- yes\n replace INTO t VALUES (1, 'x');",
            "REPLACE INTO t VALUES (2, 'y');",
            "INSERT INTO t VALUES (3, 'OR IGNORE'), (4, 'ON CONFLICT DO NOTHING');",
            "INSERT INTO t SELECT 5, 'or';",
            "INSERT INTO t VALUES (6, 'conflict') ON conflict DO NOTHING;" if upsert else
            "INSERT OR IGNORE INTO t VALUES (6, 'conflict');"]),
            "SELECT 1;", options="transaction:false")
        self.assertEqual([(f.code, f.line) for f in self.lint()], [("SM601", 6), ("SM601", 7)])

    def test_python_non_transactional_seen_in_the_scratch_run(self):
        self.write("001-t.py", PY_TABLE)
        self.write("002-index.py", '''
            transaction = False


            def up(db):
                db.execute("CREATE INDEX IF NOT EXISTS i_a ON t(a)")
                db.execute("CREATE INDEX i_b ON t(b)")


            def down(db):
                db.execute("DROP INDEX IF EXISTS i_a")
            ''')
        self.assertEqual([(f.code, f.line) for f in self.lint()], [("SM601", 6)])

    def test_transactional_create_without_if_not_exists_is_clean(self):
        self.table_migration()
        self.assertEqual(self.codes(self.lint()), [])


class BigTables(LintTestCase):
    def big_database(self, rows=100000):
        self.table_migration()
        sqlmigrate.Migrator(self.db, self.dir).up()
        conn = self.connect()
        conn.execute("BEGIN")  # one transaction: autocommit would fsync every row
        conn.executemany("INSERT INTO t (a, b) VALUES (?, 'b')",  # no WITH before SQLite 3.8.3
                         (("a%d" % x,) for x in range(1, rows + 1)))
        conn.execute("COMMIT")
        conn.close()

    def test_rebuild_and_index_on_a_big_table_with_an_estimate(self):
        self.big_database()
        self.write("002-rebuild.py", '''
            import sqlmigrate


            def up(db):
                sqlmigrate.rebuild_table(db, "t", create_sql="CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT, c TEXT)")
                db.execute("CREATE INDEX t_a ON t(a)")


            def down(db):
                pass
            ''')
        before = file_sha256(self.db)
        findings = self.lint(db=self.db)
        self.assertEqual(file_sha256(self.db), before)  # --db is never written
        rebuild, index = self.only(findings, "SM401"), self.only(findings, "SM402")
        self.assertEqual((rebuild.line, index.line), (5, 6))
        for f in (rebuild, index):
            self.assertIn("100000 rows", f.message)
            self.assertIn("rows/s", f.message)

    def test_python_migrations_run_on_a_copy_of_a_small_database_only(self):
        self.big_database(rows=10)
        self.write("002-look.py", '''
            def up(db):
                if db.execute("SELECT count(*) FROM t").fetchone()[0]:
                    raise RuntimeError("ran on a copy of the data")


            def down(db):
                pass
            ''')
        self.assertIn("ran on a copy", self.only(self.lint(db=self.db), "SM003").message)
        self.addCleanup(setattr, sqlmigrate, "_MEMORY_COPY_BYTES", sqlmigrate._MEMORY_COPY_BYTES)
        sqlmigrate._MEMORY_COPY_BYTES = 0  # "too big to copy": a fresh build of its schema
        self.assertEqual(self.codes(self.lint(db=self.db)), [])

    def test_small_table_or_no_database_is_clean(self):
        self.big_database(rows=10)
        self.write_sql(2, "index", "CREATE INDEX t_a ON t(a);", "DROP INDEX t_a;")
        self.assertEqual(self.codes(self.lint(db=self.db)), [])
        self.assertEqual(self.codes(self.lint()), [])


class History(LintTestCase):
    def test_changed_applied_file_and_new_file_below_the_current_version(self):
        path = self.table_migration(version=1)
        self.write_sql(3, "index", "CREATE INDEX t_a ON t(a);", "DROP INDEX t_a;")
        sqlmigrate.Migrator(self.db, self.dir).up()
        with open(path, "a") as f:
            f.write("-- edited\n")
        late = self.write_sql(2, "late", "CREATE TABLE u (x);", "DROP TABLE u;")
        findings = self.lint(db=self.db)
        self.assertEqual(self.only(findings, "SM701").path, path)
        self.assertEqual(self.only(findings, "SM702").path, late)

    def test_unchanged_database_is_clean(self):
        self.table_migration()
        sqlmigrate.Migrator(self.db, self.dir).up()
        self.write_sql(2, "index", "CREATE INDEX t_a ON t(a);", "DROP INDEX t_a;")
        findings = self.lint(db=self.db)
        self.assertEqual(self.codes(findings), [])


class Downs(LintTestCase):
    def test_missing_down_is_a_note(self):
        self.write_sql(1, "t", "CREATE TABLE t (a);")
        f = self.only(self.lint(), "SM801")
        self.assertEqual(f.level, "note")

    def test_down_that_does_not_undo_its_up_with_round_trip(self):
        self.write_sql(1, "t", "CREATE TABLE t (a);", "SELECT 1;")
        self.assertEqual(self.codes(self.lint()), [])  # not asked for: not run
        f = self.only(self.lint(round_trip=True), "SM802")
        self.assertIn("table t", f.message)

    def test_down_that_undoes_its_up_passes_the_round_trip(self):
        self.table_migration()
        self.assertEqual(self.codes(self.lint(round_trip=True)), [])


class BadInput(LintTestCase):
    def test_unreadable_file_is_a_finding_and_the_others_are_still_linted(self):
        self.table_migration()
        self.write("002-bad.sql", b"-- migrate:up\nCREATE TABLE u (x);\nSELECT '\xff';\n")
        self.write("003-syntax.py", "def up(db):\n    pass\n  oops\n")
        self.write_sql(4, "drop", "DROP TABLE t;")
        findings = self.lint()
        self.assertEqual([(f.code, f.line) for f in findings if f.code == "SM001"],
                         [("SM001", 3), ("SM001", 3)])
        self.only(findings, "SM101")

    def test_unknown_code_in_a_marker_is_a_warning_naming_it(self):
        self.write_sql(1, "t", "-- sqlmigrate: allow SM999 (typo)\nCREATE TABLE t (a);", "DROP TABLE t;")
        f = self.only(self.lint(), "SM002")
        self.assertEqual((f.level, f.line), ("warning", 2))
        self.assertIn("SM999", f.message)

    def test_migration_that_fails_on_the_scratch_database(self):
        self.write_sql(1, "bad", "CREATE TABLE t (a);\nINSERT INTO nowhere VALUES (1);",
                       "DROP TABLE t;")
        self.write("002-later.py", PY_TABLE)
        findings = self.lint()
        self.assertEqual(self.only(findings, "SM003").line, 3)
        self.assertEqual(self.only(findings, "SM004").level, "note")

    def test_file_outside_the_directory_is_a_bad_request(self):
        self.table_migration()
        with self.assertRaises(sqlmigrate.RequestError):
            self.lint("999-nothing.sql")

    def test_files_of_a_package_are_named_by_their_path_and_others_name_the_package(self):
        package = os.path.join(self.tmp, "pkgs", "lintpkg")
        os.makedirs(package)
        self.write("__init__.py", "", directory=package)
        self.write("001-drop.sql", "-- migrate:up\nCREATE TABLE t (a);\nDROP TABLE t;\n",
                   directory=package)
        sys.path.insert(0, os.path.dirname(package))
        self.addCleanup(sys.path.remove, os.path.dirname(package))
        migrator = sqlmigrate.Migrator(":memory:", package="lintpkg")
        for name in (os.path.join(package, "001-drop.sql"), "001-drop.sql"):
            self.assertIn("SM101", self.codes(migrator.lint([name])))
        with self.assertRaises(sqlmigrate.RequestError) as caught:
            migrator.lint([os.path.join(self.dir, "001-drop.sql")])
        self.assertIn("package lintpkg", str(caught.exception))


class CommandLine(LintTestCase):
    def test_exit_1_on_an_error_and_json_gives_the_findings(self):
        self.table_migration()
        self.write_sql(2, "drop", "DROP TABLE t;")
        status, out, err = self.cli("--dir", self.dir, "lint")
        self.assertEqual(status, 1, err)
        self.assertIn("002-drop.sql:2: SM101 error", out)
        status, out, err = self.cli("--dir", self.dir, "lint", "--json")
        self.assertEqual(status, 1, err)
        data = json.loads(out)
        self.assertFalse(data["ok"])
        self.assertEqual([(f["code"], f["line"], f["allowed"]) for f in data["findings"]],
                         [("SM801", None, False), ("SM101", 2, False)])

    def test_exit_0_with_only_warnings_and_files_named(self):
        self.table_migration()
        self.write_sql(2, "update", "UPDATE t SET a = 1;", "SELECT 1;")
        self.write_sql(3, "drop", "DROP TABLE t;", "SELECT 1;")
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "lint", "002-update.sql")
        self.assertEqual(status, 0, err)
        self.assertFalse(os.path.exists(self.db))  # lint never creates (or writes) --db
        self.assertIn("SM105 warning", out)
        self.assertNotIn("SM101", out)

    def test_help_lists_the_codes(self):
        status, out, _ = self.cli("lint", "--help")
        self.assertEqual(status, 0)
        for code in sqlmigrate._LINT_RULES:
            self.assertIn(code, out)

    def test_up_lint_refuses_and_applies_nothing(self):
        self.table_migration()
        self.assertEqual(self.cli("--db", self.db, "--dir", self.dir, "up")[0], 0)
        self.write_sql(2, "drop", "DROP TABLE t;", "CREATE TABLE t (a);")
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "up", "--lint")
        self.assertEqual(status, 1, err)
        self.assertIn("SM101", out)
        self.assertIn("nothing was applied", err)
        self.assertEqual(self.schema_version(), "1")
        self.assertIn("t", self.tables())

    def test_up_lint_refuses_what_lint_refuses_and_lints_only_up_to_its_to(self):
        self.table_migration()
        self.assertEqual(self.cli("--db", self.db, "--dir", self.dir, "up")[0], 0)
        self.write_sql(2, "add", "CREATE TABLE u (a);", "DROP TABLE u;")
        self.write_sql(3, "drop", "DROP TABLE t;", "CREATE TABLE t (a);")
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "up", "--lint",
                                    "--to", "2")
        self.assertEqual(status, 0, out + err)
        self.assertNotIn("SM101", out)
        self.assertEqual(self.schema_version(), "2")
        # An applied file edited: `up` alone warns, `lint` (and so `up --lint`) refuses.
        with open(os.path.join(self.dir, "002-add.sql"), "a") as f:
            f.write("-- edited\n")
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "up", "--lint")
        self.assertEqual(status, 1, out + err)
        self.assertIn("SM701", out)
        self.assertEqual(self.schema_version(), "2")

    def test_up_lint_applies_when_lint_passes(self):
        self.write_sql(1, "t", "CREATE TABLE t (a);\n-- sqlmigrate: allow SM101 (scratch)\n"
                               "DROP TABLE t;", "SELECT 1;")
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "up", "--lint")
        self.assertEqual(status, 0, err)
        self.assertEqual(self.schema_version(), "1")

    def test_bundled_migrations_lint_clean(self):
        status, out, err = self.cli("--dir", os.path.join(ROOT, "migrations"), "lint", "--json")
        self.assertEqual(status, 0, out + err)
        self.assertEqual([f for f in json.loads(out)["findings"] if not f["allowed"]], [])


if __name__ == "__main__":
    unittest.main()
