package event

import (
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		minID int
		want  Reason
	}{
		{"ok user", `{"event_type":"e","user_id":"user1"}`, 0, ""},
		{"ok device", `{"event_type":"e","device_id":"dev01"}`, 0, ""},
		{"missing event_type", `{"user_id":"user1"}`, 0, ReasonMissingEventType},
		{"null event_type", `{"event_type":null,"user_id":"user1"}`, 0, ReasonMissingEventType},
		{"empty event_type", `{"event_type":"","user_id":"user1"}`, 0, ReasonMissingEventType},
		{"missing ids", `{"event_type":"e"}`, 0, ReasonMissingID},
		{"null ids", `{"event_type":"e","user_id":null,"device_id":null}`, 0, ReasonMissingID},
		{"empty ids", `{"event_type":"e","user_id":"","device_id":""}`, 0, ReasonMissingID},
		{"empty user_id ignored", `{"event_type":"e","user_id":"","device_id":"dev01"}`, 0, ""},
		{"short user_id", `{"event_type":"e","user_id":"1234"}`, 0, ReasonInvalidIDLength},
		{"short device_id", `{"event_type":"e","user_id":"user1","device_id":"d"}`, 0, ReasonInvalidIDLength},
		{"min id length 1", `{"event_type":"e","user_id":"7"}`, 1, ""},
		{"min id length 10", `{"event_type":"e","user_id":"user-12345"}`, 10, ""},
		{"min id length 10 short", `{"event_type":"e","user_id":"user-1234"}`, 10, ReasonInvalidIDLength},
		{"negative min id length means default", `{"event_type":"e","user_id":"1234"}`, -3, ReasonInvalidIDLength},
		// "éééé" is 8 bytes but 4 runes.
		{"unicode runes short", `{"event_type":"e","user_id":"éééé"}`, 0, ReasonInvalidIDLength},
		{"unicode runes ok", `{"event_type":"e","user_id":"ééééé"}`, 0, ""},
		{"escaped unicode runes short", `{"event_type":"e","user_id":"\u00e9\u00e9\u00e9\u00e9"}`, 0, ReasonInvalidIDLength},
		{"emoji runes", `{"event_type":"e","user_id":"😀😀😀😀😀"}`, 0, ""},
		{"blocklisted beats length", `{"event_type":"e","user_id":"null"}`, 0, ReasonBlocklistedID},
		{"blocklisted device", `{"event_type":"e","user_id":"user1","device_id":"Unknown"}`, 0, ReasonBlocklistedID},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Parse([]byte(tc.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := reasonOf(f.Validate(tc.minID)); got != tc.want {
				t.Fatalf("Validate(%d) of %s = %q, want %q", tc.minID, tc.in, got, tc.want)
			}
		})
	}
}

func TestBlocklist(t *testing.T) {
	blocked := []string{"anonymous", "nil", "none", "null", "n/a", "na", "undefined", "unknown",
		`""`, "00000000-0000-0000-0000-000000000000", "{}", "lmy47d", "0", "-1"}
	for _, id := range blocked {
		for _, v := range []string{id, strings.ToUpper(id), strings.ToUpper(id[:1]) + id[1:]} {
			f := Fields{EventType: []byte("e"), DeviceID: []byte(v)}
			if got := reasonOf(f.Validate(1)); got != ReasonBlocklistedID {
				t.Errorf("device_id %q: %q, want blocklisted", v, got)
			}
			f = Fields{EventType: []byte("e"), UserID: []byte(v)}
			if got := reasonOf(f.Validate(1)); got != ReasonBlocklistedID {
				t.Errorf("user_id %q: %q, want blocklisted", v, got)
			}
		}
	}
	// JSON `"\"\""` decodes to the two-character value "" and is blocklisted.
	f, err := Parse([]byte(`{"event_type":"e","user_id":"\"\""}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := reasonOf(f.Validate(1)); got != ReasonBlocklistedID {
		t.Errorf(`user_id "\"\"": %q`, got)
	}
	for _, id := range []string{"anonymous1", "nulls", "00000000-0000-0000-0000-0000000000001", "-10", "00", "unknówn", "ñull"} {
		f := Fields{EventType: []byte("e"), UserID: []byte(id)}
		if err := f.Validate(1); err != nil {
			t.Errorf("%q: %v", id, err)
		}
	}
}

func TestKey(t *testing.T) {
	tests := []struct {
		f    Fields
		want string
	}{
		{Fields{DeviceID: []byte("dev-1"), UserID: []byte("user-1")}, "dev-1"},
		{Fields{UserID: []byte("user-1")}, "u:user-1"},
		{Fields{DeviceID: []byte{}, UserID: []byte("user-1")}, "u:user-1"},
		{Fields{}, ""},
	}
	for _, tc := range tests {
		if got := tc.f.Key(); got != tc.want {
			t.Errorf("Key() = %q, want %q", got, tc.want)
		}
		if got := string(tc.f.KeyBytes([]byte("x"))); got != "x"+tc.want {
			t.Errorf("KeyBytes = %q, want %q", got, "x"+tc.want)
		}
	}
	f := Fields{UserID: []byte("user-1")}
	buf := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(100, func() { buf = f.KeyBytes(buf[:0]) }); n != 0 {
		t.Errorf("KeyBytes allocs = %v", n)
	}
}

// blocklistedBytewise is the plain definition blocklisted implements.
func blocklistedBytewise(id []byte) bool {
	lower := make([]byte, len(id))
	for i, c := range id {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	switch string(lower) {
	case "anonymous", "nil", "none", "null", "n/a", "na", "undefined", "unknown",
		`""`, "00000000-0000-0000-0000-000000000000", "{}", "lmy47d", "0", "-1":
		return true
	}
	return false
}

func TestBlocklistedMatchesBytewise(t *testing.T) {
	listed := []string{"anonymous", "nil", "none", "null", "n/a", "na", "undefined", "unknown",
		`""`, "00000000-0000-0000-0000-000000000000", "{}", "lmy47d", "0", "-1"}
	rng := rand.New(rand.NewPCG(1, 2))
	var cases [][]byte
	for _, s := range listed {
		cases = append(cases, []byte(s), []byte(strings.ToUpper(s)), []byte(s+"x"), []byte(s[1:]))
	}
	for range 20000 {
		// Mutate a listed value: flip case, replace or drop a byte.
		b := []byte(listed[rng.IntN(len(listed))])
		for range 1 + rng.IntN(2) {
			k := rng.IntN(len(b))
			switch rng.IntN(4) {
			case 0:
				b[k] ^= 0x20
			case 1:
				b[k] = byte(rng.IntN(256))
			case 2:
				b = append(b[:k:k], b[k+1:]...)
			}
			if len(b) == 0 {
				break
			}
		}
		cases = append(cases, b)
	}
	for _, id := range cases {
		if got, want := blocklisted(id), blocklistedBytewise(id); got != want {
			t.Errorf("blocklisted(%q) = %v, want %v", id, got, want)
		}
	}
}

func TestAtLeastRunesMatchesRuneCount(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	pieces := []string{"a", "Z", "-", "\x00", "\x7f", "\x80", "\xff", "é", "€", "𝄞", "\xe2\x82", "\xf0\x9d", "\xed\xa0\x80"}
	for range 50000 {
		var b []byte
		for range rng.IntN(24) {
			b = append(b, pieces[rng.IntN(len(pieces))]...)
		}
		n := rng.IntN(30) - 2
		if got, want := atLeastRunes(b, n), utf8.RuneCount(b) >= n; got != want {
			t.Fatalf("atLeastRunes(%q, %d) = %v, want %v", b, n, got, want)
		}
	}
}
