package emulator

import (
	"encoding/json"
	"strings"
	"unicode/utf8"
)

// The request body is checked with json.Valid first; the scanner below then
// only has to find value boundaries in JSON it knows is well formed. This is
// several times cheaper than decoding each event into a map, and it keeps
// each event's raw bytes for the inspection log without re-encoding.

// envelope is the top level of a request body. Values are raw JSON; nil
// means the key was absent.
type envelope struct {
	apiKey  []byte
	events  []byte
	options []byte
}

// event holds the fields the emulator validates, as raw JSON values (nil
// when absent), plus the whole event.
type event struct {
	raw []byte

	eventType, userID, deviceID, insertID []byte
	// Fields that must be integers, numbers or objects; see typedFields.
	typed [len(typedFields)][]byte
}

type fieldKind uint8

const (
	kindInteger fieldKind = iota
	kindNumber
	kindObject
)

// typedFields are the optional fields whose JSON type Amplitude documents;
// a value of another type is reported in events_with_invalid_fields.
var typedFields = [...]struct {
	name string
	kind fieldKind
}{
	{"time", kindInteger},
	{"session_id", kindInteger},
	{"event_id", kindInteger},
	{"quantity", kindInteger},
	{"price", kindNumber},
	{"revenue", kindNumber},
	{"location_lat", kindNumber},
	{"location_lng", kindNumber},
	{"event_properties", kindObject},
	{"user_properties", kindObject},
	{"groups", kindObject},
	{"group_properties", kindObject},
}

// scanner walks JSON already accepted by json.Valid.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next non-space byte, or 0 at the end.
func (s *scanner) peek() byte {
	s.ws()
	if s.i >= len(s.b) {
		return 0
	}
	return s.b[s.i]
}

// value returns the raw bytes of the value at the cursor and moves past it.
func (s *scanner) value() []byte {
	s.ws()
	start := s.i
	switch s.b[s.i] {
	case '"':
		s.skipString()
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				s.skipString()
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return s.b[start:s.i]
				}
			}
			s.i++
		}
	default: // number, true, false, null
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return s.b[start:s.i]
			}
			s.i++
		}
	}
	return s.b[start:s.i]
}

func (s *scanner) skipString() {
	s.i++ // opening quote
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '\\':
			s.i += 2
			continue
		case '"':
			s.i++
			return
		}
		s.i++
	}
}

// object calls fn for each member of the object at the cursor, in order.
// Keys are unquoted; fn may keep neither key nor value past the call unless
// it copies them (value aliases the body, which is fine to keep).
func (s *scanner) object(fn func(key string, val []byte)) {
	s.ws()
	s.i++ // {
	for {
		switch s.peek() {
		case '}':
			s.i++
			return
		case ',':
			s.i++
			continue
		}
		k := s.value()
		s.ws()
		s.i++ // :
		fn(unquoteKey(k), s.value())
	}
}

// unquoteKey avoids the decoder for the usual key without escapes. The
// string conversion does not allocate when the result is only compared.
func unquoteKey(raw []byte) string {
	if !hasEscape(raw) {
		return string(raw[1 : len(raw)-1])
	}
	var k string
	_ = json.Unmarshal(raw, &k) // raw is valid JSON, so this cannot fail
	return k
}

func hasEscape(raw []byte) bool {
	for _, c := range raw {
		if c == '\\' {
			return true
		}
	}
	return false
}

// parseEnvelope splits a valid JSON body. ok is false when the body is not
// a JSON object.
func parseEnvelope(body []byte) (env envelope, ok bool) {
	s := scanner{b: body}
	if s.peek() != '{' {
		return env, false
	}
	s.object(func(key string, val []byte) {
		switch key {
		case "api_key":
			env.apiKey = val
		case "events":
			env.events = val
		case "options":
			env.options = val
		}
	})
	return env, true
}

// parseEvents splits the events array. ok is false when events is not an
// array of objects.
func parseEvents(raw []byte, dst []event) ([]event, bool) {
	s := scanner{b: raw}
	if s.peek() != '[' {
		return dst, false
	}
	s.i++
	for {
		switch s.peek() {
		case ']':
			return dst, true
		case ',':
			s.i++
			continue
		case '{':
		default:
			return dst, false
		}
		start := s.i
		var ev event
		s.object(func(key string, val []byte) {
			switch key {
			case "event_type":
				ev.eventType = val
			case "user_id":
				ev.userID = val
			case "device_id":
				ev.deviceID = val
			case "insert_id":
				ev.insertID = val
			default:
				for i := range typedFields {
					if typedFields[i].name == key {
						ev.typed[i] = val
						break
					}
				}
			}
		})
		ev.raw = raw[start:s.i]
		dst = append(dst, ev)
	}
}

// isNull reports an absent or null value.
func isNull(v []byte) bool {
	return v == nil || (len(v) == 4 && v[0] == 'n')
}

// str decodes a JSON string value. ok is false for non-strings.
func str(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' {
		return "", false
	}
	if !hasEscape(v) {
		return string(v[1 : len(v)-1]), true
	}
	var out string
	if err := json.Unmarshal(v, &out); err != nil {
		return "", false
	}
	return out, true
}

// isInteger accepts JSON numbers without fraction or exponent. Amplitude
// rejects a float or ISO string in "time"; 1.7e12 is a float too.
func isInteger(v []byte) bool {
	if len(v) > 0 && v[0] == '-' {
		v = v[1:]
	}
	if len(v) == 0 {
		return false
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func isNumber(v []byte) bool {
	return len(v) > 0 && (v[0] == '-' || (v[0] >= '0' && v[0] <= '9'))
}

func hasKind(v []byte, k fieldKind) bool {
	switch k {
	case kindInteger:
		return isInteger(v)
	case kindNumber:
		return isNumber(v)
	default:
		return v[0] == '{'
	}
}

// invalidIDs are the values Amplitude documents as invalid user_id or
// device_id, matched case-insensitively (an inference). `""` is the
// two-character string of two double quotes.
var invalidIDs = map[string]struct{}{
	"anonymous": {}, "nil": {}, "none": {}, "null": {}, "n/a": {}, "na": {},
	"undefined": {}, "unknown": {}, `""`: {}, "00000000-0000-0000-0000-000000000000": {},
	"{}": {}, "lmy47d": {}, "0": {}, "-1": {},
}

// validID reports whether an id passes the length and blocklist rules.
func validID(id string, minLen int) bool {
	if utf8.RuneCountInString(id) < minLen {
		return false
	}
	if len(id) > len("00000000-0000-0000-0000-000000000000") {
		return true
	}
	_, bad := invalidIDs[strings.ToLower(id)]
	return !bad
}

// minIDLength reads options.min_id_length; anything but a non-negative
// integer leaves the default of 5.
func minIDLength(options []byte) int {
	const def = 5
	if isNull(options) || options[0] != '{' {
		return def
	}
	n := def
	s := scanner{b: options}
	s.object(func(key string, val []byte) {
		if key != "min_id_length" || !isInteger(val) || val[0] == '-' || len(val) > 6 {
			return
		}
		v := 0
		for _, c := range val {
			v = v*10 + int(c-'0')
		}
		n = v
	})
	return n
}
