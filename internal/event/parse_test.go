package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func reasonOf(err error) Reason {
	if err == nil {
		return ""
	}
	var inv *Invalid
	if !errors.As(err, &inv) {
		return "not-*Invalid"
	}
	return inv.Reason
}

func TestParseReasons(t *testing.T) {
	deep := strings.Repeat(`{"a":`, 64) + "1" + strings.Repeat("}", 64)
	tooDeep := strings.Repeat(`{"a":`, 65) + "1" + strings.Repeat("}", 65)
	deepArr := `{"p":` + strings.Repeat("[", 63) + strings.Repeat("]", 63) + "}"
	tooDeepArr := `{"p":` + strings.Repeat("[", 64) + strings.Repeat("]", 64) + "}"
	tests := []struct {
		name string
		in   string
		want Reason
	}{
		{"minimal", `{"event_type":"e","user_id":"user-1"}`, ""},
		{"empty object", `{}`, ""},
		{"whitespace around", " \t\r\n{ \"event_type\" : \"e\" , \"user_id\" :\"user-1\" } \n", ""},
		{"empty input", ``, ReasonMalformedJSON},
		{"only whitespace", "  \n", ReasonMalformedJSON},
		{"truncated", `{"event_type":"e"`, ReasonMalformedJSON},
		{"trailing comma", `{"event_type":"e",}`, ReasonMalformedJSON},
		{"trailing garbage", `{} x`, ReasonMalformedJSON},
		{"two objects", `{}{}`, ReasonMalformedJSON},
		{"single quotes", `{'a':1}`, ReasonMalformedJSON},
		{"unquoted key", `{a:1}`, ReasonMalformedJSON},
		{"missing colon", `{"a" 1}`, ReasonMalformedJSON},
		{"bad nested literal", `{"p":{"a":[1,tru]}}`, ReasonMalformedJSON},
		{"nested trailing comma", `{"p":[1,2,]}`, ReasonMalformedJSON},
		{"mismatched brackets", `{"p":[1,2}}`, ReasonMalformedJSON},
		{"leading zero", `{"p":01}`, ReasonMalformedJSON},
		{"plus sign", `{"p":+1}`, ReasonMalformedJSON},
		{"bare dot", `{"p":1.}`, ReasonMalformedJSON},
		{"bare exponent", `{"p":1e}`, ReasonMalformedJSON},
		{"minus alone", `{"p":-}`, ReasonMalformedJSON},
		{"NaN", `{"p":NaN}`, ReasonMalformedJSON},
		{"control char in string", "{\"p\":\"a\tb\"}", ReasonMalformedJSON},
		{"bad escape", `{"p":"\x41"}`, ReasonMalformedJSON},
		{"short unicode escape", `{"p":"\u12"}`, ReasonMalformedJSON},
		{"invalid utf8", "{\"p\":\"\xff\"}", ReasonMalformedJSON},
		{"invalid utf8 in key", "{\"\xc3\":1}", ReasonMalformedJSON},
		{"utf8 surrogate bytes", "{\"p\":\"\xed\xa0\x80\"}", ReasonMalformedJSON},
		{"unterminated string", `{"p":"abc}`, ReasonMalformedJSON},
		{"depth 64 ok", deep, ""},
		{"depth 65", tooDeep, ReasonMalformedJSON},
		{"array depth 64 ok", deepArr, ""},
		{"array depth 65", tooDeepArr, ReasonMalformedJSON},
		{"array", `[{"event_type":"e"}]`, ReasonNotObject},
		{"string", `"x"`, ReasonNotObject},
		{"number", ` 12 `, ReasonNotObject},
		{"null", `null`, ReasonNotObject},
		{"bad array", `[1,]`, ReasonMalformedJSON},
		{"malformed beats invalid field", `{"time":"x","p":[}`, ReasonMalformedJSON},
		{"time iso", `{"time":"2024-01-01"}`, ReasonInvalidField},
		{"time float", `{"time":1.5}`, ReasonInvalidField},
		{"time exponent", `{"time":1.5e12}`, ReasonInvalidField},
		{"time int exponent", `{"time":1e12}`, ReasonInvalidField},
		{"time overflow", `{"time":9223372036854775808}`, ReasonInvalidField},
		{"time bool", `{"time":true}`, ReasonInvalidField},
		{"time object", `{"time":{"a":1}}`, ReasonInvalidField},
		{"time max", `{"time":9223372036854775807}`, ""},
		{"time min", `{"time":-9223372036854775808}`, ""},
		{"time under min", `{"time":-9223372036854775809}`, ReasonInvalidField},
		{"user_id number", `{"user_id":12345}`, ReasonInvalidField},
		{"device_id object", `{"device_id":{}}`, ReasonInvalidField},
		{"event_type array", `{"event_type":["e"]}`, ReasonInvalidField},
		{"insert_id number", `{"insert_id":1}`, ReasonInvalidField},
		{"session_id string", `{"session_id":"1"}`, ReasonInvalidField},
		{"session_id float", `{"session_id":1.0}`, ReasonInvalidField},
		{"session_id -1", `{"session_id":-1}`, ""},
		{"event_id bool", `{"event_id":false}`, ReasonInvalidField},
		{"event_properties array", `{"event_properties":[1]}`, ReasonInvalidField},
		{"user_properties string", `{"user_properties":"x"}`, ReasonInvalidField},
		{"groups number", `{"groups":1}`, ReasonInvalidField},
		{"group_properties true", `{"group_properties":true}`, ReasonInvalidField},
		{"typed nulls ok", `{"time":null,"session_id":null,"event_id":null,"event_properties":null,"user_properties":null,"groups":null,"group_properties":null,"user_id":null,"device_id":null,"insert_id":null,"event_type":null}`, ""},
		{"bad then good duplicate", `{"time":"x","time":1}`, ""},
		{"good then bad duplicate", `{"time":1,"time":"x"}`, ReasonInvalidField},
		{"escaped key is typed", `{"ti\u006de":"x"}`, ReasonInvalidField},
		{"case-sensitive keys", `{"Time":"x","USER_ID":1}`, ""},
		{"unknown fields any type", `{"price":"x","ip":1,"library":{"a":[true,false,null]}}`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Parse([]byte(tc.in))
			if got := reasonOf(err); got != tc.want {
				t.Fatalf("Parse(%q) reason = %q (%v), want %q", tc.in, got, err, tc.want)
			}
			if err != nil && (f.EventType != nil || f.UserID != nil || f.HasTime) {
				t.Errorf("fields not zero on error: %+v", f)
			}
			if err != nil && tc.want != ReasonMalformedJSON && tc.name != "depth 65" && !json.Valid([]byte(tc.in)) {
				t.Errorf("encoding/json considers %q invalid", tc.in)
			}
		})
	}
}

func TestParseFields(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Fields
	}{
		{
			name: "all fields",
			in:   `{"event_type":"click","user_id":"user-1","device_id":"dev-1","insert_id":"ins-1","time":1700000000000}`,
			want: Fields{EventType: []byte("click"), UserID: []byte("user-1"), DeviceID: []byte("dev-1"), InsertID: []byte("ins-1"), Time: 1700000000000, HasTime: true, HasInsertIDKey: true},
		},
		{
			name: "null insert_id is absent but its key is seen",
			in:   `{"insert_id":null,"a":1}`,
			want: Fields{HasInsertIDKey: true},
		},
		{
			name: "escaped insert_id key",
			in:   `{"insert\u005fid":"x"}`,
			want: Fields{InsertID: []byte("x"), HasInsertIDKey: true},
		},
		{
			name: "insert_id key seen even if a later duplicate is null",
			in:   `{"insert_id":"x","insert_id":null}`,
			want: Fields{HasInsertIDKey: true},
		},
		{
			name: "nested insert_id is not top-level",
			in:   `{"p":{"insert_id":"x"},"q":"insert_id","insert_idx":1}`,
			want: Fields{},
		},
		{
			name: "unicode escape",
			in:   `{"device_id":"d\u00e9vice-1"}`,
			want: Fields{DeviceID: []byte("dévice-1")},
		},
		{
			name: "quote and backslash escapes",
			in:   `{"user_id":"a\"b\\c\/d\n\t\r\b\f"}`,
			want: Fields{UserID: []byte("a\"b\\c/d\n\t\r\b\f")},
		},
		{
			name: "surrogate pair",
			in:   `{"user_id":"\ud83d\ude00 smile"}`,
			want: Fields{UserID: []byte("😀 smile")},
		},
		{
			name: "lone surrogates become U+FFFD",
			in:   `{"user_id":"\ud800x\udc00\ud800\u0041"}`,
			want: Fields{UserID: []byte("\uFFFDx\uFFFD\uFFFDA")},
		},
		{
			name: "raw utf8",
			in:   `{"user_id":"ユーザー"}`,
			want: Fields{UserID: []byte("ユーザー")},
		},
		{
			name: "duplicate keys last wins",
			in:   `{"user_id":"first","user_id":"second","time":1,"time":2}`,
			want: Fields{UserID: []byte("second"), Time: 2, HasTime: true},
		},
		{
			name: "null after value clears",
			in:   `{"user_id":"first","user_id":null,"time":5,"time":null}`,
			want: Fields{},
		},
		{
			name: "nested fields are not top-level",
			in:   `{"event_properties":{"user_id":"nested","time":"x","a":["}",{"b":"\"]"}]},"device_id":"top-1"}`,
			want: Fields{DeviceID: []byte("top-1")},
		},
		{
			name: "tricky strings in arrays",
			in:   `{"p":["{", "[", "\\", "\"", "}\"", "\u0000"],"event_type":"e"}`,
			want: Fields{EventType: []byte("e")},
		},
		{
			name: "escaped key",
			in:   `{"user\u005fid":"escaped-key"}`,
			want: Fields{UserID: []byte("escaped-key")},
		},
		{
			name: "big numbers elsewhere",
			in:   `{"p":123456789012345678901234567890,"q":-1.5E+300,"r":1e-400,"time":0}`,
			want: Fields{Time: 0, HasTime: true},
		},
		{
			name: "time -1",
			in:   `{"time":-1}`,
			want: Fields{Time: -1, HasTime: true},
		},
		{
			name: "time -0",
			in:   `{"time":-0}`,
			want: Fields{Time: 0, HasTime: true},
		},
		{
			name: "empty strings",
			in:   `{"user_id":"","event_type":""}`,
			want: Fields{UserID: []byte{}, EventType: []byte{}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !fieldsEqual(got, tc.want) {
				t.Fatalf("Parse(%q)\n got  %s\n want %s", tc.in, fmtFields(got), fmtFields(tc.want))
			}
		})
	}
}

func fieldsEqual(a, b Fields) bool {
	eq := func(x, y []byte) bool { return (x == nil) == (y == nil) && string(x) == string(y) }
	return eq(a.EventType, b.EventType) && eq(a.UserID, b.UserID) && eq(a.DeviceID, b.DeviceID) &&
		eq(a.InsertID, b.InsertID) && a.HasTime == b.HasTime && a.Time == b.Time &&
		a.HasInsertIDKey == b.HasInsertIDKey
}

func fmtFields(f Fields) string {
	q := func(b []byte) string {
		if b == nil {
			return "nil"
		}
		return `"` + string(b) + `"`
	}
	s := "event_type=" + q(f.EventType) + " user_id=" + q(f.UserID) + " device_id=" + q(f.DeviceID) + " insert_id=" + q(f.InsertID)
	if f.HasTime {
		b, _ := json.Marshal(f.Time)
		s += " time=" + string(b)
	}
	if f.HasInsertIDKey {
		s += " has_insert_id_key"
	}
	return s
}

func TestParseAliasesRaw(t *testing.T) {
	raw := []byte(`{"device_id":"dev-12345","user_id":"us\u0065r-1"}`)
	f, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(`{"device_id":"`)] = 'X'
	if string(f.DeviceID) != "Xev-12345" {
		t.Errorf("DeviceID does not alias raw: %q", f.DeviceID)
	}
	raw[len(raw)-4] = 'X'
	if string(f.UserID) != "user-1" {
		t.Errorf("escaped UserID should be a copy: %q", f.UserID)
	}
	// Appending to an aliased slice must not overwrite raw.
	_ = append(f.DeviceID, "zzzz"...)
	if raw[len(`{"device_id":"dev-12345`)] != '"' {
		t.Error("append to DeviceID overwrote raw")
	}
}

func TestInvalidError(t *testing.T) {
	_, err := Parse([]byte(`{"time":"secret-value"}`))
	if err == nil || !strings.Contains(err.Error(), "invalid_field") || !strings.Contains(err.Error(), "time") {
		t.Fatalf("error %v", err)
	}
	if strings.Contains(err.Error(), "secret-value") {
		t.Errorf("error leaks content: %v", err)
	}
	_, err = Parse([]byte(`{"a":"secret"x}`))
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("error %v", err)
	}
}

func TestSkipPlainMatchesBytewise(t *testing.T) {
	plain := func(c byte) bool { return c >= 0x20 && c != '"' && c != '\\' && c < 0x80 }
	for c := 0; c < 256; c++ {
		for pos := 0; pos < 20; pos++ {
			for _, fill := range []byte{'a', 0x7f, ' '} {
				buf := bytes.Repeat([]byte{fill}, 20)
				buf[pos] = byte(c)
				if pos+1 < len(buf) {
					buf[pos+1] = 0 // a later special byte must not mask the first
				}
				want := 0
				for want < len(buf) && plain(buf[want]) {
					want++
				}
				// Every start, so that the tail (fewer than eight bytes
				// left) is covered at each offset.
				for start := 0; start <= len(buf); start++ {
					w := max(want, start)
					if start > want {
						w = start
						for w < len(buf) && plain(buf[w]) {
							w++
						}
					}
					if got := skipPlain(buf, start); got != w {
						t.Fatalf("byte %#x at %d (fill %q) from %d: skipPlain = %d, want %d", c, pos, fill, start, got, w)
					}
					if got := skipPlain(buf[:min(len(buf), start+5)], start); got != min(w, start+5) {
						t.Fatalf("short input: byte %#x at %d from %d: skipPlain = %d, want %d", c, pos, start, got, min(w, start+5))
					}
				}
			}
		}
	}
}

func TestSkipDigitsMatchesBytewise(t *testing.T) {
	for c := 0; c < 256; c++ {
		for pos := 0; pos < 12; pos++ {
			buf := []byte("123456789012")
			buf[pos] = byte(c)
			for start := 0; start <= len(buf); start++ {
				want := start
				for want < len(buf) && '0' <= buf[want] && buf[want] <= '9' {
					want++
				}
				if got := skipDigits(buf, start); got != want {
					t.Fatalf("byte %#x at %d from %d: skipDigits = %d, want %d", c, pos, start, got, want)
				}
			}
		}
	}
}

func TestParseInt64(t *testing.T) {
	for _, s := range []string{"0", "-0", "7", "-7", "12345678", "-12345678", "123456789", "99999999",
		"1764237600000", "1000000000000000000", "9223372036854775807", "-9223372036854775808",
		"9223372036854775808", "-9223372036854775809", "9999999999999999999", "10000000000000000000"} {
		want, werr := strconv.ParseInt(s, 10, 64)
		got, ok := parseInt64([]byte(s))
		if ok != (werr == nil) || ok && got != want {
			t.Errorf("parseInt64(%q) = %d, %v; want %d, %v", s, got, ok, want, werr)
		}
	}
}

// scanStringBytewise is the straightforward string scan: the index after the
// closing quote of the string at data[i] == '"', or -1 if it is invalid.
func scanStringBytewise(data []byte, i int) int {
	for i++; i < len(data); {
		switch c := data[i]; {
		case c == '"':
			return i + 1
		case c == '\\':
			if i+1 >= len(data) {
				return -1
			}
			switch data[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+5 >= len(data) {
					return -1
				}
				if _, err := strconv.ParseUint(string(data[i+2:i+6]), 16, 16); err != nil {
					return -1
				}
				i += 6
			default:
				return -1
			}
		case c < 0x20:
			return -1
		default:
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size == 1 {
				return -1
			}
			i += size
		}
	}
	return -1
}

// TestStringFastPathsMatchBytewise checks scanString and its inlined fast
// paths plainString and plainKey, which must either decline (-1) or agree
// with scanString and scanKey, against scanStringBytewise on random strings
// rich in the bytes that stop the SWAR scan.
func TestStringFastPathsMatchBytewise(t *testing.T) {
	alphabet := []byte{'"', '\\', 'a', 'u', '0', 'F', '/', ':', ' ', 0x01, 0x1f, 0x7f, 0x80, 0xbf, 0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0xff}
	rng := rand.New(rand.NewPCG(7, 8))
	for range 300000 {
		data := make([]byte, 1+rng.IntN(24))
		data[0] = '"'
		for k := 1; k < len(data); k++ {
			if rng.IntN(3) == 0 {
				data[k] = alphabet[rng.IntN(len(alphabet))]
			} else {
				data[k] = 'a' + byte(rng.IntN(26))
			}
		}
		checkStringScan(t, data)
		// plainKey must also decline where no key starts.
		if k := rng.IntN(len(data)); data[k] != '"' && plainKey(data, k) >= 0 {
			t.Fatalf("plainKey(%q, %d) accepted a non-string", data, k)
		}
	}
}

// checkStringScan compares scanString, plainString and plainKey at data[0]
// with scanStringBytewise.
func checkStringScan(t *testing.T, data []byte) {
	t.Helper()
	want := scanStringBytewise(data, 0)
	s := scanner{data: data}
	got, esc := s.scanString(0)
	if got != want || got >= 0 && esc != bytes.Contains(data[:got], []byte{'\\'}) {
		t.Fatalf("scanString(%q) = %d, %v; want %d", data, got, esc, want)
	}
	plainOK := want >= 0 && want-2 <= 8 && len(data) >= 10 && !bytes.ContainsAny(data[1:want-1], "\\") && utf8.RuneCount(data[1:want-1]) == want-2
	if got := plainString(data, 0); got != want && (got >= 0 || plainOK) {
		t.Fatalf("plainString(%q) = %d; scanString %d", data, got, want)
	}
	s = scanner{data: data}
	wantKey := s.scanKey(0)
	keyOK := plainOK && len(data) >= 11 && want < len(data) && data[want] == ':'
	if got := plainKey(data, 0); got != wantKey && (got >= 0 || keyOK) {
		t.Fatalf("plainKey(%q) = %d; scanKey %d", data, got, wantKey)
	}
}

// FuzzStringScan is TestStringFastPathsMatchBytewise on fuzzed strings.
func FuzzStringScan(f *testing.F) {
	for _, s := range []string{`"abc":1`, `"abcdefgh"`, `"abcdefgh":`, `"a\"b"`, `"\u00e9xxxxxxx"`, "\"\x01\"xxxxxxxx", "\"\xc3\xa9\":xxxxxxx", `"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 || data[0] != '"' {
			return
		}
		checkStringScan(t, data)
	})
}
