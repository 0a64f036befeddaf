//go:build !unix

package embedded

import (
	"fmt"
	"os"
)

// lockDir only creates path: without flock, running two sentinels on one
// directory is the operator's to avoid.
func lockDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}
