// Package logging builds the programs' slog logger from --log-format and
// --log-level and routes dragonboat's and the standard logger's output into
// it.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/drummerhq/drummer/internal/dblog"
)

// New returns a logger writing to w. format is "text" or "json"; level is
// debug, info, warn or error.
func New(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	switch strings.ToLower(level) {
	case "debug":
		lv = slog.LevelDebug
	case "info", "":
		lv = slog.LevelInfo
	case "warn", "warning":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler
	switch strings.ToLower(format) {
	case "text", "":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
	l := slog.New(h)
	slog.SetDefault(l)
	dblog.Route(l, lv)
	return l, nil
}
