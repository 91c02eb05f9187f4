package emulator

// checked is one event after validation: the decoded IDs the emulator keys
// its state on.
type checked struct {
	raw       []byte
	eventType string
	userID    string
	deviceID  string // as sent; "" when absent
	insertID  string
}

// MissingIDField is the events_with_missing_fields key for an event with
// neither user_id nor device_id. Amplitude does not document the key;
// clients drop the union of all listed indexes whatever the key.
const MissingIDField = "user_id_or_device_id"

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

// validate checks every event and decodes its IDs into out, which must have
// len(events) entries.
func validate(events []event, minLen int, firstOnly bool, out []checked) validation {
	var v validation
	for i := range events {
		ev := &events[i]
		c := &out[i]
		c.raw = ev.raw

		if isNull(ev.eventType) {
			v.missing.add("event_type", i, firstOnly)
		} else if s, ok := str(ev.eventType); !ok {
			v.invalid.add("event_type", i, firstOnly)
		} else if s == "" {
			v.missing.add("event_type", i, firstOnly)
		} else {
			c.eventType = s
		}

		// An ID that is null or "" counts as absent, as in the SDKs.
		hasID := false
		for _, f := range [...]struct {
			name string
			raw  []byte
			dst  *string
		}{{"user_id", ev.userID, &c.userID}, {"device_id", ev.deviceID, &c.deviceID}} {
			if isNull(f.raw) {
				continue
			}
			s, ok := str(f.raw)
			switch {
			case !ok:
				v.invalid.add(f.name, i, firstOnly)
				hasID = true // present, just mistyped
			case s == "":
			case !validID(s, minLen):
				v.idLengths.add(f.name, i, firstOnly)
				hasID = true
			default:
				*f.dst = s
				hasID = true
			}
		}
		if !hasID {
			v.missing.add(MissingIDField, i, firstOnly)
		}

		if !isNull(ev.insertID) {
			if s, ok := str(ev.insertID); ok {
				c.insertID = s
			} else {
				v.invalid.add("insert_id", i, firstOnly)
			}
		}
		for j, raw := range ev.typed {
			if !isNull(raw) && !hasKind(raw, typedFields[j].kind) {
				v.invalid.add(typedFields[j].name, i, firstOnly)
			}
		}
	}
	return v
}
