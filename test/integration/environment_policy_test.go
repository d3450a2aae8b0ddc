package integration_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// unlabelledNamespace is a namespace the shipped production Environment does
// not select: a team that was never let into production.
func unlabelledNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "team-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// editEnvironment changes a shipped Environment for one test, and puts it
// back when the test ends.
func editEnvironment(t *testing.T, name string, change func(*conveyorv1.EnvironmentSpec)) {
	t.Helper()
	env := &conveyorv1.Environment{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, env); err != nil {
		t.Fatal(err)
	}
	was := env.Spec.DeepCopy()
	update := func(change func(*conveyorv1.EnvironmentSpec)) error {
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			e := &conveyorv1.Environment{}
			if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, e); err != nil {
				return err
			}
			change(&e.Spec)
			return k8s.Update(context.Background(), e)
		})
	}
	if err := update(change); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := update(func(s *conveyorv1.EnvironmentSpec) { *s = *was }); err != nil {
			t.Errorf("restoring Environment %s: %v", name, err)
		}
	})
}

// A Pipeline that breaks an Environment's policy is refused at admission,
// whoever applies it (a GitOps tool runs as a cluster admin), with the
// Environment and the rule named.
func TestPipelineRefusedByEnvironment(t *testing.T) {
	startManager(t)
	labelled := newNamespace(t)
	stage := func(p *conveyorv1.Pipeline, name string) *conveyorv1.Stage {
		for i := range p.Spec.Stages {
			if p.Spec.Stages[i].Name == name {
				return &p.Spec.Stages[i]
			}
		}
		t.Fatalf("no stage %s", name)
		return nil
	}
	cases := []struct {
		name, ns string
		change   func(*conveyorv1.Pipeline)
		want     string
	}{
		{"production from a namespace not let in", unlabelledNamespace(t), nil,
			"Environment production (namespace production), rule pipelines: Pipeline"},
		{"production by itself", labelled, func(p *conveyorv1.Pipeline) {
			stage(p, "production").When, stage(p, "production").TriggerGroups = conveyorv1.WhenAuto, nil
		}, "rule allowAuto"},
		{"developers deploy to production", labelled, func(p *conveyorv1.Pipeline) {
			stage(p, "production").TriggerGroups = []string{"release-engineers", "developers"}
		}, "rule triggerGroups: the stage's triggerGroups may narrow the Environment's (release-engineers, devops), never widen them: developers may not deploy here"},
		{"the approval gate forgotten", labelled, func(p *conveyorv1.Pipeline) {
			p.Spec.Stages = append(p.Spec.Stages[:4], p.Spec.Stages[5])
		}, "rule approval: a deploy here needs an approval stage before it"},
		{"a ServiceAccount of its own", labelled, func(p *conveyorv1.Pipeline) {
			stage(p, "staging").Jobs[0].ServiceAccountName = "cluster-deployer"
		}, "Environment staging (namespace staging), rule serviceAccounts"},
		{"root in pre-production", labelled, func(p *conveyorv1.Pipeline) {
			stage(p, "pre-production").Jobs[0].SecurityContext = &corev1.PodSecurityContext{RunAsUser: new(int64)}
		}, "rule securityContext: job deploy: runAsUser 0 (root)"},
		{"a namespace no Environment names", labelled, func(p *conveyorv1.Pipeline) {
			stage(p, "staging").Environment = "kube-system"
		}, "no Environment names namespace kube-system"},
		{"CONVEYOR_ variables overridden", labelled, func(p *conveyorv1.Pipeline) {
			stage(p, "staging").Jobs[0].Env = []corev1.EnvVar{{Name: "CONVEYOR_ENVIRONMENT", Value: "staging"}}
		}, "env may not set CONVEYOR_* variables"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := seedPipelineFrom(t)
			p.Namespace = tc.ns
			if tc.change != nil {
				tc.change(p)
			}
			expectRefused(t, k8s.Create(context.Background(), p), tc.want)
		})
	}
	// The seed's Pipeline keeps every rule in a namespace let into production.
	seedPipeline(t, labelled)

	// No persona may loosen an Environment, or make one for a namespace of
	// its own: they are the cluster admins'.
	for who := range personas {
		if who == "ada" {
			continue // a cluster admin
		}
		env := &conveyorv1.Environment{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: "production"}, env); err != nil {
			t.Fatal(err)
		}
		env.Spec.AllowAuto = true
		if err := as(who).Update(context.Background(), env); !apierrors.IsForbidden(err) {
			t.Errorf("%s updating Environment production: want Forbidden, got %v", who, err)
		}
		mine := openEnvironmentFor(labelled)
		if err := as(who).Create(context.Background(), mine); !apierrors.IsForbidden(err) {
			t.Errorf("%s creating an Environment: want Forbidden, got %v", who, err)
		}
		if err := as(who).Get(context.Background(), client.ObjectKey{Name: "production"}, &conveyorv1.Environment{}); err != nil {
			t.Errorf("%s reading Environment production: %v", who, err)
		}
		if err := as(who).Delete(context.Background(), env); !apierrors.IsForbidden(err) {
			t.Errorf("%s deleting Environment production: want Forbidden, got %v", who, err)
		}
		if err := as(who).Status().Update(context.Background(), env); !apierrors.IsForbidden(err) {
			t.Errorf("%s writing Environment production's status (its lock and deploy record): want Forbidden, got %v", who, err)
		}
		// Taking the lock for a run of their own, or freeing it, with a patch.
		for _, holder := range []string{`{"holder":"` + labelled + `/mine","holderStage":"production","holderUID":"mine"}`, `{"holder":null,"holderUID":null}`} {
			patch := client.RawPatch(types.MergePatchType, []byte(`{"status":`+holder+`}`))
			if err := as(who).Status().Patch(context.Background(), env.DeepCopy(), patch); !apierrors.IsForbidden(err) {
				t.Errorf("%s patching Environment production's lock (%s): want Forbidden, got %v", who, holder, err)
			}
		}
	}
}

// A policy edited while a run is in flight is checked again when the deploy
// is ready: the stage is Blocked with a condition naming the rule, and starts
// once the policy allows it again.
func TestPolicyEditedMidRunBlocks(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	seedPipeline(t, ns)
	run := newRun(t, ns, featureLogin)
	passStage(t, run, "build", "compile")
	passStage(t, run, "testing", "unit", "lint")
	waitRun(t, run, conveyorv1.RunWaiting, "staging")
	decide(t, run, "staging", conveyorv1.DecisionApprove)
	passStage(t, run, "staging", "deploy")
	waitRun(t, run, conveyorv1.RunWaiting, "pre-production")
	// The platform's admins now want an approval before pre-production,
	// which the run's Pipeline does not have.
	editEnvironment(t, "pre-production", func(s *conveyorv1.EnvironmentSpec) {
		s.Approval = &conveyorv1.EnvironmentApproval{Groups: []string{"release-engineers"}, Required: 1}
	})
	decide(t, run, "pre-production", conveyorv1.DecisionApprove)
	NewWithT(t).Eventually(func(g Gomega) {
		got := getRun(t, run)
		g.Expect(stageOf(got, "pre-production").Phase).To(Equal(conveyorv1.StageBlocked))
		c := meta.FindStatusCondition(got.Status.Conditions, conveyorv1.ConditionReady)
		g.Expect(c).NotTo(BeNil())
		g.Expect(c.Reason).To(Equal(conveyorv1.ReasonEnvironmentPolicy))
		g.Expect(c.Message).To(ContainSubstring("Environment pre-production (namespace pre-production), rule approval"))
		g.Expect(runJobs(g, run, "pre-production")).To(BeEmpty())
	}).WithTimeout(10 * time.Second).Should(Succeed())
	expectEvent(t, ns, run.Name, conveyorv1.ReasonEnvironmentPolicy)
	t.Log("pre-production is blocked by the edited policy; restoring it")
	editEnvironment(t, "pre-production", func(s *conveyorv1.EnvironmentSpec) { s.Approval = nil })
	passStage(t, run, "pre-production", "deploy")
	waitRun(t, run, conveyorv1.RunSucceeded, "pre-production")
}

// A commit goes to production only after it was deployed to pre-production,
// by this run or an earlier one: a Pipeline that goes straight to production
// is blocked until the commit has been there, and the Environments record
// who deployed what.
func TestPromotionOrderAcrossRuns(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	commit := fmt.Sprintf("c0ffee%08x", time.Now().UnixNano()&0xffffffff)
	seedPipelineWith(t, ns, func(p *conveyorv1.Pipeline) {
		// A hotfix path: build, approve, production.
		p.Spec.Stages = []conveyorv1.Stage{p.Spec.Stages[0], p.Spec.Stages[4], p.Spec.Stages[5]}
	})
	tagRef := conveyorv1.GitRef{Tag: "v9.9.9", Commit: commit}
	hotfix := newRun(t, ns, tagRef)
	passStage(t, hotfix, "build", "compile")
	waitRun(t, hotfix, conveyorv1.RunWaiting, "approve")
	decide(t, hotfix, "approve", conveyorv1.DecisionApprove)
	waitRun(t, hotfix, conveyorv1.RunWaiting, "production")
	decide(t, hotfix, "production", conveyorv1.DecisionApprove)
	NewWithT(t).Eventually(func(g Gomega) {
		got := getRun(t, hotfix)
		ss := stageOf(got, "production")
		g.Expect(ss.Phase).To(Equal(conveyorv1.StageBlocked))
		g.Expect(ss.Message).To(ContainSubstring("rule requires: commit " + commit + " has not been deployed to Environment pre-production"))
	}).WithTimeout(10 * time.Second).Should(Succeed())
	t.Log("production is blocked: the commit never passed pre-production")

	// The seed's Pipeline, in another namespace, takes the commit through
	// staging and pre-production: the record lets the hotfix go.
	other := newNamespace(t)
	seedPipeline(t, other)
	branchRun := newRun(t, other, conveyorv1.GitRef{Branch: "feature_hotfix", Commit: commit})
	passStage(t, branchRun, "build", "compile")
	passStage(t, branchRun, "testing", "unit", "lint")
	for _, stage := range []string{"staging", "pre-production"} {
		waitRun(t, branchRun, conveyorv1.RunWaiting, stage)
		decide(t, branchRun, stage, conveyorv1.DecisionApprove)
		passStage(t, branchRun, stage, "deploy")
	}
	waitRun(t, branchRun, conveyorv1.RunSucceeded, "pre-production")
	env := &conveyorv1.Environment{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: "pre-production"}, env); err != nil {
		t.Fatal(err)
	}
	if d := env.Status.LastDeploy; d == nil || d.Commit != commit || d.By != "tess" || d.Run != other+"/"+branchRun.Name {
		t.Fatalf("pre-production's last deploy: %+v", d)
	}
	deploy := waitJob(t, hotfix, "production", "deploy")
	holder := func(g Gomega) string {
		prod := &conveyorv1.Environment{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKey{Name: "production"}, prod)).To(Succeed())
		return prod.Status.Holder
	}
	NewWithT(t).Eventually(holder).WithTimeout(10 * time.Second).Should(Equal(ns + "/" + hotfix.Name))
	finishJob(t, deploy, "", "")
	waitRun(t, hotfix, conveyorv1.RunSucceeded, "production")
	NewWithT(t).Eventually(func(g Gomega) {
		prod := &conveyorv1.Environment{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKey{Name: "production"}, prod)).To(Succeed())
		g.Expect(prod.Status.LastDeploy).NotTo(BeNil())
		g.Expect(prod.Status.LastDeploy.Release).To(Equal("v9.9.9"))
		g.Expect(prod.Status.LastDeploy.By).To(Equal("omar"))
		g.Expect(prod.Status.Holder).To(BeEmpty())
	}).WithTimeout(10 * time.Second).Should(Succeed())
	// The record cleared the holder; nothing writes it back.
	NewWithT(t).Consistently(holder).WithTimeout(2 * time.Second).Should(BeEmpty())
}

// A deploy ready during a freeze window waits as Frozen, with the window and
// its end, and starts when the window closes; a member of the Environment's
// overrideGroups starts one at once with a comment, anyone else is refused.
func TestFreezeWindow(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	seedPipeline(t, ns)
	end := time.Now().Add(25 * time.Second).Truncate(time.Second)
	editEnvironment(t, "staging", func(s *conveyorv1.EnvironmentSpec) {
		s.FreezeWindows = []conveyorv1.FreezeWindow{{Name: "demo-day", Reason: "customer demo",
			Start: &metav1.Time{Time: time.Now().Add(-time.Minute)}, End: &metav1.Time{Time: end}}}
	})
	NewWithT(t).Eventually(func(g Gomega) {
		env := &conveyorv1.Environment{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKey{Name: "staging"}, env)).To(Succeed())
		g.Expect(env.Status.Frozen).To(Equal("demo-day"))
	}).WithTimeout(10 * time.Second).Should(Succeed())

	toStaging := func() *conveyorv1.PipelineRun {
		run := newRun(t, ns, featureLogin)
		passStage(t, run, "build", "compile")
		passStage(t, run, "testing", "unit", "lint")
		waitRun(t, run, conveyorv1.RunWaiting, "staging")
		decide(t, run, "staging", conveyorv1.DecisionApprove)
		got := waitRun(t, run, conveyorv1.RunWaiting, "staging")
		NewWithT(t).Eventually(func(g Gomega) {
			got = getRun(t, run)
			g.Expect(stageOf(got, "staging").Phase).To(Equal(conveyorv1.StageFrozen))
		}).WithTimeout(10 * time.Second).Should(Succeed())
		if msg := stageOf(got, "staging").Message; !strings.Contains(msg, "freeze window demo-day until "+end.UTC().Format(time.RFC3339)+" (customer demo)") {
			t.Fatalf("frozen message: %s", msg)
		}
		return run
	}
	overridden, waiting := toStaging(), toStaging()
	expectEvent(t, ns, overridden.Name, conveyorv1.ReasonFrozen)
	// The gauge counts from the manager's cache, which may lag the API
	// server's answer the test waited on.
	NewWithT(t).Eventually(func() float64 {
		return sample(t, "conveyor_environment_frozen_deploys", map[string]string{"environment": "staging"})
	}).WithTimeout(10*time.Second).Should(BeNumerically(">=", 2), "conveyor_environment_frozen_deploys{staging}")

	override := func(who string, run *conveyorv1.PipelineRun, comment string) error {
		a := &conveyorv1.Approval{
			ObjectMeta: metav1.ObjectMeta{GenerateName: run.Name + "-override-", Namespace: ns},
			Spec: conveyorv1.ApprovalSpec{PipelineRunRef: conveyorv1.PipelineRunReference{Name: run.Name}, Stage: "staging",
				Decision: conveyorv1.DecisionApprove, OverrideFreeze: true, Comment: comment},
		}
		return as(who).Create(context.Background(), a)
	}
	expectRefused(t, override("dana", overridden, "please"), "may not override a freeze window for stage staging: only members of Environment staging's overrideGroups (devops) may")
	expectRefused(t, override("omar", overridden, ""), "needs a comment saying why")
	if err := override("omar", overridden, "hotfix for the checkout outage"); err != nil {
		t.Fatal(err)
	}
	NewWithT(t).Eventually(func(g Gomega) {
		got := getRun(t, overridden)
		g.Expect(stageOf(got, "staging").Phase).NotTo(Equal(conveyorv1.StageFrozen), describe(got)+": "+stageOf(got, "staging").Message)
	}).WithTimeout(10 * time.Second).Should(Succeed())
	passStage(t, overridden, "staging", "deploy")
	got := waitRun(t, overridden, conveyorv1.RunWaiting, "pre-production")
	if ds := stageOf(got, "staging").Decisions; len(ds) != 2 || ds[1].Approver != "omar" || ds[1].Comment != "hotfix for the checkout outage" {
		t.Fatalf("the override is recorded in the stage's decisions: %+v", ds)
	}
	t.Log("omar's override deployed during the freeze; the other run waits for its end")

	if s := stageOf(getRun(t, waiting), "staging"); s.Phase != conveyorv1.StageFrozen {
		t.Fatalf("the other run's staging: %s (%s)", s.Phase, s.Message)
	}
	job := waitJob(t, waiting, "staging", "deploy")
	if job.CreationTimestamp.Time.Before(end) {
		t.Fatalf("staging's Job was created at %s, before the window closed at %s", job.CreationTimestamp, end)
	}
	if sc := job.Spec.Template.Spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Fatalf("a job in an environment runs with the restricted profile's settings: %+v", sc)
	}
}

// expectEvent waits for an Event with the reason about the run.
func expectEvent(t *testing.T, ns, run, reason string) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		events := &eventsv1.EventList{}
		g.Expect(k8s.List(context.Background(), events, client.InNamespace(ns))).To(Succeed())
		found := false
		for _, e := range events.Items {
			found = found || (e.Reason == reason && e.Regarding.Name == run)
		}
		g.Expect(found).To(BeTrue(), "a %s Event on run %s", reason, run)
	}).WithTimeout(10 * time.Second).Should(Succeed())
}

// An Environment whose freeze window does not read, or that names a
// namespace another Environment names, is refused at admission.
func TestEnvironmentRefusedAtAdmission(t *testing.T) {
	startManager(t)
	bad := openEnvironmentFor("e-" + newNamespace(t))
	bad.Spec.FreezeWindows = []conveyorv1.FreezeWindow{{Name: "typo", Schedule: "0 18 * * fri-", Duration: &metav1.Duration{Duration: time.Hour}}}
	expectRefused(t, k8s.Create(context.Background(), bad), "spec.freezeWindows[0]: Invalid value: \"typo\": freeze window typo: schedule")
	bad.Spec.FreezeWindows[0].Schedule, bad.Spec.FreezeWindows[0].TimeZone = "0 18 * * 5", "Mars/Olympus"
	expectRefused(t, k8s.Create(context.Background(), bad), "unknown time zone \"Mars/Olympus\"")
	twin := openEnvironmentFor("production")
	twin.Name = "production-twin"
	expectRefused(t, k8s.Create(context.Background(), twin), "production (Environment production names it already)")
}
