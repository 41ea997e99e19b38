package driver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"cloud.google.com/go/storage"
	"github.com/jackc/pgx/v5"

	"github.com/balancebeam/balancebeam/internal/gcstest"
	"github.com/balancebeam/balancebeam/internal/manifest"
	"github.com/balancebeam/balancebeam/internal/pgtest"
)

// putDay1 uploads testdata/day1 to gs://bucket/day1/ and returns the
// objects' attributes by file name.
func putDay1(t *testing.T, emu *gcstest.Emulator, bucket string) map[string]*storage.ObjectAttrs {
	t.Helper()
	out := map[string]*storage.ObjectAttrs{}
	for _, name := range []string{"a.csv", "b.csv"} {
		data, err := os.ReadFile(filepath.Join("../../testdata/day1", name))
		if err != nil {
			t.Fatal(err)
		}
		out[name] = emu.Put(t, bucket, "day1/"+name, data)
	}
	// Not inputs: another day, and a deeper folder "*" must not reach.
	emu.Put(t, bucket, "day2/late.csv", []byte("transaction_id,account_id,amount,timestamp\n"))
	emu.Put(t, bucket, "day1/archive/a.csv", []byte("not,a,csv,file,with a header"))
	return out
}

// query returns the first column of every row of a query, as text.
func query(t *testing.T, dsn, sql string, args ...any) []string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func gen(a *storage.ObjectAttrs) string { return strconv.FormatInt(a.Generation, 10) }

func wantError(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one saying %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not say %q", err, p)
		}
	}
}

// TestGCS runs batches whose inputs are objects in a GCS emulator, read by
// the pipeline through Beam's GCS filesystem, on each local runner.
func TestGCS(t *testing.T) {
	const day1GS = "gs://ledger/day1/*.csv"
	for _, runner := range testRunners {
		t.Run(runner, func(t *testing.T) {
			t.Run("a glob of objects gives the right balances, and a rerun changes no row", func(t *testing.T) {
				emu := gcstest.Start(t)
				emu.Bucket("ledger", false)
				objs := putDay1(t, emu, "ledger")
				dsn := pgtest.New(t)
				first := run(t, runner, dsn, Options{Inputs: []string{day1GS}})
				if got, want := balances(dump(t, dsn, "accounts")), expected(t, "day1.csv"); !reflect.DeepEqual(got, want) {
					t.Errorf("balances\n got %v\nwant %v", got, want)
				}
				if want := []string{"gs://ledger/day1/a.csv", "gs://ledger/day1/b.csv"}; !reflect.DeepEqual(first.Files, want) {
					t.Errorf("files %v, want %v", first.Files, want)
				}
				if first.RowsRead != 15 || first.RowsApplied != 11 || first.Duplicates != 1 || first.Rejected != 3 || first.BatchID != 1 {
					t.Errorf("report %+v", first)
				}
				checkRejects(t, dsn, 1, "day1.rejects.csv")
				// The batch registers each object's generation and CRC32C.
				got := query(t, dsn, `SELECT f->>'path' || ' ' || (f->>'generation') || ' ' || (f->>'crc32c') FROM batches, jsonb_array_elements(files) f WHERE batch_id = 1`)
				want := []string{
					fmt.Sprintf("gs://ledger/day1/a.csv %d %s", objs["a.csv"].Generation, crc(objs["a.csv"])),
					fmt.Sprintf("gs://ledger/day1/b.csv %d %s", objs["b.csv"].Generation, crc(objs["b.csv"])),
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("registered files %v, want %v", got, want)
				}

				before := dump(t, dsn, "accounts")
				rerun := run(t, runner, dsn, Options{Inputs: []string{"gs://ledger/day1/b.csv,gs://ledger/day1/a.csv"}, Recheck: true})
				if rerun.BatchID != first.BatchID || rerun.NewBatch || rerun.RowsUpserted != 0 || rerun.RowsStale != 6 {
					t.Errorf("rerun: batch %d new %v upserted %d stale %d", rerun.BatchID, rerun.NewBatch, rerun.RowsUpserted, rerun.RowsStale)
				}
				if after := dump(t, dsn, "accounts"); !reflect.DeepEqual(before, after) {
					t.Errorf("rerun changed rows:\n%v\n%v", before, after)
				}
				checkRejects(t, dsn, 1, "day1.rejects.csv")
			})

			t.Run("an overwritten object is new input: a new batch", func(t *testing.T) {
				emu := gcstest.Start(t)
				emu.Bucket("ledger", false)
				objs := putDay1(t, emu, "ledger")
				dsn := pgtest.New(t)
				first := run(t, runner, dsn, Options{Inputs: []string{day1GS}})
				// The same bytes again: a new generation all the same.
				data, _ := os.ReadFile("../../testdata/day1/a.csv")
				again := emu.Put(t, "ledger", "day1/a.csv", data)
				if again.Generation == objs["a.csv"].Generation || again.CRC32C != objs["a.csv"].CRC32C {
					t.Fatalf("overwrite: generation %d -> %d, crc %d -> %d", objs["a.csv"].Generation, again.Generation, objs["a.csv"].CRC32C, again.CRC32C)
				}
				next := run(t, runner, dsn, Options{Inputs: []string{day1GS}})
				if !next.NewBatch || next.BatchID <= first.BatchID || next.RowsUpserted != 6 {
					t.Errorf("after the overwrite: batch %d (new %v, first %d), upserted %d", next.BatchID, next.NewBatch, first.BatchID, next.RowsUpserted)
				}
				if got, want := balances(dump(t, dsn, "accounts")), expected(t, "day1.csv"); !reflect.DeepEqual(got, want) {
					t.Errorf("balances\n got %v\nwant %v", got, want)
				}
				for _, r := range dump(t, dsn, "accounts") {
					if r.Batch != strconv.FormatInt(next.BatchID, 10) {
						t.Errorf("%s is at batch %s, want %d", r.ID, r.Batch, next.BatchID)
					}
				}
			})

			t.Run("forcing the old batch id on a changed object is refused", func(t *testing.T) {
				emu := gcstest.Start(t)
				emu.Bucket("ledger", false)
				objs := putDay1(t, emu, "ledger")
				dsn := pgtest.New(t)
				run(t, runner, dsn, Options{Inputs: []string{day1GS}})
				before := dump(t, dsn, "accounts")
				changed := emu.Put(t, "ledger", "day1/b.csv", []byte("transaction_id,account_id,amount,timestamp\nt-9,acc-alice,1000.00,2026-12-01T00:00:00Z\n"))
				_, err := Run(context.Background(), Options{Inputs: []string{day1GS}, Runner: runner, DSN: dsn, Clock: clock(t),
					MaxRejects: Threshold{Count: 3}, BatchID: 1})
				wantError(t, err, "belongs to other inputs",
					"gs://ledger/day1/b.csv was generation "+gen(objs["b.csv"]), "is generation "+gen(changed))
				if strings.Contains(err.Error(), "day1/a.csv was") {
					t.Errorf("the unchanged object is named as changed: %v", err)
				}
				if after := dump(t, dsn, "accounts"); !reflect.DeepEqual(before, after) {
					t.Errorf("the refused run changed rows:\n%v\n%v", before, after)
				}
				if got := query(t, dsn, "SELECT batch_id || ' ' || status || ' ' || runs FROM batches"); !reflect.DeepEqual(got, []string{"1 committed 1"}) {
					t.Errorf("batches %v", got)
				}
			})

			t.Run("an object overwritten between the manifest and the read fails, writing nothing", func(t *testing.T) {
				emu := gcstest.Start(t)
				emu.Bucket("ledger", false)
				objs := putDay1(t, emu, "ledger")
				var changed *storage.ObjectAttrs
				emu.BeforeFullRead("ledger", "day1/b.csv", func() {
					changed = emu.Put(t, "ledger", "day1/b.csv", []byte("transaction_id,account_id,amount,timestamp\nt-9,acc-alice,1000.00,2026-12-01T00:00:00Z\n"))
				})
				dsn := pgtest.New(t)
				_, err := Run(context.Background(), Options{Inputs: []string{day1GS}, Runner: runner, DSN: dsn, Clock: clock(t), MaxRejects: Threshold{Count: 3}})
				wantError(t, err, "gs://ledger/day1/b.csv changed since its batch was registered",
					"generation "+gen(objs["b.csv"])+" when the batch was registered", "is generation "+gen(changed)+" now")
				if rows := dump(t, dsn, "accounts"); len(rows) != 0 {
					t.Errorf("accounts written by the failed run: %v", rows)
				}
				if n := query(t, dsn, "SELECT count(*)::text FROM rejected_rows"); n[0] != "0" {
					t.Errorf("%s rejected rows written by the failed run", n[0])
				}
				if s := batchStatus(t, dsn, 1); s != "failed" {
					t.Errorf("status %q", s)
				}
				// The next run registers the objects as they are now.
				rep := run(t, runner, dsn, Options{Inputs: []string{day1GS}})
				if rep.BatchID != 2 || !rep.NewBatch || batchStatus(t, dsn, 2) != "committed" {
					t.Errorf("rerun: %+v", rep)
				}
			})

			t.Run("an object deleted between the manifest and the read fails, writing nothing", func(t *testing.T) {
				emu := gcstest.Start(t)
				emu.Bucket("ledger", false)
				objs := putDay1(t, emu, "ledger")
				emu.BeforeFullRead("ledger", "day1/a.csv", func() {
					if err := emu.Client.Bucket("ledger").Object("day1/a.csv").Delete(context.Background()); err != nil {
						t.Error(err)
					}
				})
				dsn := pgtest.New(t)
				_, err := Run(context.Background(), Options{Inputs: []string{day1GS}, Runner: runner, DSN: dsn, Clock: clock(t), MaxRejects: Threshold{Count: 3}})
				wantError(t, err, "gs://ledger/day1/a.csv changed since its batch was registered: it was generation "+gen(objs["a.csv"])+
					" when the batch was registered and has been deleted")
				if rows := dump(t, dsn, "accounts"); len(rows) != 0 {
					t.Errorf("accounts written by the failed run: %v", rows)
				}
			})

			t.Run("in a versioned bucket the read takes the registered generation", func(t *testing.T) {
				emu := gcstest.Start(t)
				emu.Bucket("ledger", true)
				objs := putDay1(t, emu, "ledger")
				emu.BeforeFullRead("ledger", "day1/b.csv", func() {
					emu.Put(t, "ledger", "day1/b.csv", []byte("transaction_id,account_id,amount,timestamp\nt-9,acc-alice,1000.00,2026-12-01T00:00:00Z\n"))
				})
				dsn := pgtest.New(t)
				rep := run(t, runner, dsn, Options{Inputs: []string{day1GS}})
				if got, want := balances(dump(t, dsn, "accounts")), expected(t, "day1.csv"); !reflect.DeepEqual(got, want) {
					t.Errorf("balances\n got %v\nwant %v", got, want)
				}
				if rep.RowsRead != 15 {
					t.Errorf("report %+v", rep)
				}
				var pinned bool
				for _, r := range emu.Reads() {
					pinned = pinned || (r.Object == "day1/b.csv" && r.Range == "" && r.Generation == gen(objs["b.csv"]))
				}
				if !pinned {
					t.Errorf("no full read of generation %s of day1/b.csv: %+v", gen(objs["b.csv"]), emu.Reads())
				}
			})

			t.Run("bytes that do not match the registered CRC32C fail the run", func(t *testing.T) {
				emu := gcstest.Start(t)
				emu.Bucket("ledger", false)
				objs := putDay1(t, emu, "ledger")
				emu.Corrupt("ledger", "day1/b.csv", "300.00", "900.00")
				dsn := pgtest.New(t)
				_, err := Run(context.Background(), Options{Inputs: []string{day1GS}, Runner: runner, DSN: dsn, Clock: clock(t), MaxRejects: Threshold{Count: 3}})
				wantError(t, err, "gs://ledger/day1/b.csv changed since its batch was registered: crc32c was "+crc(objs["b.csv"]),
					"registered generation "+gen(objs["b.csv"])+", which is still the live one")
				if rows := dump(t, dsn, "accounts"); len(rows) != 0 {
					t.Errorf("accounts written by the failed run: %v", rows)
				}
			})

			t.Run("object names Beam's filesystem cannot address are read all the same", func(t *testing.T) {
				emu := gcstest.Start(t)
				emu.Bucket("ledger", false)
				// Beam's GCS filesystem parses paths as URLs: "#" starts a
				// fragment, "?" a query, "%20" is decoded to a space.
				for name, from := range map[string]string{"odd/a #1.csv": "day1/a.csv", "odd/b?%20.csv": "day1/b.csv"} {
					data, err := os.ReadFile(filepath.Join("../../testdata", from))
					if err != nil {
						t.Fatal(err)
					}
					emu.Put(t, "ledger", name, data)
				}
				// What those names would be taken for.
				emu.Put(t, "ledger", "odd/a ", []byte("transaction_id,account_id,amount,timestamp\nx,acc-alice,1000.00,2026-12-01T00:00:00Z\n"))
				emu.Put(t, "ledger", "odd/b", []byte("transaction_id,account_id,amount,timestamp\nx,acc-alice,1000.00,2026-12-01T00:00:00Z\n"))
				dsn := pgtest.New(t)
				rep := run(t, runner, dsn, Options{Inputs: []string{"gs://ledger/odd/*.csv"}})
				if got, want := balances(dump(t, dsn, "accounts")), expected(t, "day1.csv"); !reflect.DeepEqual(got, want) {
					t.Errorf("balances\n got %v\nwant %v", got, want)
				}
				if want := []string{"gs://ledger/odd/a #1.csv", "gs://ledger/odd/b?%20.csv"}; !reflect.DeepEqual(rep.Files, want) {
					t.Errorf("files %v, want %v", rep.Files, want)
				}
			})

			t.Run("local files and objects in one batch", func(t *testing.T) {
				emu := gcstest.Start(t)
				emu.Bucket("ledger", false)
				putDay1(t, emu, "ledger")
				dsn := pgtest.New(t)
				rep := run(t, runner, dsn, Options{Inputs: []string{day1GS + "," + day2}})
				if got, want := balances(dump(t, dsn, "accounts")), expected(t, "day1+day2.csv"); !reflect.DeepEqual(got, want) {
					t.Errorf("balances\n got %v\nwant %v", got, want)
				}
				if rep.RowsRead != 20 || rep.RowsApplied != 14 || rep.Duplicates != 3 || rep.Rejected != 3 {
					t.Errorf("report %+v", rep)
				}
				if len(rep.Files) != 3 || !strings.HasSuffix(rep.Files[0], "/testdata/day2/late.csv") || rep.Files[1] != "gs://ledger/day1/a.csv" {
					t.Errorf("files %v", rep.Files)
				}
				again := run(t, runner, dsn, Options{Inputs: []string{day2, day1GS}})
				if again.BatchID != rep.BatchID || again.RowsUpserted != 0 {
					t.Errorf("rerun: batch %d upserted %d", again.BatchID, again.RowsUpserted)
				}
			})
		})
	}
}

func crc(a *storage.ObjectAttrs) string { return manifest.EncodeCRC32C(a.CRC32C) }

// TestGCSInputErrorsWriteNothing: the errors people hit with gs:// inputs
// stop the run before anything reaches the database.
func TestGCSInputErrorsWriteNothing(t *testing.T) {
	emu := gcstest.Start(t)
	emu.Bucket("ledger", false)
	putDay1(t, emu, "ledger")
	emu.Bucket("locked", false)
	emu.Deny("locked", gcstest.DenyAll)
	dsn := pgtest.New(t)
	tests := []struct {
		name   string
		inputs []string
		env    map[string]string
		want   string
	}{
		{"bucket not found", []string{"gs://nope/day1/*.csv"}, nil, "bucket nope does not exist"},
		{"no match", []string{"gs://ledger/day3/*.csv"}, nil, "matches no objects"},
		{"permission denied", []string{"gs://locked/*.csv"}, nil, "permission denied on bucket locked"},
		{"no credentials", []string{"gs://ledger/day1/*.csv"}, map[string]string{
			"STORAGE_EMULATOR_HOST": "", "GOOGLE_APPLICATION_CREDENTIALS": filepath.Join(t.TempDir(), "missing.json"),
			"GCE_METADATA_HOST": "127.0.0.1:1", // never the real metadata server
		}, "gs:// inputs need Google credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			_, err := Run(context.Background(), Options{Inputs: tt.inputs, Runner: "direct", DSN: dsn})
			wantError(t, err, tt.want)
		})
	}
	if n := query(t, dsn, "SELECT count(*)::text FROM information_schema.tables WHERE table_schema = 'public'"); n[0] != "0" {
		t.Errorf("%s tables exist after failed runs", n[0])
	}
}
