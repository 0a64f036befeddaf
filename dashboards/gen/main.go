// Command gen writes sentinel's Grafana dashboards as JSON files. `make
// generate` runs it from the dashboards directory (go:generate in
// dashboards/doc.go), hence the default output directory.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/agentsentinel/sentinel/dashboards"
)

func main() {
	out := flag.String("out", ".", "Directory to write the dashboards' JSON files to.")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	for _, d := range dashboards.All() {
		b, err := d.JSON()
		if err != nil {
			return err
		}
		path := filepath.Join(dir, d.FileName())
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return nil
}
