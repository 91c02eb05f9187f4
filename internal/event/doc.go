// Package event is ampstream's hot-path decoder for Amplitude events.
//
// A Kafka message value is one Amplitude event JSON object. ampstream never
// unmarshals whole events: Parse validates the complete document in a single
// pass and extracts only the top-level fields routing needs (event_type,
// user_id, device_id, insert_id, time); the raw bytes are later copied verbatim
// into request bodies. Because one malformed event makes Amplitude reject a
// whole request of up to 2000 events, validation is strict:
//
//   - RFC 8259 grammar: exactly one value, surrounded by optional whitespace;
//     numbers per the grammar (no leading zeros, no "+", no bare "."),
//     the literals true/false/null, strings with only the defined escapes and
//     no raw control characters (< 0x20).
//   - Strings must be valid UTF-8 (invalid bytes are rejected, not replaced
//     with U+FFFD as encoding/json does), because Amplitude would reject them.
//     Escaped lone surrogates such as \ud800 are grammatical and accepted; when
//     unescaped they become U+FFFD, like encoding/json.
//   - Objects and arrays nest at most 64 levels (the event object is level 1).
//     The scanner is iterative and keeps its container stack in a bit set, so
//     hostile input cannot grow the goroutine stack. Deeper documents are
//     reported as ReasonMalformedJSON although encoding/json would accept them.
//   - The document must be an object (ReasonNotObject otherwise).
//   - Known top-level fields must have Amplitude's types (ReasonInvalidField):
//     user_id, device_id, event_type, insert_id are strings; time, session_id
//     and event_id are integers in int64 range (no fraction, no exponent);
//     event_properties, user_properties, groups and group_properties are
//     objects. null counts as absent for every one of these fields.
//   - Duplicate top-level keys: the last one wins, as in encoding/json. Keys
//     are matched after unescaping and case-sensitively.
//
// Validate then applies Amplitude's semantic rules: event_type present and
// non-empty; user_id or device_id present, where an empty string counts as
// absent; each present ID neither blocklisted (ASCII case-insensitive; checked
// first) nor shorter than min_id_length runes. Any int64 time is accepted,
// including 0 and negative values; Amplitude only documents the type.
//
// Insert IDs: StableInsertID derives a deterministic insert_id from the Kafka
// coordinates so redeliveries deduplicate, and WithInsertID/AppendWithInsertID
// splice it into the raw event as the first member, removing any existing
// top-level insert_id (e.g. null) so that a last-wins reader sees the new one.
// After Parse, the Fields methods WithStableInsertID, AppendWithStableInsertID
// and AppendWithInsertID do the same using Fields.HasInsertIDKey instead of
// searching raw for such a member, and the stable variants write the id
// straight into the result.
//
// Aliasing: Parse does not copy. The byte slices in Fields point into raw and
// stay valid only as long as raw is neither modified nor reused; a string that
// contained escape sequences is the exception and is returned as a freshly
// allocated, unescaped copy. Aliasing slices have their capacity capped, so
// appending to them never writes into raw. Parse allocates nothing for an event whose
// extracted strings have no escapes, except on the error path.
//
// Concurrency: every function in this package is pure (no shared state), so
// all of them are safe for concurrent use. A Fields value is not synchronised.
package event
