package testintegration

import (
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ampstream/ampstream/internal/dlq"
	"github.com/ampstream/ampstream/internal/emulator"
	"github.com/ampstream/ampstream/internal/traffic"
)

// mix makes n valid events over devices (bursts, user-only events, events
// without insert_id, forced lanes included) plus invalid ones every 50th.
func mix(g *traffic.Generator, n int) []traffic.Msg {
	out := make([]traffic.Msg, 0, n+n/50)
	for i := 0; i < n; i++ {
		switch {
		case i%50 == 49:
			out = append(out, g.Invalid())
		case i%17 == 0:
			out = append(out, g.UserOnly())
		case i%23 == 0:
			out = append(out, g.Forced("batch"))
		case i%3 == 0:
			out = append(out, g.Burst(i%2))
		default:
			out = append(out, g.Normal())
		}
	}
	return out
}

func countValid(msgs []traffic.Msg) (valid, invalid int) {
	for _, m := range msgs {
		if m.Valid {
			valid++
		} else {
			invalid++
		}
	}
	return valid, invalid
}

func TestEveryEventIsDeliveredExactlyOnceInPerDeviceOrder(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 6, nil)
	g := traffic.New(1, 300, 0.3, nil)
	msgs := mix(g, 3000)
	h.produce(msgs)

	r := h.start(h.config())
	want := g.Expected()
	eventually(t, 60*time.Second, "all events delivered and committed", func() bool {
		return traffic.Check(h.emu, want).Delivered == len(msgs)-countInvalid(msgs) && h.committedAll()
	})
	r.Stop(t)

	rep := traffic.Check(h.emu, want)
	if !rep.OK() {
		t.Fatalf("delivery: %s", rep)
	}
	if s := h.emu.Stats(); s.ByStatus[429] != 0 {
		t.Errorf("emulator answered 429 %d times; hot keys must reach Batch before Amplitude throttles", s.ByStatus[429])
	}
	h.assertCommitsCovered()
	t.Logf("delivery: %s", rep)
}

func countInvalid(msgs []traffic.Msg) int {
	_, n := countValid(msgs)
	return n
}

func TestOffsetsDoNotMoveWhileAmplitudeAnswers503(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 3, nil)
	if err := h.emu.SetFaultRate(1, 1, emulator.Fault{Status: 503}); err != nil {
		t.Fatal(err)
	}
	g := traffic.New(2, 50, 0, nil)
	var msgs []traffic.Msg
	for i := 0; i < 200; i++ {
		msgs = append(msgs, g.Normal())
	}
	h.produce(msgs)
	r := h.start(h.config())

	eventually(t, 30*time.Second, "ampstream to retry against the failing emulator", func() bool {
		return h.emu.Stats().ByStatus[503] >= 10
	})
	// Several commit intervals have passed while every request failed:
	// nothing may have been committed.
	for p, off := range h.kafka.CommittedOffsets(t, h.group, h.topic) {
		if off > 0 {
			t.Fatalf("partition %d committed offset %d while Amplitude accepted nothing", p, off)
		}
	}
	if got := h.emu.Stats().Ingested; got != 0 {
		t.Fatalf("emulator ingested %d events during the outage, want 0", got)
	}

	h.emu.ClearFaults()
	eventually(t, 60*time.Second, "delivery after the outage", func() bool {
		return traffic.Check(h.emu, g.Expected()).OK() && h.committedAll()
	})
	r.Stop(t)
	h.assertCommitsCovered()
}

func TestMalformedInputIsDeadLetteredWithItsReason(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2, nil)
	g := traffic.New(3, 20, 0.5, nil)
	var msgs []traffic.Msg
	for i := 0; i < 70; i++ {
		if i%5 == 0 {
			msgs = append(msgs, g.Normal())
		} else {
			msgs = append(msgs, g.Invalid())
		}
	}
	h.produce(msgs)
	r := h.start(h.config())
	eventually(t, 30*time.Second, "everything resolved and committed", func() bool { return h.committedAll() })
	r.Stop(t)

	if rep := traffic.Check(h.emu, g.Expected()); !rep.OK() {
		t.Fatalf("valid events: %s", rep)
	}
	dead := h.kafka.ReadAll(t, h.dlq)
	_, invalid := countValid(msgs)
	if len(dead) != invalid {
		t.Fatalf("DLQ holds %d messages, want %d", len(dead), invalid)
	}
	byOffset := map[string]traffic.Msg{}
	seen := map[string]bool{}
	for _, m := range h.kafka.ReadAll(t, h.topic) {
		k := strconv.Itoa(m.Partition) + "/" + strconv.FormatInt(m.Offset, 10)
		byOffset[k] = traffic.Msg{Value: m.Value}
	}
	for _, m := range dead {
		hd := map[string]string{}
		for _, x := range m.Headers {
			hd[x.Key] = string(x.Value)
		}
		if hd[dlq.HeaderReason] == "" || hd[dlq.HeaderDetail] == "" {
			t.Errorf("DLQ message without reason/detail headers: %v", hd)
		}
		if hd[dlq.HeaderTopic] != h.topic {
			t.Errorf("DLQ source topic %q, want %q", hd[dlq.HeaderTopic], h.topic)
		}
		k := hd[dlq.HeaderPartition] + "/" + hd[dlq.HeaderOffset]
		src, ok := byOffset[k]
		if !ok {
			t.Errorf("DLQ message points at %s, which is not in the source topic", k)
			continue
		}
		if string(src.Value) != string(m.Value) {
			t.Errorf("DLQ value for %s is not the original bytes:\n got %q\nwant %q", k, m.Value, src.Value)
		}
		seen[hd[dlq.HeaderReason]] = true
	}
	for _, reason := range []string{"malformed_json", "missing_event_type", "invalid_id_length", "blocklisted_id", "invalid_field", "not_object"} {
		if !seen[reason] {
			t.Errorf("no DLQ message with reason %s", reason)
		}
	}
	h.assertCommitsCovered()
}

func TestARestartResumesFromTheCommittedOffsets(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 4, nil)
	g := traffic.New(4, 100, 0.5, nil)
	first := mix(g, 600)
	h.produce(first)
	r := h.start(h.config())
	eventually(t, 60*time.Second, "first batch committed", func() bool { return h.committedAll() })
	r.Stop(t)
	before := h.emu.Stats()

	second := mix(g, 400)
	h.produce(second)
	r = h.start(h.config())
	eventually(t, 60*time.Second, "second batch committed", func() bool { return h.committedAll() })
	r.Stop(t)

	after := h.emu.Stats()
	if rep := traffic.Check(h.emu, g.Expected()); !rep.OK() {
		t.Fatalf("delivery: %s", rep)
	}
	// A clean shutdown committed everything, so the restart re-sent nothing.
	if sent, want := after.Accepted-before.Accepted, int64(countValidN(second)); sent != want {
		t.Errorf("after restart Amplitude received %d events, want %d (only the new ones)", sent, want)
	}
	if after.Duplicates != 0 {
		t.Errorf("%d duplicates after a clean restart, want 0", after.Duplicates)
	}
	h.assertCommitsCovered()
}

func countValidN(msgs []traffic.Msg) int {
	v, _ := countValid(msgs)
	return v
}

// Record batches bigger than a fetch connection's buffer are read into
// memory of their own that their events keep (fetch.Block): every event is
// still delivered in order, the invalid ones dead-lettered, and once all is
// committed the in-flight budget is back to exactly zero, so a block's
// bytes were returned once, after its last event and the fetcher let go.
func TestBigRecordBatchesAreDeliveredAndTheirMemoryReturned(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1, nil)
	g := traffic.New(11, 200, 0.3, nil)
	var all []traffic.Msg
	for range 3 {
		msgs := mix(g, 1500) // one record batch of about 600 KiB
		h.produce(msgs)
		all = append(all, msgs...)
	}
	r := h.start(h.config())
	want := g.Expected()
	eventually(t, 60*time.Second, "all events delivered and committed", func() bool {
		return traffic.Check(h.emu, want).Delivered == len(all)-countInvalid(all) && h.committedAll()
	})
	eventually(t, 10*time.Second, "the in-flight budget back to zero", func() bool {
		return testutil.ToFloat64(r.App.Metrics.InflightBytes) == 0 && testutil.ToFloat64(r.App.Metrics.InflightEvents) == 0
	})
	r.Stop(t)
	if rep := traffic.Check(h.emu, want); !rep.OK() {
		t.Fatalf("delivery: %s", rep)
	}
	h.assertCommitsCovered()
}
