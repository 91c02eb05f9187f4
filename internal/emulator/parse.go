package emulator

import (
	"encoding/json"
	"unicode/utf8"
)

// The request body is validated once by parseEnvelope (valid.go); the
// scanner below then only has to find value boundaries in JSON it knows is
// well formed. This is several times cheaper than decoding each event into a
// map, and it keeps each event's raw bytes for the inspection log without
// re-encoding.

// envelope is the top level of a request body. Values are raw JSON; nil
// means the key was absent.
type envelope struct {
	apiKey  []byte
	events  []byte
	options []byte
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

// scanner walks JSON. Its value, enter and member methods assume JSON
// already validated; the methods in valid.go check as they go.
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

// enter moves past the '{' of the object at the cursor; member then
// returns its members in order.
func (s *scanner) enter() {
	s.ws()
	s.i++
}

// member returns the next member of the object entered, with the key
// unquoted, or ok false past its '}'. Both slices alias the body; callers
// compare keys with switch string(key), which does not allocate.
func (s *scanner) member() (key, val []byte, ok bool) {
	for {
		switch s.peek() {
		case '}':
			s.i++
			return nil, nil, false
		case ',':
			s.i++
			continue
		}
		k := s.value()
		s.ws()
		s.i++ // :
		return unquoteKey(k), s.value(), true
	}
}

// unquoteKey avoids the decoder for the usual key without escapes.
func unquoteKey(raw []byte) []byte {
	if !hasEscape(raw) {
		return raw[1 : len(raw)-1]
	}
	var k string
	_ = json.Unmarshal(raw, &k) // raw is valid JSON, so this cannot fail
	return []byte(k)
}

func hasEscape(raw []byte) bool {
	for _, c := range raw {
		if c == '\\' {
			return true
		}
	}
	return false
}

// parseEvents splits the events array into events, validating each as it
// goes (see validate.go). ok is false when events is not an array of
// objects.
func parseEvents(raw []byte, minLen int, firstOnly bool, dst []checked) (_ []checked, _ validation, ok bool) {
	var v validation
	s := scanner{b: raw}
	if s.peek() != '[' {
		return dst, v, false
	}
	s.i++
	for {
		switch s.peek() {
		case ']':
			return dst, v, true
		case ',':
			s.i++
			continue
		case '{':
		default:
			return dst, v, false
		}
		start := s.i
		var f fields
		s.enter()
		for key, val, ok := s.member(); ok; key, val, ok = s.member() {
			f.set(key, val)
		}
		dst = append(dst, checked{})
		c := &dst[len(dst)-1]
		c.raw = raw[start:s.i]
		v.check(len(dst)-1, &f, c, minLen, firstOnly)
	}
}

// isNull reports an absent or null value.
func isNull(v []byte) bool {
	return v == nil || (len(v) == 4 && v[0] == 'n')
}

// strBytes returns the contents of a JSON string value, aliasing v unless
// it has escapes. ok is false for non-strings.
func strBytes(v []byte) ([]byte, bool) {
	if len(v) < 2 || v[0] != '"' {
		return nil, false
	}
	if !hasEscape(v) {
		return v[1 : len(v)-1], true
	}
	var out string
	if err := json.Unmarshal(v, &out); err != nil {
		return nil, false
	}
	return []byte(out), true
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
func validID(id []byte, minLen int) bool {
	if utf8.RuneCount(id) < minLen {
		return false
	}
	if len(id) > len("00000000-0000-0000-0000-000000000000") {
		return true
	}
	var lower [36]byte
	for i, c := range id {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	_, bad := invalidIDs[string(lower[:len(id)])]
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
	s.enter()
	for key, val, ok := s.member(); ok; key, val, ok = s.member() {
		if string(key) != "min_id_length" || !isInteger(val) || val[0] == '-' || len(val) > 6 {
			continue
		}
		v := 0
		for _, c := range val {
			v = v*10 + int(c-'0')
		}
		n = v
	}
	return n
}
