// Package itest runs whole deployments in one process (devcluster: three
// drummer servers and nodehost agents on loopback) to test self-healing
// behaviour quickly, and checks that stopping them leaks no goroutine.
package itest

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
