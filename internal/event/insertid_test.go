package event

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"regexp"
	"strconv"
	"testing"
)

func TestStableInsertID(t *testing.T) {
	id := StableInsertID("events", 3, 1024)
	if !regexp.MustCompile(`^as-[0-9a-f]{16}-3-1024$`).MatchString(id) {
		t.Fatalf("StableInsertID = %q", id)
	}
	if id != StableInsertID("events", 3, 1024) {
		t.Error("not deterministic")
	}
	// FNV-1a 64 of the empty string is the offset basis.
	if got := StableInsertID("", 0, 0); got != "as-cbf29ce484222325-0-0" {
		t.Errorf("empty topic: %q", got)
	}
	seen := map[string]bool{}
	for _, topic := range []string{"a", "b", "events"} {
		for p := 0; p < 3; p++ {
			for o := int64(0); o < 3; o++ {
				id := StableInsertID(topic, p, o)
				if seen[id] {
					t.Errorf("collision %q", id)
				}
				seen[id] = true
			}
		}
	}
	if got := StableInsertID("t", 2147483647, -9223372036854775808); len(got) > 59 {
		t.Errorf("too long: %d", len(got))
	}
	buf := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(100, func() { buf = AppendStableInsertID(buf[:0], "events", 3, 1024) }); n != 0 {
		t.Errorf("AppendStableInsertID allocs = %v", n)
	}
	if string(buf) != id {
		t.Errorf("Append variant %q != %q", buf, id)
	}
}

// TestStableInsertIDMatchesFmt checks the hand-written FNV-1a and hex
// digits against hash/fnv and fmt.
func TestStableInsertIDMatchesFmt(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	check := func(topic string, partition int, offset int64) {
		h := fnv.New64a()
		h.Write([]byte(topic))
		want := fmt.Sprintf("as-%016x-%d-%d", h.Sum64(), partition, offset)
		if got := StableInsertID(topic, partition, offset); got != want {
			t.Fatalf("StableInsertID(%q, %d, %d) = %q, want %q", topic, partition, offset, got, want)
		}
	}
	check("", 0, 0)
	check("events", math.MaxInt32, math.MinInt64)
	check("events", -1, math.MaxInt64)
	for range 20000 {
		topic := make([]byte, rng.IntN(40))
		for i := range topic {
			topic[i] = byte(rng.IntN(256))
		}
		check(string(topic), rng.IntN(1000)-10, rng.Int64()>>rng.IntN(64))
	}
}

func TestWithInsertID(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{}`, `{"insert_id":"X"}`},
		{` { } `, ` {"insert_id":"X" } `},
		{`{"a":1}`, `{"insert_id":"X","a":1}`},
		{"\n\t{\n \"a\": 1\n}\n", "\n\t{\"insert_id\":\"X\",\n \"a\": 1\n}\n"},
		{`{"insert_id":null,"a":1}`, `{"insert_id":"X","a":1}`},
		{`{"a":1, "insert_id":null}`, `{"insert_id":"X","a":1}`},
		{`{"insert\u005fid":null}`, `{"insert_id":"X"}`},
		{`{"a":"\n", "b" : [1]}`, `{"insert_id":"X","a":"\n","b" : [1]}`},
		{`{"p":{"insert_id":"nested"}}`, `{"insert_id":"X","p":{"insert_id":"nested"}}`},
		{`[1]`, `[1]`},
	}
	for _, tc := range tests {
		if got := string(WithInsertID([]byte(tc.in), "X")); got != tc.want {
			t.Errorf("WithInsertID(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	got := WithInsertID([]byte(`{"a":1}`), "q\"\\\x01\xff")
	var m map[string]any
	if err := json.Unmarshal(got, &m); err != nil {
		t.Fatalf("escaping id: %v: %q", err, got)
	}
	if m["insert_id"] != "q\"\\\x01\uFFFD" {
		t.Errorf("escaped id decodes to %q", m["insert_id"])
	}
}

func TestAppendWithInsertID(t *testing.T) {
	for _, raw := range []string{`{"a":1}`, `{"insert_id":null,"a":1}`, ` {} `} {
		dst := []byte(`[`)
		got := AppendWithInsertID(dst, []byte(raw), "id-1")
		want := "[" + string(WithInsertID([]byte(raw), "id-1"))
		if string(got) != want {
			t.Errorf("AppendWithInsertID(%q) = %q, want %q", raw, got, want)
		}
	}
	raw := []byte(`{"event_type":"e","device_id":"dev-1"}`)
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { buf = AppendWithInsertID(buf[:0], raw, "as-0-0") }); n != 0 {
		t.Errorf("AppendWithInsertID allocs = %v", n)
	}
	// Not validated and malformed: still no panic, raw copied after the member.
	for _, bad := range []string{`{"insert_id":`, `{"a":1,`, `{`, ``, `x`} {
		_ = WithInsertID([]byte(bad), "id")
	}
}

func TestFieldsWithInsertID(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{}`, `{"insert_id":"X"}`},
		{` { } `, ` {"insert_id":"X" } `},
		{`{"a":1}`, `{"insert_id":"X","a":1}`},
		{`{"insert_id":null,"a":1}`, `{"insert_id":"X","a":1}`},
		{`{"a":1, "insert_id":null}`, `{"insert_id":"X","a":1}`},
		{`{"insert\u005fid":null}`, `{"insert_id":"X"}`},
		// No top-level key: raw is copied verbatim even though it has escapes
		// (WithInsertID would re-emit the members without the whitespace).
		{`{"a":"\n", "b" : [1]}`, `{"insert_id":"X","a":"\n", "b" : [1]}`},
		{`{"p":{"insert_id":"nested"}}`, `{"insert_id":"X","p":{"insert_id":"nested"}}`},
	}
	for _, tc := range tests {
		f, err := Parse([]byte(tc.in))
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.in, err)
		}
		if got := string(f.AppendWithInsertID(nil, []byte(tc.in), "X")); got != tc.want {
			t.Errorf("(*Fields).AppendWithInsertID(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestFieldsWithStableInsertID(t *testing.T) {
	id := StableInsertID("events", 3, 1024)
	for _, raw := range []string{`{"a":1}`, `{"insert_id":null,"a":1}`, ` {} `, `[1]`} {
		f, _ := Parse([]byte(raw))
		want := string(WithInsertID([]byte(raw), id))
		got := f.WithStableInsertID([]byte(raw), "events", 3, 1024)
		if string(got) != want {
			t.Errorf("WithStableInsertID(%q) = %q, want %q", raw, got, want)
		}
		if raw[len(raw)-1] == '}' && !f.HasInsertIDKey && cap(got) != len(got) {
			t.Errorf("WithStableInsertID(%q): cap %d, len %d: not sized exactly", raw, cap(got), len(got))
		}
		if got := f.AppendWithStableInsertID([]byte("["), []byte(raw), "events", 3, 1024); string(got) != "["+want {
			t.Errorf("AppendWithStableInsertID(%q) = %q, want %q", raw, got, "["+want)
		}
	}
	raw := []byte(`{"event_type":"e","device_id":"dev-1"}`)
	f, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _ = f.WithStableInsertID(raw, "events", 3, 1024) }); n != 1 {
		t.Errorf("WithStableInsertID allocs = %v, want 1 (the result)", n)
	}
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { buf = f.AppendWithStableInsertID(buf[:0], raw, "events", 3, 1024) }); n != 0 {
		t.Errorf("AppendWithStableInsertID allocs = %v", n)
	}
	if n := testing.AllocsPerRun(100, func() { buf = f.AppendWithInsertID(buf[:0], raw, "as-0-0") }); n != 0 {
		t.Errorf("(*Fields).AppendWithInsertID allocs = %v", n)
	}
}

// A request body puts the insert_id into an event around it (InsertIDAt),
// byte for byte as (*Fields).WithStableInsertID would: redelivered events
// must carry the same id whichever way they were written.
func TestInsertIDAtSplicesAsWithInsertID(t *testing.T) {
	for _, raw := range []string{
		`{"event_type":"a","device_id":"d"}`,
		`{}`,
		` {  } `,
		"\n\t{\"event_type\":\"a\"}\n",
		`{ "event_type" : "a" , "event_properties":{"insert_id":"nested"}}`,
		`{"event_type":"a","p":[{}]}`,
	} {
		f, err := Parse([]byte(raw))
		if err != nil || f.HasInsertIDKey {
			t.Fatalf("%q: Parse = %v, HasInsertIDKey %v", raw, err, f.HasInsertIDKey)
		}
		id := StableInsertID("events", 7, 123456)
		if got, want := string(splitWithInsertID([]byte(raw), id)), string(f.WithStableInsertID([]byte(raw), "events", 7, 123456)); got != want {
			t.Errorf("%q: spliced %q, want %q", raw, got, want)
		}
	}
}

func TestStableInsertIDIsItsPartitionsPrefixAndTheOffset(t *testing.T) {
	for _, c := range []struct {
		topic     string
		partition int
		offset    int64
	}{{"events", 0, 0}, {"events", 3, 1024}, {"a.b-c_d", 1 << 30, 1<<63 - 1}, {"", 1<<63 - 1, 1<<63 - 1}} {
		id := StableInsertID(c.topic, c.partition, c.offset)
		want := string(AppendStableInsertIDPrefix(nil, c.topic, c.partition)) + strconv.FormatInt(c.offset, 10)
		if id != want || len(id) > MaxStableInsertID {
			t.Errorf("%+v: %q (%d bytes), want %q, at most %d bytes", c, id, len(id), want, MaxStableInsertID)
		}
	}
}
