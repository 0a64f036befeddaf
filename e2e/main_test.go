// Package e2e runs the real tool chain on loopback ports of the test: the
// sentinel and beacon binaries built from the tree, Prometheus with
// alerts/sentinel.rules.yml loaded as is, Alertmanager, and the customer's
// webhook endpoint. TestPipeline checks the alerts with Alertmanager
// notifying a fake receiver; TestLoop and TestLoopReplicas close the loop
// through sentinel's bridge (signed webhooks, the kill switch back to
// beacon), on one sentinel and on three replicas sharing PostgreSQL;
// TestDemo runs `make demo`'s script.
package e2e

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/agentsentinel/sentinel/internal/testutil"
)

// The binaries under test, built by TestMain.
var sentinelBin, beaconBin, sinkBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sentinel-e2e-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)

	// Built with -race when the tests run with it: a data race in sentinel
	// under real traffic fails the test too (the race detector exits 66).
	for bin, pkg := range map[*string]string{
		&sentinelBin: "github.com/agentsentinel/sentinel/cmd/sentinel",
		&beaconBin:   "github.com/agentsentinel/sentinel/cmd/beacon",
		&sinkBin:     "github.com/agentsentinel/sentinel/cmd/sentinel-webhook-sink",
	} {
		if *bin, err = testutil.BuildBinary(dir, pkg); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
			return 1
		}
	}
	// The scenarios of TestPipeline share one stack and mostly wait for
	// wall-clock thresholds (5 and 15 missed beats), not for CPU: run them all
	// at once unless -test.parallel says otherwise. Its default, GOMAXPROCS,
	// is 2 on CI and would serialise them into twice the time.
	flag.Parse()
	if !flagSet("test.parallel") {
		if err := flag.Set("test.parallel", "8"); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
			return 1
		}
	}
	code := m.Run()
	testutil.StopPostgres() // started by TestLoopReplicas' PostgresDSN
	return code
}

func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
