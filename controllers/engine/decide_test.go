package engine

import (
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// seed is the seed's pipeline: build, testing, staging (manual), pre-production
// (manual), approve (tags, gate), production (tags, manual).
func seed() *conveyorv1.PipelineSpec {
	job := func(n string) []conveyorv1.JobSpec { return []conveyorv1.JobSpec{{Name: n, Image: "busybox"}} }
	return &conveyorv1.PipelineSpec{
		Refs: conveyorv1.PipelineRefs{Branches: []string{"feature_*", "infra_*"}, Tags: []string{"v*"}},
		Stages: []conveyorv1.Stage{
			{Name: "build", Jobs: job("compile")},
			{Name: "testing", Jobs: append(job("unit"), conveyorv1.JobSpec{Name: "lint", Image: "busybox"})},
			{Name: "staging", When: conveyorv1.WhenManual, Environment: "staging", TriggerGroups: []string{"developers"}, Jobs: job("deploy")},
			{Name: "pre-production", When: conveyorv1.WhenManual, Environment: "pre-production", TriggerGroups: []string{"testers"}, Jobs: job("deploy")},
			{Name: "approve", Refs: conveyorv1.RefsTags, Approval: &conveyorv1.ApprovalGate{Groups: []string{"release-engineers"}, Required: 1}},
			{Name: "production", Refs: conveyorv1.RefsTags, When: conveyorv1.WhenManual, Environment: "production", TriggerGroups: []string{"release-engineers"}, Jobs: job("deploy")},
		},
	}
}

func newRun(git conveyorv1.GitRef) *conveyorv1.PipelineRun {
	return &conveyorv1.PipelineRun{
		ObjectMeta: metav1.ObjectMeta{Name: "shop-1", Namespace: "shop-ci", UID: "uid-1"},
		Spec:       conveyorv1.PipelineRunSpec{PipelineRef: conveyorv1.PipelineReference{Name: "shop"}, Git: git},
		Status:     conveyorv1.PipelineRunStatus{PipelineSpec: seed()},
	}
}

var (
	t0     = metav1.NewTime(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
	branch = conveyorv1.GitRef{Branch: "feature_login", Commit: "abc123"}
	tag    = conveyorv1.GitRef{Tag: "v1.4.0", Commit: "abc123"}
)

func done(stageJobs ...string) map[string]JobObservation {
	m := map[string]JobObservation{}
	for _, k := range stageJobs {
		m[k] = JobObservation{Phase: conveyorv1.JobSucceeded}
	}
	return m
}

func merge(ms ...map[string]JobObservation) map[string]JobObservation {
	out := map[string]JobObservation{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func approve(name, stage, approver string) ApprovalFact {
	return ApprovalFact{Name: name, Stage: stage, Decision: conveyorv1.DecisionApprove, Approver: approver, RunUID: "uid-1", Created: t0}
}

// TestDecide drives the decision with the facts a reconcile would observe and
// checks what runs next.
func TestDecide(t *testing.T) {
	upToPreProd := done("build/compile", "testing/unit", "testing/lint", "staging/deploy", "pre-production/deploy")
	tests := []struct {
		name       string
		git        conveyorv1.GitRef
		jobs       map[string]JobObservation
		approvals  []ApprovalFact
		prev       []conveyorv1.StageStatus
		wantPhase  conveyorv1.RunPhase
		wantStage  string
		wantReason string
		wantCreate []string // stage/job
		wantStages []string // stage names in the run
	}{{
		name: "new branch run starts build", git: branch,
		wantPhase: conveyorv1.RunRunning, wantStage: "build", wantReason: conveyorv1.ReasonProgressing,
		wantCreate: []string{"build/compile"},
		wantStages: []string{"build", "testing", "staging", "pre-production"},
	}, {
		name: "new tag run has all six stages", git: tag,
		wantPhase: conveyorv1.RunRunning, wantStage: "build", wantReason: conveyorv1.ReasonProgressing,
		wantCreate: []string{"build/compile"},
		wantStages: []string{"build", "testing", "staging", "pre-production", "approve", "production"},
	}, {
		name: "build done starts both testing jobs in parallel", git: branch, jobs: done("build/compile"),
		wantPhase: conveyorv1.RunRunning, wantStage: "testing", wantReason: conveyorv1.ReasonProgressing,
		wantCreate: []string{"testing/unit", "testing/lint"},
	}, {
		name: "one testing job still running keeps the stage running", git: branch,
		jobs:      merge(done("build/compile", "testing/unit"), map[string]JobObservation{"testing/lint": {Phase: conveyorv1.JobRunning}}),
		wantPhase: conveyorv1.RunRunning, wantStage: "testing", wantReason: conveyorv1.ReasonProgressing,
	}, {
		name: "tests passed: branch run waits for a staging trigger", git: branch,
		jobs:      done("build/compile", "testing/unit", "testing/lint"),
		wantPhase: conveyorv1.RunWaiting, wantStage: "staging", wantReason: conveyorv1.ReasonWaitingForTrigger,
	}, {
		name: "staging trigger starts the staging job", git: branch,
		jobs:      done("build/compile", "testing/unit", "testing/lint"),
		approvals: []ApprovalFact{approve("a1", "staging", "dev")},
		wantPhase: conveyorv1.RunRunning, wantStage: "staging", wantReason: conveyorv1.ReasonProgressing,
		wantCreate: []string{"staging/deploy"},
	}, {
		name: "a staging trigger before tests passed starts nothing", git: branch,
		jobs:      merge(done("build/compile"), map[string]JobObservation{"testing/unit": {Phase: conveyorv1.JobRunning}, "testing/lint": {Phase: conveyorv1.JobRunning}}),
		approvals: []ApprovalFact{approve("a1", "staging", "dev")},
		wantPhase: conveyorv1.RunRunning, wantStage: "testing", wantReason: conveyorv1.ReasonProgressing,
	}, {
		name: "a Reject does not trigger a manual stage", git: branch,
		jobs:      done("build/compile", "testing/unit", "testing/lint"),
		approvals: []ApprovalFact{{Name: "r1", Stage: "staging", Decision: conveyorv1.DecisionReject, Created: t0}},
		wantPhase: conveyorv1.RunWaiting, wantStage: "staging", wantReason: conveyorv1.ReasonWaitingForTrigger,
	}, {
		name: "failed testing job fails the run and starts nothing more", git: branch,
		jobs: merge(done("build/compile", "testing/lint"), map[string]JobObservation{
			"testing/unit": {Phase: conveyorv1.JobFailed, Reason: "BackoffLimitExceeded", Message: "Job has reached the specified backoff limit"}}),
		approvals: []ApprovalFact{approve("a1", "staging", "dev")},
		wantPhase: conveyorv1.RunFailed, wantStage: "testing", wantReason: conveyorv1.ReasonFailed,
	}, {
		name: "branch run finished its automatic and manual stages", git: branch,
		jobs:      done("build/compile", "testing/unit", "testing/lint", "staging/deploy", "pre-production/deploy"),
		wantPhase: conveyorv1.RunSucceeded, wantStage: "pre-production", wantReason: conveyorv1.ReasonSucceeded,
	}, {
		name: "tag run after pre-production waits at the approve gate", git: tag, jobs: upToPreProd,
		approvals: []ApprovalFact{approve("p1", "production", "rel")},
		wantPhase: conveyorv1.RunWaiting, wantStage: "approve", wantReason: conveyorv1.ReasonWaitingForApproval,
	}, {
		name: "approve passes the gate; production waits for its trigger", git: tag, jobs: upToPreProd,
		approvals: []ApprovalFact{approve("g1", "approve", "rel")},
		wantPhase: conveyorv1.RunWaiting, wantStage: "production", wantReason: conveyorv1.ReasonWaitingForTrigger,
	}, {
		name: "approve and production trigger start production", git: tag, jobs: upToPreProd,
		approvals: []ApprovalFact{approve("g1", "approve", "rel"), approve("p1", "production", "ops")},
		wantPhase: conveyorv1.RunRunning, wantStage: "production", wantReason: conveyorv1.ReasonProgressing,
		wantCreate: []string{"production/deploy"},
	}, {
		name: "reject at the gate ends the run and production never starts", git: tag, jobs: upToPreProd,
		approvals: []ApprovalFact{{Name: "g1", Stage: "approve", Decision: conveyorv1.DecisionReject, Approver: "rel", RunUID: "uid-1", Created: t0}, approve("p1", "production", "ops")},
		wantPhase: conveyorv1.RunRejected, wantStage: "approve", wantReason: conveyorv1.ReasonRejected,
	}, {
		name: "a passed gate stays passed when its Approval is deleted", git: tag, jobs: upToPreProd,
		prev:      []conveyorv1.StageStatus{{Name: "approve", Phase: conveyorv1.StageSucceeded, Decisions: []conveyorv1.Decision{{Approval: "g1", Decision: conveyorv1.DecisionApprove}}}},
		wantPhase: conveyorv1.RunWaiting, wantStage: "production", wantReason: conveyorv1.ReasonWaitingForTrigger,
	}, {
		name: "a succeeded job whose Job was deleted is not run again", git: branch,
		jobs: done("build/compile"),
		prev: []conveyorv1.StageStatus{{Name: "testing", Phase: conveyorv1.StageRunning, Jobs: []conveyorv1.JobStatus{
			{Name: "unit", Phase: conveyorv1.JobSucceeded}, {Name: "lint", Phase: conveyorv1.JobRunning}}}},
		wantPhase: conveyorv1.RunRunning, wantStage: "testing", wantReason: conveyorv1.ReasonProgressing,
		wantCreate: []string{"testing/lint"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run := newRun(tc.git)
			run.Status.Stages = tc.prev
			p := decide(Facts{Run: run, Jobs: tc.jobs, Approvals: tc.approvals, Now: t0})
			if p.Status.Phase != tc.wantPhase || p.Status.CurrentStage != tc.wantStage || p.Reason != tc.wantReason {
				t.Fatalf("got phase %s stage %s reason %s (%s); want %s %s %s", p.Status.Phase, p.Status.CurrentStage, p.Reason, p.Message, tc.wantPhase, tc.wantStage, tc.wantReason)
			}
			var got []string
			for _, c := range p.Create {
				got = append(got, c.Stage.Name+"/"+c.Job.Name)
			}
			if strings.Join(got, ",") != strings.Join(tc.wantCreate, ",") {
				t.Fatalf("creates %v, want %v", got, tc.wantCreate)
			}
			if tc.wantStages != nil {
				var names []string
				for _, s := range p.Status.Stages {
					names = append(names, s.Name)
				}
				if strings.Join(names, ",") != strings.Join(tc.wantStages, ",") {
					t.Fatalf("stages %v, want %v", names, tc.wantStages)
				}
			}
		})
	}
}

// TestDecideGateCountsDistinctApprovers: two Approvals by one person count once.
func TestDecideGateCountsDistinctApprovers(t *testing.T) {
	run := newRun(tag)
	run.Status.PipelineSpec.Stages[4].Approval.Required = 2
	jobs := done("build/compile", "testing/unit", "testing/lint", "staging/deploy", "pre-production/deploy")
	same := []ApprovalFact{approve("g1", "approve", "rel"), approve("g2", "approve", "rel")}
	if p := decide(Facts{Run: run, Jobs: jobs, Approvals: same, Now: t0}); p.Status.CurrentStage != "approve" || p.Status.Phase != conveyorv1.RunWaiting {
		t.Fatalf("one approver twice passed a gate that needs two: %s %s", p.Status.CurrentStage, p.Status.Phase)
	}
	two := []ApprovalFact{approve("g1", "approve", "rel"), approve("g2", "approve", "rel2")}
	if p := decide(Facts{Run: run, Jobs: jobs, Approvals: two, Now: t0}); p.Status.CurrentStage != "production" {
		t.Fatalf("two approvers did not pass the gate: %s %s", p.Status.CurrentStage, p.Message)
	}
}

// TestDecideGateIgnoresRunRequester: the run's requester cannot pass its gate
// unless the Pipeline allows it.
func TestDecideGateIgnoresRunRequester(t *testing.T) {
	run := newRun(tag)
	run.Spec.Requester = &conveyorv1.UserInfo{Username: "rita"}
	jobs := done("build/compile", "testing/unit", "testing/lint", "staging/deploy", "pre-production/deploy")
	self := []ApprovalFact{approve("g1", "approve", "rita")}
	if p := decide(Facts{Run: run, Jobs: jobs, Approvals: self, Now: t0}); p.Status.CurrentStage != "approve" {
		t.Fatalf("the run's requester passed its own gate: %s", p.Message)
	}
	run.Status.PipelineSpec.Stages[4].Approval.AllowRunRequester = true
	if p := decide(Facts{Run: run, Jobs: jobs, Approvals: self, Now: t0}); p.Status.CurrentStage != "production" {
		t.Fatalf("allowRunRequester did not let the requester approve: %s", p.Message)
	}
}

// TestDecideFailedJobReason: the Job's reason reaches the stage's and run's message.
func TestDecideFailedJobReason(t *testing.T) {
	run := newRun(branch)
	jobs := map[string]JobObservation{"build/compile": {Phase: conveyorv1.JobFailed, Reason: "DeadlineExceeded", Message: "Job was active longer than specified deadline"}}
	p := decide(Facts{Run: run, Jobs: jobs, Now: t0})
	if !strings.Contains(p.Message, "DeadlineExceeded") || !strings.Contains(p.Status.Stages[0].Message, "longer than specified deadline") {
		t.Fatalf("reason missing: run %q stage %q", p.Message, p.Status.Stages[0].Message)
	}
	if p.Status.CompletionTime == nil || p.Status.Stages[1].Phase != conveyorv1.StagePending {
		t.Fatalf("failed run: completion %v, next stage %s", p.Status.CompletionTime, p.Status.Stages[1].Phase)
	}
}

func TestRefAllowed(t *testing.T) {
	spec := seed()
	for _, tc := range []struct {
		git conveyorv1.GitRef
		ok  bool
	}{
		{conveyorv1.GitRef{Branch: "feature_login"}, true},
		{conveyorv1.GitRef{Branch: "infra_dns"}, true},
		{conveyorv1.GitRef{Branch: "hotfix_x"}, false},
		{conveyorv1.GitRef{Branch: "main"}, false},
		{conveyorv1.GitRef{Tag: "v1.4.0"}, true},
		{conveyorv1.GitRef{Tag: "release-1"}, false},
	} {
		err := RefAllowed(spec, tc.git)
		if (err == nil) != tc.ok {
			t.Errorf("%+v: allowed=%v, want %v (%v)", tc.git, err == nil, tc.ok, err)
		}
		if err != nil && !strings.Contains(err.Error(), "matching") {
			t.Errorf("%+v: message does not name the patterns: %v", tc.git, err)
		}
	}
	if err := ValidatePipeline(&conveyorv1.PipelineSpec{Refs: conveyorv1.PipelineRefs{Branches: []string{"feature_[x"}}}); err == nil {
		t.Error("a bad glob was accepted")
	}
}

func TestJobName(t *testing.T) {
	if got := JobName("ci", "shop-x7k2p", "build", "compile", "ci"); got != "shop-x7k2p-build-compile" {
		t.Errorf("short name = %q", got)
	}
	long := JobName("ci", strings.Repeat("r", 60), "pre-production", "deploy", "ci")
	if len(long) > 63 || long != JobName("ci", strings.Repeat("r", 60), "pre-production", "deploy", "ci") {
		t.Errorf("long name %q (%d chars) is not short and stable", long, len(long))
	}
	a := JobName("team-a", "shop-1", "staging", "deploy", "staging")
	b := JobName("team-b", "shop-1", "staging", "deploy", "staging")
	if a == b || len(a) > 63 || !strings.HasPrefix(a, "shop-1-staging-deploy-") {
		t.Errorf("runs of the same name in two namespaces share the environment Job name: %q %q", a, b)
	}
}

// decide decides with every environment's lock held by the run, as for a run
// alone in its environments.
func decide(f Facts) Plan {
	if f.Environments == nil {
		f.Environments = map[string]EnvironmentFact{"staging": {Held: true}, "pre-production": {Held: true}, "production": {Held: true}}
	}
	return Decide(observed(f))
}

// observed names the Jobs observed as Conveyor names the Jobs it makes for
// the run (tests give only their phases), unless a test names them.
func observed(f Facts) Facts {
	if f.Policy.Environments == nil {
		f.Policy = openPolicy()
	}
	spec := f.Run.Status.PipelineSpec
	if spec == nil && f.Pipeline != nil {
		spec = &f.Pipeline.Spec
	}
	if spec == nil || len(f.Jobs) == 0 {
		return f
	}
	jobs := map[string]JobObservation{}
	for k, v := range f.Jobs {
		jobs[k] = v
	}
	// The Jobs a test gives are Conveyor's: their UIDs are recorded in the
	// run's status, as when they were created.
	run := f.Run.DeepCopy()
	for _, stage := range RunStages(spec, f.Run.Spec.Git) {
		ns := StageNamespace(f.Run.Namespace, &stage)
		for _, j := range stage.Jobs {
			if obs, ok := jobs[JobKey(stage.Name, j.Name)]; ok && obs.Name == "" {
				obs.Name, obs.Namespace = JobName(f.Run.Namespace, f.Run.Name, stage.Name, j.Name, ns), ns
				obs.UID = types.UID("uid-" + obs.Name)
				jobs[JobKey(stage.Name, j.Name)] = obs
				if run.Status.PipelineSpec != nil {
					record(run, stage.Name, conveyorv1.JobStatus{Name: j.Name, UID: string(obs.UID)})
				}
			}
		}
	}
	f.Run, f.Jobs = run, jobs
	return f
}

// record notes a job's status in the run's status, adding its stage if need be.
func record(run *conveyorv1.PipelineRun, stage string, js conveyorv1.JobStatus) {
	for i := range run.Status.Stages {
		ss := &run.Status.Stages[i]
		if ss.Name != stage {
			continue
		}
		for k := range ss.Jobs {
			if ss.Jobs[k].Name == js.Name {
				if ss.Jobs[k].UID == "" {
					ss.Jobs[k].UID = js.UID
				}
				return
			}
		}
		ss.Jobs = append(ss.Jobs, js)
		return
	}
	run.Status.Stages = append(run.Status.Stages, conveyorv1.StageStatus{Name: stage, Jobs: []conveyorv1.JobStatus{js}})
}

// TestDecideEnvironmentQueue: a stage ready for its environment asks for the
// lock, starts only while holding it, shows who holds it, ends when superseded
// and when cancelled while queued.
func TestDecideEnvironmentQueue(t *testing.T) {
	tested := done("build/compile", "testing/unit", "testing/lint")
	trigger := []ApprovalFact{approve("a1", "staging", "dev")}
	stage := func(p Plan) conveyorv1.StageStatus { return p.Status.Stages[2] }

	run := newRun(branch)
	p := Decide(observed(Facts{Run: run, Jobs: tested, Approvals: trigger, Now: t0}))
	if p.Status.Phase != conveyorv1.RunQueued || p.Reason != conveyorv1.ReasonQueued || len(p.Create) != 0 ||
		len(p.Acquire) != 1 || p.Acquire[0] != (LockRequest{Stage: "staging", Environment: "staging"}) {
		t.Fatalf("unknown lock: phase %s reason %s creates %d acquire %v", p.Status.Phase, p.Reason, len(p.Create), p.Acquire)
	}
	if len(stage(p).Decisions) != 1 {
		t.Fatalf("the trigger is not kept while queued: %+v", stage(p))
	}

	held := Decide(observed(Facts{Run: run, Jobs: tested, Approvals: trigger, Now: t0, Environments: map[string]EnvironmentFact{"staging": {Held: true}}}))
	if held.Status.Phase != conveyorv1.RunRunning || len(held.Create) != 1 || len(held.Acquire) != 0 {
		t.Fatalf("held lock: phase %s creates %d acquire %v", held.Status.Phase, len(held.Create), held.Acquire)
	}

	other := Decide(observed(Facts{Run: run, Jobs: tested, Approvals: trigger, Now: t0,
		Environments: map[string]EnvironmentFact{"staging": {Holder: "shop-ci/shop-0", HolderStage: "staging"}}}))
	if other.Status.Phase != conveyorv1.RunQueued || len(other.Create) != 0 || stage(other).HeldBy != "shop-ci/shop-0" ||
		!strings.Contains(other.Message, "in use by run shop-ci/shop-0 (stage staging)") {
		t.Fatalf("held by another: phase %s creates %d heldBy %q message %q", other.Status.Phase, len(other.Create), stage(other).HeldBy, other.Message)
	}
	if stage(other).StartTime == nil || !stage(other).StartTime.Equal(&t0) {
		t.Fatalf("queued stage has no queue start: %v", stage(other).StartTime)
	}

	// Once the holder is done, the queued stage starts: its start time is
	// when its Jobs are created, not when it queued.
	withStatus(run, other)
	later := metav1.NewTime(t0.Add(time.Minute))
	started := Decide(observed(Facts{Run: run, Jobs: tested, Approvals: trigger, Now: later, Environments: map[string]EnvironmentFact{"staging": {Held: true}}}))
	if started.Status.Phase != conveyorv1.RunRunning || !stage(started).StartTime.Equal(&later) || stage(started).HeldBy != "" {
		t.Fatalf("after the queue: phase %s start %v heldBy %q", started.Status.Phase, stage(started).StartTime, stage(started).HeldBy)
	}

	// A stage that started (its Job exists) does not ask for the lock again.
	running := Decide(observed(Facts{Run: run, Jobs: merge(tested, map[string]JobObservation{"staging/deploy": {Phase: conveyorv1.JobRunning}}), Approvals: trigger, Now: later}))
	if running.Status.Phase != conveyorv1.RunRunning || len(running.Acquire) != 0 {
		t.Fatalf("started stage: phase %s acquire %v", running.Status.Phase, running.Acquire)
	}

	superseded := Decide(observed(Facts{Run: run, Jobs: tested, Approvals: trigger, Now: later,
		Environments: map[string]EnvironmentFact{"staging": {SupersededBy: "shop-ci/shop-2"}}}))
	if superseded.Status.Phase != conveyorv1.RunCancelled || superseded.Reason != conveyorv1.ReasonSuperseded ||
		stage(superseded).Jobs[0].Phase != conveyorv1.JobCancelled || superseded.Status.CompletionTime == nil {
		t.Fatalf("superseded: phase %s reason %s job %s", superseded.Status.Phase, superseded.Reason, stage(superseded).Jobs[0].Phase)
	}
	// A superseded run is frozen: a later decision changes nothing.
	withStatus(run, superseded)
	run.Status.Conditions = []metav1.Condition{{Type: conveyorv1.ConditionReady, Status: metav1.ConditionFalse, Reason: superseded.Reason}}
	if again := Decide(observed(Facts{Run: run, Jobs: tested, Approvals: trigger, Now: later, Environments: map[string]EnvironmentFact{"staging": {Held: true}}})); len(again.Create) != 0 || again.Status.Phase != conveyorv1.RunCancelled {
		t.Fatalf("a superseded run started again: %s, creates %d", again.Status.Phase, len(again.Create))
	}

	cancelled := newRun(branch)
	withStatus(cancelled, other)
	cancelled.Spec.Cancelled = true
	c := Decide(observed(Facts{Run: cancelled, Jobs: tested, Approvals: trigger, Now: later}))
	if c.Status.Phase != conveyorv1.RunCancelled || c.Reason != conveyorv1.ReasonCancelled || len(c.Acquire) != 0 || len(c.Create) != 0 {
		t.Fatalf("cancelled while queued: phase %s reason %s acquire %v", c.Status.Phase, c.Reason, c.Acquire)
	}
}

// TestCancelDeletesJobsNotYetSeen: a Job created by an earlier reconcile but
// not in the cache yet is deleted by name when the run is cancelled.
func TestCancelDeletesJobsNotYetSeen(t *testing.T) {
	run := newRun(branch)
	withStatus(run, decide(Facts{Run: run, Now: t0}))
	name := run.Status.Stages[0].Jobs[0].JobName
	if name == "" {
		t.Fatal("the build job has no Job name in status")
	}
	run.Spec.Cancelled = true
	p := decide(Facts{Run: run, Now: t0})
	if p.Status.Phase != conveyorv1.RunCancelled || len(p.Delete) != 1 || p.Delete[0].Name != name || p.Delete[0].Namespace != "shop-ci" {
		t.Fatalf("cancel with the Job unseen: phase %s, deletes %+v, want %s", p.Status.Phase, p.Delete, name)
	}
}

// TestObserveJob reads a Job's phase the way the Job controller writes it,
// including a Job read from the API server (it left the manager's cache when
// its success was counted) before its Complete condition.
func TestObserveJob(t *testing.T) {
	now := metav1.Now()
	cond := func(typ batchv1.JobConditionType) batchv1.JobCondition {
		return batchv1.JobCondition{Type: typ, Status: corev1.ConditionTrue, Reason: "R", Message: "m", LastTransitionTime: now}
	}
	cases := []struct {
		name   string
		status batchv1.JobStatus
		spec   batchv1.JobSpec
		want   conveyorv1.JobPhase
	}{
		{"just created", batchv1.JobStatus{}, batchv1.JobSpec{}, conveyorv1.JobRunning},
		{"pod running", batchv1.JobStatus{Active: 1}, batchv1.JobSpec{}, conveyorv1.JobRunning},
		// The pod succeeded but the Job is not complete yet: a deploy is
		// over when its Job is, so the next one never overlaps it.
		{"success criteria met, not complete yet", batchv1.JobStatus{Conditions: []batchv1.JobCondition{cond(batchv1.JobSuccessCriteriaMet)}}, batchv1.JobSpec{}, conveyorv1.JobRunning},
		{"complete", batchv1.JobStatus{Succeeded: 1, Conditions: []batchv1.JobCondition{cond(batchv1.JobSuccessCriteriaMet), cond(batchv1.JobComplete)}}, batchv1.JobSpec{}, conveyorv1.JobSucceeded},
		// Counted without Complete (a pod finalizer not removed at once):
		// such a Job is no longer cached, so the count decides.
		{"every completion counted, Complete not written yet", batchv1.JobStatus{Succeeded: 1, Conditions: []batchv1.JobCondition{cond(batchv1.JobSuccessCriteriaMet)}}, batchv1.JobSpec{}, conveyorv1.JobSucceeded},
		{"one of two completions", batchv1.JobStatus{Succeeded: 1, Active: 1}, batchv1.JobSpec{Completions: ptr.To[int32](2)}, conveyorv1.JobRunning},
		{"failure target is not failed yet", batchv1.JobStatus{Failed: 1, Conditions: []batchv1.JobCondition{cond(batchv1.JobFailureTarget)}}, batchv1.JobSpec{}, conveyorv1.JobRunning},
		{"failed", batchv1.JobStatus{Failed: 1, Conditions: []batchv1.JobCondition{cond(batchv1.JobFailed)}}, batchv1.JobSpec{}, conveyorv1.JobFailed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			obs := ObserveJob(&batchv1.Job{Spec: c.spec, Status: c.status})
			if obs.Phase != c.want {
				t.Fatalf("phase %s, want %s", obs.Phase, c.want)
			}
			if c.want == conveyorv1.JobFailed && obs.CompletionTime == nil {
				t.Fatalf("a failed Job has no completion time")
			}
		})
	}
}

// TestOnlyOwnJobsCount: a Job with the run's labels in another namespace, or
// under the right name with another UID than the one recorded, neither
// starts nor ends a stage, and is told apart.
func TestOnlyOwnJobsCount(t *testing.T) {
	run := newRun(branch)
	tested := done("build/compile", "testing/unit", "testing/lint")
	lookAlike := merge(tested, map[string]JobObservation{"staging/deploy": {Name: "shop-1-staging-deploy", Namespace: "sandbox", UID: "evil", Phase: conveyorv1.JobSucceeded}})
	p := decide(Facts{Run: run, Jobs: lookAlike, Now: t0})
	if p.Status.Phase != conveyorv1.RunWaiting || p.Status.CurrentStage != "staging" || len(p.Ignored) != 1 {
		t.Fatalf("a look-alike Job elsewhere: phase %s at %s, ignored %d", p.Status.Phase, p.Status.CurrentStage, len(p.Ignored))
	}
	// The build Job is recorded by UID; another Job under its name does not count.
	building := withStatus(newRun(branch), decide(Facts{Run: newRun(branch), Now: t0}))
	building.Status.Stages[0].Jobs[0].UID = "real"
	swapped := map[string]JobObservation{"build/compile": {Name: building.Status.Stages[0].Jobs[0].JobName, Namespace: "shop-ci", UID: "other", Phase: conveyorv1.JobSucceeded}}
	p = decide(Facts{Run: building, Jobs: swapped, Now: t0})
	if p.Status.Stages[0].Phase == conveyorv1.StageSucceeded || len(p.Ignored) != 1 {
		t.Fatalf("a Job swapped under the build's name: build %s, ignored %d", p.Status.Stages[0].Phase, len(p.Ignored))
	}
	swapped["build/compile"] = JobObservation{Name: building.Status.Stages[0].Jobs[0].JobName, Namespace: "shop-ci", UID: "real", Phase: conveyorv1.JobSucceeded}
	if p = decide(Facts{Run: building, Jobs: swapped, Now: t0}); p.Status.Stages[0].Phase != conveyorv1.StageSucceeded || len(p.Ignored) != 0 {
		t.Fatalf("its own Job: build %s, ignored %d", p.Status.Stages[0].Phase, len(p.Ignored))
	}
}

// TestJobMadeAheadOfTimeIgnored: a Job made under a stage's name before
// the stage was ready (before its trigger, or before the run held its
// environment) is not the run's, and the stage waits; one made after (a
// manager stopped between its create and its status write) is.
func TestJobMadeAheadOfTimeIgnored(t *testing.T) {
	run := newRun(branch)
	withStatus(run, decide(Facts{Run: run, Jobs: done("build/compile", "testing/unit", "testing/lint"), Now: t0}))
	base := observed(Facts{Run: run, Jobs: done("build/compile", "testing/unit", "testing/lint")})
	run = base.Run
	early, late := metav1.NewTime(t0.Add(-time.Minute)), metav1.NewTime(t0.Add(time.Minute))
	squat := func(created metav1.Time) map[string]JobObservation {
		return merge(base.Jobs, map[string]JobObservation{"staging/deploy": {
			Name: JobName(run.Namespace, run.Name, "staging", "deploy", "staging"), Namespace: "staging", UID: "uid-squat",
			Phase: conveyorv1.JobSucceeded, StartTime: &created}})
	}
	trig := approve("a1", "staging", "dev")
	trig.Created = t0
	held := map[string]EnvironmentFact{"staging": {Held: true}}

	for _, tc := range []struct {
		name      string
		jobs      map[string]JobObservation
		approvals []ApprovalFact
		env       map[string]EnvironmentFact
		wantPhase conveyorv1.StagePhase
		ignored   int
	}{
		{"made before any trigger", squat(late), nil, held, conveyorv1.StageWaiting, 1},
		{"made before the trigger", squat(early), []ApprovalFact{trig}, held, conveyorv1.StageRunning, 1},
		{"made while the environment was not held", squat(late), []ApprovalFact{trig}, map[string]EnvironmentFact{"staging": {Holder: "other/run"}}, conveyorv1.StageQueued, 1},
		{"made after the trigger, with the lock", squat(late), []ApprovalFact{trig}, held, conveyorv1.StageSucceeded, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := Decide(Facts{Run: run, Jobs: tc.jobs, Approvals: tc.approvals, Environments: tc.env, Policy: openPolicy(), Now: t0})
			var staging *conveyorv1.StageStatus
			for i := range p.Status.Stages {
				if p.Status.Stages[i].Name == "staging" {
					staging = &p.Status.Stages[i]
				}
			}
			if staging.Phase != tc.wantPhase || len(p.Ignored) != tc.ignored {
				t.Fatalf("staging %s (%s), %d ignored; want %s, %d ignored", staging.Phase, staging.Message, len(p.Ignored), tc.wantPhase, tc.ignored)
			}
			if tc.ignored > 0 && tc.wantPhase == conveyorv1.StageRunning && len(p.Create) != 1 {
				t.Fatalf("a ready stage whose name is squatted asks to create its Job: create %d", len(p.Create))
			}
		})
	}
}
