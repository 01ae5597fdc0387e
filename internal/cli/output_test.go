package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestMainEntryPoint(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := Main([]string{"version"}, strings.NewReader(""), &out, &errOut, nil); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "drummercmd version") {
		t.Errorf("%q", out.String())
	}
	out.Reset()
	if code := Main([]string{"nope"}, nil, &out, &errOut, func(string) string { return "" }); code != ExitUsage {
		t.Errorf("exit %d", code)
	}
}

func TestRelativeTimes(t *testing.T) {
	now := testNow
	at := func(d time.Duration) int64 { return ms(now.Add(d)) }
	for _, tc := range []struct {
		got, want string
	}{
		{ago(now, 0), "never"},
		{ago(now, at(-500*time.Millisecond)), "0s ago"},
		{ago(now, at(-59*time.Second)), "59s ago"},
		{ago(now, at(-(5*time.Minute + 3*time.Second))), "5m3s ago"},
		{ago(now, at(-(3*time.Hour + 20*time.Minute + 9*time.Second))), "3h20m ago"},
		{ago(now, at(-72*time.Hour)), "3d ago"},
		{ago(now, at(10*time.Second)), "in 10s"},
		{until(now, 0), "-"},
		{until(now, at(42*time.Second)), "in 42s"},
		{until(now, at(-2*time.Minute)), "2m ago"},
		{clock(0), "-"},
		{clock(at(0)), "2026-11-24 12:00:00 UTC"},
		{shortID("short"), "short"},
		{shortID(hostA), "3f2a9c1e"},
		{replicaAt(0, ""), "-"},
		{replicaAt(4, ""), "4"},
		{replicaAt(0, hostB), "@3f2b7d00"},
		{formatLabels(nil), ""},
		{formatLabels(map[string]string{"b": "2", "a": "1"}), "a=1,b=2"},
		{formatHealthCounts(map[string]uint64{"weird": 1, "pending": 2, "healthy": 0}), "2 pending, 1 weird"},
		{*rfc3339(at(1500 * time.Millisecond)), "2026-11-24T12:00:01.500Z"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	if rfc3339(0) != nil {
		t.Error("rfc3339(0) must be nil (JSON null)")
	}
}

func TestTableDashesAndTabs(t *testing.T) {
	var b bytes.Buffer
	tb := newTable("a col", "b")
	tb.add("", "x\ty\nz")
	if err := tb.write(&b); err != nil {
		t.Fatal(err)
	}
	if b.String() != "A COL  B\n-      x y z\n" {
		t.Errorf("%q", b.String())
	}
}
