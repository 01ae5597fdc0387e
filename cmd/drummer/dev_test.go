package main

import (
	"bytes"
	"strings"
	"testing"
)

// The control commands check their input locally and, with no dev
// running, exit 3 with a message saying how to start one.
func TestDevControlWithoutDev(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"dev", "kill"}, 2, "give one host number"},
		{[]string{"dev", "kill", "1", "2"}, 2, "give one host number"},
		{[]string{"dev", "pause", "x"}, 2, "want a host number"},
		{[]string{"dev", "restart", "100"}, 2, "want a host number"},
		{[]string{"dev", "add", "3"}, 2, "takes no arguments"},
		{[]string{"dev", "kill", "2", "--force"}, 2, "unknown flag"},
		{[]string{"dev", "status", "-o", "yaml"}, 2, "want table or json"},
		{[]string{"dev", "status"}, 3, "start one with 'drummer dev'"},
		{[]string{"dev", "kill", "2", "--data-dir", t.TempDir()}, 3, "no running drummer dev"},
		{[]string{"dev", "--nodehosts", "0"}, 2, "--nodehosts 0"},
		{[]string{"dev", "--base-port", "65500"}, 2, "--base-port"},
		{[]string{"dev", "nodehost", "--data-dir", t.TempDir()}, 2, "--raft-address"},
	} {
		var out, errb bytes.Buffer
		code := run(c.args, &out, &errb)
		if code != c.code || !strings.Contains(errb.String(), c.msg) {
			t.Errorf("drummer %s: exit %d, stderr %q; want exit %d mentioning %q", strings.Join(c.args, " "), code, errb.String(), c.code, c.msg)
		}
	}
}
