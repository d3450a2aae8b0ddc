package cli

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

//go:embed web
var webFiles embed.FS

func newDashboardCommand(o *Options) *cobra.Command {
	var address string
	var all bool
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Serve a web page of every Pipeline's runs, live, on localhost",
		Long: `dashboard serves, on localhost only, a page that draws every Pipeline's runs as
pipeline graphs (stages left to right, their jobs, who decided what) and
updates them live from watches. Its buttons (trigger, approve, reject,
override, cancel, rerun) act as the kubeconfig's user: nothing new is exposed
in the cluster, and the API server's refusals are shown as it gave them.
The page's address carries a one-time token: other local users and other
web sites cannot use it. Its assets are inside the binary: no internet needed.`,
		Example: `  kubectl conveyor dashboard
  kubectl conveyor dashboard --address 127.0.0.1:8080 -A
  kubectl --context rita conveyor dashboard -n shop`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := NewDashboard(o, all)
			if err != nil {
				return err
			}
			l, err := net.Listen("tcp", address)
			if err != nil {
				return err
			}
			fmt.Fprintf(o.Streams.Out, "Conveyor dashboard for %s: open %s\nCtrl-C stops it.\n", d.scope(), d.URL(l.Addr()))
			return d.Serve(cmd.Context(), l)
		},
	}
	cmd.Flags().StringVar(&address, "address", "127.0.0.1:0", "Where to listen (host:port); a free port when 0. Keep it on loopback.")
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "Runs of every namespace.")
	return cmd
}

// Dashboard serves the web page and its API for one user (the kubeconfig's).
type Dashboard struct {
	o         *Options
	namespace string // empty: every namespace
	token     string
}

// NewDashboard prepares a dashboard of the command's namespace, or of every
// namespace when all is set.
func NewDashboard(o *Options, all bool) (*Dashboard, error) {
	d := &Dashboard{o: o}
	// Made once here: the page's requests share it.
	if _, err := o.Client(); err != nil {
		return nil, err
	}
	if !all {
		ns, err := o.Namespace()
		if err != nil {
			return nil, err
		}
		d.namespace = ns
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	d.token = hex.EncodeToString(b)
	return d, nil
}

func (d *Dashboard) scope() string {
	if d.namespace == "" {
		return "every namespace"
	}
	return "namespace " + d.namespace
}

// URL is the page's address, with its token.
func (d *Dashboard) URL(addr net.Addr) string {
	return fmt.Sprintf("http://%s/?token=%s", addr.String(), d.token)
}

// Serve serves the dashboard on l until ctx ends.
func (d *Dashboard) Serve(ctx context.Context, l net.Listener) error {
	srv := &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Handler is the dashboard's HTTP handler: the page and its assets, and an
// API that needs the token (a header, or for the event stream a query parameter).
func (d *Dashboard) Handler() http.Handler {
	static, _ := fs.Sub(webFiles, "web")
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServerFS(static))
	mux.HandleFunc("GET /api/whoami", d.guard(d.whoami))
	mux.HandleFunc("GET /api/events", d.guard(d.events))
	mux.HandleFunc("POST /api/runs/{namespace}/{name}/{action}", d.guard(d.act))
	return securityHeaders(mux)
}

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

// guard lets through only requests that carry the token and were sent to a
// loopback host name (a page from another site that rebinds its DNS name to
// 127.0.0.1 sends its own Host).
func (d *Dashboard) guard(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		token := r.Header.Get("X-Conveyor-Token")
		if token == "" && r.Method == http.MethodGet {
			token = r.URL.Query().Get("token")
		}
		if subtle.ConstantTimeCompare([]byte(token), []byte(d.token)) != 1 {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "the dashboard's token is missing or wrong: open the address kubectl conveyor dashboard printed"})
			return
		}
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "the dashboard answers on localhost only"})
			return
		}
		if origin := r.Header.Get("Origin"); r.Method == http.MethodPost && origin != "" && origin != "http://"+r.Host {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "cross-origin request refused"})
			return
		}
		h(w, r)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// whoami says who the API server takes the user for (a SelfSubjectReview).
func (d *Dashboard) whoami(w http.ResponseWriter, r *http.Request) {
	cs, err := d.o.Clientset()
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": describeError(err)})
		return
	}
	res, err := cs.AuthenticationV1().SelfSubjectReviews().Create(r.Context(), &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		writeJSON(w, http.StatusOK, map[string]any{"username": "", "scope": d.scope()})
		return
	}
	var groups []string
	for _, g := range res.Status.UserInfo.Groups {
		if !strings.HasPrefix(g, "system:") {
			groups = append(groups, g)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"username": res.Status.UserInfo.Username, "groups": groups, "scope": d.scope()})
}

// event is one message of the stream: a run as the graph draws it, a run
// gone, the Pipelines there are, or an error.
type event struct {
	Type      string   `json:"type"`
	Run       *RunView `json:"run,omitempty"`
	Namespace string   `json:"namespace,omitempty"`
	Name      string   `json:"name,omitempty"`
	Pipelines []string `json:"pipelines,omitempty"`
	Error     string   `json:"error,omitempty"`
}

// events streams Server-Sent Events: every run, then each change to one, from
// a watch made with the user's credentials.
func (d *Dashboard) events(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	send := func(e event) bool {
		b, _ := json.Marshal(e)
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return false
		}
		flusher.Flush()
		return true
	}
	ctx := r.Context()
	c, err := d.o.Client()
	if err != nil {
		send(event{Type: "error", Error: describeError(err)})
		return
	}
	var opts []client.ListOption
	if d.namespace != "" {
		opts = append(opts, client.InNamespace(d.namespace))
	}
	for ctx.Err() == nil {
		rv, err := d.snapshot(ctx, c, opts, send)
		if err != nil {
			if !send(event{Type: "error", Error: describeError(err)}) {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(3 * time.Second):
				continue
			}
		}
		if !d.follow(ctx, c, opts, rv, send) {
			return
		}
	}
}

// snapshot sends the Pipelines and every run, and returns the list's
// resourceVersion to watch from.
func (d *Dashboard) snapshot(ctx context.Context, c client.WithWatch, opts []client.ListOption, send func(event) bool) (string, error) {
	pipelines := &conveyorv1.PipelineList{}
	if err := c.List(ctx, pipelines, opts...); err != nil {
		return "", err
	}
	names := []string{}
	specs := map[string]*conveyorv1.Pipeline{}
	for i := range pipelines.Items {
		p := &pipelines.Items[i]
		names = append(names, p.Namespace+"/"+p.Name)
		specs[p.Namespace+"/"+p.Name] = p
	}
	sort.Strings(names)
	runs := &conveyorv1.PipelineRunList{}
	if err := c.List(ctx, runs, opts...); err != nil {
		return "", err
	}
	if !send(event{Type: "reset", Pipelines: names}) {
		return "", ctx.Err()
	}
	for i := range runs.Items {
		run := &runs.Items[i]
		v := View(run, specs[run.Namespace+"/"+run.Spec.PipelineRef.Name])
		if !send(event{Type: "run", Run: &v}) {
			return "", ctx.Err()
		}
	}
	return runs.ResourceVersion, nil
}

// follow forwards the watch's changes until it ends; false when the page went away.
func (d *Dashboard) follow(ctx context.Context, c client.WithWatch, opts []client.ListOption, rv string, send func(event) bool) bool {
	w, err := c.Watch(ctx, &conveyorv1.PipelineRunList{}, append(opts, &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rv}})...)
	if err != nil {
		return send(event{Type: "error", Error: describeError(err)})
	}
	defer w.Stop()
	keepAlive := time.NewTicker(20 * time.Second)
	defer keepAlive.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-keepAlive.C:
			if !send(event{Type: "ping"}) {
				return false
			}
		case ev, ok := <-w.ResultChan():
			if !ok {
				return true
			}
			switch ev.Type {
			case watch.Error:
				return true // list again: the resourceVersion expired
			case watch.Deleted:
				if run, ok := ev.Object.(*conveyorv1.PipelineRun); ok && !send(event{Type: "deleted", Namespace: run.Namespace, Name: run.Name}) {
					return false
				}
			case watch.Added, watch.Modified:
				run, ok := ev.Object.(*conveyorv1.PipelineRun)
				if !ok {
					continue
				}
				var p *conveyorv1.Pipeline
				if run.Status.PipelineSpec == nil {
					p = &conveyorv1.Pipeline{}
					if c.Get(ctx, client.ObjectKey{Namespace: run.Namespace, Name: run.Spec.PipelineRef.Name}, p) != nil {
						p = nil
					}
				}
				v := View(run, p)
				if !send(event{Type: "run", Run: &v}) {
					return false
				}
			}
		}
	}
}

// actRequest is what a button sends.
type actRequest struct {
	Stage   string `json:"stage"`
	Comment string `json:"comment"`
}

// act does what a button asks, as the user, and answers with the API
// server's refusal when there is one.
func (d *Dashboard) act(w http.ResponseWriter, r *http.Request) {
	ns, name, action := r.PathValue("namespace"), r.PathValue("name"), r.PathValue("action")
	if d.namespace != "" && ns != d.namespace {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "this dashboard shows namespace " + d.namespace})
		return
	}
	var req actRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10)).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad request: " + err.Error()})
		return
	}
	msg, err := d.do(r.Context(), ns, name, action, req)
	if err != nil {
		code := http.StatusBadRequest
		var status apierrors.APIStatus
		if errors.As(err, &status) && status.Status().Code != 0 {
			code = int(status.Status().Code)
		}
		writeJSON(w, code, map[string]string{"error": describeError(err)})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"message": msg})
}

func (d *Dashboard) do(ctx context.Context, ns, name, action string, req actRequest) (string, error) {
	switch action {
	case "cancel":
		return "pipelinerun/" + name + " cancelled", d.o.cancel(ctx, ns, name)
	case "rerun":
		run, err := d.o.rerun(ctx, ns, name)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("pipelinerun/%s created (rerun of %s)", run.Name, name), nil
	}
	dec, ok := decisions[action]
	if !ok {
		return "", fmt.Errorf("unknown action %q", action)
	}
	if dec.needsComment && strings.TrimSpace(req.Comment) == "" {
		return "", fmt.Errorf("%s needs a comment saying why: it goes on the record", action)
	}
	a, err := d.o.decide(ctx, ns, name, req.Stage, dec, req.Comment)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("approval/%s created: %s stage %s", a.Name, pastTense(action), a.Spec.Stage), nil
}
