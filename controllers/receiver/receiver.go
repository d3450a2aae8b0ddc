package receiver

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
)

// MaxBody is the largest event the receiver reads (GitLab caps a push event's
// commits at 20, GitHub's payloads at 25 MB; pushes are far smaller).
const MaxBody = 1 << 20

// indexRepository indexes Pipelines by their normalized spec.source.repository.
const indexRepository = "conveyor.dev/source-repository"

var (
	eventsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "conveyor_receiver_events_total",
		Help: "Git provider events received, by provider and result (created, duplicate, ignored, unauthorized, bad_request, error).",
	}, []string{"provider", "result"})
	runsCreated = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "conveyor_receiver_runs_created_total",
		Help: "PipelineRuns created from git provider events, by provider.",
	}, []string{"provider"})
)

func init() {
	ctrlmetrics.Registry.MustRegister(eventsTotal, runsCreated)
}

// +kubebuilder:rbac:groups=conveyor.dev,resources=pipelineruns,verbs=create
// Reading webhook Secrets is granted per namespace: see config/rbac/receiver_role.yaml.

// Receiver serves POST /hooks/gitlab and POST /hooks/github.
type Receiver struct {
	// Client reads Pipelines (cached, indexed by repository) and creates runs.
	Client client.Client
	// APIReader reads from the API server the Secrets named by Pipelines,
	// and the runs holding a push's run name (the cache may not show a run
	// created a moment ago).
	APIReader client.Reader
	Log       logr.Logger
}

// Setup registers the index the receiver needs and, when addr is not "0" or
// empty, serves the receiver on addr with the manager.
func Setup(ctx context.Context, mgr ctrl.Manager, addr string) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &conveyorv1.Pipeline{}, indexRepository, func(o client.Object) []string {
		if src := o.(*conveyorv1.Pipeline).Spec.Source; src != nil {
			return []string{normalizeRepo(src.Repository)}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("indexing Pipelines by repository: %w", err)
	}
	if addr == "" || addr == "0" {
		return nil
	}
	r := &Receiver{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Log: ctrl.Log.WithName("receiver")}
	srv := &http.Server{Addr: addr, Handler: r, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second}
	return mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		go func() {
			<-ctx.Done()
			shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = srv.Shutdown(shutdown)
		}()
		r.Log.Info("Serving the push receiver", "addr", addr)
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}))
}

// Response is the receiver's answer, as JSON.
type Response struct {
	Message string   `json:"message"`
	Runs    []string `json:"runs,omitempty"`
	Skipped []string `json:"skipped,omitempty"`
}

func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	provider := strings.TrimPrefix(req.URL.Path, "/hooks/")
	if provider != "gitlab" && provider != "github" {
		r.answer(w, "unknown", "bad_request", http.StatusNotFound, Response{Message: "unknown path: POST to /hooks/gitlab or /hooks/github"})
		return
	}
	if req.Method != http.MethodPost {
		r.answer(w, provider, "bad_request", http.StatusMethodNotAllowed, Response{Message: "POST only"})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			r.answer(w, provider, "bad_request", http.StatusRequestEntityTooLarge, Response{Message: fmt.Sprintf("event larger than %d bytes", MaxBody)})
			return
		}
		r.answer(w, provider, "bad_request", http.StatusBadRequest, Response{Message: "reading the event: " + err.Error()})
		return
	}
	push, err := parse(provider, req.Header, body)
	if err != nil {
		r.answer(w, provider, "bad_request", http.StatusBadRequest, Response{Message: err.Error()})
		return
	}
	pipelines, err := r.authenticated(req.Context(), push, req.Header, body)
	if err != nil {
		r.answer(w, provider, "error", http.StatusInternalServerError, Response{Message: err.Error()})
		return
	}
	if len(pipelines) == 0 {
		r.answer(w, provider, "unauthorized", http.StatusUnauthorized, Response{Message: "no Pipeline for this repository accepts this event's secret"})
		return
	}
	res, result, err := r.createRuns(req.Context(), push, pipelines)
	if err != nil {
		r.answer(w, provider, "error", http.StatusInternalServerError, Response{Message: err.Error()})
		return
	}
	r.answer(w, provider, result, http.StatusAccepted, res)
}

// authenticated returns the Pipelines of the event's repository whose secret
// the event carries.
func (r *Receiver) authenticated(ctx context.Context, push *Push, h http.Header, body []byte) ([]conveyorv1.Pipeline, error) {
	seen := map[types.UID]bool{}
	var out []conveyorv1.Pipeline
	for _, repo := range push.Repositories {
		if repo == "" {
			continue
		}
		list := &conveyorv1.PipelineList{}
		if err := r.Client.List(ctx, list, client.MatchingFields{indexRepository: normalizeRepo(repo)}); err != nil {
			return nil, fmt.Errorf("listing Pipelines: %w", err)
		}
		for _, p := range list.Items {
			if seen[p.UID] {
				continue
			}
			seen[p.UID] = true
			ok, err := r.verify(ctx, &p, push.Provider, h, body)
			if err != nil {
				return nil, err
			}
			if ok {
				out = append(out, p)
			}
		}
	}
	return out, nil
}

// verify checks the event's secret against the Pipeline's, in constant time:
// GitLab's X-Gitlab-Token, GitHub's X-Hub-Signature-256 HMAC of the body.
func (r *Receiver) verify(ctx context.Context, p *conveyorv1.Pipeline, provider string, h http.Header, body []byte) (bool, error) {
	ref := p.Spec.Source.SecretRef
	key := ref.Key
	if key == "" {
		key = "token"
	}
	secret := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: ref.Name}, secret); err != nil {
		if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
			r.Log.Info("Pipeline's webhook secret is not readable", "pipeline", p.Namespace+"/"+p.Name, "secret", ref.Name, "error", err.Error())
			return false, nil
		}
		return false, fmt.Errorf("reading Secret %s/%s: %w", p.Namespace, ref.Name, err)
	}
	want := secret.Data[key]
	if len(want) == 0 {
		return false, nil
	}
	switch provider {
	case "gitlab":
		return subtle.ConstantTimeCompare([]byte(h.Get("X-Gitlab-Token")), want) == 1, nil
	case "github":
		mac := hmac.New(sha256.New, want)
		mac.Write(body)
		expected := "sha256=" + hex.EncodeToString(mac.Sum(nil))
		return hmac.Equal([]byte(h.Get("X-Hub-Signature-256")), []byte(expected)), nil
	}
	return false, nil
}

// createRuns creates one run per Pipeline that allows the pushed ref. The
// run's name derives from the Pipeline, ref and commit, so a redelivered event
// meets AlreadyExists and creates nothing.
func (r *Receiver) createRuns(ctx context.Context, push *Push, pipelines []conveyorv1.Pipeline) (Response, string, error) {
	git := conveyorv1.GitRef{Branch: push.Branch, Tag: push.Tag, Commit: push.Commit}
	res := Response{}
	created, duplicate := 0, 0
	for _, p := range pipelines {
		key := p.Namespace + "/" + p.Name
		if push.Deleted {
			res.Skipped = append(res.Skipped, key+": the push deleted "+engine.RefString(git))
			continue
		}
		if err := engine.RefAllowed(&p.Spec, git); err != nil {
			res.Skipped = append(res.Skipped, key+": "+err.Error())
			continue
		}
		run := &conveyorv1.PipelineRun{
			ObjectMeta: metav1.ObjectMeta{Name: RunName(p.Name, git), Namespace: p.Namespace,
				Labels: map[string]string{conveyorv1.LabelPush: pushKey(git)}},
			Spec: conveyorv1.PipelineRunSpec{
				PipelineRef: conveyorv1.PipelineReference{Name: p.Name},
				Git:         git,
				Trigger:     trigger(push),
				Params:      PushParams(&p.Spec, *push),
			},
		}
		if user := engine.Pusher(&p.Spec, push.Pusher); user != "" {
			run.Spec.Requester = &conveyorv1.UserInfo{Username: user}
		}
		if _, errs := engine.ResolveParams(&p.Spec, run.Spec.Params); len(errs) > 0 {
			res.Skipped = append(res.Skipped, key+": a push gives only the parameters pusher and repository: "+errs.ToAggregate().Error())
			continue
		}
		err := r.create(ctx, run)
		switch {
		case err == nil:
			created++
			runsCreated.WithLabelValues(push.Provider).Inc()
			r.Log.Info("Created PipelineRun from push", "run", p.Namespace+"/"+run.Name, "ref", engine.RefString(git), "commit", git.Commit, "pusher", push.Pusher)
			res.Runs = append(res.Runs, p.Namespace+"/"+run.Name)
		case apierrors.IsAlreadyExists(err):
			duplicate++
			res.Runs = append(res.Runs, p.Namespace+"/"+run.Name)
		case apierrors.IsForbidden(err) || apierrors.IsInvalid(err):
			res.Skipped = append(res.Skipped, key+": "+err.Error())
		default:
			return res, "error", fmt.Errorf("creating PipelineRun %s/%s: %w", p.Namespace, run.Name, err)
		}
	}
	switch {
	case created > 0:
		res.Message = fmt.Sprintf("created %d run(s)", created)
		return res, "created", nil
	case duplicate > 0:
		res.Message = "already received: the run(s) exist"
		return res, "duplicate", nil
	}
	res.Message = "no run created"
	return res, "ignored", nil
}

// create creates the run under its deterministic name. When that name is
// taken by a run the receiver did not make for this push (a squatter: a run
// without spec.trigger, which only the receiver sets, or for another commit),
// the receiver's own run for the push is looked for by its label and, when
// none exists, created under a generated name: a squatted name never
// swallows a push. AlreadyExists means the push was received before.
func (r *Receiver) create(ctx context.Context, run *conveyorv1.PipelineRun) error {
	err := r.Client.Create(ctx, run)
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	ours := func(o *conveyorv1.PipelineRun) bool {
		return o.Spec.Trigger != nil && o.Spec.PipelineRef == run.Spec.PipelineRef && o.Spec.Git == run.Spec.Git
	}
	existing := &conveyorv1.PipelineRun{}
	if gerr := r.APIReader.Get(ctx, client.ObjectKeyFromObject(run), existing); gerr == nil && ours(existing) {
		return err
	}
	runs := &conveyorv1.PipelineRunList{}
	if lerr := r.APIReader.List(ctx, runs, client.InNamespace(run.Namespace), client.MatchingLabels{conveyorv1.LabelPush: run.Labels[conveyorv1.LabelPush]}); lerr != nil {
		return lerr
	}
	for i := range runs.Items {
		if ours(&runs.Items[i]) {
			run.Name = runs.Items[i].Name
			return err
		}
	}
	r.Log.Info("A run squats the push's run name: creating the push's run under a generated name", "run", run.Namespace+"/"+run.Name, "squatter requester", requesterOf(existing))
	run.GenerateName, run.Name = run.Name+"-", ""
	return r.Client.Create(ctx, run)
}

func requesterOf(run *conveyorv1.PipelineRun) string {
	if run.Spec.Requester == nil {
		return ""
	}
	return run.Spec.Requester.Username
}

// pushKey labels the runs the receiver creates for a ref and commit.
func pushKey(git conveyorv1.GitRef) string {
	kind, ref := engine.Ref(git)
	sum := sha256.Sum256([]byte(string(kind) + "/" + ref + "@" + git.Commit))
	return hex.EncodeToString(sum[:])[:16]
}

var notName = regexp.MustCompile(`[^a-z0-9-]+`)

// RunName is the name of the run a push of git starts for a Pipeline:
// "<pipeline>-<ref>-<hash of ref and commit>", at most 52 characters.
func RunName(pipeline string, git conveyorv1.GitRef) string {
	_, ref := engine.Ref(git)
	hash := pushKey(git)[:8]
	slug := strings.Trim(notName.ReplaceAllString(strings.ToLower(ref), "-"), "-")
	prefix := strings.Trim(pipeline+"-"+slug, "-")
	if len(prefix) > 43 {
		prefix = strings.TrimRight(prefix[:43], "-")
	}
	return prefix + "-" + hash
}

func (r *Receiver) answer(w http.ResponseWriter, provider, result string, code int, res Response) {
	eventsTotal.WithLabelValues(provider, result).Inc()
	if code >= 400 {
		r.Log.Info("Refused a git event", "provider", provider, "status", code, "reason", res.Message)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(res)
}

// trigger is the run's record of the push.
func trigger(push *Push) *conveyorv1.Trigger {
	t := &conveyorv1.Trigger{Provider: push.Provider, Event: push.Event, Delivery: push.Delivery, Pusher: push.Pusher}
	if !push.CommitTime.IsZero() {
		t.CommitTime = &metav1.Time{Time: push.CommitTime}
	}
	return t
}
