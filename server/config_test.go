package server

import (
	"strings"
	"testing"
)

func TestParseMembers(t *testing.T) {
	m, err := ParseMembers(" 1=127.0.0.1:7111, 2=127.0.0.1:7112,3=host.example:7113 ")
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 3 || m[3] != "host.example:7113" {
		t.Fatalf("got %v", m)
	}
	if got := FormatMembers(m); got != "1=127.0.0.1:7111,2=127.0.0.1:7112,3=host.example:7113" {
		t.Fatalf("format: %s", got)
	}
	for in, want := range map[string]string{
		"1=127.0.0.1":                 "host:port",
		"0=127.0.0.1:1":               "positive",
		"x=127.0.0.1:1":               "positive",
		"1:127.0.0.1:1":               "ID=host:port",
		"1=127.0.0.1:1,1=127.0.0.1:2": "twice",
		"1=127.0.0.1:1,2=127.0.0.1:1": "share address",
		"1=:7111":                     "no host",
		"1=127.0.0.1:99999":           "port",
	} {
		if _, err := ParseMembers(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseMembers(%q) = %v, want an error mentioning %q", in, err, want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{ReplicaID: 1, RaftAddress: "127.0.0.1:7111", GRPCAddress: "127.0.0.1:7101", DataDir: "/tmp/x",
		InitialMembers: map[uint64]string{1: "127.0.0.1:7111", 2: "127.0.0.1:7112", 3: "127.0.0.1:7113"}, Insecure: true}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		mod  func(*Config)
		want string
	}{
		"no id":            {func(c *Config) { c.ReplicaID = 0 }, "--id"},
		"not a member":     {func(c *Config) { c.ReplicaID = 4 }, "does not include"},
		"address mismatch": {func(c *Config) { c.RaftAddress = "127.0.0.1:9999" }, "but --raft-address"},
		"join and members": {func(c *Config) { c.Join = true }, "exclusive"},
		"neither":          {func(c *Config) { c.InitialMembers = nil }, "--join"},
		"same addresses":   {func(c *Config) { c.GRPCAddress = c.RaftAddress }, "differ"},
		"no data dir":      {func(c *Config) { c.DataDir = "" }, "--data-dir"},
		"bad grpc address": {func(c *Config) { c.GRPCAddress = "nohostport" }, "--grpc-address"},
		"no certificates":  {func(c *Config) { c.Insecure = false }, "drummer cert create-ca"},
		"tls and insecure": {func(c *Config) { c.CAFile, c.CertFile, c.KeyFile = "a", "b", "c" }, "exclusive"},
		"partial tls":      {func(c *Config) { c.Insecure, c.CAFile = false, "a" }, "--cert-file"},
	} {
		c := ok
		c.InitialMembers = map[uint64]string{1: "127.0.0.1:7111", 2: "127.0.0.1:7112", 3: "127.0.0.1:7113"}
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error mentioning %q", name, err, tc.want)
		}
	}
}
