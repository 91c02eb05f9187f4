package app

import (
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/ampstream/ampstream/internal/config"
	"github.com/ampstream/ampstream/internal/consume"
	"github.com/ampstream/ampstream/internal/group"
	"github.com/ampstream/ampstream/internal/grouplag"
	"github.com/ampstream/ampstream/internal/metrics"
)

// newGroupLag builds the exporter of the group's lag, on the app's transport
// (TLS, SASL). It reads the group from the brokers, so it reports partitions
// no replica owns.
func newGroupLag(k config.Kafka, tr *kafka.Transport, c *consume.Consumer, m *metrics.Metrics, log zerolog.Logger) *grouplag.Exporter {
	return grouplag.New(grouplag.Options{
		Client:        &kafka.Client{Addr: kafka.TCP(k.Brokers...), Transport: tr, Timeout: k.LagRefreshInterval},
		Group:         k.Group,
		Topics:        k.Topics,
		StartEarliest: k.StartOffset == config.StartOffsetEarliest,
		ReadCommitted: k.IsolationLevel == config.IsolationReadCommitted,
		Interval:      k.LagRefreshInterval,
		LastOwned:     func() time.Time { return c.GroupState().LastOwned },
		Generation:    func() int32 { return generation(c.GroupState()) },
	}, m, log)
}

// generation is the generation the member is in, -1 when it is not a member:
// a generation still joining or syncing, or one whose coordinator stopped
// answering, is not one this replica consumes in (the same test as /readyz).
func generation(s group.State) int32 {
	if !s.Member || s.Generation < 0 {
		return -1
	}
	return int32(s.Generation) // Kafka generation ids are int32 on the wire
}

// GroupLag returns the group's lag for every partition, owned or not, and its
// state as this replica last read them (for the status page).
func (a *App) GroupLag() grouplag.Snapshot { return a.groupLag.Snapshot() }
