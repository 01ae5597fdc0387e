package kv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Wire format (version 1)
//
// Every command and query starts with two bytes: the format version (1)
// and the operation. Byte strings are encoded as a 4-byte big-endian
// length followed by the bytes. Decoders are strict: unknown versions,
// operations or flag bits, short input and trailing bytes are rejected.
//
//	command  = version:u8 op:u8 body
//	PUT      : key value
//	DELETE   : key
//	CAS      : key flags:u8 [expected] [value]
//	           flags bit 0: the key must exist and hold expected (which follows)
//	                        (clear: the key must be absent)
//	           flags bit 1: store value (which follows) on success
//	                        (clear: delete the key on success)
//	ADD      : key delta:i64 (8 bytes, big-endian two's complement)
//	           adds delta to the key's value read as a decimal integer
//	           (absent = 0) and stores the sum in decimal
//	query    = version:u8 op:u8 body
//	GET      : key
//
// A command's outcome is an sm.Result whose Value is a Status and whose Data
// depends on the operation:
//
//	StatusOK          PUT, DELETE, CAS: empty; ADD: the new value (decimal)
//	StatusNotFound    DELETE of an absent key: empty
//	StatusMismatch    CAS: found:u8 (0 or 1) followed by the current value
//	StatusBadRequest, StatusKeyTooLarge, StatusValueTooLarge:
//	                  a UTF-8 message
//
// A query's result (the []byte returned by Lookup) is a status byte
// followed by the payload:
//
//	StatusOK          GET: the value
//	StatusNotFound    GET: empty
//	error statuses    a UTF-8 message
//
// Sizes are bounded by MaxKeySize and MaxValueSize; keys must not be empty.
// The bounds are part of the format: every replica of a shard applies the
// same ones, so a command is rejected (or accepted) identically everywhere.

// Version is the format version written by the encoders.
const Version = 1

const (
	// MaxKeySize is the largest key, in bytes.
	MaxKeySize = 4 << 10
	// MaxValueSize is the largest value, in bytes.
	MaxValueSize = 1 << 20
)

// Op is an operation code.
type Op uint8

// Operations.
const (
	// OpPut sets a key to a value (command).
	OpPut Op = 1
	// OpDelete removes a key (command).
	OpDelete Op = 2
	// OpCAS is a compare-and-set (command).
	OpCAS Op = 3
	// OpAdd adds to a decimal integer value (command). It is not
	// idempotent, which makes it the natural probe of exactly-once
	// delivery: a duplicate application shows in the sum.
	OpAdd Op = 4
	// OpGet reads a key (query).
	OpGet Op = 16
)

func (o Op) String() string {
	switch o {
	case OpPut:
		return "put"
	case OpDelete:
		return "delete"
	case OpCAS:
		return "cas"
	case OpAdd:
		return "add"
	case OpGet:
		return "get"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Status is the outcome of a command (the sm.Result Value) or of a query
// (the first byte of the Lookup result). The zero value is never produced.
type Status uint8

// Statuses.
const (
	// StatusOK: the operation was carried out.
	StatusOK Status = 1
	// StatusNotFound: the key does not exist (GET, DELETE).
	StatusNotFound Status = 2
	// StatusMismatch: a CAS condition did not hold; nothing was changed.
	StatusMismatch Status = 3
	// StatusBadRequest: the command or query could not be decoded (or the
	// key is empty); nothing was changed.
	StatusBadRequest Status = 4
	// StatusKeyTooLarge: the key exceeds MaxKeySize; nothing was changed.
	StatusKeyTooLarge Status = 5
	// StatusValueTooLarge: a value exceeds MaxValueSize; nothing was changed.
	StatusValueTooLarge Status = 6
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusNotFound:
		return "not found"
	case StatusMismatch:
		return "mismatch"
	case StatusBadRequest:
		return "bad request"
	case StatusKeyTooLarge:
		return "key too large"
	case StatusValueTooLarge:
		return "value too large"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Errors reported by the encoders, and by Result.Err for error statuses.
var (
	// ErrBadRequest: a command, query or result could not be decoded.
	ErrBadRequest = errors.New("kv: bad request")
	// ErrEmptyKey: keys must not be empty. It wraps ErrBadRequest.
	ErrEmptyKey = fmt.Errorf("%w: empty key", ErrBadRequest)
	// ErrKeyTooLarge: the key exceeds MaxKeySize.
	ErrKeyTooLarge = fmt.Errorf("kv: key larger than %d bytes", MaxKeySize)
	// ErrValueTooLarge: a value exceeds MaxValueSize.
	ErrValueTooLarge = fmt.Errorf("kv: value larger than %d bytes", MaxValueSize)
)

const (
	casExpectPresent = 1 << 0
	casSetValue      = 1 << 1
	casKnownFlags    = casExpectPresent | casSetValue
)

// Command is a decoded command. Which fields are meaningful depends on Op.
type Command struct {
	Op  Op
	Key []byte
	// Value: the value stored by OpPut, and by OpCAS unless Delete is set.
	Value []byte
	// Expected: for OpCAS, the value the key must hold, unless ExpectAbsent.
	Expected []byte
	// ExpectAbsent: for OpCAS, the key must not exist.
	ExpectAbsent bool
	// Delete: for OpCAS, remove the key on success instead of storing Value.
	Delete bool
	// Delta: for OpAdd, the amount added.
	Delta int64
}

// CAS describes a compare-and-set: if the key holds Expected (or, with
// ExpectAbsent, does not exist), store Value (or, with Delete, remove the
// key). Otherwise nothing changes and the result carries the current value.
type CAS struct {
	Key          []byte
	Expected     []byte
	ExpectAbsent bool
	Value        []byte
	Delete       bool
}

// EncodePut encodes a command that sets key to value.
func EncodePut(key, value []byte) ([]byte, error) {
	return Command{Op: OpPut, Key: key, Value: value}.Encode()
}

// EncodeDelete encodes a command that removes key.
func EncodeDelete(key []byte) ([]byte, error) {
	return Command{Op: OpDelete, Key: key}.Encode()
}

// EncodeCAS encodes a compare-and-set command.
func EncodeCAS(c CAS) ([]byte, error) {
	return Command{Op: OpCAS, Key: c.Key, Expected: c.Expected, ExpectAbsent: c.ExpectAbsent, Value: c.Value, Delete: c.Delete}.Encode()
}

// EncodeAdd encodes a command that adds delta to the decimal integer
// stored at key (an absent key counts as 0).
func EncodeAdd(key []byte, delta int64) ([]byte, error) {
	return Command{Op: OpAdd, Key: key, Delta: delta}.Encode()
}

// EncodeGet encodes a query that reads key.
func EncodeGet(key []byte) ([]byte, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 2+4+len(key))
	b = append(b, Version, byte(OpGet))
	return appendBytes(b, key), nil
}

// Encode validates the command and encodes it. The output is a pure
// function of the fields used by Op.
func (c Command) Encode() ([]byte, error) {
	if err := checkKey(c.Key); err != nil {
		return nil, err
	}
	n := 2 + 4 + len(c.Key)
	switch c.Op {
	case OpPut:
		if len(c.Value) > MaxValueSize {
			return nil, ErrValueTooLarge
		}
		n += 4 + len(c.Value)
	case OpDelete:
	case OpAdd:
		n += 8
	case OpCAS:
		n++
		if !c.ExpectAbsent {
			if len(c.Expected) > MaxValueSize {
				return nil, ErrValueTooLarge
			}
			n += 4 + len(c.Expected)
		}
		if !c.Delete {
			if len(c.Value) > MaxValueSize {
				return nil, ErrValueTooLarge
			}
			n += 4 + len(c.Value)
		}
	default:
		return nil, fmt.Errorf("%w: unknown command op %v", ErrBadRequest, c.Op)
	}
	b := make([]byte, 0, n)
	b = append(b, Version, byte(c.Op))
	b = appendBytes(b, c.Key)
	switch c.Op {
	case OpPut:
		b = appendBytes(b, c.Value)
	case OpAdd:
		b = binary.BigEndian.AppendUint64(b, uint64(c.Delta))
	case OpCAS:
		var flags byte
		if !c.ExpectAbsent {
			flags |= casExpectPresent
		}
		if !c.Delete {
			flags |= casSetValue
		}
		b = append(b, flags)
		if !c.ExpectAbsent {
			b = appendBytes(b, c.Expected)
		}
		if !c.Delete {
			b = appendBytes(b, c.Value)
		}
	}
	return b, nil
}

// DecodeCommand decodes a command. The returned slices alias b. A size
// violation is reported as ErrKeyTooLarge or ErrValueTooLarge (wrapped),
// anything else malformed as ErrBadRequest or ErrEmptyKey.
func DecodeCommand(b []byte) (Command, error) {
	d := decoder{b: b}
	op, err := d.header()
	if err != nil {
		return Command{}, err
	}
	c := Command{Op: op}
	switch op {
	case OpPut, OpDelete, OpCAS, OpAdd:
	default:
		return Command{}, fmt.Errorf("%w: unknown command op %d", ErrBadRequest, uint8(op))
	}
	if c.Key, err = d.key(); err != nil {
		return Command{}, err
	}
	switch op {
	case OpPut:
		if c.Value, err = d.value(); err != nil {
			return Command{}, err
		}
	case OpAdd:
		if len(d.b)-d.off < 8 {
			return Command{}, fmt.Errorf("%w: truncated add delta", ErrBadRequest)
		}
		c.Delta = int64(binary.BigEndian.Uint64(d.b[d.off:]))
		d.off += 8
	case OpCAS:
		flags, err := d.byte()
		if err != nil {
			return Command{}, err
		}
		if flags&^casKnownFlags != 0 {
			return Command{}, fmt.Errorf("%w: unknown cas flags %#x", ErrBadRequest, flags)
		}
		c.ExpectAbsent = flags&casExpectPresent == 0
		c.Delete = flags&casSetValue == 0
		if !c.ExpectAbsent {
			if c.Expected, err = d.value(); err != nil {
				return Command{}, err
			}
		}
		if !c.Delete {
			if c.Value, err = d.value(); err != nil {
				return Command{}, err
			}
		}
	}
	if err := d.end(); err != nil {
		return Command{}, err
	}
	return c, nil
}

// Query is a decoded query.
type Query struct {
	Op  Op
	Key []byte
}

// DecodeQuery decodes a query. The returned key aliases b.
func DecodeQuery(b []byte) (Query, error) {
	d := decoder{b: b}
	op, err := d.header()
	if err != nil {
		return Query{}, err
	}
	if op != OpGet {
		return Query{}, fmt.Errorf("%w: unknown query op %d", ErrBadRequest, uint8(op))
	}
	q := Query{Op: op}
	if q.Key, err = d.key(); err != nil {
		return Query{}, err
	}
	if err := d.end(); err != nil {
		return Query{}, err
	}
	return q, nil
}

// Result is a decoded command or query outcome.
type Result struct {
	Status Status
	// Value: for a GET that found the key, its value; for a CAS mismatch,
	// the current value (when Found).
	Value []byte
	// Found: GET found the key, or (CAS mismatch) the key exists.
	Found bool
	// Message explains an error status.
	Message string
}

// OK reports whether the operation was carried out (StatusOK).
func (r Result) OK() bool { return r.Status == StatusOK }

// Err returns nil for StatusOK, StatusNotFound and StatusMismatch, which are
// normal outcomes, and an error wrapping ErrBadRequest, ErrKeyTooLarge or
// ErrValueTooLarge for the error statuses.
func (r Result) Err() error {
	var base error
	switch r.Status {
	case StatusOK, StatusNotFound, StatusMismatch:
		return nil
	case StatusKeyTooLarge:
		base = ErrKeyTooLarge
	case StatusValueTooLarge:
		base = ErrValueTooLarge
	default:
		base = ErrBadRequest
	}
	switch {
	case r.Message == "":
		return base
	case strings.HasPrefix(r.Message, base.Error()):
		return &resultError{msg: r.Message, base: base}
	}
	return fmt.Errorf("%w: %s", base, r.Message)
}

type resultError struct {
	msg  string
	base error
}

func (e *resultError) Error() string { return e.msg }
func (e *resultError) Unwrap() error { return e.base }

// DecodeUpdateResult decodes the outcome of a command from the sm.Result
// fields (value, data), e.g. a NodehostAPI ProposeResponse. The returned
// slices alias data.
func DecodeUpdateResult(value uint64, data []byte) (Result, error) {
	if value == 0 || value > uint64(StatusValueTooLarge) {
		return Result{}, fmt.Errorf("%w: unknown result status %d", ErrBadRequest, value)
	}
	r := Result{Status: Status(value)}
	switch r.Status {
	case StatusOK:
		// ADD returns the new value; the other commands nothing.
		if len(data) > 0 {
			r.Value, r.Found = data, true
		}
	case StatusNotFound:
		if len(data) != 0 {
			return Result{}, fmt.Errorf("%w: unexpected result data", ErrBadRequest)
		}
	case StatusMismatch:
		if len(data) < 1 || data[0] > 1 || (data[0] == 0 && len(data) != 1) {
			return Result{}, fmt.Errorf("%w: malformed mismatch result", ErrBadRequest)
		}
		r.Found = data[0] == 1
		if r.Found {
			r.Value = data[1:]
		}
	default:
		r.Message = string(data)
	}
	return r, nil
}

// DecodeQueryResult decodes the bytes returned by a query (Lookup). The
// returned value aliases b.
func DecodeQueryResult(b []byte) (Result, error) {
	if len(b) == 0 {
		return Result{}, fmt.Errorf("%w: empty query result", ErrBadRequest)
	}
	r := Result{Status: Status(b[0])}
	switch r.Status {
	case StatusOK:
		r.Found = true
		r.Value = b[1:]
	case StatusNotFound:
		if len(b) != 1 {
			return Result{}, fmt.Errorf("%w: unexpected result data", ErrBadRequest)
		}
	case StatusBadRequest, StatusKeyTooLarge, StatusValueTooLarge:
		r.Message = string(b[1:])
	default:
		return Result{}, fmt.Errorf("%w: unknown result status %d", ErrBadRequest, b[0])
	}
	return r, nil
}

func checkKey(key []byte) error {
	if len(key) == 0 {
		return ErrEmptyKey
	}
	if len(key) > MaxKeySize {
		return ErrKeyTooLarge
	}
	return nil
}

func appendBytes(b, v []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

type decoder struct {
	b   []byte
	off int
}

func (d *decoder) header() (Op, error) {
	if len(d.b) < 2 {
		return 0, fmt.Errorf("%w: %d bytes, need at least 2", ErrBadRequest, len(d.b))
	}
	if d.b[0] != Version {
		return 0, fmt.Errorf("%w: unsupported format version %d", ErrBadRequest, d.b[0])
	}
	d.off = 2
	return Op(d.b[1]), nil
}

func (d *decoder) byte() (byte, error) {
	if d.off >= len(d.b) {
		return 0, fmt.Errorf("%w: truncated", ErrBadRequest)
	}
	c := d.b[d.off]
	d.off++
	return c, nil
}

// bytes reads a length-prefixed string of at most limit bytes; tooLarge is
// returned when the declared length exceeds limit (even if the input is
// truncated: the declared size is what the client asked for).
func (d *decoder) bytes(limit int, tooLarge error) ([]byte, error) {
	if len(d.b)-d.off < 4 {
		return nil, fmt.Errorf("%w: truncated length", ErrBadRequest)
	}
	n := binary.BigEndian.Uint32(d.b[d.off:])
	d.off += 4
	if uint64(n) > uint64(limit) {
		return nil, tooLarge
	}
	if uint64(len(d.b)-d.off) < uint64(n) {
		return nil, fmt.Errorf("%w: truncated (%d bytes declared, %d left)", ErrBadRequest, n, len(d.b)-d.off)
	}
	v := d.b[d.off : d.off+int(n) : d.off+int(n)]
	d.off += int(n)
	return v, nil
}

func (d *decoder) key() ([]byte, error) {
	k, err := d.bytes(MaxKeySize, ErrKeyTooLarge)
	if err != nil {
		return nil, err
	}
	if len(k) == 0 {
		return nil, ErrEmptyKey
	}
	return k, nil
}

func (d *decoder) value() ([]byte, error) { return d.bytes(MaxValueSize, ErrValueTooLarge) }

func (d *decoder) end() error {
	if d.off != len(d.b) {
		return fmt.Errorf("%w: %d trailing bytes", ErrBadRequest, len(d.b)-d.off)
	}
	return nil
}

// statusOf maps a decoding error to the status reported to the proposer.
func statusOf(err error) Status {
	switch {
	case errors.Is(err, ErrKeyTooLarge):
		return StatusKeyTooLarge
	case errors.Is(err, ErrValueTooLarge):
		return StatusValueTooLarge
	}
	return StatusBadRequest
}
