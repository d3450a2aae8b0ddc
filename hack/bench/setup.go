package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
	"github.com/conveyor-dev/conveyor/test/framework/localcluster"
	"github.com/conveyor-dev/conveyor/test/framework/manifests"
)

// setUp starts kube-apiserver and etcd, the driver's client and cache, and
// the namespaces and Pipelines of every phase. stop stops the manager (once
// started) and the API server.
func setUp(ctx context.Context, o options) (*bench, func(), error) {
	env := &envtest.Environment{CRDDirectoryPaths: []string{filepath.Join(o.root, "config/crd/bases")}, ErrorIfCRDPathMissing: true}
	if o.webhooks {
		var err error
		if env.WebhookInstallOptions, err = webhookConfigs(o.root); err != nil {
			return nil, nil, err
		}
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, nil, fmt.Errorf("starting kube-apiserver and etcd: %w", err)
	}
	// The managers' logs (appended to across a restart) start empty.
	for _, name := range []string{"manager", "manager-shard-b"} {
		_ = os.Remove(filepath.Join(o.root, "bin/bench", name+".log"))
	}
	b := &bench{o: o, webhook: env.WebhookInstallOptions, jobSeen: map[string]chan struct{}{}, runFirst: map[string]chan struct{}{}, runDone: map[string]chan struct{}{}, approved: map[string]bool{}, approvedAt: map[string]time.Time{}}
	dir, err := os.MkdirTemp("", "conveyor-bench-")
	if err != nil {
		return nil, nil, err
	}
	stop := func() {
		b.stopManager()
		_ = env.Stop()
		_ = os.RemoveAll(dir)
	}
	if err := b.connect(ctx, env, cfg, dir); err != nil {
		stop()
		return nil, nil, err
	}
	if err := b.createWorld(ctx); err != nil {
		stop()
		return nil, nil, err
	}
	return b, stop, nil
}

// connect makes the driver's client and cache, and the manager's kubeconfig
// (a user of system:masters).
func (b *bench) connect(ctx context.Context, env *envtest.Environment, cfg *rest.Config, dir string) error {
	var err error
	b.cfg = rest.CopyConfig(cfg)
	b.cfg.QPS, b.cfg.Burst = 2000, 4000
	if b.c, err = client.New(b.cfg, client.Options{Scheme: localcluster.Scheme()}); err != nil {
		return err
	}
	b.requester, b.approver = b.c, b.c
	if b.o.webhooks {
		if b.requester, err = impersonating(b.cfg, "bench-requester"); err != nil {
			return err
		}
		// In every group the seed's stages name: triggers and the gate.
		if b.approver, err = impersonating(b.cfg, "bench-approver", "developers", "testers", "release-engineers", "devops"); err != nil {
			return err
		}
	}
	admin, err := env.AddUser(envtest.User{Name: benchManager, Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		return err
	}
	b.kubeconf = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(b.kubeconf, kc, 0o600); err != nil {
		return err
	}
	return b.startCache(ctx)
}

// createPipelines creates the Pipelines createWorld made.
func (b *bench) createPipelines(ctx context.Context) error {
	for _, p := range b.pipelines {
		if err := b.c.Create(ctx, p); err != nil {
			return fmt.Errorf("creating Pipeline %s/%s: %w", p.Namespace, p.Name, err)
		}
	}
	b.pipelines = nil
	return nil
}

// impersonating is a client acting as user, in groups and system:masters
// (the rights of the driver, the rules' groups of a person).
func impersonating(cfg *rest.Config, user string, groups ...string) (client.Client, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: append([]string{"system:masters"}, groups...)}
	return client.New(cfg, client.Options{Scheme: localcluster.Scheme()})
}

// benchManager is the user the managers run as.
const benchManager = "bench-manager"

// webhookConfigs reads the webhook configurations the manager serves
// (config/webhook), each limited to objects that are not the floor's (by
// the floor's shard label) and not the memory phase's copies of a finished
// run (labelCopy, written while the manager is stopped): the floor is a raw
// client's irreducible work, and goes through no admission. An object
// selector, not a namespace selector: with one, the API server looks up
// the labels of the namespace of every namespaced request (in its
// namespace cache), Jobs included, before it looks at the webhook's rules;
// the installed configurations, with no selector, never do. As installed,
// the release ledger's webhook is not called for the manager's writes.
// envtest points them at its local serving address.
func webhookConfigs(root string) (envtest.WebhookInstallOptions, error) {
	var wh envtest.WebhookInstallOptions
	data, err := os.ReadFile(filepath.Join(root, "config/webhook/manifests.yaml"))
	if err != nil {
		return wh, err
	}
	notFloor := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: conveyorv1.LabelShard, Operator: metav1.LabelSelectorOpNotIn, Values: []string{floorShard}},
		{Key: labelCopy, Operator: metav1.LabelSelectorOpDoesNotExist}}}
	for _, doc := range strings.Split(string(data), "\n---\n") {
		var kind metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &kind); err != nil {
			return wh, err
		}
		switch kind.Kind {
		case "MutatingWebhookConfiguration":
			c := &admissionregistrationv1.MutatingWebhookConfiguration{}
			if err := yaml.UnmarshalStrict([]byte(doc), c); err != nil {
				return wh, err
			}
			for i := range c.Webhooks {
				c.Webhooks[i].ObjectSelector = notFloor
			}
			wh.MutatingWebhooks = append(wh.MutatingWebhooks, c)
		case "ValidatingWebhookConfiguration":
			c := &admissionregistrationv1.ValidatingWebhookConfiguration{}
			if err := yaml.UnmarshalStrict([]byte(doc), c); err != nil {
				return wh, err
			}
			for i := range c.Webhooks {
				c.Webhooks[i].ObjectSelector = notFloor
			}
			if err := manifests.SpareManager(root, c, benchManager); err != nil {
				return wh, err
			}
			wh.ValidatingWebhooks = append(wh.ValidatingWebhooks, c)
		}
	}
	if len(wh.MutatingWebhooks) == 0 || len(wh.ValidatingWebhooks) == 0 {
		return wh, fmt.Errorf("no webhook configurations in config/webhook/manifests.yaml")
	}
	return wh, nil
}

// createWorld creates the namespaces and Environments of every phase, and
// makes its Pipelines, created once the manager serves the webhooks that
// admit them (createPipelines).
func (b *bench) createWorld(ctx context.Context) error {
	for _, ns := range append([]string{"bench", "react", "floor"}, localcluster.Environments...) {
		// The shipped production Environment takes Pipelines from namespaces
		// labelled for it.
		labels := map[string]string{"conveyor.dev/production": "allowed"}
		if err := b.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}); err != nil {
			return err
		}
	}
	if err := b.environments(ctx, ""); err != nil {
		return err
	}
	for _, ns := range []string{"bench", "react"} {
		if err := b.seedPipeline(ctx, ns); err != nil {
			return err
		}
	}
	// Each throughput lane (a team) deploys to environments of its own: one
	// deploy at a time per environment would otherwise make the phase a
	// measure of the queue (measured apart, in phase 3b).
	for i := 0; i < b.o.concurrency; i++ {
		for _, env := range localcluster.Environments {
			if err := b.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: lanePrefix(i) + env}}); err != nil {
				return err
			}
		}
		if err := b.environments(ctx, lanePrefix(i)); err != nil {
			return err
		}
		if err := b.lanePipeline(ctx, "bench", fmt.Sprintf("shop-%d", i), lanePrefix(i)); err != nil {
			return err
		}
	}
	if err := b.handoffSetup(ctx); err != nil {
		return err
	}
	if err := b.fillHistory(ctx); err != nil {
		return err
	}
	return b.fillReleases(ctx)
}

// fillHistory records --deploy-history earlier deploys in every
// Environment's status, as the manager records them (engine.RecordDeploy):
// a cluster that has deployed for a while.
func (b *bench) fillHistory(ctx context.Context) error {
	if b.o.deployHistory == 0 {
		return nil
	}
	envs := &conveyorv1.EnvironmentList{}
	if err := b.c.List(ctx, envs); err != nil {
		return err
	}
	now := time.Now()
	for i := range envs.Items {
		env := &envs.Items[i]
		for d := b.o.deployHistory; d > 0; d-- {
			engine.RecordDeploy(&env.Status, conveyorv1.Deploy{
				Pipeline: "bench/shop", Run: fmt.Sprintf("bench/shop-old-%d", d), RunUID: fmt.Sprintf("00000000-0000-0000-0000-%012d", d),
				Stage: "deploy", Ref: fmt.Sprintf("tag v0.%d.0", d), Release: fmt.Sprintf("v0.%d.0", d),
				Commit: fmt.Sprintf("%040x", d), By: "bench-approver", At: metav1.NewTime(now.Add(-time.Duration(d) * time.Hour)),
			})
		}
		if err := b.c.Status().Update(ctx, env); err != nil {
			return fmt.Errorf("recording earlier deploys in %s: %w", env.Name, err)
		}
	}
	return nil
}

// fillReleases creates --release-history earlier Releases of every lane's
// Pipeline, each another tag, approved and deployed to the lane's three
// environments. Written by hand, not by engine.RecordRelease (there is no
// run to record): close to the manager's in size, not checked field by
// field against them. They carry the bench's
// copy label, which the bench's webhook configurations leave out: the
// ledger's webhook admits no one's writes but the manager's.
func (b *bench) fillReleases(ctx context.Context) error {
	if b.o.releaseHistory == 0 {
		return nil
	}
	at := metav1.NewTime(time.Now().Add(-time.Hour))
	var g errgroup.Group
	g.SetLimit(16)
	for lane := 0; lane < b.o.concurrency; lane++ {
		pipeline := fmt.Sprintf("shop-%d", lane)
		for n := 1; n <= b.o.releaseHistory; n++ {
			g.Go(func() error {
				tag, run := fmt.Sprintf("v0.%d.0", n), fmt.Sprintf("%s-old-%d", pipeline, n)
				rel := &conveyorv1.Release{
					ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: engine.ReleaseName(pipeline, tag), Labels: map[string]string{
						conveyorv1.LabelPipeline: pipeline, conveyorv1.LabelManagedBy: conveyorv1.ManagedByValue, labelCopy: "true"}},
					Spec:   conveyorv1.ReleaseSpec{PipelineRef: conveyorv1.PipelineReference{Name: pipeline}, Tag: tag, Commit: fmt.Sprintf("%040x", n)},
					Status: conveyorv1.ReleaseStatus{Verdict: conveyorv1.VerdictApproved, DecidedBy: "bench-approver", DecidedAt: &at},
				}
				for _, stage := range []string{"staging", "pre-production", "approve", "production"} {
					rel.Status.Decisions = append(rel.Status.Decisions, conveyorv1.ReleaseDecision{Verdict: conveyorv1.VerdictApproved, Stage: stage,
						Run: run, RunUID: fmt.Sprintf("00000000-0000-0000-0000-%012d", n), By: []string{"bench-approver"}, Time: at})
					if stage != "approve" {
						env := lanePrefix(lane) + stage
						rel.Status.Environments = append(rel.Status.Environments, conveyorv1.ReleaseEnvironment{Name: env, Stage: stage, Run: run,
							TriggeredBy: "bench-approver", Time: at})
						rel.Status.LastEnvironment = env
					}
				}
				return b.c.Create(ctx, rel)
			})
		}
	}
	return g.Wait()
}

// startCache watches Jobs and runs for the driver: it completes Jobs as the Job
// controller would, and approves what runs wait for.
func (b *bench) startCache(ctx context.Context) error {
	var err error
	if b.cache, err = cache.New(b.cfg, cache.Options{Scheme: localcluster.Scheme()}); err != nil {
		return err
	}
	jobs, err := b.cache.GetInformer(ctx, &batchv1.Job{})
	if err != nil {
		return err
	}
	complete := make(chan *batchv1.Job, 100000)
	if _, err := jobs.AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: func(o any) { b.jobAdded(o.(*batchv1.Job), complete) }}); err != nil {
		return err
	}
	for i := 0; i < 16; i++ {
		go b.completeJobs(ctx, complete)
	}
	runs, err := b.cache.GetInformer(ctx, &conveyorv1.PipelineRun{})
	if err != nil {
		return err
	}
	onRun := func(o any) { b.runChanged(ctx, o.(*conveyorv1.PipelineRun)) }
	if _, err := runs.AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: onRun, UpdateFunc: func(_, o any) { onRun(o) }}); err != nil {
		return err
	}
	go func() { _ = b.cache.Start(ctx) }()
	if !b.cache.WaitForCacheSync(ctx) {
		return fmt.Errorf("the driver's cache did not sync")
	}
	return nil
}

// jobAdded notes a Job's appearance for whoever waits for it (the floor,
// the reaction, the handoff, the Approval latency) and queues it to be
// completed.
func (b *bench) jobAdded(j *batchv1.Job, complete chan<- *batchv1.Job) {
	b.mu.Lock()
	if j.Namespace == handoffEnv {
		b.handoffAdd[j.Name] = time.Now()
	}
	if ch := b.jobSeen[j.Name]; ch != nil {
		close(ch)
		delete(b.jobSeen, j.Name)
	}
	if _, run, ok := strings.Cut(j.Annotations[conveyorv1.AnnotationRun], "/"); ok {
		key := run + "/" + j.Labels[conveyorv1.LabelStage]
		if at, ok := b.approvedAt[key]; ok {
			b.approvalLat = append(b.approvalLat, time.Since(at))
			delete(b.approvedAt, key)
		}
	}
	if ch := b.runFirst[j.Annotations[conveyorv1.AnnotationRun]]; ch != nil {
		close(ch)
		delete(b.runFirst, j.Annotations[conveyorv1.AnnotationRun])
	}
	b.mu.Unlock()
	// Jobs of the reaction runs stay running: those runs keep still, so
	// each sample meets an otherwise idle manager.
	if j.Labels[conveyorv1.LabelRunUID] != "" && j.Namespace != "react" {
		complete <- j
	}
}

// completeJobs plays the Job controller for the Jobs queued.
func (b *bench) completeJobs(ctx context.Context, complete <-chan *batchv1.Job) {
	for j := range complete {
		if err := completeJob(ctx, b.c, j); err != nil {
			fmt.Fprintln(os.Stderr, "completing Job:", err)
		}
		if j.Namespace == handoffEnv {
			b.mu.Lock()
			b.handoffDone[j.Name] = time.Now()
			b.mu.Unlock()
		}
		b.completes.Add(1)
	}
}

// runChanged tells whoever waits for a run's end, and plays the people: an
// Approval for each stage a run waits at, once.
func (b *bench) runChanged(ctx context.Context, r *conveyorv1.PipelineRun) {
	if r.Status.Phase.Finished() {
		b.mu.Lock()
		if ch := b.runDone[r.Name]; ch != nil {
			close(ch)
			delete(b.runDone, r.Name)
		}
		b.mu.Unlock()
		return
	}
	if r.Status.Phase != conveyorv1.RunWaiting {
		return
	}
	key := r.Name + "/" + r.Status.CurrentStage
	b.mu.Lock()
	done := b.approved[key]
	b.approved[key] = true
	b.mu.Unlock()
	if !done {
		go b.approve(ctx, r, key)
	}
}

// approve creates the Approval of the stage the run waits at, labelled with
// the run's shard as admission labels it.
func (b *bench) approve(ctx context.Context, r *conveyorv1.PipelineRun, key string) {
	b.mu.Lock()
	b.approvedAt[key] = time.Now()
	b.mu.Unlock()
	var labels map[string]string
	if shard, ok := r.Labels[conveyorv1.LabelShard]; ok {
		labels = map[string]string{conveyorv1.LabelShard: shard}
	}
	a := &conveyorv1.Approval{ObjectMeta: metav1.ObjectMeta{Name: strings.ReplaceAll(key, "/", "-"), Namespace: r.Namespace, Labels: labels},
		Spec: conveyorv1.ApprovalSpec{PipelineRunRef: conveyorv1.PipelineRunReference{Name: r.Name}, Stage: r.Status.CurrentStage, Decision: conveyorv1.DecisionApprove}}
	if err := b.approver.Create(ctx, a); client.IgnoreAlreadyExists(err) != nil {
		fmt.Fprintln(os.Stderr, "creating Approval:", err)
	}
}

// completeJob sets a Job's status as the Job controller does when its pod succeeded.
func completeJob(ctx context.Context, c client.Client, j *batchv1.Job) error {
	now := metav1.Now()
	j = j.DeepCopy()
	j.Status.StartTime, j.Status.CompletionTime, j.Status.Succeeded = &now, &now, 1
	j.Status.Conditions = []batchv1.JobCondition{
		{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now},
	}
	return c.Status().Update(ctx, j)
}

func (b *bench) seedPipeline(ctx context.Context, ns string) error {
	return b.lanePipeline(ctx, ns, "shop", "")
}

// lanePipeline makes the seed's pipeline under another name, its
// environments prefixed (staging becomes <prefix>staging), in namespace ns,
// to be created with the others (createPipelines).
func (b *bench) lanePipeline(ctx context.Context, ns, name, prefix string) error {
	data, err := os.ReadFile(filepath.Join(b.o.root, "config/samples/pipeline.yaml"))
	if err != nil {
		return err
	}
	p := &conveyorv1.Pipeline{}
	if err := yaml.UnmarshalStrict(data, p); err != nil {
		return err
	}
	p.Name, p.Namespace = name, ns
	// Keep every run: the memory phases measure retained runs.
	p.Spec.History = &conveyorv1.History{Succeeded: ptr.To[int32](1000), Failed: ptr.To[int32](1000)}
	for i := range p.Spec.Stages {
		if env := p.Spec.Stages[i].Environment; env != "" {
			p.Spec.Stages[i].Environment = prefix + env
		}
	}
	b.pipelines = append(b.pipelines, p)
	return nil
}

// environments creates the shipped Environments (the seed's rules) with
// their names and namespaces prefixed, as lanePipeline prefixes its stages'.
func (b *bench) environments(ctx context.Context, prefix string) error {
	objs, err := manifests.ReadFile(filepath.Join(b.o.root, "config/environments/seed_environments.yaml"))
	if err != nil {
		return err
	}
	for _, u := range objs {
		env := &conveyorv1.Environment{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, env); err != nil {
			return err
		}
		env.Name, env.Spec.Namespace = prefix+env.Name, prefix+env.Spec.Namespace
		for i := range env.Spec.Requires {
			env.Spec.Requires[i] = prefix + env.Spec.Requires[i]
		}
		if err := b.c.Create(ctx, env); err != nil {
			return err
		}
	}
	return nil
}

// lanePrefix is the prefix of the environments of throughput lane i.
func lanePrefix(i int) string { return fmt.Sprintf("lane-%d-", i) }

// mainShard is the first manager's --watch-label-selector: the runs without
// a shard label (the floor's runs and phase 3c's shard b have one).
const mainShard = "!" + conveyorv1.LabelShard

// startManager starts the manager as a process with its default settings
// (but for the client limits the bench is told), serving the webhooks
// (unless told not to), metrics and pprof on local ports. It handles the runs without a shard label: the
// floor's runs carry one, and so do the second shard's (phase 3c).
func (b *bench) startManager(ctx context.Context) error {
	port, err := localcluster.FreePort()
	if err != nil {
		return err
	}
	b.metrics = fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	pport, err := localcluster.FreePort()
	if err != nil {
		return err
	}
	b.pprof = fmt.Sprintf("http://127.0.0.1:%d/debug/pprof", pport)
	args := []string{fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", port), fmt.Sprintf("--pprof-bind-address=127.0.0.1:%d", pport)}
	if b.o.webhooks {
		args = append(args, "--webhooks=true", "--webhook-host="+b.webhook.LocalServingHost,
			fmt.Sprintf("--webhook-port=%d", b.webhook.LocalServingPort), "--webhook-cert-dir="+b.webhook.LocalServingCertDir)
	}
	b.mgr, b.mgrDone, err = b.spawnManager("manager", mainShard, args...)
	if err != nil {
		return err
	}
	if err := waitMetrics(b.metrics); err != nil || !b.o.webhooks {
		return err
	}
	return waitListening(net.JoinHostPort(b.webhook.LocalServingHost, strconv.Itoa(b.webhook.LocalServingPort)))
}

// waitListening waits until something listens at addr.
func waitListening(addr string) error {
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			return conn.Close()
		}
	}
	return fmt.Errorf("the manager's webhook server at %s did not come up (logs in bin/bench)", addr)
}

// startShard starts a second manager for the runs labelled shard b, as the
// chart runs a shard.
func (b *bench) startShard() error {
	port, err := localcluster.FreePort()
	if err != nil {
		return err
	}
	b.shard, b.shardEnd, err = b.spawnManager("manager-shard-b", conveyorv1.LabelShard+"=b", fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", port), "--environment-status=false")
	if err != nil {
		return err
	}
	return waitMetrics(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
}

// spawnManager starts a manager process for the shard the selector picks,
// logging to bin/bench/<name>.log. It serves no webhooks unless args say so
// (one manager serves them); without webhooks, it trusts Approvals that
// carry no approver recorded by them.
func (b *bench) spawnManager(name, selector string, args ...string) (*exec.Cmd, chan struct{}, error) {
	cmd := exec.Command(b.o.managerBin, append([]string{"--webhooks=false", fmt.Sprintf("--insecure-trust-unrecorded-approvers=%t", !b.o.webhooks), "--metrics-secure=false", "--leader-elect=false", "--health-probe-bind-address=0",
		"--watch-label-selector=" + selector, fmt.Sprintf("--kube-api-qps=%g", b.o.qps), fmt.Sprintf("--kube-api-burst=%d", b.o.burst)}, append(args, b.o.managerFlags...)...)...)
	if os.Getenv("BENCH_MANAGER_DEBUG") != "" {
		cmd.Args = append(cmd.Args, "--zap-log-level=debug", "--zap-time-encoding=rfc3339nano")
	}
	cmd.Env = append(os.Environ(), "KUBECONFIG="+b.kubeconf)
	if err := os.MkdirAll(filepath.Join(b.o.root, "bin/bench"), 0o755); err != nil {
		return nil, nil, err
	}
	logf, err := os.OpenFile(filepath.Join(b.o.root, "bin/bench", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	return cmd, done, nil
}

// waitMetrics waits until a manager serves its metrics.
func waitMetrics(url string) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := scrape(url); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("the manager's metrics at %s did not come up (logs in bin/bench)", url)
}

// stopManager stops the managers.
func (b *bench) stopManager() {
	stop(b.mgr, b.mgrDone)
	stop(b.shard, b.shardEnd)
	b.mgr, b.shard = nil, nil
}

func stop(cmd *exec.Cmd, done chan struct{}) {
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func (b *bench) newRun(ctx context.Context, ns, name string) (*conveyorv1.PipelineRun, error) {
	return b.newRunOf(ctx, ns, "shop", name)
}

func (b *bench) newRunOf(ctx context.Context, ns, pipeline, name string) (*conveyorv1.PipelineRun, error) {
	return b.newRunLabelled(ctx, ns, pipeline, name, "")
}

// newRunLabelled creates a run in shard (none when "").
func (b *bench) newRunLabelled(ctx context.Context, ns, pipeline, name, shard string) (*conveyorv1.PipelineRun, error) {
	r := &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: conveyorv1.PipelineRunSpec{PipelineRef: conveyorv1.PipelineReference{Name: pipeline}, Git: conveyorv1.GitRef{Tag: "v1.0.0", Commit: "abcdef1"}}}
	if shard != "" {
		r.Labels = map[string]string{conveyorv1.LabelShard: shard}
	}
	return r, b.requester.Create(ctx, r)
}
