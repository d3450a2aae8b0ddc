// Package localcluster starts a local Kubernetes control plane from binaries
// built by hack/build-k8s.sh: etcd, kube-apiserver (token authentication, RBAC),
// kube-controller-manager (the real Job controller and garbage collector),
// kube-scheduler, and kwok, which plays the kubelet of one fake Node so that
// pods "run" without a container runtime. `make demo` and the end-to-end tests
// run Conveyor against it.
package localcluster

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"embed"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// User is a person (or component) the API server authenticates by token.
type User struct {
	Name   string
	Groups []string
}

// DefaultUsers are the seed's personas: two release engineers, so that
// separation of duties can be shown.
var DefaultUsers = []User{
	{Name: "dana", Groups: []string{"developers"}},
	{Name: "tess", Groups: []string{"testers"}},
	{Name: "omar", Groups: []string{"devops"}},
	{Name: "rita", Groups: []string{"release-engineers"}},
	{Name: "rob", Groups: []string{"release-engineers"}},
	{Name: "conveyor-manager", Groups: []string{"conveyor:managers"}},
}

// Options configure the cluster.
type Options struct {
	// BinDir holds etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok.
	BinDir string
	// Dir holds the cluster's data, keys, logs and kubeconfig; a new temporary
	// directory when empty.
	Dir string
	// Users get a token each and a kubeconfig context named after them.
	Users []User
	// StageFiles are kwok Stage manifests: how the fake kubelet moves pods.
	StageFiles []string
	// Log receives progress lines.
	Log io.Writer
}

// Cluster is a running local control plane.
type Cluster struct {
	Dir        string
	Kubeconfig string
	Server     string
	tokens     map[string]string
	procs      []*proc
	log        io.Writer
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan error
}

// Start starts the control plane and waits until a Node is Ready.
func Start(ctx context.Context, o Options) (_ *Cluster, err error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Dir == "" {
		if o.Dir, err = os.MkdirTemp("", "conveyor-cluster-"); err != nil {
			return nil, err
		}
	}
	c := &Cluster{Dir: o.Dir, tokens: map[string]string{}, log: o.Log}
	defer func() {
		if err != nil {
			c.Stop()
			c.TailLogs(o.Log, 20)
		}
	}()
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	etcdPort, etcdPeer, apiPort := ports[0], ports[1], ports[2]
	c.Server = fmt.Sprintf("https://127.0.0.1:%d", apiPort)

	if err := c.writeSecrets(append([]User{{Name: "admin", Groups: []string{"system:masters"}}}, o.Users...)); err != nil {
		return nil, err
	}
	bin := func(n string) string { return filepath.Join(o.BinDir, n) }

	fmt.Fprintf(c.log, "Starting etcd on 127.0.0.1:%d\n", etcdPort)
	if err := c.start("etcd", bin("etcd"),
		"--data-dir", filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPort),
		"--advertise-client-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPort),
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPeer),
		"--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPeer),
		"--initial-cluster", fmt.Sprintf("default=http://127.0.0.1:%d", etcdPeer),
		"--unsafe-no-fsync", "--quota-backend-bytes", "4294967296",
	); err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/health", etcdPort), "", 60*time.Second); err != nil {
		return nil, fmt.Errorf("etcd: %w (see %s)", err, c.LogFile("etcd"))
	}

	fmt.Fprintf(c.log, "Starting kube-apiserver on %s\n", c.Server)
	if err := c.start("kube-apiserver", bin("kube-apiserver"),
		"--etcd-servers", fmt.Sprintf("http://127.0.0.1:%d", etcdPort),
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--secure-port", fmt.Sprint(apiPort),
		"--cert-dir", filepath.Join(c.Dir, "pki"),
		"--token-auth-file", filepath.Join(c.Dir, "tokens.csv"),
		"--authorization-mode", "RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", filepath.Join(c.Dir, "sa.pub"),
		"--service-account-signing-key-file", filepath.Join(c.Dir, "sa.key"),
		"--service-cluster-ip-range", "10.96.0.0/16",
		"--allow-privileged", "--endpoint-reconciler-type=none",
		// kwok's kubelet server answers on the fake Node's InternalIP (127.0.0.1).
		"--kubelet-preferred-address-types", "InternalIP",
	); err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, c.Server+"/readyz", c.tokens["admin"], 120*time.Second); err != nil {
		return nil, fmt.Errorf("kube-apiserver: %w (see %s)", err, c.LogFile("kube-apiserver"))
	}
	if err := c.writeKubeconfig(); err != nil {
		return nil, err
	}
	kubeconfig := filepath.Join(c.Dir, "admin.kubeconfig")
	if err := clientcmd.WriteToFile(*c.kubeconfig("admin"), kubeconfig); err != nil {
		return nil, err
	}

	fmt.Fprintln(c.log, "Starting kube-controller-manager, kube-scheduler and kwok (one fake Node)")
	if err := c.start("kube-controller-manager", bin("kube-controller-manager"),
		"--kubeconfig", kubeconfig, "--leader-elect=false", "--controllers=*",
		"--service-account-private-key-file", filepath.Join(c.Dir, "sa.key"),
		"--root-ca-file", filepath.Join(c.Dir, "pki", "apiserver.crt"),
		"--use-service-account-credentials=false",
		"--secure-port=0", "--concurrent-job-syncs=10", "--concurrent-gc-syncs=10",
	); err != nil {
		return nil, err
	}
	if err := c.start("kube-scheduler", bin("kube-scheduler"),
		"--kubeconfig", kubeconfig, "--leader-elect=false", "--secure-port=0",
	); err != nil {
		return nil, err
	}
	if err := c.startKwok(bin("kwok"), kubeconfig, o.StageFiles); err != nil {
		return nil, err
	}

	admin, err := c.Client("admin", nil)
	if err != nil {
		return nil, err
	}
	if err := createNode(ctx, admin); err != nil {
		return nil, err
	}
	if err := waitNodeReady(ctx, admin, 60*time.Second); err != nil {
		return nil, fmt.Errorf("the fake Node did not become Ready: %w (see %s)", err, c.LogFile("kwok"))
	}
	return c, nil
}

// Token is the bearer token of a user.
func (c *Cluster) Token(user string) string { return c.tokens[user] }

// RestConfig is a client configuration acting as the user.
func (c *Cluster) RestConfig(user string) *rest.Config {
	return &rest.Config{Host: c.Server, BearerToken: c.tokens[user], TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		QPS: 100, Burst: 200}
}

// Client is a controller-runtime client acting as the user.
func (c *Cluster) Client(user string, opts *client.Options) (client.Client, error) {
	o := client.Options{}
	if opts != nil {
		o = *opts
	}
	return client.New(c.RestConfig(user), o)
}

// Stop stops every process, last started first, and waits for them.
func (c *Cluster) Stop() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		p := c.procs[i]
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	c.procs = nil
}

// Remove deletes the cluster's directory. Call after Stop.
func (c *Cluster) Remove() error { return os.RemoveAll(c.Dir) }

// TailLogs writes the last n lines of every component's log to w: what a
// failed start or a failed suite leaves in a CI log, where the files are gone.
func (c *Cluster) TailLogs(w io.Writer, n int) {
	files, _ := filepath.Glob(filepath.Join(c.Dir, "logs", "*.log"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		fmt.Fprintf(w, "--- last lines of %s ---\n%s\n", filepath.Base(f), strings.Join(lines, "\n"))
	}
}

// StartProcess starts another process that belongs with the cluster (the
// manager) and stops with it. Its output goes to <dir>/logs/<name>.log.
func (c *Cluster) StartProcess(name, path string, env []string, args ...string) (*os.Process, <-chan error, error) {
	p, err := c.spawn(name, path, env, args...)
	if err != nil {
		return nil, nil, err
	}
	c.procs = append(c.procs, p)
	return p.cmd.Process, p.done, nil
}

// LogFile is where a process of the cluster writes its output.
func (c *Cluster) LogFile(name string) string { return filepath.Join(c.Dir, "logs", name+".log") }

func (c *Cluster) start(name, path string, args ...string) error {
	_, _, err := c.StartProcess(name, path, nil, args...)
	return err
}

func (c *Cluster) spawn(name, path string, env []string, args ...string) (*proc, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("%s: %w (build it with hack/build-k8s.sh)", name, err)
	}
	if err := os.MkdirAll(filepath.Join(c.Dir, "logs"), 0o755); err != nil {
		return nil, err
	}
	f, err := os.Create(c.LogFile(name))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	// Its own process group, so that a Ctrl-C on the demo reaches it only through Stop.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan error, 1)}
	go func() {
		err := cmd.Wait()
		f.Close()
		p.done <- err
		close(p.done)
	}()
	return p, nil
}

// writeSecrets writes the service-account key pair and the token file.
func (c *Cluster) writeSecrets(users []User) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.Dir, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.Dir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600); err != nil {
		return err
	}
	var lines []string
	for i, u := range users {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		token := hex.EncodeToString(b)
		c.tokens[u.Name] = token
		lines = append(lines, fmt.Sprintf("%s,%s,%d,\"%s\"", token, u.Name, 1000+i, strings.Join(u.Groups, ",")))
	}
	return os.WriteFile(filepath.Join(c.Dir, "tokens.csv"), []byte(strings.Join(lines, "\n")+"\n"), 0o600)
}

// kubeconfig has one context per user, the current one being current.
func (c *Cluster) kubeconfig(current string) *clientcmdapi.Config {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["conveyor-local"] = &clientcmdapi.Cluster{Server: c.Server, InsecureSkipTLSVerify: true}
	names := make([]string, 0, len(c.tokens))
	for n := range c.tokens {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		cfg.AuthInfos[n] = &clientcmdapi.AuthInfo{Token: c.tokens[n]}
		cfg.Contexts[n] = &clientcmdapi.Context{Cluster: "conveyor-local", AuthInfo: n}
	}
	cfg.CurrentContext = current
	return cfg
}

// writeKubeconfig writes <dir>/kubeconfig: the admin context current, one context per user.
func (c *Cluster) writeKubeconfig() error {
	c.Kubeconfig = filepath.Join(c.Dir, "kubeconfig")
	return clientcmd.WriteToFile(*c.kubeconfig("admin"), c.Kubeconfig)
}

// startKwok starts kwok as the kubelet of the fake Node, moving pods by the
// stage files and the local cluster's own, and serving the kubelet's API
// (container logs) on the Node's address and port, so kubectl logs works
// through the API server.
//
// The kubelet port is picked free just before kwok starts; another process
// (a test suite running beside this one) may still take it first, so a kwok
// that exits at once is started again on another port.
func (c *Cluster) startKwok(bin, kubeconfig string, stageFiles []string) error {
	logsConfig, err := writeContainerLogs(c.Dir)
	if err != nil {
		return err
	}
	ours, err := writeStages(c.Dir)
	if err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		port, err := FreePort()
		if err != nil {
			return err
		}
		args := []string{"--kubeconfig", kubeconfig, "--manage-all-nodes=false",
			"--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
			"--server-address", fmt.Sprintf("127.0.0.1:%d", port), "--node-ip", "127.0.0.1",
			"--node-port", fmt.Sprint(port), "--config", logsConfig}
		for _, f := range append(stageFiles, ours...) {
			args = append(args, "--config", f)
		}
		_, done, err := c.StartProcess("kwok", bin, nil, args...)
		if err != nil {
			return err
		}
		select {
		case <-time.After(3 * time.Second):
			return nil
		case err := <-done:
			if attempt == 3 {
				return fmt.Errorf("kwok exited at start %d times, last on port %d: %v (see %s)", attempt, port, err, c.LogFile("kwok"))
			}
			c.TailLogs(c.log, 5)
			fmt.Fprintf(c.log, "kwok exited at start (%v), port %d taken? Starting it again on another port\n", err, port)
		}
	}
}

//go:embed stages/*.yaml
var stages embed.FS

// writeStages writes the local cluster's own kwok Stages (stages/) into
// dir and returns their paths.
func writeStages(dir string) ([]string, error) {
	entries, err := stages.ReadDir("stages")
	if err != nil {
		return nil, err
	}
	var paths []string
	for _, e := range entries {
		data, err := stages.ReadFile("stages/" + e.Name())
		if err != nil {
			return nil, err
		}
		p := filepath.Join(dir, "stage-"+e.Name())
		if err := os.WriteFile(p, data, 0o600); err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// ContainerLog is what every container on the fake Node logs: kwok runs no
// program, so it serves this file (the container runtime's log format) as
// each container's log.
const ContainerLog = "conveyor local cluster: this container ran on kwok's fake Node (no program runs here)"

// writeContainerLogs writes the log every container serves and the kwok
// ClusterLogs configuration that serves it; it returns the configuration's path.
func writeContainerLogs(dir string) (string, error) {
	logFile := filepath.Join(dir, "container.log")
	line := time.Now().UTC().Format(time.RFC3339Nano) + " stdout F " + ContainerLog + "\n"
	if err := os.WriteFile(logFile, []byte(line), 0o600); err != nil {
		return "", err
	}
	config := filepath.Join(dir, "kwok-logs.yaml")
	return config, os.WriteFile(config, []byte(`apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterLogs
metadata:
  name: every-container
spec:
  selector: {}
  logs:
  - logsFile: `+logFile+"\n"), 0o600)
}

// createNode registers the fake Node that kwok plays the kubelet of.
func createNode(ctx context.Context, c client.Client) error {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("1000"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        "kwok-node-0",
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
			Labels:      map[string]string{"type": "kwok", "kubernetes.io/hostname": "kwok-node-0", "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"},
		},
		Status: corev1.NodeStatus{Allocatable: capacity, Capacity: capacity},
	}
	return client.IgnoreAlreadyExists(c.Create(ctx, node))
}

func waitNodeReady(ctx context.Context, c client.Client, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		node := &corev1.Node{}
		if err := c.Get(ctx, client.ObjectKey{Name: "kwok-node-0"}, node); err == nil {
			for _, cond := range node.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return errors.New("timed out")
}

// waitHTTP polls url until it answers 200.
func waitHTTP(ctx context.Context, url, token string, timeout time.Duration, exited ...<-chan error) error {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // a local cluster with a self-signed certificate
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
		} else {
			last = err.Error()
		}
		for _, ch := range exited {
			select {
			case err := <-ch:
				return fmt.Errorf("the process exited (%v) before %s was ready", err, url)
			default:
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not ready after %s: %s", url, timeout, last)
}

// freePorts finds n free TCP ports on the loopback address.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// FreePort finds a free TCP port on the loopback address.
func FreePort() (int, error) {
	p, err := freePorts(1)
	if err != nil {
		return 0, err
	}
	return p[0], nil
}
