package controllers_test

import (
	"context"
	"path/filepath"
	"testing"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/hack/manifests"
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

func expectKstatus(t *testing.T, kind, ns, name string, want status.Status) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(kstatusOf(g, kind, ns, name)).To(Equal(want), "%s %s/%s", kind, ns, name)
	}).Should(Succeed())
	t.Logf("kstatus: %s %s is %s", kind, name, want)
}

// kstatus (Argo CD, Flux, kpt, `kubectl wait` scripts) reads Conveyor's
// objects right: a valid Pipeline is Current; a run is InProgress while it
// works or waits for a person, Current when it succeeded, Failed when a job
// failed or an approver rejected it.
func TestKstatusVerdicts(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	p := seedPipeline(t, ns)
	expectKstatus(t, "Pipeline", ns, p.Name, status.CurrentStatus)

	ok := newRun(t, ns, featureLogin)
	waitJob(t, ok, "build", "compile")
	expectKstatus(t, "PipelineRun", ns, ok.Name, status.InProgressStatus)
	passStage(t, ok, "build", "compile")
	passStage(t, ok, "testing", "unit", "lint")
	waitRun(t, ok, conveyorv1.RunWaiting, "staging")
	expectKstatus(t, "PipelineRun", ns, ok.Name, status.InProgressStatus)
	decide(t, ok, "staging", conveyorv1.DecisionApprove)
	passStage(t, ok, "staging", "deploy")
	decide(t, ok, "pre-production", conveyorv1.DecisionApprove)
	passStage(t, ok, "pre-production", "deploy")
	waitRun(t, ok, conveyorv1.RunSucceeded, "pre-production")
	expectKstatus(t, "PipelineRun", ns, ok.Name, status.CurrentStatus)

	failed := newRun(t, ns, featureLogin)
	finishJob(t, waitJob(t, failed, "build", "compile"), "BackoffLimitExceeded", "Job has reached the specified backoff limit")
	waitRun(t, failed, conveyorv1.RunFailed, "build")
	expectKstatus(t, "PipelineRun", ns, failed.Name, status.FailedStatus)

	rejected := newRun(t, ns, v140)
	toApproveGate(t, rejected)
	expectKstatus(t, "PipelineRun", ns, rejected.Name, status.InProgressStatus)
	decide(t, rejected, "approve", conveyorv1.DecisionReject)
	waitRun(t, rejected, conveyorv1.RunRejected, "approve")
	expectKstatus(t, "PipelineRun", ns, rejected.Name, status.FailedStatus)
}

// A GitOps tool applies the samples again and again: the second server-side
// apply changes nothing (same resourceVersion), because the controller writes
// only status, never a Pipeline's spec, labels, annotations or finalizers.
func TestServerSideApplyTwice(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	var objs []*unstructured.Unstructured
	for _, f := range []string{"environments.yaml", "pipeline.yaml"} {
		o, err := manifests.ReadFile(filepath.Join("../config/samples", f))
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
	expectKstatus(t, "Pipeline", ns, "shop", status.CurrentStatus)

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
