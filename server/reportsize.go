package server

import "github.com/drummerhq/drummer/api/drummerpb"

// admitResults bounds the order results taken from one report: past max,
// the report is kept (the host is heard from, its replicas recorded) with
// the first max results, and the number left out is returned, for the
// agent to send again (ReportResponse.results_left). Refusing the whole
// report instead would make a live host with a backlog of results look
// dead. It is self-contained on purpose: it runs before validation and
// touches nothing but r.
func admitResults(r *drummerpb.ReportRequest, max int) (left int) {
	if len(r.Results) <= max {
		return 0
	}
	left = len(r.Results) - max
	r.Results = r.Results[:max:max]
	return left
}
