"""Reading SQL text: where statements end (split_sql), and how migration files
are decoded before their markers are looked for (BOM, line endings)."""

import hashlib
import random
import sqlite3

from tests.support import TempDirTestCase, sqlmigrate


def run_split(sql, setup=""):
    """Run split_sql's statements one by one on a fresh in-memory database:
    (error or None, dump).  conn.execute refuses text holding two statements,
    so a statement split too late fails here as well as one split too early."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        conn.executescript(setup)
        error = None
        try:
            for statement in sqlmigrate._split_sql(sql):
                conn.execute(statement)
        except (sqlite3.Error, sqlite3.Warning) as e:
            error = e
        return error, list(conn.iterdump())
    finally:
        conn.close()


def run_script(sql, setup=""):
    """The same script through executescript (SQLite's own statement reader)."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        conn.executescript(setup)
        error = None
        try:
            conn.executescript(sql)
        except sqlite3.Error as e:
            error = e
        return error, list(conn.iterdump())
    finally:
        conn.close()


EVENTS = "CREATE TABLE events (start INTEGER, end INTEGER, span INTEGER, note TEXT);"


class TriggerBodies(TempDirTestCase):
    def assertSplitsLikeSQLite(self, sql, statements):
        self.assertEqual(len(sqlmigrate._split_sql(sql)), statements, sqlmigrate._split_sql(sql))
        error, dump = run_split(sql, EVENTS)
        self.assertIsNone(error)
        self.assertEqual(run_script(sql, EVENTS), (None, dump))

    def test_column_named_end_set_in_a_trigger_body_does_not_end_the_trigger(self):
        self.assertSplitsLikeSQLite(
            "CREATE TRIGGER t AFTER INSERT ON events BEGIN\n"
            "  UPDATE events SET end = NEW.start + 1 WHERE rowid = NEW.rowid;\n"
            "  UPDATE events SET note = 'set' WHERE rowid = NEW.rowid;\n"
            "END;\n"
            "INSERT INTO events (start) VALUES (5);", 2)

    def test_new_end_in_an_expression_does_not_end_the_trigger(self):
        self.assertSplitsLikeSQLite(
            "CREATE TRIGGER t AFTER INSERT ON events BEGIN\n"
            "  UPDATE events SET span = NEW.end - NEW.start WHERE rowid = NEW.rowid;\n"
            "  UPDATE events SET note = 'spanned' WHERE rowid = NEW.rowid;\n"
            "END;\n"
            "INSERT INTO events (start, end) VALUES (2, 7);", 2)

    def test_when_new_end_clause_does_not_end_the_trigger(self):
        self.assertSplitsLikeSQLite(
            "CREATE TRIGGER t AFTER INSERT ON events WHEN NEW.end > 0 BEGIN\n"
            "  UPDATE events SET note = 'positive' WHERE rowid = NEW.rowid;\n"
            "  UPDATE events SET span = 1 WHERE rowid = NEW.rowid;\n"
            "END;\n"
            "INSERT INTO events (start, end) VALUES (1, 3);", 2)

    def test_update_of_end_column_trigger_is_one_statement(self):
        self.assertSplitsLikeSQLite(
            "CREATE TRIGGER t AFTER UPDATE OF end ON events BEGIN\n"
            "  UPDATE events SET span = end - start WHERE end = NEW.end;\n"
            "  SELECT 1;\n"
            "END;\n"
            "INSERT INTO events VALUES (1, 2, 0, NULL); UPDATE events SET end = 9;", 3)

    def test_case_end_inside_trigger_bodies_and_when_clauses(self):
        self.assertSplitsLikeSQLite(
            "CREATE TRIGGER t AFTER INSERT ON events\n"
            "WHEN CASE WHEN NEW.start > 0 THEN 1 ELSE 0 END BEGIN\n"
            "  UPDATE events SET note = CASE WHEN NEW.end > 5 THEN 'long' ELSE\n"
            "    CASE NEW.end WHEN 1 THEN 'one' ELSE 'short' END END;\n"
            "  UPDATE events SET span = CASE WHEN 1 THEN 2 END;\n"
            "END;\n"
            "INSERT INTO events (start, end) VALUES (1, 1);", 2)

    def test_begin_and_end_in_strings_comments_and_quoted_names_stay_inside(self):
        self.assertSplitsLikeSQLite(
            "CREATE TRIGGER \"end;\" AFTER INSERT ON events BEGIN\n"
            "  UPDATE events SET note = 'BEGIN; END;' WHERE rowid = NEW.rowid; -- END;\n"
            "  /* END; BEGIN */ UPDATE events SET \"end\" = 4, [end] = 4;\n"
            "END;\n"
            "INSERT INTO events (start) VALUES (1);", 2)

    def test_trigger_as_last_statement_without_semicolon_is_kept_whole(self):
        sql = ("INSERT INTO events (start) VALUES (1);\n"
               "CREATE TRIGGER t AFTER INSERT ON events BEGIN\n"
               "  UPDATE events SET end = 1; SELECT 2;\nEND")
        self.assertEqual(sqlmigrate._split_sql(sql), [
            "INSERT INTO events (start) VALUES (1)",
            "CREATE TRIGGER t AFTER INSERT ON events BEGIN\n"
            "  UPDATE events SET end = 1; SELECT 2;\nEND"])
        self.assertIsNone(run_split(sql, EVENTS)[0])

    def test_temp_trigger_and_end_named_trigger_split_where_sqlite_does(self):
        self.assertSplitsLikeSQLite(
            "CREATE TEMP TRIGGER end AFTER INSERT ON events BEGIN\n"
            "  UPDATE events SET end = 2;\n"
            "END; CREATE TABLE trigger (end); INSERT INTO events (start) VALUES (3)", 3)

    def test_a_migration_with_an_end_column_trigger_applies(self):
        self.write_sql(1, "events", EVENTS + "\n"
                       "CREATE TRIGGER t AFTER INSERT ON events BEGIN\n"
                       "  UPDATE events SET end = NEW.start + 1 WHERE rowid = NEW.rowid;\n"
                       "END;\n"
                       "INSERT INTO events (start) VALUES (41);",
                       "DROP TABLE events;")
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "up")
        self.assertEqual(status, 0, err)
        self.assertEqual(self.connect().execute("SELECT end FROM events").fetchall(), [(42,)])

    def test_statement_ends_agree_with_sqlites_complete_statement(self):
        # Random soups of the words sqlite3_complete() cares about: a script
        # ending in ';' is complete to SQLite exactly when our splitter puts
        # what follows it in a statement of its own.
        if not hasattr(sqlite3, "complete_statement"):
            self.skipTest("this Python's sqlite3 has no complete_statement (PyPy)")
        words = ["CREATE", "TEMP", "TRIGGER", "END", "EXPLAIN", "BEGIN", "x", "end", "'e;'",
                 '"END"', "/* ; */", "-- ;\n", "CASE", "(", ")", ";", "; END", "; end ;"]
        heads = ["", "CREATE TRIGGER", "CREATE TEMP TRIGGER", "EXPLAIN CREATE TRIGGER"]
        rng = random.Random(7)
        for _ in range(3000):
            sql = " ".join([rng.choice(heads)] + [rng.choice(words) for _ in
                                                  range(rng.randint(1, 12))]) + " ;"
            ours = sqlmigrate._split_sql(sql + "\nnext")[-1] == "next"
            self.assertEqual(ours, sqlite3.complete_statement(sql), sql)

    def test_each_statement_is_found_at_its_offset_on_both_paths(self):
        # With offsets, each statement is the text at its offset: past
        # comments and spaces before it, even ones quoting the statement.
        rng = random.Random(11)
        pieces = ["DROP TABLE t", "-- DROP TABLE t\n", "/* DROP TABLE t; */", "\n\t ", ";",
                  "SELECT 'a;b'", "CREATE TRIGGER g AFTER INSERT ON t BEGIN SELECT 1; END"]
        for _ in range(200):
            sql = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
            found = sqlmigrate._split_sql(sql, offsets=True)
            self.assertEqual([statement for _, statement in found], sqlmigrate._split_sql(sql))
            for at, statement in found:
                self.assertEqual(sql[at:at + len(statement)], statement, sql)
        plain = "  DROP TABLE t ;\n\nDROP TABLE u"  # nothing hides a ';': the quick path
        self.assertEqual(sqlmigrate._split_sql(plain, offsets=True),
                         [(2, "DROP TABLE t"), (18, "DROP TABLE u")])

    def test_split_sql_agrees_with_executescript_on_random_scripts(self):
        # Statements, triggers and separators that hide or show a ';'; each
        # script runs both ways on fresh in-memory databases.
        statements = [
            "INSERT INTO events (start, end) VALUES (1, 2)",
            "INSERT INTO events (note) VALUES ('a;b END; BEGIN')",
            "UPDATE events SET end = end + 1",
            "UPDATE events SET note = CASE WHEN end > 1 THEN 'x' ELSE 'y' END",
            "DELETE FROM events WHERE end = 3",
            "CREATE TRIGGER IF NOT EXISTS t1 AFTER INSERT ON events BEGIN "
            "UPDATE events SET end = NEW.start + 1 WHERE rowid = NEW.rowid; END",
            "CREATE TRIGGER IF NOT EXISTS t2 AFTER UPDATE OF end ON events "
            "WHEN NEW.end > 0 BEGIN UPDATE events SET span = NEW.end - NEW.start "
            "WHERE rowid = NEW.rowid; SELECT CASE WHEN 1 THEN 2 END; END",
            "CREATE TRIGGER IF NOT EXISTS t3 BEFORE DELETE ON events BEGIN "
            "SELECT 'END;'; /* END; */ SELECT \"end\" FROM events; -- END;\n END",
            "CREATE TABLE IF NOT EXISTS \"we;ird\" ([a;b], `c;`)",
            "CREATE VIEW IF NOT EXISTS v AS SELECT end FROM events",
            "SELECT FROM",  # a syntax error: both ways must stop at it
        ]
        separators = [";", ";\n", " ; ", ";\n-- end;\n", "; /* ; */\n", ";;", "\n;"]
        rng = random.Random(2024)
        for _ in range(150):
            parts = []
            for _ in range(rng.randint(1, 6)):
                parts.append(rng.choice(statements))
                parts.append(rng.choice(separators))
            if rng.random() < 0.3:
                parts.pop()  # a last statement without ';'
            sql = "".join(parts)
            self.assertEqual(run_split(sql, EVENTS)[1], run_script(sql, EVENTS)[1], sql)
            self.assertEqual(run_split(sql, EVENTS)[0] is None,
                             run_script(sql, EVENTS)[0] is None, sql)


class BigScripts(TempDirTestCase):
    """Seed data: many statements, and single statements of megabytes; each
    split where SQLite splits it, however long."""

    def test_statement_ends_agree_with_complete_statement_around_quotes_and_comments(self):
        # Quotes, comments and the lone '-' and '/' that start none, around
        # the words sqlite3_complete() cares about, unterminated ones too.
        if not hasattr(sqlite3, "complete_statement"):
            self.skipTest("this Python's sqlite3 has no complete_statement (PyPy)")
        words = ["CREATE", "TEMP", "TRIGGER", "END", "EXPLAIN", "BEGIN", "x", "1", "'a;b'",
                 "'it''s;'", "'", '"', '"a;""b"', "`", "`a;b`", "[", "[a;b]", "]", "-", "/", "*",
                 "- -", "--", "-- ;\n", "/*", "*/", "/* ; */", "/*/", "(", ")", ";", "; END",
                 "VALUES", "x'0a'"]
        # (Each with a token: before any, sqlite3_complete() calls no ';' complete.)
        heads = ["x", "INSERT", "CREATE TRIGGER", "CREATE TEMP TRIGGER", "EXPLAIN CREATE TRIGGER",
                 "-- c\nx", "/* c */ CREATE"]
        rng = random.Random(15)
        for _ in range(5000):
            sql = rng.choice(["", " "]).join([rng.choice(heads)] + [
                rng.choice(words) for _ in range(rng.randint(1, 12))]) + " ;"
            ours = sqlmigrate._split_sql(sql + "\nnext")[-1:] == ["next"]
            self.assertEqual(ours, sqlite3.complete_statement(sql), sql)

    def assertSameStatements(self, found, expected):
        # Statements of megabytes: a failure says where, not all of them.
        self.assertEqual(len(found), len(expected), [s[:80] for s in found])
        for i, (got, wanted) in enumerate(zip(found, expected)):
            self.assertTrue(got == wanted, "statement %d: %r... (%d characters), not %r... (%d)"
                            % (i, got[:80], len(got), wanted[:80], len(wanted)))

    def test_many_inserts_with_quotes_each_a_statement_at_its_offset(self):
        lines = ["INSERT INTO t VALUES (%d, 'it''s; %d', \"q;\", [b;]); -- n;%d" % (i, i, i)
                 for i in range(20000)]
        sql = "CREATE TABLE t (a, b, \"q;\", [b;]);\n" + "\n".join(lines)
        found = sqlmigrate._split_sql(sql, offsets=True)
        self.assertSameStatements([statement for _, statement in found], [
            'CREATE TABLE t (a, b, "q;", [b;])'] + [line.split("); --")[0] + ")" for line in lines])
        for at, statement in found:
            self.assertEqual(sql[at:at + len(statement)], statement)

    def test_one_insert_of_100k_rows_is_one_statement(self):
        rows = ",\n".join("(%d, 'a;b''%d')" % (i, i) for i in range(100000))
        sql = "CREATE TABLE t (a, b);\nINSERT INTO t VALUES\n%s;\nSELECT 1" % rows
        self.assertSameStatements(sqlmigrate._split_sql(sql), [
            "CREATE TABLE t (a, b)", "INSERT INTO t VALUES\n" + rows, "SELECT 1"])

    def test_a_trigger_of_50k_lines_is_one_statement(self):
        body = "".join("  INSERT INTO log VALUES (NEW.a, 'x; END; %d'); -- END;\n" % i
                       for i in range(50000))
        trigger = "CREATE TRIGGER g AFTER INSERT ON t BEGIN\n%sEND" % body
        sql = "CREATE TABLE t (a);\nCREATE TABLE log (a, b);\n%s;\nSELECT 1;" % trigger
        self.assertSameStatements(sqlmigrate._split_sql(sql), [
            "CREATE TABLE t (a)", "CREATE TABLE log (a, b)", trigger, "SELECT 1"])

    def test_a_10_mb_string_with_semicolons_and_comment_marks_is_one_statement(self):
        text = "it''s; -- not a comment /* nor this;\n" * 280000
        sql = "INSERT INTO t VALUES ('%s');\nSELECT 2;\nSELECT '%s" % (text, text)
        statements = sqlmigrate._split_sql(sql)
        self.assertSameStatements(statements, [
            "INSERT INTO t VALUES ('%s')" % text, "SELECT 2", "SELECT '%s" % text.rstrip()])
        conn = sqlite3.connect(":memory:")
        self.addCleanup(conn.close)
        conn.execute("CREATE TABLE t (b)")
        conn.execute(statements[0])
        self.assertEqual(conn.execute("SELECT length(b) FROM t").fetchall(),
                         [(len(text) - text.count("''"),)])


class NonAsciiNames(TempDirTestCase):
    def test_non_ascii_identifiers_split_and_run(self):
        sql = ("CREATE TABLE café (naïve TEXT, ñ INTEGER, 名前 TEXT);\n"
               "CREATE TRIGGER träger AFTER INSERT ON café BEGIN\n"
               "  UPDATE café SET ñ = length(NEW.naïve) WHERE rowid = NEW.rowid;\n"
               "  UPDATE café SET 名前 = 'ü;END;' WHERE rowid = NEW.rowid;\n"
               "END;\n"
               "INSERT INTO café (naïve) VALUES ('ßß')")
        self.assertEqual(len(sqlmigrate._split_sql(sql)), 3)
        error, dump = run_split(sql)
        self.assertIsNone(error)
        self.assertEqual(run_script(sql), (None, dump))
        self.assertIn("INSERT INTO \"café\" VALUES('ßß',2,'ü;END;');", dump)


    def test_a_no_break_space_is_part_of_a_name_as_sqlite_reads_it(self):
        # SQLite's spaces are ASCII space, tab, newline, form feed and return;
        # U+00A0 and the other Unicode spaces are name characters to it.
        conn = sqlite3.connect(":memory:", isolation_level=None)
        conn.executescript("CREATE TABLE t\u00a0x (a, b); INSERT INTO t\u00a0x VALUES (1, 2);"
                           "CREATE VIEW v AS SELECT a FROM t\u00a0x;")
        self.assertEqual([r[0] for r in conn.execute("SELECT name FROM sqlite_master")],
                         ["t\u00a0x", "v"])
        sqlmigrate.drop_column(conn, "t\u00a0x", "b")
        self.assertEqual(conn.execute('SELECT * FROM "t\u00a0x"').fetchall(), [(1,)])
        self.assertEqual([text for kind, text in sqlmigrate._tokenize("a\u00a0b\u3000c d")
                          if kind == "word"], ["a\u00a0b\u3000c", "d"])

class EncodingAndLineEndings(TempDirTestCase):
    def discover_one(self):
        return sqlmigrate.Migrator(":memory:", self.dir).migrations[0]

    def test_bom_before_the_up_marker_is_not_sql_before_it(self):
        self.write("001-events.sql", b"\xef\xbb\xbf-- migrate:up\nCREATE TABLE a (x);\n"
                                     b"-- migrate:down\nDROP TABLE a;\n")
        m = self.discover_one().load()
        self.assertTrue(m.has_down)
        self.assertEqual(sqlmigrate._split_sql(m._up_sql), ["CREATE TABLE a (x)"])

    def test_bom_file_without_markers_applies(self):
        # SQLite itself skips a BOM before a statement only in newer versions
        # (3.7.17 reports a syntax error near it).
        self.write("001-events.sql", b"\xef\xbb\xbfCREATE TABLE a (x);\n")
        m = self.discover_one().load()
        self.assertEqual(sqlmigrate._split_sql(m._up_sql), ["CREATE TABLE a (x)"])
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "up")
        self.assertEqual(status, 0, err)
        self.assertIn("a", self.tables())

    def test_bom_keeps_the_checksum_of_the_file_bytes(self):
        # Already applied files were checksummed with their BOM: stripping it
        # from the checksum would report every one of them as changed.
        body = b"-- migrate:up\r\nCREATE TABLE a (x);\r\n"
        self.write("001-events.sql", b"\xef\xbb\xbf" + body)
        expected = hashlib.sha256(b"\xef\xbb\xbf" + body.replace(b"\r\n", b"\n")).hexdigest()
        self.assertEqual(self.discover_one().checksum, expected)

    def test_bom_python_migration_still_declares_its_name(self):
        self.write("001-events.py", b"\xef\xbb\xbfname = \"Create the events\"\n"
                                    b"def up(db):\n    db.execute('CREATE TABLE a (x)')\n")
        self.assertEqual(self.discover_one().name, "Create the events")
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "up")
        self.assertEqual(status, 0, err)
        self.assertIn("a", self.tables())

    def test_bom_file_with_a_bad_byte_names_the_byte_counted_from_the_file_start(self):
        self.write("001-events.sql", b"\xef\xbb\xbf-- migrate:up\nSELECT 'caf\xe9';\n")
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            self.discover_one().load()
        self.assertIn("(byte 28)", str(caught.exception))

    def test_crlf_cr_and_lf_files_have_one_checksum(self):
        lines = [b"-- migrate:up", b"CREATE TABLE a (x);", b"-- migrate:down", b"DROP TABLE a;", b""]
        checksums = set()
        for version, ending in enumerate((b"\n", b"\r\n", b"\r"), 1):
            self.write("%03d-same.sql" % version, ending.join(lines))
        for m in sqlmigrate.Migrator(":memory:", self.dir).migrations:
            checksums.add(m.checksum)
        self.assertEqual(checksums, {hashlib.sha256(b"\n".join(lines)).hexdigest()})

    def test_checksum_of_a_large_non_ascii_file_is_its_sha256(self):
        # Many SHA-256 blocks and every byte value, below and above 1 MiB.
        for version, repeat in ((1, 999), (2, 5000)):
            body = b"-- migrate:up\nSELECT '" + bytes(range(40, 256)) * repeat + b"';\n"
            self.write("%03d-big.sql" % version, body)
            m = sqlmigrate.Migrator(":memory:", self.dir).migrations[version - 1]
            self.assertEqual(m.checksum, hashlib.sha256(body).hexdigest())

    def test_crlf_file_markers_and_statements_are_read(self):
        self.write("001-events.sql", b"-- migrate:up transaction:false\r\nCREATE TABLE a (x);\r\n"
                                     b"-- migrate:down\r\nDROP TABLE a;\r\n")
        m = self.discover_one().load()
        self.assertFalse(m.transactional)
        self.assertEqual(sqlmigrate._split_sql(m._down_sql), ["DROP TABLE a"])

    def test_lone_cr_file_reads_its_markers_and_comments_as_lines(self):
        # SQLite ends a -- comment only at \n: read as it is, this file's
        # comment would swallow the statement after it.
        self.write("001-events.sql", b"-- migrate:up\r-- the table\rCREATE TABLE a (x);\r"
                                     b"INSERT INTO a VALUES ('one\rtwo');\r"
                                     b"-- migrate:down\rDROP TABLE a;\r")
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "up")
        self.assertEqual(status, 0, err)
        self.assertEqual(self.connect().execute("SELECT x FROM a").fetchall(), [("one\ntwo",)])
        m = self.discover_one().load()
        self.assertEqual(sqlmigrate._split_sql(m._down_sql), ["DROP TABLE a"])

    def test_lone_cr_inside_a_crlf_file_is_left_alone(self):
        self.write("001-events.sql", b"-- migrate:up\r\nCREATE TABLE a (x);\r\n"
                                     b"INSERT INTO a VALUES ('one\rtwo');\r\n")
        status, out, err = self.cli("--db", self.db, "--dir", self.dir, "up")
        self.assertEqual(status, 0, err)
        self.assertEqual(self.connect().execute("SELECT x FROM a").fetchall(), [("one\rtwo",)])
