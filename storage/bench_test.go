package storage

import (
	"io"
	"path/filepath"
	"testing"
)

// BenchmarkAppendParallel measures Append under 64 concurrent callers (2
// cores × parallelism 32): with group commit, fsyncs/op falls well below 1.
func BenchmarkAppendParallel(b *testing.B) {
	j, _, err := OpenJournal(filepath.Join(b.TempDir(), "journal"), nil)
	if err != nil {
		b.Fatal(err)
	}
	rec := make([]byte, 128)
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := j.Append(rec); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(j.Stats().Syncs)/float64(b.N), "fsyncs/op")
	if err := j.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAppendSerial is the baseline: one caller, one fsync per Append.
func BenchmarkAppendSerial(b *testing.B) {
	j, _, err := OpenJournal(filepath.Join(b.TempDir(), "journal"), nil)
	if err != nil {
		b.Fatal(err)
	}
	rec := make([]byte, 128)
	b.ResetTimer()
	for b.Loop() {
		if err := j.Append(rec); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(j.Stats().Syncs)/float64(b.N), "fsyncs/op")
	if err := j.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkSnapshot writes and verifies-then-reads a 64 MiB payload, the size
// class of a 200k-agent fleet.
func BenchmarkSnapshot(b *testing.B) {
	const size = 64 << 20
	chunk := make([]byte, 64<<10)
	path := filepath.Join(b.TempDir(), "agents.snap")
	b.Run("write", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			err := WriteSnapshot(path, "agents", func(w io.Writer) error {
				for range size / len(chunk) {
					if _, err := w.Write(chunk); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("read", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			err := ReadSnapshot(path, "agents", func(r io.Reader) error {
				_, err := io.Copy(io.Discard, r)
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}
