package beacon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ReadTokenFile returns the runtime token kept in path, or "" when the file
// does not exist or is empty. The file holds the bare token (what
// WriteTokenFile writes); a JSON object with a "runtime_token" field, as
// sentinel answers it, is accepted too.
func ReadTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if strings.HasPrefix(s, "{") {
		var t Token
		if err := json.Unmarshal([]byte(s), &t); err != nil {
			return "", fmt.Errorf("read token file %s: %w", path, err)
		}
		return strings.TrimSpace(t.RuntimeToken), nil
	}
	return s, nil
}

// WriteTokenFile stores token in path with mode 0600, atomically: it writes a
// temporary file in the same directory, fsyncs it, renames it over path and
// fsyncs the directory, so that a crash leaves either the old or the new token,
// never a torn one.
func WriteTokenFile(path, token string) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write token file: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	// CreateTemp already uses 0600; say so explicitly in case that changes.
	if err = f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("write token file: %w", err)
	}
	if _, err = f.WriteString(token + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("write token file: %w", err)
	}
	if err = f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write token file: sync: %w", err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write token file: %w", err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write token file: %w", err)
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync() // best effort: some filesystems refuse to sync a directory
		d.Close()
	}
	return nil
}
