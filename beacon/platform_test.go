package beacon

import (
	"errors"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"
)

const (
	cid1 = "3f4e8b2a9c1d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f"
	cid2 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

func TestDetect(t *testing.T) {
	dockerenv := &fstest.MapFile{}
	for _, tc := range []struct {
		name   string
		files  fstest.MapFS
		env    map[string]string
		host   string
		want   Platform
		wantID string
	}{
		{
			name:   "bare metal",
			host:   "build-box.example.com",
			want:   Platform{Type: PlatformBareMetal, Hostname: "build-box.example.com", OS: "linux", PID: 4242},
			wantID: "build-box.example.com",
		},
		{
			name:   "docker, cgroup v1",
			files:  fstest.MapFS{".dockerenv": dockerenv, "proc/self/cgroup": {Data: []byte("12:memory:/docker/" + cid1 + "\n11:cpu:/docker/" + cid1 + "\n")}},
			env:    map[string]string{"SENTINEL_IMAGE": "acme/agent:1.4.2", "IMAGE": "ignored"},
			host:   "3f4e8b2a9c1d",
			want:   Platform{Type: PlatformDocker, ContainerID: cid1, Image: "acme/agent:1.4.2"},
			wantID: "3f4e8b2a9c1d",
		},
		{
			name:   "docker, systemd cgroup driver",
			files:  fstest.MapFS{".dockerenv": dockerenv, "proc/self/cgroup": {Data: []byte("0::/system.slice/docker-" + cid2 + ".scope\n")}},
			env:    map[string]string{"IMAGE": "agent:latest"},
			want:   Platform{Type: PlatformDocker, ContainerID: cid2, Image: "agent:latest"},
			wantID: "0123456789ab",
		},
		{
			name: "docker, cgroup v2: id from mountinfo",
			files: fstest.MapFS{
				".dockerenv":       dockerenv,
				"proc/self/cgroup": {Data: []byte("0::/\n")},
				"proc/self/mountinfo": {Data: []byte(
					"612 590 0:50 / / rw,relatime - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/" + cid2 + "\n" +
						"630 612 8:1 /var/lib/docker/containers/" + cid1 + "/hostname /etc/hostname rw,relatime - ext4 /dev/sda1 rw\n")},
			},
			host:   "my-agent",
			want:   Platform{Type: PlatformDocker, ContainerID: cid1},
			wantID: "3f4e8b2a9c1d",
		},
		{
			name:   "docker, nothing but the hostname",
			files:  fstest.MapFS{".dockerenv": dockerenv},
			host:   "a1b2c3d4e5f6",
			want:   Platform{Type: PlatformDocker, ContainerID: "a1b2c3d4e5f6"},
			wantID: "a1b2c3d4e5f6",
		},
		{
			name: "kubernetes from the downward API",
			// Pods carry container markers too: Kubernetes wins.
			files:  fstest.MapFS{".dockerenv": dockerenv, serviceAccountNamespace: {Data: []byte("from-file\n")}},
			env:    map[string]string{"KUBERNETES_SERVICE_HOST": "10.0.0.1", "POD_NAME": "my-agent-7f8a9b-xyz", "POD_NAMESPACE": "production", "NODE_NAME": "node-pool-1-abc"},
			host:   "ignored",
			want:   Platform{Type: PlatformKubernetes, PodName: "my-agent-7f8a9b-xyz", Namespace: "production", Node: "node-pool-1-abc"},
			wantID: "my-agent-7f8a9b-xyz",
		},
		{
			name:   "kubernetes, pod from hostname, namespace from the service account",
			files:  fstest.MapFS{serviceAccountNamespace: {Data: []byte("staging\n")}},
			env:    map[string]string{"KUBERNETES_SERVICE_HOST": "10.0.0.1"},
			host:   "worker-0",
			want:   Platform{Type: PlatformKubernetes, PodName: "worker-0", Namespace: "staging"},
			wantID: "worker-0",
		},
		{
			name:   "lambda",
			files:  fstest.MapFS{".dockerenv": dockerenv},
			env:    map[string]string{"AWS_LAMBDA_FUNCTION_NAME": "summarise-tickets", "AWS_REGION": "eu-west-1"},
			want:   Platform{Type: PlatformLambda, FunctionName: "summarise-tickets", Region: "eu-west-1"},
			wantID: "summarise-tickets",
		},
		{
			name:   "lambda, default region",
			env:    map[string]string{"AWS_LAMBDA_FUNCTION_NAME": "f", "AWS_DEFAULT_REGION": "us-east-1"},
			want:   Platform{Type: PlatformLambda, FunctionName: "f", Region: "us-east-1"},
			wantID: "f",
		},
		{
			name:   "unusable hostname is sanitised",
			host:   "my host (dev)",
			want:   Platform{Type: PlatformBareMetal, Hostname: "my host (dev)", OS: "linux", PID: 4242},
			wantID: "my-host--dev-",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.files == nil {
				tc.files = fstest.MapFS{}
			}
			d := Detector{
				FS:     tc.files,
				Getenv: func(k string) string { return tc.env[k] },
				Hostname: func() (string, error) {
					if tc.host == "" {
						return "", errors.New("no hostname")
					}
					return tc.host, nil
				},
				PID: 4242,
				OS:  "linux",
			}
			got := d.Detect()
			require.Equal(t, tc.want, got)
			require.Equal(t, tc.wantID, got.DefaultID())
		})
	}
}

func TestDetectPlatformReal(t *testing.T) {
	p := DetectPlatform()
	require.Contains(t, []string{PlatformDocker, PlatformKubernetes, PlatformLambda, PlatformBareMetal}, p.Type)
}
