package cli

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// FuzzParsers feeds the command-line value parsers arbitrary text. None
// may panic; what one accepts is valid and, where there is a formatter,
// formats back to text it parses to the same value.
func FuzzParsers(f *testing.F) {
	for _, s := range []string{"r1:1,r2:1,r3:1", " a:2 , b:3", "r1:0", "1,2,5-7", "3-1", "18446744073709551615",
		"1-18446744073709551615", "45s", "1h30m", "1.5ms", "500us", "dead_timeout=45s", "a=b c=d", "127.0.0.1:7101,http://[::1]:1",
		":7101", "x:0", "", ",", "-", "=", "r:9,s:1"} {
		for k := range 6 {
			f.Add(byte(k), s)
		}
	}
	f.Fuzz(func(t *testing.T, which byte, s string) {
		switch which % 6 {
		case 0:
			m, err := parseRegions(s)
			if err != nil {
				return
			}
			if len(m) == 0 || sumRegions(m) > maxReplicas {
				t.Fatalf("parseRegions(%q) = %v", s, m)
			}
			for name, n := range m {
				if !validName(name) || n == 0 || n > maxReplicas {
					t.Fatalf("parseRegions(%q): entry %q:%d", s, name, n)
				}
			}
			back, err := parseRegions(formatRegions(m))
			if err != nil || !mapsEqual(back, m) {
				t.Fatalf("regions %v format as %q, which parses to %v, %v", m, formatRegions(m), back, err)
			}
		case 1:
			ids, err := parseShardIDs(strings.Fields(s))
			if err != nil {
				return
			}
			if len(ids) == 0 || len(ids) > maxShardsPerCommand || slices.Contains(ids, 0) {
				t.Fatalf("parseShardIDs(%q) = %d ids", s, len(ids))
			}
			sorted := slices.Clone(ids)
			slices.Sort(sorted)
			if len(slices.Compact(sorted)) != len(ids) {
				t.Fatalf("parseShardIDs(%q) has duplicates", s)
			}
			back, err := parseShardIDs([]string{formatShardIDs(ids)})
			if err != nil || !slices.Equal(back, ids) {
				t.Fatalf("ids format as %q, which parses back differently (%v)", formatShardIDs(ids), err)
			}
		case 2:
			d, err := parseDuration("x", s)
			if err != nil {
				return
			}
			if d <= 0 || d%time.Millisecond != 0 {
				t.Fatalf("parseDuration(%q) = %v", s, d)
			}
			if back, err := parseDuration("x", fmtDuration(d)); err != nil || back != d {
				t.Fatalf("%v formats as %q, which parses to %v, %v", d, fmtDuration(d), back, err)
			}
			_ = fmtMillis(uint64(d.Milliseconds()))
		case 3:
			kvs, err := parseKeyValues(strings.Fields(s))
			if err != nil {
				return
			}
			seen := map[string]bool{}
			for _, kv := range kvs {
				if kv.Key == "" || kv.Value == "" || seen[kv.Key] || strings.ContainsAny(kv.Key, "-=") || kv.Key != strings.ToLower(kv.Key) {
					t.Fatalf("parseKeyValues(%q): %+v", s, kvs)
				}
				seen[kv.Key] = true
				_ = validateConfigSetting(kv.Key, kv.Value, false)
				_ = validateConfigSetting(kv.Key, kv.Value, true)
			}
		case 4:
			eps, err := splitEndpoints(s)
			if err != nil {
				return
			}
			for _, e := range eps {
				if validateAddress("endpoint", e) != nil {
					t.Fatalf("splitEndpoints(%q) accepted %q", s, e)
				}
			}
		default:
			first, count := uint64(len(s)), uint64(0)
			for _, c := range []byte(s) {
				count = count*31 + uint64(c)
			}
			ids, err := shardRange(first, count%(2*maxShardsPerCommand))
			if err == nil && (len(ids) == 0 || ids[0] != first || ids[len(ids)-1] < ids[0]) {
				t.Fatalf("shardRange(%d, %d) = %d ids", first, count, len(ids))
			}
		}
	})
}

func mapsEqual(a, b map[string]uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// FuzzCommandLine runs drummercmd with arbitrary arguments against a fake
// drummer. The exit code is always one of the documented ones (0-6), a
// failure says why on stderr, and a usage error (exit 2) changes nothing.
func FuzzCommandLine(f *testing.F) {
	fake := newFake()
	addr := serve(f, fake)
	for _, s := range []string{
		"shard list", "shard create --app kv --replicas 3 --first-shard-id 9", "shard delete 1-3 --yes", "shard get 1",
		"host list -o json", "host cordon h1", "host maintenance h1 --for 10m", "host maintenance h1 --for 1000000h",
		"config set dead_timeout=45s", "config set --shard-id 2 dead_timeout=default", "config get", "cluster info",
		"regions set r1:1,r2:1,r3:1", "members list", "shard create --replicas 0", "--bogus", "", "help", "shard",
		"kv put --shard-id 1 k v", "repairs list", "balance status --limit 2 -o json", "config set balance_threshold=5% balance_replicas=off",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Fields(s)
		if len(args) > 32 || strings.Contains(s, "wait") || strings.Contains(s, "timeout") || strings.Contains(s, "endpoint") {
			return // long-running commands, and other servers than the fake
		}
		before := len(fake.mutations())
		r := runCLI(t, runOpts{stdin: "y\n"}, append([]string{"--endpoints", addr, "--command-timeout", "2s"}, args...)...)
		if r.code < 0 || r.code > 6 {
			t.Fatalf("%q: exit code %d is not documented", s, r.code)
		}
		if r.code != 0 && strings.TrimSpace(r.stderr) == "" {
			t.Fatalf("%q: exit %d with nothing on stderr", s, r.code)
		}
		if r.code == 2 {
			if after := fake.mutations(); len(after) != before {
				t.Fatalf("%q: usage error (exit 2) but the command changed something: %v", s, after[before:])
			}
		}
	})
}
