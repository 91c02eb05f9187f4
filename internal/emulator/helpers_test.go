package emulator

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testKey is a 32-character key, as Amplitude's are.
const testKey = "0123456789abcdef0123456789abcdef"

// clock is a hand-driven Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock {
	return &clock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newTest returns an emulator on a fake clock; mutate adjusts the default
// config first.
func newTest(t *testing.T, mutate func(*Config)) (*Emulator, *clock) {
	t.Helper()
	clk := newClock()
	cfg := DefaultConfig()
	cfg.Now = clk.Now
	if mutate != nil {
		mutate(&cfg)
	}
	return New(cfg, zerolog.Nop()), clk
}

type answer struct {
	status int
	header http.Header
	body   string
}

// do sends body to path through the handler directly.
func do(t *testing.T, h http.Handler, path, body string, headers ...string) answer {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return answer{status: rec.Code, header: rec.Header(), body: rec.Body.String()}
}

// ev is an event for building request bodies.
type ev struct {
	typ, user, device, insert string
	extra                     string // raw members appended, e.g. `"time":1`
}

func (e ev) json() string {
	var parts []string
	if e.typ != "" {
		parts = append(parts, fmt.Sprintf(`"event_type":%q`, e.typ))
	}
	if e.user != "" {
		parts = append(parts, fmt.Sprintf(`"user_id":%q`, e.user))
	}
	if e.device != "" {
		parts = append(parts, fmt.Sprintf(`"device_id":%q`, e.device))
	}
	if e.insert != "" {
		parts = append(parts, fmt.Sprintf(`"insert_id":%q`, e.insert))
	}
	if e.extra != "" {
		parts = append(parts, e.extra)
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func body(evs ...ev) string {
	parts := make([]string, len(evs))
	for i, e := range evs {
		parts[i] = e.json()
	}
	return `{"api_key":"` + testKey + `","events":[` + strings.Join(parts, ",") + `]}`
}

// deviceEvents returns n events of device with insert_ids prefix-0...
func deviceEvents(device, prefix string, n int) []ev {
	out := make([]ev, n)
	for i := range out {
		out[i] = ev{typ: "play", device: device, insert: fmt.Sprintf("%s-%d", prefix, i)}
	}
	return out
}

func gz(t *testing.T, s string) string {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	_, err := w.Write([]byte(s))
	require.NoError(t, err)
	require.NoError(t, w.Close())
	return b.String()
}

// ok200 is the 200 body for n events of a raw body of size bytes at clk's time.
func ok200(n, size int, clk *clock) string {
	return fmt.Sprintf(`{"code":200,"events_ingested":%d,"payload_size_bytes":%d,"server_upload_time":%d}`,
		n, size, clk.Now().UnixMilli())
}
