package event

import (
	"encoding/binary"
	"math/bits"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// maxDepth caps the nesting of objects and arrays; the event object itself is
// level 1. Amplitude allows property nesting up to 40, so 64 rejects nothing
// real while bounding the work per byte and the container bit set (uint64).
const maxDepth = 64

// field identifies a top-level key Parse cares about. The order is the order
// in which type errors are reported when several fields are wrong.
type field uint8

const (
	fNone field = iota
	fEventType
	fUserID
	fDeviceID
	fInsertID
	fTime
	fSessionID
	fEventID
	fEventProperties
	fUserProperties
	fGroups
	fGroupProperties
	numFields
)

// kind is the JSON type Amplitude requires for a field.
type kind uint8

const (
	kAny kind = iota
	kString
	kInt
	kObject
)

func (f field) kind() kind {
	switch f {
	case fEventType, fUserID, fDeviceID, fInsertID:
		return kString
	case fTime, fSessionID, fEventID:
		return kInt
	case fEventProperties, fUserProperties, fGroups, fGroupProperties:
		return kObject
	}
	return kAny
}

func (f field) name() string {
	switch f {
	case fEventType:
		return "event_type"
	case fUserID:
		return "user_id"
	case fDeviceID:
		return "device_id"
	case fInsertID:
		return "insert_id"
	case fTime:
		return "time"
	case fSessionID:
		return "session_id"
	case fEventID:
		return "event_id"
	case fEventProperties:
		return "event_properties"
	case fUserProperties:
		return "user_properties"
	case fGroups:
		return "groups"
	case fGroupProperties:
		return "group_properties"
	}
	return ""
}

func lookupField(key []byte) field {
	switch string(key) { // no allocation: the compiler compares in place
	case "event_type":
		return fEventType
	case "user_id":
		return fUserID
	case "device_id":
		return fDeviceID
	case "insert_id":
		return fInsertID
	case "time":
		return fTime
	case "session_id":
		return fSessionID
	case "event_id":
		return fEventID
	case "event_properties":
		return fEventProperties
	case "user_properties":
		return fUserProperties
	case "groups":
		return fGroups
	case "group_properties":
		return fGroupProperties
	}
	return fNone
}

// lookupEscapedField matches a key whose JSON text contains escapes, e.g.
// "user\u005fid", which encoding/json decodes to user_id.
func lookupEscapedField(key []byte) field {
	// Unescaping never lengthens a string, and the longest known key written
	// entirely as \uXXXX escapes is 16*6 bytes; anything longer cannot match.
	const maxEscaped = len("group_properties") * 6
	if len(key) > maxEscaped {
		return fNone
	}
	var buf [maxEscaped]byte
	return lookupField(appendUnescaped(buf[:0], key))
}

// scanner holds the input and the first syntax error. It lives on the
// caller's stack; the methods return the index after what they consumed, or
// -1 after recording an error.
type scanner struct {
	data  []byte
	err   string
	errAt int
}

func (s *scanner) fail(i int, msg string) int {
	if s.err == "" {
		s.err, s.errAt = msg, i
	}
	return -1
}

func (s *scanner) malformed() *Invalid {
	return &Invalid{Reason: ReasonMalformedJSON, Detail: s.err + " at byte " + strconv.Itoa(s.errAt)}
}

// wsBits has bit c set for each JSON whitespace byte c (all are < 64).
const wsBits = 1<<' ' | 1<<'\t' | 1<<'\n' | 1<<'\r'

func skipWS(data []byte, i int) int {
	// Compact JSON is the common case: one comparison rejects any byte above ' '.
	for i < len(data) && data[i] <= ' ' && wsBits>>data[i]&1 != 0 {
		i++
	}
	return i
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// SWAR constants: a byte repeated in every lane of a uint64, so that one
// 64-bit operation looks at eight input bytes.
const (
	lanes01 = 0x0101010101010101
	lanes7f = 0x7f7f7f7f7f7f7f7f
	lanes80 = 0x8080808080808080
)

// stringStops returns x (eight input bytes, little-endian) with the high bit
// of lane k set exactly when byte k ends a run of plain string content: '"',
// '\\', a control character (< 0x20) or a non-ASCII byte (>= 0x80), and all
// other bits clear. Each test adds at most 0x7f+0x7f to a lane masked to
// seven bits, so no carry crosses lanes and every lane is exact.
func stringStops(x uint64) uint64 {
	t := x & lanes7f
	// High bit of each term set iff t != '"', t != '\\', t >= 0x20. One
	// expression keeps the function cheap enough for plainString to inline.
	return (x | ^(((t ^ lanes01*'"') + lanes7f) & ((t ^ lanes01*'\\') + lanes7f) & (t + lanes01*(0x80-0x20)))) & lanes80
}

// nonDigits is stringStops for numbers: the high bit of lane k is set
// exactly when byte k of x is not an ASCII digit. v = byte^'0' is a digit's
// value and >= 10 for every other byte (xor is a bijection).
func nonDigits(x uint64) uint64 {
	v := x ^ lanes01*'0'
	return ((v&lanes7f + lanes01*(0x80-10)) | v) & lanes80
}

// skipPlain returns the index of the first byte at or after i that is not
// printable ASCII other than '"' and '\\', or len(data) if there is none,
// looking at eight bytes per step (SWAR).
func skipPlain(data []byte, i int) int {
	for i+8 <= len(data) {
		if m := stringStops(binary.LittleEndian.Uint64(data[i:])); m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
		i += 8
	}
	return skipPlainTail(data, i)
}

// skipPlainTail is skipPlain for i+8 > len(data).
func skipPlainTail(data []byte, i int) int {
	if i >= len(data) {
		return i
	}
	if len(data) >= 8 {
		// The last eight bytes, shifted so that data[i] is the lowest lane
		// (1 to 7 lanes): the zero lanes shifted in count as stops and sit at
		// len(data) and beyond, so "no stop in the rest" yields len(data).
		x := binary.LittleEndian.Uint64(data[len(data)-8:]) >> (8 * uint(i+8-len(data)))
		return i + bits.TrailingZeros64(stringStops(x))>>3
	}
	for i < len(data) {
		if c := data[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			break
		}
		i++
	}
	return i
}

// skipDigits returns the index of the first byte at or after i that is not
// an ASCII digit.
func skipDigits(data []byte, i int) int {
	for i+8 <= len(data) {
		if m := nonDigits(binary.LittleEndian.Uint64(data[i:])); m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
		i += 8
	}
	for i < len(data) && data[i]-'0' < 10 {
		i++
	}
	return i
}

// scanString validates the string starting at data[i] == '"' and returns the
// index after the closing quote and whether it contains escapes.
//
// This is the fast path, for the common case of a short string of plain
// ASCII: the first stop byte found eight bytes at a time is then usually the
// closing quote. Everything else continues in scanStringRest.
func (s *scanner) scanString(i int) (int, bool) {
	data := s.data
	i++
	for i+8 <= len(data) {
		if m := stringStops(binary.LittleEndian.Uint64(data[i:])); m != 0 {
			i += bits.TrailingZeros64(m) >> 3
			if data[i] == '"' {
				return i + 1, false
			}
			break
		}
		i += 8
	}
	return s.scanStringRest(i)
}

// plainString returns the index after the string starting at data[i] == '"'
// if its content is at most eight bytes of plain ASCII (no escapes), else
// -1. It is small enough to be inlined, so the common short string costs no
// call; callers fall back to scanString, which returns the same index for
// such a string. When the first eight content bytes hold no stop,
// TrailingZeros64 is 64 and the ninth byte, data[i+9], is tested: a quote
// there still ends a plain string.
func plainString(data []byte, i int) int {
	if i+10 > len(data) {
		return -1
	}
	b := data[i+1 : i+10]
	k := bits.TrailingZeros64(stringStops(binary.LittleEndian.Uint64(b))) >> 3
	if b[k] != '"' {
		return -1
	}
	return i + 2 + k
}

// plainKey is scanKey's fast path, for a key that plainString would accept
// followed directly by the colon: it returns the index after the colon, or
// -1 to have the caller use scanKey. It is just over the inlining budget,
// but one call to a leaf instead of scanKey's two still measured about 10 %
// of ParseTraffic (inlining it by hand gained nothing more).
func plainKey(data []byte, i int) int {
	if i+11 > len(data) {
		return -1
	}
	b := data[i : i+11]
	k := bits.TrailingZeros64(stringStops(binary.LittleEndian.Uint64(b[1:]))) >> 3
	if b[0] != '"' || b[k+1] != '"' || b[k+2] != ':' {
		return -1
	}
	return i + 3 + k
}

// scanStringRest continues scanString at data[i], inside a string that has
// had no escapes so far.
func (s *scanner) scanStringRest(i int) (int, bool) {
	data := s.data
	esc := false
	for {
		i = skipPlain(data, i)
		if i >= len(data) {
			return s.fail(i, "unterminated string"), esc
		}
		switch c := data[i]; {
		case c == '"':
			return i + 1, esc
		case c == '\\':
			esc = true
			if i+1 >= len(data) {
				return s.fail(i, "unterminated string"), esc
			}
			switch data[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+5 >= len(data) || !isHex(data[i+2]) || !isHex(data[i+3]) || !isHex(data[i+4]) || !isHex(data[i+5]) {
					return s.fail(i, "invalid \\u escape"), esc
				}
				i += 6
			default:
				return s.fail(i, "invalid escape"), esc
			}
		case c < 0x20:
			return s.fail(i, "control character in string"), esc
		default:
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size == 1 {
				return s.fail(i, "invalid UTF-8 in string"), esc
			}
			i += size
		}
	}
}

// scanNumber validates the number starting at data[i] and returns the index
// after it and whether it is an integer (no fraction, no exponent).
func (s *scanner) scanNumber(i int) (int, bool) {
	data := s.data
	if data[i] == '-' {
		i++
	}
	switch {
	case i >= len(data):
		return s.fail(i, "invalid number"), false
	case data[i] == '0':
		i++
	case data[i]-'1' < 9:
		i = skipDigits(data, i+1)
	default:
		return s.fail(i, "invalid number"), false
	}
	if i >= len(data) || data[i] != '.' && data[i] != 'e' && data[i] != 'E' {
		return i, true
	}
	if data[i] == '.' {
		start := i + 1
		if i = skipDigits(data, start); i == start {
			return s.fail(i, "invalid number"), false
		}
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		start := i
		if i = skipDigits(data, start); i == start {
			return s.fail(i, "invalid number"), false
		}
	}
	return i, false
}

// parseInt64 converts an integer token already validated by scanNumber.
func parseInt64(b []byte) (int64, bool) {
	neg := b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) > 19 {
		return 0, false
	}
	// 19 digits cannot overflow uint64.
	var u uint64
	for len(b) >= 8 {
		u = u*100000000 + eightDigits(binary.LittleEndian.Uint64(b))
		b = b[8:]
	}
	for _, c := range b {
		u = u*10 + uint64(c-'0')
	}
	if neg {
		if u > 1<<63 {
			return 0, false
		}
		return -int64(u), true // u == 1<<63 wraps to MinInt64, as intended
	}
	if u > 1<<63-1 {
		return 0, false
	}
	return int64(u), true
}

// eightDigits returns the value of eight ASCII digits loaded little-endian
// (the first digit in the lowest lane) with three multiplications instead of
// a chain of eight (the simdjson method): pairs of digits, then pairs of
// pairs, then the two halves.
func eightDigits(x uint64) uint64 {
	x -= lanes01 * '0'
	x = x*10 + x>>8 // lanes 0, 2, 4, 6: two-digit values
	const (
		mask = 0x000000ff000000ff
		mul1 = 100 + 1000000<<32
		mul2 = 1 + 10000<<32
	)
	return (x&mask*mul1 + x>>16&mask*mul2) >> 32
}

// scanLiteral validates true, false or null at data[i].
func (s *scanner) scanLiteral(i int) int {
	data := s.data
	if len(data)-i >= 4 {
		switch binary.LittleEndian.Uint32(data[i:]) {
		case 'n' | 'u'<<8 | 'l'<<16 | 'l'<<24, 't' | 'r'<<8 | 'u'<<16 | 'e'<<24:
			return i + 4
		case 'f' | 'a'<<8 | 'l'<<16 | 's'<<24:
			if len(data)-i >= 5 && data[i+4] == 'e' {
				return i + 5
			}
		}
	}
	return s.fail(i, "invalid literal")
}

// scanKey validates an object key at data[i] (after whitespace) and the colon
// after it, returning the index after the colon.
func (s *scanner) scanKey(i int) int {
	data := s.data
	if i >= len(data) || data[i] != '"' {
		return s.fail(i, "expected object key")
	}
	if i, _ = s.scanString(i); i < 0 {
		return -1
	}
	if i < len(data) && data[i] == ':' { // compact JSON
		return i + 1
	}
	i = skipWS(data, i)
	if i >= len(data) || data[i] != ':' {
		return s.fail(i, "expected ':'")
	}
	return i + 1
}

// skipValue validates one JSON value starting at data[i] (leading whitespace
// allowed) nested inside depth containers and returns the index after it.
// It is iterative: open containers are tracked in a bit set, one bit per
// level (set = object, clear = array), which maxDepth keeps within 64 bits.
func (s *scanner) skipValue(i, depth int) int {
	data := s.data
	var stack uint64
	d := 0 // containers opened by this call
	for {
		// A value is expected at i. Tests in order of frequency in events.
		i = skipWS(data, i)
		if i >= len(data) {
			return s.fail(i, "unexpected end of input")
		}
		c := data[i]
		if c == '"' {
			if j := plainString(data, i); j >= 0 {
				i = j
			} else {
				i, _ = s.scanString(i)
			}
		} else if c == '{' || c == '[' {
			if depth+d >= maxDepth {
				return s.fail(i, "nesting deeper than "+strconv.Itoa(maxDepth))
			}
			if c == '{' {
				stack |= 1 << d
			} else {
				stack &^= 1 << d
			}
			d++
			i = skipWS(data, i+1)
			if i < len(data) && data[i] == c+2 { // '{'+2 == '}', '['+2 == ']'
				d--
				i++
			} else if c == '[' {
				continue // the first element
			} else if j := plainKey(data, i); j >= 0 {
				i = j
				continue // the first member's value
			} else if i = s.scanKey(i); i < 0 {
				return -1
			} else {
				continue // the first member's value
			}
		} else if c-'0' < 10 || c == '-' {
			i, _ = s.scanNumber(i)
		} else if c == 't' || c == 'f' || c == 'n' {
			i = s.scanLiteral(i)
		} else {
			return s.fail(i, "unexpected character")
		}
		if i < 0 {
			return -1
		}
		// A value is complete: close containers until one continues.
		for {
			if d == 0 {
				return i
			}
			i = skipWS(data, i)
			if i >= len(data) {
				return s.fail(i, "unexpected end of input")
			}
			obj := stack&(1<<(d-1)) != 0
			c := data[i]
			if c == ',' {
				i++
				if obj {
					if j := plainKey(data, skipWS(data, i)); j >= 0 {
						i = j
					} else if i = s.scanKey(skipWS(data, i)); i < 0 {
						return -1
					}
				}
				break
			}
			if obj && c == '}' || !obj && c == ']' {
				d--
				i++
				continue
			}
			return s.fail(i, "expected ',' or end of container")
		}
	}
}

// strSpan is the last occurrence of a string field: data[start:end] is the
// string's content without quotes.
type strSpan struct {
	start, end int
	esc, set   bool
}

// Parse validates raw as exactly one JSON object (surrounding whitespace
// allowed) and extracts Fields. Duplicate top-level keys: last wins (like
// encoding/json). A JSON null for an optional field counts as absent. On
// error it returns zero Fields and an *Invalid; a syntax error anywhere takes
// precedence over a field type error.
func Parse(raw []byte) (Fields, error) {
	s := scanner{data: raw}
	var (
		strs    [fInsertID + 1]strSpan
		t       int64
		hasTime bool
		seen    uint16 // bit f set: field f occurred as a key
		bad     uint16 // bit f set: the last occurrence of field f had the wrong type
	)
	i := skipWS(raw, 0)
	if i >= len(raw) {
		s.fail(i, "empty input")
		return Fields{}, s.malformed()
	}
	if raw[i] != '{' {
		if i = s.skipValue(i, 0); i >= 0 {
			if i = skipWS(raw, i); i == len(raw) {
				return Fields{}, &Invalid{Reason: ReasonNotObject, Detail: "top-level value is not an object"}
			}
			s.fail(i, "data after top-level value")
		}
		return Fields{}, s.malformed()
	}
	i = skipWS(raw, i+1)
	if i < len(raw) && raw[i] == '}' {
		i++
	} else {
		for {
			if i >= len(raw) || raw[i] != '"' {
				s.fail(i, "expected object key")
				return Fields{}, s.malformed()
			}
			ke, esc := plainString(raw, i), false
			if ke < 0 {
				ke, esc = s.scanString(i)
			}
			if ke < 0 {
				return Fields{}, s.malformed()
			}
			var f field
			if esc {
				f = lookupEscapedField(raw[i+1 : ke-1])
			} else {
				f = lookupField(raw[i+1 : ke-1])
			}
			seen |= 1 << f
			i = skipWS(raw, ke)
			if i >= len(raw) || raw[i] != ':' {
				s.fail(i, "expected ':'")
				return Fields{}, s.malformed()
			}
			i = skipWS(raw, i+1)
			if i >= len(raw) {
				s.fail(i, "unexpected end of input")
				return Fields{}, s.malformed()
			}
			c := raw[i]
			ok := true
			switch f.kind() {
			case kString:
				switch c {
				case '"':
					vs := i
					if i, esc = plainString(raw, i), false; i < 0 {
						i, esc = s.scanString(vs)
					}
					if i >= 0 {
						strs[f] = strSpan{start: vs + 1, end: i - 1, esc: esc, set: true}
					}
				case 'n':
					strs[f] = strSpan{}
					i = s.scanLiteral(i)
				default:
					strs[f] = strSpan{}
					ok = false
					i = s.skipValue(i, 1)
				}
			case kInt:
				switch {
				case c == '-' || '0' <= c && c <= '9':
					vs := i
					var isInt bool
					i, isInt = s.scanNumber(i)
					if i >= 0 {
						var v int64
						if isInt {
							v, ok = parseInt64(raw[vs:i])
						} else {
							ok = false
						}
						if f == fTime {
							t, hasTime = v, ok // v is 0 unless ok
						}
					}
				case c == 'n':
					if f == fTime {
						t, hasTime = 0, false
					}
					i = s.scanLiteral(i)
				default:
					if f == fTime {
						t, hasTime = 0, false
					}
					ok = false
					i = s.skipValue(i, 1)
				}
			case kObject:
				ok = c == '{' || c == 'n'
				i = s.skipValue(i, 1)
			default:
				if c == '"' { // most members are strings: skip skipValue's dispatch
					if j := plainString(raw, i); j >= 0 {
						i = j
					} else {
						i, _ = s.scanString(i)
					}
				} else {
					i = s.skipValue(i, 1)
				}
			}
			if i < 0 {
				return Fields{}, s.malformed()
			}
			if ok {
				bad &^= 1 << f
			} else {
				bad |= 1 << f
			}
			i = skipWS(raw, i)
			if i < len(raw) && raw[i] == ',' {
				i = skipWS(raw, i+1)
				continue
			}
			if i < len(raw) && raw[i] == '}' {
				i++
				break
			}
			s.fail(i, "expected ',' or '}'")
			return Fields{}, s.malformed()
		}
	}
	if i = skipWS(raw, i); i != len(raw) {
		s.fail(i, "data after top-level value")
		return Fields{}, s.malformed()
	}
	if bad&^1 != 0 { // bit 0 (fNone) is meaningless
		for f := fEventType; f < numFields; f++ {
			if bad&(1<<f) != 0 {
				return Fields{}, &Invalid{Reason: ReasonInvalidField, Detail: f.name() + " must be " + kindName(f.kind())}
			}
		}
	}
	return Fields{
		EventType: strs[fEventType].bytes(raw),
		UserID:    strs[fUserID].bytes(raw),
		DeviceID:  strs[fDeviceID].bytes(raw),
		InsertID:  strs[fInsertID].bytes(raw),
		Time:      t,
		HasTime:   hasTime,

		HasInsertIDKey: seen&(1<<fInsertID) != 0,
	}, nil
}

func kindName(k kind) string {
	switch k {
	case kString:
		return "a string"
	case kInt:
		return "an integer in int64 range"
	case kObject:
		return "an object"
	}
	return "valid"
}

func (sp strSpan) bytes(raw []byte) []byte {
	if !sp.set {
		return nil
	}
	b := raw[sp.start:sp.end:sp.end]
	if sp.esc {
		return appendUnescaped(make([]byte, 0, len(b)), b)
	}
	return b
}

// appendUnescaped appends the decoded content of a validated JSON string
// (without quotes) to dst. Escaped surrogates that do not form a valid pair
// become U+FFFD, exactly as encoding/json decodes them.
func appendUnescaped(dst, s []byte) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c != '\\' {
			j := i + 1
			for j < len(s) && s[j] != '\\' {
				j++
			}
			dst = append(dst, s[i:j]...)
			i = j
			continue
		}
		switch s[i+1] {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hex4(s[i+2:])
			i += 6
			if utf16.IsSurrogate(r) {
				if i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
					if dec := utf16.DecodeRune(r, hex4(s[i+2:])); dec != utf8.RuneError {
						r = dec
						i += 6
					} else {
						r = utf8.RuneError
					}
				} else {
					r = utf8.RuneError
				}
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default: // '"', '\\', '/'
			dst = append(dst, s[i+1])
		}
		i += 2
	}
	return dst
}

func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case c <= '9':
			c -= '0'
		case c <= 'F':
			c -= 'A' - 10
		default:
			c -= 'a' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}
