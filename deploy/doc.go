// Package deploy holds the files users copy to run corral in containers:
// the Compose file, the Kubernetes manifests and the container config. Its
// tests check those files against each other and against corral's config
// schema, so a renamed port or a shortened grace period fails the build
// instead of a rollout.
package deploy
