//go:build !unix

package ledgertest

import "time"

// cpuTime is not measured here.
func cpuTime() time.Duration { return 0 }
