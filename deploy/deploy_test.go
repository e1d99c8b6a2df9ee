package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"

	"github.com/corral-dev/corral/config"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The values the Dockerfile, the manifests and the docs promise users.
const (
	httpPort       = 8080
	adminPort      = 9180
	configDir      = "/etc/corral"
	configPath     = configDir + "/config.hcl"
	configMapKey   = "config.hcl"
	dockerConfig   = "docker/config.hcl"
	composeFile    = "compose.yaml"
	buildScript    = "build-image-steps.sh"
	ciScript       = "../.ci/run"
	rootDockerfile = "../Dockerfile"
)

// object is the part of any Kubernetes manifest these tests read; Spec is
// decoded again per kind.
type object struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name        string            `yaml:"name"`
		Labels      map[string]string `yaml:"labels"`
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec yaml.Node         `yaml:"spec"`

	file string
}

type deploymentSpec struct {
	Replicas int `yaml:"replicas"`
	Selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"selector"`
	Template struct {
		Metadata struct {
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"metadata"`
		Spec podSpec `yaml:"spec"`
	} `yaml:"template"`
}

type podSpec struct {
	TerminationGracePeriodSeconds *int `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               struct {
		RunAsNonRoot bool `yaml:"runAsNonRoot"`
		RunAsUser    int  `yaml:"runAsUser"`
	} `yaml:"securityContext"`
	Containers []container `yaml:"containers"`
	Volumes    []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name  string `yaml:"name"`
			Items []any  `yaml:"items"`
		} `yaml:"configMap"`
	} `yaml:"volumes"`
}

type container struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Env   []struct {
		Name      string  `yaml:"name"`
		Value     *string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	StartupProbe   *probe `yaml:"startupProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		SubPath   string `yaml:"subPath"`
	} `yaml:"volumeMounts"`
}

type probe struct {
	HTTPGet *struct {
		Path string    `yaml:"path"`
		Port yaml.Node `yaml:"port"` // a number or a port name
	} `yaml:"httpGet"`
}

// port resolves a container port given by number or by name.
func (c *container) port(n yaml.Node) (int, bool) {
	if p, err := strconv.Atoi(n.Value); err == nil {
		return p, true
	}
	for _, p := range c.Ports {
		if p.Name == n.Value {
			return p.ContainerPort, true
		}
	}
	return 0, false
}

func (c *container) namedPort(name string) int {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

// yamlFiles lists every YAML file under deploy/.
func yamlFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ext := filepath.Ext(p); !d.IsDir() && (ext == ".yaml" || ext == ".yml") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("listing deploy/: %v", err)
	}
	if len(files) == 0 {
		t.Fatal("no YAML files under deploy/")
	}
	return files
}

// decodeAll decodes every document of a multi-document YAML file.
func decodeAll[T any](t *testing.T, file string) []T {
	t.Helper()
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(src))
	dec.KnownFields(false)
	var docs []T
	for {
		var doc T
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", file, len(docs)+1, err)
		}
		docs = append(docs, doc)
	}
}

// manifests returns every Kubernetes object under deploy/, by kind.
func manifests(t *testing.T) map[string][]object {
	t.Helper()
	byKind := map[string][]object{}
	for _, file := range yamlFiles(t) {
		for _, o := range decodeAll[object](t, file) {
			if o.Kind == "" {
				continue // not a Kubernetes manifest (compose.yaml)
			}
			o.file = file
			byKind[o.Kind] = append(byKind[o.Kind], o)
		}
	}
	return byKind
}

// only returns the single object of a kind.
func only(t *testing.T, byKind map[string][]object, kind string) object {
	t.Helper()
	if n := len(byKind[kind]); n != 1 {
		t.Fatalf("want exactly one %s under deploy/, found %d", kind, n)
	}
	return byKind[kind][0]
}

func decodeSpec[T any](t *testing.T, o object) T {
	t.Helper()
	var spec T
	if err := o.Spec.Decode(&spec); err != nil {
		t.Fatalf("%s: %s %s spec: %v", o.file, o.Kind, o.Metadata.Name, err)
	}
	return spec
}

// deployment returns the Deployment's spec and its corral container.
func deployment(t *testing.T) (deploymentSpec, container) {
	t.Helper()
	spec := decodeSpec[deploymentSpec](t, only(t, manifests(t), "Deployment"))
	if n := len(spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("want one container (corral is the entrypoint of the pod), found %d", n)
	}
	return spec, spec.Template.Spec.Containers[0]
}

// parseConfig validates HCL text with corral's own config loader, as if it
// were the file at path.
func parseConfig(t *testing.T, src []byte, path string) *config.Config {
	t.Helper()
	cfg, err := config.Parse(src, path)
	if err != nil {
		t.Fatalf("%s is not a valid corral config:\n%v", path, err)
	}
	return cfg
}

// configMapConfig returns the ConfigMap's config.hcl, validated as the file
// it becomes once mounted.
func configMapConfig(t *testing.T) *config.Config {
	t.Helper()
	cm := only(t, manifests(t), "ConfigMap")
	src, ok := cm.Data[configMapKey]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %q", cm.Metadata.Name, configMapKey)
	}
	// A real file in a real directory, because the default dir of an app is
	// the config file's directory and must exist, as /etc/corral does in the
	// pod.
	path := filepath.Join(t.TempDir(), configMapKey)
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return parseConfig(t, []byte(src), path)
}

func fileConfig(t *testing.T, file string) *config.Config {
	t.Helper()
	abs, err := filepath.Abs(file)
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(abs)
	if err != nil {
		t.Fatal(err)
	}
	return parseConfig(t, src, abs)
}

func port(t *testing.T, what, addr string) (host string, port int) {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s %q: %v", what, addr, err)
	}
	port, err = strconv.Atoi(p)
	if err != nil {
		t.Fatalf("%s %q: port: %v", what, addr, err)
	}
	return host, port
}

// checkContainerListeners checks that a container config serves the public
// and admin ports the image and manifests expose, on every interface.
func checkContainerListeners(t *testing.T, name string, cfg *config.Config, wantHTTP, wantAdmin int) {
	t.Helper()
	if host, p := port(t, name+" listen", cfg.Listen); host != "0.0.0.0" || p != wantHTTP {
		t.Errorf("%s: listen = %q, want 0.0.0.0:%d (the container's http port)", name, cfg.Listen, wantHTTP)
	}
	if host, p := port(t, name+" admin.listen", cfg.Admin.Listen); host != "0.0.0.0" || p != wantAdmin {
		t.Errorf("%s: admin.listen = %q, want 0.0.0.0:%d (probes reach it from outside the container)", name, cfg.Admin.Listen, wantAdmin)
	}
}

// killMargin is what corral keeps after the longest stop_timeout for the
// SIGKILL and the reap (cmd/corral's drainDeadline; README "Shutdown").
const killMargin = time.Second

// checkStopBudget checks the rule the README's shutdown order states:
// corral's whole shutdown, pre_stop_delay included, is bounded by
// shutdown.timeout, so the orchestrator's grace period must exceed
// shutdown.timeout (adding pre_stop_delay on top double-counts it); and
// after the pre-stop delay every app must still get its full stop_timeout
// (plus killMargin) before shutdown.timeout ends.
func checkStopBudget(t *testing.T, name string, cfg *config.Config, grace time.Duration) {
	t.Helper()
	if grace <= cfg.Shutdown.Timeout {
		t.Errorf("%s: grace period %s must exceed shutdown.timeout %s (which includes pre_stop_delay), or corral is SIGKILLed mid-shutdown",
			name, grace, cfg.Shutdown.Timeout)
	}
	for _, a := range cfg.Apps {
		if need := cfg.Shutdown.PreStopDelay + a.StopTimeout + killMargin; need > cfg.Shutdown.Timeout {
			t.Errorf("%s: app %s: pre_stop_delay %s + stop_timeout %s + %s exceeds shutdown.timeout %s: its workers would not get their stop_timeout",
				name, a.Name, cfg.Shutdown.PreStopDelay, a.StopTimeout, killMargin, cfg.Shutdown.Timeout)
		}
	}
}

func TestDeploymentPortsAndProbes(t *testing.T) {
	spec, c := deployment(t)
	if got := c.namedPort("http"); got != httpPort {
		t.Errorf("container port http = %d, want %d", got, httpPort)
	}
	if got := c.namedPort("admin"); got != adminPort {
		t.Errorf("container port admin = %d, want %d", got, adminPort)
	}
	probes := []struct {
		name string
		p    *probe
		path string
	}{
		{"readinessProbe", c.ReadinessProbe, "/readyz"},
		{"livenessProbe", c.LivenessProbe, "/healthz"},
		{"startupProbe", c.StartupProbe, "/healthz"},
	}
	for _, pr := range probes {
		if pr.p == nil || pr.p.HTTPGet == nil {
			t.Errorf("%s: missing or not httpGet", pr.name)
			continue
		}
		if pr.p.HTTPGet.Path != pr.path {
			t.Errorf("%s path = %q, want %q", pr.name, pr.p.HTTPGet.Path, pr.path)
		}
		if p, ok := c.port(pr.p.HTTPGet.Port); !ok || p != adminPort {
			t.Errorf("%s port %q resolves to %d, want the admin port %d", pr.name, pr.p.HTTPGet.Port.Value, p, adminPort)
		}
	}
	ann := spec.Template.Metadata.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != strconv.Itoa(adminPort) || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("pod scrape annotations = %v, want scrape true on port %d path /metrics", ann, adminPort)
	}
	if want := []string{"run", "-config", configPath}; !slices.Equal(c.Args, want) {
		t.Errorf("args = %q, want %q", c.Args, want)
	}
}

func TestDeploymentIsLockedDown(t *testing.T) {
	spec, c := deployment(t)
	pod := spec.Template.Spec
	if !pod.SecurityContext.RunAsNonRoot || pod.SecurityContext.RunAsUser == 0 {
		t.Errorf("pod securityContext must set runAsNonRoot and a non-zero runAsUser, got %+v", pod.SecurityContext)
	}
	if ape := c.SecurityContext.AllowPrivilegeEscalation; ape == nil || *ape {
		t.Error("container securityContext.allowPrivilegeEscalation must be false")
	}
	if !c.SecurityContext.ReadOnlyRootFilesystem {
		t.Error("container securityContext.readOnlyRootFilesystem must be true")
	}
	for _, r := range []string{"cpu", "memory"} {
		if c.Resources.Requests[r] == "" || c.Resources.Limits[r] == "" {
			t.Errorf("resources must set requests and limits for %s, got %+v", r, c.Resources)
		}
	}
	if spec.Replicas < 2 {
		t.Errorf("replicas = %d, want at least 2", spec.Replicas)
	}
	for k, v := range spec.Selector.MatchLabels {
		if spec.Template.Metadata.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod template labels %v", k, v, spec.Template.Metadata.Labels)
		}
	}
}

// A subPath mount never sees ConfigMap updates, and a mount elsewhere than
// the directory of -config is not what corral reads: either way hot reload
// silently stops.
func TestConfigMapMountedAsDirectory(t *testing.T) {
	byKind := manifests(t)
	cm := only(t, byKind, "ConfigMap")
	spec := decodeSpec[deploymentSpec](t, only(t, byKind, "Deployment"))
	pod := spec.Template.Spec
	volume := ""
	for _, v := range pod.Volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == cm.Metadata.Name {
			volume = v.Name
			if len(v.ConfigMap.Items) > 0 {
				t.Errorf("volume %s selects items; mount the whole ConfigMap so %s keeps its name", v.Name, configMapKey)
			}
		}
	}
	if volume == "" {
		t.Fatalf("no volume of the Deployment uses ConfigMap %s", cm.Metadata.Name)
	}
	found := false
	for _, m := range pod.Containers[0].VolumeMounts {
		if m.Name != volume {
			continue
		}
		found = true
		if m.SubPath != "" {
			t.Errorf("config volume mounted with subPath %q: ConfigMap updates would never reach corral", m.SubPath)
		}
		if m.MountPath != path.Dir(configPath) {
			t.Errorf("config volume mounted at %s, want %s (the directory of -config %s)", m.MountPath, path.Dir(configPath), configPath)
		}
	}
	if !found {
		t.Errorf("volume %s is not mounted in the corral container", volume)
	}
}

func TestConfigMapConfigMatchesDeployment(t *testing.T) {
	spec, c := deployment(t)
	cfg := configMapConfig(t)
	checkContainerListeners(t, "ConfigMap "+configMapKey, cfg, c.namedPort("http"), c.namedPort("admin"))
	grace := spec.Template.Spec.TerminationGracePeriodSeconds
	if grace == nil {
		t.Fatal("terminationGracePeriodSeconds is not set; the default 30s is too short for corral's drain")
	}
	checkStopBudget(t, "Deployment terminationGracePeriodSeconds", cfg, time.Duration(*grace)*time.Second)
	if cfg.Shutdown.PreStopDelay == 0 {
		t.Error("ConfigMap config has no shutdown.pre_stop_delay: pods would refuse connections before kube-proxy stops sending them")
	}
}

// The admin API listens on every interface of the pod, so the token that
// guards reload, restart and scale must come from a Secret, never from the
// manifests themselves.
func TestDeploymentAdminTokenComesFromASecret(t *testing.T) {
	byKind := manifests(t)
	_, c := deployment(t)
	found := false
	for _, e := range c.Env {
		if e.Name != "CORRAL_ADMIN_TOKEN" {
			continue
		}
		found = true
		if e.Value != nil || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil ||
			e.ValueFrom.SecretKeyRef.Name == "" || e.ValueFrom.SecretKeyRef.Key == "" {
			t.Errorf("CORRAL_ADMIN_TOKEN must come from a secretKeyRef, got %+v", e)
		}
	}
	if !found {
		t.Error("the corral container has no CORRAL_ADMIN_TOKEN: its admin API on 0.0.0.0 would be read-only")
	}
	if n := len(byKind["Secret"]); n != 0 {
		t.Errorf("deploy/ ships %d Secret manifests: a token in the repository is no secret; create it with kubectl", n)
	}
	if cfg := configMapConfig(t); cfg.Admin.Token != "" {
		t.Error("the ConfigMap sets admin.token: a ConfigMap is no place for a secret")
	}
}

func TestServiceTargetsHTTPPort(t *testing.T) {
	byKind := manifests(t)
	spec, c := deployment(t)
	svc := decodeSpec[struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Port       int       `yaml:"port"`
			TargetPort yaml.Node `yaml:"targetPort"`
		} `yaml:"ports"`
	}](t, only(t, byKind, "Service"))
	if len(svc.Selector) == 0 {
		t.Fatal("Service has no selector")
	}
	for k, v := range svc.Selector {
		if spec.Template.Metadata.Labels[k] != v {
			t.Errorf("Service selector %s=%s matches no pod label", k, v)
		}
	}
	if len(svc.Ports) != 1 {
		t.Fatalf("Service exposes %d ports, want only the public one", len(svc.Ports))
	}
	if p, ok := c.port(svc.Ports[0].TargetPort); !ok || p != httpPort {
		t.Errorf("Service targetPort %q resolves to %d, want %d", svc.Ports[0].TargetPort.Value, p, httpPort)
	}
}

func TestHPAScalesDeploymentOnCPU(t *testing.T) {
	byKind := manifests(t)
	dep := only(t, byKind, "Deployment")
	hpa := only(t, byKind, "HorizontalPodAutoscaler")
	if hpa.APIVersion != "autoscaling/v2" {
		t.Errorf("HPA apiVersion = %s, want autoscaling/v2", hpa.APIVersion)
	}
	spec := decodeSpec[struct {
		ScaleTargetRef struct {
			Kind string `yaml:"kind"`
			Name string `yaml:"name"`
		} `yaml:"scaleTargetRef"`
		MinReplicas int `yaml:"minReplicas"`
		MaxReplicas int `yaml:"maxReplicas"`
		Metrics     []struct {
			Resource struct {
				Name   string `yaml:"name"`
				Target struct {
					AverageUtilization int `yaml:"averageUtilization"`
				} `yaml:"target"`
			} `yaml:"resource"`
		} `yaml:"metrics"`
	}](t, hpa)
	if spec.ScaleTargetRef.Kind != "Deployment" || spec.ScaleTargetRef.Name != dep.Metadata.Name {
		t.Errorf("HPA targets %s %s, want Deployment %s", spec.ScaleTargetRef.Kind, spec.ScaleTargetRef.Name, dep.Metadata.Name)
	}
	if spec.MinReplicas < 1 || spec.MaxReplicas < spec.MinReplicas {
		t.Errorf("HPA replicas %d..%d", spec.MinReplicas, spec.MaxReplicas)
	}
	if len(spec.Metrics) != 1 || spec.Metrics[0].Resource.Name != "cpu" || spec.Metrics[0].Resource.Target.AverageUtilization != 70 {
		t.Errorf("HPA metrics = %+v, want cpu at 70%%", spec.Metrics)
	}
}

func TestComposeFile(t *testing.T) {
	type service struct {
		Build struct {
			Context    string `yaml:"context"`
			Dockerfile string `yaml:"dockerfile"`
		} `yaml:"build"`
		Ports       []string `yaml:"ports"`
		Volumes     []string `yaml:"volumes"`
		Command     []string `yaml:"command"`
		Healthcheck struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
		StopGracePeriod string            `yaml:"stop_grace_period"`
		EnvFile         []string          `yaml:"env_file"`
		Environment     map[string]string `yaml:"environment"`
	}
	docs := decodeAll[struct {
		Services map[string]service `yaml:"services"`
	}](t, composeFile)
	if len(docs) != 1 || len(docs[0].Services) != 1 {
		t.Fatalf("%s: want one document with one service", composeFile)
	}
	var svc service
	for _, s := range docs[0].Services {
		svc = s
	}

	if _, err := os.Stat(filepath.Join(svc.Build.Context, svc.Build.Dockerfile)); err != nil {
		t.Errorf("build: %v", err)
	}
	// No address: corral health reads admin.listen from $CORRAL_CONFIG,
	// which the image sets, so a config that moves the admin port moves the
	// check with it.
	if want := []string{"CMD", "corral", "health"}; !slices.Equal(svc.Healthcheck.Test, want) {
		t.Errorf("healthcheck test = %q, want %q (the image has no curl; the address comes from the config)", svc.Healthcheck.Test, want)
	}
	if want := []string{"run", "-config", configPath}; !slices.Equal(svc.Command, want) {
		t.Errorf("command = %q, want %q", svc.Command, want)
	}

	// The config directory, not the file, so edits reach the container.
	mount := ""
	for _, v := range svc.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == configDir {
			mount = parts[0]
		}
	}
	if mount == "" {
		t.Fatalf("no volume mounted at %s: %q", configDir, svc.Volumes)
	}
	if info, err := os.Stat(mount); err != nil || !info.IsDir() {
		t.Fatalf("volume source %s for %s must be a directory: %v", mount, configDir, err)
	}
	cfg := fileConfig(t, filepath.Join(mount, path.Base(configPath)))
	checkContainerListeners(t, "compose "+mount, cfg, httpPort, adminPort)

	published := map[string]bool{}
	for _, p := range svc.Ports {
		published[p[strings.LastIndex(p, ":")+1:]] = true
	}
	if !published[strconv.Itoa(httpPort)] {
		t.Errorf("ports %q do not publish %d", svc.Ports, httpPort)
	}

	grace, err := time.ParseDuration(svc.StopGracePeriod)
	if err != nil {
		t.Fatalf("stop_grace_period: %v", err)
	}
	checkStopBudget(t, "compose stop_grace_period", cfg, grace)

	// The admin token: from an env file kept out of git, not the file
	// itself; the admin port is published on the host's loopback only.
	if _, ok := svc.Environment["CORRAL_ADMIN_TOKEN"]; ok || cfg.Admin.Token != "" {
		t.Error("compose sets the admin token in the repository; it belongs in the env file")
	}
	if len(svc.EnvFile) != 1 {
		t.Fatalf("env_file = %q, want the one file holding CORRAL_ADMIN_TOKEN", svc.EnvFile)
	}
	ignore, err := os.ReadFile("../.gitignore")
	if err != nil || !slices.Contains(strings.Split(string(ignore), "\n"), "/deploy/"+svc.EnvFile[0]) {
		t.Errorf("env file %s is not in .gitignore (%v): the token would be committed", svc.EnvFile[0], err)
	}
	for _, p := range svc.Ports {
		if strings.HasSuffix(p, ":"+strconv.Itoa(adminPort)) && !strings.HasPrefix(p, "127.0.0.1:") {
			t.Errorf("admin port published as %q: publish it on 127.0.0.1 only", p)
		}
	}
}

func TestDockerConfigIsTheImageConfig(t *testing.T) {
	cfg := fileConfig(t, dockerConfig)
	checkContainerListeners(t, dockerConfig, cfg, httpPort, adminPort)
	if len(cfg.Apps) == 0 || cfg.Apps[0].Command[0] != "/usr/local/bin/hello" {
		t.Errorf("%s must run the bundled /usr/local/bin/hello", dockerConfig)
	}
	for _, a := range cfg.Apps {
		if a.User != "" {
			t.Errorf("app %s sets user, which needs root; the image runs as non-root", a.Name)
		}
	}
}

func TestExampleConfigsAreValid(t *testing.T) {
	for _, file := range []string{"../examples/node/config.hcl", "../examples/python/config.hcl"} {
		t.Run(filepath.Base(filepath.Dir(file)), func(t *testing.T) {
			cfg := fileConfig(t, file)
			for _, a := range cfg.Apps {
				// The command's script must be where the worker starts.
				script := filepath.Join(a.Dir, a.Command[len(a.Command)-1])
				if _, err := os.Stat(script); err != nil {
					t.Errorf("app %s: %v", a.Name, err)
				}
				if a.Health == nil || a.Health.Path != "/healthz" {
					t.Errorf("app %s: want health path /healthz", a.Name)
				}
			}
		})
	}
}

// instruction is one Dockerfile instruction with continuations joined.
type instruction struct {
	cmd  string // upper case
	args string
}

// stage is the instructions after one FROM.
type stage struct {
	from string
	ins  []instruction
}

// parseDockerfile splits a Dockerfile into stages of instructions. It knows
// comments and backslash continuations, which is all these files use.
func parseDockerfile(t *testing.T, file string) []stage {
	t.Helper()
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var stages []stage
	for _, line := range logicalLines(string(src)) {
		cmd, args, _ := strings.Cut(line, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		switch {
		case in.cmd == "FROM":
			stages = append(stages, stage{from: in.args})
		case len(stages) > 0:
			stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, in)
		}
	}
	if len(stages) == 0 {
		t.Fatalf("%s: no FROM", file)
	}
	return stages
}

// logicalLines joins backslash-continued lines and drops comments and blank
// lines.
func logicalLines(src string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(src, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\"))
			cur.WriteString(" ")
			continue
		}
		cur.WriteString(trimmed)
		if s := strings.TrimSpace(cur.String()); s != "" {
			out = append(out, s)
		}
		cur.Reset()
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}

// lookup returns the args of the last instruction cmd in a stage, the one
// that takes effect.
func (s stage) lookup(cmd string) (string, bool) {
	for i := len(s.ins) - 1; i >= 0; i-- {
		if s.ins[i].cmd == cmd {
			return s.ins[i].args, true
		}
	}
	return "", false
}

// execForm decodes a JSON exec-form argument list.
func execForm(t *testing.T, what, args string) []string {
	t.Helper()
	var argv []string
	if err := json.Unmarshal([]byte(args), &argv); err != nil {
		t.Errorf("%s %s: not the JSON exec form (shell form would make sh PID 1 and swallow SIGTERM): %v", what, args, err)
	}
	return argv
}

func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t, rootDockerfile)
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build, got %d stage(s)", len(stages))
	}
	if build := stages[0]; strings.Fields(build.from)[0] != goImage(t) {
		t.Errorf("build stage FROM %s, want %s (the exact Go release of go.mod)", build.from, goImage(t))
	} else if args, _ := build.lookup("ARG"); !strings.HasPrefix(args, "VERSION=") {
		t.Errorf("build stage has no ARG VERSION=...")
	}
	final := stages[len(stages)-1]

	want := map[string][]string{
		"ENTRYPOINT": {"corral"},
		"CMD":        {"run", "-config", configPath},
	}
	for cmd, argv := range want {
		args, ok := final.lookup(cmd)
		if !ok {
			t.Errorf("final stage has no %s", cmd)
			continue
		}
		if got := execForm(t, cmd, args); !slices.Equal(got, argv) {
			t.Errorf("%s = %q, want %q", cmd, got, argv)
		}
	}

	hc, ok := final.lookup("HEALTHCHECK")
	if !ok {
		t.Fatal("final stage has no HEALTHCHECK")
	}
	_, hcCmd, ok := strings.Cut(hc, "CMD ")
	if !ok {
		t.Fatalf("HEALTHCHECK %s has no CMD", hc)
	}
	if got, want := execForm(t, "HEALTHCHECK CMD", hcCmd), []string{"corral", "health"}; !slices.Equal(got, want) {
		t.Errorf("HEALTHCHECK CMD = %q, want %q (the admin address comes from the config)", got, want)
	}
	checkConfigEnv(t, final, configPath)

	if expose, _ := final.lookup("EXPOSE"); !slices.Equal(strings.Fields(expose), []string{strconv.Itoa(httpPort), strconv.Itoa(adminPort)}) {
		t.Errorf("EXPOSE %q, want %d %d", expose, httpPort, adminPort)
	}
	if sig, _ := final.lookup("STOPSIGNAL"); sig != "SIGTERM" {
		t.Errorf("STOPSIGNAL %q, want SIGTERM", sig)
	}
	// Numeric, or Kubernetes' runAsNonRoot cannot verify it.
	user, _ := final.lookup("USER")
	uid, _, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("USER %q, want a numeric non-root uid", user)
	} else if spec, _ := deployment(t); spec.Template.Spec.SecurityContext.RunAsUser != n {
		t.Errorf("Deployment runAsUser %d differs from the image's USER %d", spec.Template.Spec.SecurityContext.RunAsUser, n)
	}

	copies := map[string]string{} // destination -> source
	for _, in := range final.ins {
		if f := strings.Fields(in.args); in.cmd == "COPY" && len(f) >= 2 {
			copies[f[len(f)-1]] = f[len(f)-2]
		}
	}
	if copies[configPath] != "deploy/"+dockerConfig {
		t.Errorf("final stage does not COPY deploy/%s to %s", dockerConfig, configPath)
	}
	// ENTRYPOINT "corral" is found through PATH, and the config's workers
	// by their absolute path: both must be in the image.
	wantBins := []string{"/usr/local/bin/corral"}
	for _, a := range fileConfig(t, dockerConfig).Apps {
		wantBins = append(wantBins, a.Command[0])
	}
	for _, bin := range wantBins {
		if _, ok := copies[bin]; !ok {
			t.Errorf("final stage does not COPY anything to %s", bin)
		}
	}
}

func TestNodeDockerfile(t *testing.T) {
	stages := parseDockerfile(t, "../examples/node/Dockerfile")
	final := stages[len(stages)-1]
	checkNodeImage(t, final.from)
	copied := false
	for _, in := range final.ins {
		if in.cmd == "COPY" && strings.HasPrefix(in.args, "--from=") && strings.HasSuffix(in.args, "/usr/local/bin/corral") {
			copied = true
		}
	}
	if !copied {
		t.Error("final stage does not COPY --from the corral image /usr/local/bin/corral")
	}
	if args, _ := final.lookup("ENTRYPOINT"); !slices.Equal(execForm(t, "ENTRYPOINT", args), []string{"corral"}) {
		t.Errorf("ENTRYPOINT %s, want [\"corral\"]", args)
	}
	cmd, _ := final.lookup("CMD")
	argv := execForm(t, "CMD", cmd)
	if len(argv) != 3 || argv[0] != "run" || argv[1] != "-config" {
		t.Fatalf("CMD %q, want run -config FILE", argv)
	}
	workdir, _ := final.lookup("WORKDIR")
	if path.Join(workdir, "config.hcl") != argv[2] {
		t.Errorf("CMD reads %s, but config.hcl is copied to WORKDIR %s", argv[2], workdir)
	}
	hc, _ := final.lookup("HEALTHCHECK")
	if _, hcCmd, ok := strings.Cut(hc, "CMD "); !ok || !slices.Equal(execForm(t, "HEALTHCHECK CMD", hcCmd), []string{"corral", "health"}) {
		t.Errorf("HEALTHCHECK %q, want CMD [\"corral\", \"health\"] (the admin address comes from the config)", hc)
	}
	checkConfigEnv(t, final, argv[2])
}

// checkConfigEnv checks that a stage sets CORRAL_CONFIG to the config that
// CMD runs, which is where `corral health` finds the admin address.
func checkConfigEnv(t *testing.T, s stage, want string) {
	t.Helper()
	env, _ := s.lookup("ENV")
	if !slices.Contains(strings.Fields(env), "CORRAL_CONFIG="+want) {
		t.Errorf("ENV %q does not set CORRAL_CONFIG=%s", env, want)
	}
}

// goImage is the build image the Dockerfile must use: golang at go.mod's
// exact Go release. A tag, not a digest: no registry is reachable from
// here to read one (see the Dockerfile's comment on pinning).
func goImage(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(src), "\n") {
		if v, ok := strings.CutPrefix(line, "go "); ok {
			return "golang:" + strings.TrimSpace(v) + "-bookworm"
		}
	}
	t.Fatal("go.mod has no go line")
	return ""
}

// supportedNode are the Node.js major versions with upstream support
// (active or maintenance LTS) at the time of writing; 20 ended in April
// 2026.
var supportedNode = []string{"22", "24"}

// checkNodeImage checks the Node example's base image: a supported LTS
// major, pinned to an exact release (node:MAJOR.MINOR.PATCH-VARIANT-slim) or
// a digest.
func checkNodeImage(t *testing.T, from string) {
	t.Helper()
	tag, ok := strings.CutPrefix(from, "node:")
	if !ok {
		t.Fatalf("final stage FROM %s, want a node image", from)
	}
	if strings.Contains(tag, "@sha256:") {
		return
	}
	version, variant, _ := strings.Cut(tag, "-")
	parts := strings.Split(version, ".")
	if len(parts) != 3 || !slices.Contains(supportedNode, parts[0]) || !strings.HasSuffix(variant, "slim") {
		t.Errorf("final stage FROM %s, want node:X.Y.Z-...slim with X one of %v (exact, supported)", from, supportedNode)
	}
}

// buildCommand finds the `go build ... ./cmd/corral` command in a Dockerfile
// or shell script and returns it in a comparable form: environment
// assignments and go build arguments, without -o and its value (the output
// path differs per file), ${VAR} written $VAR and -flag=value split.
func buildCommand(t *testing.T, file string) []string {
	t.Helper()
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	cmd, ok := findBuildCommand(string(src))
	if !ok {
		t.Fatalf("%s: no `go build ... ./cmd/corral` command", file)
	}
	return cmd
}

// findBuildCommand is buildCommand on text; ok is false when src has none.
func findBuildCommand(src string) (cmd []string, ok bool) {
	for _, line := range logicalLines(src) {
		if !strings.Contains(line, "go build") || !strings.Contains(line, "./cmd/corral") {
			continue
		}
		words := shellWords(strings.NewReplacer("${", "$", "}", "").Replace(line))
		start := slices.Index(words, "go")
		if start < 0 || start+1 >= len(words) || words[start+1] != "build" {
			continue
		}
		var env []string
		for i := start - 1; i >= 0 && isAssignment(words[i]); i-- {
			env = append([]string{words[i]}, env...)
		}
		if !slices.Contains(env, "CGO_ENABLED=0") && strings.Contains(src, "export CGO_ENABLED=0") {
			env = append(env, "CGO_ENABLED=0")
		}
		var args []string
		for i := start; i < len(words); i++ {
			w := words[i]
			if w == "-o" {
				i++
				continue
			}
			if strings.HasPrefix(w, "-o=") {
				continue
			}
			if strings.HasPrefix(w, "-") {
				if flag, value, ok := strings.Cut(w, "="); ok && !strings.Contains(flag, " ") {
					args = append(args, flag, value)
					continue
				}
			}
			args = append(args, w)
			if w == "./cmd/corral" {
				break
			}
		}
		slices.Sort(env)
		return append(env, args...), true
	}
	return nil, false
}

func isAssignment(w string) bool {
	name, _, ok := strings.Cut(w, "=")
	if !ok || name == "" {
		return false
	}
	for _, r := range name {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// shellWords splits a command line on blanks, keeping quoted strings whole.
func shellWords(s string) []string {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t' || r == ';' || r == '&' || r == '|':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

func TestBuildCommandMatchesDocumented(t *testing.T) {
	want := []string{"CGO_ENABLED=0", "go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=$VERSION", "./cmd/corral"}
	for _, file := range []string{rootDockerfile, buildScript} {
		if got := buildCommand(t, file); !slices.Equal(got, want) {
			t.Errorf("%s builds with %q, want %q", file, got, want)
		}
	}
}

func TestBuildCommandMatchesCI(t *testing.T) {
	if _, err := os.Stat(ciScript); errors.Is(err, fs.ErrNotExist) {
		t.Skip(".ci/run does not exist yet; nothing to compare the Dockerfile's build command with")
	}
	src, err := os.ReadFile(ciScript)
	if err != nil {
		t.Fatal(err)
	}
	ci, ok := findBuildCommand(string(src))
	if !ok {
		// CI may leave the build to this directory's script, which
		// TestBuildCommandMatchesDocumented holds to the Dockerfile's.
		if !strings.Contains(string(src), "deploy/"+buildScript) {
			t.Fatalf(".ci/run neither builds ./cmd/corral nor runs deploy/%s", buildScript)
		}
		ci = buildCommand(t, buildScript)
	}
	if docker := buildCommand(t, rootDockerfile); !slices.Equal(docker, ci) {
		t.Errorf("the Dockerfile builds with %q but CI with %q; the image must be the binary CI tested", docker, ci)
	}
}

// freePort returns a loopback port nothing listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		case <-tick.C:
		}
	}
}

// The example apps are what users copy first: each must serve on
// 127.0.0.1:$PORT, say which worker answered, answer /healthz, and exit 0
// on SIGTERM even with an idle keep-alive connection open, as corral's
// pool leaves one.
func TestExampleAppsServeAndStop(t *testing.T) {
	apps := []struct {
		name string
		dir  string
		argv []string
	}{
		{"node", "../examples/node", []string{"node", "server.js"}},
		{"python", "../examples/python", []string{"python3", "-u", "app.py"}},
	}
	for _, app := range apps {
		t.Run(app.name, func(t *testing.T) {
			if _, err := exec.LookPath(app.argv[0]); err != nil {
				t.Skipf("%s is not installed", app.argv[0])
			}
			p := freePort(t)
			worker := app.name + "-1"
			cmd := exec.Command(app.argv[0], app.argv[1:]...)
			cmd.Dir = app.dir
			cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(p), "CORRAL_WORKER="+worker)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Closed once the process is reaped; waitErr is set before.
			exited := make(chan struct{})
			var waitErr error
			go func() {
				waitErr = cmd.Wait()
				close(exited)
			}()
			t.Cleanup(func() {
				select {
				case <-exited:
				default:
					cmd.Process.Kill()
					<-exited
				}
			})

			transport := &http.Transport{}
			defer transport.CloseIdleConnections()
			client := &http.Client{Transport: transport, Timeout: 2 * time.Second}
			base := "http://127.0.0.1:" + strconv.Itoa(p)
			waitFor(t, 15*time.Second, app.name+" /healthz", func() bool {
				resp, err := client.Get(base + "/healthz")
				if err != nil {
					return false
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return resp.StatusCode == http.StatusOK
			})

			resp, err := client.Get(base + "/some/path")
			if err != nil {
				t.Fatal(err)
			}
			var body struct {
				Worker string `json:"worker"`
				PID    int    `json:"pid"`
			}
			err = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("GET /: %v", err)
			}
			if body.Worker != worker || body.PID == 0 {
				t.Errorf("GET / = %+v, want worker %s and its pid", body, worker)
			}

			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case <-exited:
				if waitErr != nil {
					t.Errorf("exit after SIGTERM: %v, want 0; stderr:\n%s", waitErr, stderr.String())
				}
			case <-time.After(15 * time.Second):
				t.Fatalf("still running 15s after SIGTERM; stderr:\n%s", stderr.String())
			}
		})
	}
}
