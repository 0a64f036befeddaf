package heartbeat

import (
	"sync"
	"sync/atomic"

	"github.com/agentsentinel/sentinel/fleet"
)

// tenantCounts holds each tenant's agent count and limit. Counts change only
// when an agent is created or deleted, under its shard lock, so that they
// always match the store; the heartbeat of a known agent never looks here.
type tenantCounts struct {
	m sync.Map // tenant id → *tenantCount; entries are never removed
}

type tenantCount struct {
	n     atomic.Int64
	limit atomic.Int64 // 0: only the store-wide limit applies
}

func (tc *tenantCounts) get(tenant string) *tenantCount {
	if c, ok := tc.m.Load(tenant); ok {
		return c.(*tenantCount)
	}
	c, _ := tc.m.LoadOrStore(tenant, new(tenantCount))
	return c.(*tenantCount)
}

// SetTenantLimits sets each tenant's max_agents (on start and reload); a
// tenant absent from limits, or with 0, is capped by the store-wide limit
// only. Lowering a limit below a tenant's count evicts nobody; it only
// refuses the tenant's new agents.
func (s *Store) SetTenantLimits(limits map[string]int) {
	s.tenants.m.Range(func(k, v any) bool {
		if _, ok := limits[k.(string)]; !ok {
			v.(*tenantCount).limit.Store(0)
		}
		return true
	})
	for tenant, limit := range limits {
		s.tenants.get(tenant).limit.Store(int64(limit))
	}
}

// TenantLen returns the number of agents of tenant.
func (s *Store) TenantLen(tenant string) int {
	if c, ok := s.tenants.m.Load(tenant); ok {
		return int(c.(*tenantCount).n.Load())
	}
	return 0
}

// DropTenants deletes every agent whose tenant keep rejects, as a reload
// does for the tenants it removed, and returns how many it deleted. It locks
// one shard at a time.
func (s *Store) DropTenants(keep func(tenant string) bool) int {
	dropped := 0
	for i := range s.shards {
		sh := &s.shards[i]
		var doomed []fleet.Key
		sh.mu.RLock()
		for j := range sh.records {
			r := &sh.records[j]
			if r.flags&flagUsed == 0 {
				continue
			}
			if t := sh.str(r, strTenant); !keep(t) {
				doomed = append(doomed, fleet.Key{Tenant: string([]byte(t)), AgentID: string([]byte(sh.str(r, strAgentID)))})
			}
		}
		sh.mu.RUnlock()
		for _, k := range doomed {
			if s.Delete(k) {
				dropped++
			}
		}
	}
	return dropped
}
