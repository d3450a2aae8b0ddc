package admission

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

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
