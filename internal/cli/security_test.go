package cli

import (
	"testing"
)

func TestSecurityFlags(t *testing.T) {
	addr := serve(t, newFake())
	none := map[string]string{EnvInsecure: ""}
	r := runCLI(t, runOpts{env: none}, "--endpoints", addr, "info")
	r.wantCode(t, ExitUsage)
	wantContains(t, "stderr", r.stderr, "no certificates given", "drummer cert create-ca", "--insecure")

	r = runCLI(t, runOpts{env: none}, "--endpoints", addr, "--insecure", "--ca-file", "ca.crt", "--cert-file", "a.crt", "--key-file", "a.key", "info")
	r.wantCode(t, ExitUsage)
	wantContains(t, "stderr", r.stderr, "exclusive")

	r = runCLI(t, runOpts{env: map[string]string{EnvCAFile: "ca.crt"}}, "--endpoints", addr, "info")
	r.wantCode(t, ExitUsage) // DRUMMER_INSECURE=true (the test default) with a CA file
	r = runCLI(t, runOpts{env: map[string]string{EnvInsecure: "", EnvCAFile: "ca.crt"}}, "--endpoints", addr, "info")
	r.wantCode(t, ExitUsage)
	wantContains(t, "stderr", r.stderr, "--cert-file", "--key-file")

	r = runCLI(t, runOpts{env: map[string]string{EnvInsecure: "maybe"}}, "--endpoints", addr, "info")
	r.wantCode(t, ExitUsage)
	wantContains(t, "stderr", r.stderr, EnvInsecure)

	r = runCLI(t, runOpts{env: map[string]string{EnvInsecure: "", EnvCAFile: "/nonexistent/ca.crt", EnvCertFile: "/nonexistent/a.crt", EnvKeyFile: "/nonexistent/a.key"}}, "--endpoints", addr, "info")
	r.wantCode(t, ExitUsage)
	wantContains(t, "stderr", r.stderr, "/nonexistent/ca.crt")

	r = runCLI(t, runOpts{env: map[string]string{EnvInsecure: "1"}}, "--endpoints", addr, "info")
	r.wantCode(t, 0)
	// version needs no connection, hence no certificates.
	runCLI(t, runOpts{env: none}, "version").wantCode(t, 0)
}
