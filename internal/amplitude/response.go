package amplitude

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Class is what the caller must do with a request after Amplitude answered.
// Every Amplitude status maps to exactly one Class here, and nowhere else.
type Class int

const (
	// Accepted: every event of the request was ingested (or deduplicated).
	Accepted Class = iota
	// InvalidEvents: a 400 that lists event indexes. Nothing was ingested.
	// The listed events are dead-lettered with their reason, the rest resent.
	InvalidEvents
	// Rejected: a 4xx that names no events (e.g. a 400 without index lists).
	// Resending cannot help, so the whole request is dead-lettered: never a hot loop.
	Rejected
	// TooLarge: 413. Split the request in half; a single event is dead-lettered.
	TooLarge
	// Throttled: 429. Hold back the throttled keys, resend the other events now.
	Throttled
	// Retryable: 5xx, 408, timeouts and connection errors, and a 429 that names
	// no events. Resend the same request, in order, after a backoff.
	Retryable
	// Fatal: 403, an invalid API key, or a wrong URL. Delivery stops and the
	// service reports unhealthy; nothing is committed, nothing dead-lettered.
	Fatal
)

func (c Class) String() string {
	switch c {
	case Accepted:
		return "accepted"
	case InvalidEvents:
		return "invalid_events"
	case Rejected:
		return "rejected"
	case TooLarge:
		return "too_large"
	case Throttled:
		return "throttled"
	case Retryable:
		return "retryable"
	case Fatal:
		return "fatal"
	}
	return "unknown"
}

// Per-event rejection reasons reported by Amplitude. They are bounded and
// become DLQ headers and metric labels.
const (
	ReasonMissingField   = "missing_field"
	ReasonInvalidField   = "invalid_field"
	ReasonInvalidIDLen   = "invalid_id_length"
	ReasonSilenced       = "silenced"
	ReasonDailyQuota     = "daily_quota"
	ReasonRejected       = "rejected"
	ReasonTooLarge       = "too_large"
	ReasonInvalidRequest = "invalid_request"
)

// Result is a classified Amplitude response.
type Result struct {
	Class  Class
	Status int    // HTTP status; 0 when no response arrived
	Code   string // bounded label: "200", "400", "403", "413", "429", "5xx", "timeout", "error", ...
	// Message is Amplitude's "error" text (or the transport error), for logs.
	// It never contains the API key.
	Message string
	// Invalid maps an event index to its rejection reason (InvalidEvents).
	Invalid map[int]string
	// ThrottledEvents lists the indexes Amplitude throttled (Throttled, and
	// sometimes InvalidEvents).
	ThrottledEvents []int
	// ThrottledDevices and ThrottledUsers are the throttled ids (values: current EPS).
	ThrottledDevices map[string]float64
	ThrottledUsers   map[string]float64
	// QuotaDevices and QuotaUsers are ids over the daily quota (values: daily counts).
	QuotaDevices map[string]float64
	QuotaUsers   map[string]float64
	// RetryAfter is the Retry-After header, when present.
	RetryAfter time.Duration
	// Ingested is events_ingested of a 200.
	Ingested int
}

// body is the union of every documented response body (amplitude-api.md §4).
// Unknown keys are ignored; missing maps and arrays stay nil.
type body struct {
	Code                     *int               `json:"code"`
	Error                    string             `json:"error"`
	MissingField             string             `json:"missing_field"`
	EventsIngested           int                `json:"events_ingested"`
	EventsWithInvalidFields  map[string][]int   `json:"events_with_invalid_fields"`
	EventsWithMissingFields  map[string][]int   `json:"events_with_missing_fields"`
	EventsWithInvalidIDLens  map[string][]int   `json:"events_with_invalid_id_lengths"`
	SilencedEvents           []int              `json:"silenced_events"`
	ThrottledEvents          []int              `json:"throttled_events"`
	ThrottledDevices         map[string]float64 `json:"throttled_devices"`
	ThrottledUsers           map[string]float64 `json:"throttled_users"`
	ExceededDailyQuotaDevice map[string]float64 `json:"exceeded_daily_quota_devices"`
	ExceededDailyQuotaUsers  map[string]float64 `json:"exceeded_daily_quota_users"`
}

// maxMessage bounds the error text we keep for logs.
const maxMessage = 256

// Classify maps an HTTP status, headers and body to a Result. It is pure and
// never fails: an unparsable body falls back to the status alone, since 5xx
// bodies may be empty or HTML (amplitude-api.md §4, "500 / 502 / 504").
func Classify(status int, header http.Header, raw []byte) Result {
	var b body
	parsed := json.Unmarshal(raw, &b) == nil
	r := Result{Status: status, Code: codeLabel(status)}
	if parsed {
		r.Message = truncate(b.Error)
	} else if status >= 300 {
		r.Message = truncate(strings.TrimSpace(string(raw)))
	}
	r.RetryAfter = retryAfter(header.Get("Retry-After"))

	switch {
	case status >= 200 && status < 300:
		// RudderStack has seen code 429 inside 2xx bodies; trust the body then.
		if parsed && b.Code != nil && *b.Code == http.StatusTooManyRequests {
			r.Code = "429"
			return throttled(r, &b)
		}
		r.Class = Accepted
		r.Ingested = b.EventsIngested
		return r

	case status == http.StatusBadRequest:
		if strings.HasPrefix(b.Error, "Invalid API key") {
			// The real text echoes the key after the colon: never keep it.
			r.Class = Fatal
			r.Message = "Invalid API key"
			return r
		}
		if strings.HasPrefix(b.Error, "Invalid request path") {
			// A wrong base URL: dead-lettering every event would be worse than stopping.
			r.Class = Fatal
			return r
		}
		inv := map[int]string{}
		addIdx := func(m map[string][]int, reason string) {
			for _, idx := range m {
				for _, i := range idx {
					if _, ok := inv[i]; !ok {
						inv[i] = reason
					}
				}
			}
		}
		addIdx(b.EventsWithMissingFields, ReasonMissingField)
		addIdx(b.EventsWithInvalidFields, ReasonInvalidField)
		addIdx(b.EventsWithInvalidIDLens, ReasonInvalidIDLen)
		for _, i := range b.SilencedEvents {
			if _, ok := inv[i]; !ok {
				inv[i] = ReasonSilenced
			}
		}
		if len(inv) > 0 || len(b.ThrottledEvents) > 0 {
			r.Class = InvalidEvents
			r.Invalid = inv
			r.ThrottledEvents = b.ThrottledEvents
			r.ThrottledDevices = b.ThrottledDevices
			r.ThrottledUsers = b.ThrottledUsers
			r.QuotaDevices = b.ExceededDailyQuotaDevice
			r.QuotaUsers = b.ExceededDailyQuotaUsers
			return r
		}
		r.Class = Rejected
		return r

	case status == http.StatusUnauthorized, status == http.StatusForbidden, status == http.StatusNotFound:
		r.Class = Fatal
		return r

	case status == http.StatusRequestTimeout:
		r.Class = Retryable
		return r

	case status == http.StatusRequestEntityTooLarge:
		r.Class = TooLarge
		return r

	case status == http.StatusTooManyRequests:
		return throttled(r, &b)

	case status >= 500:
		r.Class = Retryable
		return r
	}
	// Any other status (1xx, 3xx, other 4xx) names no event: resending the
	// same bytes cannot succeed.
	r.Class = Rejected
	return r
}

func throttled(r Result, b *body) Result {
	r.ThrottledEvents = b.ThrottledEvents
	r.ThrottledDevices = b.ThrottledDevices
	r.ThrottledUsers = b.ThrottledUsers
	r.QuotaDevices = b.ExceededDailyQuotaDevice
	r.QuotaUsers = b.ExceededDailyQuotaUsers
	if len(b.ThrottledEvents) == 0 {
		// A "standard" 429 that names nothing (project-level limit): back off the whole request.
		r.Class = Retryable
		return r
	}
	r.Class = Throttled
	return r
}

func codeLabel(status int) string {
	switch {
	case status >= 500:
		return "5xx"
	case status == 200, status == 400, status == 401, status == 403, status == 404, status == 408, status == 413, status == 429:
		return strconv.Itoa(status)
	case status >= 200 && status < 300:
		return "2xx"
	case status >= 400:
		return "4xx"
	}
	return "other"
}

func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

func truncate(s string) string {
	if len(s) > maxMessage {
		return s[:maxMessage]
	}
	return s
}
