package emulator

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestConformance sends each documented case (amplitude-api.md §4 and §6)
// and compares the whole decoded answer. "$size" in a wanted body stands
// for the raw request length and "$now" for the clock in ms.
func TestConformance(t *testing.T) {
	t.Parallel()
	big := make([]ev, 2001)
	for i := range big {
		big[i] = ev{typ: "e", device: fmt.Sprintf("device-%d", i%50)}
	}
	// 1,000,001 bytes after decompression: one event with a long property.
	pad := 1_000_001 - len(body(ev{typ: "e", device: "device-1", extra: `"event_properties":{"p":""}`}))
	oversized := body(ev{typ: "e", device: "device-1", extra: `"event_properties":{"p":"` + strings.Repeat("x", pad) + `"}`})
	require.Len(t, oversized, 1_000_001)
	exactLimit := oversized[:strings.Index(oversized, "xx")] + oversized[strings.Index(oversized, "xx")+1:]

	tests := []struct {
		name    string
		cfg     func(*Config)
		path    string
		body    string
		headers []string
		gzip    bool // compress body and send Content-Encoding: gzip
		status  int
		want    string
	}{
		{
			name: "an empty body is 400 Missing request body",
			path: PathHTTPAPI, body: "", status: 400,
			want: `{"code":400,"error":"Missing request body"}`,
		},
		{
			name: "a body of only whitespace is 400 Missing request body",
			path: PathBatch, body: " \n\t ", status: 400,
			want: `{"code":400,"error":"Missing request body"}`,
		},
		{
			name: "truncated JSON is 400 Invalid JSON request body",
			path: PathHTTPAPI, body: `{"api_key":"` + testKey + `","events":[`, status: 400,
			want: `{"code":400,"error":"Invalid JSON request body"}`,
		},
		{
			name: "a JSON array instead of an object is 400 Invalid JSON request body",
			path: PathHTTPAPI, body: `[]`, status: 400,
			want: `{"code":400,"error":"Invalid JSON request body"}`,
		},
		{
			name: "a missing api_key is 400 with missing_field api_key",
			path: PathHTTPAPI, body: `{"events":[]}`, status: 400,
			want: `{"code":400,"error":"Request missing required field","missing_field":"api_key"}`,
		},
		{
			name: "an empty api_key is 400 with missing_field api_key",
			path: PathBatch, body: `{"api_key":"","events":[]}`, status: 400,
			want: `{"code":400,"error":"Request missing required field","missing_field":"api_key"}`,
		},
		{
			name: "missing events is 400 with missing_field events",
			path: PathHTTPAPI, body: `{"api_key":"` + testKey + `"}`, status: 400,
			want: `{"code":400,"error":"Request missing required field","missing_field":"events"}`,
		},
		{
			name: "null events is 400 with missing_field events",
			path: PathBatch, body: `{"api_key":"` + testKey + `","events":null}`, status: 400,
			want: `{"code":400,"error":"Request missing required field","missing_field":"events"}`,
		},
		{
			name: "a key outside the allow-list is 400 Invalid API key with the key",
			cfg:  func(c *Config) { c.APIKeys = []string{testKey} },
			path: PathHTTPAPI, body: `{"api_key":"nope","events":[]}`, status: 400,
			want: `{"code":400,"error":"Invalid API key: nope"}`,
		},
		{
			name: "a key on the allow-list is accepted",
			cfg:  func(c *Config) { c.APIKeys = []string{"other", testKey} },
			path: PathHTTPAPI, body: body(), status: 200,
			want: `{"code":200,"events_ingested":0,"payload_size_bytes":$size,"server_upload_time":$now}`,
		},
		{
			name: "events that are not an array are 400 Invalid event JSON",
			path: PathHTTPAPI, body: `{"api_key":"` + testKey + `","events":{}}`, status: 400,
			want: `{"code":400,"error":"Invalid event JSON"}`,
		},
		{
			name: "an event that is not an object is 400 Invalid event JSON",
			path: PathBatch, body: `{"api_key":"` + testKey + `","events":[{"event_type":"e","device_id":"device-1"},7]}`, status: 400,
			want: `{"code":400,"error":"Invalid event JSON"}`,
		},
		{
			name: "2001 events are 413 on HTTP V2",
			path: PathHTTPAPI, body: body(big...), status: 413,
			want: `{"code":413,"error":"Payload too large"}`,
		},
		{
			name: "2001 events are 413 on Batch",
			path: PathBatch, body: body(big...), status: 413,
			want: `{"code":413,"error":"Payload too large"}`,
		},
		{
			name: "2000 events are accepted",
			path: PathBatch, body: body(big[:2000]...), status: 200,
			want: `{"code":200,"events_ingested":2000,"payload_size_bytes":$size,"server_upload_time":$now}`,
		},
		{
			name: "1,000,001 bytes are 413 on HTTP V2",
			path: PathHTTPAPI, body: oversized, status: 413,
			want: `{"code":413,"error":"Payload too large"}`,
		},
		{
			name: "1,000,000 bytes are accepted on HTTP V2",
			path: PathHTTPAPI, body: exactLimit, status: 200,
			want: `{"code":200,"events_ingested":1,"payload_size_bytes":1000000,"server_upload_time":$now}`,
		},
		{
			name: "1,000,001 bytes are accepted on Batch",
			path: PathBatch, body: oversized, status: 200,
			want: `{"code":200,"events_ingested":1,"payload_size_bytes":1000001,"server_upload_time":$now}`,
		},
		{
			name: "1,000,001 bytes gzipped are 413 on HTTP V2 because size counts after decompression",
			path: PathHTTPAPI, body: oversized, gzip: true, status: 413,
			want: `{"code":413,"error":"Payload too large"}`,
		},
		{
			name: "a gzipped body is accepted and payload_size_bytes is its compressed length",
			path: PathHTTPAPI, body: body(ev{typ: "e", device: "device-1"}), gzip: true, status: 200,
			want: `{"code":200,"events_ingested":1,"payload_size_bytes":$size,"server_upload_time":$now}`,
		},
		{
			name: "a body that claims gzip but is not is 400 Invalid JSON request body",
			path: PathBatch, body: body(), headers: []string{"Content-Encoding", "gzip"}, status: 400,
			want: `{"code":400,"error":"Invalid JSON request body"}`,
		},
		{
			name: "a Content-Type with a charset is accepted",
			path: PathHTTPAPI, body: body(ev{typ: "e", device: "device-1"}), headers: []string{"Content-Type", "application/json; charset=UTF-8"}, status: 200,
			want: `{"code":200,"events_ingested":1,"payload_size_bytes":$size,"server_upload_time":$now}`,
		},
		{
			name: "an unknown path is 400 Invalid request path",
			path: "/2/httpapi/", body: body(ev{typ: "e", device: "device-1"}), status: 400,
			want: `{"code":400,"error":"Invalid request path"}`,
		},
		{
			name: "an unknown path with an empty body is 400 Missing request body, which is checked first",
			path: "/v1/track", body: "", status: 400,
			want: `{"code":400,"error":"Missing request body"}`,
		},
		{
			name: "an empty events array is 200 with 0 ingested and the body length (Amplitude-Node#59: 58 bytes)",
			path: PathHTTPAPI, body: `{"api_key":"` + testKey + `","events":[]}`, status: 200,
			want: `{"code":200,"events_ingested":0,"payload_size_bytes":58,"server_upload_time":$now}`,
		},
		{
			name: "unknown top-level keys are tolerated",
			path: PathBatch, body: `{"api_key":"` + testKey + `","client_upload_time":"2026-11-27T12:00:00Z","request_metadata":{"sdk":{}},"options":{},"events":[{"event_type":"e","user_id":"user-1"}]}`, status: 200,
			want: `{"code":200,"events_ingested":1,"payload_size_bytes":$size,"server_upload_time":$now}`,
		},
		{
			name: "events without event_type are listed in events_with_missing_fields",
			path: PathHTTPAPI, body: body(ev{typ: "e", device: "device-1"}, ev{device: "device-1"}, ev{typ: "e", device: "device-1"}, ev{device: "device-2", extra: `"event_type":""`}), status: 400,
			want: `{"code":400,"error":"Invalid field values on some events","events_with_missing_fields":{"event_type":[1,3]}}`,
		},
		{
			name: "events without user_id and device_id are listed under user_id_or_device_id",
			path: PathHTTPAPI, body: body(ev{typ: "e"}, ev{typ: "e", extra: `"user_id":null,"device_id":""`}, ev{typ: "e", user: "user-1"}), status: 400,
			want: `{"code":400,"error":"Invalid field values on some events","events_with_missing_fields":{"user_id_or_device_id":[0,1]}}`,
		},
		{
			name: "an ISO or float time is listed in events_with_invalid_fields",
			path: PathBatch, body: body(ev{typ: "e", device: "device-1", extra: `"time":"2026-11-27T12:00:00Z"`}, ev{typ: "e", device: "device-1", extra: `"time":1764244800000`}, ev{typ: "e", device: "device-1", extra: `"time":1764244800000.5`}, ev{typ: "e", device: "device-1", extra: `"time":1.7e12`}), status: 400,
			want: `{"code":400,"error":"Invalid field values on some events","events_with_invalid_fields":{"time":[0,2,3]}}`,
		},
		{
			name: "mistyped optional fields are listed per field",
			path: PathHTTPAPI, body: body(
				ev{typ: "e", device: "device-1", extra: `"event_properties":[1]`},
				ev{typ: "e", device: "device-1", extra: `"session_id":"123"`},
				ev{typ: "e", device: "device-1", extra: `"user_properties":"x","event_id":1.5`},
				ev{typ: "e", device: "device-1", extra: `"price":"1.0","groups":null,"session_id":-1`},
				ev{device: "device-1", extra: `"event_type":7,"insert_id":12`},
				ev{typ: "e", extra: `"device_id":12345`},
			), status: 400,
			want: `{"code":400,"error":"Invalid field values on some events","events_with_invalid_fields":{"event_properties":[0],"session_id":[1],"user_properties":[2],"event_id":[2],"price":[3],"event_type":[4],"insert_id":[4],"device_id":[5]}}`,
		},
		{
			name: "missing and invalid fields are reported together",
			path: PathBatch, body: body(ev{device: "device-1", extra: `"time":"now"`}, ev{typ: "e", device: "device-1"}, ev{typ: "e", device: "device-1", extra: `"time":"now"`}), status: 400,
			want: `{"code":400,"error":"Invalid field values on some events","events_with_missing_fields":{"event_type":[0]},"events_with_invalid_fields":{"time":[0,2]}}`,
		},
		{
			name: "a short user_id is the observed 400 Invalid id length body",
			path: PathBatch, body: body(ev{typ: "e", user: "1234"}), status: 400,
			want: `{"code":400,"error":"Invalid id length for user_id or device_id","events_with_invalid_id_lengths":{"user_id":[0]}}`,
		},
		{
			name: "blocklisted ids are listed in events_with_invalid_id_lengths, case-insensitively",
			path: PathHTTPAPI, body: body(ev{typ: "e", device: "UNDEFINED"}, ev{typ: "e", device: "device-1", user: "Anonymous"}, ev{typ: "e", device: "00000000-0000-0000-0000-000000000000"}, ev{typ: "e", device: "device-2"}), status: 400,
			want: `{"code":400,"error":"Invalid id length for user_id or device_id","events_with_invalid_id_lengths":{"device_id":[0,2],"user_id":[1]}}`,
		},
		{
			name: "id length counts characters, not bytes",
			path: PathHTTPAPI, body: body(ev{typ: "e", device: "éééé"}, ev{typ: "e", device: "ééééé"}), status: 400,
			want: `{"code":400,"error":"Invalid id length for user_id or device_id","events_with_invalid_id_lengths":{"device_id":[0]}}`,
		},
		{
			name: "options.min_id_length 1 accepts short ids",
			path: PathHTTPAPI, body: `{"api_key":"` + testKey + `","options":{"min_id_length":1},"events":[{"event_type":"e","user_id":"42"}]}`, status: 200,
			want: `{"code":200,"events_ingested":1,"payload_size_bytes":$size,"server_upload_time":$now}`,
		},
		{
			name: "options.min_id_length 1 still rejects the blocklisted id 0",
			path: PathHTTPAPI, body: `{"api_key":"` + testKey + `","options":{"min_id_length":1},"events":[{"event_type":"e","user_id":"0"}]}`, status: 400,
			want: `{"code":400,"error":"Invalid id length for user_id or device_id","events_with_invalid_id_lengths":{"user_id":[0]}}`,
		},
		{
			name: "first-index-only mode lists one index per field",
			cfg:  func(c *Config) { c.FirstIndexOnly = true },
			path: PathHTTPAPI, body: body(ev{device: "device-1"}, ev{device: "device-1"}, ev{typ: "e", device: "abc"}, ev{typ: "e", device: "abc"}), status: 400,
			want: `{"code":400,"error":"Invalid field values on some events","events_with_missing_fields":{"event_type":[0]},"events_with_invalid_id_lengths":{"device_id":[2]}}`,
		},
		{
			name: "silenced devices are 400 Events silenced for device_id with their events",
			cfg:  func(c *Config) { c.SilencedDevices = []string{"silenced-1", "silenced-2"} },
			path: PathHTTPAPI, body: body(ev{typ: "e", device: "device-1"}, ev{typ: "e", device: "silenced-2"}, ev{typ: "e", device: "silenced-1"}, ev{typ: "e", device: "silenced-2"}), status: 400,
			want: `{"code":400,"error":"Events silenced for device_id","eps_threshold":30,"silenced_devices":["silenced-2","silenced-1"],"silenced_events":[1,2,3]}`,
		},
		{
			name: "an invalid event wins over a silenced device",
			cfg:  func(c *Config) { c.SilencedDevices = []string{"silenced-1"} },
			path: PathBatch, body: body(ev{device: "silenced-1"}), status: 400,
			want: `{"code":400,"error":"Invalid field values on some events","events_with_missing_fields":{"event_type":[0]}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			emu, clk := newTest(t, tt.cfg)
			sent, headers := tt.body, tt.headers
			if tt.gzip {
				sent, headers = gz(t, tt.body), append(headers, "Content-Encoding", "gzip")
			}
			got := do(t, emu, tt.path, sent, headers...)
			want := strings.NewReplacer("$size", fmt.Sprint(len(sent)), "$now", fmt.Sprint(clk.Now().UnixMilli())).Replace(tt.want)
			assert.Equal(t, tt.status, got.status)
			assert.JSONEq(t, want, got.body)
			assert.Equal(t, "application/json", got.header.Get("Content-Type"))

			if tt.status != 200 {
				assert.Zero(t, emu.Stats().Ingested, "a rejected request stores nothing")
				assert.Empty(t, emu.AllDevices())
			}
		})
	}
}

// TestAcceptedEventsAreStoredInOrder checks what a 200 stores.
func TestAcceptedEventsAreStoredInOrder(t *testing.T) {
	t.Parallel()
	emu, clk := newTest(t, nil)
	b := body(
		ev{typ: "a", device: "device-1", insert: "i-1", extra: `"time":1764244800000`},
		ev{typ: "b", user: "user-1", insert: "i-2"},
		ev{typ: "c", device: "device-1", user: "user-1"},
	)
	got := do(t, emu, PathHTTPAPI, b)
	require.Equal(t, 200, got.status)
	assert.JSONEq(t, ok200(3, len(b), clk), got.body)

	evs := emu.Events("device-1")
	require.Len(t, evs, 2)
	assert.Equal(t, Ingested{
		Seq: 1, Route: RouteHTTPAPI, Arrival: clk.Now(), Index: 0, InsertID: "i-1", DeviceID: "device-1", EventType: "a",
		Event: []byte(`{"event_type":"a","device_id":"device-1","insert_id":"i-1","time":1764244800000}`),
	}, evs[0])
	assert.Equal(t, "c", evs[1].EventType)
	assert.Equal(t, uint64(3), evs[1].Seq)
	assert.Equal(t, "user-1", evs[1].UserID)

	user := emu.Events(UserDeviceID("user-1"))
	require.Len(t, user, 1)
	assert.Equal(t, "b", user[0].EventType)
	assert.Empty(t, user[0].DeviceID, "the device_id as sent is kept")
	assert.Equal(t, []string{"$user:user-1", "device-1"}, emu.AllDevices())

	st := emu.Stats()
	assert.Equal(t, int64(3), st.Ingested)
	assert.Equal(t, int64(3), st.Accepted)
	assert.Equal(t, map[string]int64{RouteHTTPAPI: 3}, st.IngestedByRoute)
	assert.Equal(t, map[int]int64{200: 1}, st.ByStatus)
	assert.Equal(t, 2, st.Devices)
}

func TestKeepRawOffLeavesEventsOutOfTheLog(t *testing.T) {
	t.Parallel()
	emu, _ := newTest(t, func(c *Config) { c.KeepRaw = false; c.MaxLogEvents = 2 })
	got := do(t, emu, PathBatch, body(deviceEvents("device-1", "x", 3)...))
	require.Equal(t, 200, got.status)
	evs := emu.Events("device-1")
	require.Len(t, evs, 2, "the log stops at MaxLogEvents")
	assert.Nil(t, evs[0].Event)
	st := emu.Stats()
	assert.Equal(t, int64(3), st.Ingested)
	assert.Equal(t, int64(1), st.LogDropped)
}
