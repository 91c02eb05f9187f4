package admin

import (
	"html/template"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// PartitionRow is one owned partition on the status page.
type PartitionRow struct {
	Topic         string
	Partition     int
	Committed     int64
	HighWatermark int64
	Lag           int64
	LagSeconds    float64
	Inflight      int
}

// Status is what the status page shows.
type Status struct {
	Started        time.Time
	Ready          error
	Brokers        string
	Group          string
	Topics         string
	Amplitude      string
	Partitions     []PartitionRow
	InflightEvents int
	InflightBytes  int
	// Counters are metric values keyed by name{labels}, from metrics.Snapshot.
	Counters map[string]float64
	// Recent are the latest warnings and errors, newest first.
	Recent []LogEntry
}

// C returns a counter value by its key (0 when absent).
func (s Status) C(key string) float64 { return s.Counters[key] }

// StatusPage renders a server-side HTML status page for a person without
// Grafana: partitions with their lag, lanes, throttled keys, DLQ counts.
func StatusPage(get func() Status) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s := get()
		sort.Slice(s.Partitions, func(i, j int) bool {
			if s.Partitions[i].Topic != s.Partitions[j].Topic {
				return s.Partitions[i].Topic < s.Partitions[j].Topic
			}
			return s.Partitions[i].Partition < s.Partitions[j].Partition
		})
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_ = statusTmpl.Execute(w, s)
	})
}

var statusTmpl = template.Must(template.New("status").Funcs(template.FuncMap{
	"since":     func(t time.Time) string { return time.Since(t).Round(time.Second).String() },
	"f0":        func(f float64) string { return template.HTMLEscapeString(formatFloat(f, 0)) },
	"f1":        func(f float64) string { return template.HTMLEscapeString(formatFloat(f, 1)) },
	"hasPrefix": strings.HasPrefix,
	"trimDLQ": func(k string) string {
		return strings.TrimSuffix(strings.TrimPrefix(k, "ampstream_dlq_events_total{reason="), "}")
	},
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>ampstream status</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d232b;background:#fafbfc}
h1{font-size:20px;margin:0 0 4px} h2{font-size:15px;margin:24px 0 8px}
.ok{color:#137333;font-weight:600}.bad{color:#b3261e;font-weight:600}
table{border-collapse:collapse;background:#fff;min-width:480px}
th,td{border:1px solid #d8dde3;padding:4px 10px;text-align:right}
th{background:#eef1f4} td.l,th.l{text-align:left}
.grid{display:flex;gap:24px;flex-wrap:wrap}
.muted{color:#5f6b7a}
</style></head><body>
<h1>ampstream</h1>
<div class="muted">group <b>{{.Group}}</b> · topics <b>{{.Topics}}</b> · brokers {{.Brokers}} · Amplitude {{.Amplitude}} · up {{since .Started}}</div>
<p>Readiness: {{if .Ready}}<span class="bad">not ready: {{.Ready}}</span>{{else}}<span class="ok">ready</span>{{end}}</p>

<h2>Partitions ({{len .Partitions}} owned)</h2>
<table><tr><th class="l">topic</th><th>partition</th><th>committed</th><th>high watermark</th><th>lag (messages)</th><th>lag (seconds)</th><th>in flight</th></tr>
{{range .Partitions}}<tr><td class="l">{{.Topic}}</td><td>{{.Partition}}</td><td>{{.Committed}}</td><td>{{.HighWatermark}}</td><td>{{.Lag}}</td><td>{{f1 .LagSeconds}}</td><td>{{.Inflight}}</td></tr>
{{else}}<tr><td class="l" colspan="7">no partitions assigned</td></tr>{{end}}
</table>

<div class="grid">
<div><h2>Lanes</h2>
<table><tr><th class="l">lane</th><th>accepted</th><th>rejected by Amplitude</th><th>throttled</th><th>retried</th></tr>
<tr><td class="l">realtime (HTTP V2)</td><td>{{f0 (.C "ampstream_events_forwarded_total{lane=realtime,outcome=accepted}")}}</td><td>{{f0 (.C "ampstream_events_forwarded_total{lane=realtime,outcome=dlq}")}}</td><td>{{f0 (.C "ampstream_events_forwarded_total{lane=realtime,outcome=throttled}")}}</td><td>{{f0 (.C "ampstream_events_forwarded_total{lane=realtime,outcome=retried}")}}</td></tr>
<tr><td class="l">batch</td><td>{{f0 (.C "ampstream_events_forwarded_total{lane=batch,outcome=accepted}")}}</td><td>{{f0 (.C "ampstream_events_forwarded_total{lane=batch,outcome=dlq}")}}</td><td>{{f0 (.C "ampstream_events_forwarded_total{lane=batch,outcome=throttled}")}}</td><td>{{f0 (.C "ampstream_events_forwarded_total{lane=batch,outcome=retried}")}}</td></tr>
</table></div>
<div><h2>Keys and memory</h2>
<table>
<tr><td class="l">hot keys (on Batch)</td><td>{{f0 (.C "ampstream_hot_keys")}}</td></tr>
<tr><td class="l">quarantined keys (429)</td><td>{{f0 (.C "ampstream_throttled_keys")}}</td></tr>
<tr><td class="l">tracked keys</td><td>{{f0 (.C "ampstream_rate_tracked_keys")}}</td></tr>
<tr><td class="l">in-flight events</td><td>{{.InflightEvents}}</td></tr>
<tr><td class="l">in-flight bytes</td><td>{{.InflightBytes}}</td></tr>
<tr><td class="l">consumed</td><td>{{f0 (.C "ampstream_events_consumed_total")}}</td></tr>
<tr><td class="l">dead-letter write errors</td><td>{{f0 (.C "ampstream_dlq_write_errors_total")}}</td></tr>
<tr><td class="l">Amplitude refuses key</td><td>{{f0 (.C "ampstream_amplitude_unauthorized")}}</td></tr>
</table></div>
<div><h2>Dead-lettered by reason</h2>
<table><tr><th class="l">reason</th><th>events</th></tr>
{{range $k, $v := .Counters}}{{if hasPrefix $k "ampstream_dlq_events_total{"}}<tr><td class="l">{{trimDLQ $k}}</td><td>{{f0 $v}}</td></tr>{{end}}{{end}}
</table></div>
</div>

<h2>Recent warnings and errors</h2>
<table><tr><th class="l">last seen</th><th class="l">level</th><th class="l">message</th><th>times</th></tr>
{{range .Recent}}<tr><td class="l">{{.Time.Format "15:04:05"}}</td><td class="l">{{.Level}}</td><td class="l">{{.Message}}</td><td>{{.Count}}</td></tr>
{{else}}<tr><td class="l" colspan="4">none</td></tr>{{end}}
</table>
</body></html>`))

func formatFloat(f float64, prec int) string { return strconv.FormatFloat(f, 'f', prec, 64) }
