package cli

import (
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/internal/settings"
)

// The server's limits (internal/db), checked here too so that bad input
// never reaches the server.
const (
	maxReplicas         = db.MaxReplicas
	maxNameLen          = db.MaxNameLen
	maxShardsPerCommand = db.MaxShardsPerCommand
)

// validName reports whether s is a valid application, region or label name
// (the server's rule: 1 to 128 characters from [A-Za-z0-9._-]).
func validName(s string) bool { return db.ValidName(s) }

const regionExample = "e.g. r1:1,r2:1,r3:1"

// parseRegions parses a region placement "r1:1,r2:1,r3:1" (region label
// value : replica count). Names are [A-Za-z0-9._-]; counts 1-9; no region
// twice; at most 9 replicas in all.
func parseRegions(spec string) (map[string]uint32, error) {
	if strings.TrimSpace(spec) == "" {
		return nil, fmt.Errorf("empty region spec; want REGION:COUNT,... (%s)", regionExample)
	}
	out := map[string]uint32{}
	var total uint32
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, fmt.Errorf("region spec %q has an empty entry; want REGION:COUNT,... (%s)", spec, regionExample)
		}
		name, count, ok := strings.Cut(part, ":")
		if !ok {
			return nil, fmt.Errorf("region %q has no replica count; want REGION:COUNT (%s)", part, regionExample)
		}
		name, count = strings.TrimSpace(name), strings.TrimSpace(count)
		if name == "" {
			return nil, fmt.Errorf("region entry %q has no region name; want REGION:COUNT (%s)", part, regionExample)
		}
		if !validName(name) {
			return nil, fmt.Errorf("invalid region name %q: use 1-%d letters, digits, '.', '_' or '-'", name, maxNameLen)
		}
		n, err := strconv.ParseUint(count, 10, 32)
		if err != nil || n == 0 || n > maxReplicas {
			return nil, fmt.Errorf("region %q: replica count %q must be a number from 1 to %d", name, count, maxReplicas)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("region %q is given twice; list each region once with its total replica count", name)
		}
		out[name] = uint32(n)
		total += uint32(n)
	}
	if total > maxReplicas {
		return nil, fmt.Errorf("regions %q ask for %d replicas, more than the maximum %d", spec, total, maxReplicas)
	}
	return out, nil
}

// formatRegions renders a placement in the form parseRegions reads, sorted
// by region name; "-" when empty.
func formatRegions(m map[string]uint32) string {
	if len(m) == 0 {
		return "-"
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s:%d", n, m[n])
	}
	return strings.Join(parts, ",")
}

func sumRegions(m map[string]uint32) uint32 {
	var t uint32
	for _, n := range m {
		t += n
	}
	return t
}

// Durations are parsed and printed as the runtime settings are
// (internal/settings), flags and settings alike.
var (
	parseDuration = settings.ParseDuration
	fmtDuration   = settings.FormatDuration
	fmtMillis     = settings.FormatMillis
)

// parseShardID parses one shard ID (a positive integer).
func parseShardID(s string) (uint64, error) {
	s = strings.TrimSpace(s)
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid shard ID %q: want a positive integer", s)
	}
	if id == 0 {
		return 0, fmt.Errorf("shard ID 0 is reserved; shard IDs start at 1")
	}
	return id, nil
}

// parseShardIDs parses shard IDs and ranges, each argument a comma list:
// "7", "1-10", "1,2,5-7". The result keeps the given order; a shard given
// twice (also through overlapping ranges) is an error.
func parseShardIDs(args []string) ([]uint64, error) {
	var out []uint64
	seen := map[uint64]bool{}
	add := func(id uint64) error {
		if seen[id] {
			return fmt.Errorf("shard %d is given twice", id)
		}
		if len(out) >= maxShardsPerCommand {
			return fmt.Errorf("more than %d shards in one command; split it up", maxShardsPerCommand)
		}
		seen[id] = true
		out = append(out, id)
		return nil
	}
	for _, arg := range args {
		for _, part := range strings.Split(arg, ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				return nil, fmt.Errorf("empty shard ID in %q; want IDs or ranges like 1,2,5-7", arg)
			}
			lo, hi, isRange := strings.Cut(part, "-")
			if !isRange {
				id, err := parseShardID(part)
				if err != nil {
					return nil, err
				}
				if err := add(id); err != nil {
					return nil, err
				}
				continue
			}
			a, err := parseShardID(lo)
			if err != nil {
				return nil, fmt.Errorf("range %q: %v", part, err)
			}
			b, err := parseShardID(hi)
			if err != nil {
				return nil, fmt.Errorf("range %q: %v", part, err)
			}
			if b < a {
				return nil, fmt.Errorf("range %q is backwards; write %d-%d", part, b, a)
			}
			if b-a >= maxShardsPerCommand {
				return nil, fmt.Errorf("range %q has more than %d shards; split it up", part, maxShardsPerCommand)
			}
			for id := a; ; id++ {
				if err := add(id); err != nil {
					return nil, err
				}
				if id == b {
					break
				}
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no shard IDs given")
	}
	return out, nil
}

// shardRange returns first, first+1, ..., first+count-1.
func shardRange(first, count uint64) ([]uint64, error) {
	if first == 0 {
		return nil, fmt.Errorf("shard ID 0 is reserved; shard IDs start at 1")
	}
	if count == 0 {
		return nil, fmt.Errorf("--count must be at least 1")
	}
	if count > maxShardsPerCommand {
		return nil, fmt.Errorf("--count %d is more than %d shards in one command; split it up", count, maxShardsPerCommand)
	}
	if first > math.MaxUint64-(count-1) {
		return nil, fmt.Errorf("shards %d + %d overflow the shard ID space", first, count)
	}
	out := make([]uint64, count)
	for i := range out {
		out[i] = first + uint64(i)
	}
	return out, nil
}

// formatShardIDs compresses IDs into ranges: [1 2 3 5] -> "1-3,5". The
// input order is kept for runs; it is not sorted.
func formatShardIDs(ids []uint64) string {
	if len(ids) == 0 {
		return "-"
	}
	var b strings.Builder
	for i := 0; i < len(ids); {
		j := i
		for j+1 < len(ids) && ids[j+1] == ids[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		if j == i {
			fmt.Fprintf(&b, "%d", ids[i])
		} else {
			fmt.Fprintf(&b, "%d-%d", ids[i], ids[j])
		}
		i = j + 1
	}
	return b.String()
}

type keyValue struct {
	Key, Value string
}

// parseKeyValues parses "key=value" arguments. Keys are lower-cased and '-'
// becomes '_'; a key given twice, an empty key and an empty value are errors.
func parseKeyValues(args []string) ([]keyValue, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("no settings given; want key=value, e.g. dead_timeout=45s")
	}
	var out []keyValue
	seen := map[string]bool{}
	for _, arg := range args {
		k, v, ok := strings.Cut(arg, "=")
		if !ok {
			return nil, fmt.Errorf("%q is not key=value; e.g. dead_timeout=45s", arg)
		}
		k = strings.ReplaceAll(strings.ToLower(strings.TrimSpace(k)), "-", "_")
		v = strings.TrimSpace(v)
		if k == "" {
			return nil, fmt.Errorf("%q has no key; want key=value", arg)
		}
		if v == "" {
			return nil, fmt.Errorf("%s has no value; want %s=VALUE", k, k)
		}
		if seen[k] {
			return nil, fmt.Errorf("%s is given twice", k)
		}
		seen[k] = true
		out = append(out, keyValue{k, v})
	}
	return out, nil
}

// validateConfigSetting checks the syntax and range of one "config set"
// value with the server's own table (internal/settings). With perShard,
// only the liveness timeouts are allowed.
func validateConfigSetting(key, value string, perShard bool) error {
	return settings.Check(key, value, perShard)
}

// validateAddress checks a host:port address.
func validateAddress(what, addr string) error {
	if addr == "" {
		return fmt.Errorf("%s is required, as host:port", what)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s %q: want host:port, e.g. 127.0.0.1:7101", what, addr)
	}
	if host == "" {
		return fmt.Errorf("%s %q has no host; use an address the other servers can reach, e.g. 127.0.0.1%s", what, addr, addr)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("%s %q: port must be 1-65535", what, addr)
	}
	return nil
}

// splitEndpoints splits and checks the --endpoints list.
func splitEndpoints(s string) ([]string, error) {
	var out []string
	for _, e := range strings.Split(s, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		e = strings.TrimPrefix(e, "http://")
		if err := validateAddress("endpoint", e); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no drummer endpoints given; use --endpoints or DRUMMER_ENDPOINTS, e.g. 127.0.0.1:7101")
	}
	return out, nil
}
