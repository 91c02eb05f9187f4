// Package emulator is a faithful stand-in for Amplitude's event ingestion
// APIs, POST /2/httpapi (HTTP V2) and POST /batch (Batch Event Upload), for
// tests, benchmarks and local runs. It follows the contract in
// amplitude-api.md §1-§6: the same request checks in the same order, the
// exact documented bodies, per-ID rate limits over a sliding window, the
// Batch daily quota, silenced devices, insert_id deduplication, and
// injectable faults (5xx with and without ingestion, 403, slow answers,
// non-JSON bodies, connection resets). Every API answer is JSON whose
// "code" equals the HTTP status, except the non-JSON faults on purpose.
//
// What it stores can be inspected: each device's events in arrival order
// (Events, GET /debug/events?device_id=X), the devices seen (AllDevices,
// GET /debug/devices) and counters (Stats, GET /debug/stats).
//
// # Choices where Amplitude is silent
//
//   - HTTP V2 averages 30 events/s over 10 s (Batch: 1000 over 30 s): an ID
//     is throttled when its events within the window, counting the request,
//     exceed EPS × window seconds. A throttled request is not ingested at
//     all, and by default (CountRejected) its events still count, so a
//     client retrying sooner than the window keeps getting 429.
//   - An event with neither ID is listed under MissingIDField; blocklisted
//     IDs ("null", "0", ...) under events_with_invalid_id_lengths.
//   - The 413 limits are inclusive: 2000 events, and 1,000,000 bytes (HTTP V2)
//     or 20,000,000 (Batch) measured after gzip decompression.
//     payload_size_bytes is the body length as received.
//   - An unknown path gets the checks that need no route (body, JSON, fields,
//     key) before 400 "Invalid request path", following the spec's order.
//     Content-Type is not checked; Content-Encoding: gzip is honoured.
//   - Duplicates are answered 200 and counted in events_ingested, but stored
//     once, under (api_key, device_id or UserDeviceID(user_id), insert_id).
//
// # From Go tests
//
//	cfg := emulator.DefaultConfig()
//	cfg.APIKeys = []string{"test-key"}
//	cfg.Now = clock.Now // optional: drive throttling windows by hand
//	emu := emulator.New(cfg, zerolog.Nop())
//	srv := httptest.NewServer(emu) // or emulator.Start(ctx, "127.0.0.1:0", emu)
//	defer srv.Close()
//	// ... point the client at srv.URL + emulator.PathHTTPAPI ...
//	_ = emu.InjectFault(1, emulator.Fault{Status: 500, Ingest: true})
//	events := emu.Events("device-1") // arrival order
//
// # From the command line
//
//	ampstream emulate --listen 127.0.0.1:8080 --api-keys test-key
//
//	curl -s localhost:8080/2/httpapi -H 'Content-Type: application/json' \
//	  -d '{"api_key":"test-key","events":[{"event_type":"play","device_id":"device-1","insert_id":"a1"}]}'
//	{"code":200,"events_ingested":1,"payload_size_bytes":95,"server_upload_time":1764257000000}
//
//	curl -s 'localhost:8080/debug/events?device_id=device-1'
//	curl -s localhost:8080/debug/stats
//	curl -s localhost:8080/debug/faults -d '{"next":[{"count":2,"fault":{"status":503}}]}'
//	curl -s localhost:8080/debug/faults -d '{"rate":0.05,"seed":1}'   # random faults
//	curl -s localhost:8080/debug/faults -d '{"clear":true}'
//	curl -s localhost:8080/debug/reset -X POST
//
// A fault (see Fault) is written as
//
//	{"route":"httpapi"|"batch", "status":502, "ingest":true, "body":"empty"|"html", "delay":"15s", "reset":true}
//
// with every key optional: {"status":500,"ingest":true} is a 500 after the
// events were stored, {"delay":"30s"} a slow but real answer, {"reset":true}
// a dropped connection.
//
// # Memory
//
// Everything is kept in memory. For long or fast runs set KeepRaw false (no
// event JSON in the log), MaxLogEvents (log length) and MaxDedupKeys
// (remembered insert_ids, about 50 bytes each); rate and quota counters
// follow the active IDs on their own.
//
// # Concurrency
//
// An Emulator is safe for concurrent use by any number of requests and Go
// callers. Bodies are read, parsed and validated without locks; one mutex
// then covers the rate check and the store, so requests are ingested
// atomically and in a single order (Ingested.Seq). The Emulator starts no
// goroutines. A Server owns two (serve and shutdown) and Close waits for
// both; a slow fault waits in its request's own goroutine and ends when the
// client disconnects or the Server stops.
package emulator
