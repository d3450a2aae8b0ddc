package admission

import (
	"context"
	"fmt"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
	"github.com/conveyor-dev/conveyor/controllers/environment"
	"github.com/conveyor-dev/conveyor/controllers/ledger"
	"github.com/conveyor-dev/conveyor/controllers/outbound"
)

// +kubebuilder:webhook:path=/mutate-conveyor-dev-v1alpha1-approval,mutating=true,failurePolicy=fail,sideEffects=None,groups=conveyor.dev,resources=approvals,verbs=create,versions=v1alpha1,name=mapproval.conveyor.dev,admissionReviewVersions=v1
// +kubebuilder:webhook:path=/validate-conveyor-dev-v1alpha1-approval,mutating=false,failurePolicy=fail,sideEffects=None,groups=conveyor.dev,resources=approvals,verbs=create;update,versions=v1alpha1,name=vapproval.conveyor.dev,admissionReviewVersions=v1
// +kubebuilder:webhook:path=/mutate-conveyor-dev-v1alpha1-pipelinerun,mutating=true,failurePolicy=fail,sideEffects=None,groups=conveyor.dev,resources=pipelineruns,verbs=create,versions=v1alpha1,name=mpipelinerun.conveyor.dev,admissionReviewVersions=v1
// +kubebuilder:webhook:path=/validate-conveyor-dev-v1alpha1-pipelinerun,mutating=false,failurePolicy=fail,sideEffects=None,groups=conveyor.dev,resources=pipelineruns,verbs=create;update,versions=v1alpha1,name=vpipelinerun.conveyor.dev,admissionReviewVersions=v1
// +kubebuilder:webhook:path=/validate-conveyor-dev-v1alpha1-pipeline,mutating=false,failurePolicy=fail,sideEffects=None,groups=conveyor.dev,resources=pipelines,verbs=create;update,versions=v1alpha1,name=vpipeline.conveyor.dev,admissionReviewVersions=v1

// +kubebuilder:webhook:path=/validate-conveyor-dev-v1alpha1-environment,mutating=false,failurePolicy=ignore,sideEffects=None,groups=conveyor.dev,resources=environments,verbs=create;update,versions=v1alpha1,name=venvironment.conveyor.dev,admissionReviewVersions=v1
// +kubebuilder:webhook:path=/validate-conveyor-dev-v1alpha1-release,mutating=false,failurePolicy=fail,sideEffects=None,groups=conveyor.dev,resources=releases,verbs=create;update,versions=v1alpha1,name=vrelease.conveyor.dev,admissionReviewVersions=v1

// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=selfsubjectreviews,verbs=create

// Options configure the webhooks.
type Options struct {
	// Guard is the outbound allowlist Pipelines' URLs (event sinks, commit
	// status API) must pass; nil allows any host but the refused addresses.
	Guard *outbound.Guard
}

// Setup registers the webhooks with the manager's webhook server. They read
// runs and Pipelines from the API server, not the cache: an Approval created
// right after its run must find it; but the run and Approval webhooks list
// collections from the manager's cache (namedFromAPI), and the run defaulter
// reads the Pipeline from it first (cacheFirst). It asks the API
// server who the manager is (a SelfSubjectReview): only the manager may
// change a run's finalizers and ownerReferences.
func Setup(mgr ctrl.Manager, opts Options) error {
	reader, err := admissionReader(mgr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	self := &authenticationv1.SelfSubjectReview{}
	if err := mgr.GetClient().Create(ctx, self); err != nil {
		return fmt.Errorf("asking the API server who the manager is (SelfSubjectReview): %w", err)
	}
	hot := namedFromAPI{api: reader, cache: mgr.GetClient()}
	rv := runValidator{reader: hot, client: mgr.GetClient(), manager: self.Status.UserInfo.Username}
	if err := ctrl.NewWebhookManagedBy(mgr, &conveyorv1.Approval{}).
		WithDefaulter(recordApprover{cache: mgr.GetClient(), api: reader}).
		WithValidator(approvalValidator{reader: hot}).
		Complete(); err != nil {
		return fmt.Errorf("approval webhooks: %w", err)
	}
	if err := ctrl.NewWebhookManagedBy(mgr, &conveyorv1.PipelineRun{}).
		WithDefaulter(recordRequester{manager: self.Status.UserInfo.Username, reader: cacheFirst{cache: mgr.GetClient(), api: reader}}).
		WithValidator(rv).
		Complete(); err != nil {
		return fmt.Errorf("pipelinerun webhooks: %w", err)
	}
	if err := ctrl.NewWebhookManagedBy(mgr, &conveyorv1.Release{}).
		WithValidator(releaseValidator{manager: self.Status.UserInfo.Username}).
		Complete(); err != nil {
		return fmt.Errorf("release webhooks: %w", err)
	}
	if err := ctrl.NewWebhookManagedBy(mgr, &conveyorv1.Pipeline{}).
		WithValidator(pipelineValidator{reader: reader, client: mgr.GetClient(), guard: opts.Guard}).
		Complete(); err != nil {
		return fmt.Errorf("pipeline webhooks: %w", err)
	}
	if err := ctrl.NewWebhookManagedBy(mgr, &conveyorv1.Environment{}).
		WithValidator(environmentValidator{reader: reader}).
		Complete(); err != nil {
		return fmt.Errorf("environment webhooks: %w", err)
	}
	return nil
}

// admissionReader is the webhooks' client for their reads from the API
// server. It has no client-side rate limit: the manager's client shares one
// token bucket (--kube-api-qps) among its reconcilers, which fill it under
// load, and a webhook's read then waited behind their writes while a
// person's request waited for the answer. Admission requests come from
// people's own requests, which the API server already limits (API Priority
// and Fairness).
func admissionReader(mgr ctrl.Manager) (client.Reader, error) {
	cfg := rest.CopyConfig(mgr.GetConfig())
	cfg.QPS, cfg.RateLimiter = -1, nil
	c, err := client.New(cfg, client.Options{Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper()})
	if err != nil {
		return nil, fmt.Errorf("the admission webhooks' client: %w", err)
	}
	return c, nil
}

// namedFromAPI is the reader of the webhooks on the hot path, the creates of
// runs and Approvals: a named object (a run, a Pipeline, a Release) from
// the API server, so that one created just before is found
// (an Approval created right after its run); a collection (every
// Environment, the refused Releases of a Pipeline) from the manager's cache,
// which the run reconciler decides from: it counts an Approval, and stops a
// run the ledger bars, by the same rules and from that cache, so a list
// from the API server held no rule harder. It cost: a list without a
// resourceVersion is answered once the API server's watch cache has caught
// up with etcd (about 20 ms on an idle API server), and the Approval
// validator listed every Environment (in a short bench trial, 300 of them:
// 166 ms a call under load, against 26 ms from the cache). The Pipeline and
// Environment validators, off the hot path, list from the API server: a
// GitOps tool applies Environments and the Pipelines that deploy to them
// together.
type namedFromAPI struct{ api, cache client.Reader }

func (r namedFromAPI) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	return r.api.Get(ctx, key, obj, opts...)
}

func (r namedFromAPI) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	return r.cache.List(ctx, list, opts...)
}

// cacheFirst gets an object from the manager's cache, and from the API
// server when the cache does not have it (created just before). It serves
// the run defaulter, whose reading of the Pipeline decides nothing the
// validator does not check again from the API server: the shard label it
// copies is refused there if the Pipeline's differs, and a cleanup
// finalizer it leaves out is put on by the manager. Under load its GET was
// the defaulter's whole time (37–45 ms a call in 300-run bench trials).
type cacheFirst struct{ cache, api client.Reader }

func (r cacheFirst) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	err := r.cache.Get(ctx, key, obj, opts...)
	if apierrors.IsNotFound(err) {
		return r.api.Get(ctx, key, obj, opts...)
	}
	return err
}

func (r cacheFirst) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	return r.api.List(ctx, list, opts...)
}

// requester is the authenticated user of the admission request.
func requester(ctx context.Context) (admission.Request, error) {
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return req, apierrors.NewInternalError(fmt.Errorf("no admission request: %w", err))
	}
	return req, nil
}

// isRequester reports whether the recorded user is the request's authenticated user.
func isRequester(recorded *conveyorv1.UserInfo, req admission.Request) bool {
	return recorded != nil && recorded.Username == req.UserInfo.Username && recorded.UID == req.UserInfo.UID
}

// recordApprover writes the authenticated user into spec.approver, and the
// run into spec.run, on create, replacing whatever the client wrote.
type recordApprover struct{ cache, api client.Reader }

func (r recordApprover) Default(ctx context.Context, a *conveyorv1.Approval) error {
	req, err := requester(ctx)
	if err != nil {
		return err
	}
	a.Spec.Approver = Identity(req.UserInfo)
	run, err := r.readRun(ctx, a)
	if err != nil {
		return err
	}
	a.Spec.Run = RecordRun(run)
	CopyShard(a, labelsOf(run))
	return nil
}

// readRun reads the Approval's run from the manager's cache when the cache
// shows the Approval's stage waiting, else from the API server. What
// spec.run records of a run does not change while one of its stages waits:
// its UID, its commit, and its values (its parameters, and the results of
// the stages before, which have all ended). So a cache that shows the wait
// records what the API server would; and the validator reads the run from
// the API server and refuses an Approval whose spec.run differs (a run
// deleted and created again under the name, which the cache has not seen
// yet). A stage the cache does not show waiting (an Approval given ahead,
// or a wait the cache has not seen yet) is read from the API server, since
// results may still be written. Under load the GET was most of the
// defaulter's time (26–34 ms a call in 300-run bench trials).
func (r recordApprover) readRun(ctx context.Context, a *conveyorv1.Approval) (*conveyorv1.PipelineRun, error) {
	cached := &conveyorv1.PipelineRun{}
	if err := r.cache.Get(ctx, types.NamespacedName{Namespace: a.Namespace, Name: a.Spec.PipelineRunRef.Name}, cached); err == nil && engine.StageWaiting(cached, a.Spec.Stage) {
		return cached, nil
	}
	return readRun(ctx, r.api, a)
}

// CopyShard gives obj the manager shard label found in from, the labels of
// the object it follows (none when from has none), whatever the client
// wrote: a run takes its Pipeline's shard, an Approval its run's, so the one
// manager that handles the run sees them all.
func CopyShard(obj metav1.Object, from map[string]string) {
	labels := obj.GetLabels()
	shard, ok := from[conveyorv1.LabelShard]
	if !ok {
		delete(labels, conveyorv1.LabelShard)
		return
	}
	if labels == nil {
		labels = map[string]string{}
	}
	labels[conveyorv1.LabelShard] = shard
	obj.SetLabels(labels)
}

// checkShard refuses obj when its shard label is not the one in from (a
// mutation after ours changed it).
func checkShard(obj metav1.Object, from map[string]string, what string) error {
	got, ok := obj.GetLabels()[conveyorv1.LabelShard]
	if exp, eok := from[conveyorv1.LabelShard]; got != exp || ok != eok {
		return fmt.Errorf("label %s must be %s's (%q): the manager shard that handles the run sees it only then", conveyorv1.LabelShard, what, exp)
	}
	return nil
}

// readRun reads the Approval's run from the API server; nil when it does not exist.
func readRun(ctx context.Context, reader client.Reader, a *conveyorv1.Approval) (*conveyorv1.PipelineRun, error) {
	return readOrNil(ctx, reader, types.NamespacedName{Namespace: a.Namespace, Name: a.Spec.PipelineRunRef.Name}, &conveyorv1.PipelineRun{})
}

// readOrNil reads obj from the API server; nil when it does not exist, and
// any other error as the webhook's internal error.
func readOrNil[T client.Object](ctx context.Context, reader client.Reader, key types.NamespacedName, obj T) (T, error) {
	var none T
	err := reader.Get(ctx, key, obj)
	if apierrors.IsNotFound(err) {
		return none, nil
	}
	if err != nil {
		return none, apierrors.NewInternalError(fmt.Errorf("reading %T %s: %w", obj, key, err))
	}
	return obj, nil
}

// labelsOf are an object's labels; none when it is nil (does not exist).
func labelsOf[T any, P interface {
	*T
	GetLabels() map[string]string
}](o P) map[string]string {
	if o == nil {
		return nil
	}
	return o.GetLabels()
}

// readPipeline reads the run's Pipeline from the API server; nil when it does not exist.
func readPipeline(ctx context.Context, reader client.Reader, run *conveyorv1.PipelineRun) (*conveyorv1.Pipeline, error) {
	return readOrNil(ctx, reader, types.NamespacedName{Namespace: run.Namespace, Name: run.Spec.PipelineRef.Name}, &conveyorv1.Pipeline{})
}

// recordRequester writes the authenticated user into spec.requester on create,
// replacing whatever the client wrote; but for a run the push receiver (the
// manager) creates with the Kubernetes user its Pipeline maps the pusher to
// (the validator checks the mapping). It also copies the Pipeline's shard
// label, and puts on the cleanup finalizer when the Pipeline deploys outside
// the run's namespace (placeFinalizer).
type recordRequester struct {
	manager string
	reader  client.Reader
}

func (d recordRequester) Default(ctx context.Context, run *conveyorv1.PipelineRun) error {
	req, err := requester(ctx)
	if err != nil {
		return err
	}
	pipeline, err := readPipeline(ctx, d.reader, run)
	if err != nil {
		return err
	}
	CopyShard(run, labelsOf(pipeline))
	placeFinalizer(run, pipeline)
	if pushed(run, req, d.manager) && run.Spec.Requester != nil && run.Spec.Requester.Username != "" {
		run.Spec.Requester = &conveyorv1.UserInfo{Username: run.Spec.Requester.Username}
		return nil
	}
	run.Spec.Requester = Identity(req.UserInfo)
	return nil
}

// placeFinalizer puts the cleanup finalizer (conveyorv1.CleanupFinalizer) on
// a run, as it is created, whose Pipeline has a stage for its ref outside the
// run's namespace: the manager then need not write it before that stage's
// first Job or lock, one write per run fewer. The manager still puts it on
// when it is missing (a Pipeline changed before the run started), so the
// finalizer never depends on this webhook. A run that turns out not to need
// it only keeps it until it is deleted.
func placeFinalizer(run *conveyorv1.PipelineRun, pipeline *conveyorv1.Pipeline) {
	if pipeline != nil && engine.DeploysOutside(run, &conveyorv1.PipelineRunStatus{PipelineSpec: &pipeline.Spec}) {
		controllerutil.AddFinalizer(run, conveyorv1.CleanupFinalizer)
	}
}

// pushed reports whether the manager's push receiver creates the run.
func pushed(run *conveyorv1.PipelineRun, req admission.Request, manager string) bool {
	return run.Spec.Trigger != nil && manager != "" && req.UserInfo.Username == manager
}

// approvalValidator enforces who may trigger or decide which stage.
type approvalValidator struct{ reader client.Reader }

func (v approvalValidator) ValidateCreate(ctx context.Context, a *conveyorv1.Approval) (admission.Warnings, error) {
	req, err := requester(ctx)
	if err != nil {
		return nil, err
	}
	// The mutating webhook recorded the requester; a later mutation may not swap it.
	if !isRequester(a.Spec.Approver, req) {
		return nil, apierrors.NewForbidden(conveyorv1.GroupVersion.WithResource("approvals").GroupResource(), a.Name,
			fmt.Errorf("spec.approver must be the authenticated requester %q", req.UserInfo.Username))
	}
	run, err := readRun(ctx, v.reader, a)
	if err != nil {
		return nil, err
	}
	// The mutating webhook recorded the run; a later mutation may not swap it.
	if run != nil && !equality.Semantic.DeepEqual(a.Spec.Run, RecordRun(run)) {
		return nil, apierrors.NewForbidden(conveyorv1.GroupVersion.WithResource("approvals").GroupResource(), a.Name,
			fmt.Errorf("spec.run must be PipelineRun %s as it is (uid %s)", run.Name, run.UID))
	}
	if err := checkShard(a, labelsOf(run), "its run"); err != nil {
		return nil, apierrors.NewForbidden(conveyorv1.GroupVersion.WithResource("approvals").GroupResource(), a.Name, err)
	}
	env, err := stageEnvironment(ctx, v.reader, run, a.Spec.Stage)
	if err != nil {
		return nil, err
	}
	if err := CheckApprovalIn(run, env, a, req.UserInfo); err != nil {
		return nil, apierrors.NewForbidden(conveyorv1.GroupVersion.WithResource("approvals").GroupResource(), a.Name, err)
	}
	return nil, nil
}

func (approvalValidator) ValidateUpdate(_ context.Context, old, updated *conveyorv1.Approval) (admission.Warnings, error) {
	return nil, CheckApprovalUpdate(old, updated)
}

func (approvalValidator) ValidateDelete(context.Context, *conveyorv1.Approval) (admission.Warnings, error) {
	return nil, nil
}

// runValidator refuses runs for refs their Pipeline does not allow, and
// changes to a run but a cancel by someone who may cancel it.
type runValidator struct {
	reader client.Reader
	// client asks SubjectAccessReviews.
	client client.Client
	// manager is the manager's username: only it changes a run's
	// finalizers and ownerReferences.
	manager string
}

func (v runValidator) ValidateCreate(ctx context.Context, run *conveyorv1.PipelineRun) (admission.Warnings, error) {
	req, err := requester(ctx)
	if err != nil {
		return nil, err
	}
	if err := v.checkCreator(run, req); err != nil {
		return nil, err
	}
	pipeline, err := readPipeline(ctx, v.reader, run)
	if err != nil {
		return nil, err
	}
	if err := checkShard(run, labelsOf(pipeline), "its Pipeline"); err != nil {
		return nil, forbidden(run.Name, err)
	}
	if pipeline == nil && pushed(run, req, v.manager) && !isRequester(run.Spec.Requester, req) {
		return nil, forbidden(run.Name, fmt.Errorf("Pipeline %s does not exist: no pusher mapping to check spec.requester against", run.Spec.PipelineRef.Name))
	}
	if pipeline == nil {
		return admission.Warnings{fmt.Sprintf("Pipeline %s does not exist in namespace %s yet: the run starts when it does", run.Spec.PipelineRef.Name, run.Namespace)}, nil
	}
	if err := v.checkAgainstPipeline(run, req, pipeline); err != nil {
		return nil, err
	}
	return nil, v.checkHistory(ctx, run)
}

// checkCreator refuses a run that names someone else as its requester, or
// claims a push, unless the push receiver (the manager) creates it.
func (v runValidator) checkCreator(run *conveyorv1.PipelineRun, req admission.Request) error {
	if !isRequester(run.Spec.Requester, req) && !pushed(run, req, v.manager) {
		return forbidden(run.Name, fmt.Errorf("spec.requester must be the authenticated requester %q", req.UserInfo.Username))
	}
	// A push is told by the receiver (the manager) alone: a run claiming one
	// would borrow the pusher's name and the receiver's deduplication.
	if run.Spec.Trigger != nil && (v.manager == "" || req.UserInfo.Username != v.manager) {
		return forbidden(run.Name, fmt.Errorf("spec.trigger is set by Conveyor's push receiver only: create the run without it"))
	}
	return nil
}

// checkAgainstPipeline refuses a run its Pipeline does not allow: a pushed
// run's requester not the pusher's mapping, a ref it does not run, unknown
// or missing parameters, a tag run by someone outside its tag groups.
func (v runValidator) checkAgainstPipeline(run *conveyorv1.PipelineRun, req admission.Request, pipeline *conveyorv1.Pipeline) error {
	if pushed(run, req, v.manager) && !isRequester(run.Spec.Requester, req) && engine.Pusher(&pipeline.Spec, run.Spec.Trigger.Pusher) != run.Spec.Requester.Username {
		return forbidden(run.Name, fmt.Errorf("spec.requester of a pushed run is the user Pipeline %s maps pusher %q to", pipeline.Name, run.Spec.Trigger.Pusher))
	}
	if err := CheckRun(pipeline, run); err != nil {
		return forbidden(run.Name, err)
	}
	if _, errs := engine.ResolveParams(&pipeline.Spec, run.Spec.Params); len(errs) > 0 {
		return apierrors.NewInvalid(conveyorv1.GroupVersion.WithKind("PipelineRun").GroupKind(), run.Name, errs)
	}
	if err := CheckTagRunner(pipeline, run, req.UserInfo, v.manager != "" && req.UserInfo.Username == v.manager); err != nil {
		return forbidden(run.Name, err)
	}
	return nil
}

// checkHistory refuses a run that earlier runs rule out: a rerun of a run it
// cannot rerun, and, by the release ledger, a refused release, its commit
// under another tag, or a tag that moved to another commit.
func (v runValidator) checkHistory(ctx context.Context, run *conveyorv1.PipelineRun) error {
	if run.Spec.RerunOf != "" {
		source, err := readOrNil(ctx, v.reader, types.NamespacedName{Namespace: run.Namespace, Name: run.Spec.RerunOf}, &conveyorv1.PipelineRun{})
		if err != nil {
			return err
		}
		if fe := engine.CheckRerun(run, source); fe != nil {
			return apierrors.NewInvalid(conveyorv1.GroupVersion.WithKind("PipelineRun").GroupKind(), run.Name, field.ErrorList{fe})
		}
	}
	l, err := ledger.Read(ctx, v.reader, run)
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	if _, err := engine.ReleaseBar(run, l); err != nil {
		return forbidden(run.Name, err)
	}
	return nil
}

func (v runValidator) ValidateUpdate(ctx context.Context, old, updated *conveyorv1.PipelineRun) (admission.Warnings, error) {
	if err := CheckRunUpdate(old, updated); err != nil {
		return nil, err
	}
	req, err := requester(ctx)
	if err != nil {
		return nil, err
	}
	if err := CheckRunMetadata(old, updated, v.manager != "" && req.UserInfo.Username == v.manager); err != nil {
		return nil, forbidden(updated.Name, err)
	}
	if old.Spec.Cancelled || !updated.Spec.Cancelled {
		return nil, nil
	}
	ok, who := MayCancel(old, req.UserInfo)
	if !ok {
		if ok, err = v.granted(ctx, req, "cancel", old); err != nil {
			return nil, apierrors.NewInternalError(err)
		}
	}
	if !ok {
		return nil, forbidden(updated.Name, fmt.Errorf("user %q may not cancel PipelineRun %s: only %s may", req.UserInfo.Username, old.Name, who))
	}
	return nil, nil
}

// forbidden refuses a request about the run named name, saying why.
func forbidden(name string, err error) error {
	return apierrors.NewForbidden(conveyorv1.GroupVersion.WithResource("pipelineruns").GroupResource(), name, err)
}

// granted asks the API server's authorizer whether the request's user may do
// verb on the run (a custom verb, as approve on CertificateSigningRequests).
func (v runValidator) granted(ctx context.Context, req admission.Request, verb string, run *conveyorv1.PipelineRun) (bool, error) {
	return allowed(ctx, v.client, req, authorizationv1.ResourceAttributes{Namespace: run.Namespace, Name: run.Name, Verb: verb,
		Group: conveyorv1.GroupVersion.Group, Resource: "pipelineruns"})
}

// allowed asks the API server's authorizer (a SubjectAccessReview) whether
// the request's user may do what attrs say.
func allowed(ctx context.Context, c client.Client, req admission.Request, attrs authorizationv1.ResourceAttributes) (bool, error) {
	extra := map[string]authorizationv1.ExtraValue{}
	for k, vs := range req.UserInfo.Extra {
		extra[k] = authorizationv1.ExtraValue(vs)
	}
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: req.UserInfo.Username, UID: req.UserInfo.UID, Groups: req.UserInfo.Groups, Extra: extra, ResourceAttributes: &attrs,
	}}
	if err := c.Create(ctx, sar); err != nil {
		return false, fmt.Errorf("asking whether %q may %s %s %s: %w", req.UserInfo.Username, attrs.Verb, attrs.Resource, attrs.Name, err)
	}
	return sar.Status.Allowed, nil
}

func (runValidator) ValidateDelete(context.Context, *conveyorv1.PipelineRun) (admission.Warnings, error) {
	return nil, nil
}

// stageEnvironment is the Environment of the namespace a run's stage deploys
// to; nil when it deploys nowhere, or no single Environment names it (the
// deploy is blocked then anyway). It lists the Environments alone: the
// Pipeline namespace's labels, which the rules of a Pipeline read, decide
// nothing about an Approval, and reading them cost a round trip to the API
// server (and etcd) in each deploy stage's Approval.
func stageEnvironment(ctx context.Context, reader client.Reader, run *conveyorv1.PipelineRun, stage string) (*conveyorv1.Environment, error) {
	if run == nil || run.Status.PipelineSpec == nil {
		return nil, nil
	}
	for _, s := range run.Status.PipelineSpec.Stages {
		if s.Name != stage || s.Environment == "" {
			continue
		}
		envs, err := environment.ReadEnvironments(ctx, reader)
		if err != nil {
			return nil, apierrors.NewInternalError(err)
		}
		env, _ := engine.Policy{Environments: envs}.For(s.Environment)
		return env, nil
	}
	return nil, nil
}

// pipelineValidator refuses Pipelines that could never run, or whose deploy
// stages break their Environments' policies.
type pipelineValidator struct {
	reader client.Reader
	// client asks SubjectAccessReviews.
	client client.Client
	guard  *outbound.Guard
}

func (v pipelineValidator) check(ctx context.Context, p *conveyorv1.Pipeline) error {
	if err := CheckPipeline(p); err != nil {
		return err
	}
	if err := CheckOutbound(v.guard, p); err != nil {
		return err
	}
	if err := v.authorMayRead(ctx, p); err != nil {
		return err
	}
	pol, err := environment.ReadPolicy(ctx, v.reader, p.Namespace)
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	return CheckPipelineEnvironments(pol, p)
}

// authorMayRead refuses a Pipeline that has the manager read for its
// author what RBAC does not let the author get (AuthorReads): a job's
// Secret, ConfigMap or claim in the run's namespace, a Secret the manager
// sends out.
func (v pipelineValidator) authorMayRead(ctx context.Context, p *conveyorv1.Pipeline) error {
	req, err := requester(ctx)
	if err != nil {
		return err
	}
	for _, r := range AuthorReads(p) {
		ok, err := allowed(ctx, v.client, req, authorizationv1.ResourceAttributes{Namespace: p.Namespace, Name: r.Name, Verb: "get", Resource: r.Resource})
		if err != nil {
			return apierrors.NewInternalError(err)
		}
		if !ok {
			return apierrors.NewForbidden(conveyorv1.GroupVersion.WithResource("pipelines").GroupResource(), p.Name,
				fmt.Errorf("%s, and user %q may not get it in namespace %s: %s", r.Where, req.UserInfo.Username, p.Namespace, r.Why))
		}
	}
	return nil
}

func (v pipelineValidator) ValidateCreate(ctx context.Context, p *conveyorv1.Pipeline) (admission.Warnings, error) {
	return nil, v.check(ctx, p)
}

func (v pipelineValidator) ValidateUpdate(ctx context.Context, _, p *conveyorv1.Pipeline) (admission.Warnings, error) {
	return nil, v.check(ctx, p)
}

func (pipelineValidator) ValidateDelete(context.Context, *conveyorv1.Pipeline) (admission.Warnings, error) {
	return nil, nil
}

// environmentValidator refuses an Environment whose freeze windows do not
// read, or whose namespace another Environment already names. Its failure
// policy is Ignore (the chart creates Environments with the webhook, before
// the manager serves it): what it refuses also blocks every deploy there
// (fail closed), and the Environment's Ready condition says why.
type environmentValidator struct{ reader client.Reader }

func (v environmentValidator) check(ctx context.Context, env *conveyorv1.Environment) (admission.Warnings, error) {
	all := &conveyorv1.EnvironmentList{}
	if err := v.reader.List(ctx, all); err != nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("listing Environments: %w", err))
	}
	warnings, err := CheckEnvironment(env, all.Items)
	if err != nil {
		return warnings, apierrors.NewInvalid(conveyorv1.GroupVersion.WithKind("Environment").GroupKind(), env.Name, field.ErrorList{err})
	}
	return warnings, nil
}

func (v environmentValidator) ValidateCreate(ctx context.Context, env *conveyorv1.Environment) (admission.Warnings, error) {
	return v.check(ctx, env)
}

func (v environmentValidator) ValidateUpdate(ctx context.Context, _, env *conveyorv1.Environment) (admission.Warnings, error) {
	return v.check(ctx, env)
}

func (environmentValidator) ValidateDelete(context.Context, *conveyorv1.Environment) (admission.Warnings, error) {
	return nil, nil
}

// releaseValidator keeps the release ledger the manager's: nobody else
// creates or changes a Release, whatever RBAC grants them. Deleting one is
// left to RBAC (cluster admins): a namespace being deleted must be able to.
type releaseValidator struct{ manager string }

func (v releaseValidator) check(ctx context.Context, rel *conveyorv1.Release) error {
	req, err := requester(ctx)
	if err != nil {
		return err
	}
	if v.manager == "" || req.UserInfo.Username != v.manager {
		return apierrors.NewForbidden(conveyorv1.GroupVersion.WithResource("releases").GroupResource(), rel.Name,
			fmt.Errorf("the release ledger is written by Conveyor alone: user %q may not create or change a Release", req.UserInfo.Username))
	}
	return nil
}

func (v releaseValidator) ValidateCreate(ctx context.Context, rel *conveyorv1.Release) (admission.Warnings, error) {
	return nil, v.check(ctx, rel)
}

func (v releaseValidator) ValidateUpdate(ctx context.Context, _, rel *conveyorv1.Release) (admission.Warnings, error) {
	return nil, v.check(ctx, rel)
}

func (releaseValidator) ValidateDelete(context.Context, *conveyorv1.Release) (admission.Warnings, error) {
	return nil, nil
}
