// Package helm_test renders the ampstream chart with Helm's own Go packages and decodes every
// manifest strictly into its Kubernetes API type, so a misspelt field, a wrong indentation or
// a value in the wrong place fails here rather than at `kubectl apply`. It also keeps the
// chart's copies of the alert rules and the dashboard identical to deployments/, and checks
// that every ampstream_* series they use is one the service exports.
package helm_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/strvals"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/ampstream/ampstream/internal/config"
	"github.com/ampstream/ampstream/internal/metrics"
)

const (
	chartDir   = "ampstream"
	fullValues = "ampstream/ci/full-values.yaml"
	// statefulSetValues is workload: statefulset (helm/workload_test.go).
	statefulSetValues = "ampstream/ci/statefulset-values.yaml"
	release           = "t"
	namespace         = "analytics"
	fullname          = "t-ampstream"
	rulesFile         = "../deployments/prometheus/ampstream-rules.yaml"
	dashboardFile     = "../deployments/grafana/ampstream-dashboard.json"
	runbookFile       = "../deployments/RUNBOOK.md"
	operatingFile     = "../deployments/OPERATING.md"
	chartRules        = "ampstream/files/ampstream-rules.yaml"
	chartDashboard    = "ampstream/files/ampstream-dashboard.json"
)

// Local types for the CRDs the chart renders. Decoding is strict, so every field the chart
// emits must be declared here.

type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		JobLabel          string `json:"jobLabel"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port              string           `json:"port"`
			Path              string           `json:"path"`
			Interval          string           `json:"interval"`
			ScrapeTimeout     string           `json:"scrapeTimeout"`
			HonorLabels       bool             `json:"honorLabels"`
			Relabelings       []map[string]any `json:"relabelings"`
			MetricRelabelings []map[string]any `json:"metricRelabelings"`
		} `json:"endpoints"`
	} `json:"spec"`
}

type ruleGroups struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Record      string            `json:"record"`
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

type prometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              ruleGroups `json:"spec"`
}

type scaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicaCount int `json:"minReplicaCount"`
		MaxReplicaCount int `json:"maxReplicaCount"`
		PollingInterval int `json:"pollingInterval"`
		CooldownPeriod  int `json:"cooldownPeriod"`
		Fallback        *struct {
			FailureThreshold int `json:"failureThreshold"`
			Replicas         int `json:"replicas"`
		} `json:"fallback"`
		Advanced struct {
			HorizontalPodAutoscalerConfig struct {
				Behavior struct {
					ScaleDown struct {
						StabilizationWindowSeconds int `json:"stabilizationWindowSeconds"`
						Policies                   []struct {
							Type          string `json:"type"`
							Value         int    `json:"value"`
							PeriodSeconds int    `json:"periodSeconds"`
						} `json:"policies"`
					} `json:"scaleDown"`
					ScaleUp struct {
						StabilizationWindowSeconds int `json:"stabilizationWindowSeconds"`
					} `json:"scaleUp"`
				} `json:"behavior"`
			} `json:"horizontalPodAutoscalerConfig"`
		} `json:"advanced"`
		Triggers []struct {
			Type              string            `json:"type"`
			Metadata          map[string]string `json:"metadata"`
			AuthenticationRef *struct {
				Name string `json:"name"`
			} `json:"authenticationRef"`
		} `json:"triggers"`
	} `json:"spec"`
}

type triggerAuthentication struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SecretTargetRef []struct {
			Parameter string `json:"parameter"`
			Name      string `json:"name"`
			Key       string `json:"key"`
		} `json:"secretTargetRef"`
	} `json:"spec"`
}

// manifests holds one rendering, decoded: kind → name → object.
type manifests map[string]map[string]any

func (m manifests) get(t *testing.T, kind, name string) any {
	t.Helper()
	obj, ok := m[kind][name]
	require.Truef(t, ok, "no %s %q rendered; have %v", kind, name, m.kinds())
	return obj
}

func (m manifests) kinds() []string {
	var ks []string
	for k, objs := range m {
		for n := range objs {
			ks = append(ks, k+"/"+n)
		}
	}
	sort.Strings(ks)
	return ks
}

func (m manifests) deployment(t *testing.T) *appsv1.Deployment {
	return m.get(t, "Deployment", fullname).(*appsv1.Deployment)
}

// workloadPod is the pod template of the Deployment or the StatefulSet, whichever rendered.
func workloadPod(t *testing.T, m manifests) corev1.PodTemplateSpec {
	t.Helper()
	if sts, ok := m["StatefulSet"][fullname]; ok {
		return sts.(*appsv1.StatefulSet).Spec.Template
	}
	return m.deployment(t).Spec.Template
}

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	require.NoError(t, err)
	return c
}

// values reads an optional values file and applies --set style overrides.
func values(t *testing.T, file string, set ...string) map[string]any {
	t.Helper()
	vals := map[string]any{}
	if file != "" {
		v, err := chartutil.ReadValuesFile(file)
		require.NoError(t, err)
		vals = v.AsMap()
	}
	for _, s := range set {
		require.NoError(t, strvals.ParseInto(s, vals), s)
	}
	return vals
}

// renderRaw renders the chart as `helm install` would (schema validation included) and
// returns the template outputs by file name.
func renderRaw(t *testing.T, vals map[string]any) (map[string]string, error) {
	t.Helper()
	c := loadChart(t)
	rv, err := chartutil.ToRenderValues(c, vals, chartutil.ReleaseOptions{
		Name: release, Namespace: namespace, Revision: 1, IsInstall: true,
	}, chartutil.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	return engine.Render(c, rv)
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// render renders and strictly decodes every manifest into its API type.
func render(t *testing.T, vals map[string]any) manifests {
	t.Helper()
	out, err := renderRaw(t, vals)
	require.NoError(t, err)
	m := manifests{}
	for file, text := range out {
		if strings.HasSuffix(file, "NOTES.txt") {
			continue
		}
		for _, doc := range docSep.Split(text, -1) {
			var head struct {
				APIVersion string            `json:"apiVersion"`
				Kind       string            `json:"kind"`
				Metadata   metav1.ObjectMeta `json:"metadata"`
			}
			require.NoError(t, yaml.Unmarshal([]byte(doc), &head), file)
			if head.Kind == "" {
				require.Empty(t, strings.TrimSpace(stripComments(doc)), "%s: document without kind", file)
				continue
			}
			obj := newObject(t, head.Kind, head.APIVersion)
			require.NoErrorf(t, yaml.UnmarshalStrict([]byte(doc), obj), "%s: strict decode of %s", file, head.Kind)
			if m[head.Kind] == nil {
				m[head.Kind] = map[string]any{}
			}
			require.NotContainsf(t, m[head.Kind], head.Metadata.Name, "duplicate %s %s", head.Kind, head.Metadata.Name)
			m[head.Kind][head.Metadata.Name] = obj
			assert.Equalf(t, namespace, head.Metadata.Namespace, "%s %s namespace", head.Kind, head.Metadata.Name)
		}
	}
	return m
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l)
		}
	}
	return b.String()
}

func newObject(t *testing.T, kind, apiVersion string) any {
	t.Helper()
	want := map[string]string{
		"Deployment": "apps/v1", "Service": "v1", "ConfigMap": "v1", "Secret": "v1",
		"ServiceAccount": "v1", "Pod": "v1", "PodDisruptionBudget": "policy/v1",
		"NetworkPolicy": "networking.k8s.io/v1", "ServiceMonitor": "monitoring.coreos.com/v1",
		"PrometheusRule": "monitoring.coreos.com/v1", "ScaledObject": "keda.sh/v1alpha1",
		"TriggerAuthentication": "keda.sh/v1alpha1", "StatefulSet": "apps/v1",
	}
	require.Containsf(t, want, kind, "kind %s has no decoder in this test", kind)
	require.Equalf(t, want[kind], apiVersion, "apiVersion of %s", kind)
	switch kind {
	case "Deployment":
		return &appsv1.Deployment{}
	case "StatefulSet":
		return &appsv1.StatefulSet{}
	case "Service":
		return &corev1.Service{}
	case "ConfigMap":
		return &corev1.ConfigMap{}
	case "Secret":
		return &corev1.Secret{}
	case "ServiceAccount":
		return &corev1.ServiceAccount{}
	case "Pod":
		return &corev1.Pod{}
	case "PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}
	case "NetworkPolicy":
		return &networkingv1.NetworkPolicy{}
	case "ServiceMonitor":
		return &serviceMonitor{}
	case "PrometheusRule":
		return &prometheusRule{}
	case "ScaledObject":
		return &scaledObject{}
	default:
		return &triggerAuthentication{}
	}
}

func envVar(t *testing.T, c corev1.Container, name string) corev1.EnvVar {
	t.Helper()
	for _, e := range c.Env {
		if e.Name == name {
			return e
		}
	}
	require.Failf(t, "env var missing", "%s not in %v", name, c.Env)
	return corev1.EnvVar{}
}

func hasEnv(c corev1.Container, name string) bool {
	return slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == name })
}

func configFile(t *testing.T, m manifests) map[string]any {
	t.Helper()
	cm := m.get(t, "ConfigMap", fullname).(*corev1.ConfigMap)
	var cfg map[string]any
	require.NoError(t, yaml.UnmarshalStrict([]byte(cm.Data["config.yaml"]), &cfg))
	return cfg
}

func TestDefaultValues(t *testing.T) {
	m := render(t, values(t, ""))
	assert.ElementsMatch(t, []string{
		"ConfigMap/" + fullname, "Deployment/" + fullname, "PodDisruptionBudget/" + fullname,
		"Pod/" + fullname + "-test-connection", "Secret/" + fullname, "Service/" + fullname,
		"ServiceAccount/" + fullname,
	}, m.kinds(), "optional objects (ServiceMonitor, PrometheusRule, KEDA, NetworkPolicy, dashboard) are off by default")

	d := m.deployment(t)
	require.NotNil(t, d.Spec.Replicas)
	assert.EqualValues(t, 2, *d.Spec.Replicas)
	assert.Equal(t, appsv1.RollingUpdateDeploymentStrategyType, d.Spec.Strategy.Type)
	assert.Equal(t, "0", d.Spec.Strategy.RollingUpdate.MaxSurge.String())
	assert.Equal(t, "1", d.Spec.Strategy.RollingUpdate.MaxUnavailable.String())
	assert.Equal(t, d.Spec.Selector.MatchLabels, map[string]string{
		"app.kubernetes.io/name": "ampstream", "app.kubernetes.io/instance": release,
	})
	for k, v := range d.Spec.Selector.MatchLabels {
		assert.Equal(t, v, d.Spec.Template.Labels[k], "pod template carries selector label %s", k)
	}

	pod := d.Spec.Template.Spec
	require.NotNil(t, pod.AutomountServiceAccountToken)
	assert.False(t, *pod.AutomountServiceAccountToken)
	assertPodSecurity(t, pod)
	require.Len(t, pod.Containers, 1)
	c := pod.Containers[0]

	// Image tag defaults to the chart's appVersion.
	assert.Equal(t, "ghcr.io/ampstream/ampstream:"+loadChart(t).Metadata.AppVersion, c.Image)
	assert.Equal(t, []string{"run", "--config", "/etc/ampstream/config.yaml"}, c.Args)
	require.Len(t, c.Ports, 1)
	assert.EqualValues(t, 9090, c.Ports[0].ContainerPort)
	assert.Equal(t, "admin", c.Ports[0].Name)

	require.NotNil(t, c.LivenessProbe)
	require.NotNil(t, c.ReadinessProbe)
	require.NotNil(t, c.StartupProbe)
	assert.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path)
	assert.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
	assert.Equal(t, "/startupz", c.StartupProbe.HTTPGet.Path, "the startup probe waits for the first group join")
	for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
		assert.Equal(t, "admin", p.HTTPGet.Port.String())
	}
	require.NotNil(t, c.Resources.Requests.Memory())
	assert.False(t, c.Resources.Limits.Memory().IsZero(), "memory limit set")

	// Grace period: drain timeout 20 s + margin 25 s.
	require.NotNil(t, pod.TerminationGracePeriodSeconds)
	assert.EqualValues(t, 45, *pod.TerminationGracePeriodSeconds)

	// The API key comes from the chart-created Secret, which has that key.
	key := envVar(t, c, "AMPSTREAM_AMPLITUDE_API_KEY")
	require.NotNil(t, key.ValueFrom)
	require.NotNil(t, key.ValueFrom.SecretKeyRef)
	assert.Equal(t, fullname, key.ValueFrom.SecretKeyRef.Name)
	sec := m.get(t, "Secret", fullname).(*corev1.Secret)
	assert.Contains(t, sec.Data, key.ValueFrom.SecretKeyRef.Key)
	assert.False(t, hasEnv(c, "AMPSTREAM_KAFKA_SASL_PASSWORD"), "no SASL env without a SASL mechanism")
	assert.NotContains(t, sec.Data, "kafka-sasl-password")

	hex64 := regexp.MustCompile(`^[0-9a-f]{64}$`)
	assert.Regexp(t, hex64, d.Spec.Template.Annotations["checksum/config"])
	assert.Regexp(t, hex64, d.Spec.Template.Annotations["checksum/secret"])

	// The config file: chart-owned keys present, secrets absent.
	cfg := configFile(t, m)
	assert.Equal(t, map[string]any{"addr": ":9090"}, cfg["admin"])
	assert.Equal(t, map[string]any{"drain_timeout": "20s"}, cfg["shutdown"])
	cm := m.get(t, "ConfigMap", fullname).(*corev1.ConfigMap)
	for _, secret := range []string{"api_key", "password", "username"} {
		assert.NotContains(t, cm.Data["config.yaml"], secret)
	}
	var mount *corev1.VolumeMount
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].MountPath == "/etc/ampstream/config.yaml" {
			mount = &c.VolumeMounts[i]
		}
	}
	require.NotNil(t, mount, "config file mounted where --config points")
	assert.True(t, mount.ReadOnly)
	assert.Equal(t, "config.yaml", mount.SubPath)

	svc := m.get(t, "Service", fullname).(*corev1.Service)
	require.Len(t, svc.Spec.Ports, 1)
	assert.EqualValues(t, 9090, svc.Spec.Ports[0].Port)
	assert.Equal(t, "admin", svc.Spec.Ports[0].TargetPort.String())
	assert.Equal(t, d.Spec.Selector.MatchLabels, svc.Spec.Selector)

	pdb := m.get(t, "PodDisruptionBudget", fullname).(*policyv1.PodDisruptionBudget)
	require.NotNil(t, pdb.Spec.MaxUnavailable)
	assert.Equal(t, "1", pdb.Spec.MaxUnavailable.String())
	assert.Nil(t, pdb.Spec.MinAvailable)
	assert.Equal(t, d.Spec.Selector.MatchLabels, pdb.Spec.Selector.MatchLabels)

	sa := m.get(t, "ServiceAccount", fullname).(*corev1.ServiceAccount)
	assert.Equal(t, sa.Name, pod.ServiceAccountName)
	require.NotNil(t, sa.AutomountServiceAccountToken)
	assert.False(t, *sa.AutomountServiceAccountToken)

	test := m.get(t, "Pod", fullname+"-test-connection").(*corev1.Pod)
	assert.Equal(t, "test", test.Annotations["helm.sh/hook"])
	require.NotNil(t, test.Spec.SecurityContext.RunAsNonRoot)
	assert.True(t, *test.Spec.SecurityContext.RunAsNonRoot)
	require.NotNil(t, test.Spec.SecurityContext.RunAsUser)
	assert.NotZero(t, *test.Spec.SecurityContext.RunAsUser)
	require.Len(t, test.Spec.Containers, 1)
	tc := test.Spec.Containers[0]
	assert.True(t, *tc.SecurityContext.ReadOnlyRootFilesystem)
	assert.False(t, *tc.SecurityContext.AllowPrivilegeEscalation)
	script := strings.Join(append(tc.Command, tc.Args...), " ")
	assert.Contains(t, script, fmt.Sprintf("http://%s.%s.svc:9090", fullname, namespace))
	assert.Contains(t, script, "/readyz")
	assert.Contains(t, script, "/metrics")
	assert.Equal(t, corev1.RestartPolicyNever, test.Spec.RestartPolicy)
}

func assertPodSecurity(t *testing.T, pod corev1.PodSpec) {
	t.Helper()
	psc := pod.SecurityContext
	require.NotNil(t, psc)
	assert.True(t, *psc.RunAsNonRoot)
	assert.EqualValues(t, 65532, *psc.RunAsUser)
	require.NotNil(t, psc.SeccompProfile)
	assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, psc.SeccompProfile.Type)
	for _, c := range pod.Containers {
		sc := c.SecurityContext
		require.NotNil(t, sc, c.Name)
		assert.True(t, *sc.RunAsNonRoot)
		assert.EqualValues(t, 65532, *sc.RunAsUser)
		assert.True(t, *sc.ReadOnlyRootFilesystem)
		assert.False(t, *sc.AllowPrivilegeEscalation)
		assert.False(t, *sc.Privileged)
		require.NotNil(t, sc.Capabilities)
		assert.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop)
		assert.Empty(t, sc.Capabilities.Add)
		require.NotNil(t, sc.SeccompProfile)
		assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, sc.SeccompProfile.Type)
	}
}

func TestFullValues(t *testing.T) {
	vals := values(t, fullValues)
	m := render(t, vals)
	assert.ElementsMatch(t, []string{
		"ConfigMap/" + fullname, "ConfigMap/" + fullname + "-dashboard", "Deployment/" + fullname,
		"NetworkPolicy/" + fullname, "PodDisruptionBudget/" + fullname, "Pod/" + fullname + "-test-connection",
		"PrometheusRule/" + fullname, "ScaledObject/" + fullname, "Service/" + fullname,
		"ServiceAccount/" + fullname, "ServiceMonitor/" + fullname, "TriggerAuthentication/" + fullname,
	}, m.kinds(), "every credential is in an existing Secret, so the chart creates none")

	d := m.deployment(t)
	assert.Nil(t, d.Spec.Replicas, "KEDA owns the replica count; a replicas field would fight it on every upgrade")
	pod := d.Spec.Template.Spec
	assertPodSecurity(t, pod)
	c := pod.Containers[0]
	assert.Equal(t, "ghcr.io/ampstream/ampstream:0.1.0", c.Image)
	assert.EqualValues(t, 60, *pod.TerminationGracePeriodSeconds, "30 s drain + 30 s margin")

	// Credentials come from the existing Secrets, by the configured keys.
	for name, want := range map[string][2]string{
		"AMPSTREAM_AMPLITUDE_API_KEY":   {"ampstream-amplitude", "api-key"},
		"AMPSTREAM_KAFKA_SASL_USERNAME": {"ampstream-kafka-user", "username"},
		"AMPSTREAM_KAFKA_SASL_PASSWORD": {"ampstream-kafka-user", "password"},
	} {
		e := envVar(t, c, name)
		require.NotNil(t, e.ValueFrom, name)
		require.NotNil(t, e.ValueFrom.SecretKeyRef, name)
		assert.Equal(t, want[0], e.ValueFrom.SecretKeyRef.Name, name)
		assert.Equal(t, want[1], e.ValueFrom.SecretKeyRef.Key, name)
		assert.Empty(t, e.Value, name)
	}

	cfg := configFile(t, m)
	assert.Equal(t, map[string]any{"drain_timeout": "30s"}, cfg["shutdown"])
	assert.Equal(t, map[string]any{"mechanism": "scram-sha-512"}, cfg["kafka"].(map[string]any)["sasl"])

	// TLS files mount beside the config file.
	assert.True(t, slices.ContainsFunc(c.VolumeMounts, func(v corev1.VolumeMount) bool {
		return v.Name == "kafka-tls" && v.MountPath == "/etc/ampstream/tls"
	}))
	require.Len(t, pod.TopologySpreadConstraints, 1)
	require.NotNil(t, pod.TopologySpreadConstraints[0].LabelSelector)
	assert.Equal(t, d.Spec.Selector.MatchLabels, pod.TopologySpreadConstraints[0].LabelSelector.MatchLabels)
	assert.Equal(t, "analytics", d.Spec.Template.Annotations["example.com/owner"])
	assert.Equal(t, "analytics", d.Labels["team"])

	// KEDA.
	so := m.get(t, "ScaledObject", fullname).(*scaledObject)
	keda := vals["keda"].(map[string]any)
	partitions := int(keda["partitions"].(float64))
	assert.LessOrEqual(t, so.Spec.MaxReplicaCount, partitions)
	assert.GreaterOrEqual(t, so.Spec.MinReplicaCount, 1)
	assert.Equal(t, fullname, so.Spec.ScaleTargetRef.Name)
	assert.Equal(t, "Deployment", so.Spec.ScaleTargetRef.Kind)
	assert.Equal(t, 1800, so.Spec.Advanced.HorizontalPodAutoscalerConfig.Behavior.ScaleDown.StabilizationWindowSeconds)
	require.Len(t, so.Spec.Triggers, 1)
	tr := so.Spec.Triggers[0]
	assert.Equal(t, "kafka", tr.Type)
	assert.Equal(t, map[string]string{
		"bootstrapServers":         "kafka-0.kafka.data.svc:9093,kafka-1.kafka.data.svc:9093",
		"consumerGroup":            "ampstream-prod",
		"topic":                    "events",
		"lagThreshold":             "10000",
		"activationLagThreshold":   "0",
		"offsetResetPolicy":        "earliest",
		"allowIdleConsumers":       "false",
		"excludePersistentLag":     "false",
		"limitToPartitionsWithLag": "false",
		"tls":                      "enable",
		"sasl":                     "scram_sha512",
	}, tr.Metadata)
	require.NotNil(t, tr.AuthenticationRef)
	ta := m.get(t, "TriggerAuthentication", tr.AuthenticationRef.Name).(*triggerAuthentication)
	var refs []string
	for _, ref := range ta.Spec.SecretTargetRef {
		refs = append(refs, ref.Parameter+"="+ref.Name+"/"+ref.Key)
	}
	assert.ElementsMatch(t, []string{
		"username=ampstream-kafka-user/username",
		"password=ampstream-kafka-user/password",
		"ca=kafka-cluster-ca-cert/ca.crt",
	}, refs, "KEDA reuses ampstream's SASL Secret and the brokers' CA")

	// ServiceMonitor selects the Service and scrapes its admin port.
	svc := m.get(t, "Service", fullname).(*corev1.Service)
	sm := m.get(t, "ServiceMonitor", fullname).(*serviceMonitor)
	for k, v := range sm.Spec.Selector.MatchLabels {
		assert.Equal(t, v, svc.Labels[k], "ServiceMonitor selects the Service by %s", k)
	}
	assert.Equal(t, []string{namespace}, sm.Spec.NamespaceSelector.MatchNames)
	require.Len(t, sm.Spec.Endpoints, 1)
	assert.Equal(t, svc.Spec.Ports[0].Name, sm.Spec.Endpoints[0].Port)
	assert.Equal(t, "/metrics", sm.Spec.Endpoints[0].Path)
	assert.Equal(t, "15s", sm.Spec.Endpoints[0].Interval)
	assert.Equal(t, "kube-prometheus-stack", sm.Labels["release"])
	// The rules select up{job=~"ampstream.*"}: job comes from this Service label.
	assert.Equal(t, "app.kubernetes.io/name", sm.Spec.JobLabel)
	assert.Regexp(t, "^ampstream", svc.Labels[sm.Spec.JobLabel])

	// PrometheusRule carries exactly the rules of deployments/.
	pr := m.get(t, "PrometheusRule", fullname).(*prometheusRule)
	assert.Equal(t, readRules(t, rulesFile), pr.Spec)
	assert.Equal(t, "kube-prometheus-stack", pr.Labels["release"])

	// Dashboard ConfigMap for the Grafana sidecar, carrying the deployments/ JSON.
	dash := m.get(t, "ConfigMap", fullname+"-dashboard").(*corev1.ConfigMap)
	assert.Equal(t, "1", dash.Labels["grafana_dashboard"])
	assert.Equal(t, "Kafka", dash.Annotations["grafana_folder"])
	want, err := os.ReadFile(dashboardFile)
	require.NoError(t, err)
	assert.JSONEq(t, string(want), dash.Data["ampstream-dashboard.json"])

	// NetworkPolicy: admin port in; DNS, brokers and HTTPS out.
	np := m.get(t, "NetworkPolicy", fullname).(*networkingv1.NetworkPolicy)
	assert.Equal(t, d.Spec.Selector.MatchLabels, np.Spec.PodSelector.MatchLabels)
	assert.ElementsMatch(t, []networkingv1.PolicyType{"Ingress", "Egress"}, np.Spec.PolicyTypes)
	require.Len(t, np.Spec.Ingress, 2, "metricsFrom, and the helm test pod")
	assert.Equal(t, "9090", np.Spec.Ingress[0].Ports[0].Port.String())
	assert.Len(t, np.Spec.Ingress[0].From, 1)
	var egress []string
	for _, r := range np.Spec.Egress {
		for _, p := range r.Ports {
			egress = append(egress, fmt.Sprintf("%s/%s", p.Port, *p.Protocol))
		}
	}
	assert.ElementsMatch(t, []string{"53/UDP", "53/TCP", "9093/TCP", "443/TCP"}, egress)
}

// The `helm test` pod must reach the admin port wherever the NetworkPolicy is enforced: the
// policy must not select it (its egress allows only DNS, brokers and 443), and the policy's
// ingress must let it in, whatever networkPolicy.metricsFrom says.
func TestHelmTestPodReachesTheAdminPortUnderTheNetworkPolicy(t *testing.T) {
	for _, tt := range []struct {
		name string
		vals map[string]any
		port int
	}{
		{"full values (metricsFrom: the monitoring namespace)", values(t, fullValues), 9090},
		{"policy on, metricsFrom empty", values(t, "", "networkPolicy.enabled=true"), 9090},
		{"statefulset, another admin port", values(t, fullValues, "workload=statefulset", "admin.port=9191"), 9191},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := render(t, tt.vals)
			np := m.get(t, "NetworkPolicy", fullname).(*networkingv1.NetworkPolicy)
			test := m.get(t, "Pod", fullname+"-test-connection").(*corev1.Pod)
			testLabels := labels.Set(test.Labels)
			port := tt.port

			// The test pod calls the Service's admin port, which targets the pods' admin port.
			script := strings.Join(test.Spec.Containers[0].Args, " ")
			assert.Contains(t, script, fmt.Sprintf(`base="http://%s.%s.svc:%d"`, fullname, namespace, port))
			svc := m.get(t, "Service", fullname).(*corev1.Service)
			assert.EqualValues(t, port, svc.Spec.Ports[0].Port)
			pod := workloadPod(t, m)
			assert.Equal(t, svc.Spec.Ports[0].TargetPort.String(), pod.Spec.Containers[0].Ports[0].Name)
			assert.EqualValues(t, port, pod.Spec.Containers[0].Ports[0].ContainerPort)

			// The policy selects the ampstream pods, not the test pod: its egress is unrestricted
			// by this chart. Nor do the Service and the PodDisruptionBudget count it.
			sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
			require.NoError(t, err)
			assert.True(t, sel.Matches(labels.Set(pod.Labels)), "the policy covers ampstream")
			assert.False(t, sel.Matches(testLabels), "the policy must not select the helm test pod")
			assert.False(t, labels.SelectorFromSet(svc.Spec.Selector).Matches(testLabels), "the Service must not select the test pod")
			pdb := m.get(t, "PodDisruptionBudget", fullname).(*policyv1.PodDisruptionBudget)
			pdbSel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
			require.NoError(t, err)
			assert.False(t, pdbSel.Matches(testLabels), "the PodDisruptionBudget must not count the test pod")

			// Some ingress rule admits the test pod (same namespace) on the admin port.
			admitted := false
			for _, rule := range np.Spec.Ingress {
				onPort := len(rule.Ports) == 0
				for _, p := range rule.Ports {
					onPort = onPort || p.Port == nil || p.Port.IntValue() == port || p.Port.String() == "admin"
				}
				fromTest := len(rule.From) == 0
				for _, peer := range rule.From {
					if peer.PodSelector == nil || peer.NamespaceSelector != nil || peer.IPBlock != nil {
						continue
					}
					ps, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
					require.NoError(t, err)
					fromTest = fromTest || ps.Matches(testLabels)
				}
				admitted = admitted || onPort && fromTest
			}
			assert.True(t, admitted, "no ingress rule admits the helm test pod on port %d: %+v", port, np.Spec.Ingress)
		})
	}
}

func readRules(t *testing.T, path string) ruleGroups {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var rg ruleGroups
	require.NoError(t, yaml.UnmarshalStrict(b, &rg), path)
	return rg
}

func TestKEDAMaxReplicasAbovePartitionsFails(t *testing.T) {
	_, err := renderRaw(t, values(t, fullValues, "keda.maxReplicaCount=13"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "keda.maxReplicaCount (13) must not exceed keda.partitions (12)")

	// Equal is fine.
	m := render(t, values(t, fullValues, "keda.maxReplicaCount=12,keda.partitions=12"))
	assert.Equal(t, 12, m.get(t, "ScaledObject", fullname).(*scaledObject).Spec.MaxReplicaCount)

	_, err = renderRaw(t, values(t, fullValues, "keda.minReplicaCount=0"))
	require.Error(t, err, "minReplicaCount 0 can leave the kafka trigger stuck")
}

func TestKEDAPrometheusTrigger(t *testing.T) {
	m := render(t, values(t, "", "keda.enabled=true,keda.trigger=prometheus"))
	assert.Nil(t, m.deployment(t).Spec.Replicas)
	assert.NotContains(t, m, "TriggerAuthentication")
	so := m.get(t, "ScaledObject", fullname).(*scaledObject)
	require.Len(t, so.Spec.Triggers, 1)
	tr := so.Spec.Triggers[0]
	assert.Equal(t, "prometheus", tr.Type)
	assert.Equal(t, fmt.Sprintf(
		`sum(max by (topic, partition) (ampstream_kafka_group_lag{namespace=%q, service=%q}))`, namespace, fullname),
		tr.Metadata["query"])
	assert.Nil(t, tr.AuthenticationRef)
}

func TestKafkaSASLInlineCredentials(t *testing.T) {
	m := render(t, values(t, "",
		"config.kafka.sasl.mechanism=plain,kafkaSasl.username=svc-ampstream,kafkaSasl.password=hunter2-sasl,amplitude.apiKey=key-1234567890",
		"keda.enabled=true"))
	sec := m.get(t, "Secret", fullname).(*corev1.Secret)
	assert.Equal(t, "svc-ampstream", string(sec.Data["kafka-sasl-username"]))
	assert.Equal(t, "hunter2-sasl", string(sec.Data["kafka-sasl-password"]))
	assert.Equal(t, "key-1234567890", string(sec.Data["amplitude-api-key"]))
	c := m.deployment(t).Spec.Template.Spec.Containers[0]
	for name, key := range map[string]string{
		"AMPSTREAM_KAFKA_SASL_USERNAME": "kafka-sasl-username",
		"AMPSTREAM_KAFKA_SASL_PASSWORD": "kafka-sasl-password",
		"AMPSTREAM_AMPLITUDE_API_KEY":   "amplitude-api-key",
	} {
		ref := envVar(t, c, name).ValueFrom.SecretKeyRef
		assert.Equal(t, fullname, ref.Name)
		assert.Equal(t, key, ref.Key)
	}
	cm := m.get(t, "ConfigMap", fullname).(*corev1.ConfigMap)
	for _, secret := range []string{"svc-ampstream", "hunter2-sasl", "key-1234567890"} {
		assert.NotContains(t, cm.Data["config.yaml"], secret)
		assert.NotContains(t, cm.Data["config.yaml"], base64.StdEncoding.EncodeToString([]byte(secret)))
	}
	so := m.get(t, "ScaledObject", fullname).(*scaledObject)
	assert.Equal(t, "plaintext", so.Spec.Triggers[0].Metadata["sasl"])
	ta := m.get(t, "TriggerAuthentication", fullname).(*triggerAuthentication)
	for _, ref := range ta.Spec.SecretTargetRef {
		assert.Equal(t, fullname, ref.Name)
		assert.Equal(t, "kafka-sasl-"+ref.Parameter, ref.Key)
	}
}

func TestSecretsAndChartOwnedKeysRefusedInConfig(t *testing.T) {
	for _, set := range []string{
		"config.amplitude.api_key=abc",
		"config.kafka.sasl.password=abc",
		"config.kafka.sasl.username=abc",
		"config.admin.addr=:8080",
		"config.shutdown.drain_timeout=5s",
		"config.kafka.group_instance_id=one-for-all",
		"config.kafka.unknown_key=1",
		"workload=daemonset",
		"image.tag=latest",
		"keda.trigger=cpu",
	} {
		_, err := renderRaw(t, values(t, "", set))
		assert.Errorf(t, err, "%s must not render", set)
	}
}

func TestChecksumAnnotations(t *testing.T) {
	ann := func(set ...string) map[string]string {
		return render(t, values(t, "", set...)).deployment(t).Spec.Template.Annotations
	}
	base := ann()
	assert.Equal(t, base, ann(), "rendering is deterministic")

	cfg := ann("config.log.level=debug")
	assert.NotEqual(t, base["checksum/config"], cfg["checksum/config"], "a config change rolls the pods")
	assert.Equal(t, base["checksum/secret"], cfg["checksum/secret"])

	drain := ann("shutdown.drainTimeoutSeconds=25")
	assert.NotEqual(t, base["checksum/config"], drain["checksum/config"], "chart-owned config keys count too")

	sec := ann("amplitude.apiKey=rotated-key")
	assert.NotEqual(t, base["checksum/secret"], sec["checksum/secret"], "a key rotation rolls the pods")
	assert.Equal(t, base["checksum/config"], sec["checksum/config"])
}

func TestGracePeriodCoversDrainTimeout(t *testing.T) {
	for _, drain := range []int{1, 20, 45, 120} {
		m := render(t, values(t, "", fmt.Sprintf("shutdown.drainTimeoutSeconds=%d,config.kafka.rebalance_timeout=%ds", drain, drain+30)))
		grace := *m.deployment(t).Spec.Template.Spec.TerminationGracePeriodSeconds
		assert.GreaterOrEqualf(t, grace, int64(drain+5), "drain %d s", drain)
		assert.Equal(t, map[string]any{"drain_timeout": fmt.Sprintf("%ds", drain)}, configFile(t, m)["shutdown"])
	}
	_, err := renderRaw(t, values(t, "", "shutdown.gracePeriodMarginSeconds=0"))
	assert.Error(t, err, "a margin below 5 s leaves no time to commit and leave the group")

	// ampstream refuses rebalance_timeout <= drain_timeout; with the 30 s default the chart
	// says so at install time instead of in a crash loop.
	_, err = renderRaw(t, values(t, "", "shutdown.drainTimeoutSeconds=30"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "set config.kafka.rebalance_timeout above it")
}

func TestImage(t *testing.T) {
	c := render(t, values(t, "", "image.tag=1.2.3")).deployment(t).Spec.Template.Spec.Containers[0]
	assert.Equal(t, "ghcr.io/ampstream/ampstream:1.2.3", c.Image)
	digest := "sha256:" + strings.Repeat("ab", 32)
	c = render(t, values(t, "", "image.tag=1.2.3,image.digest="+digest)).deployment(t).Spec.Template.Spec.Containers[0]
	assert.Equal(t, "ghcr.io/ampstream/ampstream@"+digest, c.Image)
}

func TestRunbookURLOverride(t *testing.T) {
	m := render(t, values(t, "", "prometheusRule.enabled=true,prometheusRule.runbookBaseUrl=https://wiki.example.com/ampstream/"))
	pr := m.get(t, "PrometheusRule", fullname).(*prometheusRule)
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				assert.Equal(t, "https://wiki.example.com/ampstream#"+strings.ToLower(r.Alert), r.Annotations["runbook_url"])
			}
		}
	}
}

func TestHelmLint(t *testing.T) {
	for _, file := range []string{"", fullValues, statefulSetValues} {
		t.Run(strings.TrimPrefix(file, "ampstream/ci/"), func(t *testing.T) {
			l := lint.All(chartDir, values(t, file), namespace, true)
			for _, msg := range l.Messages {
				// --strict fails on warnings; INFO (e.g. "icon is recommended") passes.
				assert.LessOrEqual(t, msg.Severity, support.InfoSev, msg.Error())
			}
		})
	}
}

func TestChartCopiesMatchDeployments(t *testing.T) {
	for chartCopy, source := range map[string]string{chartRules: rulesFile, chartDashboard: dashboardFile} {
		a, err := os.ReadFile(chartCopy)
		require.NoError(t, err)
		b, err := os.ReadFile(source)
		require.NoError(t, err)
		assert.Truef(t, bytes.Equal(a, b), "%s differs from %s: run cp %s %s", chartCopy, source, source, chartCopy)
	}
}

func TestAlertRules(t *testing.T) {
	rg := readRules(t, rulesFile)
	runbook, err := os.ReadFile(runbookFile)
	require.NoError(t, err)
	anchors := markdownAnchors(string(runbook))

	var alerts, records []string
	for _, g := range rg.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				records = append(records, r.Record)
				assert.Empty(t, r.Alert, r.Record)
				assert.Regexp(t, `^[a-z_]+:[a-z_]+:[a-z0-9_]+$`, r.Record, "level:metric:operations")
				assert.NotEmpty(t, strings.TrimSpace(r.Expr), r.Record)
				continue
			}
			alerts = append(alerts, r.Alert)
			require.NotEmpty(t, r.Alert, "group %s has a rule without alert name", g.Name)
			assert.NotEmpty(t, strings.TrimSpace(r.Expr), r.Alert)
			_, err := time.ParseDuration(r.For)
			assert.NoErrorf(t, err, "%s: for %q", r.Alert, r.For)
			assert.Contains(t, []string{"critical", "warning"}, r.Labels["severity"], r.Alert)
			assert.NotEmpty(t, r.Annotations["summary"], r.Alert)
			assert.NotEmpty(t, r.Annotations["description"], r.Alert)
			url := r.Annotations["runbook_url"]
			anchor := strings.ToLower(r.Alert)
			assert.Equal(t, "https://github.com/ampstream/ampstream/blob/main/deployments/RUNBOOK.md#"+anchor, url)
			assert.Containsf(t, anchors, anchor, "RUNBOOK.md has a section for %s", r.Alert)
			assert.Equalf(t, strings.Count(r.Expr, "("), strings.Count(r.Expr, ")"), "%s: balanced parentheses", r.Alert)
		}
	}
	for _, want := range []string{
		"AmpstreamLagHigh", "AmpstreamPartitionStalled", "AmpstreamLagNotDecreasing", "AmpstreamUnauthorized",
		"AmpstreamThrottling", "AmpstreamDLQ", "AmpstreamAmplitudeErrors", "AmpstreamRebalanceStorm",
		"AmpstreamMetricsAbsent", "AmpstreamNoPartitions", "AmpstreamPartitionsUnowned", "AmpstreamGroupLagStale",
		"AmpstreamUserRatesNotShared",
		"AmpstreamFreshnessBudgetBurn", "AmpstreamFreshnessBudgetBurnSlow",
	} {
		assert.Contains(t, alerts, want)
	}
	assert.Len(t, alerts, len(uniq(alerts)), "alert names are unique")
	assert.Len(t, records, len(uniq(records)), "recording rule names are unique")
	// Every recorded series an alert reads is recorded.
	recorded := regexp.MustCompile(`\b[a-z_]+:[a-z_]+:[a-z0-9_]+\b`)
	for _, g := range rg.Groups {
		for _, r := range g.Rules {
			for _, name := range recorded.FindAllString(r.Expr, -1) {
				assert.Containsf(t, records, name, "%s%s reads %s", r.Alert, r.Record, name)
			}
		}
	}
}

// TestRulesWithPromtool runs the rules' unit tests (deployments/prometheus/ampstream-rules.test.yaml:
// unowned partitions, stalled partition, lag without owners, absent metrics) when promtool is
// installed; `make test-rules` runs the same.
func TestRulesWithPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (apt-get install prometheus); make test-rules runs these tests")
	}
	for _, args := range [][]string{
		{"check", "rules", rulesFile},
		{"test", "rules", strings.TrimSuffix(rulesFile, ".yaml") + ".test.yaml"},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		assert.NoErrorf(t, err, "promtool %s:\n%s", strings.Join(args, " "), out)
	}
}

func uniq(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return slices.Compact(c)
}

// markdownAnchors returns GitHub's anchors for the headings of a Markdown document.
func markdownAnchors(md string) []string {
	var out []string
	drop := regexp.MustCompile(`[^a-z0-9 _-]`)
	for _, l := range strings.Split(md, "\n") {
		if !strings.HasPrefix(l, "#") {
			continue
		}
		h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(l, "#")))
		out = append(out, strings.ReplaceAll(drop.ReplaceAllString(h, ""), " ", "-"))
	}
	return out
}

func TestDashboard(t *testing.T) {
	b, err := os.ReadFile(dashboardFile)
	require.NoError(t, err)
	var dash struct {
		UID        string `json:"uid"`
		Templating struct {
			List []struct {
				Name string `json:"name"`
				Type string `json:"type"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID         int    `json:"id"`
			Type       string `json:"type"`
			Title      string `json:"title"`
			Datasource *struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			GridPos struct{ H, W, X, Y int } `json:"gridPos"`
			Targets []struct {
				Expr       string `json:"expr"`
				Datasource struct {
					UID string `json:"uid"`
				} `json:"datasource"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(b, &dash))
	assert.Equal(t, "ampstream-overview", dash.UID)
	require.NotEmpty(t, dash.Templating.List)
	assert.Equal(t, "datasource", dash.Templating.List[0].Type, "the data source is a variable, so the JSON imports anywhere")

	ids := map[int]bool{}
	exprs := ""
	for _, p := range dash.Panels {
		assert.Falsef(t, ids[p.ID], "duplicate panel id %d", p.ID)
		ids[p.ID] = true
		assert.LessOrEqualf(t, p.GridPos.X+p.GridPos.W, 24, "panel %q fits the grid", p.Title)
		if p.Type == "row" {
			continue
		}
		require.NotNil(t, p.Datasource, p.Title)
		assert.Equal(t, "${datasource}", p.Datasource.UID, p.Title)
		require.NotEmpty(t, p.Targets, p.Title)
		for _, tg := range p.Targets {
			assert.NotEmpty(t, tg.Expr, p.Title)
			assert.Equal(t, "${datasource}", tg.Datasource.UID, p.Title)
			exprs += tg.Expr + "\n"
		}
	}
	// The panels the operations guide asks for, by the series they read.
	for _, want := range []string{
		"max by (topic, partition) (ampstream_kafka_consumer_lag_seconds",
		"max by (topic, partition) (ampstream_kafka_consumer_lag{",
		"rate(ampstream_kafka_partition_high_watermark",
		"rate(ampstream_kafka_partition_committed_offset",
		"sum by (lane, outcome) (rate(ampstream_events_forwarded_total",
		"histogram_quantile(0.5, sum by (le, lane) (rate(ampstream_amplitude_request_duration_seconds_bucket",
		"histogram_quantile(0.99, sum by (le, lane) (rate(ampstream_amplitude_request_duration_seconds_bucket",
		`code="429"`, "ampstream_throttled_keys", "ampstream_hot_keys",
		"sum by (reason) (rate(ampstream_dlq_events_total",
		"ampstream_inflight_events", "ampstream_inflight_bytes", "ampstream_inflight_requests",
		"sum by (result) (rate(ampstream_kafka_commits_total",
		"ampstream_kafka_rebalances_total", "ampstream_kafka_assigned_partitions", "count(ampstream_build_info",
		// The group's view, which keeps reporting when no replica owns a partition.
		"max by (topic, partition) (ampstream_kafka_group_lag_seconds{",
		"max by (topic, partition) (ampstream_kafka_group_lag{",
		"rate(ampstream_kafka_partition_end_offset", "rate(ampstream_kafka_group_committed_offset",
		"max by (topic) (ampstream_kafka_unowned_partitions", "max by (state) (ampstream_kafka_group_state",
		"namespace_job:ampstream_freshness_errors:ratio_1h",
	} {
		assert.Contains(t, exprs, want)
	}
}

// recorder is a Registerer that remembers the fully-qualified name of every metric it sees.
type recorder struct {
	prometheus.Registerer
	names map[string]bool
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *recorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			r.names[m[1]] = true
		}
	}
	return r.Registerer.Register(c)
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func exportedNames(t *testing.T) map[string]bool {
	t.Helper()
	r := &recorder{Registerer: prometheus.NewRegistry(), names: map[string]bool{}}
	metrics.New(r)
	require.NotEmpty(t, r.names)
	return r.names
}

// TestMetricNamesExist: every ampstream_* series named in the dashboard, the alert rules, the
// chart (KEDA query, NOTES) and the operator docs is one the service registers.
func TestMetricNamesExist(t *testing.T) {
	exported := exportedNames(t)
	// A name right after a colon is part of a recording rule's level:metric:operations name.
	seriesName := regexp.MustCompile(`(^|[^:a-zA-Z0-9_])(ampstream_[a-z0-9_]+)`)
	used := map[string]bool{}
	for _, f := range []string{
		dashboardFile, rulesFile, chartDashboard, chartRules, runbookFile, operatingFile,
		"ampstream/values.yaml", "ampstream/templates/NOTES.txt",
	} {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		matches := seriesName.FindAllStringSubmatch(string(b), -1)
		if f == dashboardFile || f == rulesFile {
			require.NotEmpty(t, matches, f)
		}
		for _, match := range matches {
			n := match[2]
			used[n] = true
			name := n
			if !exported[name] {
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if base, ok := strings.CutSuffix(name, suffix); ok && exported[base] {
						name = base
					}
				}
			}
			assert.Truef(t, exported[name], "%s uses %s, which ampstream does not export", f, n)
		}
	}
	// Conversely, every exported series shows up somewhere an operator looks.
	for n := range exported {
		if !strings.HasPrefix(n, "ampstream_") {
			continue
		}
		found := used[n] || used[n+"_bucket"] || used[n+"_sum"] || used[n+"_count"]
		assert.Truef(t, found, "%s is exported but neither charted, alerted on nor documented", n)
	}
}

// TestRenderedConfigIsAccepted loads the rendered config file with the service's own loader,
// with the environment the pod gets (secret references filled with stand-ins), and validates
// it: the chart can only produce configurations ampstream starts with.
func TestRenderedConfigIsAccepted(t *testing.T) {
	for name, tc := range map[string]struct {
		vals  map[string]any
		drain time.Duration
	}{
		"default":     {values(t, "", "amplitude.apiKey=stand-in-key"), 20 * time.Second},
		"full":        {values(t, fullValues), 30 * time.Second},
		"sasl-inline": {values(t, "", "config.kafka.sasl.mechanism=scram-sha-256,kafkaSasl.username=u,kafkaSasl.password=p"), 20 * time.Second},
		"drain-45s":   {values(t, "", "shutdown.drainTimeoutSeconds=45,config.kafka.rebalance_timeout=60s"), 45 * time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			m := render(t, tc.vals)
			cm := m.get(t, "ConfigMap", fullname).(*corev1.ConfigMap)
			path := filepath.Join(t.TempDir(), "config.yaml")
			require.NoError(t, os.WriteFile(path, []byte(cm.Data["config.yaml"]), 0o600))

			env := map[string]string{}
			for _, e := range m.deployment(t).Spec.Template.Spec.Containers[0].Env {
				switch {
				case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
					env[e.Name] = "stand-in-" + e.ValueFrom.SecretKeyRef.Key
				default:
					env[e.Name] = e.Value
				}
			}
			cfg, err := config.Load([]string{"--config", path}, func(k string) string { return env[k] })
			require.NoError(t, err)
			assert.Equal(t, tc.drain, cfg.Shutdown.DrainTimeout)
			assert.Equal(t, ":9090", cfg.Admin.Addr)
			grace := time.Duration(*m.deployment(t).Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
			assert.Greater(t, grace, cfg.Shutdown.DrainTimeout)
		})
	}
}

// TestSchemaCoversSettings keeps values.schema.json's config section in step with the
// service's settings: every setting can be given (except the secrets and the two keys the
// chart writes itself, which the schema refuses), and the schema knows no setting the
// service does not.
func TestSchemaCoversSettings(t *testing.T) {
	b, err := os.ReadFile("ampstream/values.schema.json")
	require.NoError(t, err)
	var schema map[string]any
	require.NoError(t, json.Unmarshal(b, &schema))
	cfg := schema["properties"].(map[string]any)["config"].(map[string]any)

	allowed, refused := map[string]bool{}, map[string]bool{}
	var walk func(prefix string, node map[string]any)
	walk = func(prefix string, node map[string]any) {
		if _, ok := node["not"]; ok {
			refused[prefix] = true
			return
		}
		props, ok := node["properties"].(map[string]any)
		if !ok || node["type"] != "object" {
			allowed[prefix] = true
			return
		}
		assert.Equalf(t, false, node["additionalProperties"], "%s: unknown keys are refused", prefix)
		for k, v := range props {
			key := k
			if prefix != "" {
				key = prefix + "." + k
			}
			walk(key, v.(map[string]any))
		}
	}
	walk("", cfg)

	settings := map[string]bool{}
	for _, e := range config.Default().Entries() {
		settings[e.Key] = true
		covered := allowed[e.Key] || refused[e.Key] || refused[strings.Split(e.Key, ".")[0]]
		assert.Truef(t, covered, "setting %s is missing from values.schema.json (config.%s)", e.Key, e.Key)
	}
	for k := range allowed {
		assert.Truef(t, settings[k], "values.schema.json allows config.%s, which is not an ampstream setting", k)
	}
	assert.ElementsMatch(t, []string{"amplitude.api_key", "kafka.sasl.username", "kafka.sasl.password", "shutdown.drain_timeout", "admin", "kafka.group_instance_id"},
		keys(refused), "secrets and chart-owned keys are refused in config")
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestNotes(t *testing.T) {
	notes := func(set ...string) string {
		out, err := renderRaw(t, values(t, fullValues, set...))
		require.NoError(t, err)
		return out["ampstream/templates/NOTES.txt"]
	}
	n := notes("amplitude.apiKey=must-not-show")
	if testing.Verbose() {
		t.Log("\n" + n)
	}
	assert.Contains(t, n, fmt.Sprintf("http://%s.%s.svc:9090/metrics", fullname, namespace))
	assert.Contains(t, n, `max by (topic, partition) (ampstream_kafka_consumer_lag_seconds{namespace="analytics"})`)
	assert.Contains(t, n, `consumer group "ampstream-prod"`)
	assert.Contains(t, n, "KEDA (kafka trigger), 2..12 for 12 partitions")
	assert.NotContains(t, n, "must-not-show")
	assert.NotContains(t, n, "WARNING")

	out, err := renderRaw(t, values(t, ""))
	require.NoError(t, err)
	assert.Contains(t, out["ampstream/templates/NOTES.txt"], "WARNING: no Amplitude API key is configured")
}
