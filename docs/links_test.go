// Package docs holds the reference documentation of sentinel as Markdown
// files, and the test that keeps their links, and every other Markdown
// file's of the repository, pointing somewhere.
package docs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/stretchr/testify/require"
)

// TestMarkdownLinks checks that every relative link of every tracked
// Markdown file resolves to a file or directory of the repository, and that
// every #anchor into a Markdown file names one of its headings.
func TestMarkdownLinks(t *testing.T) {
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	files := markdownFiles(t, root)
	require.Contains(t, files, "README.md")
	require.Contains(t, files, "docs/api.md")

	c := newLinkChecker(root)
	var problems []string
	for _, f := range files {
		ps, err := c.check(f)
		require.NoError(t, err)
		problems = append(problems, ps...)
	}
	if len(problems) > 0 {
		t.Fatalf("%d broken relative links in Markdown files:\n%s", len(problems), strings.Join(problems, "\n"))
	}
}

// TestNoOutsideReferences keeps the Markdown files self-contained: the
// repository documents itself, it never sends a reader to a design document
// that is not part of it.
func TestNoOutsideReferences(t *testing.T) {
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	var problems []string
	for _, f := range markdownFiles(t, root) {
		content, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(f)))
		require.NoError(t, err)
		for i, line := range strings.Split(string(content), "\n") {
			if m := outsideReference.FindString(line); m != "" {
				problems = append(problems, fmt.Sprintf("%s:%d: %q", f, i+1, m))
			}
		}
	}
	if len(problems) > 0 {
		t.Fatalf("Markdown files refer to documents outside the repository; say it in the repository's own words or link into docs/:\n%s",
			strings.Join(problems, "\n"))
	}
}

// TestLinkChecker shows that the checker finds what it must and accepts
// what GitHub renders as a working link.
func TestLinkChecker(t *testing.T) {
	root := t.TempDir()
	write := func(name, content string) {
		p := filepath.Join(root, filepath.FromSlash(name))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	}
	write("docs/other.md", "# Other page\n\n## The `code` & [link](x.md) heading\n\nSetext heading\n---\n\n## Repeated\n## Repeated\n<a name=\"custom\"></a>\n")
	write("src/main.go", "package main\n")
	write("README.md", strings.Join([]string{
		"# Top",
		"[ok file](docs/other.md) [ok dir](src/) [ok go](src/main.go#L1) [ok abs](/docs/other.md)",
		"[ok anchor](docs/other.md#other-page) [ok code heading](docs/other.md#the-code--link-heading)",
		"[ok setext](docs/other.md#setext-heading) [ok repeat](docs/other.md#repeated-1) [ok name](docs/other.md#custom)",
		"[ok self](#top) [ok web](https://example.com/missing.md) [ok mail](mailto:a@example.com)",
		"`[not a link](nowhere.md)` [ok spaced](<docs/other.md> \"title\") [ok query](docs/other.md?plain=1)",
		"```",
		"[in code](nowhere.md)",
		"```",
		"[missing file](docs/missing.md)",
		"[missing anchor](docs/other.md#nope)",
		"[missing self anchor](#nowhere)",
		"[escapes](../outside.md)",
		"[ref]: docs/gone.md",
		"<a href=\"src/gone.go\">html</a>",
		"[split",
		"text](docs/also-missing.md)",
		"[repeat too far](docs/other.md#repeated-2)",
	}, "\n")+"\n")

	c := newLinkChecker(root)
	problems, err := c.check("README.md")
	require.NoError(t, err)
	require.Equal(t, []string{
		"README.md:10: docs/missing.md: no such file or directory",
		"README.md:11: docs/other.md#nope: docs/other.md has no heading or anchor \"nope\"",
		"README.md:12: #nowhere: README.md has no heading or anchor \"nowhere\"",
		"README.md:13: ../outside.md: points outside the repository",
		"README.md:14: docs/gone.md: no such file or directory",
		"README.md:15: src/gone.go: no such file or directory",
		"README.md:17: docs/also-missing.md: no such file or directory",
		"README.md:18: docs/other.md#repeated-2: docs/other.md has no heading or anchor \"repeated-2\"",
	}, problems)
}

func TestOutsideReference(t *testing.T) {
	for _, tt := range []struct {
		line string
		want string
	}{
		{"The contract is `SPEC.md` in the shared design folder.", "SPEC.md"},
		{"**Not in this release: the bridge** (SPEC 6). Sentinel", "SPEC 6"},
		{"as SPEC 2.1 says", "SPEC 2.1"},
		{"see ../shared/STYLE.md", "../shared"},
		{"a shared design folder", "shared design folder"},
		{"the OpenAPI spec of the API", ""},
		{"SPECIAL 6 cases", ""},
		{"a shared machine", ""},
	} {
		require.Equal(t, tt.want, outsideReference.FindString(tt.line), tt.line)
	}
}

func TestSlug(t *testing.T) {
	for _, tt := range []struct{ heading, slug string }{
		{"API notes", "api-notes"},
		{"2.1 Beacon protocol", "21-beacon-protocol"},
		{"`POST /api/v1/installations/{id}/heartbeat`", "post-apiv1installationsidheartbeat"},
		{"Replicas on PostgreSQL", "replicas-on-postgresql"},
		{"What `--storage.path` holds", "what---storagepath-holds"},
		{"Errors & status codes", "errors--status-codes"},
		{"snake_case stays", "snake_case-stays"},
		{"Étape über", "étape-über"},
	} {
		require.Equal(t, tt.slug, slug(tt.heading), tt.heading)
	}
}

// markdownFiles lists the repository's tracked Markdown files, slash
// separated and relative to root.
func markdownFiles(t *testing.T, root string) []string {
	t.Helper()
	return repoFiles(t, root, ".md")
}

// repoFiles lists the repository's files (tracked, or new and not ignored)
// whose names end in suffix, slash separated and relative to root. Without
// git (a source tarball) it walks the tree, skipping hidden directories and
// installed dependencies.
func repoFiles(t *testing.T, root, suffix string) []string {
	t.Helper()
	cmd := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "*"+suffix)
	cmd.Dir = root
	out, err := cmd.Output()
	if err == nil {
		var files []string
		for _, f := range strings.Split(string(out), "\x00") {
			// A file deleted in the work tree but still in the index is not
			// a link target any more.
			if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(f))); f != "" && err == nil {
				files = append(files, f)
			}
		}
		slices.Sort(files)
		return slices.Compact(files)
	}
	t.Logf("git ls-files failed (%v); walking the tree instead", err)
	var files []string
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "node_modules" || d.Name() == "vendor") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(d.Name(), suffix) {
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	require.NoError(t, err)
	return files
}

var (
	// inlineLink matches the target of [text](target "title") and
	// ![alt](target); the text may have begun on an earlier line.
	inlineLink = regexp.MustCompile(`\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:"[^"]*"|'[^']*'|\([^)]*\)))?\s*\)`)
	// refDefinition matches a reference definition: [label]: target.
	refDefinition = regexp.MustCompile(`^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)`)
	// htmlLink matches href and src attributes of inline HTML.
	htmlLink = regexp.MustCompile(`(?i)\b(?:href|src)\s*=\s*"([^"]*)"`)
	// htmlAnchor matches the name or id attributes that anchors can target.
	htmlAnchor = regexp.MustCompile(`(?i)<a\s[^>]*\b(?:name|id)\s*=\s*"([^"]+)"`)
	// atxHeading matches "## Heading ##".
	atxHeading = regexp.MustCompile(`^ {0,3}#{1,6}(?:\s+(.*?))?(?:\s+#+)?\s*$`)
	// setextUnderline underlines the line before it as a heading.
	setextUnderline = regexp.MustCompile(`^ {0,3}(?:=+|-+)\s*$`)
	// mdLinkText keeps the text of a link or image in a heading.
	mdLinkText = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)
	// outsideReference is a reference to the design contract that lives
	// outside the repository.
	outsideReference = regexp.MustCompile(`\bSPEC(?:\.md| [0-9]+(?:\.[0-9]+)?\b)|\.\./shared\b|shared design folder`)
	// lineAnchor is GitHub's line anchor into a source file.
	lineAnchor = regexp.MustCompile(`^L[0-9]+(?:-L[0-9]+)?$`)
)

// linkChecker checks the links of Markdown files under root, caching the
// anchors of every Markdown file it has read.
type linkChecker struct {
	root    string
	anchors map[string]map[string]bool
}

func newLinkChecker(root string) *linkChecker {
	return &linkChecker{root: root, anchors: map[string]map[string]bool{}}
}

// link is one link target found in a Markdown file.
type link struct {
	line   int
	target string
}

// check returns one line per broken relative link of the Markdown file
// name (slash separated, relative to the root).
func (c *linkChecker) check(name string) ([]string, error) {
	content, err := os.ReadFile(filepath.Join(c.root, filepath.FromSlash(name)))
	if err != nil {
		return nil, err
	}
	var problems []string
	for _, l := range links(content) {
		if msg := c.resolve(name, l.target); msg != "" {
			problems = append(problems, fmt.Sprintf("%s:%d: %s: %s", name, l.line, l.target, msg))
		}
	}
	return problems, nil
}

// resolve returns why target, a link of the file from, does not resolve,
// or "" when it does or is not a relative link.
func (c *linkChecker) resolve(from, target string) string {
	target = strings.TrimSuffix(strings.TrimPrefix(target, "<"), ">")
	u, err := url.Parse(target)
	if err != nil {
		return "malformed link: " + err.Error()
	}
	if u.Scheme != "" || u.Host != "" || strings.HasPrefix(target, "//") {
		return "" // not relative: the web is not checked here
	}
	p, err := url.PathUnescape(u.EscapedPath())
	if err != nil {
		return "malformed path: " + err.Error()
	}
	var file string
	switch {
	case p == "":
		file = from
	case strings.HasPrefix(p, "/"):
		file = path.Clean(strings.TrimPrefix(p, "/")) // GitHub: the repository's root
	default:
		file = path.Join(path.Dir(from), p)
	}
	if file == ".." || strings.HasPrefix(file, "../") {
		return "points outside the repository"
	}
	info, err := os.Stat(filepath.Join(c.root, filepath.FromSlash(file)))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "no such file or directory"
		}
		return err.Error()
	}
	if u.Fragment == "" || info.IsDir() {
		return ""
	}
	if !strings.HasSuffix(file, ".md") {
		if lineAnchor.MatchString(u.Fragment) {
			return ""
		}
		return fmt.Sprintf("an anchor into %s, which is not Markdown, can only be a line (#L12)", file)
	}
	anchors, err := c.anchorsOf(file)
	if err != nil {
		return err.Error()
	}
	if !anchors[strings.ToLower(u.Fragment)] {
		return fmt.Sprintf("%s has no heading or anchor %q", file, u.Fragment)
	}
	return ""
}

// anchorsOf returns the anchors GitHub gives the headings of a Markdown
// file, and its explicit <a name> or id anchors.
func (c *linkChecker) anchorsOf(file string) (map[string]bool, error) {
	if a, ok := c.anchors[file]; ok {
		return a, nil
	}
	content, err := os.ReadFile(filepath.Join(c.root, filepath.FromSlash(file)))
	if err != nil {
		return nil, err
	}
	anchors := map[string]bool{}
	seen := map[string]int{}
	add := func(heading string) {
		s := slug(heading)
		if n := seen[s]; n > 0 {
			anchors[fmt.Sprintf("%s-%d", s, n)] = true
		} else {
			anchors[s] = true
		}
		seen[s]++
	}
	lines := proseLines(content, true)
	for i, line := range lines {
		if m := atxHeading.FindStringSubmatch(line); m != nil {
			add(m[1])
		} else if i > 0 && strings.TrimSpace(lines[i-1]) != "" && setextUnderline.MatchString(line) &&
			!atxHeading.MatchString(lines[i-1]) && !strings.Contains(lines[i-1], "|") {
			add(strings.TrimSpace(lines[i-1]))
		}
		for _, m := range htmlAnchor.FindAllStringSubmatch(line, -1) {
			anchors[strings.ToLower(m[1])] = true
		}
	}
	c.anchors[file] = anchors
	return anchors, nil
}

// slug is GitHub's anchor for a heading: its text lowercased, without
// punctuation but hyphens and underscores, spaces turned into hyphens.
func slug(heading string) string {
	heading = mdLinkText.ReplaceAllString(heading, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case unicode.IsLetter(r) || unicode.IsNumber(r) || unicode.Is(unicode.Mn, r) || r == '-' || r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// links returns the link targets of a Markdown file, outside code.
func links(content []byte) []link {
	var out []link
	for i, line := range proseLines(content, false) {
		for _, re := range []*regexp.Regexp{inlineLink, refDefinition, htmlLink} {
			for _, m := range re.FindAllStringSubmatch(line, -1) {
				out = append(out, link{line: i + 1, target: m[1]})
			}
		}
	}
	return out
}

// proseLines returns the lines of a Markdown file with fenced code blocks
// blanked, so that line numbers stay, and inline code spans removed unless
// keepSpans (a heading's anchor keeps the text of its code spans).
func proseLines(content []byte, keepSpans bool) []string {
	var lines []string
	var fence string // the open fence's marker, "" outside a fenced block
	sc := bufio.NewScanner(bytes.NewReader(content))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimLeft(line, " ")
		indent := len(line) - len(trimmed)
		switch {
		case fence != "":
			if indent <= 3 && strings.HasPrefix(trimmed, fence) && strings.Trim(trimmed, fence[:1]+" ") == "" {
				fence = ""
			}
			line = ""
		case indent <= 3 && (strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~")):
			n := len(trimmed) - len(strings.TrimLeft(trimmed, trimmed[:1]))
			fence = strings.Repeat(trimmed[:1], n)
			line = ""
		case !keepSpans:
			line = stripCodeSpans(line)
		}
		lines = append(lines, line)
	}
	return lines
}

// stripCodeSpans removes `code` spans (of any backtick run) from a line.
func stripCodeSpans(line string) string {
	var b strings.Builder
	for {
		start := strings.IndexByte(line, '`')
		if start < 0 {
			b.WriteString(line)
			return b.String()
		}
		n := len(line[start:]) - len(strings.TrimLeft(line[start:], "`"))
		run := line[start : start+n]
		end := strings.Index(line[start+n:], run)
		if end < 0 {
			b.WriteString(line)
			return b.String()
		}
		b.WriteString(line[:start])
		line = line[start+n+end+n:]
	}
}
