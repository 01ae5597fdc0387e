package fleet

import (
	"fmt"
	"syscall"
)

// raiseNoFile raises this process's open-file limit to what hosts need (the
// drummer processes inherit it): every host holds a connection to every
// server, and each server one per host.
func raiseNoFile(hosts int) error {
	need := uint64(4*hosts + 4096)
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return err
	}
	if l.Cur >= need {
		return nil
	}
	want := l
	want.Cur = need
	if want.Max < need {
		want.Max = need // allowed for root (CAP_SYS_RESOURCE)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		if l.Max > l.Cur {
			l.Cur = l.Max
			_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
		}
		return fmt.Errorf("%d hosts need about %d open files, the limit is %d (hard %d): %w; raise it (ulimit -n, or run as root)", hosts, need, l.Cur, l.Max, err)
	}
	return nil
}
