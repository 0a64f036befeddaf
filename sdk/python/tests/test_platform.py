import os
import tempfile
import unittest

from sentinel_beacon import default_id, detect_platform, sanitize_id, valid_id


def host():
    return "myhost"


class PlatformTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp()

    def write(self, rel, text):
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)

    def test_detect(self):
        cid = "a" * 64
        cases = [
            ("lambda", {"AWS_LAMBDA_FUNCTION_NAME": "fn", "AWS_DEFAULT_REGION": "eu-west-1", "KUBERNETES_SERVICE_HOST": "x"},
             {}, {"type": "lambda", "function_name": "fn", "region": "eu-west-1"}, "fn"),
            ("kubernetes", {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "NODE_NAME": "n1"},
             {"var/run/secrets/kubernetes.io/serviceaccount/namespace": "prod\n", ".dockerenv": ""},
             {"type": "kubernetes", "pod_name": "myhost", "namespace": "prod", "node": "n1"}, "myhost"),
            ("docker cgroup", {"IMAGE": "img:1"}, {".dockerenv": "", "proc/self/cgroup": "0::/docker/" + cid + "\n"},
             {"type": "docker", "container_id": cid, "image": "img:1"}, "a" * 12),
            ("docker mountinfo", {}, {".dockerenv": "", "proc/self/cgroup": "0::/\n",
                                      "proc/self/mountinfo": "1 2 /var/lib/docker/containers/" + cid + "/hostname /etc/hostname\n"},
             {"type": "docker", "container_id": cid}, "a" * 12),
        ]
        for name, env, files, want, want_id in cases:
            with self.subTest(name):
                self.root = tempfile.mkdtemp()
                for rel, text in files.items():
                    self.write(rel, text)
                got = detect_platform(root=self.root, environ=env, hostname=host)
                self.assertEqual(got, want)
                self.assertEqual(default_id(got), want_id)

    def test_bare_metal(self):
        got = detect_platform(root=self.root, environ={}, hostname=host)
        self.assertEqual(got["type"], "bare_metal")
        self.assertEqual(got["hostname"], "myhost")
        self.assertEqual(got["pid"], os.getpid())
        self.assertTrue(got["os"])
        self.assertEqual(default_id(got), "myhost")

    def test_ids(self):
        self.assertTrue(valid_id("agent-01"))
        self.assertTrue(valid_id("a.b_c:d@e-f"))
        for bad in ("", "-a", "a b", "a" * 129, "agent\n", "é"):
            self.assertFalse(valid_id(bad), bad)
        self.assertEqual(sanitize_id("--My Host!.local"), "My-Host-.local")
        self.assertEqual(sanitize_id("!!!"), "")
        self.assertEqual(len(sanitize_id("x" * 300)), 128)


if __name__ == "__main__":
    unittest.main()
