package api

import (
	"reflect"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

// nodeOf copies every field of the read model's node: one added there and forgotten here would
// silently be missing from the API's answers.
func TestNodeOfCopiesEveryField(t *testing.T) {
	t.Parallel()
	var n readmodels.Node
	v := reflect.ValueOf(&n).Elem()
	for i := range v.NumField() {
		switch f := v.Field(i); f.Kind() {
		case reflect.String:
			f.SetString(v.Type().Field(i).Name)
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Int64:
			f.SetInt(int64(i + 1))
		case reflect.Struct:
			f.Set(reflect.ValueOf(time.Unix(int64(i+1), 0)))
		default:
			t.Fatalf("field %s of kind %s: extend this test", v.Type().Field(i).Name, f.Kind())
		}
	}
	got := reflect.ValueOf(nodeOf(n))
	for i := range v.NumField() {
		name := v.Type().Field(i).Name
		if !got.FieldByName(name).IsValid() {
			t.Errorf("the API's Node has no field %s", name)
			continue
		}
		if !reflect.DeepEqual(got.FieldByName(name).Interface(), v.Field(i).Interface()) {
			t.Errorf("Node.%s = %v, want %v", name, got.FieldByName(name).Interface(), v.Field(i).Interface())
		}
	}
}
