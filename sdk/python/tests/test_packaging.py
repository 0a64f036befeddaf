import os
import sys
import unittest

import sentinel_beacon

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@unittest.skipUnless(sys.version_info >= (3, 11), "tomllib is in the standard library from Python 3.11")
class PyprojectTest(unittest.TestCase):
    def test_metadata(self):
        import tomllib

        with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
            project = tomllib.load(f)["project"]
        self.assertEqual(project["name"], "sentinel-beacon")
        self.assertEqual(project["version"], sentinel_beacon.__version__)
        self.assertEqual(project["requires-python"], ">=3.9")
        self.assertEqual(project["dependencies"], [], "standard library only")


class StdlibOnlyTest(unittest.TestCase):
    def test_imports_are_stdlib(self):
        stdlib = set(getattr(sys, "stdlib_module_names", ()))
        if not stdlib:
            self.skipTest("sys.stdlib_module_names is new in Python 3.10")
        pkg = os.path.join(ROOT, "sentinel_beacon")
        for name in os.listdir(pkg):
            if not name.endswith(".py"):
                continue
            with open(os.path.join(pkg, name)) as f:
                for line in f:
                    words = line.split()
                    if len(words) >= 2 and words[0] in ("import", "from") and not line.startswith(" "):
                        mod = words[1].split(".")[0]
                        if mod and mod != "__future__":
                            self.assertIn(mod, stdlib, f"{name}: {line.strip()}")


if __name__ == "__main__":
    unittest.main()
