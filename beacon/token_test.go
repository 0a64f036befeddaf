package beacon

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTokenFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token")

	tok, err := ReadTokenFile(path)
	require.NoError(t, err, "a missing file is no token, not an error")
	require.Empty(t, tok)

	require.NoError(t, WriteTokenFile(path, "srt_1"))
	require.NoError(t, WriteTokenFile(path, "srt_2"))
	tok, err = ReadTokenFile(path)
	require.NoError(t, err)
	require.Equal(t, "srt_2", tok)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary files are left behind")

	t.Run("an existing looser file becomes 0600", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "token")
		require.NoError(t, os.WriteFile(p, []byte("old"), 0o644))
		require.NoError(t, WriteTokenFile(p, "srt_3"))
		fi, err := os.Stat(p)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	})
	t.Run("JSON as sentinel answers it", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "token")
		require.NoError(t, os.WriteFile(p, []byte(`{"runtime_token":"srt_j","expires_at":"2030-01-01T00:00:00Z","token_version":3}`), 0o600))
		tok, err := ReadTokenFile(p)
		require.NoError(t, err)
		require.Equal(t, "srt_j", tok)
	})
	t.Run("missing directory", func(t *testing.T) {
		require.Error(t, WriteTokenFile(filepath.Join(t.TempDir(), "nope", "token"), "x"))
	})
}
