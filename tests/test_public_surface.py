"""Public means documented: the module's public names are the README's."""

import os
import re
import unittest

from tests.support import ROOT, sqlmigrate


class PublicSurface(unittest.TestCase):
    def setUp(self):
        with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
            self.readme = f.read()

    def test_every_name_in_all_is_in_the_readme(self):
        missing = [name for name in sqlmigrate.__all__
                   if not re.search(r"\b%s\b" % re.escape(name), self.readme)]
        self.assertEqual(missing, [])

    def test_every_module_level_name_the_readme_calls_is_in_all(self):
        called = set(re.findall(r"\bsqlmigrate\.(?!py\b)([A-Za-z_]\w*)", self.readme))
        self.assertEqual(sorted(called - set(sqlmigrate.__all__)), [])

    def test_public_module_level_names_are_all_and_nothing_else(self):
        public = [name for name, value in vars(sqlmigrate).items()
                  if not name.startswith("_") and getattr(value, "__module__", None) ==
                  sqlmigrate.__name__]
        self.assertEqual(sorted(set(public) - set(sqlmigrate.__all__)), [])

    def test_every_commands_option_is_in_its_readme_table_row(self):
        # lint --round-trip was missing from the table that lists each command's flags.
        def flags(options):
            for option in options:
                for inner in (option if isinstance(option[0], tuple) else (option,)):
                    for word in inner[0].split():
                        if word.startswith("--"):
                            yield word
        missing = []
        for name, _, _, options in sqlmigrate._COMMANDS:
            row = re.search(r"(?m)^\| `%s\b.*$" % name, self.readme)
            self.assertIsNotNone(row, name)
            missing += ["%s %s" % (name, flag) for flag in flags(options)
                        if not re.search(re.escape(flag) + r"\b", row.group(0))]
        self.assertEqual(missing, [])


if __name__ == "__main__":
    unittest.main()
