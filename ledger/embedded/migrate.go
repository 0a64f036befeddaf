package embedded

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/agentsentinel/sentinel/fleet"
	"github.com/agentsentinel/sentinel/ledger"
	"github.com/agentsentinel/sentinel/storage"
)

// LegacyJournalFile is the kill-switch journal of sentinel before the
// ledger. A first start of the ledger next to one takes its state over and
// renames it with a ".migrated" suffix.
const LegacyJournalFile = "killswitch.journal"

// legacyEntry is one record of the legacy journal.
type legacyEntry struct {
	Op        string    `json:"op"`
	Tenant    string    `json:"tenant"`
	Agent     string    `json:"agent"`
	At        time.Time `json:"at"`
	Reason    string    `json:"reason"`
	TimeoutMs int64     `json:"shutdown_timeout_ms"`
	Source    string    `json:"source"`
	Command   string    `json:"command"`
	Seq       uint32    `json:"seq"`
}

// migrateLegacy replays the legacy journal into the core as revision 1. It
// reports whether there was one.
func (l *Ledger) migrateLegacy() (bool, error) {
	path := l.path(LegacyJournalFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	j, recs, err := storage.OpenJournal(path, l.logger)
	if err != nil {
		return false, corrupt(fmt.Errorf("migrate legacy journal: %w", err))
	}
	if err := j.Close(); err != nil {
		return false, fmt.Errorf("migrate legacy journal %s: %w", path, err)
	}
	var ops []ledger.Op
	for i, rec := range recs {
		var e legacyEntry
		if err := json.Unmarshal(rec, &e); err != nil {
			return false, fmt.Errorf("%w: legacy journal %s: record %d: %v", ledger.ErrCorrupt, path, i, err)
		}
		k := fleet.Key{Tenant: e.Tenant, AgentID: e.Agent}
		switch e.Op {
		case "revoke":
			ops = append(ops, ledger.Revoke{Key: k, Revocation: fleet.Revocation{
				Reason: e.Reason, ShutdownTimeout: time.Duration(e.TimeoutMs) * time.Millisecond, RevokedAt: e.At, Source: e.Source}})
		case "reinstate":
			ops = append(ops, ledger.Reinstate{Key: k})
		case "command":
			cmd, ok := fleet.ParseCommand(e.Command)
			if !ok {
				return false, fmt.Errorf("%w: legacy journal %s: record %d: unknown command %q", ledger.ErrCorrupt, path, i, e.Command)
			}
			ops = append(ops, ledger.SetCommand{Key: k, Command: cmd, IssuedAt: e.At, Seq: e.Seq})
		case "ack":
			ops = append(ops, ledger.AckCommand{Key: k, Seq: e.Seq})
		case "forget":
			ops = append(ops, ledger.Forget{Key: k, At: e.At})
		case "register":
			ops = append(ops, ledger.Register{Key: k, At: e.At})
		default:
			return false, fmt.Errorf("%w: legacy journal %s: record %d: unknown op %q", ledger.ErrCorrupt, path, i, e.Op)
		}
	}
	if len(ops) > 0 {
		// The legacy records are facts already decided, so they go in as
		// one committed change rather than through Apply's conditions.
		if err := l.Core.Catch([]ledger.Change{{Revision: 1, Ops: ops}}); err != nil {
			return false, err
		}
	}
	l.logger.Info("migrating the legacy kill-switch journal into the ledger", "file", path, "records", len(recs))
	return true, nil
}
