package fleet

import (
	"fmt"
	"syscall"
)

// raiseNoFile raises this process's open-file limit to what conns
// connections to each server need (the drummer processes inherit it): the
// bench holds conns connections to every server, and each server conns.
func raiseNoFile(conns int) error {
	need := uint64(4*conns + 4096)
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
		return fmt.Errorf("%d connections per server need about %d open files, the limit is %d (hard %d): %w; raise it (ulimit -n, or run as root), or share connections (--insecure --hosts-per-conn N)", conns, need, l.Cur, l.Max, err)
	}
	return nil
}
