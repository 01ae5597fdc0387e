package metrics

import (
	"bytes"
	"log/slog"
	"net/http"

	"github.com/lni/dragonboat/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// Handler serves reg's metrics followed by dragonboat's own (its
// VictoriaMetrics set, process-wide) in the Prometheus text format.
func Handler(reg prometheus.Gatherer, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	format := expfmt.NewFormat(expfmt.TypeTextPlain)
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mfs, err := reg.Gather()
		if err != nil {
			// A partial gather is still worth serving; say what failed.
			log.Warn("gathering metrics", "err", err)
		}
		var buf bytes.Buffer
		enc := expfmt.NewEncoder(&buf, format)
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				http.Error(w, "encoding metrics: "+err.Error(), http.StatusInternalServerError)
				return
			}
		}
		dragonboat.WriteHealthMetrics(&buf)
		w.Header().Set("Content-Type", string(format))
		_, _ = w.Write(buf.Bytes())
	})
}
