package storage

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// writeBufferSize batches the small writes of encoders into large syscalls.
const writeBufferSize = 64 << 10

// WriteFileAtomic replaces path with the bytes that write produces, so that
// after a crash path holds either the old content or the complete new one.
//
// write receives a buffered writer on a temporary file in path's directory
// (created with mode 0700 if missing); the file is then flushed, fsynced,
// renamed over path, and the directory is fsynced. perm is applied exactly,
// not masked by the umask. On any error, including a panic in write, the old
// file is left untouched and the temporary file is removed. Leftover temporary
// files of path from an earlier crash are removed first, which is why a path
// must not be written by two callers at once.
func WriteFileAtomic(path string, perm os.FileMode, write func(io.Writer) error) error {
	if err := writeFileAtomic(path, perm, write); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func writeFileAtomic(path string, perm os.FileMode, write func(io.Writer) error) error {
	dir, base := filepath.Dir(path), filepath.Base(path)
	if err := mkdirAll(dir); err != nil {
		return err
	}
	removeStaleTemps(dir, base, nil)
	f, err := os.CreateTemp(dir, tempPattern(base))
	if err != nil {
		return err
	}
	committed := false
	defer func() {
		// Runs on errors and panics alike: never leave a half-written temp
		// file behind (a crashed 300 MB snapshot would otherwise pile up).
		if !committed {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, writeBufferSize)
	if err := write(bw); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	// A full fsync, not fdatasync: the new inode's metadata must be durable
	// before the rename makes it visible under the real name.
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	committed = true
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("file replaced but the rename may not survive a crash: %w", err)
	}
	return nil
}

// tempPattern names temporary files after their target, hidden, so a crash
// leaves something an operator recognises and removeStaleTemps can find.
func tempPattern(base string) string { return "." + base + ".tmp-*" }

// removeStaleTemps deletes temporary files of base left in dir by a crash
// during a write or a journal rewrite. Best effort: a leftover only wastes
// space, so failures are logged, not returned.
func removeStaleTemps(dir, base string, logger *slog.Logger) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	prefix := "." + base + ".tmp-"
	for _, e := range entries {
		if e.IsDir() || !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		err := os.Remove(p)
		if logger == nil {
			continue
		}
		if err != nil {
			logger.Warn("cannot remove stale temporary file", "file", p, "err", err)
		} else {
			logger.Info("removed stale temporary file", "file", p)
		}
	}
}

// syncDir makes a directory's entries (a created or renamed file) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// mkdirAll is os.MkdirAll that also fsyncs the parent of every directory it
// creates, so that a file created inside survives a crash with its path.
func mkdirAll(dir string) error {
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirAll(parent); err != nil {
			return err
		}
	}
	// ErrExist means a concurrent creator won; syncing the parent anyway
	// keeps "durable when we return" true without waiting for it.
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return syncDir(parent)
}
