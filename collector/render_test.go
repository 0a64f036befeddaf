package collector

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/heartbeat"
	"github.com/agentsentinel/sentinel/internal/testutil"
)

// chunkedFleet is a store of n agents (fillFleet) and a collector of it
// whose pages have a chunk per chunkAgents agents, for the test.
func chunkedFleet(t *testing.T, n, per int) (*heartbeat.Store, *Collector) {
	t.Cleanup(func(was int) func() { return func() { chunkAgents = was } }(chunkAgents))
	chunkAgents = per
	s := heartbeat.NewStore(100_000, nil)
	fillFleet(t, s, n)
	return s, newTestCollector(s, &fakeClock{t: epoch}, fleetTenants...)
}

// page renders c into sc and returns the page's agent families.
func page(c *Collector, sc *scrape) string {
	c.render(sc, nil)
	var b bytes.Buffer
	for _, p := range sc.parts()[1:] {
		b.Write(p)
	}
	return b.String()
}

// TestRenderKeepsOnlyCurrentText: after every kind of change the store
// knows, a render that keeps texts from the one before gives the page a
// fresh render gives, and it keeps exactly the texts that the change left
// alone.
func TestRenderKeepsOnlyCurrentText(t *testing.T) {
	defer func(per int) { chunkAgents = per }(chunkAgents)
	chunkAgents = 50
	const n = 450 // 8 chunks, also with one agent fewer or more
	s := heartbeat.NewStore(10_000, nil)
	fillFleet(t, s, n)
	clock := &fakeClock{t: epoch}
	current := policy
	c := New(s, Options{
		Thresholds: func() *fleet.ThresholdPolicy { return current },
		Tenants:    func() []string { return fleetTenants },
		Now:        clock.Now,
	})
	nc := chunksFor(n)
	require.Equal(t, 8, nc)
	key := func(i int) fleet.Key {
		return fleet.Key{Tenant: fleetTenants[i%len(fleetTenants)], AgentID: fmt.Sprintf("agent-%07d", i)}
	}
	// beat has agent i beat a second later than any beat before, as
	// k8sBeat has it unless edit changes it.
	var ticks time.Duration
	beat := func(i int, edit func(*heartbeat.BeatRequest)) {
		ticks += time.Second
		req := k8sBeat(key(i).Tenant, i, epoch.Add(ticks))
		if edit != nil {
			edit(req)
		}
		_, err := s.Beat(req, thresholds)
		require.NoError(t, err)
	}
	// Every beat changes the last heartbeat, the lease and the zombie
	// deadline: three texts of the agent's chunk.
	const beatTexts = 3

	steps := []struct {
		name string
		do   func()
		// changed is how many texts of a family in a chunk the step
		// changes; -1 when it re-renders everything or depends on which
		// chunks the agents fall in.
		changed int
	}{
		{"nothing", func() {}, 0},
		{"the clock", func() { clock.t = clock.t.Add(time.Hour) }, 0},
		{"a beat", func() { beat(7, nil) }, beatTexts},
		{"a beat at the same time", func() {
			beat(7, func(r *heartbeat.BeatRequest) { r.Time = r.Time.Add(-time.Second) })
			ticks -= time.Second
		}, 0},
		{"uptime", func() { beat(7, func(r *heartbeat.BeatRequest) { r.Uptime++ }) }, beatTexts + 1},
		{"requests", func() { beat(7, func(r *heartbeat.BeatRequest) { r.Uptime++; r.Metrics.RequestsHandled++ }) }, beatTexts + 1},
		{"errors", func() { beat(7, func(r *heartbeat.BeatRequest) { r.Uptime++; r.Metrics.Errors += 3 }) }, beatTexts + 2},
		{"latency", func() { beat(7, func(r *heartbeat.BeatRequest) { r.Uptime++; r.Metrics.AvgLatencyMs = 7 }) }, beatTexts + 2},
		// A beat without metrics leaves the last ones reported.
		{"no metrics", func() { beat(7, func(r *heartbeat.BeatRequest) { r.Uptime++; r.HasMetrics = false }) }, beatTexts},
		{"metrics again", func() { beat(7, func(r *heartbeat.BeatRequest) { r.Uptime++; r.Metrics.AvgLatencyMs = 7 }) }, beatTexts},
		{"interval", func() {
			beat(7, func(r *heartbeat.BeatRequest) { r.Uptime++; r.Metrics.AvgLatencyMs = 7; r.Interval = time.Minute })
		}, beatTexts + 1},
		{"own thresholds", func() {
			beat(7, func(r *heartbeat.BeatRequest) {
				r.Uptime++
				r.Metrics.AvgLatencyMs = 7
				r.Interval = time.Minute
				r.Thresholds = fleet.Thresholds{SilentAfter: 3, ZombieAfter: 9}
			})
		}, beatTexts},
		{"first beat since the fleet was filled", func() { beat(8, nil) }, beatTexts},
		{"version", func() { beat(8, func(r *heartbeat.BeatRequest) { r.Version = "2.0.0" }) }, beatTexts + 1},
		{"platform", func() { beat(8, func(r *heartbeat.BeatRequest) { r.Version = "2.0.0"; r.Platform.Node = "elsewhere" }) }, beatTexts + 1},
		{"stopped", func() { beat(9, func(r *heartbeat.BeatRequest) { r.Status = heartbeat.StatusShutdown }) }, beatTexts + 2}, // stopped, info's status
		{"running again", func() { beat(9, nil) }, beatTexts + 2},
		{"revoked", func() { require.True(t, s.SetRevoked(key(10), true)) }, 1},
		{"reinstated", func() { require.True(t, s.SetRevoked(key(10), false)) }, 1},
		{"a command", func() { require.True(t, s.SetCommand(key(11), fleet.CommandPause, 1)) }, 0},
		{"paused", func() { beat(11, nil); beat(11, nil) }, beatTexts + 1},
		{"resumed", func() {
			require.True(t, s.SetCommand(key(11), fleet.CommandResume, 2))
			beat(11, nil)
		}, beatTexts + 1},
		{"restored as it was", func() {
			a, ok := s.Get(key(12))
			require.True(t, ok)
			s.Restore(&a)
		}, 0},
		{"merged, newer", func() {
			a, ok := s.Get(key(12))
			require.True(t, ok)
			a.LastHeartbeat = a.LastHeartbeat.Add(time.Second)
			require.True(t, s.Merge(&a))
		}, beatTexts},
		{"deleted", func() { require.True(t, s.Delete(key(13))) }, numValueFamilies + 1},
		{"registered", func() { beat(n+1, nil) }, numValueFamilies + 1},
		{"other thresholds", func() {
			current = &fleet.ThresholdPolicy{Global: fleet.Thresholds{SilentAfter: 4, ZombieAfter: 12}}
		}, -1},
		{"a tenant dropped", func() { require.Positive(t, s.DropTenants(func(t string) bool { return t != "initech" })) }, -1},
		{"many strings rewritten (arena compaction)", func() {
			for round := range 3 {
				for i := 0; i < n; i += 3 {
					beat(i, func(r *heartbeat.BeatRequest) { r.Version = fmt.Sprintf("3.%d.%d", round, i) })
				}
			}
		}, -1},
		{"nothing, after all that", func() {}, 0},
	}

	kept := &scrape{}
	require.Equal(t, page(c, &scrape{}), page(c, kept))
	for _, step := range steps {
		step.do()
		got := page(c, kept)
		require.Equal(t, page(c, &scrape{}), got, step.name)
		if step.changed >= 0 {
			// Every value family and info, in every chunk, but the changed.
			require.Equal(t, len(kept.chunks)*(numValueFamilies+1)-step.changed, kept.kept, step.name)
		}
	}
}

// TestRenderKeepsTextUnderConcurrentBeats: renders that keep texts while
// agents beat, register and are revoked end, once the writes stop, at the
// page a fresh render gives: no text is kept that a write changed.
func TestRenderKeepsTextUnderConcurrentBeats(t *testing.T) {
	const n = 600
	s, c := chunkedFleet(t, n, 40)

	var stops []func()
	for w := range 2 {
		rng := rand.New(rand.NewPCG(uint64(w), 1))
		stops = append(stops, testutil.WriteWhile(t, func(round int) error {
			i := rng.IntN(n + 50)
			req := k8sBeat(fleetTenants[i%len(fleetTenants)], i, epoch.Add(time.Duration(round)*time.Millisecond))
			switch rng.IntN(4) {
			case 0:
				req.Metrics.Errors = float64(round)
			case 1:
				req.Version = fmt.Sprint(round % 5)
			case 2:
				s.SetRevoked(req.Key, round%2 == 0)
				return nil
			}
			_, err := s.Beat(req, thresholds)
			return err
		}))
	}
	kept := &scrape{}
	for range 30 {
		page(c, kept)
	}
	for _, stop := range stops {
		stop()
	}
	require.Equal(t, page(c, &scrape{}), page(c, kept))
	require.Equal(t, page(c, kept), page(c, kept))
	require.Equal(t, len(kept.chunks)*(numValueFamilies+1), kept.kept)
}

// TestRenderKeepsTextAcrossChunkCounts: a scrape state kept while the fleet
// grows and shrinks through every number of chunks renders what a fresh
// one does.
func TestRenderKeepsTextAcrossChunkCounts(t *testing.T) {
	defer func(per int) { chunkAgents = per }(chunkAgents)
	chunkAgents = 10
	s := heartbeat.NewStore(10_000, nil)
	c := newTestCollector(s, &fakeClock{t: epoch}, fleetTenants...)
	kept := &scrape{}
	registered := 0
	for _, n := range []int{5, 25, 45, 85, 165, 25, 5, 165, 45} {
		for ; registered < n; registered++ {
			_, err := s.Beat(k8sBeat(fleetTenants[registered%3], registered, epoch), thresholds)
			require.NoError(t, err)
		}
		for ; registered > n; registered-- {
			i := registered - 1
			require.True(t, s.Delete(fleet.Key{Tenant: fleetTenants[i%3], AgentID: fmt.Sprintf("agent-%07d", i)}))
		}
		got := page(c, kept)
		require.Equal(t, page(c, &scrape{}), got, "%d agents", n)
		require.Len(t, kept.chunks, chunksFor(n))
	}
}

// TestRenderKeepsEachPageConsistent: while agents beat, register and are
// deleted, every page that keeps texts shows each agent in all
// the families every agent has, or in none: an agent's families are all
// read from the same copy of its shard, as when everything is rendered.
func TestRenderKeepsEachPageConsistent(t *testing.T) {
	const n = 4000
	s, c := chunkedFleet(t, n, 500)

	// Agents beat one after the other (their heartbeat families change,
	// their other families are kept), and now and then one of a few
	// agents beyond the fleet comes or goes: a chunk with no such change
	// since the last page keeps its other families while one may land in
	// it during the render.
	defer testutil.WriteWhile(t, func(round int) error {
		if round%20 == 0 {
			i := n + round/20%16
			k := fleet.Key{Tenant: fleetTenants[i%3], AgentID: fmt.Sprintf("agent-%07d", i)}
			if !s.Delete(k) {
				if _, err := s.Beat(k8sBeat(k.Tenant, i, epoch), thresholds); err != nil {
					return err
				}
			}
		}
		j := round % n
		_, err := s.Beat(k8sBeat(fleetTenants[j%3], j, epoch.Add(time.Duration(round)*time.Millisecond)), thresholds)
		time.Sleep(5 * time.Microsecond)
		return err
	})()

	// Families every agent of fillFleet has a sample in.
	everyAgent := []string{
		"sentinel_agent_last_heartbeat_timestamp_seconds", "sentinel_agent_heartbeat_interval_seconds",
		"sentinel_agent_lease_expiry_timestamp_seconds", "sentinel_agent_zombie_deadline_timestamp_seconds",
		"sentinel_agent_stopped", "sentinel_agent_revoked", "sentinel_agent_paused", "sentinel_agent_uptime_seconds",
		"sentinel_agent_requests_handled_total", "sentinel_agent_errors_total", "sentinel_agent_latency_average_seconds",
		"sentinel_agent_info",
	}
	kept := &scrape{}
	keptTexts := 0
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		text := page(c, kept)
		keptTexts += kept.kept
		agents := map[string]map[string]bool{}
		for _, line := range strings.Split(text, "\n") {
			name, rest, ok := strings.Cut(line, "{")
			if !ok || !slices.Contains(everyAgent, name) {
				continue
			}
			_, id, _ := strings.Cut(rest, `agent_id="`)
			id, _, _ = strings.Cut(id, `"`)
			if agents[id] == nil {
				agents[id] = map[string]bool{}
			}
			agents[id][name] = true
		}
		for id, in := range agents {
			require.Len(t, in, len(everyAgent), "agent %s is in some families only: %v", id, in)
		}
	}
	require.Positive(t, keptTexts, "no text was kept: the test would not see a mismatch")
}

// TestRenderRecyclesItsMemory: once a scrape state has rendered the fleet,
// rendering it again allocates next to nothing, whether it keeps texts or
// renders everything: the copies of the store and the text buffers are
// the state's.
func TestRenderRecyclesItsMemory(t *testing.T) {
	defer func(per int) { chunkAgents = per }(chunkAgents)
	for _, per := range []int{chunkAgents, 100} { // one chunk, then sixteen
		chunkAgents = per
		s := heartbeat.NewStore(10_000, nil)
		fillFleet(t, s, 2000)
		c := newTestCollector(s, &fakeClock{t: epoch}, fleetTenants...)
		for _, fresh := range []bool{false, true} {
			c.fresh = fresh
			kept := &scrape{}
			c.render(kept, nil)
			req := k8sBeat(fleetTenants[0], 0, epoch)
			allocs := testing.AllocsPerRun(5, func() {
				req.Time = req.Time.Add(time.Second) // one chunk changes
				_, err := s.Beat(req, thresholds)
				require.NoError(t, err)
				c.render(kept, nil)
			})
			require.LessOrEqual(t, allocs, 10.0, "%d chunks, fresh %v", len(kept.chunks), fresh)
		}
	}
}
