package flagconf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func flags() (*pflag.FlagSet, *string, *int, *bool) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	a := fs.String("raft-address", "", "")
	n := fs.Int("rtt", 100, "")
	j := fs.Bool("join", false, "")
	fs.String("labels", "", "")
	fs.String("config", "", "")
	return fs, a, n, j
}

func write(t *testing.T, body string) string {
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestApply(t *testing.T) {
	fs, addr, rtt, join := flags()
	if err := fs.Parse([]string{"--rtt", "50"}); err != nil {
		t.Fatal(err)
	}
	p := write(t, "raft_address: 127.0.0.1:7001\nrtt: 200\njoin: true\nlabels: {region: r1, zone: a}\n")
	if err := Apply(fs, p, "config"); err != nil {
		t.Fatal(err)
	}
	if *addr != "127.0.0.1:7001" || *rtt != 50 || !*join {
		t.Fatalf("addr %q rtt %d (command line must win) join %v", *addr, *rtt, *join)
	}
	if got := fs.Lookup("labels").Value.String(); got != "region=r1,zone=a" {
		t.Fatalf("labels %q", got)
	}
}

func TestApplyErrors(t *testing.T) {
	for body, want := range map[string]string{
		"nosuch: 1\n":          "unknown key",
		"config: other.yaml\n": "cannot be set",
		"rtt: fast\n":          "rtt",
		"- not a map\n":        "config file",
	} {
		fs, _, _, _ := flags()
		if err := Apply(fs, write(t, body), "config"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error mentioning %q", body, err, want)
		}
	}
	fs, _, _, _ := flags()
	if err := Apply(fs, filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("missing file accepted")
	}
	if err := Apply(fs, write(t, "")); err != nil {
		t.Errorf("empty file: %v", err)
	}
}
