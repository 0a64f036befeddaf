import os
import py_compile
import tempfile
import unittest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


class ExamplesTest(unittest.TestCase):
    def test_examples_compile(self):
        names = sorted(n for n in os.listdir(EXAMPLES) if n.endswith(".py"))
        self.assertEqual(names, ["agent_loop.py", "long_tool_call.py"])
        for name in names:
            with self.subTest(name):
                py_compile.compile(os.path.join(EXAMPLES, name), cfile=os.path.join(tempfile.mkdtemp(), "x.pyc"), doraise=True)


if __name__ == "__main__":
    unittest.main()
