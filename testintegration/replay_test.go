package testintegration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ampstream/ampstream/internal/emulator"
	"github.com/ampstream/ampstream/internal/replay"
)

func TestReplayRedrivesDeadLetteredEventsOnceTheCauseIsFixed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2, nil)
	// Numeric user ids shorter than Amplitude's default min_id_length of 5:
	// the classic way to lose every signed-in event.
	var msgs []kafka.Message
	for i := 0; i < 10; i++ {
		u := fmt.Sprintf("u%02d", i)
		msgs = append(msgs, kafka.Message{Key: []byte(u), Value: []byte(fmt.Sprintf(`{"event_type":"login","user_id":%q,"event_id":1}`, u))})
	}
	h.kafka.Produce(t, h.topic, msgs...)
	r := h.start(h.config())
	eventually(t, 30*time.Second, "short ids dead-lettered and committed", func() bool { return h.committedAll() })
	r.Stop(t)
	if got := len(h.kafka.ReadAll(t, h.dlq)); got != 10 {
		t.Fatalf("DLQ holds %d events, want 10", got)
	}

	opts := replay.Options{Brokers: h.kafka.Brokers, From: h.dlq, Reasons: []string{"invalid_id_length"}, DryRun: true}
	rep, err := replay.Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Selected != 10 || rep.Produced != 0 {
		t.Fatalf("dry run: %s; want 10 selected, 0 produced", rep)
	}
	opts.DryRun = false
	for run := 0; run < 2; run++ { // twice: replay must be idempotent downstream
		rep, err = replay.Run(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Produced != 10 || rep.ByTarget[h.topic] != 10 {
			t.Fatalf("replay %d: %s; want 10 produced to %s", run, rep, h.topic)
		}
	}

	cfg := h.config()
	cfg.Amplitude.MinIDLength = 3 // the fix
	r = h.start(cfg)
	eventually(t, 30*time.Second, "replayed events delivered and committed", func() bool { return h.committedAll() })
	r.Stop(t)
	for i := 0; i < 10; i++ {
		if got := len(h.emu.Events(emulator.UserDeviceID(fmt.Sprintf("u%02d", i)))); got != 1 {
			t.Errorf("user u%02d: %d events stored after replaying twice, want exactly 1", i, got)
		}
	}
	if d := h.emu.Stats().Duplicates; d != 10 {
		t.Errorf("emulator deduplicated %d events, want 10 (the second replay)", d)
	}
}
