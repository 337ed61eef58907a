package tests

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/mosaic-kv/mosaic/tests/harness"
)

// The ways to start a 3-member cluster: deploy/docker-compose.yml (members m1, m2, m3 in
// containers) and the Procfile (infra1, infra2, infra3 on 127.0.0.1). TestDeployFiles checks
// their command lines against the flags `mosaic --help` lists and against each other;
// TestDeployDocker runs deploy/up.sh and deploy/down.sh for real (wherever Docker with
// Compose is usable; MOSAIC_DOCKER_TESTS=0 skips it).

// deployMember is one member's command line in a deploy file.
type deployMember struct {
	name string   // the compose service or Procfile process name
	args []string // the server's arguments, without the program
	// Compose only: the service's published ports ("127.0.0.1:2379:2379", variables
	// replaced by their defaults), its volumes ("m1-data:/data") and networks.
	ports, volumes, networks []string
}

// documentedClientPorts are the client ports on the host that the README and the deploy files
// announce for the three members, as etcd's Procfile and docker examples use them.
var documentedClientPorts = []int{2379, 22379, 32379}

// composeFile is the part of a compose file the checks read.
type composeFile struct {
	Services map[string]struct {
		Image    string   `json:"image"`
		Hostname string   `json:"hostname"`
		Command  []string `json:"command"`
		Ports    []string `json:"ports"`
		Volumes  []string `json:"volumes"`
		Networks []string `json:"networks"`
	} `json:"services"`
	Networks map[string]any `json:"networks"`
	Volumes  map[string]any `json:"volumes"`
}

// composeVar matches compose's ${NAME:-default} interpolation.
var composeVar = regexp.MustCompile(`\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}`)

func readCompose(t *testing.T) (composeFile, []deployMember) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "deploy", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile // fields the checks do not read are ignored
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatalf("deploy/docker-compose.yml: %v", err)
	}
	var members []deployMember
	for name, s := range f.Services {
		m := deployMember{name: name, args: s.Command, volumes: s.Volumes, networks: s.Networks}
		for _, p := range s.Ports {
			m.ports = append(m.ports, composeVar.ReplaceAllString(p, "$1"))
		}
		members = append(members, m)
	}
	slices.SortFunc(members, func(a, b deployMember) int { return strings.Compare(a.name, b.name) })
	return f, members
}

func readProcfile(t *testing.T) []deployMember {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "Procfile"))
	if err != nil {
		t.Fatal(err)
	}
	var members []deployMember
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, cmd, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("Procfile: %q is not of the form name: command", line)
		}
		words, err := shellWords(cmd)
		if err != nil {
			t.Fatalf("Procfile: %s: %v", name, err)
		}
		if len(words) == 0 || words[0] != "bin/mosaic" {
			t.Fatalf("Procfile: %s does not run bin/mosaic (what deploy/procfile.sh builds): %q", name, cmd)
		}
		members = append(members, deployMember{name: strings.TrimSpace(name), args: words[1:]})
	}
	return members
}

// shellWords splits a command line as sh does for the plain words, single and double quotes
// that a Procfile line uses; any other shell syntax is an error.
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\'' || c == '"':
			end := strings.IndexByte(s[i+1:], c)
			if end < 0 {
				return nil, fmt.Errorf("unterminated %c quote", c)
			}
			quoted := s[i+1 : i+1+end]
			if c == '"' && strings.ContainsAny(quoted, "$`\\") {
				return nil, fmt.Errorf("double-quoted %q needs a shell to expand", quoted)
			}
			cur.WriteString(quoted)
			inWord = true
			i += end + 1
		case strings.IndexByte("$`\\|&;<>(){}*?[]~", c) >= 0:
			return nil, fmt.Errorf("shell syntax %q is not checked here", c)
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// helpFlag is a flag as `mosaic --help` lists it.
type helpFlag struct {
	isBool   bool
	honoured bool // not marked [no effect] nor renamed
}

var helpLine = regexp.MustCompile(`^  --([a-z0-9-]+)(?: '([^']*)')?(.*)$`)

func mosaicHelpFlags(t *testing.T, bin string) map[string]helpFlag {
	t.Helper()
	out, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("mosaic --help: %v\n%s", err, out)
	}
	flags := make(map[string]helpFlag)
	for line := range strings.SplitSeq(string(out), "\n") {
		m := helpLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		flags[m[1]] = helpFlag{
			isBool:   m[2] == "true" || m[2] == "false",
			honoured: !strings.Contains(m[3], "[no effect]") && !strings.Contains(m[3], "(now --"),
		}
	}
	for _, f := range []string{"name", "data-dir", "initial-cluster", "listen-client-urls"} {
		if _, ok := flags[f]; !ok {
			t.Fatalf("mosaic --help does not list --%s; has its format changed?\n%s", f, out)
		}
	}
	return flags
}

// parseMemberFlags reads --flag=value and --flag value forms into a map, checking that every
// flag is one `mosaic --help` lists, that Mosaic honours it, and that none is repeated.
func parseMemberFlags(t *testing.T, where string, m deployMember, help map[string]helpFlag) map[string]string {
	t.Helper()
	flags := make(map[string]string)
	for i := 0; i < len(m.args); i++ {
		a := m.args[i]
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") {
			t.Errorf("%s %s: %q is not a flag", where, m.name, a)
			continue
		}
		h, ok := help[name]
		switch {
		case !ok:
			t.Errorf("%s %s: --%s is not a flag `mosaic --help` lists", where, m.name, name)
		case !h.honoured:
			t.Errorf("%s %s: --%s has no effect in Mosaic (mosaic --help)", where, m.name, name)
		}
		if !hasValue {
			if h.isBool {
				value = "true"
			} else if i+1 < len(m.args) {
				i++
				value = m.args[i]
			} else {
				t.Errorf("%s %s: --%s has no value", where, m.name, name)
			}
		}
		if _, dup := flags[name]; dup {
			t.Errorf("%s %s: --%s is given twice", where, m.name, name)
		}
		flags[name] = value
	}
	return flags
}

// checkParses runs the real binary's flag parsing on a member's command line: with --version
// after the member's flags, mosaic parses and checks each flag's value, prints its version and
// exits 0 without starting.
func checkParses(t *testing.T, where, bin string, m deployMember) {
	t.Helper()
	out, err := exec.Command(bin, append(slices.Clone(m.args), "--version")...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Mosaic Version") {
		t.Errorf("%s %s: mosaic rejects the command line: %v\n%s", where, m.name, err, out)
	}
}

func mustParseURL(t *testing.T, where, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "http" || u.Port() == "" {
		t.Errorf("%s: %q is not an http URL with a port", where, s)
		return &url.URL{}
	}
	return u
}

// checkMembers makes the checks common to both files and returns each member's flags by name.
func checkMembers(t *testing.T, where string, members []deployMember, help map[string]helpFlag) map[string]map[string]string {
	t.Helper()
	if len(members) != 3 {
		t.Fatalf("%s: %d members, want 3", where, len(members))
	}
	byName := make(map[string]map[string]string)
	for _, m := range members {
		f := parseMemberFlags(t, where, m, help)
		for _, req := range []string{"name", "data-dir", "listen-client-urls", "advertise-client-urls",
			"listen-peer-urls", "initial-advertise-peer-urls", "initial-cluster", "initial-cluster-state",
			"initial-cluster-token"} {
			if _, ok := f[req]; !ok {
				t.Errorf("%s %s: no --%s", where, m.name, req)
			}
		}
		if f["name"] != m.name {
			t.Errorf("%s %s: --name=%q, want the member's own name %q", where, m.name, f["name"], m.name)
		}
		if f["initial-cluster-state"] != "new" {
			t.Errorf("%s %s: --initial-cluster-state=%q, want new", where, m.name, f["initial-cluster-state"])
		}
		for _, k := range []string{"listen-client-urls", "advertise-client-urls", "listen-peer-urls", "initial-advertise-peer-urls"} {
			if strings.Contains(f[k], ",") {
				t.Errorf("%s %s: --%s=%q: the checks expect one URL", where, m.name, k, f[k])
			}
		}
		byName[m.name] = f
	}

	// One bootstrap membership, naming every member with its own advertised peer URL.
	first := byName[members[0].name]
	for _, m := range members[1:] {
		for _, k := range []string{"initial-cluster", "initial-cluster-token"} {
			if byName[m.name][k] != first[k] {
				t.Errorf("%s: --%s differs between %s (%q) and %s (%q)", where, k, members[0].name, first[k], m.name, byName[m.name][k])
			}
		}
	}
	cluster := make(map[string]string)
	for entry := range strings.SplitSeq(first["initial-cluster"], ",") {
		name, peer, ok := strings.Cut(entry, "=")
		if !ok {
			t.Fatalf("%s: --initial-cluster entry %q is not name=URL", where, entry)
		}
		if _, dup := cluster[name]; dup {
			t.Errorf("%s: --initial-cluster names %s twice", where, name)
		}
		cluster[name] = peer
	}
	for _, m := range members {
		f := byName[m.name]
		peer, ok := cluster[m.name]
		if !ok {
			t.Errorf("%s: --initial-cluster does not name member %s", where, m.name)
		} else if peer != f["initial-advertise-peer-urls"] {
			t.Errorf("%s: --initial-cluster gives %s the peer URL %s, its --initial-advertise-peer-urls is %s", where, m.name, peer, f["initial-advertise-peer-urls"])
		}
		adv := mustParseURL(t, where+" "+m.name, f["initial-advertise-peer-urls"])
		lis := mustParseURL(t, where+" "+m.name, f["listen-peer-urls"])
		if adv.Port() != lis.Port() {
			t.Errorf("%s %s: advertises peer port %s, listens on %s", where, m.name, adv.Port(), lis.Port())
		}
		advc := mustParseURL(t, where+" "+m.name, f["advertise-client-urls"])
		lisc := mustParseURL(t, where+" "+m.name, f["listen-client-urls"])
		if advc.Port() != lisc.Port() {
			t.Errorf("%s %s: advertises client port %s, listens on %s", where, m.name, advc.Port(), lisc.Port())
		}
		if lisc.Port() == lis.Port() {
			t.Errorf("%s %s: clients and peers on the same port %s", where, m.name, lis.Port())
		}
	}
	if len(cluster) != len(members) {
		t.Errorf("%s: --initial-cluster names %d members, the file runs %d", where, len(cluster), len(members))
	}
	return byName
}

// TestDeployFiles checks that deploy/docker-compose.yml and the Procfile start three members
// whose command lines mosaic accepts and whose bootstrap flags agree.
func TestDeployFiles(t *testing.T) {
	t.Parallel()
	bin := harness.BuildMosaic(t).Mosaic
	help := mosaicHelpFlags(t, bin)

	t.Run("compose", func(t *testing.T) {
		f, members := readCompose(t)
		byName := checkMembers(t, "docker-compose.yml", members, help)
		var hostPorts []int
		for _, m := range members {
			checkParses(t, "docker-compose.yml", bin, m)
			s := f.Services[m.name]
			fl := byName[m.name]
			if s.Image == "" {
				t.Errorf("service %s: no image", m.name)
			}
			// Other members reach it by its service name.
			for _, k := range []string{"initial-advertise-peer-urls", "advertise-client-urls"} {
				if u := mustParseURL(t, m.name, fl[k]); u.Hostname() != m.name {
					t.Errorf("service %s: --%s=%s, want host %s (the service name)", m.name, k, fl[k], m.name)
				}
			}
			// In a container it must listen on all interfaces, not on loopback.
			for _, k := range []string{"listen-client-urls", "listen-peer-urls"} {
				if u := mustParseURL(t, m.name, fl[k]); u.Hostname() != "0.0.0.0" {
					t.Errorf("service %s: --%s=%s, want 0.0.0.0: a loopback listener is unreachable from outside the container", m.name, k, fl[k])
				}
			}
			// Its client port is published on the host.
			clientPort := mustParseURL(t, m.name, fl["listen-client-urls"]).Port()
			published := false
			for _, p := range m.ports {
				parts := strings.Split(p, ":")
				if len(parts) >= 2 && parts[len(parts)-1] == clientPort {
					n, err := strconv.Atoi(parts[len(parts)-2])
					if err != nil {
						t.Errorf("service %s: port mapping %q", m.name, p)
						continue
					}
					hostPorts = append(hostPorts, n)
					published = true
				}
			}
			if !published {
				t.Errorf("service %s: client port %s is not published (ports: %q)", m.name, clientPort, m.ports)
			}
			// Its data directory is a named volume of its own.
			mounted := false
			for _, v := range m.volumes {
				src, dst, _ := strings.Cut(v, ":")
				if dst != fl["data-dir"] {
					continue
				}
				mounted = true
				if _, ok := f.Volumes[src]; !ok {
					t.Errorf("service %s: --data-dir %s is mounted from %q, which is not a named volume of the file", m.name, dst, src)
				}
				for _, o := range members {
					if o.name != m.name && slices.ContainsFunc(o.volumes, func(ov string) bool { return strings.HasPrefix(ov, src+":") }) {
						t.Errorf("services %s and %s share the volume %s", m.name, o.name, src)
					}
				}
			}
			if !mounted {
				t.Errorf("service %s: --data-dir %s is not a volume: its data would go with the container", m.name, fl["data-dir"])
			}
			if len(m.networks) != 1 || len(members[0].networks) != 1 || m.networks[0] != members[0].networks[0] {
				t.Errorf("service %s: networks %q, want the one network all members share", m.name, m.networks)
			} else if _, ok := f.Networks[m.networks[0]]; !ok {
				t.Errorf("service %s: network %q is not declared", m.name, m.networks[0])
			}
		}
		if !slices.Equal(hostPorts, documentedClientPorts) {
			t.Errorf("client ports published on the host: %v, documented: %v", hostPorts, documentedClientPorts)
		}
	})

	t.Run("Procfile", func(t *testing.T) {
		members := readProcfile(t)
		byName := checkMembers(t, "Procfile", members, help)
		seen := make(map[string]string)
		var clientPorts []int
		for _, m := range members {
			checkParses(t, "Procfile", bin, m)
			fl := byName[m.name]
			for _, k := range []string{"listen-client-urls", "listen-peer-urls", "data-dir"} {
				v := fl[k]
				if k != "data-dir" {
					u := mustParseURL(t, m.name, v)
					if u.Hostname() != "127.0.0.1" {
						t.Errorf("Procfile %s: --%s=%s, want 127.0.0.1", m.name, k, v)
					}
					v = u.Port()
				}
				if other, dup := seen[v]; dup {
					t.Errorf("Procfile: %s and %s both use %s", other, m.name, v)
				}
				seen[v] = m.name
			}
			n, _ := strconv.Atoi(mustParseURL(t, m.name, fl["listen-client-urls"]).Port())
			clientPorts = append(clientPorts, n)
		}
		if !slices.Equal(clientPorts, documentedClientPorts) {
			t.Errorf("Procfile client ports %v, documented: %v", clientPorts, documentedClientPorts)
		}
	})
}

// TestDeployDocker runs deploy/up.sh and deploy/down.sh: it builds the image, starts the
// compose cluster on free host ports under a project and image name of its own, checks that
// every member answers etcdctl, stops and starts it again and finds the data, and removes it
// all. It needs Docker with Compose (it skips without them); MOSAIC_DOCKER_TESTS=0 skips it too.
func TestDeployDocker(t *testing.T) {
	if os.Getenv("MOSAIC_DOCKER_TESTS") == "0" {
		t.Skip("MOSAIC_DOCKER_TESTS=0")
	}
	if err := exec.Command("docker", "info").Run(); err != nil {
		t.Skipf("docker is not usable: %v", err)
	}
	if exec.Command("docker", "compose", "version").Run() != nil {
		if _, err := exec.LookPath("docker-compose"); err != nil {
			t.Skip("neither 'docker compose' nor docker-compose is installed")
		}
	}
	t.Parallel()
	harness.BuildEtcdctl(t)

	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	ports := []int{harness.FreePort(t), harness.FreePort(t), harness.FreePort(t)}
	env := append(os.Environ(),
		"MOSAIC_IMAGE=mosaic-test:"+suffix,
		"MOSAIC_COMPOSE_PROJECT=mosaictest"+suffix,
		"MOSAIC_BUILD_DIR="+t.TempDir(),
		fmt.Sprintf("MOSAIC_M1_PORT=%d", ports[0]),
		fmt.Sprintf("MOSAIC_M2_PORT=%d", ports[1]),
		fmt.Sprintf("MOSAIC_M3_PORT=%d", ports[2]),
	)
	script := func(name string, args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(harness.RepoRoot(), "deploy", name), args...)
		cmd.Env = env
		start := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("deploy/%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		t.Logf("deploy/%s %s: %s", name, strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	}
	t.Cleanup(func() {
		cmd := exec.Command(filepath.Join(harness.RepoRoot(), "deploy", "down.sh"), "--purge")
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("deploy/down.sh --purge: %v\n%s", err, out)
		}
	})

	ctl := func(port int, args ...string) string {
		t.Helper()
		out, stderr, err := harness.Etcdctl(t, fmt.Sprintf("127.0.0.1:%d", port), args...)
		if err != nil {
			t.Fatalf("etcdctl on port %d %q: %v\n%s%s", port, args, err, out, stderr)
		}
		return out
	}

	script("up.sh")
	for i, p := range ports {
		if out := ctl(p, "endpoint", "status"); !strings.Contains(out, "3.7") {
			t.Errorf("m%d endpoint status: %s", i+1, out)
		}
		ctl(p, "put", fmt.Sprintf("deploy-test/m%d", i+1), "kept")
	}
	script("up.sh") // idempotent: nothing changed, nothing restarts
	script("down.sh")
	script("up.sh")
	for i, p := range ports {
		key := fmt.Sprintf("deploy-test/m%d", i+1)
		if got := ctl(p, "get", key, "--print-value-only"); strings.TrimSpace(got) != "kept" {
			t.Errorf("m%d after down.sh and up.sh: %s = %q, want kept (the data volume is lost)", i+1, key, got)
		}
	}
}
