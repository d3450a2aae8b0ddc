// Package story plays the seed's release story against a cluster running
// Conveyor, as the personas, and fails as soon as anything happens that the
// seed's rules forbid. The personas act as a person would: with the kubectl
// plugin (kubectl conveyor), one kubeconfig context each, and the story shows
// every command and what it printed. `make demo` prints it; the end-to-end
// suite asserts it.
package story

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/yaml"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/cmd/kubectl-conveyor/cli"
	"github.com/conveyor-dev/conveyor/controllers/engine"
)

// Namespace holds the story's Pipeline and runs.
const Namespace = "shop-ci"

// ProductionLabel on a namespace lets its Pipelines deploy to the shipped
// production Environment.
const ProductionLabel = "conveyor.dev/production"

// Story acts on a cluster as the personas.
type Story struct {
	// Admin sets the scene (namespace, Pipeline, role bindings), plays the
	// platform admins (freeze windows) and watches the runs.
	Admin client.Client
	// Kubeconfig has a context per persona (dana, tess, omar, rita, rob):
	// the personas act with kubectl conveyor --context <persona>.
	Kubeconfig string
	// Colour draws the plugin's graphs in colour.
	Colour bool
	// Out receives the story as it happens.
	Out io.Writer
	// Root is the repository root (config/ is read from it).
	Root string
	// Timeout bounds each wait.
	Timeout time.Duration

	// told is, per run, the stage phases already told.
	told map[string]map[string]conveyorv1.StagePhase
}

// Result is what the story did: its runs as they ended.
type Result struct {
	Runs []conveyorv1.PipelineRun
}

func (s *Story) say(format string, args ...any) { fmt.Fprintf(s.Out, format+"\n", args...) }

// SetScene creates the story's namespace, binds the persona roles to the
// seed's groups there, and applies the seed's Pipeline from config/samples.
func (s *Story) SetScene(ctx context.Context) error {
	// A cluster admin lets the story's Pipelines deploy to production (the
	// shipped production Environment selects namespaces by this label).
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}
	if _, err := controllerutil.CreateOrPatch(ctx, s.Admin, ns, func() error {
		metav1.SetMetaDataLabel(&ns.ObjectMeta, ProductionLabel, "allowed")
		return nil
	}); err != nil {
		return fmt.Errorf("labelling namespace %s for production: %w", Namespace, err)
	}
	bindings, err := os.ReadFile(s.Root + "/config/rbac/persona_bindings_example.yaml")
	if err != nil {
		return err
	}
	for _, doc := range strings.Split(string(bindings), "\n---\n") {
		rb := &rbacv1.RoleBinding{}
		if err := yaml.Unmarshal([]byte(doc), rb); err != nil {
			return err
		}
		if rb.Name == "" {
			continue
		}
		if err := s.Admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: rb.Namespace}}); client.IgnoreAlreadyExists(err) != nil {
			return err
		}
		if err := s.Admin.Create(ctx, rb); client.IgnoreAlreadyExists(err) != nil {
			return err
		}
	}
	p, err := s.seedPipeline()
	if err != nil {
		return err
	}
	p.Namespace = Namespace
	if err := s.Admin.Create(ctx, p); client.IgnoreAlreadyExists(err) != nil {
		return fmt.Errorf("applying the seed's Pipeline: %w", err)
	}
	s.say("Applied Pipeline %s/%s from config/samples/pipeline.yaml: %d stages, branches %v, tags %v",
		Namespace, p.Name, len(p.Spec.Stages), p.Spec.Refs.Branches, p.Spec.Refs.Tags)
	return s.waitPipelineReady(ctx, p.Name)
}

// Play plays the three acts of the seed: a feature branch, a release that
// reaches production, and a release that is refused.
func (s *Story) Play(ctx context.Context) (*Result, error) {
	res := &Result{}
	if err := s.outsider(ctx); err != nil {
		return res, err
	}
	for _, act := range []func(context.Context) (*conveyorv1.PipelineRun, error){s.featureBranch, s.release, s.refusedRelease, s.frozenRelease} {
		run, err := act(ctx)
		if err != nil {
			return res, err
		}
		res.Runs = append(res.Runs, *run)
	}
	return res, s.summary(ctx)
}

// featureBranch: a developer's push runs build and testing; a developer
// deploys to staging; a developer may not deploy to pre-production, a tester may.
func (s *Story) featureBranch(ctx context.Context) (*conveyorv1.PipelineRun, error) {
	s.say("\n== Act 1: dana (developers) pushes branch feature_login ==")
	run, err := s.startRun(ctx, "dana", conveyorv1.GitRef{Branch: "feature_login", Commit: "9b1e4f2a"})
	if err != nil {
		return nil, err
	}
	if err := s.waitFor(ctx, run, conveyorv1.RunWaiting, "staging"); err != nil {
		return nil, err
	}
	if err := s.allow(ctx, "dana", run, "staging", conveyorv1.DecisionApprove, "try the login page"); err != nil {
		return nil, err
	}
	if err := s.waitFor(ctx, run, conveyorv1.RunWaiting, "pre-production"); err != nil {
		return nil, err
	}
	if err := s.refuse(ctx, "dana", run, "pre-production", conveyorv1.DecisionApprove, "only members of the groups testers, devops, release-engineers may"); err != nil {
		return nil, err
	}
	if err := s.allow(ctx, "tess", run, "pre-production", conveyorv1.DecisionApprove, "manual checks passed on staging"); err != nil {
		return nil, err
	}
	if err := s.waitFor(ctx, run, conveyorv1.RunSucceeded, "pre-production"); err != nil {
		return nil, err
	}
	return s.ended(ctx, "dana", run)
}

// release: a release engineer's tag goes through pre-production; the tagger
// may not approve her own release, a developer may not approve at all;
// another release engineer approves; DevOps deploys to production.
func (s *Story) release(ctx context.Context) (*conveyorv1.PipelineRun, error) {
	s.say("\n== Act 2: rita (release-engineers) tags v1.4.0 ==")
	run, err := s.throughPreProduction(ctx, conveyorv1.GitRef{Tag: "v1.4.0", Commit: "3f2a9c1d"})
	if err != nil {
		return nil, err
	}
	if err := s.show(ctx, "rita", run); err != nil {
		return nil, err
	}
	if err := s.refuse(ctx, "rita", run, "approve", conveyorv1.DecisionApprove, "separation of duties"); err != nil {
		return nil, err
	}
	if err := s.refuse(ctx, "dana", run, "approve", conveyorv1.DecisionApprove, "only members of the groups release-engineers may"); err != nil {
		return nil, err
	}
	if err := s.noJobs(ctx, run, "production"); err != nil {
		return nil, err
	}
	if err := s.allow(ctx, "rob", run, "approve", conveyorv1.DecisionApprove, "customer demo passed"); err != nil {
		return nil, err
	}
	if err := s.waitFor(ctx, run, conveyorv1.RunWaiting, "production"); err != nil {
		return nil, err
	}
	if err := s.refuse(ctx, "dana", run, "production", conveyorv1.DecisionApprove, "only members of the groups release-engineers, devops may"); err != nil {
		return nil, err
	}
	if err := s.allow(ctx, "omar", run, "production", conveyorv1.DecisionApprove, "ship it"); err != nil {
		return nil, err
	}
	if err := s.waitFor(ctx, run, conveyorv1.RunSucceeded, "production"); err != nil {
		return nil, err
	}
	// The deploy ran in namespace production; omar reads its log from here.
	if _, err := s.kubectl(ctx, "omar", "logs", run.Name, "production"); err != nil {
		return nil, err
	}
	return s.ended(ctx, "rita", run)
}

// refusedRelease: a release engineer refuses ("not approve") a tag; the run
// ends as Rejected and a production trigger afterwards goes nowhere.
func (s *Story) refusedRelease(ctx context.Context) (*conveyorv1.PipelineRun, error) {
	s.say("\n== Act 3: rita tags v1.4.1, which the customer turns down ==")
	run, err := s.throughPreProduction(ctx, conveyorv1.GitRef{Tag: "v1.4.1", Commit: "77c0ffee"})
	if err != nil {
		return nil, err
	}
	if err := s.allow(ctx, "rob", run, "approve", conveyorv1.DecisionReject, "not approve: the customer found a blocker"); err != nil {
		return nil, err
	}
	if err := s.waitFor(ctx, run, conveyorv1.RunRejected, "approve"); err != nil {
		return nil, err
	}
	if err := s.refuse(ctx, "omar", run, "production", conveyorv1.DecisionApprove, "already finished as Rejected"); err != nil {
		return nil, err
	}
	if err := s.noJobs(ctx, run, "production"); err != nil {
		return nil, err
	}
	return s.ended(ctx, "rita", run)
}

// outsider: a team whose namespace was never let into production applies
// the same Pipeline; the production Environment refuses it at admission.
func (s *Story) outsider(ctx context.Context) error {
	s.say("\n== Prologue: a team outside %s applies the same Pipeline ==", Namespace)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "team-"}}
	if err := s.Admin.Create(ctx, ns); err != nil {
		return err
	}
	p, err := s.seedPipeline()
	if err != nil {
		return err
	}
	p.Namespace = ns.Name
	err = s.Admin.Create(ctx, p)
	const want = "Environment production (namespace production), rule pipelines"
	if err == nil || !strings.Contains(err.Error(), want) {
		return fmt.Errorf("a Pipeline in namespace %s aimed at production: want a refusal naming %q, got %v", ns.Name, want, err)
	}
	s.say("Pipeline %s/%s: REFUSED by the API server: %s", ns.Name, p.Name, reason(err))
	return nil
}

// frozenRelease: the platform's admins freeze production; a release that
// reaches it waits as Frozen; a developer may not override the freeze; a
// release engineer does, saying why, and it deploys.
func (s *Story) frozenRelease(ctx context.Context) (*conveyorv1.PipelineRun, error) {
	s.say("\n== Act 4: production is frozen for the end of the quarter; rita tags v1.5.0 ==")
	lift, err := s.freeze(ctx, "production", conveyorv1.FreezeWindow{Name: "quarter-end", Reason: "end-of-quarter freeze",
		Start: &metav1.Time{Time: time.Now().Add(-time.Minute)}, End: &metav1.Time{Time: time.Now().Add(time.Hour)}})
	if err != nil {
		return nil, err
	}
	defer lift()
	run, err := s.throughPreProduction(ctx, conveyorv1.GitRef{Tag: "v1.5.0", Commit: "5e6f7a8b"})
	if err != nil {
		return nil, err
	}
	if err := s.allow(ctx, "rob", run, "approve", conveyorv1.DecisionApprove, "security fix verified"); err != nil {
		return nil, err
	}
	if err := s.waitFor(ctx, run, conveyorv1.RunWaiting, "production"); err != nil {
		return nil, err
	}
	if err := s.allow(ctx, "omar", run, "production", conveyorv1.DecisionApprove, "ship it"); err != nil {
		return nil, err
	}
	if err := s.waitStage(ctx, run, "production", conveyorv1.StageFrozen); err != nil {
		return nil, err
	}
	if err := s.noJobs(ctx, run, "production"); err != nil {
		return nil, err
	}
	if err := s.show(ctx, "rob", run); err != nil {
		return nil, err
	}
	if _, err := s.override(ctx, "dana", run, "production", "please"); err == nil || !strings.Contains(err.Error(), "may not override a freeze window") {
		return nil, fmt.Errorf("dana overriding the freeze: want a refusal, got %v", err)
	}
	if _, err := s.override(ctx, "rob", run, "production", "the security fix cannot wait for the quarter"); err != nil {
		return nil, fmt.Errorf("rob overriding the freeze was refused: %w", err)
	}
	if err := s.waitFor(ctx, run, conveyorv1.RunSucceeded, "production"); err != nil {
		return nil, err
	}
	return s.ended(ctx, "rita", run)
}

// freeze adds a freeze window to an Environment, as its admins would; lift
// takes it away again.
func (s *Story) freeze(ctx context.Context, name string, w conveyorv1.FreezeWindow) (lift func(), err error) {
	edit := func(change func(*conveyorv1.EnvironmentSpec)) error {
		env := &conveyorv1.Environment{}
		if err := s.Admin.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
			return err
		}
		change(&env.Spec)
		return s.Admin.Update(ctx, env)
	}
	if err := edit(func(e *conveyorv1.EnvironmentSpec) { e.FreezeWindows = append(e.FreezeWindows, w) }); err != nil {
		return nil, fmt.Errorf("freezing Environment %s: %w", name, err)
	}
	s.say("The platform admins add freeze window %s to Environment %s until %s (%s)", w.Name, name, w.End.UTC().Format(time.RFC3339), w.Reason)
	return func() {
		err := edit(func(e *conveyorv1.EnvironmentSpec) {
			e.FreezeWindows = slices.DeleteFunc(e.FreezeWindows, func(x conveyorv1.FreezeWindow) bool { return x.Name == w.Name })
		})
		if err != nil {
			s.say("lifting freeze window %s: %v", w.Name, err)
			return
		}
		s.say("The platform admins lift freeze window %s", w.Name)
	}, nil
}

// override asks, as who, to deploy a Frozen stage now.
func (s *Story) override(ctx context.Context, who string, run *conveyorv1.PipelineRun, stage, comment string) (*conveyorv1.Approval, error) {
	return s.decide(ctx, who, "override", run, stage, comment)
}

// waitStage waits until a stage of the run is in phase, and tells its message.
func (s *Story) waitStage(ctx context.Context, run *conveyorv1.PipelineRun, stage string, phase conveyorv1.StagePhase) error {
	deadline := time.Now().Add(s.Timeout)
	for {
		cur, err := s.get(ctx, run)
		if err != nil {
			return err
		}
		for _, st := range cur.Status.Stages {
			if st.Name == stage && st.Phase == phase {
				s.say("  %s  %-15s %-9s %s", cur.Name, st.Name, st.Phase, st.Message)
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("run %s: stage %s never became %s", run.Name, stage, phase)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// seedPipeline reads the seed's Pipeline from config/samples.
func (s *Story) seedPipeline() (*conveyorv1.Pipeline, error) {
	data, err := os.ReadFile(s.Root + "/config/samples/pipeline.yaml")
	if err != nil {
		return nil, err
	}
	p := &conveyorv1.Pipeline{}
	return p, yaml.UnmarshalStrict(data, p)
}

// throughPreProduction starts a tag run as rita and takes it to the approve
// stage: omar (devops) deploys to staging, tess (testers) to pre-production.
func (s *Story) throughPreProduction(ctx context.Context, git conveyorv1.GitRef) (*conveyorv1.PipelineRun, error) {
	run, err := s.startRun(ctx, "rita", git)
	if err != nil {
		return nil, err
	}
	steps := []struct{ who, stage, comment string }{
		{"omar", "staging", "deploy the release candidate"},
		{"tess", "pre-production", "regression suite green on staging"},
	}
	for _, st := range steps {
		if err := s.waitFor(ctx, run, conveyorv1.RunWaiting, st.stage); err != nil {
			return nil, err
		}
		if err := s.allow(ctx, st.who, run, st.stage, conveyorv1.DecisionApprove, st.comment); err != nil {
			return nil, err
		}
	}
	return run, s.waitFor(ctx, run, conveyorv1.RunWaiting, "approve")
}

func (s *Story) startRun(ctx context.Context, who string, git conveyorv1.GitRef) (*conveyorv1.PipelineRun, error) {
	args := []string{"start", "shop", "--tag", git.Tag}
	if git.Branch != "" {
		args = []string{"start", "shop", "--branch", git.Branch}
	}
	out, err := s.kubectl(ctx, who, append(args, "--commit", git.Commit)...)
	if err != nil {
		return nil, fmt.Errorf("%s starting a run for %s: %w", who, engine.RefString(git), err)
	}
	m := createdRun.FindStringSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("kubectl conveyor start printed no run name: %q", out)
	}
	run := &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: m[1]}}
	if run, err = s.get(ctx, run); err != nil {
		return nil, err
	}
	s.say("  (requester recorded by the API server: %s)", run.Spec.Requester.Username)
	return run, nil
}

var (
	createdRun      = regexp.MustCompile(`pipelinerun/(\S+) created`)
	createdApproval = regexp.MustCompile(`approval/(\S+) created`)
)

// kubectl runs kubectl conveyor as who, showing the command as typed and
// what it printed; a non-zero exit is an error with what it printed on stderr.
func (s *Story) kubectl(ctx context.Context, who string, args ...string) (string, error) {
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = a
		if strings.ContainsAny(a, " :'\"") {
			quoted[i] = strconv.Quote(a)
		}
	}
	s.say("\n$ kubectl --context %s conveyor %s", who, strings.Join(quoted, " "))
	colour := "never"
	if s.Colour {
		colour = "always"
	}
	var out, errOut bytes.Buffer
	all := append([]string{"--kubeconfig", s.Kubeconfig, "--context", who, "-n", Namespace, "--color", colour}, args...)
	code := cli.MainContext(ctx, all, genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	fmt.Fprint(s.Out, out.String()+errOut.String())
	if code != 0 {
		return out.String(), fmt.Errorf("exit %d: %s", code, strings.TrimSpace(errOut.String()))
	}
	return out.String(), nil
}

// ended draws the finished run's graph as who sees it and returns the run.
func (s *Story) ended(ctx context.Context, who string, run *conveyorv1.PipelineRun) (*conveyorv1.PipelineRun, error) {
	if err := s.show(ctx, who, run); err != nil {
		return nil, err
	}
	return s.get(ctx, run)
}

// show draws the run's graph as who sees it.
func (s *Story) show(ctx context.Context, who string, run *conveyorv1.PipelineRun) error {
	_, err := s.kubectl(ctx, who, "get", run.Name)
	return err
}

// allow decides a stage as who and expects the API server to accept it.
func (s *Story) allow(ctx context.Context, who string, run *conveyorv1.PipelineRun, stage string, d conveyorv1.ApprovalDecision, comment string) error {
	if _, err := s.decide(ctx, who, verb(stage, d), run, stage, comment); err != nil {
		return fmt.Errorf("%s %s %s was refused: %w", who, verb(stage, d), stage, err)
	}
	return nil
}

// refuse decides a stage as who and expects the API server to refuse it
// with a message containing want.
func (s *Story) refuse(ctx context.Context, who string, run *conveyorv1.PipelineRun, stage string, d conveyorv1.ApprovalDecision, want string) error {
	_, err := s.decide(ctx, who, verb(stage, d), run, stage, "")
	if err == nil {
		return fmt.Errorf("the API server let %s %s stage %s of %s", who, verb(stage, d), stage, run.Name)
	}
	if !strings.Contains(err.Error(), want) {
		return fmt.Errorf("%s %s %s was refused, but not for the expected reason (%q): %w", who, verb(stage, d), stage, want, err)
	}
	return nil
}

// decide runs kubectl conveyor VERB RUN STAGE [-m comment] as who (verb is
// trigger, approve, reject or override) and returns the Approval it created.
func (s *Story) decide(ctx context.Context, who, verb string, run *conveyorv1.PipelineRun, stage, comment string) (*conveyorv1.Approval, error) {
	args := []string{verb, run.Name, stage}
	if comment != "" {
		args = append(args, "-m", comment)
	}
	out, err := s.kubectl(ctx, who, args...)
	if err != nil {
		return nil, err
	}
	m := createdApproval.FindStringSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("kubectl conveyor %s printed no Approval name: %q", verb, out)
	}
	a := &conveyorv1.Approval{}
	return a, s.Admin.Get(ctx, client.ObjectKey{Namespace: run.Namespace, Name: m[1]}, a)
}

// waitFor waits until the run is in phase at stage, telling every stage
// change on the way.
func (s *Story) waitFor(ctx context.Context, run *conveyorv1.PipelineRun, phase conveyorv1.RunPhase, stage string) error {
	deadline := time.Now().Add(s.Timeout)
	if s.told == nil {
		s.told = map[string]map[string]conveyorv1.StagePhase{}
	}
	if s.told[run.Name] == nil {
		s.told[run.Name] = map[string]conveyorv1.StagePhase{}
	}
	seen := s.told[run.Name]
	for {
		cur := &conveyorv1.PipelineRun{}
		if err := s.Admin.Get(ctx, client.ObjectKeyFromObject(run), cur); err != nil {
			return err
		}
		for _, st := range cur.Status.Stages {
			if seen[st.Name] == st.Phase || st.Phase == conveyorv1.StagePending {
				continue
			}
			seen[st.Name] = st.Phase
			where := ""
			if st.Namespace != "" && st.Namespace != run.Namespace && st.Phase == conveyorv1.StageRunning {
				where = " in namespace " + st.Namespace
			}
			s.say("  %s  %-15s %-9s %s%s", cur.Name, st.Name, st.Phase, st.Message, where)
		}
		if cur.Status.Phase == phase && cur.Status.CurrentStage == stage {
			if phase.Finished() {
				s.say("  %s  finished: %s", cur.Name, cur.Status.Phase)
			}
			return nil
		}
		if cur.Status.Phase.Finished() || time.Now().After(deadline) {
			msg := ""
			if c := meta.FindStatusCondition(cur.Status.Conditions, conveyorv1.ConditionReady); c != nil {
				msg = c.Reason + ": " + c.Message
			}
			return fmt.Errorf("run %s is %s at %s (%s), want %s at %s", cur.Name, cur.Status.Phase, cur.Status.CurrentStage, msg, phase, stage)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// noJobs checks that the run has no Job for the stage, in any namespace.
func (s *Story) noJobs(ctx context.Context, run *conveyorv1.PipelineRun, stage string) error {
	jobs := &batchv1.JobList{}
	if err := s.Admin.List(ctx, jobs, client.MatchingLabels{conveyorv1.LabelRunUID: string(run.UID), conveyorv1.LabelStage: stage}); err != nil {
		return err
	}
	if len(jobs.Items) > 0 {
		return fmt.Errorf("run %s has a %s Job: %s/%s", run.Name, stage, jobs.Items[0].Namespace, jobs.Items[0].Name)
	}
	s.say("  %s  no %s Job exists", run.Name, stage)
	return nil
}

func (s *Story) waitPipelineReady(ctx context.Context, name string) error {
	deadline := time.Now().Add(s.Timeout)
	for time.Now().Before(deadline) {
		p := &conveyorv1.Pipeline{}
		if err := s.Admin.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: name}, p); err != nil {
			return err
		}
		if meta.IsStatusConditionTrue(p.Status.Conditions, conveyorv1.ConditionReady) {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("pipeline %s did not become Ready", name)
}

func (s *Story) get(ctx context.Context, run *conveyorv1.PipelineRun) (*conveyorv1.PipelineRun, error) {
	cur := &conveyorv1.PipelineRun{}
	return cur, s.Admin.Get(ctx, client.ObjectKeyFromObject(run), cur)
}

// summary shows, as rita, where the story's runs and releases stand.
func (s *Story) summary(ctx context.Context) error {
	s.say("\n== Where the releases stand ==")
	if _, err := s.kubectl(ctx, "rita", "list"); err != nil {
		return err
	}
	_, err := s.kubectl(ctx, "rita", "history", "shop")
	return err
}

// verb is what an Approval does in the seed's pipeline, where "approve" is
// the one approval stage.
func verb(stage string, d conveyorv1.ApprovalDecision) string {
	switch {
	case d == conveyorv1.DecisionReject:
		return "reject"
	case stage == "approve":
		return "approve"
	}
	return "trigger"
}

func refName(git conveyorv1.GitRef) string {
	_, name := engine.Ref(git)
	return name
}

// reason is the API server's message without the webhook's preamble.
func reason(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "is forbidden: "); i >= 0 {
		return msg[i+len("is forbidden: "):]
	}
	return msg
}
