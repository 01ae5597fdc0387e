package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
)

// progress prints a status line of a long-running command. On a terminal
// the line is rewritten in place ("\r" + line + clear to end of line);
// otherwise a new line is printed each time the status changes, so that logs
// of scripts stay readable.
type progress struct {
	w      io.Writer
	tty    bool
	last   string
	active bool // a TTY line is open (no newline printed after it yet)
}

// newProgress returns the progress printer of a command. Progress goes to
// stdout with table output; with -o json stdout carries only the final
// JSON document, so progress goes to stderr.
func (a *app) newProgress() *progress {
	w := a.stdout
	if a.jsonOutput() {
		w = a.stderr
	}
	return &progress{w: w, tty: a.isTerminal(w)}
}

func (p *progress) update(line string) {
	if line == p.last {
		return
	}
	p.last = line
	if p.tty {
		fmt.Fprintf(p.w, "\r%s\x1b[K", line)
		p.active = true
		return
	}
	fmt.Fprintln(p.w, line)
}

// done ends an open TTY line so that what follows starts on a new line.
func (p *progress) done() {
	if p.active {
		fmt.Fprintln(p.w)
		p.active = false
	}
}

// pollFunc checks a condition once. It returns whether the condition holds
// and a status line for the progress printer.
type pollFunc func(ctx context.Context) (ok bool, line string, err error)

// errPollTimeout is returned by poll when the overall timeout expires.
type errPollTimeout struct {
	timeout time.Duration
	last    string
}

func (e *errPollTimeout) Error() string {
	return fmt.Sprintf("timed out after %s: %s", fmtDuration(e.timeout), e.last)
}

// poll calls check every interval until it reports ok, fails, or timeout
// expires (*errPollTimeout). Each call is bounded by --command-timeout.
// Transient errors (no leader, timeouts: a failover in progress) are shown
// on the progress line and polling goes on.
func (a *app) poll(cmd *cobra.Command, p *progress, interval, timeout time.Duration, check pollFunc) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	defer p.done()
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	last := ""
	for {
		callCtx, callCancel := context.WithTimeout(ctx, a.commandTimeout)
		ok, line, err := check(callCtx)
		callCancel()
		switch {
		case err == nil:
			last = line
			p.update(line)
			if ok {
				return nil
			}
		case ctx.Err() != nil:
			// The overall timeout ended the call.
		case exitCode(err) == ExitUnavailable:
			msg := fmt.Sprintf("waiting for the drummer leader (%v)", oneLine(err))
			if last != "" {
				msg = last + " [" + msg + "]"
			}
			p.update(msg)
		default:
			return err
		}
		if ctx.Err() != nil {
			if last == "" {
				last = "no answer from the drummer leader"
			}
			return &errPollTimeout{timeout: timeout, last: last}
		}
		timer.Reset(interval)
		select {
		case <-ctx.Done():
			if last == "" {
				last = "no answer from the drummer leader"
			}
			return &errPollTimeout{timeout: timeout, last: last}
		case <-timer.C:
		}
	}
}

// oneLine shortens an error for a progress line.
func oneLine(err error) string {
	s := err.Error()
	if st, ok := grpcStatus(err); ok {
		s = st.Message()
	}
	const maxLen = 120
	if len(s) > maxLen {
		s = s[:maxLen] + "..."
	}
	return s
}
