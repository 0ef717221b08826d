// cri-cleanup talks CRI to a container runtime socket: lists pod sandboxes, or stops and
// removes all of them (which makes the runtime run CNI DEL and free pod networking).
// crictl's module (sigs.k8s.io/cri-tools) is not served by the module proxy here, so
// hack/cluster/down.sh uses this instead. Built by hack/cluster/build.sh inside the
// Kubernetes wrapper module, which already provides k8s.io/cri-api and grpc.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func main() {
	endpoint := flag.String("endpoint", "", "path of the CRI unix socket")
	timeout := flag.Duration("timeout", 90*time.Second, "overall timeout")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: cri-cleanup -endpoint SOCKET pods|stop-all\n")
	}
	flag.Parse()
	if *endpoint == "" || flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	conn, err := grpc.NewClient("unix://"+*endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "cri-cleanup:", err)
		os.Exit(1)
	}
	defer conn.Close()
	rs := runtime.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	resp, err := rs.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "cri-cleanup: list pod sandboxes:", err)
		os.Exit(1)
	}
	failed := false
	for _, p := range resp.Items {
		name := p.Metadata.Namespace + "/" + p.Metadata.Name
		switch flag.Arg(0) {
		case "pods":
			fmt.Printf("%s\t%s\t%s\n", p.Id[:13], p.State, name)
		case "stop-all":
			if _, err := rs.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: p.Id}); err != nil {
				fmt.Fprintf(os.Stderr, "cri-cleanup: stop %s: %v\n", name, err)
				failed = true
				continue
			}
			if _, err := rs.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
				fmt.Fprintf(os.Stderr, "cri-cleanup: remove %s: %v\n", name, err)
				failed = true
				continue
			}
			fmt.Printf("stopped and removed pod sandbox %s (%s)\n", name, p.Id[:13])
		default:
			flag.Usage()
			os.Exit(2)
		}
	}
	if failed {
		os.Exit(1)
	}
}
