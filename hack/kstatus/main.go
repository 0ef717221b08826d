// Command kstatus reads one Kubernetes object as JSON on stdin and prints what
// kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status, the library Flux and
// kubectl-style waiters use) computes for it, as JSON on stdout:
//
//	{"status":"InProgress","message":"..."}
//
// The e2e tests use it to check that Baton's statuses read the way GitOps tools
// read them. Exit code 2: bad input or kstatus returned an error.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(2)
	}
}

func run(in io.Reader, out io.Writer) error {
	raw, err := io.ReadAll(in)
	if err != nil {
		return fmt.Errorf("read stdin: %w", err)
	}
	// Kubernetes' own JSON decoding: integers stay int64, as kstatus expects.
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(raw); err != nil {
		return fmt.Errorf("parse the object on stdin (JSON with apiVersion and kind): %w", err)
	}
	res, err := status.Compute(u)
	if err != nil {
		return fmt.Errorf("compute the status of %s %s: %w", u.GetKind(), u.GetName(), err)
	}
	return json.NewEncoder(out).Encode(result{
		Status:  res.Status.String(),
		Message: res.Message,
	})
}
