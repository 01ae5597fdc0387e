package kv

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

func update(t testing.TB, s sm.IStateMachine, cmd []byte) Result {
	t.Helper()
	r, err := s.Update(sm.Entry{Index: 1, Cmd: cmd})
	if err != nil {
		t.Fatalf("Update returned error %v", err)
	}
	res, err := DecodeUpdateResult(r.Value, r.Data)
	if err != nil {
		t.Fatalf("DecodeUpdateResult(%d, %q): %v", r.Value, r.Data, err)
	}
	return res
}

func get(t testing.TB, s sm.IStateMachine, key string) Result {
	t.Helper()
	q := must(EncodeGet([]byte(key)))
	out, err := s.Lookup(q)
	if err != nil {
		t.Fatal(err)
	}
	res, err := DecodeQueryResult(out.([]byte))
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestOps(t *testing.T) {
	s := NewStateMachine(1, 1)
	if r := get(t, s, "a"); r.Status != StatusNotFound || r.Found {
		t.Fatalf("get absent: %+v", r)
	}
	if r := update(t, s, must(EncodePut([]byte("a"), []byte("1")))); !r.OK() {
		t.Fatalf("put: %+v", r)
	}
	if r := get(t, s, "a"); !r.OK() || !r.Found || string(r.Value) != "1" {
		t.Fatalf("get: %+v", r)
	}
	// Empty values are values.
	update(t, s, must(EncodePut([]byte("empty"), nil)))
	if r := get(t, s, "empty"); !r.Found || len(r.Value) != 0 {
		t.Fatalf("get empty value: %+v", r)
	}
	// CAS mismatch reports the current value.
	r := update(t, s, must(EncodeCAS(CAS{Key: []byte("a"), Expected: []byte("x"), Value: []byte("2")})))
	if r.Status != StatusMismatch || !r.Found || string(r.Value) != "1" || r.Err() != nil {
		t.Fatalf("cas mismatch: %+v", r)
	}
	// CAS on an absent key with an expected value.
	r = update(t, s, must(EncodeCAS(CAS{Key: []byte("b"), Expected: []byte("x"), Value: []byte("2")})))
	if r.Status != StatusMismatch || r.Found {
		t.Fatalf("cas absent: %+v", r)
	}
	// CAS create-if-absent.
	if r := update(t, s, must(EncodeCAS(CAS{Key: []byte("b"), ExpectAbsent: true, Value: []byte("new")}))); !r.OK() {
		t.Fatalf("cas create: %+v", r)
	}
	if r := update(t, s, must(EncodeCAS(CAS{Key: []byte("b"), ExpectAbsent: true, Value: []byte("again")}))); r.Status != StatusMismatch || string(r.Value) != "new" {
		t.Fatalf("cas create twice: %+v", r)
	}
	// CAS swap.
	if r := update(t, s, must(EncodeCAS(CAS{Key: []byte("a"), Expected: []byte("1"), Value: []byte("2")}))); !r.OK() {
		t.Fatalf("cas swap: %+v", r)
	}
	if r := get(t, s, "a"); string(r.Value) != "2" {
		t.Fatalf("after cas: %+v", r)
	}
	// CAS delete.
	if r := update(t, s, must(EncodeCAS(CAS{Key: []byte("a"), Expected: []byte("2"), Delete: true}))); !r.OK() {
		t.Fatalf("cas delete: %+v", r)
	}
	if r := get(t, s, "a"); r.Found {
		t.Fatalf("after cas delete: %+v", r)
	}
	// Delete.
	if r := update(t, s, must(EncodeDelete([]byte("b")))); !r.OK() {
		t.Fatalf("delete: %+v", r)
	}
	if r := update(t, s, must(EncodeDelete([]byte("b")))); r.Status != StatusNotFound {
		t.Fatalf("delete absent: %+v", r)
	}
	if n := s.(*StateMachine).Len(); n != 1 {
		t.Fatalf("len = %d, want 1", n)
	}
}

func TestUpdateCopiesInput(t *testing.T) {
	s := NewStateMachine(1, 1)
	cmd := must(EncodePut([]byte("k"), []byte("value")))
	update(t, s, cmd)
	for i := range cmd {
		cmd[i] = 0xff
	}
	if r := get(t, s, "k"); string(r.Value) != "value" {
		t.Fatalf("state aliases the command buffer: %q", r.Value)
	}
}

func TestBadCommands(t *testing.T) {
	s := NewStateMachine(1, 1)
	put := must(EncodePut([]byte("k"), []byte("v")))
	bigKey := make([]byte, 4+MaxKeySize+1)
	bigKey[0], bigKey[1] = Version, byte(OpPut)
	copy(bigKey[2:], []byte{0, 0, 0x10, 0x01}) // key length 4097
	cases := map[string]struct {
		cmd  []byte
		want Status
		err  error
	}{
		"nil":           {nil, StatusBadRequest, ErrBadRequest},
		"one byte":      {[]byte{1}, StatusBadRequest, ErrBadRequest},
		"bad version":   {append([]byte{2}, put[1:]...), StatusBadRequest, ErrBadRequest},
		"unknown op":    {[]byte{Version, 9, 0, 0, 0, 1, 'k'}, StatusBadRequest, ErrBadRequest},
		"get as update": {must(EncodeGet([]byte("k"))), StatusBadRequest, ErrBadRequest},
		"truncated":     {put[:len(put)-1], StatusBadRequest, ErrBadRequest},
		"trailing":      {append(bytes.Clone(put), 0), StatusBadRequest, ErrBadRequest},
		"empty key":     {[]byte{Version, byte(OpDelete), 0, 0, 0, 0}, StatusBadRequest, ErrBadRequest},
		"key too large": {bigKey, StatusKeyTooLarge, ErrKeyTooLarge},
		"value too large": {append([]byte{Version, byte(OpPut), 0, 0, 0, 1, 'k'},
			0, 0x10, 0, 1), StatusValueTooLarge, ErrValueTooLarge},
		"cas bad flags": {[]byte{Version, byte(OpCAS), 0, 0, 0, 1, 'k', 0x80}, StatusBadRequest, ErrBadRequest},
		"huge length":   {[]byte{Version, byte(OpDelete), 0xff, 0xff, 0xff, 0xff}, StatusKeyTooLarge, ErrKeyTooLarge},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			r := update(t, s, c.cmd)
			if r.Status != c.want {
				t.Fatalf("status = %v (%s), want %v", r.Status, r.Message, c.want)
			}
			if r.Message == "" {
				t.Fatal("no message")
			}
			if !errors.Is(r.Err(), c.err) {
				t.Fatalf("Err() = %v, want %v", r.Err(), c.err)
			}
		})
	}
	if n := s.(*StateMachine).Len(); n != 0 {
		t.Fatalf("bad commands changed the state: %d keys", n)
	}
	// Queries too.
	out, err := s.Lookup([]byte{Version, byte(OpPut)})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := DecodeQueryResult(out.([]byte)); err != nil || r.Status != StatusBadRequest || !errors.Is(r.Err(), ErrBadRequest) {
		t.Fatalf("bad query: %+v %v", r, err)
	}
	if _, err := s.Lookup("not bytes"); err == nil {
		t.Fatal("Lookup(string) should fail")
	}
}

func TestEncodeLimits(t *testing.T) {
	if _, err := EncodePut(nil, nil); !errors.Is(err, ErrEmptyKey) {
		t.Fatalf("empty key: %v", err)
	}
	if _, err := EncodePut(make([]byte, MaxKeySize+1), nil); !errors.Is(err, ErrKeyTooLarge) {
		t.Fatalf("key too large: %v", err)
	}
	if _, err := EncodePut([]byte("k"), make([]byte, MaxValueSize+1)); !errors.Is(err, ErrValueTooLarge) {
		t.Fatalf("value too large: %v", err)
	}
	if _, err := EncodeCAS(CAS{Key: []byte("k"), Expected: make([]byte, MaxValueSize+1)}); !errors.Is(err, ErrValueTooLarge) {
		t.Fatalf("cas expected too large: %v", err)
	}
	if _, err := EncodeGet(make([]byte, MaxKeySize+1)); !errors.Is(err, ErrKeyTooLarge) {
		t.Fatalf("get key too large: %v", err)
	}
	// The largest legal sizes work.
	s := NewStateMachine(1, 1)
	r := update(t, s, must(EncodePut(bytes.Repeat([]byte("k"), MaxKeySize), make([]byte, MaxValueSize))))
	if !r.OK() {
		t.Fatalf("max sizes: %+v", r)
	}
}

func TestCommandRoundTrip(t *testing.T) {
	cmds := []Command{
		{Op: OpPut, Key: []byte("k"), Value: []byte("v")},
		{Op: OpPut, Key: []byte("k"), Value: []byte{}},
		{Op: OpDelete, Key: []byte("k")},
		{Op: OpCAS, Key: []byte("k"), Expected: []byte("e"), Value: []byte("v")},
		{Op: OpCAS, Key: []byte("k"), ExpectAbsent: true, Value: []byte("v")},
		{Op: OpCAS, Key: []byte("k"), Expected: []byte("e"), Delete: true},
		{Op: OpCAS, Key: []byte("k"), ExpectAbsent: true, Delete: true},
	}
	for _, c := range cmds {
		b, err := c.Encode()
		if err != nil {
			t.Fatal(err)
		}
		d, err := DecodeCommand(b)
		if err != nil {
			t.Fatal(err)
		}
		b2, err := d.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, b2) {
			t.Fatalf("%+v: re-encoding differs", c)
		}
		if d.Op != c.Op || !bytes.Equal(d.Key, c.Key) || d.ExpectAbsent != c.ExpectAbsent || d.Delete != c.Delete {
			t.Fatalf("decoded %+v, want %+v", d, c)
		}
	}
	// The encoding is fixed: a golden value guards against accidental
	// format changes.
	b, _ := EncodeCAS(CAS{Key: []byte("k"), Expected: []byte("e"), Value: []byte("v")})
	if got, want := fmt.Sprintf("%x", b), "0103000000016b03000000016500000001"+"76"; got != want {
		t.Fatalf("cas encoding = %s, want %s", got, want)
	}
}

func fill(t testing.TB, s sm.IStateMachine, rng *rand.Rand, n int) {
	for i := 0; i < n; i++ {
		k := []byte(fmt.Sprintf("key-%04d", rng.IntN(n)))
		switch rng.IntN(4) {
		case 0, 1:
			update(t, s, must(EncodePut(k, []byte(strings.Repeat("v", rng.IntN(50))))))
		case 2:
			update(t, s, must(EncodeDelete(k)))
		case 3:
			update(t, s, must(EncodeCAS(CAS{Key: k, ExpectAbsent: true, Value: []byte("c")})))
		}
	}
}

func TestSnapshotRoundTripAndHash(t *testing.T) {
	a := NewStateMachine(1, 1).(*StateMachine)
	fill(t, a, rand.New(rand.NewPCG(1, 2)), 2000)
	var snap bytes.Buffer
	if err := a.SaveSnapshot(&snap, nil, make(chan struct{})); err != nil {
		t.Fatal(err)
	}
	b := NewStateMachine(1, 2).(*StateMachine)
	update(t, b, must(EncodePut([]byte("stale"), []byte("x"))))
	if err := b.RecoverFromSnapshot(bytes.NewReader(snap.Bytes()), nil, make(chan struct{})); err != nil {
		t.Fatal(err)
	}
	if a.Len() != b.Len() {
		t.Fatalf("len %d vs %d", a.Len(), b.Len())
	}
	if _, ok := b.Get([]byte("stale")); ok {
		t.Fatal("recover kept old contents")
	}
	ha, _ := a.GetHash()
	hb, _ := b.GetHash()
	if ha != hb {
		t.Fatalf("hash %x vs %x", ha, hb)
	}
	// Deterministic bytes.
	var snap2 bytes.Buffer
	if err := b.SaveSnapshot(&snap2, nil, nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(snap.Bytes(), snap2.Bytes()) {
		t.Fatal("snapshots of equal states differ")
	}
	// Same commands, same hash; a different state, a different hash.
	c := NewStateMachine(1, 3).(*StateMachine)
	fill(t, c, rand.New(rand.NewPCG(1, 2)), 2000)
	if hc, _ := c.GetHash(); hc != ha {
		t.Fatalf("replay hash %x vs %x", hc, ha)
	}
	update(t, c, must(EncodePut([]byte("extra"), nil)))
	if hc, _ := c.GetHash(); hc == ha {
		t.Fatal("hash did not change")
	}
	// Empty state round trip.
	var e bytes.Buffer
	empty := NewStateMachine(1, 4).(*StateMachine)
	if err := empty.SaveSnapshot(&e, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.RecoverFromSnapshot(&e, nil, nil); err != nil || c.Len() != 0 {
		t.Fatalf("empty recover: %v, %d keys", err, c.Len())
	}
}

func TestCorruptSnapshots(t *testing.T) {
	a := NewStateMachine(1, 1).(*StateMachine)
	fill(t, a, rand.New(rand.NewPCG(3, 4)), 50)
	var snap bytes.Buffer
	if err := a.SaveSnapshot(&snap, nil, nil); err != nil {
		t.Fatal(err)
	}
	good := snap.Bytes()
	b := NewStateMachine(1, 2).(*StateMachine)
	update(t, b, must(EncodePut([]byte("keep"), []byte("me"))))
	for i := 0; i < len(good); i++ {
		for _, mutate := range []func([]byte) []byte{
			func(s []byte) []byte { s[i] ^= 0x01; return s },
			func(s []byte) []byte { return s[:i] },
		} {
			bad := mutate(bytes.Clone(good))
			if err := b.RecoverFromSnapshot(bytes.NewReader(bad), nil, nil); !errors.Is(err, ErrCorruptSnapshot) {
				t.Fatalf("byte %d: err = %v, want ErrCorruptSnapshot", i, err)
			}
		}
	}
	if err := b.RecoverFromSnapshot(bytes.NewReader(append(bytes.Clone(good), 0)), nil, nil); !errors.Is(err, ErrCorruptSnapshot) {
		t.Fatalf("trailing byte: %v", err)
	}
	if v, ok := b.Get([]byte("keep")); !ok || string(v) != "me" {
		t.Fatal("failed recover changed the state")
	}
}

func TestSnapshotStopped(t *testing.T) {
	a := NewStateMachine(1, 1).(*StateMachine)
	for i := 0; i < 3*stopCheckEvery; i++ {
		update(t, a, must(EncodePut([]byte(fmt.Sprint(i)), nil)))
	}
	done := make(chan struct{})
	close(done)
	if err := a.SaveSnapshot(&bytes.Buffer{}, nil, done); !errors.Is(err, sm.ErrSnapshotStopped) {
		t.Fatalf("save: %v", err)
	}
	var snap bytes.Buffer
	if err := a.SaveSnapshot(&snap, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.RecoverFromSnapshot(&snap, nil, done); !errors.Is(err, sm.ErrSnapshotStopped) {
		t.Fatalf("recover: %v", err)
	}
}

func TestDelays(t *testing.T) {
	applied, snapped := 0, 0
	f := NewFactory(Options{
		ApplyDelay:    func() time.Duration { applied++; return time.Millisecond },
		SnapshotDelay: func() time.Duration { snapped++; return time.Hour },
	})
	s := f(1, 1)
	start := time.Now()
	update(t, s, must(EncodePut([]byte("k"), nil)))
	if applied != 1 || time.Since(start) < time.Millisecond {
		t.Fatalf("apply delay not used: %d", applied)
	}
	// An hour-long snapshot delay is cut short when the snapshot is stopped.
	done := make(chan struct{})
	time.AfterFunc(10*time.Millisecond, func() { close(done) })
	if err := s.SaveSnapshot(&bytes.Buffer{}, nil, done); !errors.Is(err, sm.ErrSnapshotStopped) || snapped != 1 {
		t.Fatalf("snapshot delay: %v, %d", err, snapped)
	}
}

func TestResultDecodingStrict(t *testing.T) {
	bad := []struct {
		v uint64
		d []byte
	}{{0, nil}, {7, nil}, {uint64(StatusMismatch), nil}, {uint64(StatusMismatch), []byte{2}}, {uint64(StatusMismatch), []byte{0, 1}}}
	for _, c := range bad {
		if _, err := DecodeUpdateResult(c.v, c.d); !errors.Is(err, ErrBadRequest) {
			t.Fatalf("DecodeUpdateResult(%d, %v) = %v", c.v, c.d, err)
		}
	}
	for _, b := range [][]byte{nil, {0}, {9}, {byte(StatusNotFound), 1}, {byte(StatusMismatch)}} {
		if _, err := DecodeQueryResult(b); !errors.Is(err, ErrBadRequest) {
			t.Fatalf("DecodeQueryResult(%v) = %v", b, err)
		}
	}
}

func TestAdd(t *testing.T) {
	s := NewStateMachine(1, 1)
	add := func(key string, d int64) Result {
		t.Helper()
		cmd, err := EncodeAdd([]byte(key), d)
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeCommand(cmd)
		if err != nil || back.Op != OpAdd || back.Delta != d || string(back.Key) != key {
			t.Fatalf("round trip: %+v %v", back, err)
		}
		res, err := s.Update(sm.Entry{Index: 1, Cmd: cmd})
		if err != nil {
			t.Fatal(err)
		}
		r, err := DecodeUpdateResult(res.Value, res.Data)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := add("c", 5); !r.OK() || string(r.Value) != "5" {
		t.Fatalf("first add: %+v", r)
	}
	if r := add("c", -7); !r.OK() || string(r.Value) != "-2" {
		t.Fatalf("second add: %+v", r)
	}
	put, _ := EncodePut([]byte("s"), []byte("text"))
	if _, err := s.Update(sm.Entry{Index: 2, Cmd: put}); err != nil {
		t.Fatal(err)
	}
	if r := add("s", 1); r.Status != StatusBadRequest {
		t.Fatalf("add to a non-integer: %+v", r)
	}
	max, _ := EncodePut([]byte("m"), []byte("9223372036854775807"))
	_, _ = s.Update(sm.Entry{Index: 3, Cmd: max})
	if r := add("m", 1); r.Status != StatusBadRequest {
		t.Fatalf("overflow: %+v", r)
	}
	if _, err := DecodeCommand([]byte{Version, byte(OpAdd), 0, 0, 0, 1, 'k', 0, 0}); err == nil {
		t.Fatal("truncated delta accepted")
	}
}
