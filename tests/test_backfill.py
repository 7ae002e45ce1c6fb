"""backfill(): batched, resumable data migrations on real files and processes."""

import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import types
import unittest

from tests.support import ROOT, SCRIPT, TempDirTestCase, sqlmigrate

# The migration every process test runs: n = n + 1 is not idempotent, so a
# batch applied twice leaves an n of 2.
BACKFILL_MIGRATION = '''
import sqlmigrate

name = "bump n"
transaction = False

def up(db):
    sqlmigrate.backfill(db, "items", set="n = n + 1", where="n >= 0", batch_rows=%(rows)d,
                        target_ms=%(target_ms)s)
'''

WORKER = """
import sys, os, time
sys.path.insert(0, %r)
import sqlmigrate
while not os.path.exists(sys.argv[3]):
    time.sleep(0.005)
print(len(sqlmigrate.migrate(sys.argv[1], sys.argv[2], busy_timeout=60)))
""" % ROOT


class BackfillTestCase(TempDirTestCase):
    def make_items(self, rows, path=None, without_rowid=False):
        conn = self.connect(path)
        if without_rowid:
            conn.execute("CREATE TABLE items (grp TEXT, k INTEGER, n INTEGER NOT NULL DEFAULT 0, "
                         "PRIMARY KEY (grp, k)) WITHOUT ROWID")
            conn.executemany("INSERT INTO items (grp, k) VALUES (?, ?)",
                             (("g%d" % (i % 7), i) for i in range(rows)))
        else:
            conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, n INTEGER NOT NULL "
                         "DEFAULT 0 CHECK (n < 5), note TEXT)")
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO items (id) VALUES (?)", ((i,) for i in range(1, rows + 1)))
            conn.execute("COMMIT")
        return conn

    def counts(self, conn):
        return dict(conn.execute("SELECT n, count(*) FROM items GROUP BY n").fetchall())

    def write_backfill_migration(self, rows=200, target_ms=50):
        self.write("001-bump-n.py", BACKFILL_MIGRATION % {"rows": rows, "target_ms": target_ms})

    def run_cli(self, *args):
        return self.cli("--db", self.db, "--dir", self.dir, *args)

    def backfill_keys(self, conn):
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'metadata'").fetchall():
            return []
        return conn.execute("SELECT key, value FROM metadata WHERE key LIKE 'backfill:%'").fetchall()


class BatchesOnAPath(BackfillTestCase):
    def test_set_form_updates_each_matching_row_once_over_many_batches(self):
        conn = self.make_items(5000)
        changed = sqlmigrate.backfill(self.db, "items", set="n = n + 1", where="id % 2 = 0",
                                      batch_rows=100, target_ms=None)
        self.assertEqual(changed, 2500)
        self.assertEqual(self.counts(conn), {0: 2500, 1: 2500})
        self.assertEqual(conn.execute("SELECT count(*) FROM items WHERE id % 2 = 0 AND n = 1")
                         .fetchall()[0][0], 2500)
        self.assertEqual(self.backfill_keys(conn), [])  # a finished job leaves nothing behind

    @unittest.skipIf(sqlite3.sqlite_version_info < (3, 8, 2), "WITHOUT ROWID is SQLite 3.8.2+")
    def test_without_rowid_table_is_batched_by_its_composite_primary_key(self):
        conn = self.make_items(3000, without_rowid=True)
        changed = sqlmigrate.backfill(self.db, "items", set="n = n + 1", batch_rows=37,
                                      target_ms=None)
        self.assertEqual(changed, 3000)
        self.assertEqual(self.counts(conn), {1: 3000})

    @unittest.skipIf(sqlite3.sqlite_version_info < (3, 8, 2), "WITHOUT ROWID is SQLite 3.8.2+")
    def test_a_composite_key_batch_is_found_through_the_key_not_a_sort_of_the_rest(self):
        # (grp > ?) OR (grp = ? AND k > ?) alone made SQLite sort every row
        # after the position for each batch (300,000 rows: 1 row a batch).
        # SQLite's own plan of the statements, with their parameters bound.
        conn = self.make_items(3000, without_rowid=True)
        columns = ['"grp"', '"k"']
        for after, last in ((("g1", 491), None), (("g1", 491), ("g2", 989))):
            where, params = sqlmigrate._key_range(columns, after, last)
            for sql in ('SELECT "grp", "k" FROM items WHERE %s ORDER BY "grp", "k" '
                        'LIMIT 1 OFFSET 499' % where, "UPDATE items SET n = n + 1 WHERE " + where):
                plan = " ".join(str(row[-1]) for row in conn.execute(
                    "EXPLAIN QUERY PLAN " + sql, params))
                self.assertNotIn("TEMP B-TREE", plan, sql)
                self.assertNotIn("MULTI-INDEX OR", plan, sql)

    def test_apply_function_gets_each_batch_inside_its_transaction(self):
        conn = self.make_items(1000)
        conn.execute("CREATE TABLE archive (id INTEGER PRIMARY KEY, n)")
        seen = []

        def copy(db, batch):
            self.assertTrue(db.in_transaction)
            seen.append((batch.after, batch.last))
            return db.execute("INSERT INTO archive SELECT id, n FROM items WHERE " + batch.where,
                              batch.params).rowcount

        self.assertEqual(sqlmigrate.backfill(self.db, "items", apply=copy, where="id > 10",
                                             batch_rows=100, target_ms=None), 990)
        self.assertEqual(conn.execute("SELECT count(*), min(id), max(id) FROM archive").fetchall()[0],
                         (990, 11, 1000))
        self.assertEqual(seen[0], (None, (100,)))
        self.assertEqual(seen[-1][1], None)  # the last batch is open-ended
        self.assertEqual([b[0] for b in seen[1:]], [b[1] for b in seen[:-1]])

    def test_apply_function_that_commits_is_refused_and_its_batch_rolled_back(self):
        conn = self.make_items(300)

        def sneaky(db, batch):
            db.execute("UPDATE items SET n = n + 1 WHERE " + batch.where, batch.params)
            db.execute("COMMIT")

        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.backfill(self.db, "items", apply=sneaky, batch_rows=100, target_ms=None)
        self.assertEqual(caught.exception.kind, "backfill-failed")
        self.assertIn("COMMIT", str(caught.exception))
        self.assertEqual(self.counts(conn), {0: 300})

    def test_apply_may_register_the_migrations_function_in_each_batch_but_not_a_built_in(self):
        # The function its migration registered, and its own from an earlier
        # batch, are the migration's: registering them again is no replacement.
        conn = self.make_items(300)
        self.write("001-tag.py", """
            import sqlmigrate

            transaction = False

            def tag(db, batch):
                db.create_function("tag", 1, lambda n: "t" + str(n))
                db.create_function("retag", 1, lambda s: s)
                return db.execute("UPDATE items SET note = tag(id) WHERE " + batch.where,
                                  batch.params).rowcount

            def up(db):
                db.create_function("tag", 1, lambda n: "t" + str(n))
                sqlmigrate.backfill(db, "items", apply=tag, batch_rows=100, target_ms=None)
            """)
        self.assertEqual(len(sqlmigrate.migrate(self.db, self.dir)), 1)
        self.assertEqual(conn.execute("SELECT count(*) FROM items WHERE note = 't' || id")
                         .fetchone()[0], 300)
        os.remove(os.path.join(self.dir, "001-tag.py"))
        self.write("002-upper.py", """
            import sqlmigrate

            transaction = False

            def shout(db, batch):
                db.create_function("upper", 1, lambda s: s)
                return db.execute("UPDATE items SET note = upper(note) WHERE " + batch.where,
                                  batch.params).rowcount

            def up(db):
                sqlmigrate.backfill(db, "items", apply=shout, batch_rows=100, target_ms=None)
            """)
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.migrate(self.db, self.dir)
        self.assertIn("upper", str(caught.exception))
        self.assertEqual(conn.execute("SELECT count(*) FROM items WHERE note = 't' || id")
                         .fetchone()[0], 300)

    def test_dry_run_counts_the_rows_that_would_change_and_changes_nothing(self):
        conn = self.make_items(1000)
        before = conn.execute("SELECT total_changes()").fetchall()
        self.assertEqual(sqlmigrate.backfill(self.db, "items", set="n = 1", where="id <= 321",
                                             dry_run=True), 321)
        self.assertEqual(self.counts(conn), {0: 1000})
        self.assertNotIn("metadata", self.tables(conn))
        self.assertEqual(before, conn.execute("SELECT total_changes()").fetchall())

    def test_wal_is_checkpointed_between_batches_even_with_autocheckpoint_off(self):
        conn = self.make_items(20000)
        conn.execute("PRAGMA journal_mode = WAL").fetchall()
        conn.execute("PRAGMA wal_autocheckpoint = 0").fetchall()  # only ours run
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        sqlmigrate.backfill(conn, "items", set="note = 'x' || id", batch_rows=500,
                            target_ms=None)
        # Without checkpoints the WAL would hold every page of the table.
        pages = conn.execute("PRAGMA page_count").fetchall()[0][0]
        page_size = conn.execute("PRAGMA page_size").fetchall()[0][0]
        self.assertLess(os.path.getsize(self.db + "-wal"), pages * page_size / 2)


class BadInput(BackfillTestCase):
    def assert_refused(self, kind, **options):
        conn = self.make_items(500)
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.backfill(self.db, options.pop("table", "items"), **options)
        self.assertEqual(caught.exception.kind, kind, caught.exception)
        self.assertEqual(self.counts(conn), {0: 500})
        self.assertNotIn("metadata", self.tables(conn))
        return str(caught.exception)

    def test_unknown_table_is_refused_before_any_batch(self):
        self.assertIn("nope", self.assert_refused("no-table", table="nope", set="n = 1"))

    def test_unknown_column_is_refused_before_any_batch(self):
        self.assertIn("missing", self.assert_refused("bad-request", set="missing = 1"))
        os.remove(self.db)
        self.assert_refused("bad-request", set="n = 1", where="missing > 0")

    def test_invalid_sql_is_refused_before_any_batch(self):
        self.assert_refused("bad-request", set="n = = 1")
        for where in ("1) OR (1", "1; DELETE FROM items", "1 /* unterminated"):
            os.remove(self.db)
            self.assert_refused("bad-request", set="n = 1", where=where)

    def test_a_trailing_comment_does_not_swallow_the_where_or_the_batch_range(self):
        conn = self.make_items(500)
        self.assertEqual(sqlmigrate.backfill(self.db, "items", set="n = n + 1 -- bump",
                                             where="id < 3 -- small", batch_rows=100,
                                             target_ms=None), 2)
        self.assertEqual(self.counts(conn), {0: 498, 1: 2})

    def test_a_batch_size_or_time_target_that_is_not_a_positive_number_is_refused(self):
        # target_ms="x" used to fail after the first batch had committed; 0 or
        # -1 rows ran one-row batches; a size too big for SQLite failed as a
        # "failed batch" (status 1), not a bad request.
        for options in ({"batch_rows": 0}, {"batch_rows": -1}, {"batch_rows": None},
                        {"batch_rows": "10"}, {"batch_rows": 1.5}, {"batch_rows": True},
                        {"batch_rows": 2 ** 63}, {"target_ms": 0}, {"target_ms": -5},
                        {"target_ms": "x"}, {"target_ms": float("inf")},
                        {"target_ms": float("nan")}, {"target_ms": True}):
            if os.path.exists(self.db):
                os.remove(self.db)
            message = self.assert_refused("bad-request", set="n = n + 1", **dict(options))
            self.assertIn(list(options)[0], message)
            self.assertEqual(len(message.splitlines()), 1, message)

    def test_a_name_outside_a_migration_that_reads_as_a_migrations_position_is_refused(self):
        # 'backfill:v2:up:x' is where migration 2's backfill keeps its position:
        # the runner deletes it when it records (or passes below) v2, and the
        # stopped backfill would start over, doing its rows again.
        for name in ("v2:up:x", "v2:x"):
            if os.path.exists(self.db):
                os.remove(self.db)
            self.assertIn(name, self.assert_refused("bad-request", set="n = n + 1", name=name))

    def test_a_name_with_a_non_ascii_digit_is_an_ordinary_name(self):
        # str.isdigit() takes '\u00b2', which int() does not: only v<ASCII digits>
        # is a migration's position.
        conn = self.make_items(500)
        self.assertEqual(sqlmigrate.backfill(self.db, "items", set="n = n + 1",
                                             name="v\u00b2:x"), 500)
        self.assertEqual(self.counts(conn), {1: 500})

    def test_set_and_apply_together_or_neither_are_refused(self):
        self.assert_refused("bad-request", set="n = 1", apply=lambda db, batch: 0)
        os.remove(self.db)
        self.assert_refused("bad-request")

    def test_a_second_backfill_of_one_table_in_one_migration_needs_its_own_name(self):
        conn = self.make_items(100)
        twice = '''
            import sqlmigrate

            transaction = False

            def up(db):
                sqlmigrate.backfill(db, "items", set="n = n + 1")
                sqlmigrate.backfill(db, "items", set="note = 'x'"%s)
            '''
        self.write("001-twice.py", twice % "")
        status, _, err = self.run_cli("up")
        self.assertEqual(status, 1, err)
        self.assertIn("its own name=", err)
        # Named, it runs; the first one, done already, is not done again.
        self.write("001-twice.py", twice % ', name="notes"')
        self.assertEqual(self.run_cli("up")[0], 0)
        self.assertEqual(conn.execute("SELECT n, note, count(*) FROM items GROUP BY 1, 2")
                         .fetchall(), [(1, "x", 100)])

    def test_the_same_name_through_db_and_a_cursor_taken_before_is_still_refused(self):
        conn = self.make_items(100)
        self.write("001-twice.py", '''
            import sqlmigrate

            transaction = False

            def up(db):
                cursor = db.cursor()
                sqlmigrate.backfill(db, "items", set="n = n + 1")
                sqlmigrate.backfill(cursor, "items", set="note = 'x'")
            ''')
        status, _, err = self.run_cli("up")
        self.assertEqual(status, 1, err)
        self.assertIn("its own name=", err)
        self.assertEqual(conn.execute("SELECT count(*) FROM items WHERE note = 'x'")
                         .fetchone()[0], 0)

    def test_inside_a_transactional_migration_it_is_refused_saying_set_transaction_false(self):
        conn = self.make_items(100)
        self.write("001-bump.py", '''
            import sqlmigrate

            def up(db):
                sqlmigrate.backfill(db, "items", set="n = n + 1")
            ''')
        status, _, err = self.run_cli("up")
        self.assertEqual(status, 1, err)
        self.assertIn("transaction = False", err)
        self.assertEqual(self.counts(conn), {0: 100})


class FailingBatch(BackfillTestCase):
    def stopped_at_row_700(self):
        """1000 items, a backfill of n = n + 1 stopped by row 750's CHECK."""
        conn = self.make_items(1000)
        conn.execute("UPDATE items SET n = 4 WHERE id = 750")
        with self.assertRaises(sqlmigrate.MigrationError):
            sqlmigrate.backfill(self.db, "items", set="n = n + 1", batch_rows=100,
                                target_ms=None)
        return conn

    def test_a_failing_batch_is_rolled_back_alone_and_the_error_names_its_range(self):
        conn = self.make_items(1000)
        conn.execute("UPDATE items SET n = 4 WHERE id = 750")  # n + 1 breaks CHECK (n < 5)
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.backfill(self.db, "items", set="n = n + 1", batch_rows=100,
                                target_ms=None)
        e = caught.exception
        self.assertEqual(e.kind, "backfill-failed")
        self.assertEqual(e.batch, ((700,), (800,)))
        self.assertIn("rowid > 700 AND rowid <= 800", str(e))
        self.assertEqual(conn.execute("SELECT count(*) FROM items WHERE n = 1").fetchall()[0][0], 700)
        self.assertEqual(conn.execute("SELECT max(id) FROM items WHERE n = 1").fetchall()[0][0], 700)
        # Fixed, it continues with the failed batch, not from the start.
        conn.execute("UPDATE items SET n = 0 WHERE id = 750")
        self.assertEqual(sqlmigrate.backfill(self.db, "items", set="n = n + 1",
                                             batch_rows=100), 300)
        self.assertEqual(self.counts(conn), {1: 1000})

    def test_status_shows_a_backfill_in_progress_with_its_position(self):
        conn = self.make_items(1000)
        conn.execute("UPDATE items SET n = 4 WHERE id = 750")
        self.write_backfill_migration(target_ms=None)
        self.assertEqual(self.run_cli("up")[0], 1)
        self.assertIn("backfill items (v1): in progress, after key 600, 600 rows done",
                      self.run_cli("status")[1])
        report = json.loads(self.run_cli("status", "--json")[1])
        self.assertEqual(report["backfills"], [{"version": 1, "direction": "up", "table": "items", "after": [600],
                                                "rows": 600, "done": False}])
        conn.execute("UPDATE items SET n = 0 WHERE id = 750")
        self.assertEqual(self.run_cli("up")[0], 0)
        self.assertEqual(self.counts(conn), {1: 1000})
        self.assertEqual(self.backfill_keys(conn), [])
        self.assertNotIn("backfill", self.run_cli("status")[1])

    @unittest.skipIf(sqlite3.sqlite_version_info < (3, 8, 2), "WITHOUT ROWID is SQLite 3.8.2+")
    def test_status_shows_a_blob_keys_position_as_json_and_as_an_sql_literal(self):
        # A blob in the position made `status --json` end in a traceback.
        conn = self.connect()
        conn.execute("CREATE TABLE items (k BLOB PRIMARY KEY, n INTEGER NOT NULL DEFAULT 0 "
                     "CHECK (n < 5)) WITHOUT ROWID")
        conn.executemany("INSERT INTO items (k) VALUES (?)", ((bytes([i]),) for i in range(100)))
        conn.execute("UPDATE items SET n = 4 WHERE k = x'40'")
        self.write("001-bump.py", BACKFILL_MIGRATION % {"rows": 10, "target_ms": None})
        self.assertEqual(self.run_cli("up")[0], 1)
        status, out, err = self.run_cli("status", "--json")
        self.assertEqual(status, 0, err)
        self.assertEqual(json.loads(out)["backfills"][0]["after"], [{"blob": "3b"}])
        self.assertIn("in progress, after key x'3b', 60 rows done", self.run_cli("status")[1])

    def test_a_stopped_backfill_is_resumed_only_by_the_same_work(self):
        # Another set= (or apply=) under the same key would skip the rows the
        # first one reached, and report success.
        conn = self.stopped_at_row_700()
        for other in ({"set": "note = 'x'"}, {"apply": lambda db, batch: 0}):
            with self.assertRaises(sqlmigrate.MigrationError) as caught:
                sqlmigrate.backfill(self.db, "items", batch_rows=100, **other)
            self.assertEqual(caught.exception.kind, "backfill-changed")
            self.assertIn("name=", str(caught.exception))
        self.assertEqual(conn.execute("SELECT count(*) FROM items WHERE note IS NOT NULL")
                         .fetchall()[0][0], 0)
        self.assertEqual(sqlmigrate.backfill(self.db, "items", set="note = 'x'", name="notes"),
                         1000)  # its own name: its own position
        conn.execute("UPDATE items SET n = 0 WHERE id = 750")
        self.assertEqual(sqlmigrate.backfill(self.db, "items", set="n = n + 1"), 300)
        self.assertEqual(self.counts(conn), {1: 1000})

    def test_a_stopped_position_is_not_resumed_on_another_table_under_the_same_name(self):
        # The same name= and set= on another table would start that table
        # past the first one's position, skip its rows, and report success.
        conn = self.make_items(1000)
        conn.execute("UPDATE items SET n = 4 WHERE id = 750")
        with self.assertRaises(sqlmigrate.MigrationError):
            sqlmigrate.backfill(self.db, "items", set="n = n + 1", batch_rows=100,
                                target_ms=None, name="bump")
        conn.execute("CREATE TABLE others (id INTEGER PRIMARY KEY, n INTEGER NOT NULL DEFAULT 0)")
        conn.execute("INSERT INTO others (id) SELECT id FROM items")
        for dry_run in (True, False):
            with self.assertRaises(sqlmigrate.MigrationError) as caught:
                sqlmigrate.backfill(self.db, "others", set="n = n + 1", name="bump",
                                    dry_run=dry_run)
            self.assertEqual(caught.exception.kind, "backfill-changed")
            self.assertIn("items", str(caught.exception))
        self.assertEqual(conn.execute("SELECT count(*) FROM others WHERE n = 0").fetchall()[0][0],
                         1000)
        self.assertEqual(sqlmigrate.backfill(self.db, "others", set="n = n + 1", name="other"),
                         1000)

    def test_a_stopped_backfill_resumes_whatever_the_spelling_of_its_tables_name(self):
        # Table names compare case-insensitively: "Items" is the table a
        # backfill of "items" stopped on, and starting over did rows twice.
        conn = self.stopped_at_row_700()
        conn.execute("UPDATE items SET n = 0 WHERE id = 750")
        self.assertEqual(sqlmigrate.backfill(self.db, "ITEMS", set="n = n + 1", dry_run=True), 300)
        self.assertEqual(sqlmigrate.backfill(self.db, "Items", set="n = n + 1"), 300)
        self.assertEqual(self.counts(conn), {1: 1000})
        self.assertEqual(conn.execute("SELECT count(*) FROM metadata").fetchall()[0][0], 0)
        # Started under another spelling, it is found under the schema's too.
        conn.execute("UPDATE items SET n = 4 WHERE id = 750")
        with self.assertRaises(sqlmigrate.MigrationError):
            sqlmigrate.backfill(self.db, "ITEMS", set="n = n + 1", batch_rows=100,
                                target_ms=None)
        conn.execute("UPDATE items SET n = 1 WHERE id = 750")
        self.assertEqual(sqlmigrate.backfill(self.db, "items", set="n = n + 1"), 300)
        self.assertEqual(self.counts(conn), {2: 1000})

    def test_a_dry_run_of_other_work_under_a_stopped_position_is_refused_as_the_run_would_be(self):
        # It counted from the other work's position: rows the real run, which
        # refuses, would never reach.
        conn = self.stopped_at_row_700()
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.backfill(self.db, "items", set="note = 'x'", dry_run=True)
        self.assertEqual(caught.exception.kind, "backfill-changed")
        self.assertEqual(sqlmigrate.backfill(self.db, "items", set="note = 'x'", dry_run=True,
                                             name="notes"), 1000)
        self.assertEqual(conn.execute("SELECT count(*) FROM items WHERE note IS NOT NULL")
                         .fetchall()[0][0], 0)

    def test_dry_run_counts_from_the_stored_position(self):
        conn = self.stopped_at_row_700()
        self.assertEqual(sqlmigrate.backfill(self.db, "items", set="n = n + 1", where="n < 4",
                                             dry_run=True), 299)


class Processes(BackfillTestCase):
    ROWS = 50000

    def start_up(self):
        return subprocess.Popen([sys.executable, SCRIPT, "--db", self.db, "--dir", self.dir,
                                 "--busy-timeout", "60000", "up"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def test_kill_9_at_random_moments_never_applies_a_batch_twice(self):
        conn = self.make_items(self.ROWS)
        conn.execute("PRAGMA journal_mode = WAL").fetchall()  # this test's reads never block the run
        self.write_backfill_migration(rows=25, target_ms=None)  # 2000 batches
        rng = random.Random(20261130)
        # Each run is killed once the stored position has gone a random number
        # of rows past where the run before stopped (so every run is killed
        # mid-backfill however slow the machine), plus a random moment (inside
        # a batch, between batches); the first one at a random moment of its
        # start-up.
        steps = [None] + [rng.randint(1000, 6000) for _ in range(6)]
        positions = set()
        for trial, step in enumerate(steps):
            keys = self.backfill_keys(conn)
            target = step and step + (json.loads(keys[0][1]).get("rows", 0) if keys else 0)
            proc = self.start_up()
            deadline = time.time() + 60
            while target and proc.poll() is None and time.time() < deadline:
                keys = self.backfill_keys(conn)
                if keys and json.loads(keys[0][1]).get("rows", 0) >= target:
                    break
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.3 if target is None else 0.02))
            proc.kill()
            proc.wait()
            counts = self.counts(conn)
            self.assertEqual(set(counts) - {0, 1}, set(), "trial %d: %r" % (trial, counts))
            # Rows are done in order: everything up to the position, nothing after.
            keys = self.backfill_keys(conn)
            if keys and not json.loads(keys[0][1]).get("done"):
                after = json.loads(keys[0][1])["after"][0]
                positions.add(after)
                self.assertEqual(conn.execute("SELECT max(id) FROM items WHERE n = 1")
                                 .fetchall()[0][0], after, trial)
        status, _, err = self.run_cli("up")
        self.assertEqual(status, 0, err)
        self.assertEqual(self.counts(conn), {1: self.ROWS})
        self.assertEqual(self.schema_version(), "1")
        self.assertEqual(self.backfill_keys(conn), [])
        self.assertGreaterEqual(len(positions), 3, positions)  # kills landed mid-backfill

    def test_two_runners_doing_the_same_backfill_never_process_a_batch_twice(self):
        conn = self.make_items(self.ROWS)
        conn.execute("PRAGMA journal_mode = WAL").fetchall()
        # 200 batches: enough to interleave, few enough to be quick (each
        # runner pauses 25 ms after a batch when the other has committed).
        self.write_backfill_migration(rows=250, target_ms=None)
        go = os.path.join(self.tmp, "go")
        workers = [subprocess.Popen([sys.executable, "-c", WORKER, self.db, self.dir, go],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                   for _ in range(2)]
        time.sleep(0.3)
        open(go, "w").close()
        for worker in workers:
            out, err = worker.communicate(timeout=120)
            self.assertEqual(worker.returncode, 0, err.decode())
        self.assertEqual(self.counts(conn), {1: self.ROWS})
        self.assertEqual(self.schema_version(), "1")
        self.assertEqual(self.backfill_keys(conn), [])


    def test_a_second_runner_outside_a_migration_stops_when_the_other_finishes(self):
        # Outside a migration the last batch deletes the position: a second
        # runner that was part way through (or waiting for its first batch's
        # lock) found none and started over, doing every row again.  Each batch
        # sleeps (3 s in all), so the second starts well before the first ends.
        conn = self.make_items(6000)
        conn.execute("PRAGMA journal_mode = WAL").fetchall()
        runner = textwrap.dedent("""
            import sqlite3, sys, time
            sys.path.insert(0, %r)
            import sqlmigrate

            def bump(db, batch):
                time.sleep(0.01)
                return db.execute("UPDATE items SET n = n + 1 WHERE " + batch.where,
                                  batch.params).rowcount

            conn = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
            print(sqlmigrate.backfill(conn, "items", apply=bump, batch_rows=20, target_ms=None))
            """ % ROOT)
        first = subprocess.Popen([sys.executable, "-c", runner, self.db],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while not self.backfill_keys(conn) and first.poll() is None and time.time() < deadline:
            time.sleep(0.002)
        second = subprocess.Popen([sys.executable, "-c", runner, self.db],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        done = []
        for proc in (first, second):
            out, err = proc.communicate(timeout=120)
            self.assertEqual(proc.returncode, 0, err.decode())
            done.append(int(out))
        self.assertEqual(self.counts(conn), {1: 6000})
        self.assertEqual(sum(done), 6000, done)  # the rows each reports changed are its own
        self.assertEqual(self.backfill_keys(conn), [])


class Progress(BackfillTestCase):
    def test_a_migrations_backfill_reports_rows_done_through_the_runners_progress(self):
        self.make_items(1000)
        self.write_backfill_migration(rows=300, target_ms=None)
        events = []
        sqlmigrate.Migrator(self.db, self.dir, progress=lambda event, m, direction, **details:
                            events.append(details) if event == "copy" else None).up()
        self.assertEqual([(e["action"], e["table"], e["copied"], e["total"]) for e in events],
                         [("backfilling", "items", n, 1000) for n in (300, 600, 900, 1000)])

    def test_terminal_status_line_shows_rows_done_rate_and_estimate(self):
        tty = io.StringIO()
        progress = sqlmigrate._Progress(io.StringIO(), tty, live=True)
        migration = types.SimpleNamespace(version=3, name="Lower models")
        progress("start", migration, "up")
        progress("copy", migration, "up", table="usage_logs", copied=250000, total=1000000,
                 action="backfilling", rate=50000.0)
        progress("end", migration, "up")
        self.assertIn("backfilling usage_logs: 250000 of 1000000 rows, 50000 rows/s, about 15 s "
                      "left", tty.getvalue())


class ConnectionSettings(BackfillTestCase):
    def test_the_connections_wal_autocheckpoint_is_put_back(self):
        conn = self.make_items(2000)
        conn.execute("PRAGMA journal_mode = WAL").fetchall()
        conn.execute("PRAGMA wal_autocheckpoint = 123").fetchall()
        sqlmigrate.backfill(conn, "items", set="n = 1", batch_rows=100, target_ms=None)
        self.assertEqual(conn.execute("PRAGMA wal_autocheckpoint").fetchall()[0][0], 123)
        self.assertEqual(self.counts(conn), {1: 2000})


    def test_the_page_cache_is_16_mib_during_the_run_and_put_back_after(self):
        # The batches rewrite the same index pages; a cache that keeps them
        # between batches measured 0.80x -> 0.98x one UPDATE on 10M rows.
        conn = self.make_items(500)
        seen = []

        def look(db, batch):
            seen.append(db.execute("PRAGMA cache_size").fetchall()[0][0])
            return 0
        for own, during in ((-2000, -16384), (-65536, -65536), (100000, 100000)):
            with self.subTest(cache_size=own):
                del seen[:]
                conn.execute("PRAGMA cache_size = %d" % own)
                sqlmigrate.backfill(conn, "items", apply=look, batch_rows=100, target_ms=None,
                                    name="look%d" % own)
                self.assertEqual(set(seen), {during})
                self.assertEqual(conn.execute("PRAGMA cache_size").fetchall()[0][0], own)


# Migration 002: a backfill in up and in down; its up fails once past row 50
# while the file FAIL names exists (a kill there leaves the same position).
UP_AND_DOWN_MIGRATION = '''
import os, sqlmigrate

transaction = False

def bump(db, batch):
    if os.path.exists(%(fail)r) and batch.after and batch.after[0] >= 50:
        raise RuntimeError("stopped at 50")
    return db.execute("UPDATE items SET n = n + 1 WHERE " + batch.where, batch.params).rowcount

def up(db):
    sqlmigrate.backfill(db, "items", apply=bump, batch_rows=10, target_ms=None)

def down(db):
    sqlmigrate.backfill(db, "items", set="n = n - 1", batch_rows=10, target_ms=None)
'''


class PositionsAndHistory(BackfillTestCase):
    def setUp(self):
        super(PositionsAndHistory, self).setUp()
        self.fail_file = os.path.join(self.tmp, "fail")
        # 100 rows without WITH RECURSIVE (SQLite 3.8.3+): 10 x 10 VALUES rows.
        ten = "(SELECT 0 UNION ALL SELECT 0 UNION ALL SELECT 0 UNION ALL SELECT 0 UNION ALL " \
              "SELECT 0 UNION ALL SELECT 0 UNION ALL SELECT 0 UNION ALL SELECT 0 UNION ALL " \
              "SELECT 0 UNION ALL SELECT 0)"
        self.write_sql(1, "items", "CREATE TABLE items (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);\n"
                       "INSERT INTO items (n) SELECT 0 FROM %s AS a, %s AS b;" % (ten, ten),
                       "DROP TABLE items;")
        self.write("002-bump.py", UP_AND_DOWN_MIGRATION % {"fail": self.fail_file})

    def test_a_backfill_in_down_runs_although_the_version_is_still_recorded(self):
        self.assertEqual(self.run_cli("up")[0], 0)
        conn = self.connect()
        self.assertEqual(self.counts(conn), {1: 100})
        status, _, err = self.run_cli("down")
        self.assertEqual(status, 0, err)
        self.assertEqual(self.counts(conn), {0: 100})
        self.assertEqual(self.schema_version(), "1")
        self.assertEqual(self.backfill_keys(conn), [])
        # Up again: a fresh backfill, not taken for done by a down's position.
        self.assertEqual(self.run_cli("up")[0], 0)
        self.assertEqual(self.counts(conn), {1: 100})

    def test_rolling_back_below_a_version_deletes_its_stale_backfill_position(self):
        open(self.fail_file, "w").close()
        self.assertEqual(self.run_cli("up")[0], 1)
        conn = self.connect()
        self.assertEqual(len(self.backfill_keys(conn)), 1)
        status, _, err = self.run_cli("down")  # v1's down: the table goes, rows and all
        self.assertEqual(status, 0, err)
        self.assertEqual(self.schema_version(), "0")
        self.assertEqual(self.backfill_keys(conn), [])
        os.remove(self.fail_file)
        status, _, err = self.run_cli("up")
        self.assertEqual(status, 0, err)
        self.assertEqual(self.counts(conn), {1: 100})  # not resumed at row 50

    def test_a_position_left_by_an_edited_migration_is_refused_saying_how_to_start_over(self):
        open(self.fail_file, "w").close()
        self.assertEqual(self.run_cli("up")[0], 1)
        conn = self.connect()
        self.assertEqual(self.counts(conn), {1: 50, 0: 50})
        self.write("002-bump.py", (UP_AND_DOWN_MIGRATION % {"fail": self.fail_file}).replace(
            "n = n + 1", "n = n + 2"))
        os.remove(self.fail_file)
        status, _, err = self.run_cli("up")
        self.assertEqual(status, 1, err)
        self.assertIn("changed since", err)
        self.assertIn("backfill:v2:up:items", err)
        self.assertEqual(self.counts(conn), {1: 50, 0: 50})  # the new code ran on no row
        # Starting over as the message says: the new code over every row.
        conn.execute("UPDATE items SET n = 0")
        conn.execute("DELETE FROM metadata WHERE key = 'backfill:v2:up:items'")
        status, _, err = self.run_cli("up")
        self.assertEqual(status, 0, err)
        self.assertEqual(self.counts(conn), {2: 100})


class UnusableKeys(BackfillTestCase):
    def test_a_nullable_key_with_every_rowid_name_taken_is_refused_up_front(self):
        conn = self.connect()
        conn.execute("CREATE TABLE t (rowid INT, oid INT, _rowid_ INT, code TEXT PRIMARY KEY, "
                     "n INT)")
        conn.execute("INSERT INTO t (code, n) VALUES (NULL, 0), (NULL, 0), ('a', 0), ('b', 0)")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.backfill(self.db, "t", set="n = n + 1", batch_rows=2, target_ms=None)
        self.assertEqual(caught.exception.kind, "bad-request")
        self.assertIn("no usable key", str(caught.exception))
        self.assertEqual(conn.execute("SELECT sum(n) FROM t").fetchall()[0][0], 0)
        # With the key NOT NULL, it is walked by the key.
        conn.execute("CREATE TABLE u (rowid INT, oid INT, _rowid_ INT, code TEXT PRIMARY KEY "
                     "NOT NULL, n INT)")
        conn.execute("INSERT INTO u (code, n) VALUES ('a', 0), ('b', 0), ('c', 0)")
        self.assertEqual(sqlmigrate.backfill(self.db, "u", set="n = n + 1", batch_rows=2,
                                             target_ms=None), 3)
        self.assertEqual(conn.execute("SELECT sum(n) FROM u").fetchall()[0][0], 3)

    def test_an_integer_primary_key_desc_is_not_taken_for_the_rowid_that_cannot_be_null(self):
        # INTEGER PRIMARY KEY DESC is no rowid alias (an SQLite quirk): it may
        # hold NULL, and paging by it skipped every row after a NULL while
        # reporting success.
        conn = self.connect()
        conn.execute("CREATE TABLE t (rowid INT, oid INT, _rowid_ INT, "
                     "k INTEGER PRIMARY KEY DESC, n INT)")
        conn.execute("INSERT INTO t (k, n) VALUES (NULL, 0), (NULL, 0), (1, 0), (2, 0)")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            sqlmigrate.backfill(self.db, "t", set="n = n + 1", batch_rows=1, target_ms=None)
        self.assertEqual(caught.exception.kind, "bad-request")
        self.assertIn("no usable key", str(caught.exception))
        self.assertEqual(conn.execute("SELECT sum(n) FROM t").fetchall()[0][0], 0)
        # The same column without DESC is the rowid: never NULL, walked by it.
        conn.execute("CREATE TABLE u (rowid INT, oid INT, _rowid_ INT, "
                     "k INTEGER PRIMARY KEY, n INT)")
        conn.execute("INSERT INTO u (k, n) VALUES (NULL, 0), (NULL, 0), (5, 0)")
        self.assertEqual(sqlmigrate.backfill(self.db, "u", set="n = n + 1", batch_rows=1,
                                             target_ms=None), 3)
        self.assertEqual(conn.execute("SELECT sum(n) FROM u").fetchall()[0][0], 3)

    def test_a_set_that_assigns_a_column_of_the_paging_key_is_refused(self):
        conn = self.make_items(10)
        conn.execute("CREATE TABLE codes (code TEXT PRIMARY KEY, n INT NOT NULL)%s" % (
            " WITHOUT ROWID" if sqlite3.sqlite_version_info >= (3, 8, 2) else ""))
        conn.execute("INSERT INTO codes VALUES ('A1', 0)")
        conn.execute("INSERT INTO codes VALUES ('B2', 0)")
        for table, set in (("items", "id = id + 10, n = n + 1"),
                           ("items", "n = n + 1, \"ID\" = id + 10"),
                           ("items", "n = 1, rowid = rowid + 10"),
                           ("items", "(n, id) = (1, id + 10)")) + ((
                               ("codes", "n = n + 1, code = lower(code)"),)  # paged by its key
                                if sqlite3.sqlite_version_info >= (3, 8, 2) else ()):
            with self.assertRaises(sqlmigrate.MigrationError) as caught:
                sqlmigrate.backfill(self.db, table, set=set, batch_rows=2, target_ms=None)
            self.assertEqual(caught.exception.kind, "bad-request", set)
            self.assertIn("key", str(caught.exception), set)
        self.assertEqual(self.counts(conn), {0: 10})
        self.assertEqual(conn.execute("SELECT * FROM codes").fetchall(), [("A1", 0), ("B2", 0)])
        # Other columns, or a key column only read, are fine.
        self.assertEqual(sqlmigrate.backfill(self.db, "items", set="n = (id % 2), note = 'id'",
                                             batch_rows=3, target_ms=None), 10)
