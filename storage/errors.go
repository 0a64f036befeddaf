package storage

import (
	"errors"
	"fmt"
)

// ErrCorrupt is matched (with errors.Is) by every error reporting data on disk
// that failed verification: bad magic, checksum mismatch, truncation, trailing
// garbage, a damaged journal record followed by intact ones. The error text
// names the file and the offset. Callers should refuse to start rather than
// overwrite such a file: it may be the only copy of acknowledged data.
var ErrCorrupt = errors.New("corrupt data")

// ErrJournalClosed is returned by Journal methods called after Close.
var ErrJournalClosed = errors.New("journal closed")

// corruptError carries a complete message that names the file, and matches
// ErrCorrupt without repeating "corrupt data" in every message.
type corruptError struct{ msg string }

func (e *corruptError) Error() string        { return e.msg }
func (e *corruptError) Is(target error) bool { return target == ErrCorrupt }

func corruptf(format string, args ...any) error {
	return &corruptError{msg: fmt.Sprintf(format, args...)}
}
