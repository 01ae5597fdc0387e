package pki

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drummerhq/drummer/internal/auth"
)

func TestCertsDir(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	files, err := CreateCA(dir, 0, false, now)
	if err != nil || len(files) != 4 {
		t.Fatalf("create-ca: %v %v", files, err)
	}
	for _, k := range []string{ClientCAKeyFile, ServerCAKeyFile, NodeCAKeyFile} {
		st, err := os.Stat(filepath.Join(dir, k))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", k, st.Mode(), err)
		}
	}
	if _, err := CreateCA(dir, 0, false, now); err == nil || !strings.Contains(err.Error(), "--overwrite") {
		t.Errorf("create-ca over an existing CA: %v", err)
	}
	for name, req := range map[string]Request{
		"nodehost without raft address": {Name: "n1", Role: auth.RoleNodehost},
		"server without hosts":          {Name: "s1", Role: auth.RoleServer},
		"client with hosts":             {Name: "c1", Role: auth.RoleViewer, Hosts: []string{"127.0.0.1"}},
		"reserved name":                 {Name: "ca-server", Role: auth.RoleAdmin},
		"bad name":                      {Name: "a/b", Role: auth.RoleAdmin},
		"bad raft address":              {Name: "n1", Role: auth.RoleNodehost, RaftAddress: "nohost"},
	} {
		req.Dir = dir
		if _, err := Create(req); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := Create(Request{Dir: dir, Name: "n1", Role: auth.RoleNodehost, RaftAddress: "127.0.0.1:7201"}); err != nil {
		t.Fatal(err)
	}
	src, err := auth.NewSource(auth.SourceOptions{Files: auth.Files{CAFile: filepath.Join(dir, CACertFile),
		CertFile: filepath.Join(dir, "n1.crt"), KeyFile: filepath.Join(dir, "n1.key")}, RaftAddress: "127.0.0.1:7201"})
	if err != nil {
		t.Fatal(err)
	}
	if id := src.Identity(); id.Role != auth.RoleNodehost || !id.BoundTo("127.0.0.1:7201") || !id.ValidFor("127.0.0.1") {
		t.Fatalf("identity %+v", id)
	}
	if st, _ := os.Stat(filepath.Join(dir, "n1.key")); st.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", st.Mode())
	}
	// Without the server CA's key, no server certificate can be made.
	os.Remove(filepath.Join(dir, ServerCAKeyFile))
	if _, err := Create(Request{Dir: dir, Name: "s1", Role: auth.RoleServer, Hosts: []string{"127.0.0.1"}}); err == nil || !strings.Contains(err.Error(), "server CA's key") {
		t.Errorf("server certificate without the CA key: %v", err)
	}
}
