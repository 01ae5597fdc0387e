package planner

import (
	"strconv"
	"strings"

	"github.com/drummerhq/drummer/api/drummerpb"
)

// OrderKind is what an order asks for, as its ID names it. An order's ID
// is "epoch/kind/shard/..." so that a repeat of the same order is
// recognised (agents execute an ID once) and the same change asked again
// at another ConfigChangeID, or by another epoch, is a new order.
type OrderKind int

// Order kinds.
const (
	OrderUnknown OrderKind = iota
	OrderStart
	OrderStop // stop and remove the data
	OrderConfigChange
	OrderTransfer
)

var orderKindNames = [...]string{"unknown", "start", "stop", "cc", "transfer"}

func (k OrderKind) String() string {
	if k < 0 || int(k) >= len(orderKindNames) {
		return "unknown"
	}
	return orderKindNames[k]
}

// orderID names an order of kind k for shardID, with the kind's own parts.
func orderID(epoch uint64, k OrderKind, shardID uint64, parts ...uint64) string {
	b := make([]byte, 0, 48)
	b = strconv.AppendUint(b, epoch, 10)
	b = append(b, '/')
	b = append(b, k.String()...)
	b = append(b, '/')
	b = strconv.AppendUint(b, shardID, 10)
	for _, x := range parts {
		b = append(b, '/')
		b = strconv.AppendUint(b, x, 10)
	}
	return string(b)
}

// OrderKindOf tells the kind of an order from its ID (of any epoch).
func OrderKindOf(id string) OrderKind {
	_, rest, ok := strings.Cut(id, "/")
	if !ok {
		return OrderUnknown
	}
	name, _, _ := strings.Cut(rest, "/")
	for k, n := range orderKindNames {
		if n == name && k != int(OrderUnknown) {
			return OrderKind(k)
		}
	}
	return OrderUnknown
}

func startOrderID(epoch, shardID, replicaID uint64) string {
	return orderID(epoch, OrderStart, shardID, replicaID)
}

func stopOrderID(epoch, shardID, replicaID uint64) string {
	return orderID(epoch, OrderStop, shardID, replicaID)
}

// ccOrderID names a membership change order: one per change and
// ConfigChangeID, so a repeat is recognised and a stale one is new.
func ccOrderID(epoch, shardID uint64, typ drummerpb.ConfigChangeType, replicaID, ccid uint64) string {
	return orderID(epoch, OrderConfigChange, shardID, uint64(typ), replicaID, ccid)
}

// ccOrderOf returns the change type and replica a membership change
// order's ID names.
func ccOrderOf(id string) (typ drummerpb.ConfigChangeType, replicaID uint64, ok bool) {
	parts := strings.Split(id, "/")
	if len(parts) != 6 || parts[1] != OrderConfigChange.String() {
		return 0, 0, false
	}
	t, err1 := strconv.ParseUint(parts[3], 10, 32)
	r, err2 := strconv.ParseUint(parts[4], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return drummerpb.ConfigChangeType(t), r, true
}

func transferOrderID(epoch, shardID, from, to uint64) string {
	return orderID(epoch, OrderTransfer, shardID, from, to)
}
