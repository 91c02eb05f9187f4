package testintegration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ampstream/ampstream/internal/kafkatest"
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
		cl, err := kgo.NewClient(kgo.SeedBrokers(h.kafka.Brokers...), kgo.DefaultProduceTopic(h.topic),
			kgo.TransactionalID(kafkatest.UniqueName(name)), kgo.ProducerLinger(time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
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
