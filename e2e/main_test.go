// Package e2e runs the real tool chain: the sentinel binary, Prometheus with
// alerts/sentinel.rules.yml loaded as is, Alertmanager, and a fake customer
// webhook as Alertmanager's receiver, all on loopback ports of the test.
package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// sentinelBin is the sentinel binary built by TestMain.
var sentinelBin string

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

	sentinelBin = filepath.Join(dir, "sentinel")
	args := []string{"build", "-o", sentinelBin}
	if raceEnabled {
		// A data race in sentinel under real traffic fails the test too: the
		// race detector makes the process exit with code 66.
		args = append(args, "-race")
	}
	args = append(args, "github.com/agentsentinel/sentinel/cmd/sentinel")
	// go test puts its own GOROOT/bin first on PATH, so this is the same go.
	build := exec.Command("go", args...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go %v: %v\n", args, err)
		return 1
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
	return m.Run()
}

func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
