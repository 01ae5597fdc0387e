package chaos

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Op kinds of the kv workload.
const (
	OpGet    = "get"
	OpPut    = "put"
	OpCAS    = "cas"
	OpDelete = "delete"
)

// Outcomes of a recorded operation.
const (
	// OutcomeOK: the operation completed and its result is known.
	OutcomeOK = "ok"
	// OutcomeUnknown: a write whose outcome is unknown (timeout, lost
	// connection): it may or may not have been applied, at any time after
	// its invocation (and, with a session, before the session's next
	// applied proposal returned).
	OutcomeUnknown = "unknown"
	// OutcomeFailed: the operation certainly had no effect (a failed read,
	// a rejected write); it is not checked.
	OutcomeFailed = "failed"
)

// Op is one recorded client operation on one key.
type Op struct {
	ID     int    `json:"id"`
	Worker int    `json:"worker"`
	Client int    `json:"client"`
	Shard  uint64 `json:"shard"`
	Key    string `json:"key"`
	Kind   string `json:"kind"`
	// Value written by put and cas (unless CASDelete).
	Value string `json:"value,omitempty"`
	// Expect and ExpectAbsent are the cas condition.
	Expect       string `json:"expect,omitempty"`
	ExpectAbsent bool   `json:"expect_absent,omitempty"`
	CASDelete    bool   `json:"cas_delete,omitempty"`
	// Call and Return are nanoseconds since the start of the history;
	// Return is math.MaxInt64 for an unknown outcome not bounded later.
	Call    int64  `json:"call"`
	Return  int64  `json:"return"`
	Outcome string `json:"outcome"`
	// Results: get found the key (Found, Result); cas swapped (OK) or saw
	// Found/Result; delete removed an existing key (OK).
	Found  bool   `json:"found,omitempty"`
	Result string `json:"result,omitempty"`
	OK     bool   `json:"ok,omitempty"`
	Err    string `json:"err,omitempty"`
}

// kvState is the model state of one key.
type kvState struct {
	Exists bool
	Value  string
}

// kvModel is a nondeterministic model of one kv key: an operation with an
// unknown outcome may or may not have taken effect.
var kvModel = (&porcupine.NondeterministicModel{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(*Op).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() []any { return []any{kvState{}} },
	Step: func(state, input, _ any) []any {
		return step(state.(kvState), input.(*Op))
	},
	Equal: func(a, b any) bool { return a.(kvState) == b.(kvState) },
	Hash: func(s any) uint64 {
		st := s.(kvState)
		h := fnv.New64a()
		if st.Exists {
			h.Write([]byte{1})
		}
		h.Write([]byte(st.Value))
		return h.Sum64()
	},
	DescribeOperation: func(input, _ any) string { return describe(input.(*Op)) },
	DescribeState: func(s any) string {
		st := s.(kvState)
		if !st.Exists {
			return "(absent)"
		}
		return fmt.Sprintf("%q", st.Value)
	},
}).ToModel()

// step returns the states an operation can lead to from s; none if its
// observed result is impossible in s.
func step(s kvState, op *Op) []any {
	unknown := op.Outcome == OutcomeUnknown
	switch op.Kind {
	case OpGet:
		if op.Found == s.Exists && (!s.Exists || op.Result == s.Value) {
			return []any{s}
		}
		return nil
	case OpPut:
		n := kvState{Exists: true, Value: op.Value}
		if unknown {
			return []any{s, n}
		}
		return []any{n}
	case OpDelete:
		n := kvState{}
		if unknown {
			return []any{s, n}
		}
		if op.OK != s.Exists {
			return nil
		}
		return []any{n}
	case OpCAS:
		cond := !s.Exists
		if !op.ExpectAbsent {
			cond = s.Exists && s.Value == op.Expect
		}
		n := kvState{Exists: true, Value: op.Value}
		if op.CASDelete {
			n = kvState{}
		}
		switch {
		case unknown && cond:
			return []any{s, n}
		case unknown:
			return []any{s}
		case op.OK && cond:
			return []any{n}
		case !op.OK && !cond && op.Found == s.Exists && (!s.Exists || op.Result == s.Value):
			return []any{s}
		}
		return nil
	}
	return nil
}

func describe(op *Op) string {
	res := ""
	switch {
	case op.Outcome == OutcomeUnknown:
		res = "?"
	case op.Kind == OpGet || (op.Kind == OpCAS && !op.OK):
		if op.Found {
			res = fmt.Sprintf("%q", op.Result)
		} else {
			res = "absent"
		}
		if op.Kind == OpCAS {
			res = "mismatch " + res
		}
	case op.Kind == OpDelete && !op.OK:
		res = "not found"
	default:
		res = "ok"
	}
	switch op.Kind {
	case OpGet:
		return fmt.Sprintf("get() -> %s", res)
	case OpPut:
		return fmt.Sprintf("put(%q) -> %s", op.Value, res)
	case OpDelete:
		return fmt.Sprintf("delete() -> %s", res)
	}
	cond := fmt.Sprintf("%q", op.Expect)
	if op.ExpectAbsent {
		cond = "absent"
	}
	to := fmt.Sprintf("%q", op.Value)
	if op.CASDelete {
		to = "delete"
	}
	return fmt.Sprintf("cas(%s -> %s) -> %s", cond, to, res)
}

// LinearizabilityResult is the outcome of checking a history.
type LinearizabilityResult struct {
	Ops, Keys, Unknown, UnboundedUnknown int
	// Illegal keys (not linearizable), and keys whose check timed out.
	Illegal, TimedOut []string
	// Visualizations written for (up to 5) illegal keys.
	Visualizations []string
	// Example is the shortest illegal key's history, as text.
	Example     string
	Duration    time.Duration
	exampleRank int
}

const maxVisualizations = 5

// explain lists a key's operations in invocation order.
func explain(key string, h []porcupine.Operation) string {
	ops := slices.Clone(h)
	slices.SortFunc(ops, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
	var b strings.Builder
	fmt.Fprintf(&b, "key %q: %d operations (times in ms since the start of the workload)\n", key, len(ops))
	for _, o := range ops {
		op := o.Input.(*Op)
		ret := "   (unknown)"
		if op.Return != math.MaxInt64 {
			ret = fmt.Sprintf("%12.3f", float64(op.Return)/1e6)
		}
		fmt.Fprintf(&b, "  [%12.3f, %s] worker %2d shard %3d %s\n", float64(op.Call)/1e6, ret, op.Worker, op.Shard, describe(op))
	}
	return b.String()
}

// OK reports whether every key's history is linearizable.
func (r LinearizabilityResult) OK() bool { return len(r.Illegal) == 0 && len(r.TimedOut) == 0 }

func (r LinearizabilityResult) String() string {
	s := fmt.Sprintf("%d operations on %d keys (%d with unknown outcome, %d of them unbounded) checked in %s: ",
		r.Ops, r.Keys, r.Unknown, r.UnboundedUnknown, r.Duration.Round(time.Millisecond))
	switch {
	case r.OK():
		return s + "linearizable"
	case len(r.Illegal) > 0:
		s += fmt.Sprintf("NOT linearizable on %d keys: %s", len(r.Illegal), strings.Join(first(r.Illegal, 10), ", "))
	}
	if len(r.TimedOut) > 0 {
		s += fmt.Sprintf("; check timed out on %d keys: %s", len(r.TimedOut), strings.Join(first(r.TimedOut, 10), ", "))
	}
	return s
}

func first[T any](s []T, n int) []T {
	if len(s) > n {
		return s[:n]
	}
	return s
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// CheckLinearizable checks ops (failed ones are skipped) per key with
// porcupine, each key within perKey. For every illegal key it writes
// porcupine's HTML visualization into dir (if dir is not empty).
func CheckLinearizable(ops []Op, perKey time.Duration, dir string) LinearizabilityResult {
	start := time.Now()
	var res LinearizabilityResult
	byKey := map[string][]porcupine.Operation{}
	for i := range ops {
		op := &ops[i]
		if op.Outcome == OutcomeFailed {
			continue
		}
		res.Ops++
		if op.Outcome == OutcomeUnknown {
			res.Unknown++
			if op.Return == math.MaxInt64 {
				res.UnboundedUnknown++
			}
		}
		byKey[op.Key] = append(byKey[op.Key], porcupine.Operation{
			ClientId: op.Client, Input: op, Output: op, Call: op.Call, Return: op.Return,
		})
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	res.Keys = len(keys)
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2)
	for _, k := range keys {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			h := byKey[k]
			// Renumber clients densely for the visualization.
			ids := map[int]int{}
			for i := range h {
				id, ok := ids[h[i].ClientId]
				if !ok {
					id = len(ids)
					ids[h[i].ClientId] = id
				}
				h[i].ClientId = id
			}
			r, info := porcupine.CheckOperationsVerbose(kvModel, h, perKey)
			mu.Lock()
			defer mu.Unlock()
			switch r {
			case porcupine.Illegal:
				res.Illegal = append(res.Illegal, k)
				if dir != "" && len(res.Visualizations) < maxVisualizations {
					base := filepath.Join(dir, "linearizability-"+unsafeName.ReplaceAllString(k, "_"))
					if err := porcupine.VisualizePath(kvModel, info, base+".html"); err == nil {
						res.Visualizations = append(res.Visualizations, base+".html")
					} else {
						fmt.Fprintf(os.Stderr, "chaos: visualizing %s: %v\n", k, err)
					}
					_ = os.WriteFile(base+".txt", []byte(explain(k, h)), 0o644)
				}
				// The example: the shortest illegal history with at least
				// three operations (a stale read needs a write, another
				// write and a read), else the shortest one.
				rank := len(h)
				if rank < 3 {
					rank += 1 << 30
				}
				if res.Example == "" || rank < res.exampleRank {
					res.Example, res.exampleRank = explain(k, h), rank
				}
			case porcupine.Unknown:
				res.TimedOut = append(res.TimedOut, k)
			}
		}()
	}
	wg.Wait()
	slices.Sort(res.Illegal)
	slices.Sort(res.TimedOut)
	slices.Sort(res.Visualizations)
	res.Duration = time.Since(start)
	return res
}
