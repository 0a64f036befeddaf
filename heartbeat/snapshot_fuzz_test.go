package heartbeat

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzDecodeSnapshot decodes arbitrary snapshot bodies: no panic, and a
// snapshot it accepts survives another encode and decode unchanged.
func FuzzDecodeSnapshot(f *testing.F) {
	var buf bytes.Buffer
	_, err := snapshotFleet(f).EncodeSnapshot(&buf, stT0)
	require.NoError(f, err)
	full := buf.Bytes()
	buf.Reset()
	_, err = NewStore(1, nil).EncodeSnapshot(&buf, stT0)
	require.NoError(f, err)
	for _, seed := range [][]byte{full, full[:len(full)-1], full[:len(full)/2], buf.Bytes(), nil, {1, 2, 3}} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := NewStore(1, nil)
		_, n, err := s.DecodeSnapshot(bytes.NewReader(data))
		if err != nil {
			return
		}
		require.LessOrEqual(t, s.Len(), n)
		var again bytes.Buffer
		m, err := s.EncodeSnapshot(&again, stT0)
		require.NoError(t, err)
		require.Equal(t, s.Len(), m)
		back := NewStore(1, nil)
		_, n2, err := back.DecodeSnapshot(&again)
		require.NoError(t, err)
		require.Equal(t, m, n2)
		require.Equal(t, printed(s), printed(back))
	})
}

// printed renders every agent with %+v, which spells NaN alike.
func printed(s *Store) map[string]string {
	m := map[string]string{}
	for k, a := range agentsOf(s) {
		m[k.String()] = fmt.Sprintf("%+v", a)
	}
	return m
}
