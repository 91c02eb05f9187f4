package event

import (
	"encoding/binary"
	"errors"
	"strconv"
	"unicode/utf8"
)

// Reason is a bounded, stable machine-readable rejection reason (used as a
// DLQ header and a metric label). Never add values derived from input.
type Reason string

// The complete set of rejection reasons.
const (
	ReasonMalformedJSON    Reason = "malformed_json"     // not valid JSON (including invalid UTF-8 and nesting > 64)
	ReasonNotObject        Reason = "not_object"         // valid JSON but not an object
	ReasonMissingEventType Reason = "missing_event_type" // event_type absent, null or ""
	ReasonMissingID        Reason = "missing_id"         // neither user_id nor device_id (non-empty string)
	ReasonInvalidIDLength  Reason = "invalid_id_length"  // shorter than min_id_length (runes)
	ReasonBlocklistedID    Reason = "blocklisted_id"     // a value Amplitude refuses as an ID, case-insensitive
	ReasonInvalidField     Reason = "invalid_field"      // a typed field has the wrong type
	ReasonTooLarge         Reason = "too_large"          // reserved for the caller (event bigger than a request may carry)
)

// DefaultMinIDLength is Amplitude's default options.min_id_length.
const DefaultMinIDLength = 5

// Invalid is the error Parse and Validate return. Detail is a short
// human-readable explanation; it names at most a field and a byte offset and
// never contains event content.
type Invalid struct {
	Reason Reason
	Detail string
}

// ReasonOf is the reason an error of Parse or Validate gives:
// ReasonMalformedJSON unless it is an *Invalid.
func ReasonOf(err error) Reason {
	var inv *Invalid
	if errors.As(err, &inv) {
		return inv.Reason
	}
	return ReasonMalformedJSON
}

func (e *Invalid) Error() string {
	if e.Detail == "" {
		return "invalid event: " + string(e.Reason)
	}
	return "invalid event: " + string(e.Reason) + ": " + e.Detail
}

// Fields are the top-level fields routing needs. Byte slices alias raw (valid
// while raw is) unless the JSON string had escapes, in which case they are
// freshly unescaped copies. An absent or null field is nil; an empty JSON
// string is a non-nil empty slice, and Validate treats it as absent.
type Fields struct {
	EventType []byte
	DeviceID  []byte
	UserID    []byte
	InsertID  []byte
	Time      int64 // ms since epoch; valid when HasTime
	HasTime   bool

	// HasInsertIDKey reports whether the object has a top-level insert_id
	// member at all, whatever its value (null included) and however its key
	// is spelled (escapes included). When it is false the (*Fields) insert-id
	// methods splice without searching raw for a member to remove.
	HasInsertIDKey bool
}

// Validate applies Amplitude's rules to parsed fields: event_type present and
// non-empty; at least one of user_id/device_id present (non-empty); each
// present id not blocklisted and at least minIDLength runes long
// (minIDLength <= 0 means DefaultMinIDLength). It returns nil or *Invalid.
//
// The blocklist is checked before the length, so "null" is reported as
// blocklisted_id whatever min_id_length is.
func (f *Fields) Validate(minIDLength int) error {
	if minIDLength <= 0 {
		minIDLength = DefaultMinIDLength
	}
	if len(f.EventType) == 0 {
		return &Invalid{Reason: ReasonMissingEventType, Detail: "event_type is absent or empty"}
	}
	if len(f.UserID) == 0 && len(f.DeviceID) == 0 {
		return &Invalid{Reason: ReasonMissingID, Detail: "neither user_id nor device_id is set"}
	}
	if err := checkID("user_id", f.UserID, minIDLength); err != nil {
		return err
	}
	return checkID("device_id", f.DeviceID, minIDLength)
}

func checkID(name string, id []byte, minLen int) error {
	if len(id) == 0 {
		return nil
	}
	if blocklisted(id) {
		return &Invalid{Reason: ReasonBlocklistedID, Detail: name + " is a value Amplitude refuses as an id"}
	}
	if !atLeastRunes(id, minLen) {
		return &Invalid{Reason: ReasonInvalidIDLength, Detail: name + " is shorter than " + strconv.Itoa(minLen) + " characters"}
	}
	return nil
}

// atLeastRunes reports whether utf8.RuneCount(id) >= n without counting
// more than it must: counting was most of Validate's time.
func atLeastRunes(id []byte, n int) bool {
	switch {
	case len(id) < n: // a rune is at least one byte
		return false
	case len(id)/4 >= n: // ... and at most four (an invalid byte counts as one)
		return true
	case n <= 8 && len(id) >= 8 && binary.LittleEndian.Uint64(id)&lanes80 == 0:
		return true // eight ASCII bytes are eight runes
	}
	return utf8.RuneCount(id) >= n
}

// blocklisted reports whether id is one of the values Amplitude documents as
// invalid IDs. Matching is ASCII case-insensitive: the documentation does not
// specify the folding, and all listed values are ASCII.
//
// Real IDs are rarely of a blocklisted length, so the length decides first
// and most IDs are not looked at at all (Validate runs once per event).
func blocklisted(id []byte) bool {
	switch len(id) {
	case 1, 2, 3, 4, 6, 7, 9:
	case 36:
		// Folding cannot turn any byte into '0' or '-', so an exact
		// comparison is the case-insensitive one.
		return string(id) == "00000000-0000-0000-0000-000000000000"
	default:
		return false
	}
	var buf [9]byte
	for i, c := range id {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	switch string(buf[:len(id)]) {
	case "anonymous", "nil", "none", "null", "n/a", "na", "undefined", "unknown",
		`""`, "{}", "lmy47d", "0", "-1":
		return true
	}
	return false
}

// Key returns the ordering key: device_id, or "u:"+user_id when there is no
// device_id (Amplitude then sets device_id to a hash of user_id, so events of
// that user are one device for ordering and dedup). It returns "" when
// neither is set.
func (f *Fields) Key() string {
	if len(f.DeviceID) > 0 {
		return string(f.DeviceID)
	}
	if len(f.UserID) > 0 {
		return "u:" + string(f.UserID)
	}
	return ""
}

// KeyBytes appends Key to dst without allocating when dst has room.
func (f *Fields) KeyBytes(dst []byte) []byte {
	if len(f.DeviceID) > 0 {
		return append(dst, f.DeviceID...)
	}
	if len(f.UserID) > 0 {
		dst = append(dst, "u:"...)
		return append(dst, f.UserID...)
	}
	return dst
}
