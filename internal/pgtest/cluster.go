package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

const dirPrefix = "runops-pgtest-"

type cluster struct {
	dir  string
	cmd  *exec.Cmd
	url  string
	done chan struct{}
	lock *os.File // the owner lock of dir (claimDir)
}

// binDir finds the newest installed PostgreSQL server binaries.
func binDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("postgres"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("no PostgreSQL server binaries (initdb, postgres) found")
}

func version(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// credential returns the user to run PostgreSQL as: itself refuses to run as root.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root and no 'postgres' user to run the server as: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func startCluster(maxConnections int) (*cluster, error) {
	removeStaleClusters()
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, err
	}
	lock, err := claimDir(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres",
		"--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %w: %s", err, out)
	}
	var lastErr error
	for range 3 { // a free port can be taken between choosing and binding it
		c, err := startPostgres(bin, dir, data, cred, maxConnections)
		if err == nil {
			c.lock = lock
			return c, nil
		}
		lastErr = err
	}
	lock.Close()
	os.RemoveAll(dir)
	return nil, lastErr
}

func startPostgres(bin, dir, data string, cred *syscall.Credential, maxConnections int) (*cluster, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections="+strconv.Itoa(maxConnections), "-c", "shared_buffers=64MB")
	logf, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	// If the test binary dies without cleaning up, the server stops with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT}
	runtime.LockOSThread() // Pdeathsig fires when the starting thread exits
	err = cmd.Start()
	runtime.UnlockOSThread()
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	c := &cluster{dir: dir, cmd: cmd, done: make(chan struct{}),
		url: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)}
	go func() { _ = cmd.Wait(); close(c.done) }()

	if err := waitAccepting(c.url, c.done, "postgres", filepath.Join(dir, "postgres.log")); err != nil {
		c.stopServer()
		return nil, err
	}
	return c, nil
}

// waitAccepting waits until a server started as a child process (name,
// logging to logFile) accepts a connection to url, or exits, or 30 s pass.
func waitAccepting(url string, exited <-chan struct{}, name, logFile string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, url)
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(logFile)
			return fmt.Errorf("%s exited: %s", name, tail(string(log)))
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logFile)
			return fmt.Errorf("%s not ready after 30s: %w: %s", name, err, tail(string(log)))
		}
		time.Sleep(50 * time.Millisecond) // waiting for a child process to listen
	}
}

func (c *cluster) stopServer() {
	_ = c.cmd.Process.Signal(syscall.SIGQUIT) // immediate shutdown: the data is thrown away
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

func (c *cluster) stop() {
	c.stopServer()
	os.RemoveAll(c.dir)
	c.lock.Close()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ownerFile is held with an exclusive flock by the test binary that owns a
// cluster directory for as long as it lives; the kernel drops the lock when
// the process dies, however it dies.
const ownerFile = ".owner"

// claimDir takes dir's owner lock, kept open (and locked) until the cluster
// stops or the process exits.
func claimDir(dir string) (*os.File, error) {
	f, err := os.Create(filepath.Join(dir, ownerFile))
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// removeStaleClusters deletes the clusters of test binaries that died before
// they could clean up: their owner lock is free.
func removeStaleClusters() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, d := range dirs {
		f, err := os.Open(filepath.Join(d, ownerFile))
		if err != nil {
			// Just created, not yet claimed; or left by a very old run.
			if st, err := os.Stat(d); err == nil && time.Since(st.ModTime()) > time.Hour {
				os.RemoveAll(d)
			}
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			if pid := postmasterPID(d); pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGQUIT) // an orphaned server
			}
			os.RemoveAll(d)
		}
		f.Close()
	}
}

func postmasterPID(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	return pid
}

func tail(s string) string {
	if len(s) > 2000 {
		return s[len(s)-2000:]
	}
	return s
}
