package engine

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// digestPipeline: build writes an image digest; staging deploys it to the
// region a run chooses.
func digestPipeline() *conveyorv1.PipelineSpec {
	return &conveyorv1.PipelineSpec{
		Refs: conveyorv1.PipelineRefs{Branches: []string{"feature_*"}, Tags: []string{"v*"}},
		Params: []conveyorv1.ParamSpec{
			{Name: "region", Description: "where to deploy", Default: ptr.To("eu-west-1"), Enum: []string{"eu-west-1", "us-east-1"}},
			{Name: "ticket", Description: "the change ticket"},
		},
		Stages: []conveyorv1.Stage{
			{Name: "build", Jobs: []conveyorv1.JobSpec{{Name: "image", Image: "builder", Results: []conveyorv1.ResultSpec{{Name: "digest"}}}}},
			{Name: "staging", Jobs: []conveyorv1.JobSpec{{Name: "deploy", Image: "registry/shop@$(stages.build.jobs.image.results.digest)",
				Args: []string{"--region=$(params.region)", "--ticket=$(params.ticket)", "literal $$(params.region)"},
				Env:  []corev1.EnvVar{{Name: "TICKET", Value: "$(params.ticket)"}}}}},
		},
	}
}

func TestResolveParams(t *testing.T) {
	spec := digestPipeline()
	cases := []struct {
		name    string
		given   []conveyorv1.Param
		want    string
		wantErr []string
	}{
		{name: "defaults fill in", given: []conveyorv1.Param{{Name: "ticket", Value: "CHG-1"}}, want: "region=eu-west-1 ticket=CHG-1"},
		{name: "given wins", given: []conveyorv1.Param{{Name: "region", Value: "us-east-1"}, {Name: "ticket", Value: "$(params.region)"}},
			want: "region=us-east-1 ticket=$(params.region)"},
		{name: "missing without default", given: nil, wantErr: []string{"spec.params: Required value: parameter ticket has no default"}},
		{name: "unknown", given: []conveyorv1.Param{{Name: "ticket", Value: "x"}, {Name: "zone", Value: "a"}},
			wantErr: []string{`spec.params[1].name: Unsupported value: "zone": supported values: "region", "ticket"`}},
		{name: "outside enum", given: []conveyorv1.Param{{Name: "ticket", Value: "x"}, {Name: "region", Value: "mars"}},
			wantErr: []string{`spec.params[region].value: Unsupported value: "mars"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, errs := ResolveParams(spec, c.given)
			if len(c.wantErr) > 0 {
				msg := errs.ToAggregate()
				for _, w := range c.wantErr {
					if msg == nil || !strings.Contains(msg.Error(), w) {
						t.Fatalf("errors %v, want one with %q", msg, w)
					}
				}
				return
			}
			if len(errs) > 0 {
				t.Fatalf("unexpected errors: %v", errs.ToAggregate())
			}
			var s []string
			for _, p := range got {
				s = append(s, p.Name+"="+p.Value)
			}
			if strings.Join(s, " ") != c.want {
				t.Fatalf("resolved %q, want %q", strings.Join(s, " "), c.want)
			}
		})
	}
}

func TestValidatePipelineReferences(t *testing.T) {
	if err := ValidatePipeline(digestPipeline()); err != nil {
		t.Fatalf("the digest pipeline is refused: %v", err)
	}
	cases := []struct {
		name   string
		change func(*conveyorv1.PipelineSpec)
		want   string
	}{
		{"unknown parameter", func(s *conveyorv1.PipelineSpec) { s.Stages[1].Jobs[0].Args[0] = "$(params.zone)" },
			`spec.stages[1].jobs[0]: Invalid value: "$(params.zone)": no parameter of the Pipeline has that name`},
		{"undeclared result", func(s *conveyorv1.PipelineSpec) {
			s.Stages[1].Jobs[0].Image = "x@$(stages.build.jobs.image.results.sbom)"
		}, "no job of an earlier stage declares that result"},
		{"a result of the same stage", func(s *conveyorv1.PipelineSpec) {
			s.Stages[0].Jobs = append(s.Stages[0].Jobs, conveyorv1.JobSpec{Name: "scan", Image: "$(stages.build.jobs.image.results.digest)"})
		}, "no job of an earlier stage declares that result"},
		{"a result of a later stage", func(s *conveyorv1.PipelineSpec) {
			s.Stages[0].Jobs[0].Env = []corev1.EnvVar{{Name: "D", Value: "$(stages.staging.jobs.deploy.results.url)"}}
			s.Stages[1].Jobs[0].Results = []conveyorv1.ResultSpec{{Name: "url"}}
		}, "no job of an earlier stage declares that result"},
		{"a result of a tags-only stage read by every run", func(s *conveyorv1.PipelineSpec) { s.Stages[0].Refs = conveyorv1.RefsTags },
			"the stage that writes it runs only for tags, and stage staging runs for all"},
		{"two names, one variable", func(s *conveyorv1.PipelineSpec) {
			s.Params = append(s.Params, conveyorv1.ParamSpec{Name: "Region", Default: ptr.To("x")})
		}, "its environment variable CONVEYOR_PARAM_REGION is also parameter region's"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			spec := digestPipeline()
			c.change(spec)
			err := ValidatePipeline(spec)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("ValidatePipeline = %v, want an error with %q", err, c.want)
			}
		})
	}
}

func TestParseResults(t *testing.T) {
	declared := []conveyorv1.ResultSpec{{Name: "digest"}, {Name: "url"}}
	got, err := ParseResults(declared, "# written by the build\ndigest=sha256:abc=\r\nother=ignored\n\nurl=https://x/?a=b\n")
	if err != nil || len(got) != 2 || got[0].Value != "sha256:abc=" || got[1].Value != "https://x/?a=b" {
		t.Fatalf("ParseResults = %+v, %v", got, err)
	}
	_, err = ParseResults(declared, "digest=sha256:abc\n")
	if err == nil || !strings.Contains(err.Error(), "the job wrote no result url") {
		t.Fatalf("a missing result: %v", err)
	}
}

// TestResultsFlowDownThePipeline: the build's Job gets the parameters and
// the results file; its result, read from its pod, is recorded and reaches
// the deploy's image, args and environment; a value is never substituted
// twice; a build that wrote no digest fails.
func TestResultsFlowDownThePipeline(t *testing.T) {
	run := newRun(branch)
	run.Status.PipelineSpec = digestPipeline()
	run.Status.Params = []conveyorv1.Param{{Name: "region", Value: "eu-west-1"}, {Name: "ticket", Value: "CHG-7 $(params.region)"}}

	p := decide(Facts{Run: run, Now: t0})
	if len(p.Create) != 1 || p.Create[0].Job.Name != "image" {
		t.Fatalf("want the build's Job created, got %+v", p.Create)
	}
	build := BuildJob(run, p.Create[0])
	env := envMap(build.Spec.Template.Spec.Containers[0].Env)
	if env["CONVEYOR_RESULTS"] != ResultsFile || env["CONVEYOR_PARAM_TICKET"] != "CHG-7 $$(params.region)" || env["CONVEYOR_PARAM_REGION"] != "eu-west-1" {
		t.Fatalf("build's environment: %v", env)
	}
	if c := build.Spec.Template.Spec.Containers[0]; c.TerminationMessagePath != ResultsFile || c.TerminationMessagePolicy != corev1.TerminationMessageReadFile {
		t.Fatalf("build's termination message: %q %q", c.TerminationMessagePath, c.TerminationMessagePolicy)
	}

	// Succeeded, its pod not read yet: the job waits for its results.
	run.Status = p.Status
	p = decide(Facts{Run: run, Now: t0, Jobs: map[string]JobObservation{"build/image": {Phase: conveyorv1.JobSucceeded}}})
	if js := p.Status.Stages[0].Jobs[0]; js.Phase != conveyorv1.JobRunning || len(p.Create) != 0 {
		t.Fatalf("before its results are read the build is %s (%s), creates %d", js.Phase, js.Message, len(p.Create))
	}

	p = decide(Facts{Run: run, Now: t0, Jobs: map[string]JobObservation{"build/image": {Phase: conveyorv1.JobSucceeded,
		ResultsRead: true, ResultsMessage: "digest=sha256:0123\n"}}})
	if got := p.Status.Stages[0].Jobs[0].Results; len(got) != 1 || got[0].Value != "sha256:0123" {
		t.Fatalf("recorded results %+v", got)
	}
	if msg := p.Status.Stages[0].Message; msg != "1 job(s) succeeded; results image.digest=sha256:0123" {
		t.Fatalf("the build stage's message %q does not tell its result", msg)
	}
	if len(p.Create) != 1 || p.Create[0].Job.Name != "deploy" {
		t.Fatalf("want the deploy's Job created, got %+v", p.Create)
	}
	deploy := BuildJob(run, p.Create[0]).Spec.Template.Spec.Containers[0]
	if deploy.Image != "registry/shop@sha256:0123" {
		t.Fatalf("deploy image %q", deploy.Image)
	}
	wantArgs := []string{"--region=eu-west-1", "--ticket=CHG-7 $$(params.region)", "literal $(params.region)"}
	if strings.Join(deploy.Args, "|") != strings.Join(wantArgs, "|") {
		t.Fatalf("deploy args %q, want %q", deploy.Args, wantArgs)
	}
	env = envMap(deploy.Env)
	if env["TICKET"] != "CHG-7 $$(params.region)" || env["CONVEYOR_RESULT_BUILD_IMAGE_DIGEST"] != "sha256:0123" {
		t.Fatalf("deploy's environment: %v", env)
	}
	if _, ok := env["CONVEYOR_RESULTS"]; ok {
		t.Fatalf("a job declaring no results gets CONVEYOR_RESULTS")
	}

	// A build that wrote no digest fails its stage, and the run.
	p = decide(Facts{Run: run, Now: t0, Jobs: map[string]JobObservation{"build/image": {Phase: conveyorv1.JobSucceeded, ResultsRead: true}}})
	if js := p.Status.Stages[0].Jobs[0]; js.Phase != conveyorv1.JobFailed || js.Reason != conveyorv1.ReasonResultMissing || p.Status.Phase != conveyorv1.RunFailed {
		t.Fatalf("a build without its digest: job %s %s, run %s", js.Phase, js.Reason, p.Status.Phase)
	}
}

// TestRunStartsWithItsParams: the snapshot comes with the resolved params; a
// run whose params do not fit its Pipeline fails for good, saying why.
func TestRunStartsWithItsParams(t *testing.T) {
	pipeline := &conveyorv1.Pipeline{Spec: *digestPipeline()}
	pipeline.Name = "shop"
	run := newRun(branch)
	run.Status = conveyorv1.PipelineRunStatus{}
	run.Spec.Params = []conveyorv1.Param{{Name: "ticket", Value: "CHG-1"}}
	p := DecideRun(observed(Facts{Run: run, Pipeline: pipeline, Now: t0}))
	if len(p.Status.Params) != 2 || p.Status.Params[0].Value != "eu-west-1" {
		t.Fatalf("started with params %+v", p.Status.Params)
	}
	run.Spec.Params = nil
	p = DecideRun(observed(Facts{Run: run, Pipeline: pipeline, Now: t0}))
	if p.Status.Phase != conveyorv1.RunFailed || p.Reason != conveyorv1.ReasonInvalidParams || !strings.Contains(p.Message, "ticket") {
		t.Fatalf("a run without its ticket: %s %s %q", p.Status.Phase, p.Reason, p.Message)
	}
}

func envMap(env []corev1.EnvVar) map[string]string {
	m := map[string]string{}
	for _, e := range env {
		m[e.Name] = e.Value
	}
	return m
}

// TestApprovalCoversExactlyWhatShips: an Approve made for other values than
// the run has before the gate (another build digest) does not pass it, and
// the stage says so; one for the run's values does; a Reject counts whatever
// it saw.
func TestApprovalCoversExactlyWhatShips(t *testing.T) {
	spec := digestPipeline()
	spec.Stages = append([]conveyorv1.Stage{spec.Stages[0],
		{Name: "approve", Approval: &conveyorv1.ApprovalGate{Groups: []string{"release-engineers"}, Required: 1}}}, spec.Stages[1:]...)
	run := newRun(branch)
	run.Status.PipelineSpec = spec
	run.Status.Params = []conveyorv1.Param{{Name: "region", Value: "eu-west-1"}, {Name: "ticket", Value: "CHG-7"}}
	built := map[string]JobObservation{"build/image": {Phase: conveyorv1.JobSucceeded, ResultsRead: true, ResultsMessage: "digest=sha256:0123\n"}}
	p := decide(Facts{Run: run, Now: t0, Jobs: built})
	if gate := p.Status.Stages[1]; gate.Phase != conveyorv1.StageWaiting {
		t.Fatalf("the gate is %s", gate.Phase)
	}
	ours := ValuesDigest(Vars(p.Status.Params, p.Status.Stages[:1]))
	if ours == "" || !strings.HasPrefix(ours, "sha256:") {
		t.Fatalf("values digest %q", ours)
	}
	other := ValuesDigest(map[string]string{"params.region": "eu-west-1", "params.ticket": "CHG-7", "stages.build.jobs.image.results.digest": "sha256:9999"})

	stale := approve("a-old", "approve", "rob")
	stale.ValuesDigest = other
	run.Status = p.Status
	p = decide(Facts{Run: run, Now: t0, Jobs: built, Approvals: []ApprovalFact{stale}})
	gate := p.Status.Stages[1]
	if gate.Phase != conveyorv1.StageWaiting || !strings.Contains(gate.Message, "Approval a-old approved other values than the run's now") || len(p.Create) != 0 {
		t.Fatalf("an approval of another digest: gate %s %q, %d Jobs", gate.Phase, gate.Message, len(p.Create))
	}

	current := approve("a-new", "approve", "rob")
	current.ValuesDigest = ours
	p = decide(Facts{Run: run, Now: t0, Jobs: built, Approvals: []ApprovalFact{stale, current}})
	if gate := p.Status.Stages[1]; gate.Phase != conveyorv1.StageSucceeded || gate.Decisions[0].Approval != "a-new" {
		t.Fatalf("an approval of the run's values: gate %s %+v", gate.Phase, gate.Decisions)
	}

	reject := ApprovalFact{Name: "r", Stage: "approve", Decision: conveyorv1.DecisionReject, Approver: "rob", RunUID: "uid-1", Created: t0, ValuesDigest: other}
	p = decide(Facts{Run: run, Now: t0, Jobs: built, Approvals: []ApprovalFact{reject}})
	if gate := p.Status.Stages[1]; gate.Phase != conveyorv1.StageRejected {
		t.Fatalf("a reject of other values: gate %s", gate.Phase)
	}
}

// TestJobVolumes: a job's volumes, mounts and pull Secrets reach its pod.
func TestJobVolumes(t *testing.T) {
	run := newRun(branch)
	job := conveyorv1.JobSpec{Name: "deploy", Image: "helm",
		Volumes: []conveyorv1.JobVolume{{Name: "creds", Secret: &corev1.SecretVolumeSource{SecretName: "deploy-token"}},
			{Name: "cache", PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "go-cache"}}},
		VolumeMounts:     []corev1.VolumeMount{{Name: "creds", MountPath: "/var/run/creds", ReadOnly: true}, {Name: "cache", MountPath: "/cache"}},
		ImagePullSecrets: []corev1.LocalObjectReference{{Name: "registry"}},
	}
	pod := BuildJob(run, JobToCreate{Stage: conveyorv1.Stage{Name: "build"}, Job: job, Name: "j", Namespace: run.Namespace}).Spec.Template.Spec
	if len(pod.Volumes) != 2 || pod.Volumes[0].Secret.SecretName != "deploy-token" || pod.Volumes[1].PersistentVolumeClaim.ClaimName != "go-cache" {
		t.Fatalf("pod volumes %+v", pod.Volumes)
	}
	if m := pod.Containers[0].VolumeMounts; len(m) != 2 || m[0].MountPath != "/var/run/creds" || !m[0].ReadOnly {
		t.Fatalf("container mounts %+v", m)
	}
	if len(pod.ImagePullSecrets) != 1 || pod.ImagePullSecrets[0].Name != "registry" {
		t.Fatalf("pull secrets %+v", pod.ImagePullSecrets)
	}
}

// TestRerunReusesResults: a rerun gives its source's params (else it is
// refused), reuses the build with its results, so the deploy gets the same
// digest; when the params resolve otherwise (a default changed since), it
// reuses nothing.
func TestRerunReusesResults(t *testing.T) {
	pipeline := &conveyorv1.Pipeline{Spec: *digestPipeline()}
	pipeline.Name = "shop"
	source := newRun(branch)
	source.Spec.Params = []conveyorv1.Param{{Name: "ticket", Value: "CHG-1"}}
	source.Status = conveyorv1.PipelineRunStatus{}
	withStatus(source, DecideRun(observed(Facts{Run: source, Pipeline: pipeline, Now: t0})))
	jobs := map[string]JobObservation{
		"build/image":    {Phase: conveyorv1.JobSucceeded, ResultsRead: true, ResultsMessage: "digest=sha256:0123"},
		"staging/deploy": {Phase: conveyorv1.JobFailed, Reason: "BackoffLimitExceeded"},
	}
	withStatus(source, decide(Facts{Run: source, Jobs: jobs, Now: t0}))
	withStatus(source, decide(Facts{Run: source, Jobs: jobs, Now: t0}))
	if source.Status.Phase != conveyorv1.RunFailed {
		t.Fatalf("fixture: source %s at %s", source.Status.Phase, source.Status.CurrentStage)
	}

	rerun := rerunOf(source)
	rerun.Status = conveyorv1.PipelineRunStatus{}
	if err := CheckRerun(rerun, source); err == nil || !strings.Contains(err.Error(), `ran with other params (ticket="CHG-1")`) {
		t.Fatalf("a rerun without the source's params: %v", err)
	}
	rerun.Spec.Params = source.Spec.Params
	if err := CheckRerun(rerun, source); err != nil {
		t.Fatal(err)
	}
	p := DecideRun(observed(Facts{Run: rerun, Pipeline: pipeline, RerunSource: source, Now: t0}))
	if len(p.Status.Stages) == 0 || p.Status.Stages[0].ReusedFrom != source.Name || p.Status.Stages[0].Jobs[0].Results[0].Value != "sha256:0123" {
		t.Fatalf("the rerun's build: %+v", p.Status.Stages)
	}
	if len(p.Create) != 1 || p.Create[0].Job.Image != "registry/shop@sha256:0123" {
		t.Fatalf("the rerun's deploy: %+v", p.Create)
	}

	pipeline.Spec.Params[0].Default = ptr.To("us-east-1")
	p = DecideRun(observed(Facts{Run: rerun, Pipeline: pipeline, RerunSource: source, Now: t0}))
	for _, ss := range p.Status.Stages {
		if ss.ReusedFrom != "" {
			t.Fatalf("with another region the rerun reused stage %s", ss.Name)
		}
	}
}
