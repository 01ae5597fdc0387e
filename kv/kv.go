// Package kv is Drummer's built-in key-value application: an in-memory
// dragonboat state machine (sm.IStateMachine) holding byte-string keys and
// values, with put, get, delete and compare-and-set.
//
// Commands, queries and results use the small deterministic binary format
// documented in encoding.go (EncodePut, EncodeDelete, EncodeCAS, EncodeGet,
// DecodeUpdateResult, DecodeQueryResult). A malformed or oversized command
// never fails the replica: it is applied as a no-op whose result carries an
// error status (StatusBadRequest, StatusKeyTooLarge, StatusValueTooLarge).
//
// Snapshots are a sorted, checksummed dump of the contents, so replicas
// with equal contents write identical snapshots and report the same
// GetHash (sm.IHash).
//
// Agents register the application as
//
//	registry[kv.AppName] = kv.NewStateMachine
//
// and applications use it through client.KV, or by sending the encoded
// commands through the NodehostAPI.
package kv

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

// AppName is the name under which agents register this application.
const AppName = "kv"

// Options adjust a state machine. The zero value is the production
// behaviour; the delays exist for fault-injection tests (the chaos harness
// slows applies and snapshots with them).
type Options struct {
	// ApplyDelay, when set, is called before each command is applied and
	// the apply sleeps for the returned duration (zero or negative: no
	// delay). It runs on dragonboat's apply worker.
	ApplyDelay func() time.Duration
	// SnapshotDelay, when set, is called at the start of SaveSnapshot and
	// RecoverFromSnapshot, which then sleep for the returned duration
	// (interrupted when dragonboat stops the snapshot).
	SnapshotDelay func() time.Duration
}

// NewFactory returns a state machine constructor using opts, suitable for
// dragonboat's NodeHost.StartReplica and for an agent's app registry.
func NewFactory(opts Options) sm.CreateStateMachineFunc {
	return func(shardID, replicaID uint64) sm.IStateMachine {
		return newStateMachine(shardID, replicaID, opts)
	}
}

// NewStateMachine creates an empty key-value state machine with default
// options. Its signature is dragonboat's sm.CreateStateMachineFunc.
func NewStateMachine(shardID, replicaID uint64) sm.IStateMachine {
	return newStateMachine(shardID, replicaID, Options{})
}

// StateMachine is the key-value state machine. dragonboat serializes
// Update with Lookup and SaveSnapshot; the methods also lock internally, so
// Len, Get and GetHash may be called from other goroutines (tests).
type StateMachine struct {
	shardID, replicaID uint64
	opts               Options

	mu   sync.RWMutex
	data map[string][]byte
}

var (
	_ sm.IStateMachine = (*StateMachine)(nil)
	_ sm.IHash         = (*StateMachine)(nil)
)

func newStateMachine(shardID, replicaID uint64, opts Options) *StateMachine {
	return &StateMachine{shardID: shardID, replicaID: replicaID, opts: opts, data: map[string][]byte{}}
}

// Update applies one command. It never returns an error: a command that
// cannot be applied yields an error status in the result (see encoding.go).
func (s *StateMachine) Update(e sm.Entry) (res sm.Result, err error) {
	if f := s.opts.ApplyDelay; f != nil {
		if d := f(); d > 0 {
			time.Sleep(d)
		}
	}
	defer func() {
		// Decoding is bounds-checked; this only guards against a bug
		// turning into a crash loop on every replica. The outcome is
		// deterministic either way.
		if p := recover(); p != nil {
			res, err = errorResult(StatusBadRequest, fmt.Sprintf("internal error applying command: %v", p)), nil
		}
	}()
	c, derr := DecodeCommand(e.Cmd)
	if derr != nil {
		return errorResult(statusOf(derr), derr.Error()), nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch c.Op {
	case OpPut:
		s.data[string(c.Key)] = bytes.Clone(nonNil(c.Value))
		return sm.Result{Value: uint64(StatusOK)}, nil
	case OpDelete:
		if _, ok := s.data[string(c.Key)]; !ok {
			return sm.Result{Value: uint64(StatusNotFound)}, nil
		}
		delete(s.data, string(c.Key))
		return sm.Result{Value: uint64(StatusOK)}, nil
	case OpAdd:
		var n int64
		if cur, ok := s.data[string(c.Key)]; ok {
			v, err := strconv.ParseInt(string(cur), 10, 64)
			if err != nil {
				return errorResult(StatusBadRequest, fmt.Sprintf("add: value of %q is not a decimal integer", c.Key)), nil
			}
			n = v
		}
		sum := n + c.Delta
		if (c.Delta > 0 && sum < n) || (c.Delta < 0 && sum > n) {
			return errorResult(StatusBadRequest, "add: integer overflow"), nil
		}
		v := []byte(strconv.FormatInt(sum, 10))
		s.data[string(c.Key)] = v
		return sm.Result{Value: uint64(StatusOK), Data: bytes.Clone(v)}, nil
	case OpCAS:
		cur, found := s.data[string(c.Key)]
		if found == c.ExpectAbsent || (found && !bytes.Equal(cur, c.Expected)) {
			data := []byte{0}
			if found {
				data = append([]byte{1}, cur...)
			}
			return sm.Result{Value: uint64(StatusMismatch), Data: data}, nil
		}
		if c.Delete {
			delete(s.data, string(c.Key))
		} else {
			s.data[string(c.Key)] = bytes.Clone(nonNil(c.Value))
		}
		return sm.Result{Value: uint64(StatusOK)}, nil
	}
	return errorResult(StatusBadRequest, "unknown op"), nil
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func errorResult(st Status, msg string) sm.Result {
	return sm.Result{Value: uint64(st), Data: []byte(msg)}
}

// Lookup answers a query, which must be a []byte in the query encoding. A
// malformed query is answered with an error status, not an error; only a
// query of another Go type is an error.
func (s *StateMachine) Lookup(q any) (any, error) {
	b, ok := q.([]byte)
	if !ok {
		return nil, fmt.Errorf("kv: query must be []byte, got %T", q)
	}
	query, err := DecodeQuery(b)
	if err != nil {
		msg := err.Error()
		out := make([]byte, 0, 1+len(msg))
		return append(append(out, byte(statusOf(err))), msg...), nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, found := s.data[string(query.Key)]
	if !found {
		return []byte{byte(StatusNotFound)}, nil
	}
	out := make([]byte, 1+len(v))
	out[0] = byte(StatusOK)
	copy(out[1:], v)
	return out, nil
}

// Get returns a copy of the value of key (for tests and tools).
func (s *StateMachine) Get(key []byte) ([]byte, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.data[string(key)]
	return bytes.Clone(v), ok
}

// Len returns the number of keys.
func (s *StateMachine) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.data)
}

// Snapshot format (version 1):
//
//	magic "DRKV" | version:u8 (1) | count:u64 | count × (key | value) | crc32c:u32
//
// with keys in strictly ascending byte order, byte strings as in the
// command encoding, all integers big-endian, and the CRC-32C (Castagnoli)
// covering every preceding byte.
const (
	snapshotMagic   = "DRKV"
	snapshotVersion = 1
	stopCheckEvery  = 1024
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorruptSnapshot is returned by RecoverFromSnapshot for a snapshot
// that does not decode or whose checksum does not match.
var ErrCorruptSnapshot = errors.New("kv: corrupt snapshot")

func (s *StateMachine) sortedKeys() []string {
	keys := make([]string, 0, len(s.data))
	for k := range s.data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// writeEntries writes count and the sorted entries; s.mu must be held.
func (s *StateMachine) writeEntries(w io.Writer, done <-chan struct{}) error {
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], uint64(len(s.data)))
	if _, err := w.Write(buf[:8]); err != nil {
		return err
	}
	for i, k := range s.sortedKeys() {
		if done != nil && i%stopCheckEvery == stopCheckEvery-1 {
			select {
			case <-done:
				return sm.ErrSnapshotStopped
			default:
			}
		}
		v := s.data[k]
		binary.BigEndian.PutUint32(buf[:4], uint32(len(k)))
		if _, err := w.Write(buf[:4]); err != nil {
			return err
		}
		if _, err := io.WriteString(w, k); err != nil {
			return err
		}
		binary.BigEndian.PutUint32(buf[:4], uint32(len(v)))
		if _, err := w.Write(buf[:4]); err != nil {
			return err
		}
		if _, err := w.Write(v); err != nil {
			return err
		}
	}
	return nil
}

func (s *StateMachine) snapshotDelay(done <-chan struct{}) error {
	f := s.opts.SnapshotDelay
	if f == nil {
		return nil
	}
	d := f()
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-done:
		return sm.ErrSnapshotStopped
	}
}

// SaveSnapshot writes the sorted, checksummed contents to w.
func (s *StateMachine) SaveSnapshot(w io.Writer, _ sm.ISnapshotFileCollection, done <-chan struct{}) error {
	if err := s.snapshotDelay(done); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return writeSnapshot(w, s, done)
}

func writeSnapshot(w io.Writer, s *StateMachine, done <-chan struct{}) error {
	crc := crc32.New(castagnoli)
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 64<<10)
	bw.WriteString(snapshotMagic)
	bw.WriteByte(snapshotVersion)
	if err := s.writeEntries(bw, done); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc.Sum32())
	_, err := w.Write(sum[:])
	return err
}

// RecoverFromSnapshot replaces the contents with those of a snapshot
// written by SaveSnapshot. On error the contents are unchanged.
func (s *StateMachine) RecoverFromSnapshot(r io.Reader, _ []sm.SnapshotFile, done <-chan struct{}) error {
	if err := s.snapshotDelay(done); err != nil {
		return err
	}
	data, err := readSnapshot(r, done)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.data = data
	s.mu.Unlock()
	return nil
}

func readSnapshot(r io.Reader, done <-chan struct{}) (map[string][]byte, error) {
	crc := crc32.New(castagnoli)
	br := bufio.NewReaderSize(r, 64<<10)
	tr := io.TeeReader(br, crc)
	corrupt := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrCorruptSnapshot, fmt.Sprintf(format, args...))
	}
	full := func(b []byte, what string) error {
		if _, err := io.ReadFull(tr, b); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return corrupt("truncated %s", what)
			}
			return err
		}
		return nil
	}
	var hdr [13]byte
	if err := full(hdr[:], "header"); err != nil {
		return nil, err
	}
	if string(hdr[:4]) != snapshotMagic {
		return nil, corrupt("bad magic %q", hdr[:4])
	}
	if hdr[4] != snapshotVersion {
		return nil, corrupt("unsupported version %d", hdr[4])
	}
	count := binary.BigEndian.Uint64(hdr[5:])
	data := make(map[string][]byte, min(count, 1<<16))
	var prev string
	var lenBuf [4]byte
	readStr := func(limit int, what string) ([]byte, error) {
		if err := full(lenBuf[:], what+" length"); err != nil {
			return nil, err
		}
		n := binary.BigEndian.Uint32(lenBuf[:])
		if uint64(n) > uint64(limit) {
			return nil, corrupt("%s of %d bytes exceeds %d", what, n, limit)
		}
		b := make([]byte, n)
		if err := full(b, what); err != nil {
			return nil, err
		}
		return b, nil
	}
	for i := uint64(0); i < count; i++ {
		if done != nil && i%stopCheckEvery == stopCheckEvery-1 {
			select {
			case <-done:
				return nil, sm.ErrSnapshotStopped
			default:
			}
		}
		k, err := readStr(MaxKeySize, "key")
		if err != nil {
			return nil, err
		}
		if len(k) == 0 {
			return nil, corrupt("empty key")
		}
		key := string(k)
		if i > 0 && strings.Compare(prev, key) >= 0 {
			return nil, corrupt("keys out of order at entry %d", i)
		}
		v, err := readStr(MaxValueSize, "value")
		if err != nil {
			return nil, err
		}
		data[key] = v
		prev = key
	}
	want := crc.Sum32()
	var sum [4]byte
	if _, err := io.ReadFull(br, sum[:]); err != nil {
		return nil, corrupt("truncated checksum")
	}
	if got := binary.BigEndian.Uint32(sum[:]); got != want {
		return nil, corrupt("checksum %08x, want %08x", got, want)
	}
	if n, _ := br.Read(sum[:1]); n != 0 {
		return nil, corrupt("trailing bytes")
	}
	return data, nil
}

// GetHash returns the first 8 bytes (big-endian) of the SHA-256 of the
// sorted contents: replicas that applied the same commands return the same
// hash.
func (s *StateMachine) GetHash() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	h := sha256.New()
	if err := s.writeEntries(h, nil); err != nil {
		return 0, err
	}
	return sum64(h), nil
}

func sum64(h hash.Hash) uint64 {
	return binary.BigEndian.Uint64(h.Sum(nil)[:8])
}

// Close releases nothing: the state lives in memory.
func (s *StateMachine) Close() error { return nil }
