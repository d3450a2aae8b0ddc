package install

import (
	"context"
	"testing"

	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/conveyor-dev/conveyor/controllers/manager"
)

// startBareManager starts kube-apiserver and etcd with Conveyor's CRDs and no
// admission webhooks (as `make run` has it), and the manager against them
// with the given configuration; both stop with the test.
func startBareManager(t *testing.T, c manager.Config) (*rest.Config, ctrl.Manager) {
	t.Helper()
	binDir(t)
	env := &envtest.Environment{CRDDirectoryPaths: []string{root + "/config/crd/bases"}, ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	mgr, err := ctrl.NewManager(cfg, manager.Options(c))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := manager.Setup(ctx, mgr, manager.SetupOptions{Controller: controller.Options{SkipNameValidation: ptr.To(true)}}); err != nil {
		t.Fatal(err)
	}
	go func() { _ = mgr.Start(ctx) }()
	return cfg, mgr
}
