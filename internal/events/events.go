// Package events adapts dragonboat's Raft and system event listeners to a
// single callback. dragonboat runs every listener callback on one shared
// goroutine and blocks its engine workers while a system event is being
// delivered, so the callback must only record the event and return.
package events

import (
	"github.com/lni/dragonboat/v4/raftio"
)

// Kind is the type of an event.
type Kind int

// Event kinds.
const (
	LeaderUpdated Kind = iota + 1
	NodeReady
	NodeUnloaded
	NodeDeleted
	MembershipChanged
	ShuttingDown
)

// Event is one Raft or system event about a replica.
type Event struct {
	Kind      Kind
	ShardID   uint64
	ReplicaID uint64
	LeaderID  uint64
	Term      uint64
}

// Listener implements raftio.IRaftEventListener and
// raftio.ISystemEventListener by calling fn, which must not block.
type Listener struct {
	fn func(Event)
}

var (
	_ raftio.IRaftEventListener   = (*Listener)(nil)
	_ raftio.ISystemEventListener = (*Listener)(nil)
)

// New returns a listener calling fn for every event of interest.
func New(fn func(Event)) *Listener { return &Listener{fn: fn} }

func (l *Listener) node(k Kind, i raftio.NodeInfo) {
	l.fn(Event{Kind: k, ShardID: i.ShardID, ReplicaID: i.ReplicaID})
}

// LeaderUpdated implements raftio.IRaftEventListener.
func (l *Listener) LeaderUpdated(i raftio.LeaderInfo) {
	l.fn(Event{Kind: LeaderUpdated, ShardID: i.ShardID, ReplicaID: i.ReplicaID, LeaderID: i.LeaderID, Term: i.Term})
}

// NodeHostShuttingDown implements raftio.ISystemEventListener.
func (l *Listener) NodeHostShuttingDown() { l.fn(Event{Kind: ShuttingDown}) }

// NodeUnloaded implements raftio.ISystemEventListener.
func (l *Listener) NodeUnloaded(i raftio.NodeInfo) { l.node(NodeUnloaded, i) }

// NodeDeleted implements raftio.ISystemEventListener.
func (l *Listener) NodeDeleted(i raftio.NodeInfo) { l.node(NodeDeleted, i) }

// NodeReady implements raftio.ISystemEventListener.
func (l *Listener) NodeReady(i raftio.NodeInfo) { l.node(NodeReady, i) }

// MembershipChanged implements raftio.ISystemEventListener.
func (l *Listener) MembershipChanged(i raftio.NodeInfo) { l.node(MembershipChanged, i) }

// The remaining system events are of no interest.

// ConnectionEstablished implements raftio.ISystemEventListener.
func (l *Listener) ConnectionEstablished(raftio.ConnectionInfo) {}

// ConnectionFailed implements raftio.ISystemEventListener.
func (l *Listener) ConnectionFailed(raftio.ConnectionInfo) {}

// SendSnapshotStarted implements raftio.ISystemEventListener.
func (l *Listener) SendSnapshotStarted(raftio.SnapshotInfo) {}

// SendSnapshotCompleted implements raftio.ISystemEventListener.
func (l *Listener) SendSnapshotCompleted(raftio.SnapshotInfo) {}

// SendSnapshotAborted implements raftio.ISystemEventListener.
func (l *Listener) SendSnapshotAborted(raftio.SnapshotInfo) {}

// SnapshotReceived implements raftio.ISystemEventListener.
func (l *Listener) SnapshotReceived(raftio.SnapshotInfo) {}

// SnapshotRecovered implements raftio.ISystemEventListener.
func (l *Listener) SnapshotRecovered(raftio.SnapshotInfo) {}

// SnapshotCreated implements raftio.ISystemEventListener.
func (l *Listener) SnapshotCreated(raftio.SnapshotInfo) {}

// SnapshotCompacted implements raftio.ISystemEventListener.
func (l *Listener) SnapshotCompacted(raftio.SnapshotInfo) {}

// LogCompacted implements raftio.ISystemEventListener.
func (l *Listener) LogCompacted(raftio.EntryInfo) {}

// LogDBCompacted implements raftio.ISystemEventListener.
func (l *Listener) LogDBCompacted(raftio.EntryInfo) {}
