package kv

import (
	"bytes"
	"testing"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

// FuzzApply feeds arbitrary bytes to Update, Lookup and the decoders: none
// may panic, every result must decode, and a command that decodes must
// re-encode to the same bytes (the encoding is canonical).
func FuzzApply(f *testing.F) {
	for _, seed := range [][]byte{
		must(EncodePut([]byte("k"), []byte("v"))),
		must(EncodeDelete([]byte("k"))),
		must(EncodeCAS(CAS{Key: []byte("k"), Expected: []byte("v"), Value: []byte("w")})),
		must(EncodeCAS(CAS{Key: []byte("k"), ExpectAbsent: true, Delete: true})),
		must(EncodeGet([]byte("k"))),
		{}, {Version}, {Version, byte(OpCAS), 0, 0, 0, 1, 'k', 3, 0, 0},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s := NewStateMachine(1, 1).(*StateMachine)
		s.Update(sm.Entry{Cmd: must(EncodePut([]byte("k"), []byte("v")))})
		before, _ := s.GetHash()
		r, err := s.Update(sm.Entry{Index: 2, Cmd: b})
		if err != nil {
			t.Fatalf("Update error: %v", err)
		}
		res, err := DecodeUpdateResult(r.Value, r.Data)
		if err != nil {
			t.Fatalf("result does not decode: %v", err)
		}
		c, derr := DecodeCommand(b)
		if derr != nil {
			if res.Status != statusOf(derr) || res.Err() == nil {
				t.Fatalf("bad command gave %+v", res)
			}
			if after, _ := s.GetHash(); after != before {
				t.Fatal("a rejected command changed the state")
			}
		} else {
			enc, err := c.Encode()
			if err != nil {
				t.Fatalf("decoded command does not encode: %v", err)
			}
			if !bytes.Equal(enc, b) {
				t.Fatalf("non-canonical encoding accepted: %x vs %x", b, enc)
			}
			if res.Err() != nil {
				t.Fatalf("valid command gave %+v", res)
			}
		}
		out, err := s.Lookup(b)
		if err != nil {
			t.Fatalf("Lookup error: %v", err)
		}
		if _, err := DecodeQueryResult(out.([]byte)); err != nil {
			t.Fatalf("query result does not decode: %v", err)
		}
		// Snapshot decoding of arbitrary input must fail cleanly.
		if err := s.RecoverFromSnapshot(bytes.NewReader(b), nil, nil); err == nil && len(b) < 17 {
			t.Fatal("accepted a snapshot shorter than header+checksum")
		}
	})
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
