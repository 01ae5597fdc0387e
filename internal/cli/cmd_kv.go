package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/drummerhq/drummer/client"
	"github.com/drummerhq/drummer/kv"
)

type kvJSON struct {
	ShardID uint64  `json:"shard_id"`
	Key     string  `json:"key"`
	Value   *string `json:"value"`
	Found   bool    `json:"found"`
}

type casJSON struct {
	ShardID uint64  `json:"shard_id"`
	Key     string  `json:"key"`
	Swapped bool    `json:"swapped"`
	Current *string `json:"current"`
	Exists  bool    `json:"exists"`
}

func newKVCmd(a *app) *cobra.Command {
	c := newGroupCmd("kv", "Read and write a shard running the built-in kv app",
		`Reads and writes go to the shard's nodehosts through the NodehostAPI: the
shard is located through the drummer servers, writes go to its leader's host,
reads are linearizable (ReadIndex) unless --stale is given.`)
	var shardID uint64
	addShard := func(cmd *cobra.Command) {
		cmd.Flags().Uint64Var(&shardID, "shard-id", 0, "shard to use (required)")
	}
	checkShard := func() error {
		if shardID == 0 {
			return usageErrorf("--shard-id is required (shard IDs start at 1)")
		}
		return nil
	}
	dial := func(cmd *cobra.Command) (*client.Client, func(), error) {
		if err := a.settle(); err != nil {
			return nil, nil, err
		}
		eps, err := splitEndpoints(a.effectiveEndpoints())
		if err != nil {
			return nil, nil, usageErrorf("%v", err)
		}
		ctx, cancel := a.ctx(cmd)
		cl, err := client.New(ctx, client.Config{Endpoints: eps, Security: a.security()})
		if err != nil {
			cancel()
			return nil, nil, a.rpcError(err, "connect")
		}
		return cl, func() { cl.Close(); cancel() }, nil
	}
	kvErr := func(err error, what string) error {
		var ce *cliError
		if errors.As(err, &ce) {
			return err // a usage or dial error, already explained
		}
		if errors.Is(err, client.ErrShardNotFound) {
			return &cliError{code: ExitNotFound, err: fmt.Errorf("%s: shard %d does not exist", what, shardID)}
		}
		return a.rpcError(err, "%s", what)
	}
	// withKV runs f against the shard with a connected client and the
	// command's deadline.
	withKV := func(cmd *cobra.Command, f func(ctx context.Context, k *client.KV) error) error {
		if err := checkShard(); err != nil {
			return err
		}
		cl, done, err := dial(cmd)
		if err != nil {
			return err
		}
		defer done()
		ctx, cancel := a.ctx(cmd)
		defer cancel()
		return f(ctx, cl.KV(shardID))
	}

	var stale bool
	get := &cobra.Command{
		Use:   "get --shard-id N KEY",
		Short: "Read a key (exit 4 if it does not exist)",
		Args:  args(cobra.ExactArgs(1), "one KEY"),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			var v []byte
			var found bool
			err := withKV(cmd, func(ctx context.Context, k *client.KV) (err error) {
				if stale {
					v, found, err = k.StaleGet(ctx, []byte(args[0]))
				} else {
					v, found, err = k.Get(ctx, []byte(args[0]))
				}
				return err
			})
			if err != nil {
				return kvErr(err, "get "+args[0])
			}
			if a.jsonOutput() {
				out := kvJSON{ShardID: shardID, Key: args[0], Found: found}
				if found {
					s := string(v)
					out.Value = &s
				}
				if err := a.printJSON(out); err != nil {
					return err
				}
			} else if found {
				fmt.Fprintln(a.stdout, string(v))
			}
			if !found {
				return &cliError{code: ExitNotFound, err: fmt.Errorf("key %q not found in shard %d", args[0], shardID)}
			}
			return nil
		}),
	}
	addShard(get)
	get.Flags().BoolVar(&stale, "stale", false, "read the local replica without a ReadIndex round (may be stale)")

	put := &cobra.Command{
		Use:   "put --shard-id N KEY VALUE",
		Short: "Write a key",
		Args:  args(cobra.ExactArgs(2), "KEY and VALUE"),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			if err := withKV(cmd, func(ctx context.Context, k *client.KV) error {
				return k.Put(ctx, []byte(args[0]), []byte(args[1]))
			}); err != nil {
				return kvErr(err, "put "+args[0])
			}
			if a.jsonOutput() {
				v := args[1]
				return a.printJSON(kvJSON{ShardID: shardID, Key: args[0], Value: &v, Found: true})
			}
			fmt.Fprintln(a.stdout, "OK")
			return nil
		}),
	}
	addShard(put)

	del := &cobra.Command{
		Use:   "delete --shard-id N KEY",
		Short: "Delete a key (prints 1 if it existed, 0 if not)",
		Args:  args(cobra.ExactArgs(1), "one KEY"),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			var existed bool
			err := withKV(cmd, func(ctx context.Context, k *client.KV) (err error) {
				existed, err = k.Delete(ctx, []byte(args[0]))
				return err
			})
			if err != nil {
				return kvErr(err, "delete "+args[0])
			}
			if a.jsonOutput() {
				return a.printJSON(kvJSON{ShardID: shardID, Key: args[0], Found: existed})
			}
			if existed {
				fmt.Fprintln(a.stdout, 1)
			} else {
				fmt.Fprintln(a.stdout, 0)
			}
			return nil
		}),
	}
	addShard(del)

	var (
		expect       string
		expectAbsent bool
		value        string
		deleteKey    bool
	)
	cas := &cobra.Command{
		Use:   "cas --shard-id N KEY (--expect OLD | --expect-absent) (--value NEW | --delete)",
		Short: "Compare-and-set a key (exit 5 if the condition did not hold)",
		Args:  args(cobra.ExactArgs(1), "one KEY"),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			if err := checkShard(); err != nil {
				return err
			}
			if cmd.Flags().Changed("expect") == expectAbsent {
				return usageErrorf("give exactly one of --expect OLD and --expect-absent")
			}
			if cmd.Flags().Changed("value") == deleteKey {
				return usageErrorf("give exactly one of --value NEW and --delete")
			}
			c := kv.CAS{Key: []byte(args[0]), ExpectAbsent: expectAbsent, Delete: deleteKey}
			if !expectAbsent {
				c.Expected = []byte(expect)
			}
			if !deleteKey {
				c.Value = []byte(value)
			}
			var r client.CASResult
			err := withKV(cmd, func(ctx context.Context, k *client.KV) (err error) {
				r, err = k.CAS(ctx, c)
				return err
			})
			if err != nil {
				return kvErr(err, "cas "+args[0])
			}
			if a.jsonOutput() {
				out := casJSON{ShardID: shardID, Key: args[0], Swapped: r.Swapped, Exists: r.Exists}
				if r.Exists {
					s := string(r.Current)
					out.Current = &s
				}
				if err := a.printJSON(out); err != nil {
					return err
				}
			} else if r.Swapped {
				fmt.Fprintln(a.stdout, "OK")
			}
			if !r.Swapped {
				cur := "absent"
				if r.Exists {
					cur = fmt.Sprintf("%q", r.Current)
				}
				return &cliError{code: ExitConflict, err: fmt.Errorf("cas %s: condition did not hold; current value is %s", args[0], cur)}
			}
			return nil
		}),
	}
	addShard(cas)
	cas.Flags().StringVar(&expect, "expect", "", "the value the key must hold")
	cas.Flags().BoolVar(&expectAbsent, "expect-absent", false, "the key must not exist")
	cas.Flags().StringVar(&value, "value", "", "the new value")
	cas.Flags().BoolVar(&deleteKey, "delete", false, "delete the key instead of setting it")

	c.AddCommand(get, put, del, cas)
	return c
}
