// Command golist lists every snapshot of a proxy snapshotter the way containerd does:
// containerd's own proxy client (snapshots/proxy, from Debian's
// golang-github-containerd-containerd-dev) over grpc-go, whose receive windows grow with
// the bandwidth-delay product, walking all snapshots. It walks `count` times and prints one
// line per walk: the snapshots seen and the wall time in milliseconds.
//
// Usage: golist SOCKET COUNT
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"google.golang.org/grpc"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: golist SOCKET COUNT")
		os.Exit(2)
	}
	count, err := strconv.Atoi(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "golist: COUNT:", err)
		os.Exit(2)
	}
	ctx := namespaces.WithNamespace(context.Background(), "default")
	// as containerd dials a proxy plugin: insecure, 16 MiB messages
	conn, err := grpc.DialContext(ctx, "unix://"+os.Args[1], grpc.WithInsecure(),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "golist: dial:", err)
		os.Exit(1)
	}
	defer conn.Close()
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "dmsnap")
	for i := 0; i < count; i++ {
		start := time.Now()
		seen := 0
		err := sn.Walk(ctx, func(context.Context, snapshots.Info) error {
			seen++
			return nil
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "golist: walk:", err)
			os.Exit(1)
		}
		fmt.Printf("%d %.3f\n", seen, float64(time.Since(start).Microseconds())/1000)
	}
}
