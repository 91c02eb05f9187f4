package helm_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

const instanceIDEnv = "AMPSTREAM_KAFKA_GROUP_INSTANCE_ID"

// workload: statefulset renders a StatefulSet instead of the Deployment, with the same pod
// template plus static group membership, and every object that points at the pods follows.
func TestStatefulSetMode(t *testing.T) {
	for _, tt := range []struct {
		name     string
		vals     map[string]any
		replicas int32
		keda     bool
	}{
		{name: "defaults", vals: values(t, "", "workload=statefulset"), replicas: 2},
		{name: "ci/statefulset-values.yaml", vals: values(t, statefulSetValues), replicas: 3},
		{name: "full values", vals: values(t, fullValues, "workload=statefulset"), keda: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := render(t, tt.vals)
			assert.NotContains(t, m, "Deployment", "one workload only")
			sts := m.get(t, "StatefulSet", fullname).(*appsv1.StatefulSet)
			pod := sts.Spec.Template

			// Stable pod names come from the StatefulSet; the governing Service exists.
			svc := m.get(t, "Service", fullname).(*corev1.Service)
			assert.Equal(t, svc.Name, sts.Spec.ServiceName)
			assert.Equal(t, appsv1.ParallelPodManagement, sts.Spec.PodManagementPolicy)
			assert.Equal(t, appsv1.RollingUpdateStatefulSetStrategyType, sts.Spec.UpdateStrategy.Type)
			assert.EqualValues(t, 10, sts.Spec.MinReadySeconds)
			assert.Empty(t, sts.Spec.VolumeClaimTemplates, "ampstream keeps no state on disk")
			if tt.keda {
				assert.Nil(t, sts.Spec.Replicas, "KEDA owns the replica count")
			} else {
				require.NotNil(t, sts.Spec.Replicas)
				assert.Equal(t, tt.replicas, *sts.Spec.Replicas)
			}

			// group.instance.id = the pod's own name, from the downward API.
			c := pod.Spec.Containers[0]
			e := envVar(t, c, instanceIDEnv)
			require.NotNil(t, e.ValueFrom)
			require.NotNil(t, e.ValueFrom.FieldRef)
			assert.Equal(t, "metadata.name", e.ValueFrom.FieldRef.FieldPath)
			assert.Empty(t, e.Value)
			assertPodSecurity(t, pod.Spec)
			assert.Equal(t, "/startupz", c.StartupProbe.HTTPGet.Path)
			assert.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path)
			assert.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
			assert.Regexp(t, `^[0-9a-f]{64}$`, pod.Annotations["checksum/config"])

			// Service, PodDisruptionBudget, NetworkPolicy and topology spread select these pods.
			podLabels := labels.Set(pod.Labels)
			stsSel, err := metav1.LabelSelectorAsSelector(sts.Spec.Selector)
			require.NoError(t, err)
			assert.True(t, stsSel.Matches(podLabels))
			assert.True(t, labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels), "Service")
			pdb := m.get(t, "PodDisruptionBudget", fullname).(*policyv1.PodDisruptionBudget)
			assert.Equal(t, sts.Spec.Selector.MatchLabels, pdb.Spec.Selector.MatchLabels, "PodDisruptionBudget")
			if tt.keda {
				np := m.get(t, "NetworkPolicy", fullname).(*networkingv1.NetworkPolicy)
				assert.Equal(t, sts.Spec.Selector.MatchLabels, np.Spec.PodSelector.MatchLabels, "NetworkPolicy")
				require.Len(t, pod.Spec.TopologySpreadConstraints, 1)
				assert.Equal(t, sts.Spec.Selector.MatchLabels, pod.Spec.TopologySpreadConstraints[0].LabelSelector.MatchLabels)

				// KEDA scales the StatefulSet.
				so := m.get(t, "ScaledObject", fullname).(*scaledObject)
				assert.Equal(t, "StatefulSet", so.Spec.ScaleTargetRef.Kind)
				assert.Equal(t, "apps/v1", so.Spec.ScaleTargetRef.APIVersion)
				assert.Equal(t, sts.Name, so.Spec.ScaleTargetRef.Name)

				// One Service only: a second one with these labels would be scraped twice.
				sm := m.get(t, "ServiceMonitor", fullname).(*serviceMonitor)
				smSel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
				require.NoError(t, err)
				n := 0
				for _, obj := range m["Service"] {
					if smSel.Matches(labels.Set(obj.(*corev1.Service).Labels)) {
						n++
					}
				}
				assert.Equal(t, 1, n, "Services scraped by the ServiceMonitor")
			}
		})
	}
}

func TestDeploymentModeHasNoInstanceID(t *testing.T) {
	m := render(t, values(t, fullValues))
	assert.NotContains(t, m, "StatefulSet")
	d := m.deployment(t)
	assert.False(t, hasEnv(d.Spec.Template.Spec.Containers[0], instanceIDEnv),
		"replicas of a Deployment have no stable name, so no static membership")
	so := m.get(t, "ScaledObject", fullname).(*scaledObject)
	assert.Equal(t, "Deployment", so.Spec.ScaleTargetRef.Kind)
}

// Both kinds render the same pod apart from the instance id.
func TestBothWorkloadsShareThePodTemplate(t *testing.T) {
	dep := render(t, values(t, fullValues)).deployment(t).Spec.Template
	sts := render(t, values(t, fullValues, "workload=statefulset")).get(t, "StatefulSet", fullname).(*appsv1.StatefulSet).Spec.Template
	c := &sts.Spec.Containers[0]
	var env []corev1.EnvVar
	for _, e := range c.Env {
		if e.Name != instanceIDEnv {
			env = append(env, e)
		}
	}
	c.Env = env
	assert.Equal(t, dep, sts)
}

func TestStatefulSetNotes(t *testing.T) {
	out, err := renderRaw(t, values(t, "", "workload=statefulset"))
	require.NoError(t, err)
	assert.Contains(t, out["ampstream/templates/NOTES.txt"], "Workload: StatefulSet; static group membership, group.instance.id = pod name (t-ampstream-0, -1, ...)")
}
