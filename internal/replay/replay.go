// Package replay re-drives dead-lettered events once their cause is fixed
// (for example after lowering amplitude.min_id_length): it reads the DLQ
// topic from its start to the end offsets seen when it began, selects
// records by reason and failure time, and produces the original bytes back
// to their source topic (or another one).
//
// Replay is idempotent downstream: an event that had no insert_id is given
// the stable one derived from its ORIGINAL topic, partition and offset, the
// same id ampstream would have used, so replaying twice, or replaying an
// event that was in fact delivered, is deduplicated by Amplitude.
//
// Concurrency: Run is synchronous and owns every reader and writer it opens.
package replay

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ampstream/ampstream/internal/dlq"
	"github.com/ampstream/ampstream/internal/event"
)

// Options select what to replay.
type Options struct {
	Brokers   []string
	Dialer    *kafka.Dialer
	Transport *kafka.Transport
	From      string    // the DLQ topic
	To        string    // target topic; empty = each record's source topic
	Reasons   []string  // only these reasons; empty = all
	Since     time.Time // only records dead-lettered at or after; zero = no bound
	Until     time.Time // only records dead-lettered before; zero = no bound
	DryRun    bool
	Limit     int // at most this many records; 0 = no limit
}

// Report says what a run did.
type Report struct {
	Scanned  int
	Selected int
	Produced int
	ByReason map[string]int
	ByTarget map[string]int
}

func (r Report) String() string {
	return fmt.Sprintf("scanned %d, selected %d, produced %d; by reason %v; by target %v",
		r.Scanned, r.Selected, r.Produced, r.ByReason, r.ByTarget)
}

// Run replays. In dry-run mode it only reports what it would produce.
func Run(ctx context.Context, o Options) (Report, error) {
	rep := Report{ByReason: map[string]int{}, ByTarget: map[string]int{}}
	if o.Transport == nil {
		// Not kafka.DefaultTransport: its process-wide metadata cache can be stale.
		o.Transport = &kafka.Transport{}
	}
	defer o.Transport.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(o.Brokers...), Transport: o.Transport, Timeout: 10 * time.Second}
	meta, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{o.From}})
	if err != nil {
		return rep, fmt.Errorf("read metadata of %s: %w", o.From, err)
	}
	if len(meta.Topics) == 0 || meta.Topics[0].Error != nil {
		return rep, fmt.Errorf("dead-letter topic %s not found", o.From)
	}
	var reqs []kafka.OffsetRequest
	for _, p := range meta.Topics[0].Partitions {
		reqs = append(reqs, kafka.FirstOffsetOf(p.ID), kafka.LastOffsetOf(p.ID))
	}
	offs, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{o.From: reqs}})
	if err != nil {
		return rep, fmt.Errorf("list offsets of %s: %w", o.From, err)
	}
	w := &kafka.Writer{
		Addr:         kafka.TCP(o.Brokers...),
		Transport:    o.Transport,
		Balancer:     &kafka.Murmur2Balancer{Consistent: true},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 5 * time.Millisecond,
	}
	defer w.Close()
	reasons := map[string]bool{}
	for _, r := range o.Reasons {
		reasons[r] = true
	}
	for _, po := range offs.Topics[o.From] {
		if po.LastOffset <= po.FirstOffset {
			continue
		}
		if err := replayPartition(ctx, o, w, reasons, po, &rep); err != nil {
			return rep, err
		}
		if o.Limit > 0 && rep.Selected >= o.Limit {
			break
		}
	}
	return rep, nil
}

func replayPartition(ctx context.Context, o Options, w *kafka.Writer, reasons map[string]bool, po kafka.PartitionOffsets, rep *Report) error {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: o.Brokers, Topic: o.From, Partition: po.Partition, Dialer: o.Dialer, MaxWait: 500 * time.Millisecond,
	})
	defer r.Close()
	if err := r.SetOffset(po.FirstOffset); err != nil {
		return fmt.Errorf("seek %s/%d: %w", o.From, po.Partition, err)
	}
	var out []kafka.Message
	flush := func() error {
		if len(out) == 0 || o.DryRun {
			out = out[:0]
			return nil
		}
		if err := w.WriteMessages(ctx, out...); err != nil {
			return fmt.Errorf("produce replayed events: %w", err)
		}
		rep.Produced += len(out)
		out = out[:0]
		return nil
	}
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			return fmt.Errorf("read %s/%d: %w", o.From, po.Partition, err)
		}
		rep.Scanned++
		if msg, target, reason, ok := selectRecord(m, o, reasons); ok {
			rep.Selected++
			rep.ByReason[reason]++
			rep.ByTarget[target]++
			out = append(out, msg)
			if len(out) >= 500 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if m.Offset >= po.LastOffset-1 || (o.Limit > 0 && rep.Selected >= o.Limit) {
			return flush()
		}
	}
}

// selectRecord decides whether m is replayed and builds the message to produce.
func selectRecord(m kafka.Message, o Options, reasons map[string]bool) (kafka.Message, string, string, bool) {
	var reason, srcTopic, srcPart, srcOff, failedAt string
	headers := make([]kafka.Header, 0, len(m.Headers))
	for _, h := range m.Headers {
		switch h.Key {
		case dlq.HeaderReason:
			reason = string(h.Value)
		case dlq.HeaderTopic:
			srcTopic = string(h.Value)
		case dlq.HeaderPartition:
			srcPart = string(h.Value)
		case dlq.HeaderOffset:
			srcOff = string(h.Value)
		case dlq.HeaderFailedAt:
			failedAt = string(h.Value)
		default:
			if !strings.HasPrefix(h.Key, "ampstream-") {
				headers = append(headers, h)
			}
		}
	}
	if len(reasons) > 0 && !reasons[reason] {
		return kafka.Message{}, "", "", false
	}
	if !o.Since.IsZero() || !o.Until.IsZero() {
		t, err := time.Parse(time.RFC3339Nano, failedAt)
		if err != nil {
			t = m.Time
		}
		if (!o.Since.IsZero() && t.Before(o.Since)) || (!o.Until.IsZero() && !t.Before(o.Until)) {
			return kafka.Message{}, "", "", false
		}
	}
	target := o.To
	if target == "" {
		target = srcTopic
	}
	if target == "" {
		return kafka.Message{}, "", "", false // no source recorded: not ours to guess
	}
	value := m.Value
	if f, err := event.Parse(value); err == nil && len(f.InsertID) == 0 {
		part, perr := strconv.Atoi(srcPart)
		off, oerr := strconv.ParseInt(srcOff, 10, 64)
		if perr == nil && oerr == nil && srcTopic != "" {
			value = f.WithStableInsertID(value, srcTopic, part, off)
		}
	}
	headers = append(headers, kafka.Header{Key: "ampstream-replayed-from", Value: []byte(fmt.Sprintf("%s/%d/%d", m.Topic, m.Partition, m.Offset))})
	return kafka.Message{Topic: target, Key: m.Key, Value: value, Headers: headers}, target, reason, true
}
