// ccplant-statuscheck: the verdicts other tools give ccplant's objects, computed by those tools'
// own code, so the tests check what Flux, kpt, `kubectl wait` and Argo CD will really say.
//
//	ccplant-statuscheck kstatus <LIST.json
//	    kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute) of every item of a
//	    `kubectl get -o json` list: one line "<Kind>/<name> <Status> <message>" each.
//	ccplant-statuscheck argocd-health ARGOCD-CM.yaml <LIST.json
//	    Argo CD's custom health checks from the ConfigMap's
//	    resource.customizations.health.<group>_<Kind> keys, run as Argo CD runs them: gopher-lua
//	    with only the package, base and table libraries opened, `obj` set to the object, a 1 s
//	    deadline, and the returned table's status checked against Argo CD's health codes. One
//	    line "<Kind>/<name> <status> <message>" each.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "ccplant-statuscheck:", err)
		os.Exit(1)
	}
}

func run(args []string, in io.Reader, out io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: ccplant-statuscheck kstatus | argocd-health ARGOCD-CM.yaml (a kubectl get -o json list on stdin)")
	}
	items, err := readList(in)
	if err != nil {
		return err
	}
	switch args[0] {
	case "kstatus":
		for _, u := range items {
			res, err := status.Compute(u)
			if err != nil {
				return fmt.Errorf("%s/%s: %w", u.GetKind(), u.GetName(), err)
			}
			fmt.Fprintf(out, "%s/%s %s %s\n", u.GetKind(), u.GetName(), res.Status, oneLine(res.Message))
		}
	case "argocd-health":
		if len(args) != 2 {
			return fmt.Errorf("usage: ccplant-statuscheck argocd-health ARGOCD-CM.yaml")
		}
		scripts, err := readHealthScripts(args[1])
		if err != nil {
			return err
		}
		for _, u := range items {
			gvk := u.GroupVersionKind()
			key := "resource.customizations.health." + gvk.Group + "_" + gvk.Kind
			script, ok := scripts[key]
			if !ok {
				return fmt.Errorf("%s has no %s", args[1], key)
			}
			st, msg, err := argoHealth(u, script)
			if err != nil {
				return fmt.Errorf("%s/%s: %w", u.GetKind(), u.GetName(), err)
			}
			fmt.Fprintf(out, "%s/%s %s %s\n", u.GetKind(), u.GetName(), st, oneLine(msg))
		}
	default:
		return fmt.Errorf("unknown command %q", args[0])
	}
	return nil
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func readList(in io.Reader) ([]*unstructured.Unstructured, error) {
	data, err := io.ReadAll(in)
	if err != nil {
		return nil, err
	}
	// Decoded as kubectl decodes objects: integers stay int64.
	var list unstructured.UnstructuredList
	if err := list.UnmarshalJSON(data); err != nil {
		return nil, fmt.Errorf("stdin is not a kubectl get -o json list: %w", err)
	}
	items := make([]*unstructured.Unstructured, 0, len(list.Items))
	for i := range list.Items {
		items = append(items, &list.Items[i])
	}
	return items, nil
}

func readHealthScripts(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(data, &cm); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cm.Data, nil
}

// Argo CD's health codes.
var healthCodes = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true, "Healthy": true, "Degraded": true, "Missing": true,
}

func argoHealth(u *unstructured.Unstructured, script string) (string, string, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return "", "", err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, u.Object))
	if err := l.DoString(script); err != nil {
		return "", "", err
	}
	ret, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("the script returned %s, not a table", l.Get(-1).Type())
	}
	st := lua.LVAsString(ret.RawGetString("status"))
	if !healthCodes[st] {
		return "Unknown", "Lua returned an invalid health status", nil
	}
	return st, lua.LVAsString(ret.RawGetString("message")), nil
}

// toLua converts a decoded JSON value the way Argo CD hands objects to health scripts.
func toLua(l *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []interface{}:
		t := l.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]interface{}:
		t := l.CreateTable(0, len(v))
		for key, item := range v {
			t.RawSetH(lua.LString(key), toLua(l, item))
		}
		return t
	}
	return lua.LNil
}
