package testintegration

import (
	"testing"
	"time"

	"github.com/ampstream/ampstream/internal/emulator"
	"github.com/ampstream/ampstream/internal/traffic"
)

// Each fault Amplitude (or the network in front of it) can produce, injected
// into live traffic: nothing is lost, per-device order holds, and commits
// never pass an event Amplitude did not accept.
func TestEveryInjectedFaultLosesNothing(t *testing.T) {
	t.Parallel()
	faults := []struct {
		name  string
		fault emulator.Fault
		count int
	}{
		{"500 after ingesting", emulator.Fault{Status: 500, Ingest: true}, 4},
		{"500 without ingesting", emulator.Fault{Status: 500}, 4},
		{"502 with an HTML body", emulator.Fault{Status: 502, Body: emulator.BodyHTML}, 4},
		{"504 with an empty body", emulator.Fault{Status: 504, Body: emulator.BodyEmpty, Ingest: true}, 4},
		{"503", emulator.Fault{Status: 503}, 4},
		{"403 from the WAF", emulator.Fault{Status: 403}, 3},
		{"answers slower than the client timeout, ingested", emulator.Fault{Delay: 3 * time.Second, Ingest: true}, 2},
		{"answers slower than the client timeout, not ingested", emulator.Fault{Delay: 3 * time.Second}, 2},
		{"connection resets", emulator.Fault{Reset: true}, 4},
	}
	for _, tc := range faults {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, 3, nil)
			g := traffic.New(7, 40, 0.5, nil)
			cfg := h.config()
			cfg.Amplitude.Timeout = time.Second
			r := h.start(cfg)

			var msgs []traffic.Msg
			for i := 0; i < 300; i++ {
				msgs = append(msgs, g.Normal())
			}
			h.produce(msgs[:100])
			eventually(t, 30*time.Second, "first events delivered", func() bool { return h.emu.Stats().Ingested > 0 })
			if err := h.emu.InjectFault(tc.count, tc.fault); err != nil {
				t.Fatal(err)
			}
			h.produce(msgs[100:200])
			eventually(t, 60*time.Second, "the injected faults to be served", func() bool { return h.emu.Stats().Faults >= int64(tc.count) })
			h.produce(msgs[200:])
			eventually(t, 60*time.Second, "delivery after the faults", func() bool {
				return traffic.Check(h.emu, g.Expected()).OK() && h.committedAll()
			})
			r.Stop(t)
			rep := traffic.Check(h.emu, g.Expected())
			if !rep.OK() {
				t.Fatalf("delivery: %s", rep)
			}
			h.assertCommitsCovered()
			st := h.emu.Stats()
			t.Logf("FAULT %q: faults=%d ingested=%d duplicates=%d", tc.name, st.Faults, st.Ingested, st.Duplicates)
		})
	}
}
