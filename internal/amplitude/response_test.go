package amplitude

import (
	"net/http"
	"reflect"
	"testing"
	"time"
)

// Every status and body variant of amplitude-api.md §4, and the action each implies.
func TestClassify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		header http.Header
		body   string
		want   Result
	}{
		{
			name:   "a 200 is accepted and reports events_ingested",
			status: 200,
			body:   `{"code":200,"events_ingested":50,"payload_size_bytes":50,"server_upload_time":1396381378123}`,
			want:   Result{Class: Accepted, Status: 200, Code: "200", Ingested: 50},
		},
		{
			name:   "a 200 with an empty body is still accepted",
			status: 200,
			want:   Result{Class: Accepted, Status: 200, Code: "200"},
		},
		{
			name:   "a 2xx whose body says code 429 is treated as throttled",
			status: 200,
			body:   `{"code":429,"error":"Too many requests for some devices and users","eps_threshold":30,"throttled_devices":{"dev-1":31},"throttled_events":[0]}`,
			want: Result{Class: Throttled, Status: 200, Code: "429", Message: "Too many requests for some devices and users",
				ThrottledEvents: []int{0}, ThrottledDevices: map[string]float64{"dev-1": 31}},
		},
		{
			name:   "a 400 missing api_key without index lists dead-letters the whole request",
			status: 400,
			body:   `{"code":400,"error":"Request missing required field","missing_field":"api_key"}`,
			want:   Result{Class: Rejected, Status: 400, Code: "400", Message: "Request missing required field"},
		},
		{
			name:   "a 400 with field lists names each listed event with its reason",
			status: 400,
			body: `{"code":400,"error":"Request missing required field","missing_field":"api_key",
			  "events_with_invalid_fields":{"time":[3,4,7]},"events_with_missing_fields":{"event_type":[3,4,8]}}`,
			want: Result{Class: InvalidEvents, Status: 400, Code: "400", Message: "Request missing required field",
				Invalid: map[int]string{3: ReasonMissingField, 4: ReasonMissingField, 7: ReasonInvalidField, 8: ReasonMissingField}},
		},
		{
			name:   "a 400 invalid id length names the event",
			status: 400,
			body:   `{"code":400,"error":"Invalid id length for user_id or device_id","events_with_invalid_id_lengths":{"user_id":[0]}}`,
			want: Result{Class: InvalidEvents, Status: 400, Code: "400", Message: "Invalid id length for user_id or device_id",
				Invalid: map[int]string{0: ReasonInvalidIDLen}},
		},
		{
			name:   "a 400 silenced body names silenced events and throttled events",
			status: 400,
			body: `{"code":400,"error":"Events silenced for device_id","eps_threshold":100,"exceeded_daily_quota_devices":{},
			  "silenced_devices":["silenced_device_id_1","silenced_device_id_2"],"silenced_events":[5,6],
			  "throttled_devices":{"throttled_device_id_1":0,"throttled_device_id_2":100},"throttled_events":[3,4]}`,
			want: Result{Class: InvalidEvents, Status: 400, Code: "400", Message: "Events silenced for device_id",
				Invalid:          map[int]string{5: ReasonSilenced, 6: ReasonSilenced},
				ThrottledEvents:  []int{3, 4},
				ThrottledDevices: map[string]float64{"throttled_device_id_1": 0, "throttled_device_id_2": 100},
				QuotaDevices:     map[string]float64{}},
		},
		{
			name:   "a 400 invalid API key stops delivery and never keeps the key",
			status: 400,
			body:   `{"code":400,"error":"Invalid API key: 0123456789abcdef0123456789abcdef"}`,
			want:   Result{Class: Fatal, Status: 400, Code: "400", Message: "Invalid API key"},
		},
		{
			name:   "a 400 invalid request path stops delivery (wrong URL)",
			status: 400,
			body:   `{"code":400,"error":"Invalid request path"}`,
			want:   Result{Class: Fatal, Status: 400, Code: "400", Message: "Invalid request path"},
		},
		{
			name:   "a 400 invalid JSON body without lists dead-letters the request",
			status: 400,
			body:   `{"code":400,"error":"Invalid JSON request body"}`,
			want:   Result{Class: Rejected, Status: 400, Code: "400", Message: "Invalid JSON request body"},
		},
		{
			name:   "a 403 from the WAF stops delivery",
			status: 403,
			body:   `{"code":403,"error":"Forbidden"}`,
			want:   Result{Class: Fatal, Status: 403, Code: "403", Message: "Forbidden"},
		},
		{
			name:   "a 404 stops delivery instead of dead-lettering everything",
			status: 404,
			body:   `not found`,
			want:   Result{Class: Fatal, Status: 404, Code: "404", Message: "not found"},
		},
		{
			name:   "a 413 asks for a split",
			status: 413,
			body:   `{"code":413,"error":"Payload too large"}`,
			want:   Result{Class: TooLarge, Status: 413, Code: "413", Message: "Payload too large"},
		},
		{
			name:   "a 429 names the throttled events and ids",
			status: 429,
			body: `{"code":429,"error":"Too many requests for some devices and users","eps_threshold":30,
			  "throttled_devices":{"C8F9E604-F01A-4BD9-95C6-8E5357DF265D":31},"throttled_users":{"datamonster@amplitude.com":32},
			  "throttled_events":[3,4,7]}`,
			want: Result{Class: Throttled, Status: 429, Code: "429", Message: "Too many requests for some devices and users",
				ThrottledEvents:  []int{3, 4, 7},
				ThrottledDevices: map[string]float64{"C8F9E604-F01A-4BD9-95C6-8E5357DF265D": 31},
				ThrottledUsers:   map[string]float64{"datamonster@amplitude.com": 32}},
		},
		{
			name:   "a batch 429 carries the daily quota maps",
			status: 429,
			body: `{"code":429,"error":"Too many requests for some devices and users","eps_threshold":1000,
			  "exceeded_daily_quota_users":{"datanom@amplitude.com":500200},"exceeded_daily_quota_devices":{"A1A1A000":500900},
			  "throttled_events":[1,2]}`,
			want: Result{Class: Throttled, Status: 429, Code: "429", Message: "Too many requests for some devices and users",
				ThrottledEvents: []int{1, 2},
				QuotaUsers:      map[string]float64{"datanom@amplitude.com": 500200},
				QuotaDevices:    map[string]float64{"A1A1A000": 500900}},
		},
		{
			name:   "a 429 that names no event backs off the whole request and honours Retry-After",
			status: 429,
			header: http.Header{"Retry-After": []string{"60"}},
			body:   `{"code":429,"error":"Rate limit exceeded","throttled_devices":{},"throttled_users":{}}`,
			want: Result{Class: Retryable, Status: 429, Code: "429", Message: "Rate limit exceeded", RetryAfter: 60 * time.Second,
				ThrottledDevices: map[string]float64{}, ThrottledUsers: map[string]float64{}},
		},
		{
			name:   "a 500 with an empty body is retried",
			status: 500,
			want:   Result{Class: Retryable, Status: 500, Code: "5xx"},
		},
		{
			name:   "a 502 with an HTML body is retried",
			status: 502,
			body:   `<html>Bad Gateway</html>`,
			want:   Result{Class: Retryable, Status: 502, Code: "5xx", Message: "<html>Bad Gateway</html>"},
		},
		{
			name:   "a 503 is retried",
			status: 503,
			body:   `{"code":503,"error":"Service Unavailable"}`,
			want:   Result{Class: Retryable, Status: 503, Code: "5xx", Message: "Service Unavailable"},
		},
		{
			name:   "a 504 is retried",
			status: 504,
			want:   Result{Class: Retryable, Status: 504, Code: "5xx"},
		},
		{
			name:   "a 408 is retried",
			status: 408,
			want:   Result{Class: Retryable, Status: 408, Code: "408"},
		},
		{
			name:   "an unknown 4xx names no event and is dead-lettered, never hot-looped",
			status: 422,
			body:   `{"code":422,"error":"what"}`,
			want:   Result{Class: Rejected, Status: 422, Code: "4xx", Message: "what"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := tt.header
			if h == nil {
				h = http.Header{}
			}
			got := Classify(tt.status, h, []byte(tt.body))
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Classify(%d, %s)\n got: %+v\nwant: %+v", tt.status, tt.body, got, tt.want)
			}
		})
	}
}

func FuzzClassify(f *testing.F) {
	f.Add(429, `{"code":429,"throttled_events":[1],"throttled_devices":{"a":1}}`)
	f.Add(400, `{"code":400,"events_with_invalid_fields":{"time":[0]}}`)
	f.Add(200, `{"code":200}`)
	f.Add(500, `<html>`)
	f.Fuzz(func(t *testing.T, status int, body string) {
		r := Classify(status, http.Header{}, []byte(body))
		if r.Class < Accepted || r.Class > Fatal {
			t.Fatalf("class %d out of range", r.Class)
		}
		if r.Class == Throttled && len(r.ThrottledEvents) == 0 {
			t.Fatalf("throttled without events")
		}
		if r.Class == InvalidEvents && len(r.Invalid) == 0 && len(r.ThrottledEvents) == 0 {
			t.Fatalf("invalid events without indexes")
		}
		if len(r.Message) > maxMessage {
			t.Fatalf("message too long: %d", len(r.Message))
		}
	})
}
