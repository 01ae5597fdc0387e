package kv_test

import (
	"fmt"

	sm "github.com/lni/dragonboat/v4/statemachine"

	"github.com/drummerhq/drummer/kv"
)

// Encoding commands and decoding their results, applied here directly to a
// state machine (through the NodehostAPI the same bytes travel in
// ProposeRequest.command and come back in ProposeResponse.value/data).
func Example() {
	s := kv.NewStateMachine(1, 1)

	put, _ := kv.EncodePut([]byte("greeting"), []byte("hello"))
	r, _ := s.Update(sm.Entry{Index: 1, Cmd: put})
	res, _ := kv.DecodeUpdateResult(r.Value, r.Data)
	fmt.Println("put:", res.Status)

	q, _ := kv.EncodeGet([]byte("greeting"))
	out, _ := s.Lookup(q)
	res, _ = kv.DecodeQueryResult(out.([]byte))
	fmt.Printf("get: %s %q\n", res.Status, res.Value)

	cas, _ := kv.EncodeCAS(kv.CAS{Key: []byte("greeting"), Expected: []byte("hi"), Value: []byte("bye")})
	r, _ = s.Update(sm.Entry{Index: 2, Cmd: cas})
	res, _ = kv.DecodeUpdateResult(r.Value, r.Data)
	fmt.Printf("cas: %s, current %q\n", res.Status, res.Value)
	// Output:
	// put: ok
	// get: ok "hello"
	// cas: mismatch, current "hello"
}

func ExampleEncodePut() {
	b, _ := kv.EncodePut([]byte("k"), []byte("v"))
	fmt.Printf("%x\n", b)
	// Output: 0101000000016b0000000176
}

func ExampleEncodeCAS() {
	// Create "lock" only if it does not exist yet.
	b, _ := kv.EncodeCAS(kv.CAS{Key: []byte("lock"), ExpectAbsent: true, Value: []byte("owner-1")})
	c, _ := kv.DecodeCommand(b)
	fmt.Println(c.Op, string(c.Key), c.ExpectAbsent, string(c.Value))
	// Output: cas lock true owner-1
}

func ExampleDecodeUpdateResult() {
	s := kv.NewStateMachine(1, 1)
	// A malformed command is applied as a no-op with an error status.
	r, _ := s.Update(sm.Entry{Index: 1, Cmd: []byte{1, 99}})
	res, _ := kv.DecodeUpdateResult(r.Value, r.Data)
	fmt.Println(res.Status, "-", res.Err())
	// Output: bad request - kv: bad request: unknown command op 99
}
