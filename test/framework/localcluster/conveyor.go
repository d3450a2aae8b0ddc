package localcluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/manager"
	"github.com/conveyor-dev/conveyor/test/framework/manifests"
)

// ManagerUser is the identity the manager runs as: it holds only the roles
// config/rbac gives it, not cluster-admin.
const ManagerUser = "conveyor-manager"

// ManagerNamespace holds the manager's webhook certificate Secret.
const ManagerNamespace = "conveyor-system"

// Environments are the seed's deploy namespaces.
var Environments = []string{"staging", "pre-production", "production"}

// Scheme knows the kinds the local tooling reads and writes.
func Scheme() *runtime.Scheme {
	s := manager.Scheme()
	utilruntime.Must(apiextensionsv1.AddToScheme(s))
	return s
}

// Manager is Conveyor's manager running as a process next to the cluster.
type Manager struct {
	Process      *os.Process
	Done         <-chan error
	ProbePort    int
	WebhookPort  int
	ReceiverPort int
	// Name names its log (manager, manager-<shard>).
	Name string
	// Extra are the flags it was started with beyond the defaults.
	Extra []string
}

// InstallConveyor installs what config/ holds into the cluster: the CRDs, the
// manager's and the personas' roles, the admission webhooks (pointing at a
// manager on localhost:webhookPort), and the namespaces.
func (c *Cluster) InstallConveyor(ctx context.Context, root string, webhookPort int) error {
	admin, err := c.Client("admin", &client.Options{Scheme: Scheme()})
	if err != nil {
		return err
	}
	for _, ns := range append([]string{ManagerNamespace}, Environments...) {
		if err := create(ctx, admin, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return err
		}
	}
	crds, _ := filepath.Glob(filepath.Join(root, "config/crd/bases/*.yaml"))
	// The roles the chart ships (the Makefile's CHART_RBAC, copied from config/rbac).
	rbac, _ := filepath.Glob(filepath.Join(root, "charts/conveyor/files/rbac/*.yaml"))
	files := append(crds, rbac...)
	for _, f := range files {
		if err := applyFile(ctx, admin, f, nil); err != nil {
			return err
		}
	}
	if err := waitCRDs(ctx, admin, crds); err != nil {
		return err
	}
	// The Environments Conveyor ships: the seed's rules guard the deploys.
	if err := applyFile(ctx, admin, filepath.Join(root, "config/environments/seed_environments.yaml"), nil); err != nil {
		return err
	}
	user := []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: ManagerUser}}
	for _, role := range []string{"conveyor-manager", "conveyor-cert-rotation"} {
		if err := create(ctx, admin, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: role},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   user,
		}); err != nil {
			return err
		}
	}
	if err := create(ctx, admin, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "conveyor-manager", Namespace: ManagerNamespace},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "conveyor-manager"},
		Subjects:   user,
	}); err != nil {
		return err
	}
	for _, ns := range Environments {
		if err := c.AllowJobs(ctx, ns); err != nil {
			return err
		}
	}
	caPEM, err := writeWebhookCerts(filepath.Join(c.Dir, "webhook-certs"))
	if err != nil {
		return err
	}
	return applyFile(ctx, admin, filepath.Join(root, "config/webhook/manifests.yaml"), func(u *unstructured.Unstructured) (client.Object, error) {
		return localWebhooks(root, u, webhookPort, caPEM)
	})
}

// AllowJobs lets the manager create and delete Jobs in namespace ns (created
// if missing), and read the webhook Secrets of its Pipelines, by binding the
// ClusterRoles conveyor-job-runner and conveyor-receiver there.
func (c *Cluster) AllowJobs(ctx context.Context, ns string) error {
	admin, err := c.Client("admin", &client.Options{Scheme: Scheme()})
	if err != nil {
		return err
	}
	if err := create(ctx, admin, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return err
	}
	for _, role := range []string{"conveyor-job-runner", "conveyor-receiver"} {
		if err := create(ctx, admin, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: role, Namespace: ns},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: ManagerUser}},
		}); err != nil {
			return err
		}
	}
	return nil
}

// StartManager starts the manager binary as ManagerUser with its webhooks on
// localhost (serving the certificate InstallConveyor made), and waits until it
// is ready. extra flags come after the defaults (and win over them).
func (c *Cluster) StartManager(ctx context.Context, bin string, webhookPort, probePort, receiverPort int, extra ...string) (*Manager, error) {
	return c.startManager(ctx, "manager", bin, webhookPort, probePort, receiverPort, extra...)
}

// ShardFlags are the flags of a manager for shard name, as the chart gives
// them: its label only, no webhooks, no receiver, no Environment status.
func ShardFlags(name string) []string {
	return []string{"--watch-label-selector=" + conveyorv1.LabelShard + "=" + name, "--webhooks=false",
		"--receiver-bind-address=0", "--environment-status=false"}
}

// StartShardManager starts a second manager for shard name (its log is
// manager-<name>), beside a first one that handles the unlabelled runs.
func (c *Cluster) StartShardManager(ctx context.Context, bin, name string, probePort int) (*Manager, error) {
	return c.startManager(ctx, "manager-"+name, bin, 0, probePort, 0, ShardFlags(name)...)
}

// RestartManager starts m's process again, on its ports and with its flags,
// once it has ended.
func (c *Cluster) RestartManager(ctx context.Context, bin string, m *Manager) (*Manager, error) {
	return c.startManager(ctx, m.Name, bin, m.WebhookPort, m.ProbePort, m.ReceiverPort, m.Extra...)
}

func (c *Cluster) startManager(ctx context.Context, name, bin string, webhookPort, probePort, receiverPort int, extra ...string) (*Manager, error) {
	kubeconfig := filepath.Join(c.Dir, "manager.kubeconfig")
	if err := clientcmd.WriteToFile(*c.kubeconfig(ManagerUser), kubeconfig); err != nil {
		return nil, err
	}
	args := append([]string{"--leader-elect=false", "--metrics-bind-address=0",
		fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", probePort),
		"--webhook-host=127.0.0.1", fmt.Sprintf("--webhook-port=%d", webhookPort),
		"--webhook-cert-dir=" + filepath.Join(c.Dir, "webhook-certs"),
		fmt.Sprintf("--receiver-bind-address=127.0.0.1:%d", receiverPort),
		// The local cluster is one person's machine: a sink or git server
		// they run on localhost is theirs to reach (a cluster's chart
		// leaves loopback refused).
		"--outbound-allow=127.0.0.0/8,::1/128",
	}, extra...)
	proc, done, err := c.StartProcess(name, bin, []string{"POD_NAMESPACE=" + ManagerNamespace, "KUBECONFIG=" + kubeconfig}, args...)
	if err != nil {
		return nil, err
	}
	m := &Manager{Process: proc, Done: done, Name: name, ProbePort: probePort, WebhookPort: webhookPort, ReceiverPort: receiverPort, Extra: extra}
	if err := waitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/readyz", probePort), "", 90*time.Second, done); err != nil {
		return nil, fmt.Errorf("%s: %w (see %s)", name, err, c.LogFile(name))
	}
	return m, nil
}

// localWebhooks turns config/webhook's configurations, which point at the
// in-cluster Service, into ones pointing at https://localhost:port, sparing
// the manager (ManagerUser) the calls the installed ones spare it.
func localWebhooks(root string, u *unstructured.Unstructured, port int, caPEM []byte) (client.Object, error) {
	data, err := u.MarshalJSON()
	if err != nil {
		return nil, err
	}
	url := func(cc *admissionregistrationv1.WebhookClientConfig) {
		s := fmt.Sprintf("https://localhost:%d%s", port, *cc.Service.Path)
		cc.URL, cc.Service, cc.CABundle = &s, nil, caPEM
	}
	switch u.GetKind() {
	case "MutatingWebhookConfiguration":
		cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := yaml.Unmarshal(data, cfg); err != nil {
			return nil, err
		}
		cfg.Name = manager.MutatingWebhookConfiguration
		for i := range cfg.Webhooks {
			url(&cfg.Webhooks[i].ClientConfig)
		}
		return cfg, nil
	case "ValidatingWebhookConfiguration":
		cfg := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		if err := yaml.Unmarshal(data, cfg); err != nil {
			return nil, err
		}
		cfg.Name = manager.ValidatingWebhookConfiguration
		for i := range cfg.Webhooks {
			url(&cfg.Webhooks[i].ClientConfig)
		}
		return cfg, manifests.SpareManager(root, cfg, ManagerUser)
	}
	return nil, fmt.Errorf("unexpected %s in the webhook manifests", u.GetKind())
}

// applyFile creates every object of a multi-document YAML file, through
// transform when given; objects that exist are left as they are.
func applyFile(ctx context.Context, c client.Client, path string, transform func(*unstructured.Unstructured) (client.Object, error)) error {
	objs, err := manifests.ReadFile(path)
	if err != nil {
		return err
	}
	for _, u := range objs {
		var obj client.Object = u
		if transform != nil {
			if obj, err = transform(u); err != nil {
				return err
			}
		}
		if err := create(ctx, c, obj); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	return nil
}

func create(ctx context.Context, c client.Client, obj client.Object) error {
	if err := c.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating %T %s: %w", obj, obj.GetName(), err)
	}
	return nil
}

func waitCRDs(ctx context.Context, c client.Client, files []string) error {
	return poll(ctx, 60*time.Second, func() (bool, error) {
		list := &apiextensionsv1.CustomResourceDefinitionList{}
		if err := c.List(ctx, list); err != nil {
			return false, err
		}
		established := 0
		for _, crd := range list.Items {
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue && crd.Spec.Group == conveyorv1.GroupVersion.Group {
					established++
				}
			}
		}
		return established == len(files), nil
	})
}

// poll calls cond until it is true, fails, or the timeout passes.
func poll(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	if last != nil {
		return fmt.Errorf("timed out after %s: %w", timeout, last)
	}
	return fmt.Errorf("timed out after %s", timeout)
}
