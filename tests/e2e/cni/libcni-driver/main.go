// libcni-driver drives CNI plugins through libcni, the library container runtimes
// (containerd, CRI-O, Podman) use, so the e2e tests and the benchmark exercise
// cilium-py-cni exactly as a runtime would: config list parsing, capability args,
// prevResult chaining, the result cache, and version conversion.
//
//	libcni-driver add|check|del -conflist F -netns P -id ID [-ifname eth0]
//	    [-cni-path DIRS] [-cache-dir D] [-args K=V;K=V] [-port-mappings JSON]
//	libcni-driver raw -conf F -command ADD|CHECK|DEL|GC|STATUS|VERSION [...same flags]
//	libcni-driver bench -conflist A -netns PA [-conflist B -netns PB ...] -rounds N
//	libcni-driver validate -conflist F [-cni-path DIRS]
//
// add prints the chain's final result; raw execs a single plugin with libcni's invoke
// layer and prints its stdout unparsed (for spec 1.1.0 verbs, which this libcni predates);
// validate runs libcni's ValidateNetworkList (each plugin's VERSION probe, as CRI-O and
// podman do before using a network) and prints the capabilities;
// bench alternates the config lists round by round and prints per-list timings in ms.
// Failures print {"error": ..., "code": N} on stdout and exit 1.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

type options struct {
	conflists    multi
	netnses      multi
	conf         string
	command      string
	id           string
	ifname       string
	cniPath      string
	cacheDir     string
	args         string
	portMappings string
	rounds       int
}

func fail(err error) {
	code := 0
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		code = int(cniErr.Code)
	}
	out, _ := json.Marshal(map[string]interface{}{"error": err.Error(), "code": code})
	fmt.Println(string(out))
	os.Exit(1)
}

func parseArgs(text string) [][2]string {
	var pairs [][2]string
	for _, part := range strings.Split(text, ";") {
		if kv := strings.SplitN(part, "=", 2); len(kv) == 2 {
			pairs = append(pairs, [2]string{kv[0], kv[1]})
		}
	}
	return pairs
}

func runtimeConf(o *options, netns, id string) (*libcni.RuntimeConf, error) {
	rt := &libcni.RuntimeConf{
		ContainerID: id,
		NetNS:       netns,
		IfName:      o.ifname,
		Args:        parseArgs(o.args),
		CacheDir:    o.cacheDir,
	}
	if o.portMappings != "" {
		var pm []map[string]interface{}
		if err := json.Unmarshal([]byte(o.portMappings), &pm); err != nil {
			return nil, fmt.Errorf("-port-mappings: %w", err)
		}
		rt.CapabilityArgs = map[string]interface{}{"portMappings": pm}
	}
	return rt, nil
}

func cniConfig(o *options) *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir(filepath.SplitList(o.cniPath), o.cacheDir, nil)
}

func loadList(path string) *libcni.NetworkConfigList {
	list, err := libcni.ConfListFromFile(path)
	if err != nil {
		fail(err)
	}
	return list
}

func single(ctx context.Context, verb string, o *options) {
	if len(o.conflists) != 1 || len(o.netnses) > 1 {
		fail(fmt.Errorf("%s takes one -conflist and at most one -netns", verb))
	}
	netns := ""
	if len(o.netnses) == 1 {
		netns = o.netnses[0]
	}
	list := loadList(o.conflists[0])
	rt, err := runtimeConf(o, netns, o.id)
	if err != nil {
		fail(err)
	}
	cni := cniConfig(o)
	switch verb {
	case "add":
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			fail(err)
		}
		out, _ := json.Marshal(res)
		fmt.Println(string(out))
	case "check":
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
	case "del":
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
	}
}

func validate(ctx context.Context, o *options) {
	if len(o.conflists) != 1 {
		fail(fmt.Errorf("validate takes one -conflist"))
	}
	caps, err := cniConfig(o).ValidateNetworkList(ctx, loadList(o.conflists[0]))
	if err != nil {
		fail(err)
	}
	out, _ := json.Marshal(map[string]interface{}{"capabilities": caps})
	fmt.Println(string(out))
}

func raw(ctx context.Context, o *options) {
	stdin, err := os.ReadFile(o.conf)
	if err != nil {
		fail(err)
	}
	conf, err := libcni.ConfFromBytes(stdin)
	if err != nil {
		fail(err)
	}
	exec := &invoke.RawExec{Stderr: os.Stderr}
	paths := filepath.SplitList(o.cniPath)
	plugin, err := exec.FindInPath(conf.Network.Type, paths)
	if err != nil {
		fail(err)
	}
	netns := ""
	if len(o.netnses) == 1 {
		netns = o.netnses[0]
	}
	args := &invoke.Args{
		Command:       o.command,
		ContainerID:   o.id,
		NetNS:         netns,
		PluginArgsStr: o.args,
		IfName:        o.ifname,
		Path:          o.cniPath,
	}
	out, err := exec.ExecPlugin(ctx, plugin, stdin, args.AsEnv())
	if err != nil {
		fail(err)
	}
	os.Stdout.Write(out)
}

type timings struct {
	Add   []float64 `json:"add"`
	Check []float64 `json:"check"`
	Del   []float64 `json:"del"`
}

func ms(start time.Time) float64 { return float64(time.Since(start).Microseconds()) / 1000 }

func bench(ctx context.Context, o *options) {
	if len(o.conflists) == 0 || len(o.conflists) != len(o.netnses) {
		fail(fmt.Errorf("bench needs one -netns per -conflist"))
	}
	lists := make([]*libcni.NetworkConfigList, len(o.conflists))
	for i, path := range o.conflists {
		lists[i] = loadList(path)
	}
	cni := cniConfig(o)
	results := make([]timings, len(lists))
	// Round 0 is the unmeasured warm-up (the bridge plugin creates its bridge then).
	for round := 0; round <= o.rounds; round++ {
		for k := range lists {
			i := (round + k) % len(lists) // rotate who goes first, round by round
			id := fmt.Sprintf("%s-%d-%d", o.id, i, round)
			rt, err := runtimeConf(o, o.netnses[i], id)
			if err != nil {
				fail(err)
			}
			start := time.Now()
			if _, err := cni.AddNetworkList(ctx, lists[i], rt); err != nil {
				fail(fmt.Errorf("%s round %d ADD: %w", lists[i].Name, round, err))
			}
			add := ms(start)
			start = time.Now()
			if err := cni.CheckNetworkList(ctx, lists[i], rt); err != nil {
				fail(fmt.Errorf("%s round %d CHECK: %w", lists[i].Name, round, err))
			}
			check := ms(start)
			start = time.Now()
			if err := cni.DelNetworkList(ctx, lists[i], rt); err != nil {
				fail(fmt.Errorf("%s round %d DEL: %w", lists[i].Name, round, err))
			}
			del := ms(start)
			if round > 0 {
				results[i].Add = append(results[i].Add, add)
				results[i].Check = append(results[i].Check, check)
				results[i].Del = append(results[i].Del, del)
			}
		}
	}
	out := map[string]timings{}
	for i, list := range lists {
		out[list.Name] = results[i]
	}
	text, _ := json.Marshal(out)
	fmt.Println(string(text))
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: libcni-driver add|check|del|raw|bench|validate [flags]")
		os.Exit(2)
	}
	verb := os.Args[1]
	o := &options{}
	fs := flag.NewFlagSet(verb, flag.ExitOnError)
	fs.Var(&o.conflists, "conflist", "network configuration list file (repeatable for bench)")
	fs.Var(&o.netnses, "netns", "network namespace path (one per -conflist for bench)")
	fs.StringVar(&o.conf, "conf", "", "single network config file (raw)")
	fs.StringVar(&o.command, "command", "", "CNI_COMMAND for raw")
	fs.StringVar(&o.id, "id", "cpyt-ctr", "container id (a prefix for bench)")
	fs.StringVar(&o.ifname, "ifname", "eth0", "interface name in the container")
	fs.StringVar(&o.cniPath, "cni-path", "/opt/cni/bin", "plugin directories, ':'-separated")
	fs.StringVar(&o.cacheDir, "cache-dir", "", "libcni result cache directory")
	fs.StringVar(&o.args, "args", "", "CNI_ARGS as K=V;K=V")
	fs.StringVar(&o.portMappings, "port-mappings", "", "portMappings capability args (JSON)")
	fs.IntVar(&o.rounds, "rounds", 100, "measured rounds for bench")
	_ = fs.Parse(os.Args[2:])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	switch verb {
	case "add", "check", "del":
		single(ctx, verb, o)
	case "raw":
		raw(ctx, o)
	case "bench":
		bench(ctx, o)
	case "validate":
		validate(ctx, o)
	default:
		fail(fmt.Errorf("unknown command %q", verb))
	}
}
