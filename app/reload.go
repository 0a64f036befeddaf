package app

import (
	"net/http"

	"github.com/agentsentinel/sentinel/auth"
	"github.com/agentsentinel/sentinel/config"
	"github.com/agentsentinel/sentinel/jsonapi"
)

// serveReload is POST /-/reload. It reloads the configuration for a global
// admin token only: a reload swaps every credential, so it is as powerful as
// the global admin, and without a credential anyone who reaches the port
// could make sentinel re-read a file being edited. Without a global admin
// token configured, reload with SIGHUP.
func (a *App) serveReload(w http.ResponseWriter, r *http.Request) {
	if !jsonapi.AllowMethods(w, r, http.MethodPost, http.MethodPut) {
		return
	}
	p, err := auth.Authenticator{Credentials: a.admin.Load().Credentials, Signer: a.signer}.Authenticate(r, a.opts.Now())
	switch {
	case err != nil && p.Kind != auth.KindRuntimeToken:
		jsonapi.Error(w, http.StatusUnauthorized, err.Error()+": reloading needs a global admin token")
		return
	case p.Kind != auth.KindGlobalAdmin:
		jsonapi.Error(w, http.StatusForbidden, "reloading needs a global admin token")
		return
	}
	if err := a.Reload(); err != nil {
		// The error names the line and the field but quotes no value
		// (config.Parse redacts them).
		jsonapi.Errorf(w, http.StatusInternalServerError, "reload failed, the running configuration is kept: %v", err)
		return
	}
	jsonapi.Write(w, http.StatusOK, map[string]string{"status": "reloaded"})
}

// dropRemovedTenants forgets the hot state of the agents of tenants cfg no
// longer has (at a reload, or at start after the configuration was edited):
// their series leave /metrics, so their alerts resolve instead of paging for
// agents nobody can beat or manage any more, and they stop counting towards
// max_agents. Their durable kill-switch records are kept: a revocation is
// never undone as a side effect, and if the tenant is configured again its
// agents register again with their next heartbeat (their runtime tokens are
// still valid) and find their revocations and commands in force.
//
// The receiver refuses the tenant's credentials before this runs, so only a
// heartbeat already past authentication can re-create one of its agents; the
// next reload or start drops it again.
func (a *App) dropRemovedTenants(cfg *config.Config) {
	configured := make(map[string]bool, len(cfg.Tenants))
	for _, t := range cfg.Tenants {
		configured[t.ID] = true
	}
	if n := a.store.DropTenants(func(tenant string) bool { return configured[tenant] }); n > 0 {
		a.logger.Warn("agents of tenants no longer configured were dropped", "agents", n)
	}
}
