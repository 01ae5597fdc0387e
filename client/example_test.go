package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/drummerhq/drummer/client"
	"github.com/drummerhq/drummer/kv"
)

// These examples need a running Drummer deployment, so they are compiled
// but not run.

func ExampleNew() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.New(ctx, client.Config{
		Endpoints: []string{"127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"},
		// Mutual TLS: the deployment's CAs and a certificate made by
		// `drummer cert create-client --role app`.
		Security: client.Security{CAFile: "certs/ca.crt", CertFile: "certs/app.crt", KeyFile: "certs/app.key"},
		Preload:  []uint64{1, 2, 3}, // fail fast if these shards are unknown
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
}

func ExampleClient_Propose() {
	c, err := client.New(context.Background(), client.Config{Endpoints: []string{"127.0.0.1:7101"}, Security: client.Security{Insecure: true}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cmd, _ := kv.EncodePut([]byte("k"), []byte("v"))
	r, err := c.Propose(ctx, 1, cmd)
	switch {
	case errors.Is(err, client.ErrOutcomeUnknown):
		// Timed out: the put may or may not have been applied. A put is
		// idempotent, so proposing it again is safe.
	case err != nil:
		log.Fatal(err)
	}
	fmt.Println(r.Value)
}

func ExampleSession_Propose() {
	c, err := client.New(context.Background(), client.Config{Endpoints: []string{"127.0.0.1:7101"}, Security: client.Security{Insecure: true}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := c.OpenSession(ctx, 1)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)
	// Exactly once: a CAS that is retried internally after a timeout is
	// still applied once.
	cmd, _ := kv.EncodeCAS(kv.CAS{Key: []byte("leader"), ExpectAbsent: true, Value: []byte("me")})
	for {
		r, err := s.Propose(ctx, cmd)
		if errors.Is(err, client.ErrOutcomeUnknown) && ctx.Err() == nil {
			continue // the same command again continues the same series
		}
		if errors.Is(err, client.ErrSessionRejected) {
			// Evicted: open a new session (and re-check the state).
			log.Fatal(err)
		}
		if err != nil {
			log.Fatal(err)
		}
		res, _ := kv.DecodeUpdateResult(r.Value, r.Data)
		fmt.Println("became leader:", res.OK())
		return
	}
}

func ExampleKV() {
	c, err := client.New(context.Background(), client.Config{Endpoints: []string{"127.0.0.1:7101"}, Security: client.Security{Insecure: true}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	k := c.KV(1)
	if err := k.Put(ctx, []byte("greeting"), []byte("hello")); err != nil {
		log.Fatal(err)
	}
	v, found, err := k.Get(ctx, []byte("greeting")) // linearizable
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(found, string(v))
	r, err := k.CAS(ctx, kv.CAS{Key: []byte("greeting"), Expected: []byte("hello"), Value: []byte("bye")})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r.Swapped)
}

func ExampleReason() {
	err := fmt.Errorf("wrapped: %w", &client.Error{Op: "propose", ShardID: 1, Reason: client.ReasonShardNotReady})
	fmt.Println(client.Reason(err))
	// Output: SHARD_NOT_READY
}
