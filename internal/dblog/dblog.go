// Package dblog routes dragonboat's logging into log/slog.
//
// dragonboat accepts one logger factory per process (a second
// SetLoggerFactory panics) and resolves its package loggers lazily, so the
// factory is installed once and forwards to a destination that can be
// changed later: Route swaps it atomically. This is the only process-wide
// logging state, and it exists because dragonboat's is.
package dblog

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"github.com/lni/dragonboat/v4/logger"
)

var (
	once sync.Once
	dest atomic.Pointer[slog.Logger]
	// Minimum level for dragonboat's chattiest packages; others use min.
	noisy = map[string]bool{"raft": true, "rsm": true, "transport": true, "logdb": true, "dragonboat": true, "grpc": true, "config": true, "pebblekv": true, "LogDB": true, "settings": true}
	min   atomic.Int64
)

// Route sends dragonboat's (and the standard library logger's, which
// pebble uses) output to l. Messages below level are dropped; the engine's
// chatty packages (raft, rsm, transport, logdb, ...), which log every
// election at WARN, log only errors unless level is DEBUG.
func Route(l *slog.Logger, level slog.Level) {
	dest.Store(l)
	min.Store(int64(level))
	once.Do(func() {
		logger.SetLoggerFactory(func(pkg string) logger.ILogger { return &adapter{pkg: pkg} })
	})
	// capnslog (imported by dragonboat) takes over the std logger at init;
	// take it back.
	log.SetOutput(slogWriter{})
	log.SetFlags(0)
}

func current() *slog.Logger {
	if l := dest.Load(); l != nil {
		return l
	}
	return slog.New(slog.NewTextHandler(os.Stderr, nil))
}

type slogWriter struct{}

func (slogWriter) Write(b []byte) (int, error) {
	msg := string(b)
	if n := len(msg); n > 0 && msg[n-1] == '\n' {
		msg = msg[:n-1]
	}
	current().Info(msg, "component", "stdlog")
	return len(b), nil
}

type adapter struct {
	pkg   string
	level atomic.Int64 // dragonboat's own SetLevel, as an slog level; 0 = unset
	set   atomic.Bool
}

func (a *adapter) SetLevel(l logger.LogLevel) {
	var s slog.Level
	switch l {
	case logger.CRITICAL, logger.ERROR:
		s = slog.LevelError
	case logger.WARNING:
		s = slog.LevelWarn
	case logger.INFO:
		s = slog.LevelInfo
	default:
		s = slog.LevelDebug
	}
	a.level.Store(int64(s))
	a.set.Store(true)
}

func (a *adapter) enabled(l slog.Level) bool {
	floor := slog.Level(min.Load())
	if noisy[a.pkg] && floor > slog.LevelDebug && floor < slog.LevelError {
		floor = slog.LevelError
	}
	if a.set.Load() && slog.Level(a.level.Load()) > floor {
		floor = slog.Level(a.level.Load())
	}
	return l >= floor
}

func (a *adapter) log(l slog.Level, format string, args []any) {
	if !a.enabled(l) {
		return
	}
	current().Log(context.Background(), l, fmt.Sprintf(format, args...), "component", "dragonboat", "pkg", a.pkg)
}

func (a *adapter) Debugf(format string, args ...any)   { a.log(slog.LevelDebug, format, args) }
func (a *adapter) Infof(format string, args ...any)    { a.log(slog.LevelInfo, format, args) }
func (a *adapter) Warningf(format string, args ...any) { a.log(slog.LevelWarn, format, args) }
func (a *adapter) Errorf(format string, args ...any)   { a.log(slog.LevelError, format, args) }

// Panicf logs and panics: dragonboat relies on it not returning.
func (a *adapter) Panicf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	current().Error(msg, "component", "dragonboat", "pkg", a.pkg)
	panic(msg)
}
