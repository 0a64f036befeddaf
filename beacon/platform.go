package beacon

import (
	"bufio"
	"bytes"
	"io/fs"
	"os"
	"regexp"
	"runtime"
	"strings"
)

// The platform types of the heartbeat body.
const (
	PlatformDocker     = "docker"
	PlatformKubernetes = "kubernetes"
	PlatformLambda     = "lambda"
	PlatformBareMetal  = "bare_metal"
)

// Platform describes where the agent runs. Which fields are set depends on
// Type, as in the Beacon platform table: Docker reports ContainerID and Image,
// Kubernetes PodName, Namespace and Node, Lambda FunctionName and Region, bare
// metal Hostname, OS and PID.
type Platform struct {
	Type         string `json:"type"`
	ContainerID  string `json:"container_id,omitempty"`
	Image        string `json:"image,omitempty"`
	PodName      string `json:"pod_name,omitempty"`
	Namespace    string `json:"namespace,omitempty"`
	Node         string `json:"node,omitempty"`
	FunctionName string `json:"function_name,omitempty"`
	Region       string `json:"region,omitempty"`
	Hostname     string `json:"hostname,omitempty"`
	OS           string `json:"os,omitempty"`
	PID          int    `json:"pid,omitempty"`
}

// DefaultID returns the agent id derived from the platform: the pod name on
// Kubernetes, the short container id on Docker, the function name on Lambda,
// the hostname on bare metal, sanitised with SanitizeID. It is "" when nothing
// usable is known.
func (p Platform) DefaultID() string {
	var id string
	switch p.Type {
	case PlatformKubernetes:
		id = p.PodName
	case PlatformDocker:
		id = p.ContainerID
		if len(id) > 12 && containerIDRe.MatchString(id) {
			id = id[:12] // what `docker ps` shows, and the container's hostname
		}
	case PlatformLambda:
		id = p.FunctionName
	default:
		id = p.Hostname
	}
	return SanitizeID(id)
}

// serviceAccountNamespace is where Kubernetes mounts the pod's namespace.
const serviceAccountNamespace = "var/run/secrets/kubernetes.io/serviceaccount/namespace"

// Detector detects the platform from a filesystem and an environment, so that
// tests can fake both. The zero value detects the real host.
type Detector struct {
	// FS is the root filesystem ("/"); paths are looked up without the
	// leading slash, e.g. ".dockerenv". Nil means os.DirFS("/").
	FS fs.FS
	// Getenv defaults to os.Getenv.
	Getenv func(string) string
	// Hostname defaults to os.Hostname.
	Hostname func() (string, error)
	// PID defaults to os.Getpid().
	PID int
	// OS defaults to runtime.GOOS.
	OS string
}

// DetectPlatform detects the platform this process runs on.
func DetectPlatform() Platform { return Detector{}.Detect() }

// Detect returns the platform per the Beacon platform table. Lambda and
// Kubernetes are recognised by their environment variables and take
// precedence over Docker (pods carry container markers too); Docker is
// recognised by /.dockerenv; anything else is bare metal.
func (d Detector) Detect() Platform {
	fsys := d.FS
	if fsys == nil {
		fsys = os.DirFS("/")
	}
	getenv := d.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	hostname := d.Hostname
	if hostname == nil {
		hostname = os.Hostname
	}
	host := func() string {
		h, err := hostname()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(h)
	}

	if fn := getenv("AWS_LAMBDA_FUNCTION_NAME"); fn != "" {
		region := getenv("AWS_REGION")
		if region == "" {
			region = getenv("AWS_DEFAULT_REGION")
		}
		return Platform{Type: PlatformLambda, FunctionName: fn, Region: region}
	}

	if getenv("KUBERNETES_SERVICE_HOST") != "" {
		p := Platform{Type: PlatformKubernetes, PodName: getenv("POD_NAME"), Namespace: getenv("POD_NAMESPACE"), Node: getenv("NODE_NAME")}
		if p.PodName == "" {
			p.PodName = host() // a pod's hostname is its name
		}
		if p.Namespace == "" {
			if b, err := fs.ReadFile(fsys, serviceAccountNamespace); err == nil {
				p.Namespace = strings.TrimSpace(string(b))
			}
		}
		return p
	}

	if _, err := fs.Stat(fsys, ".dockerenv"); err == nil {
		p := Platform{Type: PlatformDocker, Image: firstEnv(getenv, "SENTINEL_IMAGE", "IMAGE")}
		p.ContainerID = containerID(fsys, host)
		return p
	}

	p := Platform{Type: PlatformBareMetal, Hostname: host(), OS: d.OS, PID: d.PID}
	if p.OS == "" {
		p.OS = runtime.GOOS
	}
	if p.PID == 0 {
		p.PID = os.Getpid()
	}
	return p
}

func firstEnv(getenv func(string) string, names ...string) string {
	for _, n := range names {
		if v := getenv(n); v != "" {
			return v
		}
	}
	return ""
}

var (
	containerIDRe   = regexp.MustCompile(`^[0-9a-f]{64}$`)
	containerIDFind = regexp.MustCompile(`[0-9a-f]{64}`)
	shortIDRe       = regexp.MustCompile(`^[0-9a-f]{12}$`)
)

// containerID finds the container id in /proc/self/cgroup (cgroup v1 and
// systemd scopes, e.g. "/docker/<id>" or "docker-<id>.scope"), then in
// /proc/self/mountinfo (Docker bind-mounts /etc/hostname from
// /var/lib/docker/containers/<id>/), then falls back to the hostname, which
// Docker sets to the short id unless told otherwise.
func containerID(fsys fs.FS, host func() string) string {
	if b, err := fs.ReadFile(fsys, "proc/self/cgroup"); err == nil {
		if id := findContainerID(b, nil); id != "" {
			return id
		}
	}
	if b, err := fs.ReadFile(fsys, "proc/self/mountinfo"); err == nil {
		if id := findContainerID(b, []string{"/containers/", "/sandboxes/"}); id != "" {
			return id
		}
	}
	if h := host(); shortIDRe.MatchString(h) || containerIDRe.MatchString(h) {
		return h
	}
	return host()
}

// findContainerID returns the first 64-hex id on a line, only on lines that
// contain one of markers when markers are given.
func findContainerID(b []byte, markers []string) string {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if len(markers) > 0 && !containsAny(line, markers) {
			continue
		}
		if id := containerIDFind.FindString(line); id != "" {
			return id
		}
	}
	return ""
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
