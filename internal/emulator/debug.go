package emulator

import (
	"encoding/json"
	"io"
	"net/http"
)

const debugPrefix = "/debug/"

// DevicesResponse is the body of GET /debug/devices.
type DevicesResponse struct {
	Devices []string `json:"devices"`
}

// EventsResponse is the body of GET /debug/events?device_id=X.
type EventsResponse struct {
	DeviceID string     `json:"device_id"`
	Events   []Ingested `json:"events"`
}

// FaultsRequest is the body of POST /debug/faults. Clear runs first, then
// Next is queued, then, when Rate is set, the random rate is replaced.
type FaultsRequest struct {
	Clear   bool             `json:"clear,omitempty"`
	Next    []ScheduledFault `json:"next,omitempty"`
	Rate    *float64         `json:"rate,omitempty"`
	Seed    uint64           `json:"seed,omitempty"`
	Choices []Fault          `json:"choices,omitempty"`
}

// ApplyFaults applies a FaultsRequest; the debug endpoint and the CLI share it.
func (e *Emulator) ApplyFaults(req FaultsRequest) error {
	if req.Clear {
		e.ClearFaults()
	}
	for _, s := range req.Next {
		if err := e.InjectFault(s.Count, s.Fault); err != nil {
			return err
		}
	}
	if req.Rate != nil {
		return e.SetFaultRate(*req.Rate, req.Seed, req.Choices...)
	}
	return nil
}

// serveDebug answers the inspection and control endpoints:
//
//	GET  /debug/events?device_id=X  stored events of one device, in arrival order
//	GET  /debug/devices             devices with stored events
//	GET  /debug/stats               counters
//	POST /debug/reset               forget everything (faults stay)
//	GET  /debug/faults              fault configuration
//	POST /debug/faults              change it (FaultsRequest)
func (e *Emulator) serveDebug(w http.ResponseWriter, r *http.Request) {
	route := r.Method + " " + r.URL.Path
	switch route {
	case "GET /debug/events":
		id := r.URL.Query().Get("device_id")
		if id == "" {
			writeDebug(w, http.StatusBadRequest, apiError{Code: http.StatusBadRequest, Error: "device_id query parameter required"})
			return
		}
		evs := e.Events(id)
		if evs == nil {
			evs = []Ingested{}
		}
		writeDebug(w, http.StatusOK, EventsResponse{DeviceID: id, Events: evs})
	case "GET /debug/devices":
		writeDebug(w, http.StatusOK, DevicesResponse{Devices: e.AllDevices()})
	case "GET /debug/stats":
		writeDebug(w, http.StatusOK, e.Stats())
	case "POST /debug/reset":
		e.Reset()
		writeDebug(w, http.StatusOK, map[string]int{"code": http.StatusOK})
	case "GET /debug/faults":
		writeDebug(w, http.StatusOK, e.Faults())
	case "POST /debug/faults":
		var req FaultsRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeDebug(w, http.StatusBadRequest, apiError{Code: http.StatusBadRequest, Error: "decode faults request: " + err.Error()})
			return
		}
		if err := e.ApplyFaults(req); err != nil {
			writeDebug(w, http.StatusBadRequest, apiError{Code: http.StatusBadRequest, Error: err.Error()})
			return
		}
		writeDebug(w, http.StatusOK, e.Faults())
	default:
		writeDebug(w, http.StatusNotFound, apiError{Code: http.StatusNotFound, Error: "unknown debug endpoint " + route})
	}
}

func writeDebug(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // a client that left cannot be told
}
