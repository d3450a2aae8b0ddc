// Package install checks what platform teams install: the Helm chart (linted
// and rendered by Helm built from its module) and the kustomize tree in
// config/, both applied to a real kube-apiserver, and kept the same.
package install

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/conveyor-dev/conveyor/test/framework/localcluster"
	"github.com/conveyor-dev/conveyor/test/framework/manifests"
)

// Versions of the third-party CRDs the optional parts of the install need,
// read from their Go modules.
const (
	certManagerModule = "github.com/cert-manager/cert-manager@v1.21.2"
	promOperator      = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
)

var root = func() string { r, _ := filepath.Abs("../.."); return r }()

func binDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run the tests with 'make test', which builds kube-apiserver, etcd and helm")
	}
	return dir
}

// run runs a command from the repository root and returns its standard output.
func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = root
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.Bytes()
}

// Values that switch on every optional part of the chart.
var everything = []string{
	"--set", "certManager.enabled=true",
	"--set", "metrics.serviceMonitor.enabled=true",
	"--set", "receiver.enabled=true",
	"--set", "events.sinks={http://events.example.svc/conveyor}",
	"--set", "outbound.allow={hooks.slack.com,10.0.0.0/8}",
	"--set", "grafanaDashboard.enabled=true",
	"--set", "sharding.shards={b}",
	"--set", "pipelineNamespaces={shop-ci}",
	"--set-json", `personas.bindings=[{"namespace":"shop-ci","role":"developer","groups":["developers"]},{"namespace":"shop-ci","role":"release-engineer","groups":["release-engineers"]}]`,
}

func helmTemplate(t *testing.T, values ...string) []*unstructured.Unstructured {
	t.Helper()
	args := append([]string{"template", "conveyor", "charts/conveyor", "--namespace", "conveyor-system", "--include-crds"}, values...)
	objs, err := manifests.Decode(run(t, filepath.Join(binDir(t), "helm"), args...))
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	return objs
}

func kustomize(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := manifests.Decode(run(t, "kubectl", "kustomize", dir))
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v", dir, err)
	}
	return objs
}

// helm lint --strict passes with the default values and with every option on.
func TestHelmLint(t *testing.T) {
	helm := filepath.Join(binDir(t), "helm")
	for name, values := range map[string][]string{"defaults": nil, "everything": everything} {
		out := string(run(t, helm, append([]string{"lint", "--strict", "charts/conveyor", "--namespace", "conveyor-system"}, values...)...))
		if strings.Contains(out, "[WARNING]") || strings.Contains(out, "[ERROR]") || !strings.Contains(out, "0 chart(s) failed") {
			t.Errorf("helm lint (%s):\n%s", name, out)
		}
		t.Logf("helm lint --strict (%s): %s", name, strings.TrimSpace(out[strings.LastIndex(out, "\n1 chart"):]))
	}
	// The schema refuses values that would render a broken install.
	for _, bad := range [][]string{
		{"--set", "replicaCount=-1"},
		{"--set", "image.pullPolicy=Sometimes"},
		{"--set", "environments.namespaces={Prod_1}"},
		{"--set", "certManager.issuerRef.kind=Secret"},
		{"--set", "unknownOption=true"},
		{"--set-json", `outbound.allow=["a,b"]`},
	} {
		cmd := exec.Command(helm, append([]string{"template", "x", "charts/conveyor"}, bad...)...)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "values don't meet the specifications of the schema") {
			t.Errorf("helm template %v: want a schema error, got %v\n%s", bad, err, out)
		}
	}
}

// moduleCRDs reads CRD files from a Go module (downloaded through the module proxy).
func moduleCRDs(t *testing.T, module string, files ...string) []*unstructured.Unstructured {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module crds\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "mod", "download", "-json", module)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download %s: %v\n%s", module, err, out)
	}
	var info struct{ Dir, Error string }
	if err := json.Unmarshal(out, &info); err != nil || info.Dir == "" {
		t.Fatalf("go mod download %s: %v %s", module, err, info.Error)
	}
	var objs []*unstructured.Unstructured
	for _, f := range files {
		o, err := manifests.ReadFile(filepath.Join(info.Dir, f))
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, o...)
	}
	return objs
}

func startAPIServer(t *testing.T) client.Client {
	t.Helper()
	binDir(t)
	env := &envtest.Environment{}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c, err := client.New(cfg, client.Options{Scheme: localcluster.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitEstablished waits until the CRDs among objs serve.
func waitEstablished(t *testing.T, c client.Client, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, u := range objs {
		if u.GetKind() != "CustomResourceDefinition" {
			continue
		}
		NewWithT(t).Eventually(func(g Gomega) {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			g.Expect(c.Get(context.Background(), client.ObjectKey{Name: u.GetName()}, crd)).To(Succeed())
			established := false
			for _, cond := range crd.Status.Conditions {
				established = established || (cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue)
			}
			g.Expect(established).To(BeTrue(), "CRD %s established", u.GetName())
		}).WithTimeout(30 * time.Second).Should(Succeed())
	}
}

// Every way to install is accepted by kube-apiserver, applied for real
// (server-side, as Argo CD and Flux apply), and the manager's pod passes the
// namespace's "restricted" Pod Security level.
func TestManifestsAccepted(t *testing.T) {
	c := startAPIServer(t)
	ctx := context.Background()
	third := append(moduleCRDs(t, certManagerModule, "deploy/crds/cert-manager.io_issuers.yaml", "deploy/crds/cert-manager.io_clusterissuers.yaml", "deploy/crds/cert-manager.io_certificates.yaml"),
		moduleCRDs(t, promOperator, "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml")...)
	if err := manifests.Apply(ctx, c, third, "test"); err != nil {
		t.Fatal(err)
	}
	waitEstablished(t, c, third)
	// helm install --create-namespace makes the release's namespace; shop-ci
	// stands for a namespace that holds Pipelines.
	for _, ns := range []string{"conveyor-system", "shop-ci"} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}

	variants := []struct {
		name string
		objs []*unstructured.Unstructured
	}{
		{"helm template (defaults)", helmTemplate(t)},
		{"helm template (cert-manager, ServiceMonitor, receiver, bindings)", helmTemplate(t, everything...)},
		{"kustomize config/default", kustomize(t, "config/default")},
		{"kustomize config/environments", kustomize(t, "config/environments")},
		{"kustomize config/certmanager", kustomize(t, "config/certmanager")},
		{"kustomize config/prometheus", kustomize(t, "config/prometheus")},
	}
	for _, v := range variants {
		if err := manifests.Apply(ctx, c, v.objs, "install-test"); err != nil {
			t.Fatalf("%s: %v", v.name, err)
		}
		waitEstablished(t, c, v.objs)
		kinds := map[string]int{}
		for _, u := range v.objs {
			kinds[u.GetKind()]++
			if u.GetKind() == "Deployment" {
				checkPodSecurity(t, c, u)
			}
		}
		t.Logf("%s: %d objects applied %v", v.name, len(v.objs), kinds)
	}
}

// checkPodSecurity creates the Deployment's pod (dry run) in its namespace,
// which enforces the restricted Pod Security level: kube-apiserver's
// PodSecurity admission refuses a pod that runs as root, may escalate, keeps
// capabilities or has no seccomp profile.
func checkPodSecurity(t *testing.T, c client.Client, deploy *unstructured.Unstructured) {
	t.Helper()
	ns := &corev1.Namespace{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: deploy.GetNamespace()}, ns); err != nil {
		t.Fatal(err)
	}
	if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		ns.Labels = map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}
		if err := c.Update(context.Background(), ns); err != nil {
			t.Fatal(err)
		}
	}
	tmpl, _, _ := unstructured.NestedMap(deploy.Object, "spec", "template")
	pod := &corev1.Pod{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(tmpl, pod); err != nil {
		t.Fatal(err)
	}
	pod.Namespace, pod.GenerateName = deploy.GetNamespace(), deploy.GetName()+"-"
	if err := c.Create(context.Background(), pod, client.DryRunAll); err != nil {
		t.Fatalf("the manager's pod is refused in namespace %s: %v", pod.Namespace, err)
	}
}

// The chart and config/ carry the same CRDs, roles, bindings and webhooks, and
// the same hardened manager pod.
func TestChartMatchesConfig(t *testing.T) {
	chart := index(helmTemplate(t))
	kust := index(append(kustomize(t, "config/default"), kustomize(t, "config/environments")...))
	onlyChart := map[string]bool{"PodDisruptionBudget/conveyor-system/conveyor-manager": true}
	// Helm installs into a namespace it is given (helm install --create-namespace).
	onlyConfig := map[string]bool{"Namespace//conveyor-system": true}
	for key := range chart {
		if _, ok := kust[key]; !ok && !onlyChart[key] {
			t.Errorf("%s is in the chart, not in config/default or config/environments", key)
		}
	}
	compared := 0
	for key, k := range kust {
		h, ok := chart[key]
		if !ok && onlyConfig[key] {
			continue
		}
		if !ok {
			t.Errorf("%s is in config/, not in the chart", key)
			continue
		}
		var paths [][]string
		switch k.GetKind() {
		case "CustomResourceDefinition":
			paths = [][]string{{"spec"}}
		case "ClusterRole", "Role":
			paths = [][]string{{"rules"}}
		case "ClusterRoleBinding", "RoleBinding":
			paths = [][]string{{"roleRef"}, {"subjects"}}
		case "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration":
			paths = [][]string{{"webhooks"}}
		case "Service":
			paths = [][]string{{"spec", "ports"}, {"spec", "selector"}}
		case "NetworkPolicy", "Environment":
			paths = [][]string{{"spec"}}
		case "Deployment":
			paths = [][]string{
				{"spec", "selector"}, {"spec", "replicas"},
				{"spec", "template", "spec", "securityContext"}, {"spec", "template", "spec", "volumes"},
				{"spec", "template", "spec", "serviceAccountName"},
			}
			for _, f := range []string{"securityContext", "ports", "livenessProbe", "readinessProbe", "volumeMounts", "env", "resources"} {
				paths = append(paths, []string{"spec", "template", "spec", "containers", "0", f})
			}
		}
		for _, p := range paths {
			a, b := field(k, p), field(h, p)
			if p[0] == "webhooks" {
				// A kustomize patch moves the webhook it patches first.
				a, b = byName(a), byName(b)
			}
			if !reflect.DeepEqual(a, b) {
				t.Errorf("%s: %s differs\nconfig/: %v\nchart:   %v", key, strings.Join(p, "."), a, b)
			}
			compared++
		}
	}
	// The chart adds tuning flags; every flag config/ gives the manager, it gives too.
	chartArgs := strings.Join(args(chart["Deployment/conveyor-system/conveyor-manager"]), " ")
	for _, a := range args(kust["Deployment/conveyor-system/conveyor-manager"]) {
		if a == "--leader-elect" {
			a = "--leader-elect=true"
		}
		if !strings.Contains(chartArgs, a) {
			t.Errorf("the chart's manager lacks %s (has %s)", a, chartArgs)
		}
	}
	t.Logf("%d objects in both, %d fields compared", len(kust), compared)
}

// outbound.allow becomes the managers' --outbound-allow (shards included);
// without it the flag is not given (any host, loopback and metadata refused).
func TestChartOutboundAllow(t *testing.T) {
	objs := index(helmTemplate(t, "--set", "outbound.allow={hooks.slack.com,10.0.0.0/8}", "--set", "sharding.shards={b}"))
	for _, key := range []string{"Deployment/conveyor-system/conveyor-manager", "Deployment/conveyor-system/conveyor-manager-b"} {
		if a := args(objs[key]); !slices.Contains(a, "--outbound-allow=hooks.slack.com,10.0.0.0/8") {
			t.Errorf("%s args %v", key, a)
		}
	}
	for _, a := range args(index(helmTemplate(t))["Deployment/conveyor-system/conveyor-manager"]) {
		if strings.HasPrefix(a, "--outbound-allow") {
			t.Errorf("default values give %s", a)
		}
	}
}

// The NetworkPolicy selects the manager's pods and opens only ports the
// manager's container names (webhook, metrics; the receiver when it is on),
// metrics only to the labelled namespaces: a renamed port or label would
// silently close the webhook, or open everything.
func TestNetworkPolicyCoversTheManager(t *testing.T) {
	for name, objs := range map[string][]*unstructured.Unstructured{
		"helm template (receiver on)": helmTemplate(t, "--set", "receiver.enabled=true"),
		"kustomize config/default":    kustomize(t, "config/default"),
	} {
		objs := index(objs)
		deploy, policy := &appsv1.Deployment{}, &networkingv1.NetworkPolicy{}
		for obj, key := range map[any]string{deploy: "Deployment/conveyor-system/conveyor-manager", policy: "NetworkPolicy/conveyor-system/conveyor-manager"} {
			u, ok := objs[key]
			if !ok {
				t.Fatalf("%s: no %s", name, key)
			}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, obj); err != nil {
				t.Fatal(err)
			}
		}
		selector, err := metav1.LabelSelectorAsSelector(&policy.Spec.PodSelector)
		if err != nil || selector.Empty() || !selector.Matches(labels.Set(deploy.Spec.Template.Labels)) {
			t.Fatalf("%s: the policy's podSelector %v does not select the manager's pods %v", name, policy.Spec.PodSelector, deploy.Spec.Template.Labels)
		}
		ports := map[string]bool{}
		for _, p := range deploy.Spec.Template.Spec.Containers[0].Ports {
			ports[p.Name] = true
		}
		opened := map[string]int{}
		for _, rule := range policy.Spec.Ingress {
			for _, p := range rule.Ports {
				if p.Port == nil || !ports[p.Port.String()] {
					t.Errorf("%s: the policy opens port %v, which the manager does not name", name, p.Port)
					continue
				}
				opened[p.Port.String()] = len(rule.From)
			}
		}
		if _, ok := opened["webhook"]; !ok || opened["metrics"] == 0 || opened["probes"] != 0 {
			t.Errorf("%s: ports opened (with their number of peers): %v; want webhook, metrics from labelled namespaces only", name, opened)
		}
		if _, ok := opened["receiver"]; ports["receiver"] && !ok {
			t.Errorf("%s: the receiver is on and closed", name)
		}
		t.Logf("%s: %v", name, opened)
	}
}

func index(objs []*unstructured.Unstructured) map[string]*unstructured.Unstructured {
	m := map[string]*unstructured.Unstructured{}
	for _, u := range objs {
		m[fmt.Sprintf("%s/%s/%s", u.GetKind(), u.GetNamespace(), u.GetName())] = u
	}
	return m
}

func field(u *unstructured.Unstructured, path []string) any {
	var cur any = u.Object
	for _, p := range path {
		switch v := cur.(type) {
		case map[string]any:
			cur = v[p]
		case []any:
			var i int
			if _, err := fmt.Sscan(p, &i); err != nil || i >= len(v) {
				return nil
			}
			cur = v[i]
		default:
			return nil
		}
	}
	// Compare through JSON so that YAML's int and int64 agree.
	data, _ := json.Marshal(cur)
	var out any
	_ = json.Unmarshal(data, &out)
	return out
}

func args(deploy *unstructured.Unstructured) []string {
	if deploy == nil {
		return nil
	}
	var out []string
	for _, a := range field(deploy, []string{"spec", "template", "spec", "containers", "0", "args"}).([]any) {
		out = append(out, a.(string))
	}
	sort.Strings(out)
	return out
}

// helm install, upgrade (to cert-manager) and uninstall against a real
// kube-apiserver: Helm's own install path (crds/ first, then the templates),
// and an uninstall that keeps the environment namespaces.
func TestHelmInstallUpgradeUninstall(t *testing.T) {
	binDir(t)
	env := &envtest.Environment{}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	admin, err := env.AddUser(envtest.User{Name: "helm-admin", Groups: []string{"system:masters"}}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	helm := func(args ...string) string {
		t.Helper()
		out := string(run(t, filepath.Join(binDir(t), "helm"), append(args, "--kubeconfig", kc, "--namespace", "conveyor-system")...))
		t.Logf("helm %s", strings.Join(args, " "))
		return out
	}

	notes := helm("install", "conveyor", "charts/conveyor", "--create-namespace")
	if !strings.Contains(notes, "rollout status deployment/conveyor-manager") {
		t.Errorf("NOTES do not say what to do next:\n%s", notes)
	}
	for _, crd := range []string{"pipelines.conveyor.dev", "pipelineruns.conveyor.dev", "approvals.conveyor.dev"} {
		if err := c.Get(ctx, client.ObjectKey{Name: crd}, &apiextensionsv1.CustomResourceDefinition{}); err != nil {
			t.Errorf("CRD %s after helm install: %v", crd, err)
		}
	}
	third := moduleCRDs(t, certManagerModule, "deploy/crds/cert-manager.io_issuers.yaml", "deploy/crds/cert-manager.io_certificates.yaml")
	if err := manifests.Apply(ctx, c, third, "test"); err != nil {
		t.Fatal(err)
	}
	waitEstablished(t, c, third)
	helm("upgrade", "conveyor", "charts/conveyor", "--set", "certManager.enabled=true")
	cert := &unstructured.Unstructured{}
	cert.SetAPIVersion("cert-manager.io/v1")
	cert.SetKind("Certificate")
	if err := c.Get(ctx, client.ObjectKey{Namespace: "conveyor-system", Name: "conveyor-serving-cert"}, cert); err != nil {
		t.Errorf("Certificate after the upgrade: %v", err)
	}
	vwc := &unstructured.Unstructured{}
	vwc.SetAPIVersion("admissionregistration.k8s.io/v1")
	vwc.SetKind("ValidatingWebhookConfiguration")
	if err := c.Get(ctx, client.ObjectKey{Name: "conveyor-validating-webhook-configuration"}, vwc); err != nil {
		t.Fatal(err)
	}
	if got := vwc.GetAnnotations()["cert-manager.io/inject-ca-from"]; got != "conveyor-system/conveyor-serving-cert" {
		t.Errorf("inject-ca-from annotation after the upgrade: %q", got)
	}

	helm("uninstall", "conveyor")
	for _, ns := range []string{"staging", "pre-production", "production"} {
		if err := c.Get(ctx, client.ObjectKey{Name: ns}, &corev1.Namespace{}); err != nil {
			t.Errorf("environment namespace %s after helm uninstall: %v", ns, err)
		}
	}
	dep := &unstructured.Unstructured{}
	dep.SetAPIVersion("apps/v1")
	dep.SetKind("Deployment")
	if err := c.Get(ctx, client.ObjectKey{Namespace: "conveyor-system", Name: "conveyor-manager"}, dep); err == nil {
		t.Error("the manager Deployment is still there after helm uninstall")
	}
}

// TestGrafanaDashboard: the chart ships the delivery dashboard of
// config/grafana as a ConfigMap for Grafana's sidecar; its panels query the
// delivery metrics docs/metrics.md documents.
func TestGrafanaDashboard(t *testing.T) {
	var cm *unstructured.Unstructured
	for _, u := range helmTemplate(t, "--set", "grafanaDashboard.enabled=true") {
		if u.GetKind() == "ConfigMap" && u.GetName() == "conveyor-delivery-dashboard" {
			cm = u
		}
	}
	if cm == nil || cm.GetLabels()["grafana_dashboard"] != "1" {
		t.Fatalf("no labelled dashboard ConfigMap: %v", cm)
	}
	data, _, _ := unstructured.NestedString(cm.Object, "data", "conveyor-delivery.json")
	file, err := os.ReadFile("../../config/grafana/conveyor-delivery.json")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(data) != strings.TrimSpace(string(file)) {
		t.Error("the chart's dashboard differs from config/grafana/conveyor-delivery.json")
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(file, &d); err != nil {
		t.Fatal(err)
	}
	docs, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Panels) != 4 {
		t.Fatalf("%d panels, want the four delivery measures", len(d.Panels))
	}
	for _, p := range d.Panels {
		for _, m := range []string{"conveyor_deployments_total", "conveyor_deploy_lead_time_seconds", "conveyor_deploy_time_to_restore_seconds"} {
			if strings.Contains(p.Targets[0].Expr, m) && !strings.Contains(string(docs), "`"+m+"`") {
				t.Errorf("panel %q queries %s, which docs/metrics.md does not list", p.Title, m)
			}
		}
	}
}

// TestChartShards: with sharding.shards, one more manager Deployment per
// shard, limited to its label, with no webhooks, receiver or Environment
// status; the first manager takes the unlabelled runs and stays the only one
// behind the webhook and receiver Services.
func TestChartShards(t *testing.T) {
	objs := index(helmTemplate(t, "--set", "receiver.enabled=true", "--set", "sharding.shards={b,c}"))
	has := func(list []string, want string) bool { return slices.Contains(list, want) }
	main := args(objs["Deployment/conveyor-system/conveyor-manager"])
	if !has(main, "--watch-label-selector=!conveyor.dev/shard") || !has(main, "--receiver-bind-address=:8090") {
		t.Errorf("first manager's args: %v", main)
	}
	for _, shard := range []string{"b", "c"} {
		d := objs["Deployment/conveyor-system/conveyor-manager-"+shard]
		a := args(d)
		for _, want := range []string{"--watch-label-selector=conveyor.dev/shard=" + shard, "--webhooks=false", "--environment-status=false",
			"--leader-election-id=conveyor-shard-" + shard + ".conveyor.dev"} {
			if !has(a, want) {
				t.Errorf("shard %s: %s missing from %v", shard, want, a)
			}
		}
		for _, arg := range a {
			if strings.HasPrefix(arg, "--receiver") || strings.HasPrefix(arg, "--cert-rotation") {
				t.Errorf("shard %s serves %s", shard, arg)
			}
		}
		names := field(objs["Role/conveyor-system/conveyor-manager-shards"], []string{"rules", "0", "resourceNames"})
		if list, _ := names.([]any); !slices.Contains(list, any("conveyor-shard-"+shard+".conveyor.dev")) {
			t.Errorf("shard %s: its leader election Lease is not in the shards' Role (%v)", shard, names)
		}
		labels := field(d, []string{"spec", "template", "metadata", "labels"}).(map[string]any)
		for _, svc := range []string{"conveyor-webhook-service", "conveyor-receiver"} {
			sel := field(objs["Service/conveyor-system/"+svc], []string{"spec", "selector"}).(map[string]any)
			matches := true
			for k, v := range sel {
				matches = matches && labels[k] == v
			}
			if matches {
				t.Errorf("Service %s selects shard %s's pods (%v)", svc, shard, labels)
			}
		}
	}
}

// The release ledger's webhook is skipped for the manager's own writes
// only: in the chart (in any namespace, shards included) and in config/, its
// one match condition names the service account every manager Deployment
// runs as, in that Deployment's namespace, and no other webhook has one.
func TestReleaseWebhookSkipsOnlyTheManager(t *testing.T) {
	renders := map[string][]*unstructured.Unstructured{
		"helm template":                      helmTemplate(t, "--set", "sharding.shards={b}"),
		"helm template --namespace delivery": helmTemplateIn(t, "delivery"),
		"kustomize config/default":           kustomize(t, "config/default"),
	}
	for name, objs := range renders {
		var managers []string
		for _, u := range objs {
			if u.GetKind() == "Deployment" && strings.HasPrefix(u.GetName(), "conveyor-manager") {
				sa, _ := field(u, []string{"spec", "template", "spec", "serviceAccountName"}).(string)
				managers = append(managers, "system:serviceaccount:"+u.GetNamespace()+":"+sa)
			}
		}
		if len(managers) == 0 {
			t.Fatalf("%s: no manager Deployment", name)
		}
		conditions := 0
		for _, u := range objs {
			if u.GetKind() != "ValidatingWebhookConfiguration" && u.GetKind() != "MutatingWebhookConfiguration" {
				continue
			}
			hooks, _ := field(u, []string{"webhooks"}).([]any)
			for _, h := range hooks {
				hook := h.(map[string]any)
				conds, _ := hook["matchConditions"].([]any)
				if len(conds) == 0 {
					continue
				}
				conditions++
				if hook["name"] != "vrelease.conveyor.dev" || len(conds) != 1 {
					t.Errorf("%s: webhook %v has match conditions %v; only vrelease.conveyor.dev has one", name, hook["name"], conds)
					continue
				}
				expr := conds[0].(map[string]any)["expression"]
				for _, m := range managers {
					if want := "request.userInfo.username != '" + m + "'"; expr != want {
						t.Errorf("%s: vrelease.conveyor.dev's condition is %q, want %q", name, expr, want)
					}
				}
			}
		}
		if conditions != 1 {
			t.Errorf("%s: %d webhooks with match conditions, want 1 (vrelease.conveyor.dev)", name, conditions)
		}
	}
}

// byName sorts a list of objects (webhooks) by their name.
func byName(list any) any {
	items, ok := list.([]any)
	if !ok {
		return list
	}
	sorted := slices.Clone(items)
	slices.SortFunc(sorted, func(a, b any) int {
		an, _ := a.(map[string]any)["name"].(string)
		bn, _ := b.(map[string]any)["name"].(string)
		return strings.Compare(an, bn)
	})
	return sorted
}

func helmTemplateIn(t *testing.T, namespace string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := manifests.Decode(run(t, filepath.Join(binDir(t), "helm"), "template", "conveyor", "charts/conveyor", "--namespace", namespace))
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	return objs
}
