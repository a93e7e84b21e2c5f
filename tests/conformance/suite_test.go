// Package conformance runs containerd's own snapshotter conformance suite
// (github.com/containerd/containerd/snapshots/testsuite, from Debian's
// golang-github-containerd-containerd-dev, the same 1.6.20 as the containerd
// under test) against devmapper-snapshotter, reached the way containerd reaches
// a proxy plugin: snapshots/proxy over gRPC on a unix socket.
//
// Every test of the suite gets its own loop-backed thin-pool and its own
// `deno run -A main.ts serve --config FILE --address SOCKET`, as upstream's
// devmapper suite gets its own pool. It runs inside the test kernel, as root:
// tests/e2e/conformance_test.ts builds this file on the host and runs it there.
//
// Environment: DMSNAP_REPO (repository root), DMSNAP_DENO (the deno binary);
// optional DMSNAP_FS_TYPE, DMSNAP_DM_BACKEND and DMSNAP_GRPC_TRANSPORT set the
// server's fs_type, dm_backend and grpc_transport (default: the server's defaults);
// DMSNAP_CONFIG_EXTRA holds more lines for its config file.
package conformance

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/metadata"
	"github.com/containerd/containerd/pkg/testutil"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"
)

var poolSeq int32

// run runs a command and returns its trimmed stdout, or an error carrying its stderr.
func run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C", "DM_DISABLE_UDEV=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// testPool is a thin-pool on two sparse loop files, made with plain losetup and
// dmsetup, independent of the code under test.
type testPool struct {
	name               string
	dataLoop, metaLoop string
}

func createPool(dir string) (*testPool, error) {
	name := fmt.Sprintf("dmsnap-suite-%d-%d", os.Getpid(), atomic.AddInt32(&poolSeq, 1))
	// 2 GiB (sparse): xfs's 300 MiB devices with their 64 MiB logs, 128 layers deep, must stay
	// clear of the server's min_free_space guard (10% by default), which refuses new snapshots
	const dataBytes = 2 << 30
	files := map[string]int64{"data": dataBytes, "meta": 32 << 20}
	loops := map[string]string{}
	for file, size := range files {
		path := filepath.Join(dir, file)
		f, err := os.Create(path)
		if err != nil {
			return nil, err
		}
		err = f.Truncate(size)
		f.Close()
		if err != nil {
			return nil, err
		}
		loop, err := run("losetup", "--find", "--show", path)
		if err != nil {
			return nil, err
		}
		loops[file] = loop
	}
	p := &testPool{name: name, dataLoop: loops["data"], metaLoop: loops["meta"]}
	table := fmt.Sprintf("0 %d thin-pool %s %s 128 32768 1 skip_block_zeroing",
		dataBytes/512, p.metaLoop, p.dataLoop)
	if _, err := run("dmsetup", "create", name, "--table", table); err != nil {
		p.destroy()
		return nil, err
	}
	return p, nil
}

// destroy removes the devices left on the pool (named after it), the pool and its loops.
func (p *testPool) destroy() error {
	var errs []string
	if names, err := run("dmsetup", "ls"); err == nil {
		for _, line := range strings.Split(names, "\n") {
			fields := strings.Fields(line)
			if len(fields) > 0 && strings.HasPrefix(fields[0], p.name+"-") {
				if _, err := run("dmsetup", "remove", "--retry", fields[0]); err != nil {
					errs = append(errs, err.Error())
				}
			}
		}
	}
	if _, err := run("dmsetup", "remove", "--retry", p.name); err != nil {
		errs = append(errs, err.Error())
	}
	for _, loop := range []string{p.dataLoop, p.metaLoop} {
		if loop != "" {
			if _, err := run("losetup", "-d", loop); err != nil {
				errs = append(errs, err.Error())
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("destroying pool %s: %s", p.name, strings.Join(errs, "; "))
	}
	return nil
}

// server is one devmapper-snapshotter process.
type server struct {
	cmd    *exec.Cmd
	exited chan error
	log    string
	socket string
}

func startServer(root, poolName string) (*server, error) {
	repo, deno := os.Getenv("DMSNAP_REPO"), os.Getenv("DMSNAP_DENO")
	if repo == "" || deno == "" {
		return nil, fmt.Errorf("DMSNAP_REPO and DMSNAP_DENO must be set")
	}
	config := filepath.Join(root, "config.toml")
	text := fmt.Sprintf("root_path = %q\npool_name = %q\n", filepath.Join(root, "state"), poolName)
	size := "64MB"
	if os.Getenv("DMSNAP_FS_TYPE") == "xfs" {
		size = "300MiB" // mkfs.xfs's minimum
	}
	text += fmt.Sprintf("base_image_size = %q\n", size)
	for key, env := range map[string]string{
		"fs_type":        "DMSNAP_FS_TYPE",
		"dm_backend":     "DMSNAP_DM_BACKEND",
		"grpc_transport": "DMSNAP_GRPC_TRANSPORT",
	} {
		if value := os.Getenv(env); value != "" {
			text += fmt.Sprintf("%s = %q\n", key, value)
		}
	}
	text += os.Getenv("DMSNAP_CONFIG_EXTRA") // more TOML lines
	if err := os.WriteFile(config, []byte(text), 0o644); err != nil {
		return nil, err
	}
	s := &server{socket: filepath.Join(root, "dmsnap.sock"), log: filepath.Join(root, "server.log")}
	logFile, err := os.Create(s.log)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	s.cmd = exec.Command(deno, "run", "-A", "--no-check", filepath.Join(repo, "main.ts"),
		"serve", "--config", config, "--address", s.socket)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	s.exited = make(chan error, 1)
	go func() { s.exited <- s.cmd.Wait() }()
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); {
		select {
		case err := <-s.exited:
			return nil, fmt.Errorf("server exited before serving (%v): %s", err, s.tail())
		case <-time.After(50 * time.Millisecond):
		}
		if c, err := net.Dial("unix", s.socket); err == nil {
			c.Close()
			if err := s.checkSettings(); err != nil {
				s.stop()
				return nil, err
			}
			return s, nil
		}
	}
	s.cmd.Process.Kill()
	return nil, fmt.Errorf("server did not listen within 2 minutes: %s", s.tail())
}

// checkSettings waits for the log lines that show the chosen dm backend and gRPC
// transport are the ones serving.
func (s *server) checkSettings() error {
	want := []string{}
	if b := os.Getenv("DMSNAP_DM_BACKEND"); b != "" {
		want = append(want, "backend="+b)
	}
	if t := os.Getenv("DMSNAP_GRPC_TRANSPORT"); t != "" {
		want = append(want, "transport="+t)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		log, missing := s.tail(), ""
		for _, w := range want {
			if !strings.Contains(log, w) {
				missing = w
			}
		}
		if missing == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the server log does not show %s: %s", missing, log)
		}
	}
}

func (s *server) tail() string {
	b, _ := os.ReadFile(s.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// stop sends SIGTERM and waits for a clean exit.
func (s *server) stop() error {
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case err := <-s.exited:
		if err != nil {
			return fmt.Errorf("server exited with %v after SIGTERM: %s", err, s.tail())
		}
		return nil
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		return fmt.Errorf("server did not stop within 30 s of SIGTERM: %s", s.tail())
	}
}

// newSnapshotter is the suite's SnapshotterFunc: a pool, a server, and containerd's proxy client.
func newSnapshotter(t *testing.T) testsuite.SnapshotterFunc {
	return func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		pool, err := createPool(root)
		if err != nil {
			return nil, nil, err
		}
		srv, err := startServer(root, pool.name)
		if err != nil {
			pool.destroy()
			return nil, nil, err
		}
		conn, err := grpc.DialContext(ctx, "unix://"+srv.socket, grpc.WithInsecure())
		if err != nil {
			srv.stop()
			pool.destroy()
			return nil, nil, err
		}
		sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "dmsnap")
		cleanup := func() error {
			var errs []string
			for _, err := range []error{sn.Close(), conn.Close(), srv.stop(), pool.destroy()} {
				if err != nil {
					errs = append(errs, err.Error())
				}
			}
			if t.Failed() {
				t.Logf("server log (tail):\n%s", srv.tail())
			}
			if len(errs) > 0 {
				return fmt.Errorf("%s", strings.Join(errs, "; "))
			}
			return nil
		}
		return sn, cleanup, nil
	}
}

func TestSnapshotterSuite(t *testing.T) {
	testutil.RequiresRoot(t)
	testsuite.SnapshotterSuite(t, "dmsnap", newSnapshotter(t))
}

// TestSnapshotterSuiteThroughMetadata runs the suite through containerd's
// metadata layer (its bolt database, namespaces and key mapping) on top of the
// proxy: the path every ctr and CRI call takes inside containerd.
func TestSnapshotterSuiteThroughMetadata(t *testing.T) {
	testutil.RequiresRoot(t)
	proxied := newSnapshotter(t)
	testsuite.SnapshotterSuite(t, "dmsnap-metadata", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		sn, cleanup, err := proxied(ctx, root)
		if err != nil {
			return nil, nil, err
		}
		db, err := bolt.Open(filepath.Join(root, "containerd-metadata.db"), 0o600, nil)
		if err != nil {
			cleanup()
			return nil, nil, err
		}
		layered := metadata.NewDB(db, nil, map[string]snapshots.Snapshotter{"dmsnap": sn}).Snapshotter("dmsnap")
		return layered, func() error {
			var errs []string
			for _, err := range []error{layered.Close(), db.Close(), cleanup()} {
				if err != nil {
					errs = append(errs, err.Error())
				}
			}
			if len(errs) > 0 {
				return fmt.Errorf("%s", strings.Join(errs, "; "))
			}
			return nil
		}, nil
	})
}
