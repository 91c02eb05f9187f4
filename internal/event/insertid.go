package event

import (
	"bytes"
	"strconv"
	"unicode/utf8"
)

// StableInsertID returns a deterministic insert_id for a message without one,
// derived from its Kafka coordinates: "as-" + 16 hex digits of FNV-1a 64 of
// topic + "-" + partition + "-" + offset, e.g. "as-af63bd4c8601b7df-3-1024".
// A redelivered message gets the same id, so Amplitude deduplicates it
// (7-day window per device). It is at most 59 ASCII bytes.
func StableInsertID(topic string, partition int, offset int64) string {
	var buf [64]byte
	return string(AppendStableInsertID(buf[:0], topic, partition, offset))
}

// AppendStableInsertID is the allocation-free variant of StableInsertID
// appending to dst.
func AppendStableInsertID(dst []byte, topic string, partition int, offset int64) []byte {
	return strconv.AppendInt(AppendStableInsertIDPrefix(dst, topic, partition), offset, 10)
}

// MaxStableInsertID is the length of the longest StableInsertID.
const MaxStableInsertID = 59

// AppendStableInsertIDPrefix appends what the StableInsertIDs of a
// partition's messages begin with: the id is the prefix and the offset in
// decimal. A partition computes it once.
func AppendStableInsertIDPrefix(dst []byte, topic string, partition int) []byte {
	// FNV-1a 64, inlined: hash/fnv returns an interface and would allocate.
	const (
		offset64 = 14695981039346656037
		prime64  = 1099511628211
		hexDigit = "0123456789abcdef"
	)
	h := uint64(offset64)
	for i := 0; i < len(topic); i++ {
		h ^= uint64(topic[i])
		h *= prime64
	}
	dst = append(dst, "as-"...)
	for shift := 60; shift >= 0; shift -= 4 {
		dst = append(dst, hexDigit[h>>uint(shift)&0xf])
	}
	dst = append(dst, '-')
	dst = strconv.AppendInt(dst, int64(partition), 10)
	return append(dst, '-')
}

// InsertIDAt tells how to put an insert_id member first in raw, an object
// that Parse accepted without an insert_id key (Fields.HasInsertIDKey is
// false), without copying raw: raw[:open+1], then "insert_id":"<id>", then
// a comma when comma is true, then raw[open+1:] is what
// (*Fields).AppendWithInsertID returns for it, byte for byte. When open is
// 0 and comma true, AppendInsertIDHead writes the part before raw[1:].
func InsertIDAt(raw []byte) (open int, comma bool) {
	open = skipWS(raw, 0)
	j := skipWS(raw, open+1)
	return open, j >= len(raw) || raw[j] != '}'
}

// AppendInsertIDHead appends {"insert_id":"<prefix><offset>", : the head
// that, followed by raw[1:], is (*Fields).WithStableInsertID of an event
// raw whose InsertIDAt is (0, true), prefix being its partition's
// AppendStableInsertIDPrefix. A request body is written that way, without
// a copy of the event (amplitude.Event).
func AppendInsertIDHead(dst, prefix []byte, offset int64) []byte {
	dst = append(dst, `{"insert_id":"`...)
	dst = append(dst, prefix...)
	dst = strconv.AppendInt(dst, offset, 10)
	return append(dst, `",`...)
}

// WithInsertID returns a copy of the (already validated) object raw with
// "insert_id":"<id>" inserted as its first member. Leading and trailing
// whitespace and an empty object are preserved correctly.
//
// Any top-level insert_id member already in raw (such as "insert_id":null,
// which Parse treats as absent) is removed, because Amplitude, like
// encoding/json, would let a later duplicate win; the remaining members are
// then re-emitted with the whitespace between them dropped. id should be
// ASCII without characters that need escaping; anything else is escaped
// (invalid UTF-8 becomes U+FFFD) so the result is always valid JSON. If raw
// is not an object, WithInsertID returns an unchanged copy.
func WithInsertID(raw []byte, id string) []byte {
	return AppendWithInsertID(make([]byte, 0, len(raw)+len(id)+len(`"insert_id":"",`)+8), raw, id)
}

// AppendWithInsertID is WithInsertID appending to dst, so a request body can
// be built without an intermediate copy of the event.
func AppendWithInsertID(dst, raw []byte, id string) []byte {
	dst, open := openWithInsertID(dst, raw)
	if open < 0 {
		return dst
	}
	dst = appendJSONString(dst, id)
	return closeWithInsertID(dst, raw, open, mayHaveInsertID(raw))
}

// AppendWithInsertID is the package-level AppendWithInsertID for an event
// that has been parsed: f must be what Parse returned without error for raw,
// and raw must not have changed since. f.HasInsertIDKey replaces the search
// of raw for an existing member to remove, which costs about as much as
// copying raw.
func (f *Fields) AppendWithInsertID(dst, raw []byte, id string) []byte {
	dst, open := openWithInsertID(dst, raw)
	if open < 0 {
		return dst
	}
	dst = appendJSONString(dst, id)
	return closeWithInsertID(dst, raw, open, f.HasInsertIDKey)
}

// WithStableInsertID returns a copy of raw with the member
// "insert_id":"<StableInsertID(topic, partition, offset)>" inserted first,
// like WithInsertID, for an event that has been parsed (f as for
// (*Fields).AppendWithInsertID). It allocates only the result, sized
// exactly; the id is never a string of its own.
func (f *Fields) WithStableInsertID(raw []byte, topic string, partition int, offset int64) []byte {
	var buf [64]byte
	id := AppendStableInsertID(buf[:0], topic, partition, offset)
	dst, open := openWithInsertID(make([]byte, 0, len(raw)+len(`"insert_id":"",`)+len(id)), raw)
	if open < 0 {
		return dst
	}
	dst = append(dst, '"')
	dst = append(dst, id...) // ASCII letters, digits and '-': nothing to escape
	dst = append(dst, '"')
	return closeWithInsertID(dst, raw, open, f.HasInsertIDKey)
}

// AppendWithStableInsertID is WithStableInsertID appending to dst.
func (f *Fields) AppendWithStableInsertID(dst, raw []byte, topic string, partition int, offset int64) []byte {
	dst, open := openWithInsertID(dst, raw)
	if open < 0 {
		return dst
	}
	dst = append(dst, '"')
	dst = AppendStableInsertID(dst, topic, partition, offset)
	dst = append(dst, '"')
	return closeWithInsertID(dst, raw, open, f.HasInsertIDKey)
}

// openWithInsertID appends raw up to its opening brace and the key
// "insert_id": after it, and returns the index of the brace in raw, for the
// caller to append the value and then closeWithInsertID. If raw is not an
// object it appends raw unchanged and returns -1.
func openWithInsertID(dst, raw []byte) ([]byte, int) {
	i := skipWS(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return append(dst, raw...), -1
	}
	dst = append(dst, raw[:i+1]...)
	return append(dst, `"insert_id":`...), i
}

// closeWithInsertID appends the members of the object whose brace is at
// raw[open], after the insert_id member openWithInsertID began. If hasKey,
// any top-level insert_id member of raw is left out.
func closeWithInsertID(dst, raw []byte, open int, hasKey bool) []byte {
	if hasKey {
		if out, ok := appendMembersWithout(dst, raw, open, fInsertID); ok {
			return out
		}
		// raw is malformed (it was not validated): fall back to plain
		// insertion. Only bytes past len(dst) were written.
	}
	j := skipWS(raw, open+1)
	if j >= len(raw) || raw[j] != '}' {
		dst = append(dst, ',')
	}
	return append(dst, raw[open+1:]...)
}

// mayHaveInsertID is a cheap filter: an insert_id key is either spelled out
// or written with escapes.
func mayHaveInsertID(raw []byte) bool {
	return bytes.IndexByte(raw, '\\') >= 0 || bytes.Contains(raw, []byte("insert_id"))
}

// appendMembersWithout appends ,member for every top-level member of the
// object starting at raw[open] except those whose key is drop, then the
// closing brace and whatever follows it. ok is false if raw is malformed.
func appendMembersWithout(out, raw []byte, open int, drop field) ([]byte, bool) {
	s := scanner{data: raw}
	i := skipWS(raw, open+1)
	if i < len(raw) && raw[i] == '}' {
		return append(out, raw[i:]...), true
	}
	for {
		ks := i
		if i >= len(raw) || raw[i] != '"' {
			return nil, false
		}
		ke, esc := s.scanString(i)
		if ke < 0 {
			return nil, false
		}
		var f field
		if esc {
			f = lookupEscapedField(raw[i+1 : ke-1])
		} else {
			f = lookupField(raw[i+1 : ke-1])
		}
		i = skipWS(raw, ke)
		if i >= len(raw) || raw[i] != ':' {
			return nil, false
		}
		if i = s.skipValue(i+1, 1); i < 0 {
			return nil, false
		}
		if f != drop {
			out = append(out, ',')
			out = append(out, raw[ks:i]...)
		}
		i = skipWS(raw, i)
		if i >= len(raw) {
			return nil, false
		}
		switch raw[i] {
		case ',':
			i = skipWS(raw, i+1)
		case '}':
			return append(out, raw[i:]...), true
		default:
			return nil, false
		}
	}
}

// appendJSONString appends s as a JSON string, escaping what must be escaped
// and replacing invalid UTF-8 with U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	const hexDigit = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
			i++
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexDigit[c>>4], hexDigit[c&0xf])
			i++
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			i++
		default:
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				dst = append(dst, `\ufffd`...)
			} else {
				dst = append(dst, s[i:i+size]...)
			}
			i += size
		}
	}
	return append(dst, '"')
}
