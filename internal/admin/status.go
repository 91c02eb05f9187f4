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
	LastCommit    time.Time // zero: not committed by this replica yet
}

// Membership is this replica's membership of the consumer group, as /readyz
// judges it.
type Membership struct {
	Member     bool
	Reason     string    // why not a member (or what a member waits for)
	Since      time.Time // when Member or Reason last changed
	Generation int       // -1: none
	MemberID   string
	InstanceID string // empty: dynamic membership
	Owned      int
	Total      int // partitions of the topics; 0 until known
}

// GroupPartitionRow is one partition of the group's lag, owned by any
// replica or by none.
type GroupPartitionRow struct {
	Topic           string
	Partition       int
	Committed       int64 // -1: the group has committed nothing
	End             int64
	Lag             int64
	LagSeconds      float64
	LagSecondsKnown bool
	Owned           bool
	Stale           bool // offsets unreadable in the last read: the numbers are older
}

// GroupLag is the group's lag for every partition, read from the brokers.
type GroupLag struct {
	At         time.Time // last successful read; zero: none yet
	Err        error     // the last read's error
	State      string    // Stable, PreparingRebalance, …, Unknown
	Members    int
	Unowned    int
	Partitions []GroupPartitionRow
}

// Status is what the status page shows.
type Status struct {
	Version string
	Commit  string
	// Now is when the status was taken; ages on the page are relative to it.
	Now            time.Time
	Started        time.Time
	Ready          error
	Brokers        string
	Group          string
	Topics         string
	Amplitude      string
	Membership     Membership
	GroupLag       GroupLag
	Partitions     []PartitionRow
	InflightEvents int
	InflightBytes  int
	// Counters are metric values keyed by name{labels}, from metrics.Snapshot.
	Counters map[string]float64
	// Recent are the latest warnings and errors, newest first.
	Recent []LogEntry
	// Lag is the replica's lag over the last LagWindow, oldest first.
	Lag       []LagSample
	LagWindow time.Duration
}

// LastCommit is the newest commit of any owned partition (zero: none).
func (s Status) LastCommit() time.Time {
	var last time.Time
	for _, p := range s.Partitions {
		if p.LastCommit.After(last) {
			last = p.LastCommit
		}
	}
	return last
}

// Charts are the lag-over-time pictures.
func (s Status) Charts() []chart {
	return []chart{
		newChart("lag (messages)", "messages", s.Lag, s.Now, s.LagWindow,
			func(l LagSample) float64 { return float64(l.Messages) }, func(f float64) string { return formatCount(f) }),
		newChart("lag (seconds)", "s", s.Lag, s.Now, s.LagWindow,
			func(l LagSample) float64 { return l.Seconds }, func(f float64) string { return formatFloat(f, 1) }),
	}
}

// C returns a counter value by its key (0 when absent).
func (s Status) C(key string) float64 { return s.Counters[key] }

// StatusPage renders a server-side HTML status page for a person without
// Grafana: partitions with their lag, lanes, throttled keys, DLQ counts.
func StatusPage(get func() Status) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s := get()
		if s.Now.IsZero() {
			s.Now = time.Now()
		}
		if s.LagWindow <= 0 {
			s.LagWindow = 10 * time.Minute
		}
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

// age says how long before now t was, to the second; "never" for a zero t.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return shortDuration(max(now.Sub(t), 0)) + " ago"
}

// formatCount prints a count with thin-space-free SI suffixes: 1.2k, 3M.
func formatCount(f float64) string {
	switch {
	case f >= 1e6:
		return strconv.FormatFloat(f/1e6, 'f', -1, 64) + "M"
	case f >= 1e4:
		return strconv.FormatFloat(f/1e3, 'f', -1, 64) + "k"
	}
	return strconv.FormatFloat(f, 'f', 0, 64)
}

var statusTmpl = template.Must(template.New("status").Funcs(template.FuncMap{
	"uptime":        func(now, t time.Time) string { return shortDuration(now.Sub(t)) },
	"age":           age,
	"f0":            func(f float64) string { return template.HTMLEscapeString(formatFloat(f, 0)) },
	"f1":            func(f float64) string { return template.HTMLEscapeString(formatFloat(f, 1)) },
	"hasPrefix":     strings.HasPrefix,
	"add":           func(a, b int) int { return a + b },
	"sub":           func(a, b int) int { return a - b },
	"shortDuration": shortDuration,
	"utc":           func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"trimDLQ": func(k string) string {
		return strings.TrimSuffix(strings.TrimPrefix(k, "ampstream_dlq_events_total{reason="), "}")
	},
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>ampstream status</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d232b;background:#fafbfc}
h1{font-size:20px;margin:0 0 4px} h1 small{font-size:13px;font-weight:400;color:#5f6b7a} h2{font-size:15px;margin:24px 0 8px}
.ok{color:#137333;font-weight:600}.bad{color:#b3261e;font-weight:600}
table{border-collapse:collapse;background:#fff;min-width:480px}
th,td{border:1px solid #d8dde3;padding:4px 10px;text-align:right}
th{background:#eef1f4} td.l,th.l{text-align:left}
.grid{display:flex;gap:24px;flex-wrap:wrap}
.muted{color:#5f6b7a} nav a{margin-right:14px}
.note{max-width:900px;color:#3c4652;margin:6px 0 10px}
svg.chart{background:#fff;border:1px solid #d8dde3}
svg.chart text{font:11px system-ui,sans-serif;fill:#5f6b7a}
svg.chart .grid{stroke:#e3e7ec;stroke-width:1}
svg.chart .line{fill:none;stroke:#1a73e8;stroke-width:1.5}
</style></head><body>
<h1>ampstream <small>version <b class="version">{{.Version}}</b> · commit {{.Commit}}</small></h1>
<nav><a href="/metrics">/metrics</a><a href="/readyz">/readyz</a><a href="/healthz">/healthz</a><a href="/startupz">/startupz</a></nav>
<div class="muted">group <b>{{.Group}}</b> · topics <b>{{.Topics}}</b> · brokers {{.Brokers}} · Amplitude {{.Amplitude}} · up {{uptime .Now .Started}}</div>
<p>Readiness: {{if .Ready}}<span class="bad">not ready: {{.Ready}}</span>{{else}}<span class="ok">ready</span>{{end}}
· last offset commit: <b class="last-commit">{{age .Now .LastCommit}}</b></p>

<h2>Consumer group</h2>
{{with .Membership}}<table class="membership">
<tr><td class="l">membership</td><td class="l">{{if .Member}}<span class="ok">member</span>{{else}}<span class="bad">not a member: {{.Reason}}</span>{{end}}{{if not .Since.IsZero}} since {{utc .Since}} ({{age $.Now .Since}}){{end}}</td></tr>
<tr><td class="l">generation</td><td class="l">{{if ge .Generation 0}}{{.Generation}}{{else}}none{{end}}</td></tr>
<tr><td class="l">member id</td><td class="l">{{or .MemberID "none"}}</td></tr>
<tr><td class="l">instance id</td><td class="l">{{or .InstanceID "none (dynamic membership)"}}</td></tr>
<tr><td class="l">partitions owned</td><td class="l">{{.Owned}} of {{if .Total}}{{.Total}}{{else}}?{{end}}</td></tr>
</table>{{end}}

{{with .GroupLag}}<h2>Group lag, every partition</h2>
<p class="note">Read from the brokers every kafka.lag_refresh_interval by every replica, whether it owns partitions or not:
the group's committed offsets, the end offsets and the group's assignment.
<b>lag (seconds)</b> here is the age of the record at the committed offset (0 without lag; – until it has been read).
A partition is owned when it is in a member's assignment in a Stable group.</p>
<p>group state <b class="group-state">{{.State}}</b> · members: {{.Members}} ·
{{if .Unowned}}<span class="bad">{{.Unowned}} partitions owned by nobody</span>{{else}}every partition owned{{end}}
· last successful read <b>{{age $.Now .At}}</b>{{if .Err}} · <span class="bad">last read failed: {{.Err}}</span>{{end}}</p>
<table class="group-lag"><tr><th class="l">topic</th><th>partition</th><th>committed</th><th>end</th><th title="end offset − committed offset">lag (messages)</th><th title="now − timestamp of the record at the committed offset">lag (seconds)</th><th class="l">owner</th></tr>
{{range .Partitions}}<tr><td class="l">{{.Topic}}</td><td>{{.Partition}}</td><td>{{if lt .Committed 0}}none{{else}}{{.Committed}}{{end}}</td><td>{{.End}}</td><td>{{.Lag}}{{if .Stale}} <span class="bad">(old: offsets unreadable)</span>{{end}}</td><td>{{if .LagSecondsKnown}}{{f1 .LagSeconds}}{{else}}–{{end}}</td><td class="l">{{if .Owned}}a member{{else if eq $.GroupLag.State "Stable"}}<span class="bad">nobody</span>{{else if eq $.GroupLag.State "Unknown"}}<span class="bad">unknown (group not described)</span>{{else}}<span class="bad">nobody (group {{$.GroupLag.State}})</span>{{end}}</td></tr>
{{else}}<tr><td class="l" colspan="7">not read yet</td></tr>{{end}}
</table>{{end}}

<h2>Lag over the last {{shortDuration .LagWindow}}</h2>
<p class="note"><b>lag (messages)</b>: the partition's end offset (high watermark) minus the committed offset,
summed over this replica's partitions: what a restart would consume again or has yet to consume.
<b>lag (seconds)</b>: the age of the oldest event this replica has fetched but not yet resolved (accepted by
Amplitude or dead-lettered), the largest over its partitions; 0 when nothing is in flight. So a message lag with
0 s means the events are resolved and wait for the next commit (kafka.commit_interval), or are not fetched yet.</p>
<div class="grid">
{{range .Charts}}<figure style="margin:0">
<svg class="chart" role="img" aria-label="{{.Title}} over the last {{.Span}}" width="{{.W}}" height="{{.H}}" viewBox="0 0 {{.W}} {{.H}}" xmlns="http://www.w3.org/2000/svg">
<title>{{.Title}} over the last {{.Span}}</title>
<line class="grid" x1="{{.Left}}" y1="{{.Top}}" x2="{{add .Left .PlotW}}" y2="{{.Top}}"/>
<line class="grid" x1="{{.Left}}" y1="{{.MidY}}" x2="{{add .Left .PlotW}}" y2="{{.MidY}}"/>
<line class="grid" x1="{{.Left}}" y1="{{add .Top .PlotH}}" x2="{{add .Left .PlotW}}" y2="{{add .Top .PlotH}}"/>
<text x="{{sub .Left 6}}" y="{{add .Top 4}}" text-anchor="end">{{.Max}}</text>
<text x="{{sub .Left 6}}" y="{{.MidY}}" dy="4" text-anchor="end">{{.Mid}}</text>
<text x="{{sub .Left 6}}" y="{{add .Top .PlotH}}" text-anchor="end">0</text>
<text x="{{.Left}}" y="{{sub .H 6}}">−{{.Span}}</text>
<text x="{{add .Left .PlotW}}" y="{{sub .H 6}}" text-anchor="end">now</text>
{{if .Points}}<polyline class="line" points="{{.Points}}"/>{{else}}<text x="{{add .Left 10}}" y="{{.MidY}}">no samples yet</text>{{end}}
</svg>
<figcaption class="muted">{{.Title}}: now {{or .Last "–"}} · {{.Samples}} samples</figcaption>
</figure>
{{end}}</div>

<h2>Partitions ({{len .Partitions}} owned)</h2>
<table><tr><th class="l">topic</th><th>partition</th><th>committed</th><th>high watermark</th><th title="high watermark − committed offset">lag (messages)</th><th title="age of the oldest fetched, unresolved event; 0 when nothing is in flight">lag (seconds)</th><th>in flight</th><th>last commit</th></tr>
{{range .Partitions}}<tr><td class="l">{{.Topic}}</td><td>{{.Partition}}</td><td>{{.Committed}}</td><td>{{.HighWatermark}}</td><td>{{.Lag}}</td><td>{{f1 .LagSeconds}}</td><td>{{.Inflight}}</td><td>{{age $.Now .LastCommit}}</td></tr>
{{else}}<tr><td class="l" colspan="8">no partitions assigned</td></tr>{{end}}
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
