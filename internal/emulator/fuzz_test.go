package emulator

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// FuzzHandler checks that any body on any route gets an answer, never a
// panic, and that the answer is JSON whose code is the HTTP status. Seeds
// are in testdata/fuzz/FuzzHandler.
func FuzzHandler(f *testing.F) {
	f.Add([]byte(body(ev{typ: "e", device: "device-1", insert: "i-1", extra: `"time":1,"event_properties":{"a":[1,{"b":"\u00e9"}]}`})), uint8(0), false)
	f.Add([]byte(`{"api_key":"k","events":[{"event_type":"e","user_id":"\u0000\u0000\u0000\u0000\u0000"}],"options":{"min_id_length":0}}`), uint8(1), true)
	routes := []string{PathHTTPAPI, PathBatch, "/unknown"}
	f.Fuzz(func(t *testing.T, b []byte, route uint8, gzipped bool) {
		emu, _ := newTest(t, func(c *Config) { c.SilencedDevices = []string{"silenced"}; c.Batch.DailyQuota = 3 })
		sent := b
		if gzipped {
			var buf bytes.Buffer
			w := gzip.NewWriter(&buf)
			_, _ = w.Write(b)
			_ = w.Close()
			sent = buf.Bytes()
		}
		req := httptest.NewRequest(http.MethodPost, routes[int(route)%len(routes)], bytes.NewReader(sent))
		if gzipped {
			req.Header.Set("Content-Encoding", "gzip")
		}
		rec := httptest.NewRecorder()
		emu.ServeHTTP(rec, req)

		var got struct {
			Code *int `json:"code"`
		}
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got), rec.Body.String())
		require.NotNil(t, got.Code, rec.Body.String())
		assert.Equal(t, rec.Code, *got.Code)
		assert.Contains(t, []int{200, 400, 413, 429}, rec.Code)
		assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	})
}

// FuzzParse checks the scanner against encoding/json: for any valid body
// both must find the same api_key, events and per-event IDs.
func FuzzParse(f *testing.F) {
	f.Add([]byte(body(ev{typ: "e", device: "device-1", user: "user-1", insert: "i-1"})))
	f.Add([]byte(`{"api_key":"a","api_key":"b","events":[{"event_type":"x","event_type":"y","user_id":"u\"ser-1"}]}`))
	f.Add([]byte(`{"api\u005fkey":"k","events":[{"device\u005fid":"dévice","nested":{"device_id":"no"},"a":[{"user_id":"no"}]}]}`))
	f.Add([]byte(` { "events" : [ { } , { "event_type" : null } ] , "api_key" : 1 } `))
	f.Add([]byte(`{"a":[1,-0.5e+3,true,false,null,{"b":"\u00e9\n"}],"events":[]}`))
	f.Add([]byte(`{"a":01}`))
	f.Add([]byte(`{"a":"\x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		env, ok := parseEnvelope(b)
		var top map[string]json.RawMessage
		isObject := json.Unmarshal(b, &top) == nil && top != nil
		require.Equal(t, json.Valid(b) && isObject, ok, "parseEnvelope accepts exactly the valid JSON objects")
		if !ok {
			return
		}
		assert.Equal(t, []byte(top["api_key"]), env.apiKey)
		assert.Equal(t, []byte(top["events"]), env.events)
		assert.Equal(t, []byte(top["options"]), env.options)

		var raws []json.RawMessage
		if top["events"] == nil || json.Unmarshal(top["events"], &raws) != nil {
			return
		}
		events, _, ok := parseEvents(env.events, 0, false, nil)
		var objects []map[string]json.RawMessage
		if json.Unmarshal(top["events"], &objects) != nil || bytes.Equal(top["events"], []byte("null")) {
			return // some element is not an object (or null, which json decodes to a nil map)
		}
		for _, raw := range raws {
			if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
				assert.False(t, ok, "a null event is not an object")
				return
			}
		}
		require.True(t, ok)
		require.Len(t, events, len(raws))
		for i, obj := range objects {
			assert.Equal(t, []byte(raws[i]), events[i].raw)
			for name, got := range map[string][]byte{
				"event_type": events[i].eventType, "user_id": events[i].userID,
				"device_id": events[i].deviceID, "insert_id": events[i].insertID,
			} {
				var want string
				// encoding/json replaces invalid UTF-8; the emulator keeps bytes as sent.
				if v, ok := obj[name]; ok && utf8.Valid(v) && json.Unmarshal(v, &want) == nil && (name == "event_type" || name == "insert_id") {
					assert.Equal(t, want, string(got), name)
				}
			}
		}
	})
}
