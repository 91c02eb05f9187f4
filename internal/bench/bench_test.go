package bench

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestQuick runs the CI smoke mode in-process and checks only that every run
// completed (committed == end offsets is Run's own completion condition) and
// accounted for every event. It asserts nothing about timing: the machine
// is shared.
func TestQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end benchmark smoke run; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	res, err := Run(ctx, Options{
		Quick:    true,
		Brokers:  os.Getenv("KAFKA_BROKERS"),
		Progress: &progress,
		Log:      zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel),
	})
	t.Log("\n" + progress.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("broker: %s; %s", res.Broker, res.Summary.Line())

	if len(res.Baselines) != 2 || len(res.BatchTrivial) != 1 {
		t.Fatalf("quick mode: %d baseline and %d batch_trivial runs, want 2 and 1", len(res.Baselines), len(res.BatchTrivial))
	}
	for _, b := range res.Baselines {
		if b.Resolved != int64(b.Produced.Events) {
			t.Errorf("%s: resolved %d of %d", b.Name, b.Resolved, b.Produced.Events)
		}
	}
	runs := map[string]*Throughput{
		"batch_trivial": res.BatchTrivial[0], "batch_emulator": res.BatchEmulator,
		"realtime_trivial": res.RealtimeTrivial, "realtime_emulator": res.RealtimeEmulator,
	}
	for name, r := range runs {
		if r == nil {
			t.Errorf("%s: missing", name)
			continue
		}
		p := r.Produced
		if p.Valid+p.Invalid != p.Events || p.Invalid == 0 {
			t.Errorf("%s: produced %+v", name, p)
		}
		var accepted int64
		for _, n := range r.Accepted {
			accepted += n
		}
		if accepted != int64(p.Valid) || r.DeadLettered != int64(p.Invalid) {
			t.Errorf("%s: accepted %d (want %d), dead-lettered %d (want %d)", name, accepted, p.Valid, r.DeadLettered, p.Invalid)
		}
		if r.SinkStats != nil && r.SinkStats.EventsCounted != int64(p.Valid) {
			t.Errorf("%s: the sink counted %d events, want %d", name, r.SinkStats.EventsCounted, p.Valid)
		}
		if r.EmuStats != nil && r.EmuStats.Ingested != int64(p.Valid) {
			t.Errorf("%s: the emulator ingested %d events, want %d", name, r.EmuStats.Ingested, p.Valid)
		}
	}
	if bt := res.BatchTrivial[0]; bt.Accepted["batch"] <= bt.Accepted["realtime"] {
		t.Errorf("batch-heavy mix went mostly realtime: %v", bt.Accepted)
	}
	if rt := res.RealtimeTrivial; rt != nil && rt.Accepted["realtime"] <= rt.Accepted["batch"] {
		t.Errorf("realtime-heavy mix went mostly batch: %v", rt.Accepted)
	}
	if l := res.Latency; l == nil || l.Realtime.Events == 0 {
		t.Errorf("latency run recorded no realtime events: %+v", l)
	}
	if c := res.Cost; c == nil || c.Method != "in-process" || c.CPUSeconds <= 0 {
		t.Errorf("cost: %+v", c)
	}
	if line := res.Summary.Line(); !strings.HasPrefix(line, "BENCH e2e_eps=") {
		t.Errorf("summary line %q", line)
	}
}
