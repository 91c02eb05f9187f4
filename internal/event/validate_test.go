package event

import (
	"strings"
	"testing"
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
