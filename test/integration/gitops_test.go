package integration_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/test/framework/manifests"
)

// kstatusOf reads an object as a GitOps tool does (unstructured, from the API
// server) and returns kstatus's verdict on it.
func kstatusOf(g Gomega, kind, ns, name string) status.Status {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(schema.GroupVersionKind{Group: conveyorv1.GroupVersion.Group, Version: conveyorv1.GroupVersion.Version, Kind: kind})
	g.Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, u)).To(Succeed())
	res, err := status.Compute(u)
	g.Expect(err).NotTo(HaveOccurred())
	return res.Status
}

// argoHealth runs the Argo CD health check that docs/gitops gives for the
// object's kind, as Argo CD runs it (the object as a Lua table named obj).
func argoHealth(g Gomega, kind, ns, name string) (health, message string) {
	data, err := os.ReadFile("../../docs/gitops/argocd-cm-patch.yaml")
	g.Expect(err).NotTo(HaveOccurred())
	var cm struct{ Data map[string]string }
	g.Expect(yaml.Unmarshal(data, &cm)).To(Succeed())
	script := cm.Data["resource.customizations.health.conveyor.dev_"+kind]
	g.Expect(script).NotTo(BeEmpty(), "no Argo CD health check for %s", kind)

	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(schema.GroupVersionKind{Group: conveyorv1.GroupVersion.Group, Version: conveyorv1.GroupVersion.Version, Kind: kind})
	g.Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, u)).To(Succeed())
	L := lua.NewState(lua.Options{SkipOpenLibs: false})
	defer L.Close()
	L.SetGlobal("obj", toLua(L, u.Object))
	g.Expect(L.DoString(script)).To(Succeed())
	hs, ok := L.Get(-1).(*lua.LTable)
	g.Expect(ok).To(BeTrue(), "the health check returned %v", L.Get(-1))
	return hs.RawGetString("status").String(), hs.RawGetString("message").String()
}

// toLua converts a JSON-shaped value to Lua as Argo CD does: objects and
// arrays to tables (arrays from 1), numbers, strings, booleans.
func toLua(L *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case map[string]any:
		t := L.NewTable()
		for k, e := range v {
			t.RawSetString(k, toLua(L, e))
		}
		return t
	case []any:
		t := L.NewTable()
		for _, e := range v {
			t.Append(toLua(L, e))
		}
		return t
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case nil:
		return lua.LNil
	}
	panic(fmt.Sprintf("unexpected %T in an object", v))
}

// expectHealth waits until kstatus and the Argo CD health check both give
// their expected verdict on the object.
func expectHealth(t *testing.T, kind, ns, name string, want status.Status, wantArgo string) {
	t.Helper()
	var msg string
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(kstatusOf(g, kind, ns, name)).To(Equal(want), "%s %s/%s", kind, ns, name)
		var h string
		h, msg = argoHealth(g, kind, ns, name)
		g.Expect(h).To(Equal(wantArgo), "Argo CD health of %s %s/%s: %s", kind, ns, name, msg)
	}).WithTimeout(20 * time.Second).Should(Succeed())
	t.Logf("kstatus: %s %s is %s; Argo CD: %s (%s)", kind, name, want, wantArgo, msg)
}

// kstatus (Flux, kpt, cli-utils) and the Argo CD health check of docs/gitops
// read Conveyor's objects right: a valid Pipeline is Current (Healthy); a run
// is InProgress while it works (Progressing) or waits for a person
// (Suspended), Current when it succeeded, Failed (Degraded) when a job failed
// or an approver rejected it; an Approval the run took is Current (one for a
// stage not reached yet is refused at admission).
func TestKstatusVerdicts(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	p := seedPipeline(t, ns)
	expectHealth(t, "Pipeline", ns, p.Name, status.CurrentStatus, "Healthy")

	ok := newRun(t, ns, featureLogin)
	waitJob(t, ok, "build", "compile")
	expectHealth(t, "PipelineRun", ns, ok.Name, status.InProgressStatus, "Progressing")
	passStage(t, ok, "build", "compile")
	passStage(t, ok, "testing", "unit", "lint")
	waitRun(t, ok, conveyorv1.RunWaiting, "staging")
	expectHealth(t, "PipelineRun", ns, ok.Name, status.InProgressStatus, "Suspended")
	decide(t, ok, "staging", conveyorv1.DecisionApprove)
	passStage(t, ok, "staging", "deploy")
	decide(t, ok, "pre-production", conveyorv1.DecisionApprove)
	passStage(t, ok, "pre-production", "deploy")
	waitRun(t, ok, conveyorv1.RunSucceeded, "pre-production")
	expectHealth(t, "PipelineRun", ns, ok.Name, status.CurrentStatus, "Healthy")

	failed := newRun(t, ns, featureLogin)
	finishJob(t, waitJob(t, failed, "build", "compile"), "BackoffLimitExceeded", "Job has reached the specified backoff limit")
	waitRun(t, failed, conveyorv1.RunFailed, "build")
	expectHealth(t, "PipelineRun", ns, failed.Name, status.FailedStatus, "Degraded")

	rejected := newRun(t, ns, v140)
	toApproveGate(t, rejected)
	expectHealth(t, "PipelineRun", ns, rejected.Name, status.InProgressStatus, "Suspended")
	_, err := decideEarly("omar", rejected, "production", conveyorv1.DecisionApprove)
	expectRefused(t, err, "not waiting for a decision yet")
	reject := decide(t, rejected, "approve", conveyorv1.DecisionReject)
	waitRun(t, rejected, conveyorv1.RunRejected, "approve")
	expectHealth(t, "PipelineRun", ns, rejected.Name, status.FailedStatus, "Degraded")
	expectHealth(t, "Approval", ns, reject.Name, status.CurrentStatus, "Healthy")
}

// A GitOps tool applies the samples again and again: the second server-side
// apply changes nothing (same resourceVersion), because the controller writes
// only status, never a Pipeline's spec, labels, annotations or finalizers.
func TestServerSideApplyTwice(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	var objs []*unstructured.Unstructured
	for _, f := range []string{"environments.yaml", "pipeline.yaml"} {
		o, err := manifests.ReadFile(filepath.Join("../../config/samples", f))
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, o...)
	}
	for _, u := range objs {
		if u.GetKind() == "Pipeline" {
			u.SetNamespace(ns)
		}
	}
	ctx := context.Background()
	const owner = "argocd-controller"
	if err := manifests.Apply(ctx, k8s, objs, owner); err != nil {
		t.Fatal(err)
	}
	// Let the controller do its part (status) before the second apply.
	expectHealth(t, "Pipeline", ns, "shop", status.CurrentStatus, "Healthy")

	versions := func() map[string]string {
		v := map[string]string{}
		for _, u := range objs {
			live := &unstructured.Unstructured{}
			live.SetGroupVersionKind(u.GroupVersionKind())
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(u), live); err != nil {
				t.Fatal(err)
			}
			v[u.GetKind()+"/"+u.GetName()] = live.GetResourceVersion()
		}
		return v
	}
	first := versions()
	if err := manifests.Apply(ctx, k8s, objs, owner); err != nil {
		t.Fatal(err)
	}
	second := versions()
	for k, v := range first {
		if second[k] != v {
			t.Errorf("%s: resourceVersion %s after the first apply, %s after the second", k, v, second[k])
		}
	}
	t.Logf("Applied %d sample objects twice: resourceVersions unchanged %v", len(objs), second)

	live := &conveyorv1.Pipeline{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "shop"}, live); err != nil {
		t.Fatal(err)
	}
	for _, mf := range live.ManagedFields {
		if mf.Manager != owner && mf.Subresource != "status" {
			t.Errorf("%s wrote the Pipeline's %s fields (only status is the controller's): %s", mf.Manager, mf.Operation, mf.FieldsV1.String())
		}
	}
	if len(live.Finalizers) > 0 || len(live.Labels) > 0 || len(live.Annotations) > 0 {
		t.Errorf("the Pipeline has metadata its manifest does not: finalizers %v, labels %v, annotations %v", live.Finalizers, live.Labels, live.Annotations)
	}
}
