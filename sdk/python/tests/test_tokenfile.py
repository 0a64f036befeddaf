import os
import stat
import tempfile
import unittest

from sentinel_beacon import read_token_file, write_token_file


class TokenFileTest(unittest.TestCase):
    def test_round_trip(self):
        d = tempfile.mkdtemp()
        path = os.path.join(d, "token")
        self.assertEqual(read_token_file(path), "")
        write_token_file(path, "srt_one")
        self.assertEqual(read_token_file(path), "srt_one")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        write_token_file(path, "srt_two")
        self.assertEqual(read_token_file(path), "srt_two")
        self.assertEqual(os.listdir(d), ["token"], "no temporary file left behind")

    def test_json_form(self):
        path = os.path.join(tempfile.mkdtemp(), "token")
        with open(path, "w") as f:
            f.write('{"runtime_token": "srt_x", "token_version": 2}\n')
        self.assertEqual(read_token_file(path), "srt_x")
        with open(path, "w") as f:
            f.write("{broken")
        with self.assertRaises(ValueError):
            read_token_file(path)


if __name__ == "__main__":
    unittest.main()
