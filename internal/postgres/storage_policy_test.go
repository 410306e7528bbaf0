package postgres_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/pgtest"
)

// The caller as the storage server makes it for every request: the token's
// claims in request.jwt.claims and SET ROLE to the token's role, in one
// transaction. sub "" is a token without a subject (anon).
type caller struct{ role, sub string }

var (
	userA   = caller{"authenticated", "6f1c2a3b-0000-4000-8000-00000000000a"}
	userB   = caller{"authenticated", "6f1c2a3b-0000-4000-8000-00000000000b"}
	anon    = caller{"anon", ""}
	service = caller{"service_role", ""}
)

// names runs query as c and returns the first column of every row.
func (c caller) names(t testing.TB, pool *pgxpool.Pool, query string, args ...any) []string {
	t.Helper()
	out, err := c.rows(pool, query, args...)
	if err != nil {
		t.Fatalf("as %s %s: %v", c.role, c.sub, err)
	}
	return out
}

// rows is names that returns the query's error.
func (c caller) rows(pool *pgxpool.Pool, query string, args ...any) ([]string, error) {
	ctx := context.Background()
	claims := map[string]string{"role": c.role}
	if c.sub != "" {
		claims["sub"] = c.sub
	}
	b, _ := json.Marshal(claims)
	var out []string
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('request.jwt.claims', $1, true)`, string(b)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+c.role); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, query, args...)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	return out, err
}

// objectsOf are the four kinds of object a job has (docs/frontend-contract.md).
func objectsOf(id string) []string {
	return []string{"raw/" + id + ".mp4", "slim/" + id + ".mp4", "sops/" + id + ".json", "frames/" + id + "/n1.jpg"}
}

func putObjects(t testing.TB, pool *pgxpool.Pool, names []string) {
	t.Helper()
	_, err := pool.Exec(context.Background(), `INSERT INTO storage.objects (bucket_id, name, metadata)
SELECT 'videos', n, '{"size": 1000}' FROM unnest($1::text[]) n`, names)
	if err != nil {
		t.Fatal(err)
	}
}

// An owned job's objects are its owner's alone; an unowned job's (issued
// anonymously, or a row a person inserted by hand) any signed-in user's;
// anon reads nothing; nothing outside the layout is anyone's but the
// service's. Checked the ways the storage server reads: one object by name
// (download, signed URL) and a listing by prefix.
func TestStoragePolicyScopesObjectsToOwners(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.SupabasePool(t)
	jobA, jobB, jobU, jobH := ownedJobs(t, pool)
	var all []string
	for _, id := range []string{jobA, jobB, jobU, jobH} {
		all = append(all, objectsOf(id)...)
	}
	// Outside the layout's folders, or an id that is no job's: nobody's.
	odd := []string{"notes/" + jobU + ".mp4", "raws/" + jobU + ".mp4", "frames" + jobU + ".jpg", jobU,
		"sops/" + jobU[:35] + "X.json", "sops/" + strings.ToUpper(jobU) + ".json", "frames//" + jobU + "/n1.jpg"}
	putObjects(t, pool, append(slices.Clone(all), odd...))

	readable := func(ids ...string) []string {
		var out []string
		for _, id := range ids {
			out = append(out, objectsOf(id)...)
		}
		slices.Sort(out)
		return out
	}
	for _, tc := range []struct {
		who  caller
		want []string
	}{
		{userA, readable(jobA, jobU, jobH)},
		{userB, readable(jobB, jobU, jobH)},
		{anon, nil},
	} {
		got := tc.who.names(t, pool, `SELECT name FROM storage.objects WHERE bucket_id = 'videos' ORDER BY name`)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s %s lists %v; want %v", tc.who.role, tc.who.sub, got, tc.want)
		}
		for _, name := range append(slices.Clone(all), odd...) {
			got := tc.who.names(t, pool, `SELECT name FROM storage.objects WHERE bucket_id = 'videos' AND name = $1`, name)
			if want := slices.Contains(tc.want, name); (len(got) == 1) != want {
				t.Errorf("%s %s reads %s: %v; want %v", tc.who.role, tc.who.sub, name, len(got) == 1, want)
			}
		}
		// How a user would learn other users' job ids: list sops/.
		sops := tc.who.names(t, pool, `SELECT name FROM storage.objects WHERE bucket_id = 'videos' AND name ILIKE $1 || '%' ORDER BY name`, "sops/")
		for _, s := range sops {
			if !slices.Contains(tc.want, s) {
				t.Errorf("%s %s lists %s", tc.who.role, tc.who.sub, s)
			}
		}
	}
	if got := service.names(t, pool, `SELECT name FROM storage.objects`); len(got) != len(all)+len(odd) {
		t.Errorf("the service role reads %d objects; want all %d", len(got), len(all)+len(odd))
	}
}

// The policy answers from runops_uploads, which has RLS on and no policy for
// authenticated: even with the table granted (as on a hosted project) the
// user cannot read it, and the policy still sees the owners.
func TestUploadsStayHiddenFromUsers(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.SupabasePool(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `GRANT SELECT ON public.runops_uploads TO authenticated`); err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	if _, err := pool.Exec(ctx, `INSERT INTO public.runops_uploads (job_id, owner) VALUES ($1, $2)`, id, userA.sub); err != nil {
		t.Fatal(err)
	}
	putObjects(t, pool, objectsOf(id))
	if got := userA.names(t, pool, `SELECT job_id::text FROM public.runops_uploads`); len(got) != 0 {
		t.Fatalf("a user reads runops_uploads: %v", got)
	}
	if got := userA.names(t, pool, `SELECT name FROM storage.objects`); len(got) != 4 {
		t.Fatalf("the owner reads %v; want the job's 4 objects", got)
	}
	if got := userB.names(t, pool, `SELECT name FROM storage.objects`); len(got) != 0 {
		t.Fatalf("another user reads %v", got)
	}
	if got := userB.names(t, pool, `SELECT x::text FROM public.runops_readable_jobs() x`); slices.Contains(got, id) {
		t.Fatal("another user is told the owned job")
	}
}

// BenchmarkStoragePolicyList makes the same listing request, a folder of
// 10,000 objects (a job's screenshots), as the job's owner and as the
// service role, which bypasses RLS, in the same run, with another user's 100
// jobs (10,000 objects) in the bucket beside it. The storage server lists
// with a prefix match that no index serves, so the policy runs on every
// object of the bucket the scan meets: its cost is the ratio.
func BenchmarkStoragePolicyList(b *testing.B) {
	pool, _ := pgtest.SupabasePool(b)
	ctx := context.Background()
	mine := uuid.NewString()
	if _, err := pool.Exec(ctx, `INSERT INTO public.runops_uploads (job_id, owner) VALUES ($1, $2)`, mine, userA.sub); err != nil {
		b.Fatal(err)
	}
	var names []string
	for n := range 10000 {
		names = append(names, fmt.Sprintf("frames/%s/n%05d.jpg", mine, n))
	}
	for range 100 {
		id := uuid.NewString()
		if _, err := pool.Exec(ctx, `INSERT INTO public.runops_uploads (job_id, owner) VALUES ($1, $2)`, id, userB.sub); err != nil {
			b.Fatal(err)
		}
		names = append(names, objectsOf(id)[:3]...)
		for n := range 97 {
			names = append(names, fmt.Sprintf("frames/%s/n%d.jpg", id, n))
		}
	}
	putObjects(b, pool, names)
	if _, err := pool.Exec(ctx, `ANALYZE storage.objects; ANALYZE public.runops_uploads`); err != nil {
		b.Fatal(err)
	}
	// The storage server's listing: a case-insensitive prefix match, sorted.
	const list = `SELECT name FROM storage.objects WHERE bucket_id = 'videos' AND name ILIKE $1 || '%' ORDER BY name LIMIT 10000`
	prefix := "frames/" + mine + "/"
	measure := func(c caller) time.Duration {
		start := time.Now()
		for range b.N {
			if got := c.names(b, pool, list, prefix); len(got) != 10000 {
				b.Fatalf("%s listed %d objects", c.role, len(got))
			}
		}
		return time.Since(start)
	}
	measure(userA) // warm both plans and caches
	measure(service)
	b.ResetTimer()
	svc := measure(service)
	user := measure(userA)
	b.ReportMetric(float64(svc.Microseconds())/float64(b.N), "service-µs/list")
	b.ReportMetric(float64(user.Microseconds())/float64(b.N), "user-µs/list")
	b.ReportMetric(float64(user)/float64(svc), "user/service")
}

// ownedJobs issues uploads for a job of user A's, one of user B's and an
// unowned one, and adds a job row as a person does in the dashboard, with
// no upload issued (unowned too); it returns their ids.
func ownedJobs(t *testing.T, pool *pgxpool.Pool) (jobA, jobB, jobU, jobH string) {
	t.Helper()
	ctx := context.Background()
	jobA, jobB, jobU, jobH = uuid.NewString(), uuid.NewString(), uuid.NewString(), uuid.NewString()
	for id, owner := range map[string]string{jobA: userA.sub, jobB: userB.sub, jobU: ""} {
		if _, err := pool.Exec(ctx, `INSERT INTO public.runops_uploads (job_id, owner) VALUES ($1, nullif($2, ''))`, id, owner); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pool.Exec(ctx, `INSERT INTO public.jobs (job_id) VALUES ($1)`, jobH); err != nil {
		t.Fatal(err)
	}
	return jobA, jobB, jobU, jobH
}
