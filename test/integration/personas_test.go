package integration_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/conveyor-dev/conveyor/controllers/manager"
	"github.com/conveyor-dev/conveyor/test/framework/manifests"
)

// personas are the test users and their groups, as the API server
// authenticates them (client certificates made by envtest).
var personas = map[string]struct {
	groups []string
	role   string
}{
	"dana": {[]string{"developers"}, "conveyor-developer"},
	"tess": {[]string{"testers"}, "conveyor-tester"},
	"omar": {[]string{"devops"}, "conveyor-devops"},
	"rita": {[]string{"release-engineers"}, "conveyor-release-engineer"},
	"rob":  {[]string{"release-engineers"}, "conveyor-release-engineer"},
	// pia edits Pipelines (and reads no Secrets).
	"pia": {[]string{"pipeline-admins"}, "conveyor-pipeline-admin"},
	// ada is a cluster admin, who is not the manager.
	"ada": {[]string{"system:masters"}, ""},
}

var personaClients = map[string]client.Client{}

// personaKubeconfigs are kubeconfig files, one per persona, for the kubectl plugin.
var personaKubeconfigs = map[string]string{}

// as returns a client that acts as the named persona.
func as(who string) client.Client {
	c, ok := personaClients[who]
	if !ok {
		panic("unknown persona " + who)
	}
	return c
}

// setupPersonas installs the shipped persona ClusterRoles from config/rbac,
// binds each persona's group to its role, and makes a client per persona.
func setupPersonas() error {
	ctx := context.Background()
	objs, err := manifests.ReadFile("../../config/rbac/personas.yaml")
	if err != nil {
		return err
	}
	for _, o := range objs {
		if err := k8s.Create(ctx, o); err != nil {
			return err
		}
	}
	for name, p := range personas {
		user, err := env.AddUser(envtest.User{Name: name, Groups: p.groups}, nil)
		if err != nil {
			return fmt.Errorf("adding user %s: %w", name, err)
		}
		c, err := client.New(user.Config(), client.Options{Scheme: manager.Scheme()})
		if err != nil {
			return err
		}
		personaClients[name] = c
		kubeconfig, err := user.KubeConfig()
		if err != nil {
			return err
		}
		path := filepath.Join(env.ControlPlane.APIServer.CertDir, name+".kubeconfig")
		if err := os.WriteFile(path, kubeconfig, 0o600); err != nil {
			return err
		}
		personaKubeconfigs[name] = path
		if p.role == "" {
			continue
		}
		binding := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "test-" + name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: p.role},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "Group", Name: p.groups[0]}},
		}
		if err := k8s.Create(ctx, binding); err != nil {
			return err
		}
	}
	return nil
}

// letGetSecret lets user get the Secret name in namespace ns (a Role and
// its RoleBinding, as a namespace admin would grant it).
func letGetSecret(t *testing.T, ns, user, name string) {
	t.Helper()
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: user + "-reads-" + name, Namespace: ns},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}, ResourceNames: []string{name}}}}
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name, Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}}
	for _, o := range []client.Object{role, binding} {
		if err := k8s.Create(context.Background(), o); err != nil {
			t.Fatal(err)
		}
	}
}
