package db

import (
	"fmt"
	"net"
	"strconv"
)

// ValidName reports whether s is a valid application name, region, or label
// key: 1 to MaxNameLen characters from [A-Za-z0-9._-].
func ValidName(s string) bool {
	if s == "" || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// ValidLabelValue reports whether s is a valid label value: up to MaxNameLen
// characters from [A-Za-z0-9._:/-] (may be empty).
func ValidLabelValue(s string) bool {
	if len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '.', c == '_', c == '-', c == ':', c == '/':
		default:
			return false
		}
	}
	return true
}

// ValidateAddress checks a "host:port" address as dragonboat expects it.
func ValidateAddress(addr string) error {
	if addr == "" {
		return fmt.Errorf("empty address, want host:port")
	}
	if len(addr) > 256 {
		return fmt.Errorf("address %.20q... is too long", addr)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: want host:port: %v", addr, err)
	}
	if host == "" {
		return fmt.Errorf("address %q has no host; use an address other hosts can reach, e.g. 127.0.0.1%s", addr, addr)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return fmt.Errorf("address %q: port must be 1-65535", addr)
	}
	return nil
}

// ValidateRegions checks a region placement map; want is the replica count
// it must add up to (0: any total up to MaxReplicas).
func ValidateRegions(regions map[string]uint32, want uint32) error {
	if len(regions) == 0 {
		return nil
	}
	var total uint32
	for r, n := range regions {
		if !ValidName(r) {
			return fmt.Errorf("invalid region name %q (use letters, digits, '.', '_', '-')", r)
		}
		if n == 0 || n > MaxReplicas {
			return fmt.Errorf("region %q: replica count %d out of range 1-%d", r, n, MaxReplicas)
		}
		total += n
	}
	if total > MaxReplicas {
		return fmt.Errorf("regions ask for %d replicas, more than the maximum %d", total, MaxReplicas)
	}
	if want != 0 && total != want {
		return fmt.Errorf("regions add up to %d replicas but the shard has %d", total, want)
	}
	return nil
}

// ValidateLabels checks a host's labels.
func ValidateLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return fmt.Errorf("%d labels, at most %d allowed", len(labels), MaxLabels)
	}
	for k, v := range labels {
		if !ValidName(k) {
			return fmt.Errorf("invalid label key %q (use letters, digits, '.', '_', '-')", k)
		}
		if !ValidLabelValue(v) {
			return fmt.Errorf("invalid value %q for label %q", v, k)
		}
	}
	return nil
}
