package nodehostcmd

import (
	"bytes"
	"maps"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/drummerhq/drummer/agent"
)

func TestParseLabels(t *testing.T) {
	got, err := ParseLabels(" region=r1, zone=a ")
	if err != nil || !maps.Equal(got, map[string]string{"region": "r1", "zone": "a"}) {
		t.Fatalf("%v %v", got, err)
	}
	if got, err := ParseLabels(""); err != nil || len(got) != 0 {
		t.Fatalf("empty: %v %v", got, err)
	}
	for _, bad := range []string{"region", "=r1", "a=1,a=2"} {
		if _, err := ParseLabels(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// Bad flags and configurations are usage errors, found before anything
// starts; the hooks see the configuration first.
func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--no-such-flag"},
		{"--labels", "oops"},
		{"--raft-address", "127.0.0.1:1", "--api-address", "127.0.0.1:2", "--drummer-endpoints", "127.0.0.1:3", "--log-level", "loud"},
		{"--data-dir", t.TempDir()},
		{"--config", "/no/such/file.yaml"},
	} {
		var errb bytes.Buffer
		cmd := Command(Options{Stderr: &errb})
		cmd.SetArgs(args)
		cmd.SetOut(&errb)
		cmd.SetErr(&errb)
		err := cmd.Execute()
		if err == nil || !IsUsage(err) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
	called := false
	hooks := func(fs *pflag.FlagSet) func(*agent.Config) error {
		fs.Bool("test-x", false, "")
		return func(cfg *agent.Config) error {
			called = true
			if cfg.RaftAddress != "127.0.0.1:1" {
				t.Errorf("hook saw raft address %q", cfg.RaftAddress)
			}
			return errStop
		}
	}
	cmd := Command(Options{Hooks: hooks, Stderr: &bytes.Buffer{}})
	cmd.SetArgs([]string{"--test-x", "--raft-address", "127.0.0.1:1"})
	if err := cmd.Execute(); !called || err == nil || !strings.Contains(err.Error(), "stop here") {
		t.Fatalf("hooks: called %v, err %v", called, err)
	}
}

type stopErr struct{}

func (stopErr) Error() string { return "stop here" }

var errStop = stopErr{}
