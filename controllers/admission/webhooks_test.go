package admission

import (
	"context"
	"fmt"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// TestNamedFromAPI: the hot-path webhooks get a named object from the API
// server (a run created just before is found, though the cache does not
// have it yet) and list collections from the cache.
func TestNamedFromAPI(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := conveyorv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	run := &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "shop-1"}}
	env := &conveyorv1.Environment{ObjectMeta: metav1.ObjectMeta{Name: "staging"}}
	api := fake.NewClientBuilder().WithScheme(scheme).WithObjects(run).Build()
	cache := fake.NewClientBuilder().WithScheme(scheme).WithObjects(env).Build()
	r := namedFromAPI{api: api, cache: cache}
	ctx := context.Background()

	if err := r.Get(ctx, client.ObjectKeyFromObject(run), &conveyorv1.PipelineRun{}); err != nil {
		t.Fatalf("a run the API server has and the cache not yet: %v", err)
	}
	envs := &conveyorv1.EnvironmentList{}
	if err := r.List(ctx, envs); err != nil {
		t.Fatal(err)
	}
	if len(envs.Items) != 1 || envs.Items[0].Name != "staging" {
		t.Fatalf("listed %v, want the cache's Environment", envs.Items)
	}
	if err := r.Get(ctx, client.ObjectKeyFromObject(env), &conveyorv1.Environment{}); err == nil {
		t.Fatal("a Get was answered from the cache")
	}
}

// TestCacheFirst: the run defaulter reads a Pipeline from the cache, and from
// the API server when the cache does not have it yet.
func TestCacheFirst(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := conveyorv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	cached := &conveyorv1.Pipeline{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "shop", Labels: map[string]string{"read": "cache"}}}
	stored := cached.DeepCopy()
	stored.Labels["read"] = "api"
	fresh := &conveyorv1.Pipeline{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "new", Labels: map[string]string{"read": "api"}}}
	r := cacheFirst{
		cache: fake.NewClientBuilder().WithScheme(scheme).WithObjects(cached).Build(),
		api:   fake.NewClientBuilder().WithScheme(scheme).WithObjects(stored, fresh).Build(),
	}
	ctx := context.Background()
	got := &conveyorv1.Pipeline{}
	if err := r.Get(ctx, client.ObjectKeyFromObject(cached), got); err != nil || got.Labels["read"] != "cache" {
		t.Fatalf("a Pipeline in the cache: read %v from %q, want the cache's", err, got.Labels["read"])
	}
	got = &conveyorv1.Pipeline{}
	if err := r.Get(ctx, client.ObjectKeyFromObject(fresh), got); err != nil || got.Labels["read"] != "api" {
		t.Fatalf("a Pipeline the cache does not have yet: read %v from %q, want the API server's", err, got.Labels["read"])
	}
	if err := r.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "missing"}, &conveyorv1.Pipeline{}); err == nil {
		t.Fatal("a missing Pipeline was found")
	}
}

// TestStageEnvironmentReadsNoNamespace: an Approval's check finds its
// stage's Environment by listing Environments alone. Reading the Pipeline
// namespace's labels too (what the Pipeline rules read, and an Approval
// does not) cost a GET from the API server, and etcd, per deploy stage's
// Approval in the bench.
func TestStageEnvironmentReadsNoNamespace(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := conveyorv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	env := &conveyorv1.Environment{ObjectMeta: metav1.ObjectMeta{Name: "staging"}, Spec: conveyorv1.EnvironmentSpec{Namespace: "shop-staging"}}
	var gets []string
	reader := fake.NewClientBuilder().WithScheme(scheme).WithObjects(env).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			gets = append(gets, fmt.Sprintf("%T %s", obj, key))
			return c.Get(ctx, key, obj, opts...)
		},
	}).Build()
	run := &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "shop-1"},
		Status: conveyorv1.PipelineRunStatus{PipelineSpec: &conveyorv1.PipelineSpec{Stages: []conveyorv1.Stage{
			{Name: "build"}, {Name: "staging", Environment: "shop-staging"}}}}}
	got, err := stageEnvironment(context.Background(), reader, run, "staging")
	if err != nil {
		t.Fatal(err)
	}
	if got == nil || got.Name != "staging" {
		t.Fatalf("found %v, want Environment staging", got)
	}
	if len(gets) > 0 {
		t.Fatalf("read %v: an Approval's check reads no named object for its Environment", gets)
	}
	if got, err := stageEnvironment(context.Background(), reader, run, "build"); err != nil || got != nil {
		t.Fatalf("a stage that deploys nowhere: %v, %v", got, err)
	}
}

// TestApprovalRunFromCache: the Approval defaulter records the run from the
// manager's cache when the cache shows the Approval's stage waiting, from
// the API server otherwise; and a record from a cache behind a run created
// again under the same name is refused by the validator, which reads the
// API server.
func TestApprovalRunFromCache(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := conveyorv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	run := func(uid, stage string, phase conveyorv1.StagePhase) *conveyorv1.PipelineRun {
		return &conveyorv1.PipelineRun{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "shop-1", UID: types.UID(uid)},
			Spec:       conveyorv1.PipelineRunSpec{PipelineRef: conveyorv1.PipelineReference{Name: "shop"}, Git: conveyorv1.GitRef{Tag: "v1", Commit: "abc"}},
			Status: conveyorv1.PipelineRunStatus{Params: []conveyorv1.Param{{Name: "region", Value: "eu"}},
				Stages: []conveyorv1.StageStatus{{Name: "build", Phase: conveyorv1.StageSucceeded}, {Name: stage, Phase: phase}}},
		}
	}
	ctx := admission.NewContextWithRequest(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UserInfo: authenticationv1.UserInfo{Username: "erin", Groups: []string{"release-engineers"}}}})
	approval := func() *conveyorv1.Approval {
		return &conveyorv1.Approval{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "ok"},
			Spec: conveyorv1.ApprovalSpec{PipelineRunRef: conveyorv1.PipelineRunReference{Name: "shop-1"}, Stage: "staging", Decision: conveyorv1.DecisionApprove}}
	}
	for _, tc := range []struct {
		name        string
		cached, api *conveyorv1.PipelineRun
		wantUID     string
		wantAPIGets int
	}{
		{"the cache shows the stage waiting", run("cached", "staging", conveyorv1.StageWaiting), run("stored", "staging", conveyorv1.StageWaiting), "cached", 0},
		{"the cache has not seen the wait", run("cached", "staging", conveyorv1.StagePending), run("stored", "staging", conveyorv1.StageWaiting), "stored", 1},
		{"the cache does not have the run", nil, run("stored", "staging", conveyorv1.StageWaiting), "stored", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cache := fake.NewClientBuilder().WithScheme(scheme)
			if tc.cached != nil {
				cache = cache.WithObjects(tc.cached)
			}
			gets := 0
			api := fake.NewClientBuilder().WithScheme(scheme).WithObjects(tc.api).WithInterceptorFuncs(interceptor.Funcs{
				Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
					gets++
					return c.Get(ctx, key, obj, opts...)
				},
			}).Build()
			a := approval()
			if err := (recordApprover{cache: cache.Build(), api: api}).Default(ctx, a); err != nil {
				t.Fatal(err)
			}
			if a.Spec.Run == nil || a.Spec.Run.UID != tc.wantUID || gets != tc.wantAPIGets {
				t.Fatalf("recorded %+v with %d GETs from the API server, want the run with UID %q and %d", a.Spec.Run, gets, tc.wantUID, tc.wantAPIGets)
			}
			if a.Spec.Run.ValuesDigest == "" {
				t.Fatal("no values recorded")
			}
		})
	}

	// A cache behind a run deleted and created again: the record is the
	// old run's, and the validator, reading the API server, refuses it.
	old, again := run("old", "staging", conveyorv1.StageWaiting), run("again", "staging", conveyorv1.StageWaiting)
	cache := fake.NewClientBuilder().WithScheme(scheme).WithObjects(old).Build()
	api := fake.NewClientBuilder().WithScheme(scheme).WithObjects(again).Build()
	a := approval()
	if err := (recordApprover{cache: cache, api: api}).Default(ctx, a); err != nil {
		t.Fatal(err)
	}
	_, err := approvalValidator{reader: namedFromAPI{api: api, cache: cache}}.ValidateCreate(ctx, a)
	if err == nil || !strings.Contains(err.Error(), "spec.run must be PipelineRun shop-1 as it is (uid again)") {
		t.Fatalf("the validator answered %v, want a refusal of the old run's record", err)
	}
}
