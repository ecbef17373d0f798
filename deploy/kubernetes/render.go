package kubernetes

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// ErrManifest: a rendered object is of a kind this package does not expect, under another API
// version, or has a field its type does not have.
var ErrManifest = errors.New("kubernetes manifest")

// Object is one rendered resource, decoded into its k8s.io/api type (a pointer: *appsv1.Deployment,
// *corev1.Service …).
type Object struct {
	Kind, Name string
	Value      any
}

// kinds are the kinds the manifests may hold, with their API version and type.
var kinds = map[string]struct {
	apiVersion string
	new        func() any
}{
	"Deployment":            {"apps/v1", func() any { return &appsv1.Deployment{} }},
	"StatefulSet":           {"apps/v1", func() any { return &appsv1.StatefulSet{} }},
	"Service":               {"v1", func() any { return &corev1.Service{} }},
	"ServiceAccount":        {"v1", func() any { return &corev1.ServiceAccount{} }},
	"ConfigMap":             {"v1", func() any { return &corev1.ConfigMap{} }},
	"PersistentVolumeClaim": {"v1", func() any { return &corev1.PersistentVolumeClaim{} }},
	"PodDisruptionBudget":   {"policy/v1", func() any { return &policyv1.PodDisruptionBudget{} }},
	"NetworkPolicy":         {"networking.k8s.io/v1", func() any { return &networkingv1.NetworkPolicy{} }},
}

// Render builds the kustomization in dir (with kustomize's default options: no plugins, no files
// outside dir) and decodes every object strictly.
func Render(dir string) ([]Object, error) {
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	var out []Object
	var errs []error
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			return nil, fmt.Errorf("kustomize %s: %s %s: %w", dir, r.GetKind(), r.GetName(), err)
		}
		o, err := Decode(y)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, o)
	}
	return out, errors.Join(errs...)
}

// Decode decodes one object from YAML into its type: an unknown kind or API version, or a field
// the type does not have, is an error (wrapping ErrManifest).
func Decode(y []byte) (Object, error) {
	j, err := yaml.YAMLToJSON(y)
	if err != nil {
		return Object{}, fmt.Errorf("%w: %w", ErrManifest, err)
	}
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(j, &head); err != nil {
		return Object{}, fmt.Errorf("%w: %w", ErrManifest, err)
	}
	k, ok := kinds[head.Kind]
	if !ok {
		return Object{}, fmt.Errorf("%w: %s %s: kind not expected here", ErrManifest, head.Kind, head.Metadata.Name)
	}
	if head.APIVersion != k.apiVersion {
		return Object{}, fmt.Errorf("%w: %s %s: apiVersion %s, want %s", ErrManifest, head.Kind, head.Metadata.Name, head.APIVersion, k.apiVersion)
	}
	v := k.new()
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Object{}, fmt.Errorf("%w: %s %s: %w", ErrManifest, head.Kind, head.Metadata.Name, err)
	}
	return Object{Kind: head.Kind, Name: head.Metadata.Name, Value: v}, nil
}

// Workload is a Deployment's or StatefulSet's pod template, with its replicas.
type Workload struct {
	Kind, Name string
	Replicas   int32
	Pod        *corev1.PodTemplateSpec
	Labels     map[string]string // the selector's
}

// Workloads lists the Deployments and StatefulSets among objs.
func Workloads(objs []Object) []Workload {
	var out []Workload
	for _, o := range objs {
		switch v := o.Value.(type) {
		case *appsv1.Deployment:
			out = append(out, Workload{o.Kind, o.Name, replicas(v.Spec.Replicas), &v.Spec.Template, v.Spec.Selector.MatchLabels})
		case *appsv1.StatefulSet:
			out = append(out, Workload{o.Kind, o.Name, replicas(v.Spec.Replicas), &v.Spec.Template, v.Spec.Selector.MatchLabels})
		}
	}
	return out
}

func replicas(r *int32) int32 {
	if r == nil {
		return 1
	}
	return *r
}

// Command is a process a container runs, as the binary sees it.
type Command struct {
	Workload, Container string
	Image               string
	Args                []string
	// Env is the container's environment: literal values, and those of ConfigMaps among the
	// objects; a Secret's value reads "secret:<name>/<key>", a field's "field:<path>".
	Env map[string]string
	// PreStop is the preStop hook's exec command, if any.
	PreStop []string
}

// Commands lists the containers of every workload, with their environment resolved.
func Commands(objs []Object) ([]Command, error) {
	configMaps := map[string]map[string]string{}
	for _, o := range objs {
		if cm, ok := o.Value.(*corev1.ConfigMap); ok {
			configMaps[cm.Name] = cm.Data
		}
	}
	var out []Command
	for _, w := range Workloads(objs) {
		for _, c := range w.Pod.Spec.Containers {
			cmd := Command{Workload: w.Name, Container: c.Name, Image: c.Image, Args: c.Args, Env: map[string]string{}}
			for _, ef := range c.EnvFrom {
				if ef.ConfigMapRef == nil {
					return nil, fmt.Errorf("%w: %s/%s: envFrom other than a ConfigMap", ErrManifest, w.Name, c.Name)
				}
				data, ok := configMaps[ef.ConfigMapRef.Name]
				if !ok {
					return nil, fmt.Errorf("%w: %s/%s: envFrom ConfigMap %s is not among the objects", ErrManifest, w.Name, c.Name, ef.ConfigMapRef.Name)
				}
				for k, v := range data {
					cmd.Env[ef.Prefix+k] = v
				}
			}
			for _, e := range c.Env {
				switch {
				case e.ValueFrom == nil:
					cmd.Env[e.Name] = e.Value
				case e.ValueFrom.SecretKeyRef != nil:
					cmd.Env[e.Name] = "secret:" + e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
				case e.ValueFrom.FieldRef != nil:
					cmd.Env[e.Name] = "field:" + e.ValueFrom.FieldRef.FieldPath
				default:
					return nil, fmt.Errorf("%w: %s/%s: env %s from neither a value, a Secret nor a field", ErrManifest, w.Name, c.Name, e.Name)
				}
			}
			if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Exec != nil {
				cmd.PreStop = c.Lifecycle.PreStop.Exec.Command
			}
			out = append(out, cmd)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Workload+"/"+out[i].Container < out[j].Workload+"/"+out[j].Container
	})
	return out, nil
}
