package amplitude_test

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/ampstream/ampstream/internal/amplitude"
)

// recorder is an Amplitude stand-in that keeps every request body, inflated
// with the standard library's gzip reader when it was sent gzipped.
type recorder struct {
	mu     sync.Mutex
	bodies []string
	gzip   []bool
	ctype  []string
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body io.Reader = r.Body
	gz := r.Header.Get("Content-Encoding") == "gzip"
	if gz {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rec.mu.Lock()
	rec.bodies = append(rec.bodies, string(b))
	rec.gzip = append(rec.gzip, gz)
	rec.ctype = append(rec.ctype, r.Header.Get("Content-Type"))
	rec.mu.Unlock()
	_, _ = io.WriteString(w, `{"code":200}`)
}

// TestSendBodiesAreExactWithAndWithoutGzip checks the body bytes Amplitude
// receives, byte for byte, on both sides of the gzip threshold: small
// bodies, bodies spanning many 64 KiB staging chunks, and an event bigger
// than a chunk.
func TestSendBodiesAreExactWithAndWithoutGzip(t *testing.T) {
	rec := &recorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	const key = "0123456789abcdef0123456789abcdef"
	c := amplitude.New(amplitude.Options{BaseURL: srv.URL, APIKey: key, GzipMinBytes: 16 << 10})
	defer c.Close()

	big := `{"event_type":"big","device_id":"device-big","event_properties":{"blob":"` + strings.Repeat("x", 100<<10) + `"}}`
	cases := []struct {
		name   string
		events []string
		gzip   bool
		heads  []string // written before each event's body, in place of its start
	}{
		{"one small event", []string{`{"event_type":"a","device_id":"device-1"}`}, false, nil},
		{"two thousand events", manyEvents(2000), true, nil},
		{"an event larger than a staging chunk", []string{`{"event_type":"x","device_id":"device-2"}`, big, `{"event_type":"y","device_id":"device-2"}`}, true, nil},
		{"events with heads", []string{`"event_type":"a","device_id":"device-3"}`, `{"event_type":"b","device_id":"device-3"}`, `}`},
			false, []string{`{"insert_id":"as-1",`, ``, ` {"insert_id":"as-3"`}},
	}
	for i, tc := range cases {
		raws := make([]amplitude.Event, len(tc.events))
		whole := make([]string, len(tc.events))
		for j, e := range tc.events {
			raws[j] = amplitude.Event{Body: []byte(e)}
			whole[j] = e
			if tc.heads != nil {
				raws[j].Head = []byte(tc.heads[j])
				whole[j] = tc.heads[j] + e
			}
		}
		if r := c.Send(context.Background(), amplitude.Batch, raws); r.Class != amplitude.Accepted {
			t.Fatalf("%s: %+v", tc.name, r)
		}
		want := `{"api_key":"` + key + `","events":[` + strings.Join(whole, ",") + `]}`
		rec.mu.Lock()
		got, gz, ct := rec.bodies[i], rec.gzip[i], rec.ctype[i]
		rec.mu.Unlock()
		if got != want {
			t.Errorf("%s: body differs (%d bytes, want %d): %.200q", tc.name, len(got), len(want), diffFrom(got, want))
		}
		if gz != tc.gzip {
			t.Errorf("%s: gzip %v, want %v", tc.name, gz, tc.gzip)
		}
		if !strings.HasPrefix(ct, "application/json") {
			t.Errorf("%s: Content-Type %q", tc.name, ct)
		}
		if size := c.BodySize(len(raws), len(strings.Join(whole, ""))); size != len(want) {
			t.Errorf("%s: BodySize %d, body is %d bytes", tc.name, size, len(want))
		}
	}
}

func manyEvents(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(`{"event_type":"e","device_id":"device-%05d","insert_id":"id-%d","time":%d}`, i%97, i, 1700000000000+i)
	}
	return out
}

// diffFrom returns got from a little before its first difference with want.
func diffFrom(got, want string) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	return got[max(i-20, 0):]
}
