package client

import (
	"context"
	"fmt"
	"strconv"

	"github.com/drummerhq/drummer/kv"
)

// KV is a convenience layer for shards running the built-in kv
// application: it encodes commands and queries with package kv and
// decodes the results.
//
// Writes made through Client.KV go without a session (at least once): Put
// and Delete are idempotent, but a CAS retried after a timeout may report
// a mismatch caused by its own first application. Writes made through
// Session.KV are exactly once. Get is linearizable; StaleGet is not.
//
// A KV is as safe for concurrent use as what it was made from: always
// for Client.KV, serialized for Session.KV.
type KV struct {
	c       *Client
	s       *Session
	shardID uint64
}

// KV returns the kv layer of a shard, writing without a session.
func (c *Client) KV(shardID uint64) *KV { return &KV{c: c, shardID: shardID} }

// KV returns the kv layer of the session's shard, writing exactly once
// through the session.
func (s *Session) KV() *KV { return &KV{c: s.c, s: s, shardID: s.ShardID()} }

// CASResult is the outcome of KV.CAS.
type CASResult struct {
	// Swapped reports whether the condition held and the write was done.
	Swapped bool
	// Current and Exists describe the key's value when the condition did
	// not hold.
	Current []byte
	Exists  bool
}

func (k *KV) propose(ctx context.Context, cmd []byte) (kv.Result, error) {
	var r Result
	var err error
	if k.s != nil {
		r, err = k.s.Propose(ctx, cmd)
	} else {
		r, err = k.c.Propose(ctx, k.shardID, cmd)
	}
	if err != nil {
		return kv.Result{}, err
	}
	res, err := kv.DecodeUpdateResult(r.Value, r.Data)
	if err != nil {
		return kv.Result{}, fmt.Errorf("shard %d: not a kv result (is the shard running the %q app?): %w", k.shardID, kv.AppName, err)
	}
	return res, res.Err()
}

// Put sets key to value.
func (k *KV) Put(ctx context.Context, key, value []byte) error {
	cmd, err := kv.EncodePut(key, value)
	if err != nil {
		return err
	}
	_, err = k.propose(ctx, cmd)
	return err
}

// Add adds delta to the decimal integer stored at key (an absent key counts
// as 0) and returns the new value. Add is not idempotent: through
// Client.KV a retried Add may be applied twice; through Session.KV it is
// applied exactly once.
func (k *KV) Add(ctx context.Context, key []byte, delta int64) (int64, error) {
	cmd, err := kv.EncodeAdd(key, delta)
	if err != nil {
		return 0, err
	}
	res, err := k.propose(ctx, cmd)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(string(res.Value), 10, 64)
}

// Delete removes key, reporting whether it existed (a retried Delete may
// report false for a key its first attempt removed).
func (k *KV) Delete(ctx context.Context, key []byte) (existed bool, err error) {
	cmd, err := kv.EncodeDelete(key)
	if err != nil {
		return false, err
	}
	res, err := k.propose(ctx, cmd)
	if err != nil {
		return false, err
	}
	return res.Status == kv.StatusOK, nil
}

// CAS runs a compare-and-set (see kv.CAS).
func (k *KV) CAS(ctx context.Context, c kv.CAS) (CASResult, error) {
	cmd, err := kv.EncodeCAS(c)
	if err != nil {
		return CASResult{}, err
	}
	res, err := k.propose(ctx, cmd)
	if err != nil {
		return CASResult{}, err
	}
	return CASResult{Swapped: res.Status == kv.StatusOK, Current: res.Value, Exists: res.Found}, nil
}

// Get reads key with a linearizable read.
func (k *KV) Get(ctx context.Context, key []byte) (value []byte, found bool, err error) {
	return k.get(ctx, key, false)
}

// StaleGet reads key from one member's local state, which may miss recent
// writes.
func (k *KV) StaleGet(ctx context.Context, key []byte) (value []byte, found bool, err error) {
	return k.get(ctx, key, true)
}

func (k *KV) get(ctx context.Context, key []byte, stale bool) ([]byte, bool, error) {
	q, err := kv.EncodeGet(key)
	if err != nil {
		return nil, false, err
	}
	var out []byte
	if stale {
		out, err = k.c.StaleRead(ctx, k.shardID, q)
	} else {
		out, err = k.c.Read(ctx, k.shardID, q)
	}
	if err != nil {
		return nil, false, err
	}
	res, err := kv.DecodeQueryResult(out)
	if err != nil {
		return nil, false, fmt.Errorf("shard %d: not a kv result (is the shard running the %q app?): %w", k.shardID, kv.AppName, err)
	}
	if err := res.Err(); err != nil {
		return nil, false, err
	}
	return res.Value, res.Found, nil
}
