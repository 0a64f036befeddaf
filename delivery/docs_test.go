package delivery_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/delivery"
	"github.com/agentsentinel/sentinel/internal/testutil"
	"github.com/agentsentinel/sentinel/webhook"
)

// snippet returns the fenced code block that follows <!-- snippet: name -->
// in docs/webhooks.md, exactly as a reader copies it.
func snippet(t *testing.T, name, lang string) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "docs", "webhooks.md"))
	require.NoError(t, err)
	m := regexp.MustCompile("(?s)<!-- snippet: "+name+" -->\n```"+lang+"\n(.*?)```\n").FindAllSubmatch(doc, -1)
	require.Len(t, m, 1, "docs/webhooks.md must have exactly one ```%s block after <!-- snippet: %s -->", lang, name)
	return string(m[0][1])
}

// docCase is one delivery handed to the snippets, and what they must say.
type docCase struct {
	Name   string `json:"name"`
	Secret string `json:"secret"`
	Body   string `json:"body"` // base64 of the raw body
	ABS    string `json:"abs"`
	ID     string `json:"id"`
	TS     string `json:"ts"`
	Sig    string `json:"sig"`
	want   bool
}

// docCases sends real deliveries through a Sender to an endpoint and turns
// what arrived into cases: fresh, rotated, tampered, wrong secret, stale.
func docCases(t *testing.T) []docCase {
	ep := newEndpoint(t, false)
	whsec := "whsec_" + base64.StdEncoding.EncodeToString([]byte("docs-signing-key-0123456789"))
	plain := "an-older-plain-secret"
	clock := testutil.NewClock(time.Now())
	s := delivery.NewSender(delivery.Options{Now: clock.Now})
	require.NoError(t, s.ApplyConfig(parseConfig(t,
		tenantYAML("one", ep.URL, []string{whsec}, ""),
		tenantYAML("rotating", ep.URL, []string{whsec, plain}, ""))))

	deliver := func(tenant string, skew time.Duration) received {
		clock.Set(time.Now().Add(skew))
		n := len(ep.requests())
		r := s.Send(t.Context(), tenant, message(t, tenant))
		require.Equal(t, delivery.Delivered, r.Outcome, "%v", r.Err)
		return ep.requests()[n]
	}
	mk := func(name, secret string, got received, want bool) docCase {
		return docCase{Name: name, Secret: secret, Body: base64.StdEncoding.EncodeToString(got.body),
			ABS: got.header.Get("X-ABS-Signature"), ID: got.header.Get("webhook-id"),
			TS: got.header.Get("webhook-timestamp"), Sig: got.header.Get("webhook-signature"), want: want}
	}
	fresh := deliver("one", 0)
	rotated := deliver("rotating", 0)
	tampered := fresh
	tampered.body = bytes.Replace(fresh.body, []byte(`"reason":"test"`), []byte(`"reason":"Test"`), 1)
	require.NotEqual(t, fresh.body, tampered.body)
	return []docCase{
		mk("whsec secret", whsec, fresh, true),
		mk("rotation, receiver has the new secret", whsec, rotated, true),
		mk("rotation, receiver has the old secret", plain, rotated, true),
		mk("wrong secret", plain, fresh, false),
		mk("tampered body", whsec, tampered, false),
		mk("signed 4 minutes ago", whsec, deliver("one", -4*time.Minute), true),
		mk("signed 6 minutes ago", whsec, deliver("one", -6*time.Minute), false),
		mk("signed 6 minutes ahead", whsec, deliver("one", 6*time.Minute), false),
	}
}

// runSnippet runs the harness with the cases on stdin and checks that each
// case verifies, in both formats, exactly when it should.
func runSnippet(t *testing.T, cases []docCase, dir string, name string, args ...string) {
	t.Helper()
	in, err := json.Marshal(cases)
	require.NoError(t, err)
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(in)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s:\n%s", name, out)
	var got [][2]bool
	require.NoError(t, json.Unmarshal(out, &got), "%s printed:\n%s", name, out)
	require.Len(t, got, len(cases))
	for i, c := range cases {
		require.Equal(t, [2]bool{c.want, c.want}, got[i], "%s: case %q (X-ABS-Signature, webhook-signature)", name, c.Name)
	}
}

// The Go verifier agrees with the snippets on every case.
func TestDocsCasesGo(t *testing.T) {
	for _, c := range docCases(t) {
		body, err := base64.StdEncoding.DecodeString(c.Body)
		require.NoError(t, err)
		v, err := webhook.NewVerifier(c.Secret)
		require.NoError(t, err)
		h := http.Header{"X-Abs-Signature": {c.ABS}, "Webhook-Id": {c.ID}, "Webhook-Timestamp": {c.TS}, "Webhook-Signature": {c.Sig}}
		require.Equal(t, c.want, v.VerifyABS(h, body) == nil, c.Name)
		require.Equal(t, c.want, v.VerifyStandard(h, body) == nil, c.Name)
	}
}

func TestDocsPythonSnippet(t *testing.T) {
	python := testutil.Tool(t, "python3")
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "verify.py"), []byte(snippet(t, "python", "python")), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "run.py"), []byte(`import base64, json, sys
from verify import verify_abs, verify_standard
out = []
for c in json.load(sys.stdin):
    body = base64.b64decode(c["body"])
    out.append([verify_abs(c["secret"], body, c["abs"]),
                verify_standard(c["secret"], body, c["id"], c["ts"], c["sig"])])
print(json.dumps(out))
`), 0o600))
	runSnippet(t, docCases(t), dir, python, "run.py")
}

func TestDocsNodeSnippet(t *testing.T) {
	node := testutil.Tool(t, "node")
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "verify.js"), []byte(snippet(t, "node", "js")), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "run.js"), []byte(`const { verifyABS, verifyStandard } = require("./verify.js");
let input = "";
process.stdin.on("data", (d) => (input += d));
process.stdin.on("end", () => {
  const out = JSON.parse(input).map((c) => {
    const body = Buffer.from(c.body, "base64");
    return [verifyABS(c.secret, body, c.abs), verifyStandard(c.secret, body, c.id, c.ts, c.sig)];
  });
  console.log(JSON.stringify(out));
});
`), 0o600))
	runSnippet(t, docCases(t), dir, node, "run.js")
}

// The Go snippet, put in a main function as written, serves real
// deliveries: it takes a delivery signed with its secret and answers 401 to
// one signed with another.
func TestDocsGoSnippet(t *testing.T) {
	goTool := testutil.Tool(t, "go")
	dir := t.TempDir()
	src := "package main\n\nimport (\n\t\"io\"\n\t\"log\"\n\t\"net/http\"\n\t\"os\"\n\n\t\"github.com/agentsentinel/sentinel/webhook\"\n)\n\nfunc main() {\n" +
		snippet(t, "go", "go") + "\tlog.Fatal(http.ListenAndServe(os.Getenv(\"ADDR\"), nil))\n}\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o600))
	// An overlay puts the file in a package of this module without writing
	// into the source tree.
	pkgDir, err := filepath.Abs(filepath.Join("..", "internal", "docsnippet"))
	require.NoError(t, err)
	overlay, err := json.Marshal(map[string]any{"Replace": map[string]string{filepath.Join(pkgDir, "main.go"): filepath.Join(dir, "main.go")}})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "overlay.json"), overlay, 0o600))
	bin := filepath.Join(dir, "receiver")
	out, err := exec.Command(goTool, "build", "-overlay", filepath.Join(dir, "overlay.json"), "-o", bin, "./"+filepath.Join("..", "internal", "docsnippet")).CombinedOutput()
	require.NoError(t, err, "the Go snippet does not build:\n%s\n%s", out, src)

	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("go-snippet-signing-key"))
	addr := testutil.FreeAddr(t)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "ADDR="+addr, "SENTINEL_WEBHOOK_SECRET="+secret)
	logs := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	s := delivery.NewSender(delivery.Options{})
	require.NoError(t, s.ApplyConfig(parseConfig(t,
		tenantYAML("right", "http://"+addr+"/sentinel", []string{secret}, ""),
		tenantYAML("wrong", "http://"+addr+"/sentinel", []string{"another-secret"}, ""))))
	// The receiver needs a moment to listen: its first answers may be refused.
	require.Eventually(t, func() bool {
		return s.Send(t.Context(), "right", message(t, "right")).Outcome != delivery.Retry
	}, 10*time.Second, 20*time.Millisecond, "the snippet's receiver never answered:\n%s", logs)
	r := s.Send(t.Context(), "right", message(t, "right"))
	require.Equal(t, http.StatusOK, r.StatusCode, "%v", r.Err)
	r = s.Send(t.Context(), "wrong", message(t, "wrong"))
	require.Equal(t, http.StatusUnauthorized, r.StatusCode)
	require.Equal(t, delivery.Failed, r.Outcome)
}
