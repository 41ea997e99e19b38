package runners

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/apache/beam/sdks/v2/go/container/tools"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/artifact"
	fnpb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/fnexecution_v1"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/util/grpcx"
	"google.golang.org/grpc"
)

// ProcessPool is a Beam worker pool (the EXTERNAL environment) that runs
// each worker as a process of its own, the way the Go SDK's container
// starts one on a remote machine: it fetches the pipeline options and the
// staged worker binary from the runner, then runs
//
//	worker --worker=true --id=ID --logging_endpoint=... --control_endpoint=...
//
// with the options in PIPELINE_OPTIONS_FILE. The worker is a fresh process
// of the program's binary: it has only what the program registers at init
// and what the pipeline's serialised graph carries, nothing the launcher set
// up in memory. Its environment lacks the launcher's database credentials
// (PGPASSWORD, PGPASSFILE, DATABASE_URL), as a remote machine would.
type ProcessPool struct {
	fnpb.UnimplementedBeamFnExternalWorkerPoolServer

	dir  string
	lis  net.Listener
	srv  *grpc.Server
	mu   sync.Mutex
	work map[string]*poolWorker
	all  []*poolWorker
}

type poolWorker struct {
	id     string
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
	err    error
}

// StartProcessPool starts a pool on a free localhost port; workers' files
// and logs go under dir.
func StartProcessPool(dir string) (*ProcessPool, error) {
	lis, err := net.Listen("tcp", "localhost:0")
	if err != nil {
		return nil, fmt.Errorf("worker pool: %w", err)
	}
	p := &ProcessPool{dir: dir, lis: lis, srv: grpc.NewServer(), work: map[string]*poolWorker{}}
	fnpb.RegisterBeamFnExternalWorkerPoolServer(p.srv, p)
	go p.srv.Serve(lis)
	return p, nil
}

// Endpoint is the pool's address, for --environment_config.
func (p *ProcessPool) Endpoint() string { return p.lis.Addr().String() }

// StartWorker fetches the job's options and worker binary and starts the
// worker process.
func (p *ProcessPool) StartWorker(ctx context.Context, req *fnpb.StartWorkerRequest) (*fnpb.StartWorkerResponse, error) {
	w, err := p.start(req)
	if err != nil {
		return &fnpb.StartWorkerResponse{Error: fmt.Sprintf("worker %s: %v", req.GetWorkerId(), err)}, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.work[w.id] = w
	p.all = append(p.all, w)
	return &fnpb.StartWorkerResponse{}, nil
}

func (p *ProcessPool) start(req *fnpb.StartWorkerRequest) (*poolWorker, error) {
	id := req.GetWorkerId()
	ctx, cancel := context.WithTimeout(grpcx.WriteWorkerID(context.Background(), id), time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp(p.dir, "worker-")
	if err != nil {
		return nil, err
	}
	info, err := tools.ProvisionInfo(ctx, req.GetProvisionEndpoint().GetUrl())
	if err != nil {
		return nil, fmt.Errorf("provision info: %w", err)
	}
	pick := func(fromInfo, fromReq string) string {
		if fromInfo != "" {
			return fromInfo
		}
		return fromReq
	}
	logging := pick(info.GetLoggingEndpoint().GetUrl(), req.GetLoggingEndpoint().GetUrl())
	control := pick(info.GetControlEndpoint().GetUrl(), req.GetControlEndpoint().GetUrl())
	artifacts := pick(info.GetArtifactEndpoint().GetUrl(), req.GetArtifactEndpoint().GetUrl())

	options, err := tools.ProtoToJSON(info.GetPipelineOptions())
	if err != nil {
		return nil, fmt.Errorf("pipeline options: %w", err)
	}
	optionsFile := filepath.Join(dir, "pipeline_options.json")
	if err := os.WriteFile(optionsFile, []byte(options), 0o644); err != nil {
		return nil, err
	}
	staged, err := artifact.Materialize(ctx, artifacts, info.GetDependencies(), info.GetRetrievalToken(), filepath.Join(dir, "staged"))
	if err != nil {
		return nil, fmt.Errorf("retrieve the staged worker binary: %w", err)
	}
	name := ""
	for _, a := range staged {
		if len(staged) == 1 || a.GetRoleUrn() == artifact.URNGoWorkerBinaryRole {
			name, _ = artifact.MustExtractFilePayload(a)
		}
	}
	if name == "" {
		return nil, fmt.Errorf("no Go worker binary among the %d staged artifacts", len(staged))
	}
	bin := filepath.Join(dir, "worker")
	if err := copyExecutable(filepath.Join(dir, "staged", name), bin); err != nil {
		return nil, err
	}

	w := &poolWorker{id: id, log: filepath.Join(dir, "worker.log"), exited: make(chan struct{})}
	logf, err := os.Create(w.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	w.cmd = exec.Command(bin, "--worker=true", "--id="+id, "--logging_endpoint="+logging,
		"--control_endpoint="+control, "--semi_persist_dir="+dir)
	w.cmd.Dir = dir
	w.cmd.Env = append(remoteEnv(), "PIPELINE_OPTIONS_FILE="+optionsFile)
	if s := info.GetStatusEndpoint().GetUrl(); s != "" {
		w.cmd.Env = append(w.cmd.Env, "STATUS_ENDPOINT="+s)
	}
	if caps := info.GetRunnerCapabilities(); len(caps) > 0 {
		w.cmd.Env = append(w.cmd.Env, "RUNNER_CAPABILITIES="+strings.Join(caps, " "))
	}
	w.cmd.Stdout, w.cmd.Stderr = logf, logf
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := w.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		w.err = w.cmd.Wait()
		close(w.exited)
	}()
	return w, nil
}

// remoteEnv is this process's environment without the database
// credentials a remote worker would not have.
func remoteEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "PGPASSWORD", "PGPASSFILE", "DATABASE_URL", "PIPELINE_OPTIONS_FILE":
			continue
		}
		env = append(env, kv)
	}
	return env
}

func copyExecutable(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}

// StopWorker ends a worker process.
func (p *ProcessPool) StopWorker(ctx context.Context, req *fnpb.StopWorkerRequest) (*fnpb.StopWorkerResponse, error) {
	p.mu.Lock()
	w := p.work[req.GetWorkerId()]
	delete(p.work, req.GetWorkerId())
	p.mu.Unlock()
	if w == nil {
		return &fnpb.StopWorkerResponse{Error: fmt.Sprintf("no worker %q", req.GetWorkerId())}, nil
	}
	w.stop()
	return &fnpb.StopWorkerResponse{}, nil
}

func (w *poolWorker) stop() {
	select {
	case <-w.exited:
		return
	default:
	}
	syscall.Kill(-w.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-w.exited:
	case <-time.After(5 * time.Second):
		syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
		<-w.exited
	}
}

// WorkerRecord is what the pool knows about a worker it started.
type WorkerRecord struct {
	ID   string
	Log  string
	Args []string
	Env  []string
}

// Workers lists every worker the pool has started.
func (p *ProcessPool) Workers() []WorkerRecord {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]WorkerRecord, len(p.all))
	for i, w := range p.all {
		out[i] = WorkerRecord{ID: w.id, Log: w.log, Args: w.cmd.Args, Env: w.cmd.Env}
	}
	return out
}

// Stop ends every worker and the pool's server.
func (p *ProcessPool) Stop() {
	p.mu.Lock()
	all := p.all
	p.work = map[string]*poolWorker{}
	p.mu.Unlock()
	for _, w := range all {
		w.stop()
	}
	p.srv.Stop()
}
