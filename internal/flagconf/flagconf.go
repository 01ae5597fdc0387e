// Package flagconf lets a YAML file set the same keys as a command's flags.
//
// Keys are flag names ("raft-address"; "raft_address" is accepted too).
// Flags given on the command line win over the file; unknown keys, and
// values a flag would refuse, are errors that name the file and the key.
package flagconf

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// Apply reads path and sets every flag of fs that the file names and the
// command line did not set. Flags named in skip (e.g. "config") cannot be
// set from the file.
func Apply(fs *pflag.FlagSet, path string, skip ...string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var raw map[string]any
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&raw); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		name := strings.ReplaceAll(k, "_", "-")
		if slices.Contains(skip, name) {
			return fmt.Errorf("config file %s: %q cannot be set in a config file", path, k)
		}
		f := fs.Lookup(name)
		if f == nil {
			return fmt.Errorf("config file %s: unknown key %q (keys are the command's flag names, e.g. raft-address)", path, k)
		}
		if f.Changed {
			continue
		}
		val, err := flagValue(raw[k])
		if err != nil {
			return fmt.Errorf("config file %s: key %q: %w", path, k, err)
		}
		if err := fs.Set(name, val); err != nil {
			return fmt.Errorf("config file %s: key %q: %w", path, k, err)
		}
	}
	return nil
}

// flagValue renders a YAML value the way the flag parser expects it:
// scalars as text, lists as comma lists, maps as k=v comma lists.
func flagValue(v any) (string, error) {
	switch t := v.(type) {
	case nil:
		return "", nil
	case string:
		return t, nil
	case bool, int, int64, uint64, float64:
		return fmt.Sprint(t), nil
	case []any:
		parts := make([]string, 0, len(t))
		for _, e := range t {
			s, err := flagValue(e)
			if err != nil {
				return "", err
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ","), nil
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		parts := make([]string, 0, len(t))
		for _, k := range keys {
			s, err := flagValue(t[k])
			if err != nil {
				return "", err
			}
			parts = append(parts, k+"="+s)
		}
		return strings.Join(parts, ","), nil
	}
	return "", fmt.Errorf("unsupported value %v", v)
}
