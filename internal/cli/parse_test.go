package cli

import (
	"maps"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseRegions(t *testing.T) {
	ok := []struct {
		in   string
		want map[string]uint32
	}{
		{"r1:1,r2:1,r3:1", map[string]uint32{"r1": 1, "r2": 1, "r3": 1}},
		{"us-east:2,us-west:1", map[string]uint32{"us-east": 2, "us-west": 1}},
		{" a.b_c-D:3 , z:1 ", map[string]uint32{"a.b_c-D": 3, "z": 1}},
		{"solo:9", map[string]uint32{"solo": 9}},
		{strings.Repeat("x", 128) + ":1", map[string]uint32{strings.Repeat("x", 128): 1}},
	}
	for _, tc := range ok {
		got, err := parseRegions(tc.in)
		if err != nil {
			t.Errorf("parseRegions(%q): %v", tc.in, err)
			continue
		}
		if !maps.Equal(got, tc.want) {
			t.Errorf("parseRegions(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
	bad := []struct {
		in, msg string
	}{
		{"", "empty region spec"},
		{"   ", "empty region spec"},
		{"r1", "has no replica count"},
		{"r1:0", "must be a number from 1 to 9"},
		{"r1:10", "must be a number from 1 to 9"},
		{"r1:-1", "must be a number from 1 to 9"},
		{"r1:x", "must be a number from 1 to 9"},
		{"r1:", "must be a number from 1 to 9"},
		{":1", "has no region name"},
		{"r1:1,r1:2", `region "r1" is given twice`},
		{"r1:1,,r2:1", "empty entry"},
		{"r1:1,", "empty entry"},
		{"r 1:1", "invalid region name"},
		{"r$:1", "invalid region name"},
		{"ré:1", "invalid region name"},
		{strings.Repeat("x", 129) + ":1", "invalid region name"},
		{"r1:5,r2:5", "more than the maximum 9"},
		{"r1:1:1", "must be a number from 1 to 9"},
	}
	for _, tc := range bad {
		_, err := parseRegions(tc.in)
		if err == nil {
			t.Errorf("parseRegions(%q) succeeded, want error", tc.in)
			continue
		}
		if !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("parseRegions(%q) = %q, want it to say %q", tc.in, err, tc.msg)
		}
	}
}

func TestFormatRegions(t *testing.T) {
	if got := formatRegions(map[string]uint32{"r3": 1, "r1": 2, "r2": 1}); got != "r1:2,r2:1,r3:1" {
		t.Errorf("got %q", got)
	}
	if got := formatRegions(nil); got != "-" {
		t.Errorf("got %q", got)
	}
	// Round trip.
	in := "a:1,b:2,c:3"
	m, err := parseRegions(in)
	if err != nil || formatRegions(m) != in {
		t.Errorf("round trip of %q: %v %q", in, err, formatRegions(m))
	}
}

func TestParseDuration(t *testing.T) {
	ok := map[string]time.Duration{
		"45s":    45 * time.Second,
		"1m30s":  90 * time.Second,
		"100ms":  100 * time.Millisecond,
		"2h":     2 * time.Hour,
		" 10s ":  10 * time.Second,
		"1.5s":   1500 * time.Millisecond,
		"3000us": 3 * time.Millisecond,
	}
	for in, want := range ok {
		got, err := parseDuration("x", in)
		if err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	bad := map[string]string{
		"45":     "has no unit; write e.g. 45s",
		"abc":    "invalid duration",
		"":       "invalid duration",
		"0s":     "must be positive",
		"-1s":    "must be positive",
		"1500us": "finer than a millisecond",
		"10 s":   "invalid duration",
	}
	for in, msg := range bad {
		_, err := parseDuration("dead_timeout", in)
		if err == nil {
			t.Errorf("parseDuration(%q) succeeded", in)
			continue
		}
		if !strings.Contains(err.Error(), msg) || !strings.HasPrefix(err.Error(), "dead_timeout:") {
			t.Errorf("parseDuration(%q) = %q, want %q", in, err, msg)
		}
	}
}

func TestFmtDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                                    "0s",
		500 * time.Millisecond:               "500ms",
		45 * time.Second:                     "45s",
		90 * time.Second:                     "1m30s",
		2 * time.Minute:                      "2m",
		time.Hour:                            "1h",
		time.Hour + 30*time.Minute:           "1h30m",
		time.Hour + 5*time.Second:            "1h0m5s",
		24 * time.Hour:                       "24h",
		1500 * time.Millisecond:              "1.5s",
		10*time.Minute + 30*time.Second:      "10m30s",
		100*time.Hour + 20*time.Minute:       "100h20m",
		time.Duration(7*24) * time.Hour:      "168h",
		3*time.Minute + 500*time.Microsecond: "3m0.0005s",
	} {
		if got := fmtDuration(d); got != want {
			t.Errorf("fmtDuration(%v) = %q, want %q", d, got, want)
		}
	}
	if got := fmtMillis(math.MaxUint64); !strings.HasSuffix(got, "ms") {
		t.Errorf("fmtMillis(max) = %q", got)
	}
}

func TestParseShardIDs(t *testing.T) {
	ok := []struct {
		in   []string
		want []uint64
	}{
		{[]string{"7"}, []uint64{7}},
		{[]string{"1-3"}, []uint64{1, 2, 3}},
		{[]string{"1,2,5-7"}, []uint64{1, 2, 5, 6, 7}},
		{[]string{"9", "3-4", "1"}, []uint64{9, 3, 4, 1}},
		{[]string{" 2 , 4 "}, []uint64{2, 4}},
		{[]string{"5-5"}, []uint64{5}},
		{[]string{"18446744073709551614-18446744073709551615"}, []uint64{math.MaxUint64 - 1, math.MaxUint64}},
	}
	for _, tc := range ok {
		got, err := parseShardIDs(tc.in)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("parseShardIDs(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	bad := []struct {
		in  []string
		msg string
	}{
		{nil, "no shard IDs"},
		{[]string{"0"}, "shard ID 0 is reserved"},
		{[]string{"0-5"}, "shard ID 0 is reserved"},
		{[]string{"5-3"}, "backwards; write 3-5"},
		{[]string{"a"}, `invalid shard ID "a"`},
		{[]string{"1,,2"}, "empty shard ID"},
		{[]string{"1,"}, "empty shard ID"},
		{[]string{"1-3,2"}, "shard 2 is given twice"},
		{[]string{"4", "4"}, "shard 4 is given twice"},
		{[]string{"-3"}, "invalid shard ID"},
		{[]string{"1-"}, "invalid shard ID"},
		{[]string{"1-2-3"}, "invalid shard ID"},
		{[]string{"-1"}, "invalid shard ID"},
		{[]string{"1-100001"}, "more than 100000 shards"},
		{[]string{"1-60000", "60001-120000"}, "more than 100000 shards"},
		{[]string{"18446744073709551616"}, "invalid shard ID"},
	}
	for _, tc := range bad {
		_, err := parseShardIDs(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("parseShardIDs(%q) = %v, want error with %q", tc.in, err, tc.msg)
		}
	}
}

func TestShardRange(t *testing.T) {
	got, err := shardRange(5, 3)
	if err != nil || !slices.Equal(got, []uint64{5, 6, 7}) {
		t.Errorf("shardRange(5,3) = %v, %v", got, err)
	}
	if got, err := shardRange(math.MaxUint64, 1); err != nil || got[0] != math.MaxUint64 {
		t.Errorf("shardRange(max,1) = %v, %v", got, err)
	}
	for _, tc := range []struct {
		first, count uint64
		msg          string
	}{
		{0, 1, "shard ID 0"},
		{1, 0, "--count must be at least 1"},
		{math.MaxUint64, 2, "overflow"},
		{1, 100_001, "more than 100000"},
	} {
		if _, err := shardRange(tc.first, tc.count); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("shardRange(%d,%d) = %v, want %q", tc.first, tc.count, err, tc.msg)
		}
	}
}

func TestFormatShardIDs(t *testing.T) {
	for _, tc := range []struct {
		in   []uint64
		want string
	}{
		{nil, "-"},
		{[]uint64{7}, "7"},
		{[]uint64{1, 2, 3}, "1-3"},
		{[]uint64{1, 2, 3, 5, 7, 8}, "1-3,5,7-8"},
		{[]uint64{3, 2, 1}, "3,2,1"},
	} {
		if got := formatShardIDs(tc.in); got != tc.want {
			t.Errorf("formatShardIDs(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseKeyValues(t *testing.T) {
	got, err := parseKeyValues([]string{"dead_timeout=45s", "Max-Concurrent-Repairs = 8", "x=a=b"})
	want := []keyValue{{"dead_timeout", "45s"}, {"max_concurrent_repairs", "8"}, {"x", "a=b"}}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("parseKeyValues = %v, %v; want %v", got, err, want)
	}
	for _, tc := range []struct {
		in  []string
		msg string
	}{
		{nil, "no settings given"},
		{[]string{"dead_timeout"}, "is not key=value"},
		{[]string{"=1"}, "has no key"},
		{[]string{"dead_timeout="}, "dead_timeout has no value"},
		{[]string{"a=1", "A=2"}, "a is given twice"},
		{[]string{"dead-timeout=1s", "dead_timeout=2s"}, "dead_timeout is given twice"},
	} {
		if _, err := parseKeyValues(tc.in); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("parseKeyValues(%q) = %v, want %q", tc.in, err, tc.msg)
		}
	}
}

func TestValidateConfigSetting(t *testing.T) {
	ok := []struct {
		k, v     string
		perShard bool
	}{
		{"report_interval", "1s", false},
		{"suspect_timeout", "10s", false},
		{"dead_timeout", "45s", false},
		{"max_concurrent_repairs", "16", false},
		{"max_repairs_per_host", "2", false},
		{"host_gc_after", "24h", false},
		{"suspect_timeout", "5s", true},
		{"dead_timeout", "30s", true},
		{"dead_timeout", "default", true},
		{"balance_replicas", "on", false},
		{"balance_leaders", "false", false},
		{"balance_threshold", "5%", false},
		{"balance_threshold", "100", false},
		{"balance_min_excess", "2", false},
		{"max_balance_moves", "64", false},
		{"max_leader_transfers", "50", false},
		{"balance_cooldown", "1m", false},
	}
	for _, tc := range ok {
		if err := validateConfigSetting(tc.k, tc.v, tc.perShard); err != nil {
			t.Errorf("validateConfigSetting(%s=%s, %v): %v", tc.k, tc.v, tc.perShard, err)
		}
	}
	bad := []struct {
		k, v     string
		perShard bool
		msg      string
	}{
		{"dead_timeout", "45", false, "has no unit"},
		{"dead_timeout", "0", false, "must be positive"},
		{"dead_timeout", "0", true, "must be positive"},
		{"dead_timeout", "-5s", false, "must be positive"},
		{"report_interval", "soon", false, "invalid duration"},
		{"max_concurrent_repairs", "0", false, "out of range; want an integer between 1 and 100000"},
		{"max_concurrent_repairs", "-1", false, "not a whole number"},
		{"max_repairs_per_host", "2.5", false, "not a whole number"},
		{"max_repairs_per_host", "5000000000", false, "out of range"},
		{"report_interval", "5m", false, "out of range; want a duration with a unit between 100ms and 1m"},
		{"balance_threshold", "0", false, "out of range"},
		{"balance_threshold", "x%", false, "not a whole number"},
		{"balance_replicas", "yes", false, "not a switch"},
		{"balance_cooldown", "1m", true, "cannot be set per shard"},
		{"max_repairs_per_host", "3", true, "cannot be set per shard"},
		{"report_interval", "1s", true, "cannot be set per shard"},
		{"host_gc_after", "1h", true, "cannot be set per shard"},
		{"bogus", "1", false, `unknown setting "bogus"; known settings: report_interval, suspect_timeout`},
		{"bogus", "1", true, "known settings: suspect_timeout, dead_timeout"},
	}
	for _, tc := range bad {
		err := validateConfigSetting(tc.k, tc.v, tc.perShard)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("validateConfigSetting(%s=%s, %v) = %v, want %q", tc.k, tc.v, tc.perShard, err, tc.msg)
		}
	}
}

func TestValidateAddressAndEndpoints(t *testing.T) {
	for _, a := range []string{"127.0.0.1:7101", "localhost:1", "[::1]:65535", "db-1.example:7201"} {
		if err := validateAddress("x", a); err != nil {
			t.Errorf("validateAddress(%q): %v", a, err)
		}
	}
	for a, msg := range map[string]string{
		"":               "x is required",
		"127.0.0.1":      "want host:port",
		":7101":          "has no host",
		"h:0":            "port must be 1-65535",
		"h:70000":        "port must be 1-65535",
		"h:http":         "port must be 1-65535",
		"http://h:1/x/y": "want host:port",
	} {
		if err := validateAddress("x", a); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("validateAddress(%q) = %v, want %q", a, err, msg)
		}
	}
	eps, err := splitEndpoints(" a:1, http://b:2 ,,c:3")
	if err != nil || !slices.Equal(eps, []string{"a:1", "b:2", "c:3"}) {
		t.Errorf("splitEndpoints = %v, %v", eps, err)
	}
	if _, err := splitEndpoints(" , "); err == nil || !strings.Contains(err.Error(), "no drummer endpoints") {
		t.Errorf("splitEndpoints(empty) = %v", err)
	}
	if _, err := splitEndpoints("a:1,b"); err == nil {
		t.Error("splitEndpoints(a:1,b) succeeded")
	}
}

func TestValidName(t *testing.T) {
	for _, s := range []string{"kv", "a.b-c_D9", strings.Repeat("a", 128)} {
		if !validName(s) {
			t.Errorf("validName(%q) = false", s)
		}
	}
	for _, s := range []string{"", "a b", "a/b", "a:b", strings.Repeat("a", 129), "ü"} {
		if validName(s) {
			t.Errorf("validName(%q) = true", s)
		}
	}
}
