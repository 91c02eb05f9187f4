package testintegration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ampstream/ampstream/internal/traffic"
)

// TestTransactionsDeliverOnlyCommittedEventsAndCommitTheLogEnd produces
// through two transactional producers: one commits, the other aborts, their
// batches interleaved on every partition, and each partition's log ends in a
// transaction marker. ampstream (read_committed, the default) must deliver
// the committed events exactly once and in order, none of the aborted ones,
// and commit every partition's end offset: the offsets of markers and
// aborted records hold nothing to deliver, and an idle partition whose log
// ends in a marker must not show a lag of one forever.
func TestTransactionsDeliverOnlyCommittedEventsAndCommitTheLogEnd(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	txn := func(name string) *kgo.Client {
		cl := h.kafka.TransactionalClient(t, h.topic, name, kgo.ProducerLinger(time.Millisecond))
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		return cl
	}
	commit, abort := txn("txn-commit"), txn("txn-abort")
	g := traffic.New(11, 60, 0.3, nil)
	aborted := 0
	for i := range 400 {
		m := g.Normal()
		recs := []*kgo.Record{{Key: m.Key, Value: m.Value}}
		if err := commit.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if i%4 == 0 {
			dev := fmt.Sprintf("aborted-device-%03d", i%9)
			ev := fmt.Sprintf(`{"event_type":"aborted","device_id":%q,"insert_id":"aborted-%d"}`, dev, i)
			if err := abort.ProduceSync(ctx, &kgo.Record{Key: []byte(dev), Value: []byte(ev)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
			aborted++
		}
	}
	if err := abort.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
	if err := commit.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}

	r := h.start(h.config())
	want := g.Expected()
	eventually(t, 60*time.Second, "the committed events delivered and every log end committed", func() bool {
		return traffic.Check(h.emu, want).OK() && h.committedAll()
	})
	// The aborted records are accounted for, not silently gone. Counted
	// before each fetch: the partitions' next long polls report the last.
	eventually(t, 10*time.Second, "every aborted record counted as skipped", func() bool {
		return testutil.ToFloat64(r.App.Metrics.AbortedSkipped) == float64(aborted)
	})
	if got := testutil.ToFloat64(r.App.Metrics.EventsConsumed); got != 400 {
		t.Errorf("ampstream_events_consumed_total %v, want the 400 committed records", got)
	}
	r.Stop(t)

	if rep := traffic.Check(h.emu, want); !rep.OK() {
		t.Fatalf("delivery: %s", rep)
	}
	for _, d := range h.emu.AllDevices() {
		if strings.HasPrefix(d, "aborted-") {
			t.Errorf("device %s of the aborted transaction reached Amplitude with %d events", d, len(h.emu.Events(d)))
		}
	}
	if got := h.emu.Stats().Ingested; got != 400 {
		t.Errorf("emulator ingested %d events, want the 400 committed (%d aborted ones must not count)", got, aborted)
	}
	if n := len(h.kafka.ReadAll(t, h.dlq)); n != 0 {
		t.Errorf("%d dead letters, want none", n)
	}
}

// TestAnOpenTransactionIsHeldBackUntilItCommits produces a transaction's
// events and leaves it open: ampstream must deliver none of them and commit
// nothing past them (the broker serves read committed only up to the last
// stable offset), then deliver all of them once the producer commits.
func TestAnOpenTransactionIsHeldBackUntilItCommits(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cl := h.kafka.TransactionalClient(t, h.topic, "txn-open", kgo.ProducerLinger(time.Millisecond))

	// A committed event first, so the consumer is seen to run.
	g := traffic.New(12, 10, 0, nil)
	produce := func(n int) {
		t.Helper()
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for range n {
			m := g.Normal()
			if err := cl.ProduceSync(ctx, &kgo.Record{Key: m.Key, Value: m.Value}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	produce(1)
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	produce(20) // left open

	r := h.start(h.config())
	eventually(t, 30*time.Second, "the committed event delivered and committed", func() bool {
		return h.emu.Stats().Ingested == 1 && h.kafka.CommittedOffsets(t, h.group, h.topic)[0] == 2
	})
	// Several fetch waits and commit intervals later, still nothing more.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if n := h.emu.Stats().Ingested; n != 1 {
			t.Fatalf("%d events delivered while their transaction was open, want 1", n)
		}
		if off := h.kafka.CommittedOffsets(t, h.group, h.topic)[0]; off != 2 {
			t.Fatalf("committed offset %d while the transaction from offset 2 was open, want 2", off)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}

	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	want := g.Expected()
	eventually(t, 30*time.Second, "the transaction's events delivered and the log end committed", func() bool {
		return traffic.Check(h.emu, want).OK() && h.committedAll()
	})
	r.Stop(t)
}
