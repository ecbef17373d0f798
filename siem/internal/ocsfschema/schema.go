// Package ocsfschema checks an OCSF event against the uncompiled OCSF schema (a checkout of
// ocsf/ocsf-schema: dictionary.json, categories.json, events/, objects/, profiles/). It resolves
// what the schema's compiler would: a class extends its category's generic event and
// base_event, an object extends its parent, "$include" pulls in profile attributes, and an
// attribute's type, enum and array-ness come from the dictionary unless the class or object
// says otherwise. It is the tests' referee for siem's OCSF output; it owns nothing else.
package ocsfschema

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Schema is a loaded schema directory.
type Schema struct {
	Version    string
	dir        string
	dict       map[string]attr   // the dictionary's attributes
	types      map[string]scalar // the dictionary's scalar types
	categories map[string]int    // category name → uid
	classes    map[int]*shape    // class uid → its resolved attributes
	objects    map[string]*shape // object name → its resolved attributes
	rawObjects map[string]rawShape
}

type attr struct {
	Type        string                     `json:"type"`
	ObjectType  string                     `json:"object_type"`
	IsArray     bool                       `json:"is_array"`
	Requirement string                     `json:"requirement"`
	Enum        map[string]json.RawMessage `json:"enum"`
	Profile     *string                    `json:"profile"`
}

type scalar struct {
	Type  string `json:"type"`
	Regex string `json:"regex"`
	re    *regexp.Regexp
}

type rawShape struct {
	Name        string                     `json:"name"`
	UID         int                        `json:"uid"`
	Category    string                     `json:"category"`
	Extends     string                     `json:"extends"`
	Attributes  map[string]json.RawMessage `json:"attributes"`
	Constraints map[string][]string        `json:"constraints"`
}

// shape is a class or object with everything inherited and included.
type shape struct {
	name        string
	uid         int // class uid (category uid × 1000 + class uid); 0 for objects
	categoryUID int
	attrs       map[string]attr
	constraints map[string][]string
}

// Load reads the schema at dir.
func Load(dir string) (*Schema, error) {
	s := &Schema{dir: dir, categories: map[string]int{}, classes: map[int]*shape{}, objects: map[string]*shape{}, rawObjects: map[string]rawShape{}}
	var version struct{ Version string }
	if err := readJSON(filepath.Join(dir, "version.json"), &version); err != nil {
		return nil, err
	}
	s.Version = version.Version
	var dict struct {
		Attributes map[string]attr `json:"attributes"`
		Types      struct {
			Attributes map[string]scalar `json:"attributes"`
		} `json:"types"`
	}
	if err := readJSON(filepath.Join(dir, "dictionary.json"), &dict); err != nil {
		return nil, err
	}
	s.dict, s.types = dict.Attributes, dict.Types.Attributes
	for name, t := range s.types {
		if t.Regex != "" {
			if re, err := regexp.Compile("^(?:" + t.Regex + ")$"); err == nil {
				t.re = re // patterns Go's RE2 cannot compile are not checked
				s.types[name] = t
			}
		}
	}
	var cats struct {
		Attributes map[string]struct {
			UID int `json:"uid"`
		} `json:"attributes"`
	}
	if err := readJSON(filepath.Join(dir, "categories.json"), &cats); err != nil {
		return nil, err
	}
	for name, c := range cats.Attributes {
		s.categories[name] = c.UID
	}
	objFiles, err := filepath.Glob(filepath.Join(dir, "objects", "*.json"))
	if err != nil {
		return nil, err
	}
	for _, f := range objFiles {
		var o rawShape
		if err := readJSON(f, &o); err != nil {
			return nil, err
		}
		s.rawObjects[o.Name] = o
	}
	events := map[string]rawShape{}
	eventFiles, err := filepath.Glob(filepath.Join(dir, "events", "*", "*.json"))
	if err != nil {
		return nil, err
	}
	base := filepath.Join(dir, "events", "base_event.json")
	for _, f := range append(eventFiles, base) {
		var e rawShape
		if err := readJSON(f, &e); err != nil {
			return nil, err
		}
		if e.Category == "" && f != base {
			e.Category = filepath.Base(filepath.Dir(f))
		}
		events[e.Name] = e
	}
	// Resolve every object now, so that Validate only reads (tests validate in parallel).
	for name := range s.rawObjects {
		attrs, err := s.resolve(s.rawObjects, name, 0)
		if err != nil {
			return nil, fmt.Errorf("object %s: %w", name, err)
		}
		s.objects[name] = &shape{name: name, attrs: attrs, constraints: s.rawObjects[name].Constraints}
	}
	for _, e := range events {
		if e.UID == 0 {
			continue // base_event and each category's generic event
		}
		attrs, err := s.resolve(events, e.Name, 0)
		if err != nil {
			return nil, fmt.Errorf("class %s: %w", e.Name, err)
		}
		catUID, ok := s.categories[e.Category]
		if !ok {
			return nil, fmt.Errorf("class %s: unknown category %q", e.Name, e.Category)
		}
		uid := catUID*1000 + e.UID
		s.classes[uid] = &shape{name: e.Name, uid: uid, categoryUID: catUID, attrs: attrs, constraints: e.Constraints}
	}
	return s, nil
}

// resolve merges the attributes of shape name with those it extends and includes.
func (s *Schema) resolve(shapes map[string]rawShape, name string, depth int) (map[string]attr, error) {
	if depth > 16 {
		return nil, errors.New("extends too deep")
	}
	sh, ok := shapes[name]
	if !ok {
		return nil, fmt.Errorf("unknown %q", name)
	}
	out := map[string]attr{}
	if sh.Extends != "" {
		parent, err := s.resolve(shapes, sh.Extends, depth+1)
		if err != nil {
			return nil, err
		}
		out = parent
	}
	if err := s.merge(out, sh.Attributes); err != nil {
		return nil, err
	}
	return out, nil
}

// merge lays attributes (with "$include"d files) over out: a later definition's fields win,
// enums are joined.
func (s *Schema) merge(out map[string]attr, attrs map[string]json.RawMessage) error {
	for name, raw := range attrs {
		if name == "$include" {
			var files []string
			if err := json.Unmarshal(raw, &files); err != nil {
				var one string
				if err := json.Unmarshal(raw, &one); err != nil {
					return fmt.Errorf("$include: %w", err)
				}
				files = []string{one}
			}
			for _, f := range files {
				var inc struct {
					Attributes map[string]json.RawMessage `json:"attributes"`
				}
				if err := readJSON(filepath.Join(s.dir, f), &inc); err != nil {
					return err
				}
				if err := s.merge(out, inc.Attributes); err != nil {
					return err
				}
				if strings.HasPrefix(f, "profiles/") {
					// A profile's attributes bind only events that declare the profile.
					for name := range inc.Attributes {
						if a := out[name]; a.Requirement == "required" {
							a.Requirement = "optional"
							out[name] = a
						}
					}
				}
			}
			continue
		}
		var a attr
		if err := json.Unmarshal(raw, &a); err != nil {
			return fmt.Errorf("attribute %s: %w", name, err)
		}
		prev, had := out[name]
		if !had {
			prev = s.dict[name]
		}
		if a.Type != "" {
			prev.Type = a.Type
		}
		if a.ObjectType != "" {
			prev.ObjectType = a.ObjectType
		}
		if a.Requirement != "" {
			prev.Requirement = a.Requirement
		}
		if a.Profile != nil {
			prev.Profile = a.Profile
		}
		if len(a.Enum) > 0 {
			joined := maps.Clone(prev.Enum)
			if joined == nil {
				joined = map[string]json.RawMessage{}
			}
			maps.Copy(joined, a.Enum)
			prev.Enum = joined
		}
		out[name] = prev
	}
	return nil
}

func (s *Schema) object(name string) (*shape, error) {
	if o, ok := s.objects[name]; ok {
		return o, nil
	}
	return nil, fmt.Errorf("no object %s in the schema", name)
}

// ClassName is the name of the class with uid, or "".
func (s *Schema) ClassName(uid int) string {
	if c, ok := s.classes[uid]; ok {
		return c.name
	}
	return ""
}

// Validate checks one event (JSON) and returns every problem found, joined.
func (s *Schema) Validate(event []byte) error {
	dec := json.NewDecoder(strings.NewReader(string(event)))
	dec.UseNumber()
	var ev map[string]any
	if err := dec.Decode(&ev); err != nil {
		return fmt.Errorf("not a JSON object: %w", err)
	}
	classUID, err := intOf(ev["class_uid"])
	if err != nil {
		return fmt.Errorf("class_uid: %w", err)
	}
	class, ok := s.classes[int(classUID)]
	if !ok {
		return fmt.Errorf("class_uid %d is no class of OCSF %s", classUID, s.Version)
	}
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if cat, err := intOf(ev["category_uid"]); err != nil || int(cat) != class.categoryUID {
		bad("category_uid %v, want %d for class %s", ev["category_uid"], class.categoryUID, class.name)
	}
	if act, err := intOf(ev["activity_id"]); err == nil {
		if tu, err := intOf(ev["type_uid"]); err != nil || tu != classUID*100+act {
			bad("type_uid %v, want class_uid×100+activity_id = %d", ev["type_uid"], classUID*100+act)
		}
	}
	s.check(class, ev, class.name, &errs)
	return errors.Join(errs...)
}

// check validates the members of obj against sh, at path.
func (s *Schema) check(sh *shape, obj map[string]any, path string, errs *[]error) {
	bad := func(format string, a ...any) { *errs = append(*errs, fmt.Errorf(format, a...)) }
	for _, name := range slices.Sorted(maps.Keys(sh.attrs)) {
		if sh.attrs[name].Requirement == "required" {
			if _, ok := obj[name]; !ok {
				bad("%s: required attribute %s is missing", path, name)
			}
		}
	}
	for kind, names := range sh.constraints {
		n := 0
		for _, name := range names {
			if _, ok := obj[name]; ok {
				n++
			}
		}
		switch {
		case kind == "at_least_one" && n == 0:
			bad("%s: needs at least one of %v", path, names)
		case kind == "just_one" && n != 1:
			bad("%s: needs exactly one of %v, has %d", path, names, n)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(obj)) {
		a, ok := sh.attrs[name]
		if !ok {
			bad("%s.%s: not an attribute of %s", path, name, sh.name)
			continue
		}
		s.value(a, name, obj[name], path+"."+name, errs)
	}
}

func (s *Schema) value(a attr, name string, v any, path string, errs *[]error) {
	bad := func(format string, args ...any) { *errs = append(*errs, fmt.Errorf(format, args...)) }
	if a.IsArray {
		list, ok := v.([]any)
		if !ok {
			bad("%s: want an array", path)
			return
		}
		item := a
		item.IsArray = false
		for i, e := range list {
			s.value(item, name, e, fmt.Sprintf("%s[%d]", path, i), errs)
		}
		return
	}
	typ := a.Type
	if typ == "" {
		bad("%s: the dictionary has no type for %s", path, name)
		return
	}
	if !strings.HasSuffix(typ, "_t") {
		obj, ok := v.(map[string]any)
		if !ok {
			bad("%s: want an object (%s)", path, typ)
			return
		}
		if typ == "object" {
			return // free-form (unmapped)
		}
		sh, err := s.object(typ)
		if err != nil {
			bad("%s: %v", path, err)
			return
		}
		s.check(sh, obj, path, errs)
		return
	}
	// A scalar: follow the type to its primitive, checking each pattern on the way.
	for range 8 {
		t, ok := s.types[typ]
		if !ok {
			bad("%s: unknown type %s", path, typ)
			return
		}
		if t.re != nil {
			if str, ok := v.(string); ok && !t.re.MatchString(str) {
				bad("%s: %q is not a valid %s", path, str, typ)
			}
		}
		if t.Type == "" || t.Type == typ {
			break
		}
		typ = t.Type
	}
	switch typ {
	case "string_t":
		if _, ok := v.(string); !ok {
			bad("%s: want a string", path)
			return
		}
	case "integer_t", "long_t":
		if _, err := intOf(v); err != nil {
			bad("%s: %v", path, err)
			return
		}
	case "float_t":
		if _, ok := v.(json.Number); !ok {
			bad("%s: want a number", path)
			return
		}
	case "boolean_t":
		if _, ok := v.(bool); !ok {
			bad("%s: want a boolean", path)
			return
		}
	case "json_t":
		return
	default:
		bad("%s: unknown primitive type %s", path, typ)
		return
	}
	// The classification uids' enums are generated by the schema's compiler; Validate checks
	// them against the class instead.
	if len(a.Enum) > 0 && name != "class_uid" && name != "category_uid" && name != "type_uid" {
		key := fmt.Sprint(v)
		if _, ok := a.Enum[key]; !ok {
			bad("%s: %v is not one of %v", path, v, slices.Sorted(maps.Keys(a.Enum)))
		}
	}
}

func intOf(v any) (int64, error) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, fmt.Errorf("want an integer, have %T", v)
	}
	i, err := strconv.ParseInt(string(n), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("want an integer, have %s", n)
	}
	return i, nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
