"""Finding, naming and loading migration files; the SQL statement splitter."""

import os

from tests.support import TempDirTestCase, sqlmigrate


class NamingRules(TempDirTestCase):
    def assertRejected(self, filename, reason):
        self.write(filename, "def up(db):\n    pass\n")
        with self.assertRaises(sqlmigrate.RequestError) as caught:
            sqlmigrate.Migrator(":memory:", self.dir).migrations
        self.assertIn(filename, str(caught.exception))
        self.assertIn(reason, str(caught.exception))

    def test_version_with_fewer_than_three_digits_is_rejected(self):
        self.assertRejected("1-initial.py", "at least 3 digits")

    def test_camel_case_description_is_rejected(self):
        self.assertRejected("002-AddUserField.py", "kebab-case")

    def test_underscore_after_version_is_rejected(self):
        self.assertRejected("003_add_api_keys.py", "hyphen after the version")

    def test_name_without_version_is_rejected(self):
        self.assertRejected("initial.sql", "version")

    def test_double_hyphen_is_rejected(self):
        self.assertRejected("004-add--thing.sql", "kebab-case")

    def test_ignored_files_are_not_migrations(self):
        self.write("001-initial.sql", "CREATE TABLE t (x);")
        self.write("_helpers.py", "x = 1\n")
        self.write(".hidden.sql", "nonsense")
        self.write("README.md", "# notes")
        self.write("notes.txt", "whatever")
        os.mkdir(os.path.join(self.dir, "__pycache__"))
        self.write("002-bad.cpython-311.pyc", b"\0", directory=os.path.join(self.dir, "__pycache__"))
        found = sqlmigrate.Migrator(":memory:", self.dir).migrations
        self.assertEqual([m.filename for m in found], ["001-initial.sql"])

    def test_duplicate_versions_name_both_files(self):
        self.write("002-a.sql", "SELECT 1;")
        self.write("0002-b.py", "def up(db):\n    pass\n")
        with self.assertRaises(sqlmigrate.RequestError) as caught:
            sqlmigrate.Migrator(":memory:", self.dir).migrations
        self.assertIn("002-a.sql", str(caught.exception))
        self.assertIn("0002-b.py", str(caught.exception))

    def test_every_bad_name_is_listed_at_once(self):
        self.write("1-a.sql", "")
        self.write("002_b.sql", "")
        message = str(self._error())
        self.assertIn("1-a.sql", message)
        self.assertIn("002_b.sql", message)

    def _error(self):
        try:
            sqlmigrate.Migrator(":memory:", self.dir).migrations
        except sqlmigrate.RequestError as e:
            return e
        self.fail("no error raised")

    def test_versions_sort_numerically_with_gaps_and_long_numbers(self):
        self.write("010-ten.sql", "")
        self.write("002-two.sql", "")
        self.write("20251029120000-timestamp.sql", "")
        self.assertEqual([m.version for m in sqlmigrate.Migrator(":memory:", self.dir).migrations],
                         [2, 10, 20251029120000])

    def test_missing_directory_is_a_request_error(self):
        with self.assertRaises(sqlmigrate.RequestError) as caught:
            sqlmigrate.Migrator(":memory:", os.path.join(self.tmp, "nope")).migrations
        self.assertIn("does not exist", str(caught.exception))


class PythonMigrations(TempDirTestCase):
    def load(self, text, filename="003-add-api-keys.py"):
        self.write(filename, text)
        return sqlmigrate.Migrator(":memory:", self.dir).migrations[0].load()

    def assertLoadFails(self, text, *fragments):
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            self.load(text)
        for fragment in fragments:
            self.assertIn(fragment, str(caught.exception))

    def test_attributes_are_read(self):
        m = self.load('name = "Add API keys table"\nversion = 3\ntransaction = False\n'
                      'def up(db):\n    pass\ndef down(db):\n    pass\n')
        self.assertEqual((m.version, m.name, m.kind, m.has_down, m.transactional),
                         (3, "Add API keys table", "py", True, False))

    def test_defaults_without_optional_attributes(self):
        m = self.load("def up(db):\n    pass\n")
        self.assertEqual((m.name, m.has_down, m.transactional), ("Add api keys", False, True))

    def test_syntax_error_names_file_and_line(self):
        self.assertLoadFails("def up(db):\n    pass\n\ndef down(db)\n    pass\n",
                             "003-add-api-keys.py:4", "syntax error")

    def test_import_error_names_file_and_line(self):
        self.assertLoadFails("import os\nimport no_such_module_xyz\ndef up(db):\n    pass\n",
                             "003-add-api-keys.py:2", "no_such_module_xyz")

    def test_missing_up_is_rejected(self):
        self.assertLoadFails("def down(db):\n    pass\n", "003-add-api-keys.py", "no up(db)")

    def test_version_attribute_must_match_file_name(self):
        self.assertLoadFails("version = 4\ndef up(db):\n    pass\n",
                             "version = 4", "version 3")

    def test_a_transaction_attribute_that_is_not_a_bool_is_refused(self):
        # bool("False") is True and bool(None) False: either would run the
        # migration the other way than its author meant, silently.
        for value in ('"False"', '"false"', "None", "'no'", "2"):
            self.write("001-x.py", "transaction = %s\ndef up(db):\n"
                       "    db.execute('CREATE TABLE t (x)')\n" % value)
            status, out, err = self.cli("--db", self.db, "up")
            self.assertEqual(status, 1, (value, out, err))
            self.assertIn("001-x.py", err)
            self.assertIn("transaction = %s" % value.replace('"', "'"), err)
            self.assertEqual(len(err.strip().splitlines()), 1, err)
            self.assertFalse(os.path.exists(self.db), value)
        os.remove(os.path.join(self.dir, "001-x.py"))
        for value, transactional in (("True", True), ("False", False), ("1", True), ("0", False)):
            self.assertEqual(self.load("transaction = %s\ndef up(db):\n    pass\n" % value)
                             .transactional, transactional)

    def test_name_is_read_without_running_the_file(self):
        self.write("001-x.py", 'name = "Read Me"\nraise SystemExit("executed!")\n')
        self.assertEqual(sqlmigrate.Migrator(":memory:", self.dir).migrations[0].name, "Read Me")

    def test_name_declaration_forms(self):
        cases = [('name = "Add users"  # shown by status', "Add users"),
                 ("name='single quoted'", "single quoted"),
                 ('name = "a" + suffix', "X"), ('  name = "indented"', "X"),
                 ('named = "other"', "X"), ('name = ""', "X")]
        for source, expected in cases:
            with self.subTest(source=source):
                self.write("001-x.py", "%s\ndef up(db):\n    pass\n" % source)
                found = sqlmigrate.Migrator(":memory:", self.dir).migrations
                self.assertEqual(found[0].name, expected)

    def test_checksum_ignores_line_endings(self):
        lf = self.write("001-lf.sql", b"CREATE TABLE t (x);\nSELECT 1;\n")
        crlf = self.write("002-crlf.sql", b"CREATE TABLE t (x);\r\nSELECT 1;\r\n")
        a, b = sqlmigrate.Migrator(":memory:", self.dir).migrations
        self.assertEqual(a.checksum, b.checksum)
        self.assertEqual(len(a.checksum), 64)
        self.assertTrue(os.path.exists(lf) and os.path.exists(crlf))


class SqlMigrations(TempDirTestCase):
    def load(self, text):
        self.write("001-x.sql", text)
        return sqlmigrate.Migrator(":memory:", self.dir).migrations[0].load()

    def test_markers_split_up_and_down_case_insensitively(self):
        m = self.load("-- Migration 1\n-- MIGRATE:UP\nCREATE TABLE a (x);\n--migrate:Down\nDROP TABLE a;\n")
        self.assertTrue(m.has_down)
        self.assertTrue(m.transactional)
        self.assertEqual(m._up_sql.strip(), "CREATE TABLE a (x);")
        self.assertEqual(m._down_sql.strip(), "DROP TABLE a;")

    def test_empty_down_section_means_no_down(self):
        m = self.load("-- migrate:up\nCREATE TABLE a (x);\n-- migrate:down\n\n-- nothing yet\n")
        self.assertFalse(m.has_down)

    def test_second_down_marker_is_rejected_even_after_an_empty_one(self):
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            self.load("-- migrate:up\nCREATE TABLE a (x);\n-- migrate:down\n"
                      "-- migrate:down\nDROP TABLE a;\n")
        self.assertIn("more than one '-- migrate:down'", str(caught.exception))

    def test_file_without_markers_is_all_up_and_has_no_down(self):
        m = self.load("CREATE TABLE a (x);\n")
        self.assertFalse(m.has_down)
        self.assertIn("CREATE TABLE a", m._up_sql)

    def test_transaction_false_option(self):
        self.assertFalse(self.load("-- migrate:up transaction:false\nVACUUM;\n").transactional)

    def test_unknown_marker_option_is_rejected(self):
        with self.assertRaises(sqlmigrate.MigrationError):
            self.load("-- migrate:up transactional:no\nSELECT 1;\n")

    def test_a_misspelled_or_foreign_marker_is_refused_not_run_as_up(self):
        # Not a marker, such a line would be a comment: the down's DROP below
        # it would run as part of up and report success.
        conn = self.connect()
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
        conn.execute("INSERT INTO users VALUES (1)")
        for marker in ("-- migrate:dwon", "-- migrate: down", "-- migrate : down",
                       "-- +migrate Down", "-- +goose Down", "-- down", "-- Down:",
                       "-- migrate down"):
            self.write("001-x.sql", "-- migrate:up\nCREATE TABLE a (x);\n%s\n"
                       "DROP TABLE users;\n" % marker)
            status, out, err = self.cli("--db", self.db, "up")
            self.assertEqual(status, 1, (marker, out, err))
            self.assertIn("001-x.sql:3", err, marker)
            self.assertIn(marker.strip(), err)
            self.assertEqual(len(err.strip().splitlines()), 1, err)
            self.assertEqual(self.tables(conn), ["users"], marker)
            self.assertEqual(conn.execute("SELECT id FROM users").fetchall(), [(1,)])

    def test_a_marker_like_line_inside_a_string_or_block_comment_is_no_near_miss(self):
        # Only a line comment can be a marker meant and missed: the same text
        # inside a string literal (a stored template) or a block comment (a
        # tool's old marker kept for reference) runs no SQL of its own.
        self.write("001-x.sql", "-- migrate:up\n"
                   "CREATE TABLE notes (body);\n"
                   "/*\n-- +goose Down\n*/\n"
                   "INSERT INTO notes VALUES ('\n-- migrate: add a table here\n');\n"
                   "-- migrate:down\nDROP TABLE notes;\n")
        status, out, err = self.cli("--db", self.db, "up")
        self.assertEqual(status, 0, (out, err))
        self.assertEqual(self.connect().execute("SELECT body FROM notes").fetchall(),
                         [("\n-- migrate: add a table here\n",)])

    def test_a_fifo_named_like_a_migration_is_refused_not_waited_on(self):
        # Opening a FIFO to read blocks until a writer comes: `up` hung forever.
        self.write_sql(1, "a", "CREATE TABLE a (x);")
        os.mkfifo(os.path.join(self.dir, "002-b.sql"))
        status, out, err = self.cli("--db", self.db, "up", timeout=10)
        self.assertEqual(status, 1, (out, err))
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn("002-b.sql", err)
        self.assertIn("not a regular file", err)
        self.assertFalse(os.path.exists(self.db))

    def test_non_utf8_file_is_an_error_naming_it(self):
        with self.assertRaises(sqlmigrate.MigrationError) as caught:
            self.load(b"-- migrate:up\nINSERT INTO t VALUES ('caf\xe9');\n")
        self.assertIn("001-x.sql", str(caught.exception))
        self.assertIn("UTF-8", str(caught.exception))


class StatementSplitter(TempDirTestCase):
    def test_semicolons_in_strings_identifiers_and_comments_do_not_split(self):
        sql = ("INSERT INTO t VALUES ('a;b', 'it''s;');\n"
               'CREATE TABLE "we;ird" ([x;y] TEXT, `z;` INT); -- trailing; comment\n'
               "/* block; comment */ SELECT 1")
        self.assertEqual(sqlmigrate._split_sql(sql), [
            "INSERT INTO t VALUES ('a;b', 'it''s;')",
            'CREATE TABLE "we;ird" ([x;y] TEXT, `z;` INT)',
            "SELECT 1",
        ])

    def test_trigger_body_is_one_statement_even_with_case_end(self):
        sql = ("CREATE TEMP TRIGGER trg AFTER INSERT ON t BEGIN\n"
               "  INSERT INTO log VALUES (1);\n"
               "  UPDATE t SET x = CASE WHEN x > 1 THEN 2 ELSE 3 END;\n"
               "END;\nSELECT 2;")
        statements = sqlmigrate._split_sql(sql)
        self.assertEqual(len(statements), 2)
        self.assertTrue(statements[0].endswith("END"))
        self.assertEqual(statements[1], "SELECT 2")

    def test_plain_scripts_split_as_the_tokenizer_splits_them(self):
        # split_sql skips the tokenizer when nothing can hide a semicolon; the
        # shortcut must agree with the tokenizer on every such script.
        import random
        rng = random.Random(7)
        pieces = ["CREATE TABLE t (a, b)", "SELECT 1", ";", ";", " ", "\n", "\t", "x = 2",
                  "CASE WHEN a THEN b END", "begin", "END", "\u00a0", "\r\n", "-1", "/ 2"]
        for _ in range(500):
            sql = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
            # A leading comment sends the same script through the tokenizer.
            self.assertEqual(sqlmigrate._split_sql(sql), sqlmigrate._split_sql("/**/" + sql),
                             repr(sql))

    def test_empty_and_comment_only_statements_are_dropped(self):
        self.assertEqual(sqlmigrate._split_sql(";;\n-- nothing\n;  /* x */ ;"), [])

    def test_split_statements_execute_in_sqlite(self):
        sql = ("CREATE TABLE t (x TEXT); CREATE TABLE log (y);\n"
               "CREATE TRIGGER trg AFTER INSERT ON t BEGIN INSERT INTO log VALUES ('a;'); END;\n"
               "INSERT INTO t VALUES ('1;2')")
        conn = self.connect()
        for statement in sqlmigrate._split_sql(sql):
            conn.execute(statement)
        self.assertEqual(conn.execute("SELECT y FROM log").fetchall(), [("a;",)])

    def test_quote_identifier_survives_sqlite(self):
        conn = self.connect()
        name = 'we"ird [name] `x` select'
        conn.execute("CREATE TABLE %s (%s)" % (sqlmigrate._quote_identifier(name),
                                               sqlmigrate._quote_identifier("a b")))
        self.assertIn(name, self.tables(conn))
