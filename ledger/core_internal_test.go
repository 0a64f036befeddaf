package ledger

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
)

type nopPersister struct{}

func (nopPersister) Prepare(context.Context, *Txn) error           { return nil }
func (nopPersister) Persist(context.Context, *Txn, []Change) error { return nil }

var errSeen = errors.New("seen")

// watchRevisions returns the revisions a Watch from after delivers, up to to.
func watchRevisions(c *Core, after, to Revision) ([]Revision, error) {
	var revs []Revision
	err := c.Watch(context.Background(), after, func(ch Change) error {
		revs = append(revs, ch.Revision)
		if ch.Revision == to {
			return errSeen
		}
		return nil
	})
	if errors.Is(err, errSeen) {
		err = nil
	}
	return revs, err
}

// TestWatchLogBoundedByOps: the watch log keeps changes up to a number of
// ops, not of changes alone, but always the newest change.
func TestWatchLogBoundedByOps(t *testing.T) {
	ctx := context.Background()
	c := NewCore()
	c.maxLogOps = 100
	stop := make(chan struct{})
	defer close(stop)
	go c.RunCommitter(stop, nopPersister{})
	register := func(n int, prefix string) {
		ops := make([]Op, n)
		for i := range ops {
			ops[i] = Register{Key: fleet.Key{Tenant: "acme", AgentID: fmt.Sprintf("%s-%d", prefix, i)}, At: time.Unix(1, 0)}
		}
		_, err := c.Apply(ctx, ops...)
		require.NoError(t, err)
	}
	for i := range 10 {
		register(30, fmt.Sprint(i)) // revisions 1 to 10
	}
	c.mu.Lock()
	logOps, kept := c.logOps, len(c.log)
	c.mu.Unlock()
	require.LessOrEqual(t, logOps, 100)
	require.Equal(t, 30*kept, logOps)
	require.Positive(t, kept)

	_, err := watchRevisions(c, 0, 10)
	require.ErrorIs(t, err, ErrCompacted, "a watcher behind the log is told so")
	revs, err := watchRevisions(c, Revision(10-kept), 10)
	require.NoError(t, err)
	require.Len(t, revs, kept)

	register(300, "big") // revision 11, alone over the bound: kept
	c.mu.Lock()
	logOps, kept = c.logOps, len(c.log)
	c.mu.Unlock()
	require.Equal(t, 1, kept)
	require.Equal(t, 300, logOps)
	revs, err = watchRevisions(c, 10, 11)
	require.NoError(t, err)
	require.Equal(t, []Revision{11}, revs)
}
