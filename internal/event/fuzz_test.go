package event

import (
	"bytes"
	"encoding/json"
	"strconv"
	"testing"
	"unicode/utf8"
)

// jsonDepth returns the maximum nesting depth of a syntactically valid JSON
// document.
func jsonDepth(raw []byte) int {
	depth, maxD, inStr := 0, 0, false
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case inStr && c == '\\':
			i++
		case c == '"':
			inStr = !inStr
		case inStr:
		case c == '{' || c == '[':
			depth++
			maxD = max(maxD, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return maxD
}

func isIntToken(b []byte) bool {
	if len(b) == 0 || bytes.ContainsAny(b, ".eE") {
		return false
	}
	_, err := strconv.ParseInt(string(b), 10, 64)
	return err == nil
}

// expectFields derives what Parse must return from encoding/json's decoding.
// ok is false if some typed field has the wrong type.
func expectFields(t *testing.T, m map[string]json.RawMessage) (want Fields, ok bool) {
	ok = true
	str := func(name string) []byte {
		v, present := m[name]
		if !present || string(v) == "null" {
			return nil
		}
		var s string
		if v[0] != '"' || json.Unmarshal(v, &s) != nil {
			ok = false
			return nil
		}
		return []byte(s)
	}
	want.EventType = str("event_type")
	want.UserID = str("user_id")
	want.DeviceID = str("device_id")
	want.InsertID = str("insert_id")
	_, want.HasInsertIDKey = m["insert_id"]
	for _, name := range []string{"time", "session_id", "event_id"} {
		v, present := m[name]
		if !present || string(v) == "null" {
			continue
		}
		if !isIntToken(v) {
			ok = false
			continue
		}
		if name == "time" {
			want.Time, _ = strconv.ParseInt(string(v), 10, 64)
			want.HasTime = true
		}
	}
	for _, name := range []string{"event_properties", "user_properties", "groups", "group_properties"} {
		if v, present := m[name]; present && v[0] != '{' && string(v) != "null" {
			ok = false
		}
	}
	return want, ok
}

var fuzzSeeds = []string{
	`{"event_type":"click","user_id":"user-1","device_id":"d\u00e9vice-1","insert_id":"abc","time":1700000000000}`,
	`{"event_type":"e","event_properties":{"a":[1,2.5e3,"x\"y",{"b":null}],"c":true},"user_properties":{"$set":{"k":"v"}}}`,
	`{"time":1.5e12}`,
	`{"time":"2024-01-01","user_id":null}`,
	`{"user_id":"a","user_id":"b","user\u005fid":"c"}`,
	` [1, {"a": "b"}] `,
	"{\"p\":\"\xff\"}",
	`{"p":[[[[[[[[[[]]]]]]]]]]}`,
	`{"user_id":"\ud83d\ude00\ud800"}`,
	`{"time":-9223372036854775808,"session_id":-1,"event_id":9223372036854775808}`,
	`{} `,
	`{"a":01}`,
}

func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		fields, err := Parse(raw)
		reason := reasonOf(err)
		if err != nil && reason == "not-*Invalid" {
			t.Fatalf("error is not *Invalid: %v", err)
		}
		valid := json.Valid(raw)
		wellFormed := reason != ReasonMalformedJSON
		if !utf8.Valid(raw) && wellFormed {
			t.Fatalf("accepted invalid UTF-8: %q", raw)
		}
		if wellFormed != valid {
			// The documented differences: invalid UTF-8 inside strings and
			// nesting deeper than maxDepth are rejected although
			// encoding/json accepts them.
			if valid && (!utf8.Valid(raw) || jsonDepth(raw) > maxDepth) {
				return
			}
			t.Fatalf("Parse reason %q (%v) but json.Valid = %v for %q", reason, err, valid, raw)
		}
		if !valid {
			return
		}
		isObject := raw[skipWS(raw, 0)] == '{'
		if isObject == (reason == ReasonNotObject) {
			t.Fatalf("object=%v but reason %q for %q", isObject, reason, raw)
		}
		if !isObject {
			return
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("encoding/json cannot decode %q: %v", raw, err)
		}
		want, typesOK := expectFields(t, m)
		if !typesOK {
			if reason != ReasonInvalidField {
				t.Fatalf("want invalid_field, got %q (%v) for %q", reason, err, raw)
			}
			return
		}
		if err != nil {
			t.Fatalf("Parse(%q): %v", raw, err)
		}
		if !fieldsEqual(fields, want) {
			t.Fatalf("Parse(%q)\n got  %s\n want %s", raw, fmtFields(fields), fmtFields(want))
		}
		// Validate and Key must not panic on anything Parse returns.
		_ = fields.Validate(0)
		_ = fields.Key()
	})
}

func FuzzWithInsertID(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s), "as-cbf29ce484222325-0-0")
	}
	f.Add([]byte(`{"insert_id":null,"a":1}`), "id")
	f.Add([]byte(" {\n} "), "id")
	f.Fuzz(func(t *testing.T, raw []byte, id string) {
		before, err := Parse(raw)
		if err != nil {
			return
		}
		// encoding/json encodes each invalid UTF-8 byte as U+FFFD, as we do.
		enc, _ := json.Marshal(id)
		var wantID string
		if err := json.Unmarshal(enc, &wantID); err != nil {
			t.Fatal(err)
		}
		out := WithInsertID(raw, id)
		checkWithInsertID(t, raw, out, before, wantID)
		parsed := before.AppendWithInsertID([]byte("x"), raw, id)
		checkWithInsertID(t, raw, parsed[1:], before, wantID)
		if !mayHaveInsertID(raw) || before.HasInsertIDKey {
			// Same decision whether to remove a member, so the same bytes.
			if !bytes.Equal(parsed[1:], out) {
				t.Fatalf("(*Fields).AppendWithInsertID(%q) = %q, WithInsertID = %q", raw, parsed[1:], out)
			}
		}
		const topic, partition, offset = "events", 3, 1024
		stable := before.WithStableInsertID(raw, topic, partition, offset)
		if want := before.AppendWithInsertID(nil, raw, StableInsertID(topic, partition, offset)); !bytes.Equal(stable, want) {
			t.Fatalf("WithStableInsertID(%q) = %q, want %q", raw, stable, want)
		}
		if app := before.AppendWithStableInsertID([]byte("x"), raw, topic, partition, offset); !bytes.Equal(app[1:], stable) {
			t.Fatalf("AppendWithStableInsertID(%q) = %q, want %q", raw, app[1:], stable)
		}
		if raw[skipWS(raw, 0)] == '{' && !before.HasInsertIDKey {
			// How a request body gives an event its insert_id (amplitude.Event).
			if spliced := splitWithInsertID(raw, StableInsertID(topic, partition, offset)); !bytes.Equal(spliced, stable) {
				t.Fatalf("InsertIDAt(%q) splices %q, want %q", raw, spliced, stable)
			}
			if open, comma := InsertIDAt(raw); open == 0 && comma {
				head := AppendInsertIDHead(nil, AppendStableInsertIDPrefix(nil, topic, partition), offset)
				if sent := append(head, raw[1:]...); !bytes.Equal(sent, stable) {
					t.Fatalf("AppendInsertIDHead for %q: %q, want %q", raw, sent, stable)
				}
			}
		}
	})
}

// splitWithInsertID puts id into raw as a request body does: the head up
// to raw's brace, the member, maybe a comma, then the rest of raw.
func splitWithInsertID(raw []byte, id string) []byte {
	open, comma := InsertIDAt(raw)
	out := append([]byte(nil), raw[:open+1]...)
	out = append(out, `"insert_id":"`+id+`"`...)
	if comma {
		out = append(out, ',')
	}
	return append(out, raw[open+1:]...)
}

// checkWithInsertID checks out, raw with the insert_id wantID spliced in:
// valid, with that insert_id, and otherwise the same members and fields.
func checkWithInsertID(t *testing.T, raw, out []byte, before Fields, wantID string) {
	t.Helper()
	if !json.Valid(out) {
		t.Fatalf("%q -> %q: invalid JSON", raw, out)
	}
	after, err := Parse(out)
	if err != nil {
		t.Fatalf("%q -> %q: %v", raw, out, err)
	}
	if string(after.InsertID) != wantID || !after.HasInsertIDKey {
		t.Fatalf("insert_id = %q, want %q (out %q)", after.InsertID, wantID, out)
	}
	before.InsertID, after.InsertID = nil, nil
	before.HasInsertIDKey, after.HasInsertIDKey = false, false
	if !fieldsEqual(before, after) {
		t.Fatalf("fields changed: %s -> %s", fmtFields(before), fmtFields(after))
	}
	var mb, ma map[string]json.RawMessage
	if err := json.Unmarshal(raw, &mb); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out, &ma); err != nil {
		t.Fatal(err)
	}
	delete(mb, "insert_id")
	delete(ma, "insert_id")
	if len(ma) != len(mb) {
		t.Fatalf("members %d -> %d: %q -> %q", len(mb), len(ma), raw, out)
	}
	for k, v := range mb {
		if !bytes.Equal(ma[k], v) {
			t.Fatalf("member %q changed: %q -> %q", k, v, ma[k])
		}
	}
}
