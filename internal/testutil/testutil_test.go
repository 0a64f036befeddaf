package testutil

import (
	"net"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestFreeAddrReservesPorts: a port FreeAddr handed out is not handed out
// again, by this process or, through the lock files, by another.
func TestFreeAddrReservesPorts(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		addr := FreeAddr(t)
		require.False(t, seen[addr], "%s handed out twice", addr)
		seen[addr] = true
	}
	for addr := range seen {
		_, port, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		p, err := strconv.Atoi(port)
		require.NoError(t, err)
		// Another lock on the same file, as another process would take.
		require.False(t, reservePort(p), "port %d reserved again", p)
		break
	}
}
