package storage

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
)

// keyKind is the snapshot kind of a key file: the checksummed container is
// what lets a damaged key be told from a valid one.
const keyKind = "signing-key"

// maxKeySize bounds the key ReadOrCreateKey will read or make.
const maxKeySize = 1 << 16

// ReadOrCreateKey returns the size-byte key kept at path (the key that signs
// runtime tokens). If path does not exist, it generates one with crypto/rand
// and writes it atomically, mode 0600, fsynced, before returning it. An
// existing file that is damaged, of another kind or holds a key of another
// size is an error naming the file: the key is never silently regenerated,
// since that would invalidate every token already issued.
func ReadOrCreateKey(path string, size int) ([]byte, error) {
	if size <= 0 || size > maxKeySize {
		return nil, fmt.Errorf("key %s: size %d out of range 1..%d", path, size, maxKeySize)
	}
	var key []byte
	err := ReadSnapshot(path, keyKind, func(r io.Reader) error {
		b, err := io.ReadAll(io.LimitReader(r, int64(size)+1))
		if err != nil {
			return err
		}
		if len(b) != size {
			return fmt.Errorf("key is %d bytes, want %d", len(b), size)
		}
		key = b
		return nil
	})
	if err == nil {
		return key, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	key = make([]byte, size)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate key %s: %w", path, err)
	}
	err = writeSnapshot(path, 0o600, keyKind, func(w io.Writer) error {
		_, err := w.Write(key)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	return key, nil
}
