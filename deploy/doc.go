// Package deploy holds no code. Its tests check the deployment files against
// the real binary and against each other: the Kubernetes manifests in
// deploy/kubernetes/ (container arguments, configuration, probes, ports,
// Services, ServiceMonitor, resources) and the Dockerfile at the root of the
// repository (ENTRYPOINT, CMD, EXPOSE, version stamping), the Helm chart in
// deploy/helm/sentinel, the docker-compose stack in deploy/compose/ and the
// Grafana provisioning in deploy/grafana/.
package deploy

//go:generate go run ./helm/gen
