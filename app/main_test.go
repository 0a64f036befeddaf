package app_test

import (
	"os"
	"testing"

	"github.com/agentsentinel/sentinel/internal/testutil"
)

// TestMain stops the throw-away PostgreSQL that tests on the shared ledger
// start (once per test binary).
func TestMain(m *testing.M) { os.Exit(testutil.MainWithPostgres(m)) }
