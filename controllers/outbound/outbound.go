// Package outbound guards the requests the manager sends to URLs a Pipeline
// names (its event sinks, its commit status API): a Pipeline's author must
// not make the manager, from where it runs, reach what the author could not
// (server-side request forgery). A URL's host must match the cluster
// admin's allowlist when one is set, and a connection never goes to a
// loopback, link-local (cloud metadata), unspecified or multicast address
// unless the allowlist names its network. The check is made at admission
// and again on every connection (after DNS resolution, so a name that
// resolves elsewhere later is caught); redirects are not followed.
package outbound

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// Guard is the allowlist. Its zero value allows any host at any address
// except the always-refused ones.
type Guard struct {
	hosts []string       // exact names, or "*.suffix"
	nets  []netip.Prefix // networks allowed, the refused ones included
}

// Parse reads an allowlist: host names ("hooks.slack.com"), wildcards of a
// domain's subdomains ("*.example.com"), IP addresses and CIDR networks
// ("10.0.0.0/8", "127.0.0.1"), each entry one or several separated by
// commas. Empty entries are skipped.
func Parse(entries []string) (*Guard, error) {
	g := &Guard{}
	for _, e := range strings.Split(strings.Join(entries, ","), ",") {
		e = strings.ToLower(strings.TrimSpace(e))
		switch {
		case e == "":
		case strings.Contains(e, "/"):
			p, err := netip.ParsePrefix(e)
			if err != nil {
				return nil, fmt.Errorf("outbound allowlist entry %q: %w", e, err)
			}
			g.nets = append(g.nets, p.Masked())
		default:
			if a, err := netip.ParseAddr(e); err == nil {
				g.nets = append(g.nets, netip.PrefixFrom(a, a.BitLen()))
				continue
			}
			name := strings.TrimPrefix(e, "*.")
			if name == "" || strings.ContainsAny(name, "*:/ ") {
				return nil, fmt.Errorf("outbound allowlist entry %q: want a host name, *.domain, an IP address or a CIDR network", e)
			}
			g.hosts = append(g.hosts, e)
		}
	}
	return g, nil
}

// Restricted says whether the allowlist names anything: without one, any
// host is allowed (the refused addresses still are refused).
func (g *Guard) Restricted() bool { return g != nil && (len(g.hosts) > 0 || len(g.nets) > 0) }

// CheckURL refuses a URL the manager must not send to: not http(s), with
// user info, a host outside the allowlist, or one whose addresses are
// refused. A name that does not resolve (yet) passes when the allowlist
// names it or there is none: each connection is checked again.
func (g *Guard) CheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("not a URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%q: want an http or https URL", redact(u))
	}
	if u.User != nil {
		return fmt.Errorf("%q: user info in the URL is not allowed", redact(u))
	}
	host := strings.ToLower(u.Hostname())
	if host == "" {
		return fmt.Errorf("%q: no host", redact(u))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = g.addresses(ctx, host, true)
	return err
}

// addresses are the addresses of host the manager may connect to. A host
// the allowlist names by name may resolve anywhere but to a refused
// address; any other host, when there is an allowlist, must resolve into
// its networks. lenient lets a name that does not resolve pass when it
// needs no resolving to be allowed (no addresses then).
func (g *Guard) addresses(ctx context.Context, host string, lenient bool) ([]netip.Addr, error) {
	named := g.hostAllowed(host)
	restricted := g.Restricted() && !named
	const hint = "the cluster's outbound allowlist (--outbound-allow; chart outbound.allow)"
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		if restricted && len(g.nets) == 0 {
			return nil, fmt.Errorf("host %s is not in %s", host, hint)
		}
		addrs, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		switch {
		case err != nil && restricted:
			return nil, fmt.Errorf("host %s is not in %s, and does not resolve into its networks: %w", host, hint, err)
		case err != nil && lenient:
			return nil, nil
		case err != nil:
			return nil, err
		}
	}
	for _, a := range addrs {
		a = a.Unmap()
		what := "address " + a.String()
		if a.String() != host {
			what = "host " + host + " resolves to " + what + ", which"
		}
		if g.inNets(a) {
			continue
		}
		if refused(a) {
			return nil, fmt.Errorf("%s is loopback, link-local, unspecified or multicast: refused unless %s names its network", what, hint)
		}
		if restricted {
			return nil, fmt.Errorf("%s is not in %s", what, hint)
		}
	}
	return addrs, nil
}

func (g *Guard) hostAllowed(host string) bool {
	if g == nil {
		return false
	}
	for _, h := range g.hosts {
		if suffix, ok := strings.CutPrefix(h, "*"); ok {
			if strings.HasSuffix(host, suffix) {
				return true
			}
		} else if host == h {
			return true
		}
	}
	return false
}

// refused: the kinds of address never reached unless the allowlist names them.
func refused(a netip.Addr) bool {
	return a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsUnspecified() || a.IsMulticast() || a.IsInterfaceLocalMulticast()
}

func (g *Guard) inNets(a netip.Addr) bool {
	if g == nil {
		return false
	}
	a = a.Unmap()
	for _, p := range g.nets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Client is an HTTP client whose connections go only where the guard
// allows, through no proxy, following no redirects.
func (g *Guard) Client(timeout time.Duration) *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	// Dial resolves the name itself and connects only to the addresses the
	// guard allowed for it: what is checked is what is dialled.
	dial := func(ctx context.Context, network, address string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(address)
		if err != nil {
			return nil, err
		}
		addrs, err := g.addresses(ctx, strings.ToLower(host), false)
		if err != nil {
			return nil, err
		}
		last := fmt.Errorf("outbound: no address for %s", host)
		for _, a := range addrs {
			c, err := dialer.DialContext(ctx, network, net.JoinHostPort(a.Unmap().String(), port))
			if err == nil {
				return c, nil
			}
			last = err
		}
		return nil, last
	}
	transport := &http.Transport{
		Proxy:               nil,
		DialContext:         dial,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConns:        20, MaxIdleConnsPerHost: 2, IdleConnTimeout: 90 * time.Second,
	}
	return &http.Client{Timeout: timeout, Transport: transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// redact is the URL without its query and user info (they may hold tokens).
func redact(u *url.URL) string {
	c := *u
	c.User, c.RawQuery, c.Fragment = nil, "", ""
	return c.String()
}
