package pgtest

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
)

// Bouncer is a real PgBouncer in front of one test database, in
// pool_mode = transaction (the semantics of Supabase's pooler on port 6543):
// a server connection is a client's for one transaction only, so named
// prepared statements, LISTEN and session state do not carry over.
type Bouncer struct {
	URL string // the database through the pooler (no pgbouncer=true hint)
	dir string
}

// Log is what PgBouncer wrote so far.
func (b *Bouncer) Log() string {
	out, _ := os.ReadFile(filepath.Join(b.dir, "pgbouncer.log"))
	return string(out)
}

// NewBouncer starts PgBouncer for dsn (a database of New, perhaps as a Role)
// with poolSize server connections, logged in as dsn's user, so that they
// count against that role's connections; it stops when the test ends. PgBouncer refuses to run
// as root: like PostgreSQL it runs as the postgres user. A missing pgbouncer
// fails the test (scripts/test.sh installs it).
func NewBouncer(t testing.TB, dsn string, poolSize int) *Bouncer {
	t.Helper()
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		if _, e := os.Stat("/usr/sbin/pgbouncer"); e != nil {
			t.Fatal("pgtest: pgbouncer is not installed (apt-get install pgbouncer; scripts/test.sh does)")
		}
		bin = "/usr/sbin/pgbouncer"
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	db, user := u.Path[1:], u.User.Username()
	cred, err := credential()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "runops-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	var lastErr error
	for range 3 { // a free port can be taken between choosing and binding it
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		ini := fmt.Sprintf(`[databases]
%s = host=%s port=%s dbname=%s user=%s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = %d
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 5000
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = %s
pidfile = %s
admin_users = postgres
`, db, u.Hostname(), u.Port(), db, user, port, poolSize, filepath.Join(dir, "pgbouncer.log"), filepath.Join(dir, "pgbouncer.pid"))
		conf := filepath.Join(dir, "pgbouncer.ini")
		if err := os.WriteFile(conf, []byte(ini), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, conf)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
		runtime.LockOSThread()
		err = cmd.Start()
		runtime.UnlockOSThread()
		if err != nil {
			t.Fatalf("pgtest: start pgbouncer: %v", err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		b := &Bouncer{URL: fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", user, port, db), dir: dir}
		if lastErr = waitAccepting(b.URL, done, "pgbouncer", filepath.Join(dir, "pgbouncer.log")); lastErr == nil {
			t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
			return b
		}
		_ = cmd.Process.Kill()
		<-done
	}
	t.Fatalf("pgtest: pgbouncer did not start: %v", lastErr)
	return nil
}
