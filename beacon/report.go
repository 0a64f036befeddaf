package beacon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
)

// EnvMetricsFile is the environment variable through which the beacon
// wrapper tells the wrapped child where to write its report file.
const EnvMetricsFile = "BEACON_METRICS_FILE"

// Report is what an agent says about itself at a heartbeat. Zero fields are
// left out: an empty Status means "healthy" (or "starting" before the first
// accepted heartbeat), an empty Version the configured one, nil Metrics none.
type Report struct {
	Status  Status
	Version string
	Metrics *Metrics
}

// reportFile is the JSON document of a report file. Pointers tell "absent"
// from zero.
type reportFile struct {
	Status          Status   `json:"status,omitempty"`
	Version         string   `json:"version,omitempty"`
	RequestsHandled *int64   `json:"requests_handled,omitempty"`
	Errors          *int64   `json:"errors,omitempty"`
	AvgLatencyMs    *float64 `json:"avg_latency_ms,omitempty"`
}

// ReadReportFile reads a report file, the JSON object
//
//	{"status": "healthy|degraded|unhealthy", "version": "1.4.2",
//	 "requests_handled": 1500, "errors": 2, "avg_latency_ms": 145}
//
// in which every field is optional and unknown fields are ignored. A missing
// file is an empty Report and no error. Metrics is set when any of the three
// figures is present; absent figures are 0.
func ReadReportFile(path string) (Report, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Report{}, nil
	}
	if err != nil {
		return Report{}, fmt.Errorf("read report file: %w", err)
	}
	var f reportFile
	if err := json.Unmarshal(b, &f); err != nil {
		return Report{}, fmt.Errorf("parse report file %s: %w", path, err)
	}
	switch f.Status {
	case "", StatusHealthy, StatusDegraded, StatusUnhealthy:
	default:
		return Report{}, fmt.Errorf("report file %s: status %q is not one of healthy, degraded, unhealthy", path, f.Status)
	}
	r := Report{Status: f.Status, Version: f.Version}
	if f.RequestsHandled != nil || f.Errors != nil || f.AvgLatencyMs != nil {
		m := &Metrics{}
		if f.RequestsHandled != nil {
			m.RequestsHandled = *f.RequestsHandled
		}
		if f.Errors != nil {
			m.Errors = *f.Errors
		}
		if f.AvgLatencyMs != nil {
			m.AvgLatencyMs = *f.AvgLatencyMs
		}
		if m.RequestsHandled < 0 || m.Errors < 0 || m.AvgLatencyMs < 0 {
			return Report{}, fmt.Errorf("report file %s: negative figures", path)
		}
		r.Metrics = m
	}
	return r, nil
}

// WriteReportFile writes r to path atomically (temporary file and rename), so
// that a reader never sees half a document. Go children of the wrapper can use
// it with os.Getenv(EnvMetricsFile).
func WriteReportFile(path string, r Report) error {
	f := reportFile{Status: r.Status, Version: r.Version}
	if r.Metrics != nil {
		f.RequestsHandled = &r.Metrics.RequestsHandled
		f.Errors = &r.Metrics.Errors
		f.AvgLatencyMs = &r.Metrics.AvgLatencyMs
	}
	b, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write report file: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("write report file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write report file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write report file: %w", err)
	}
	return nil
}

// FileReporter reads a report file before each heartbeat; its Report method
// fits Config.Report. A file that cannot be read or parsed (for instance
// half-written by a child that does not rename) keeps the last good report
// and is logged once until it is good again.
type FileReporter struct {
	Path   string
	Logger *slog.Logger

	mu     sync.Mutex
	last   Report
	broken bool
}

// Report returns the current report.
func (f *FileReporter) Report() Report {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, err := ReadReportFile(f.Path)
	if err != nil {
		if !f.broken && f.Logger != nil {
			f.Logger.Warn("Cannot use the agent's report file; sending the last good report", "path", f.Path, "err", err)
		}
		f.broken = true
		return f.last
	}
	if f.broken && f.Logger != nil {
		f.Logger.Info("Agent's report file is readable again", "path", f.Path)
	}
	f.broken = false
	f.last = r
	return r
}
