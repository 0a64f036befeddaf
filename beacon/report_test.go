package beacon

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestReadReportFile(t *testing.T) {
	for _, tc := range []struct {
		name string
		data string
		want Report
		err  string
	}{
		{"full", `{"status":"degraded","version":"1.4.2","requests_handled":1500,"errors":2,"avg_latency_ms":145.5,"extra":1}`,
			Report{Status: StatusDegraded, Version: "1.4.2", Metrics: &Metrics{RequestsHandled: 1500, Errors: 2, AvgLatencyMs: 145.5}}, ""},
		{"status only", `{"status":"unhealthy"}`, Report{Status: StatusUnhealthy}, ""},
		{"one figure", `{"errors":3}`, Report{Metrics: &Metrics{Errors: 3}}, ""},
		{"zero figures are figures", `{"requests_handled":0}`, Report{Metrics: &Metrics{}}, ""},
		{"empty object", `{}`, Report{}, ""},
		{"bad status", `{"status":"shutdown"}`, Report{}, `status "shutdown" is not one of`},
		{"negative", `{"errors":-1}`, Report{}, "negative"},
		{"torn", `{"status":"heal`, Report{}, "parse report file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "m.json")
			require.NoError(t, os.WriteFile(path, []byte(tc.data), 0o600))
			got, err := ReadReportFile(path)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	t.Run("missing", func(t *testing.T) {
		got, err := ReadReportFile(filepath.Join(t.TempDir(), "none.json"))
		require.NoError(t, err)
		require.Equal(t, Report{}, got)
	})
}

func TestWriteReportFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.json")
	want := Report{Status: StatusHealthy, Version: "2", Metrics: &Metrics{RequestsHandled: 10, Errors: 1, AvgLatencyMs: 3.5}}
	require.NoError(t, WriteReportFile(path, want))
	got, err := ReadReportFile(path)
	require.NoError(t, err)
	require.Equal(t, want, got)
}

func TestFileReporterKeepsLastGood(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.json")
	logger, lb := newTestLogger()
	fr := &FileReporter{Path: path, Logger: logger}
	require.Equal(t, Report{}, fr.Report())

	good := Report{Status: StatusDegraded, Metrics: &Metrics{RequestsHandled: 5}}
	require.NoError(t, WriteReportFile(path, good))
	require.Equal(t, good, fr.Report())

	require.NoError(t, os.WriteFile(path, []byte("{torn"), 0o600))
	require.Equal(t, good, fr.Report())
	require.Equal(t, good, fr.Report())
	require.Equal(t, 1, lb.count("level=WARN", "report file"), "logged once per bad streak")

	require.NoError(t, WriteReportFile(path, Report{Status: StatusHealthy}))
	require.Equal(t, Report{Status: StatusHealthy}, fr.Report())
	require.Equal(t, 1, lb.count("level=INFO", "readable again"))
}
