package heartbeat

import (
	"math"
	"math/bits"
)

// Change is one kind of change to the agents of a shard that the store
// counts, so that a reader keeping something derived from a shard (the
// collector keeps the rendered text of each family) can tell whether it is
// still current without reading the agents again.
type Change uint8

// The kinds of Change. Each is counted when a write leaves one agent's
// value different from what it was; ChangeMembers when an agent is added
// or removed, which may change every derived value and the order of the
// shard's agents (an added agent counts as that alone).
const (
	ChangeMembers Change = iota
	ChangeLastBeat
	ChangeInterval
	// ChangeThresholds: the agent's own thresholds.
	ChangeThresholds
	ChangeStopped
	ChangeRevoked
	ChangePaused
	// ChangeUptime: the reported uptime, or whether there is one.
	ChangeUptime
	// ChangeRequests, ChangeErrors and ChangeLatency: the reported metrics,
	// or whether there are any (all three at once).
	ChangeRequests
	ChangeErrors
	ChangeLatency
	// ChangeInfo: the status, the platform type or any reported string.
	ChangeInfo
	NumChanges
)

// ChangeCounts are a shard's counts of changes, per kind, since the store
// was made. They only grow: a value derived from a shard's agents is still
// current as long as the counts of the kinds it depends on are those it was
// derived at.
type ChangeCounts [NumChanges]uint64

// NumShards is how many shards the agents are spread over (EachRun).
const NumShards = numShards

// changesOf returns the kinds of change from before to after, the same
// agent's record before and after a write, as a bit set indexed by Change
// (agents added and removed are counted by insert and Delete). Values are
// compared bit for bit, so that a NaN is not a change of itself.
func changesOf(before, after *record) uint32 {
	var c uint32
	set := func(k Change, changed bool) {
		if changed {
			c |= 1 << k
		}
	}
	flags := before.flags ^ after.flags
	set(ChangeLastBeat, before.lastBeat != after.lastBeat)
	set(ChangeInterval, before.interval != after.interval)
	set(ChangeThresholds, before.silentAfter != after.silentAfter || before.zombieAfter != after.zombieAfter)
	set(ChangeStopped, flags&flagStopped != 0)
	set(ChangeRevoked, flags&flagRevoked != 0)
	set(ChangePaused, flags&flagPaused != 0)
	set(ChangeUptime, flags&flagHasUptime != 0 || !sameFloat(before.uptime, after.uptime))
	metrics := flags&flagHasMetrics != 0
	set(ChangeRequests, metrics || !sameFloat(before.requests, after.requests))
	set(ChangeErrors, metrics || !sameFloat(before.errors, after.errors))
	set(ChangeLatency, metrics || !sameFloat(before.latencyMs, after.latencyMs))
	// The strings are counted by writeBlob (shard.rewritten).
	set(ChangeInfo, before.status != after.status || before.platform != after.platform)
	return c
}

func sameFloat(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) }

// count adds the changes in set (a changesOf bit set) to the shard's
// counts. The shard lock must be held for writing.
func (sh *shard) count(set uint32) {
	for set != 0 {
		sh.changes[bits.TrailingZeros32(set)]++
		set &= set - 1
	}
}

// noteChanges counts the changes a write made to r, whose value before the
// write was before, with its strings if the write rewrote them. The shard
// lock must be held for writing.
func (sh *shard) noteChanges(before, r *record) {
	c := changesOf(before, r)
	if sh.rewritten {
		c |= 1 << ChangeInfo
		sh.rewritten = false
	}
	sh.count(c)
}
