package heartbeat

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/agentsentinel/sentinel/fleet"
)

// The snapshot payload holds the hot state of SPEC 9 (registrations, last
// heartbeats, reported metrics, token versions). Kill-switch state is not in
// it: that is journaled by package killswitch and applied after a restore.
// Framing, checksums and atomic replacement are package storage's job.
//
// Layout, little endian: takenAt int64 (unix ns); per agent a byte 1,
// numStrings length-prefixed strings (uint8 length) in blob order, and the
// numeric fields (snapshotNumeric bytes); then a byte 0 and the number of
// agents as uint64. The count comes last because the store is copied one
// shard at a time while heartbeats go on.

// snapshot flags, independent of the in-memory flag bits.
const (
	snapStopped uint16 = 1 << iota
	snapHasUptime
	snapHasMetrics
	snapHasExitCode
	snapPaused // absent from older snapshots: not paused
)

const snapshotNumeric = 9*8 + 4 + 2 + 1 + 1

// EncodeSnapshot writes every agent's hot state to w, stamped with takenAt.
// It copies one shard at a time and never blocks heartbeats for long.
func (s *Store) EncodeSnapshot(w io.Writer, takenAt time.Time) (int, error) {
	bw := bufio.NewWriterSize(w, 1<<20)
	le := binary.LittleEndian
	buf := make([]byte, 0, 4096)
	buf = le.AppendUint64(buf, uint64(takenAt.UnixNano()))
	if _, err := bw.Write(buf); err != nil {
		return 0, err
	}
	n := 0
	var err error
	s.Each(func(a *Agent) bool {
		buf = append(buf[:0], 1)
		buf = appendBlob(buf, a.Key, a.Version, &a.Platform)
		for _, v := range [...]int64{a.RegisteredAt.UnixNano(), a.LastHeartbeat.UnixNano(), int64(a.Interval), a.Platform.PID, a.ExitCode} {
			buf = le.AppendUint64(buf, uint64(v))
		}
		for _, v := range [...]float64{a.UptimeSeconds, a.Metrics.RequestsHandled, a.Metrics.Errors, a.Metrics.AvgLatencyMs} {
			buf = le.AppendUint64(buf, math.Float64bits(v))
		}
		buf = le.AppendUint32(buf, a.TokenVersion)
		var flags uint16
		for _, f := range [...]struct {
			set  bool
			flag uint16
		}{{a.Stopped, snapStopped}, {a.HasUptime, snapHasUptime}, {a.HasMetrics, snapHasMetrics}, {a.HasExitCode, snapHasExitCode}, {a.Paused, snapPaused}} {
			if f.set {
				flags |= f.flag
			}
		}
		buf = le.AppendUint16(buf, flags)
		buf = append(buf, byte(a.Status), byte(a.Platform.Type))
		if _, err = bw.Write(buf); err != nil {
			return false
		}
		n++
		return true
	})
	if err != nil {
		return n, err
	}
	buf = le.AppendUint64(append(buf[:0], 0), uint64(n))
	if _, err := bw.Write(buf); err != nil {
		return n, err
	}
	return n, bw.Flush()
}

// DecodeSnapshot restores the agents of a snapshot into the store and
// returns when the snapshot was taken and how many agents it held. A
// snapshot that does not decode is an error: the caller never starts from a
// silently partial fleet.
func (s *Store) DecodeSnapshot(r io.Reader) (time.Time, int, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	var head [8]byte
	if _, err := io.ReadFull(br, head[:]); err != nil {
		return time.Time{}, 0, fmt.Errorf("snapshot header: %w", unexpected(err))
	}
	le := binary.LittleEndian
	takenAt := time.Unix(0, int64(le.Uint64(head[:]))).UTC()
	var strs [numStrings][]byte
	var strBuf [numStrings][MaxStringLen]byte
	var num [snapshotNumeric]byte
	var i uint64
	for ; ; i++ {
		marker, err := br.ReadByte()
		if err != nil {
			return takenAt, int(i), fmt.Errorf("snapshot agent %d: %w", i, unexpected(err))
		}
		if marker == 0 {
			break
		}
		if marker != 1 {
			return takenAt, int(i), fmt.Errorf("snapshot agent %d: bad record marker %d", i, marker)
		}
		for j := range strs {
			n, err := br.ReadByte()
			if err != nil {
				return takenAt, int(i), fmt.Errorf("snapshot agent %d: %w", i, unexpected(err))
			}
			strs[j] = strBuf[j][:n]
			if _, err := io.ReadFull(br, strs[j]); err != nil {
				return takenAt, int(i), fmt.Errorf("snapshot agent %d: %w", i, unexpected(err))
			}
		}
		if _, err := io.ReadFull(br, num[:]); err != nil {
			return takenAt, int(i), fmt.Errorf("snapshot agent %d: %w", i, unexpected(err))
		}
		a := Agent{
			Key:     fleet.Key{Tenant: string(strs[strTenant]), AgentID: string(strs[strAgentID])},
			Version: string(strs[strVersion]),
			Platform: Platform{
				ContainerID: string(strs[strContainerID]), Image: string(strs[strImage]),
				PodName: string(strs[strPodName]), Namespace: string(strs[strNamespace]),
				Node: string(strs[strNode]), FunctionName: string(strs[strFunctionName]),
				Region: string(strs[strRegion]), Hostname: string(strs[strHostname]), OS: string(strs[strOS]),
				PID: int64(le.Uint64(num[24:])),
			},
			RegisteredAt:  time.Unix(0, int64(le.Uint64(num[0:]))).UTC(),
			LastHeartbeat: time.Unix(0, int64(le.Uint64(num[8:]))).UTC(),
			Interval:      time.Duration(le.Uint64(num[16:])),
			ExitCode:      int64(le.Uint64(num[32:])),
			UptimeSeconds: math.Float64frombits(le.Uint64(num[40:])),
			Metrics: ReportedMetrics{
				RequestsHandled: math.Float64frombits(le.Uint64(num[48:])),
				Errors:          math.Float64frombits(le.Uint64(num[56:])),
				AvgLatencyMs:    math.Float64frombits(le.Uint64(num[64:])),
			},
			TokenVersion: le.Uint32(num[72:]),
			Status:       Status(num[78]),
		}
		a.Platform.Type = PlatformType(num[79])
		flags := le.Uint16(num[76:])
		a.Stopped = flags&snapStopped != 0
		a.HasUptime = flags&snapHasUptime != 0
		a.HasMetrics = flags&snapHasMetrics != 0
		a.HasExitCode = flags&snapHasExitCode != 0
		a.Paused = flags&snapPaused != 0
		if !fleet.ValidAgentID(a.AgentID) || a.Tenant == "" || int(a.Status) >= len(statusNames) ||
			int(a.Platform.Type) >= len(platformNames) || a.Interval <= 0 {
			return takenAt, int(i), fmt.Errorf("snapshot agent %d (%s): invalid record", i, a.Key)
		}
		s.Restore(&a)
	}
	var tail [8]byte
	if _, err := io.ReadFull(br, tail[:]); err != nil {
		return takenAt, int(i), fmt.Errorf("snapshot trailer: %w", unexpected(err))
	}
	if count := le.Uint64(tail[:]); count != i {
		return takenAt, int(i), fmt.Errorf("snapshot holds %d agents but its trailer says %d", i, count)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return takenAt, int(i), errors.New("snapshot: data after the last agent")
	}
	return takenAt, int(i), nil
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
