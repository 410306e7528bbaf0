package main

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/runops/runops/internal/config"
	"github.com/runops/runops/internal/wait"
)

// scaledObject is KEDA's ScaledObject (keda.sh/v1alpha1), the fields of its
// reference (keda.sh/docs/2.15/reference/scaledobject-spec): decoding
// strictly against it refuses a misspelt or invented field.
// podMonitor is the Prometheus Operator's PodMonitor, as far as the deploy
// files use it.
type podMonitor struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		PodMetricsEndpoints []metricsEndpoint `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

type metricsEndpoint struct {
	Port     string `json:"port"`
	Path     string `json:"path"`
	Interval string `json:"interval,omitempty"`
}

type scaledObject struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name        string            `json:"name"`
		Namespace   string            `json:"namespace,omitempty"`
		Labels      map[string]string `json:"labels,omitempty"`
		Annotations map[string]string `json:"annotations,omitempty"`
	} `json:"metadata"`
	Spec struct {
		ScaleTargetRef struct {
			APIVersion             string `json:"apiVersion,omitempty"`
			Kind                   string `json:"kind,omitempty"`
			Name                   string `json:"name"`
			EnvSourceContainerName string `json:"envSourceContainerName,omitempty"`
		} `json:"scaleTargetRef"`
		PollingInterval       *int32 `json:"pollingInterval,omitempty"`
		CooldownPeriod        *int32 `json:"cooldownPeriod,omitempty"`
		InitialCooldownPeriod *int32 `json:"initialCooldownPeriod,omitempty"`
		IdleReplicaCount      *int32 `json:"idleReplicaCount,omitempty"`
		MinReplicaCount       *int32 `json:"minReplicaCount,omitempty"`
		MaxReplicaCount       *int32 `json:"maxReplicaCount,omitempty"`
		Fallback              *struct {
			FailureThreshold int32 `json:"failureThreshold"`
			Replicas         int32 `json:"replicas"`
		} `json:"fallback,omitempty"`
		Advanced *struct {
			RestoreToOriginalReplicaCount bool `json:"restoreToOriginalReplicaCount,omitempty"`
			HorizontalPodAutoscalerConfig *struct {
				Name     string                           `json:"name,omitempty"`
				Behavior *horizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
			} `json:"horizontalPodAutoscalerConfig,omitempty"`
		} `json:"advanced,omitempty"`
		Triggers []struct {
			Type              string            `json:"type"`
			Name              string            `json:"name,omitempty"`
			Metadata          map[string]string `json:"metadata"`
			UseCachedMetrics  bool              `json:"useCachedMetrics,omitempty"`
			MetricType        string            `json:"metricType,omitempty"`
			AuthenticationRef *struct {
				Name string `json:"name"`
				Kind string `json:"kind,omitempty"`
			} `json:"authenticationRef,omitempty"`
		} `json:"triggers"`
	} `json:"spec"`
}

// horizontalPodAutoscalerBehavior is autoscaling/v2's, which KEDA passes on.
type horizontalPodAutoscalerBehavior struct {
	ScaleUp   *scalingRules `json:"scaleUp,omitempty"`
	ScaleDown *scalingRules `json:"scaleDown,omitempty"`
}

type scalingRules struct {
	StabilizationWindowSeconds *int32 `json:"stabilizationWindowSeconds,omitempty"`
	SelectPolicy               string `json:"selectPolicy,omitempty"`
	Policies                   []struct {
		Type          string `json:"type"`
		Value         int32  `json:"value"`
		PeriodSeconds int32  `json:"periodSeconds"`
	} `json:"policies,omitempty"`
}

// deployFiles decodes every document of deploy/kubernetes strictly, by kind.
func deployFiles(t *testing.T) (deployments []appsv1.Deployment, services []corev1.Service, scaled []scaledObject, monitors []podMonitor) {
	t.Helper()
	files, err := filepath.Glob("../../deploy/kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no deploy files: %v", err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(raw), -1) {
			var kind struct {
				Kind string `json:"kind"`
			}
			if err := yaml.Unmarshal([]byte(doc), &kind); err != nil {
				t.Fatalf("%s, document %d: %v", f, i, err)
			}
			var into any
			switch kind.Kind {
			case "Deployment":
				deployments = append(deployments, appsv1.Deployment{})
				into = &deployments[len(deployments)-1]
			case "Service":
				services = append(services, corev1.Service{})
				into = &services[len(services)-1]
			case "ScaledObject":
				scaled = append(scaled, scaledObject{})
				into = &scaled[len(scaled)-1]
			case "PodMonitor":
				monitors = append(monitors, podMonitor{})
				into = &monitors[len(monitors)-1]
			default:
				t.Fatalf("%s, document %d: kind %q is not checked here", f, i, kind.Kind)
			}
			if err := yaml.UnmarshalStrict([]byte(doc), into); err != nil {
				t.Errorf("%s, document %d (%s): %v", f, i, kind.Kind, err)
			}
		}
	}
	return deployments, services, scaled, monitors
}

// configVariables are the environment variables runops reads: every name
// the configuration asks for, and the log format main reads before it.
func configVariables() map[string]bool {
	names := map[string]bool{"RUNOPS_LOG_FORMAT": true}
	_, _ = config.Load(func(name string) string { names[name] = true; return "" })
	return names
}

// secretSamples stand in for the values the deploy files take from a
// Secret, as an operator would fill them in.
var secretSamples = map[string]string{
	"pooled-database-url": "postgresql://postgres.ref:pw@aws-0-eu-west-1.pooler.supabase.com:6543/postgres?pgbouncer=true",
	"direct-database-url": "postgresql://postgres:pw@db.ref.supabase.co:5432/postgres",
	"service-role-key":    "service-role-key",
	"jwt-secret":          "jwt-secret-of-at-least-32-characters!",
	"gemini-api-key":      "gemini-key",
}

// The Kubernetes example in deploy/ is one a cluster accepts and runops
// runs as it says: strictly decoded (no unknown field), every variable it
// sets one the configuration reads and accepts, every pod given longer than
// RUNOPS_SHUTDOWN_GRACE to stop, probes on the process's own port, and the
// ScaledObject scaling a Deployment of the files on metrics a real worker's
// /metrics serves.
func TestDeployFiles(t *testing.T) {
	deployments, services, scaled, monitors := deployFiles(t)
	known := configVariables()
	byName := map[string]appsv1.Deployment{}
	concurrency := map[string]string{}
	for _, d := range deployments {
		byName[d.Name] = d
		spec := d.Spec.Template.Spec
		if len(spec.Containers) != 1 {
			t.Errorf("%s: %d containers", d.Name, len(spec.Containers))
			continue
		}
		c := spec.Containers[0]
		env := map[string]string{}
		for _, e := range c.Env {
			if !known[e.Name] {
				t.Errorf("%s sets %s, which runops does not read", d.Name, e.Name)
			}
			switch {
			case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
				v, ok := secretSamples[e.ValueFrom.SecretKeyRef.Key]
				if !ok {
					t.Errorf("%s: %s from secret key %q, which the operations guide does not name", d.Name, e.Name, e.ValueFrom.SecretKeyRef.Key)
				}
				env[e.Name] = v
			default:
				env[e.Name] = e.Value
			}
		}
		cfg, err := config.Load(func(k string) string { return env[k] })
		if err != nil {
			t.Errorf("%s: the configuration refuses it: %v", d.Name, err)
			continue
		}
		command := c.Args[0]
		if !slices.Contains([]string{"api", "worker", "serve"}, command) || len(c.Args) != 1 {
			t.Errorf("%s runs runops %v", d.Name, c.Args)
		}
		if err := cfg.RequireServiceKey(); err != nil {
			t.Errorf("%s: %v", d.Name, err)
		}
		if command != "api" {
			if err := cfg.RequireWorker(); err != nil {
				t.Errorf("%s: %v", d.Name, err)
			}
			concurrency[d.Name] = env["RUNOPS_WORKER_CONCURRENCY"]
		}
		grace := time.Duration(30) * time.Second // Kubernetes' default
		if g := spec.TerminationGracePeriodSeconds; g != nil {
			grace = time.Duration(*g) * time.Second
		}
		// The preStop's sleep comes out of the grace, before SIGTERM.
		var preStop time.Duration
		if h := c.Lifecycle; h != nil && h.PreStop != nil && h.PreStop.Exec != nil {
			cmd := h.PreStop.Exec.Command
			n, err := 0, errors.New("no command")
			if len(cmd) == 2 {
				n, err = strconv.Atoi(cmd[1])
			}
			if len(cmd) != 2 || cmd[0] != "sleep" || err != nil {
				t.Errorf("%s: preStop %v; the image runs sleep N, nothing else", d.Name, cmd)
			}
			preStop = time.Duration(n) * time.Second
		}
		if grace <= preStop+cfg.ShutdownGrace {
			t.Errorf("%s: terminationGracePeriodSeconds %s does not exceed the preStop's %s and RUNOPS_SHUTDOWN_GRACE %s", d.Name, grace, preStop, cfg.ShutdownGrace)
		}
		// The API stops taking connections at SIGTERM: the Service must
		// have stopped sending it any by then.
		if command == "api" && preStop == 0 {
			t.Errorf("%s: no preStop: connections routed after SIGTERM are refused", d.Name)
		}
		// Admitted where the restricted Pod Security Standard is enforced.
		if sc := spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: the pod is not non-root with the RuntimeDefault seccomp profile", d.Name)
		}
		if sc := c.SecurityContext; sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("%s: the container may escalate its privileges or keeps capabilities", d.Name)
		}
		// A worker's decoders and OCR take the CPUs GOMAXPROCS says: the
		// limit's, else the node's cores, however many.
		if command != "api" && c.Resources.Limits.Cpu().IsZero() {
			t.Errorf("%s: no CPU limit: ffmpeg and Tesseract take as many threads as the node has cores", d.Name)
		}
		_, port, _ := net.SplitHostPort(cfg.Addr)
		if !slices.ContainsFunc(monitors, func(m podMonitor) bool {
			return labelsMatch(m.Spec.Selector.MatchLabels, d.Spec.Template.Labels) && slices.ContainsFunc(m.Spec.PodMetricsEndpoints, func(e metricsEndpoint) bool {
				return e.Path == "/metrics" && containerPort(c, e.Port) == port
			})
		}) {
			t.Errorf("%s: no PodMonitor scrapes its /metrics: the Prometheus the ScaledObject asks would have no queue numbers", d.Name)
		}
		for probe, want := range map[*corev1.Probe]string{c.ReadinessProbe: "/readyz", c.LivenessProbe: "/healthz"} {
			if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != want {
				t.Errorf("%s: no %s probe", d.Name, want)
				continue
			}
			if p := containerPort(c, probe.HTTPGet.Port.String()); p != port {
				t.Errorf("%s: %s probed on port %s; RUNOPS_ADDR is %s", d.Name, want, p, cfg.Addr)
			}
		}
	}
	for _, s := range services {
		if !slices.ContainsFunc(deployments, func(d appsv1.Deployment) bool {
			return labelsMatch(s.Spec.Selector, d.Spec.Template.Labels)
		}) {
			t.Errorf("service %s selects no Deployment's pods", s.Name)
		}
	}

	served := workerMetrics(t)
	metricRef := regexp.MustCompile(`\b(runops_[a-z_]+)(\{[^}]*\})?`)
	for _, so := range scaled {
		target, ok := byName[so.Spec.ScaleTargetRef.Name]
		if !ok || target.Spec.Template.Spec.Containers[0].Args[0] == "api" {
			t.Errorf("ScaledObject %s scales %q, not a worker Deployment of the files", so.Metadata.Name, so.Spec.ScaleTargetRef.Name)
		}
		if len(so.Spec.Triggers) == 0 {
			t.Errorf("ScaledObject %s has no trigger", so.Metadata.Name)
		}
		for _, tr := range so.Spec.Triggers {
			query := tr.Metadata["query"]
			if tr.Type != "prometheus" || query == "" || tr.Metadata["serverAddress"] == "" || tr.Metadata["threshold"] == "" {
				t.Errorf("ScaledObject %s, trigger %q: not a complete prometheus trigger", so.Metadata.Name, tr.Name)
			}
			if strings.Contains(query, "runops_jobs{") && tr.Metadata["threshold"] != concurrency[target.Name] {
				t.Errorf("trigger %q: threshold %s jobs per worker, but the workers run %s at once", tr.Name, tr.Metadata["threshold"], concurrency[target.Name])
			}
			refs := metricRef.FindAllStringSubmatch(query, -1)
			if len(refs) == 0 {
				t.Errorf("trigger %q names no runops metric: %s", tr.Name, query)
			}
			for _, m := range refs {
				series := m[1] + strings.ReplaceAll(m[2], " ", "")
				if !strings.Contains(served, "\n"+series+" ") && !strings.Contains(served, "\n"+series+"{") {
					t.Errorf("trigger %q names %s, which a worker's /metrics does not serve", tr.Name, series)
				}
			}
		}
	}
}

// containerPort resolves a probe's port (a name or a number) to a number.
func containerPort(c corev1.Container, port string) string {
	for _, p := range c.Ports {
		if p.Name == port {
			return strconv.Itoa(int(p.ContainerPort))
		}
	}
	return port
}

func labelsMatch(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return len(selector) > 0
}

// workerMetrics is what a real worker serves on /metrics once its queue
// gauges have been read.
func workerMetrics(t *testing.T) string {
	t.Helper()
	_, dsn := newDB(t)
	p := startWorker(t, binary(t), dsn)
	var body string
	wait.For(t, "the queue gauges on /metrics", 30*time.Second, func() bool {
		resp, err := http.Get(p.base + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		body = "\n" + string(raw)
		return strings.Contains(body, "\nrunops_queue_oldest_seconds ")
	})
	return body
}
