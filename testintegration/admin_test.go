package testintegration

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ampstream/ampstream/internal/emulator"
	"github.com/ampstream/ampstream/internal/traffic"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Readiness follows group membership and Amplitude's verdict on the key;
// liveness never depends on Amplitude. The status page shows partitions,
// lanes and dead-letter reasons to a person without Grafana.
func TestHealthReadinessAndStatusPage(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2, nil)
	g := traffic.New(21, 30, 0, nil)
	msgs := []traffic.Msg{g.Normal(), g.Normal(), g.Invalid(), g.Normal()}
	h.produce(msgs)
	r := h.start(h.config())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr, err := r.App.AdminAddr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + addr
	eventually(t, 30*time.Second, "ready", func() bool { c, _ := get(t, base+"/readyz"); return c == 200 })
	eventually(t, 30*time.Second, "all committed", func() bool { return h.committedAll() })

	// Amplitude starts refusing the key: not ready, still live.
	if err := h.emu.SetFaultRate(1, 1, emulator.Fault{Status: 403}); err != nil {
		t.Fatal(err)
	}
	h.produce([]traffic.Msg{g.Normal()})
	eventually(t, 30*time.Second, "not ready while Amplitude answers 403", func() bool {
		c, body := get(t, base+"/readyz")
		return c == 503 && strings.Contains(body, "refuses the API key")
	})
	if c, body := get(t, base+"/healthz"); c != 200 {
		t.Errorf("/healthz = %d %q while Amplitude refuses the key; liveness must not depend on Amplitude", c, body)
	}
	h.emu.ClearFaults()
	eventually(t, 30*time.Second, "ready again", func() bool { c, _ := get(t, base+"/readyz"); return c == 200 })

	c, page := get(t, base+"/")
	if c != 200 {
		t.Fatalf("status page: %d", c)
	}
	for _, want := range []string{"<title>ampstream status</title>", h.topic, "Partitions (2 owned)", "realtime (HTTP V2)", "missing_event_type", "quarantined keys (429)", "Recent warnings and errors", "amplitude refuses the API key or URL"} {
		if !strings.Contains(page, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	c, metrics := get(t, base+"/metrics")
	if c != 200 || !strings.Contains(metrics, "ampstream_build_info{") {
		t.Errorf("/metrics = %d without ampstream_build_info", c)
	}
	r.Stop(t)
}
