package event

import (
	"encoding/json"
	"testing"
)

// benchEvent is a realistic event as an SDK sends it: about 300 bytes with
// event and user properties, a nested object and an array.
var benchEvent = []byte(`{"event_type":"Purchase Completed","user_id":"user-8d3f2a91","device_id":"C8F9E604-F01A-4BD9-95C6-8E5357DF265D","time":1732712345678,"session_id":1732712000000,"platform":"iOS","event_properties":{"sku":"SKU-1234","price":19.99,"tags":["sale","gift"],"cart":{"items":3,"coupon":null}},"user_properties":{"$set":{"plan":"pro"}}}`)

func TestBenchEventParses(t *testing.T) {
	f, err := Parse(benchEvent)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Validate(0); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { f, err = Parse(benchEvent) }); n != 0 {
		t.Errorf("Parse allocates %v times per event, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { err = f.Validate(0) }); n != 0 {
		t.Errorf("Validate allocates %v times per valid event, want 0", n)
	}
}

func BenchmarkParse(b *testing.B) {
	b.SetBytes(int64(len(benchEvent)))
	b.ReportAllocs()
	for b.Loop() {
		f, err := Parse(benchEvent)
		if err != nil || len(f.EventType) == 0 {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseValidate(b *testing.B) {
	b.SetBytes(int64(len(benchEvent)))
	b.ReportAllocs()
	for b.Loop() {
		f, err := Parse(benchEvent)
		if err != nil {
			b.Fatal(err)
		}
		if err := f.Validate(0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseEncodingJSON is the baseline: encoding/json decoding the same
// event into a struct holding only the routed fields (it still has to scan
// and validate the whole document).
func BenchmarkParseEncodingJSON(b *testing.B) {
	type routed struct {
		EventType string `json:"event_type"`
		UserID    string `json:"user_id"`
		DeviceID  string `json:"device_id"`
		InsertID  string `json:"insert_id"`
		Time      int64  `json:"time"`
	}
	b.SetBytes(int64(len(benchEvent)))
	b.ReportAllocs()
	for b.Loop() {
		var r routed
		if err := json.Unmarshal(benchEvent, &r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkJSONValid(b *testing.B) {
	b.SetBytes(int64(len(benchEvent)))
	b.ReportAllocs()
	for b.Loop() {
		if !json.Valid(benchEvent) {
			b.Fatal("invalid")
		}
	}
}

func BenchmarkWithInsertID(b *testing.B) {
	raw := []byte(`{"event_type":"Purchase Completed","user_id":"user-8d3f2a91","time":1732712345678,"event_properties":{"sku":"SKU-1234","price":19.99}}`)
	id := StableInsertID("events", 3, 1024)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		_ = WithInsertID(raw, id)
	}
}

// trafficEvent has the shape internal/traffic generates for the end-to-end
// benchmark (about 400 bytes); trafficEventNoID is the same event without an
// insert_id, the case where ampstream derives one.
var (
	trafficEvent     = []byte(`{"event_type":"add_to_cart","device_id":"device-000123","user_id":"user-000061","event_id":42,"time":1764237600000,"insert_id":"device-000123-42","platform":"iOS","os_name":"ios","app_version":"4.12.0","country":"DE","language":"de-DE","event_properties":{"screen":"checkout","items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}],"total":59.9,"coupon":null},"user_properties":{"$set":{"plan":"pro","cohort":"2026-11"}}}`)
	trafficEventNoID = []byte(`{"event_type":"add_to_cart","device_id":"device-000123","user_id":"user-000061","event_id":42,"time":1764237600000,"platform":"iOS","os_name":"ios","app_version":"4.12.0","country":"DE","language":"de-DE","event_properties":{"screen":"checkout","items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}],"total":59.9,"coupon":null},"user_properties":{"$set":{"plan":"pro","cohort":"2026-11"}}}`)
)

func BenchmarkParseTraffic(b *testing.B) {
	b.SetBytes(int64(len(trafficEvent)))
	b.ReportAllocs()
	for b.Loop() {
		f, err := Parse(trafficEvent)
		if err != nil || len(f.InsertID) == 0 {
			b.Fatal(err)
		}
	}
}

// BenchmarkWithInsertIDTraffic is the pre-Parse-hint path for an event
// without insert_id: build the id string, scan raw for the key, copy.
func BenchmarkWithInsertIDTraffic(b *testing.B) {
	b.SetBytes(int64(len(trafficEventNoID)))
	b.ReportAllocs()
	for b.Loop() {
		_ = WithInsertID(trafficEventNoID, StableInsertID("events", 3, 1024))
	}
}

// BenchmarkWithStableInsertIDTraffic is the same splice after Parse: no scan
// for an existing member, no id string.
func BenchmarkWithStableInsertIDTraffic(b *testing.B) {
	f, err := Parse(trafficEventNoID)
	if err != nil || f.HasInsertIDKey {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(trafficEventNoID)))
	b.ReportAllocs()
	for b.Loop() {
		_ = f.WithStableInsertID(trafficEventNoID, "events", 3, 1024)
	}
}

// BenchmarkParseValidateTraffic is what the consumer does with every
// message: Parse, then Validate with the default min_id_length.
func BenchmarkParseValidateTraffic(b *testing.B) {
	b.SetBytes(int64(len(trafficEvent)))
	b.ReportAllocs()
	for b.Loop() {
		f, err := Parse(trafficEvent)
		if err != nil {
			b.Fatal(err)
		}
		if err := f.Validate(0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkValidateTraffic(b *testing.B) {
	f, err := Parse(trafficEvent)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := f.Validate(0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendStableInsertID(b *testing.B) {
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendStableInsertID(buf[:0], "events", 3, 1024)
	}
}
