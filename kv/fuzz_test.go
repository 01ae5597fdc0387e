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
	// A well-formed snapshot, so the accepting path is explored too.
	snapSM := NewStateMachine(1, 1).(*StateMachine)
	snapSM.Update(sm.Entry{Cmd: must(EncodePut([]byte("a"), []byte("b")))})
	var snap bytes.Buffer
	if err := snapSM.SaveSnapshot(&snap, nil, nil); err != nil {
		f.Fatal(err)
	}
	f.Add(snap.Bytes())
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
		checkSnapshots(t, s, b)
	})
}

// checkSnapshots checks, for any input b and whatever its length: the
// state's own snapshot restores to the same state and fails to restore
// with any one byte changed (chosen by b), leaving the state unchanged;
// b itself as a snapshot is refused without a change, or accepted only
// when it is a well-formed snapshot of a state that round-trips.
func checkSnapshots(t *testing.T, s *StateMachine, b []byte) {
	t.Helper()
	var snap bytes.Buffer
	if err := s.SaveSnapshot(&snap, nil, nil); err != nil {
		t.Fatal(err)
	}
	want, _ := s.GetHash()
	fresh := NewStateMachine(1, 2).(*StateMachine)
	if err := fresh.RecoverFromSnapshot(bytes.NewReader(snap.Bytes()), nil, nil); err != nil {
		t.Fatalf("own snapshot refused: %v", err)
	}
	if h, _ := fresh.GetHash(); h != want {
		t.Fatal("snapshot round trip changed the state")
	}
	if len(b) > 0 {
		bad := bytes.Clone(snap.Bytes())
		i := int(b[0]) % len(bad)
		bad[i] ^= 1 | b[len(b)-1]
		if err := fresh.RecoverFromSnapshot(bytes.NewReader(bad), nil, nil); err == nil {
			t.Fatalf("snapshot with byte %d changed was accepted", i)
		}
		if h, _ := fresh.GetHash(); h != want {
			t.Fatal("a refused snapshot changed the state")
		}
	}
	err := s.RecoverFromSnapshot(bytes.NewReader(b), nil, nil)
	h, _ := s.GetHash()
	switch {
	case err != nil && h != want:
		t.Fatal("a refused snapshot changed the state")
	case err == nil && len(b) < 17:
		t.Fatal("accepted a snapshot shorter than header+checksum")
	case err == nil:
		var again bytes.Buffer
		if err := s.SaveSnapshot(&again, nil, nil); err != nil {
			t.Fatal(err)
		}
		back := NewStateMachine(1, 3).(*StateMachine)
		if err := back.RecoverFromSnapshot(&again, nil, nil); err != nil {
			t.Fatalf("snapshot of an accepted snapshot refused: %v", err)
		}
		if hb, _ := back.GetHash(); hb != h {
			t.Fatal("an accepted snapshot does not round-trip")
		}
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
