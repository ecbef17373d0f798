// Package kubernetes holds the Kubernetes manifests of tunnelplane (a kustomize base and the
// overlays single and cluster; see README.md) and renders them for its tests: every object is
// decoded strictly into its k8s.io/api type, so a field Kubernetes does not know, or a kind the
// package does not expect, is an error rather than something the API server drops or refuses at
// apply time.
//
// It must not change the product: the tests check the manifests against the product (its flags
// and environment, its health endpoints, its image), never the reverse.
package kubernetes
