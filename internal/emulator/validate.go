package emulator

// checked is one event after validation. The IDs alias the request body
// (or a copy when the JSON string had escapes) and become strings only
// where the emulator keeps them, which keeps a 2000-event request to a
// handful of allocations.
type checked struct {
	raw                                   []byte
	eventType, userID, deviceID, insertID []byte // empty when absent
}

// MissingIDField is the events_with_missing_fields key for an event with
// neither user_id nor device_id. Amplitude does not document the key;
// clients drop the union of all listed indexes whatever the key.
const MissingIDField = "user_id_or_device_id"

// fields are the raw values (nil when absent) of the members validate
// looks at, collected while scanning one event.
type fields struct {
	eventType, userID, deviceID, insertID []byte
	badTyped                              uint16 // bit i: typedFields[i] has the wrong JSON type
}

func (f *fields) set(key, val []byte) {
	switch string(key) {
	case "event_type":
		f.eventType = val
	case "user_id":
		f.userID = val
	case "device_id":
		f.deviceID = val
	case "insert_id":
		f.insertID = val
	default:
		for i := range typedFields {
			if typedFields[i].name == string(key) {
				// A later duplicate key wins, as in encoding/json.
				f.badTyped &^= 1 << i
				if !isNull(val) && !hasKind(val, typedFields[i].kind) {
					f.badTyped |= 1 << i
				}
				return
			}
		}
	}
}

// indexLists maps a field name to failing event indexes.
type indexLists map[string][]int

func (l *indexLists) add(field string, idx int, firstOnly bool) {
	if *l == nil {
		*l = indexLists{}
	}
	if firstOnly && len((*l)[field]) > 0 {
		return
	}
	(*l)[field] = append((*l)[field], idx)
}

// validation is the outcome of per-event checks; all nil means valid.
type validation struct {
	missing, invalid, idLengths indexLists
}

func (v *validation) failed() bool {
	return v.missing != nil || v.invalid != nil || v.idLengths != nil
}

// check validates event i and fills c with its decoded IDs.
func (v *validation) check(i int, f *fields, c *checked, minLen int, firstOnly bool) {
	if isNull(f.eventType) {
		v.missing.add("event_type", i, firstOnly)
	} else if s, ok := strBytes(f.eventType); !ok {
		v.invalid.add("event_type", i, firstOnly)
	} else if len(s) == 0 {
		v.missing.add("event_type", i, firstOnly)
	} else {
		c.eventType = s
	}

	// An ID that is null or "" counts as absent, as in the SDKs.
	hasID := v.checkID("user_id", f.userID, &c.userID, i, minLen, firstOnly)
	hasID = v.checkID("device_id", f.deviceID, &c.deviceID, i, minLen, firstOnly) || hasID
	if !hasID {
		v.missing.add(MissingIDField, i, firstOnly)
	}

	if !isNull(f.insertID) {
		if s, ok := strBytes(f.insertID); ok {
			c.insertID = s
		} else {
			v.invalid.add("insert_id", i, firstOnly)
		}
	}
	for j := range typedFields {
		if f.badTyped&(1<<j) != 0 {
			v.invalid.add(typedFields[j].name, i, firstOnly)
		}
	}
}

// checkID validates one ID field and reports whether the event has it.
func (v *validation) checkID(name string, raw []byte, dst *[]byte, i, minLen int, firstOnly bool) bool {
	if isNull(raw) {
		return false
	}
	s, ok := strBytes(raw)
	switch {
	case !ok:
		v.invalid.add(name, i, firstOnly)
		return true // present, just mistyped
	case len(s) == 0:
		return false
	case !validID(s, minLen):
		v.idLengths.add(name, i, firstOnly)
		return true
	}
	*dst = s
	return true
}
