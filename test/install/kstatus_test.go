package install

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/conveyor-dev/conveyor/controllers/manager"
	"github.com/conveyor-dev/conveyor/test/framework/manifests"
)

// A Pipeline that got in without the admission webhook (`make run` runs the
// manager with --webhooks=false; an older version may have admitted it) and
// that the controller finds invalid reads Failed to kstatus, with the reason;
// the valid one next to it reads Current.
func TestInvalidPipelineIsFailed(t *testing.T) {
	cfg, mgr := startBareManager(t, manager.Config{MetricsAddr: "0", ProbeAddr: "0"})
	ctx := context.Background()

	docs, err := manifests.Decode([]byte(`
apiVersion: conveyor.dev/v1alpha1
kind: Pipeline
metadata: {name: good, namespace: default}
spec:
  refs: {branches: ["feature_*"]}
  stages:
  - name: build
    jobs: [{name: compile, image: golang:1.26}]
---
apiVersion: conveyor.dev/v1alpha1
kind: Pipeline
metadata: {name: bad, namespace: default}
spec:
  refs: {branches: ["feature_[x"]}
  stages:
  - name: build
    jobs: [{name: compile, image: golang:1.26}]
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := manifests.Apply(ctx, mgr.GetClient(), docs, "flux"); err != nil {
		t.Fatal(err)
	}
	want := map[string]status.Status{"good": status.CurrentStatus, "bad": status.FailedStatus}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		NewWithT(t).Eventually(func(g Gomega) {
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(d.GroupVersionKind())
			g.Expect(c.Get(ctx, client.ObjectKeyFromObject(d), u)).To(Succeed())
			res, err := status.Compute(u)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(res.Status).To(Equal(want[d.GetName()]), res.Message)
			t.Logf("kstatus: Pipeline %s is %s: %s", d.GetName(), res.Status, res.Message)
		}).WithTimeout(20 * time.Second).Should(Succeed())
	}
}
