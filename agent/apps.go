package agent

import (
	"fmt"
	"slices"
	"sync"

	sm "github.com/lni/dragonboat/v4/statemachine"

	"github.com/drummerhq/drummer/internal/db"
	"github.com/drummerhq/drummer/kv"
)

// App is an application: a named state machine a shard can run. Set
// exactly one of the three factories, matching the dragonboat state machine
// type.
type App struct {
	Name       string
	Regular    sm.CreateStateMachineFunc
	Concurrent sm.CreateConcurrentStateMachineFunc
	OnDisk     sm.CreateOnDiskStateMachineFunc
}

// Registry maps application names to state machine factories. It is safe
// for concurrent use.
type Registry struct {
	mu   sync.RWMutex
	apps map[string]App
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{apps: map[string]App{}} }

// DefaultRegistry returns a registry holding the built-in "kv" app.
func DefaultRegistry() *Registry {
	r := NewRegistry()
	if err := r.Register(App{Name: kv.AppName, Regular: kv.NewStateMachine}); err != nil {
		panic(err) // the built-in registration is static
	}
	return r
}

// Register adds an application. Names are [A-Za-z0-9._-], at most 128
// characters, and unique.
func (r *Registry) Register(a App) error {
	if !db.ValidName(a.Name) {
		return fmt.Errorf("invalid app name %q (use letters, digits, '.', '_', '-')", a.Name)
	}
	n := 0
	for _, set := range []bool{a.Regular != nil, a.Concurrent != nil, a.OnDisk != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("app %q: set exactly one of Regular, Concurrent, OnDisk", a.Name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.apps[a.Name]; dup {
		return fmt.Errorf("app %q is already registered", a.Name)
	}
	r.apps[a.Name] = a
	return nil
}

// Get returns a registered app.
func (r *Registry) Get(name string) (App, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	a, ok := r.apps[name]
	return a, ok
}

// Names lists the registered apps, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.apps))
	for n := range r.apps {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}
