package manifest

import (
	"context"
	"encoding/base64"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"cloud.google.com/go/storage"

	"github.com/balancebeam/balancebeam/internal/gcstest"
)

func TestMain(m *testing.M) {
	// No test may probe for the Compute Engine metadata server: point it at
	// a loopback port nothing listens on, unless a test says otherwise.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	os.Setenv("GCE_METADATA_HOST", l.Addr().String())
	l.Close()
	os.Exit(m.Run())
}

const header = "transaction_id,account_id,amount,timestamp\n"

func csvData(rows ...string) []byte {
	return []byte(header + strings.Join(rows, "\n") + "\n")
}

// The identity of local inputs must not change: batches registered before
// gs:// inputs existed keep their manifest hash.
func TestHashOfLocalFilesIsStable(t *testing.T) {
	got := Hash([]File{
		{Path: "/data/a.csv", Size: 42, SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
		{Path: "/data/b.csv", Size: 0, SHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
	})
	if want := "fb08d6773d577849082de3b306c7832685088ab535efaaf75fbb0ef9b416f99b"; got != want {
		t.Errorf("hash %s, want %s", got, want)
	}
}

func TestHashOfObjects(t *testing.T) {
	base := File{Path: "gs://b/a.csv", Size: 10, Generation: 7, CRC32C: "AAAAAA==", MD5: "x"}
	h := Hash([]File{base})
	for name, f := range map[string]File{
		"generation": {Path: base.Path, Size: 10, Generation: 8, CRC32C: base.CRC32C},
		"crc32c":     {Path: base.Path, Size: 10, Generation: 7, CRC32C: "AAAAAQ=="},
		"size":       {Path: base.Path, Size: 11, Generation: 7, CRC32C: base.CRC32C},
		"name":       {Path: "gs://b/b.csv", Size: 10, Generation: 7, CRC32C: base.CRC32C},
	} {
		if Hash([]File{f}) == h {
			t.Errorf("another %s gives the same hash", name)
		}
	}
	noMD5 := base
	noMD5.MD5 = ""
	if Hash([]File{noMD5}) != h {
		t.Error("the MD5, which composite objects lack, changes the hash")
	}
}

func TestEncodeCRC32C(t *testing.T) {
	// GCS's documented example: the CRC32C of "hello world" is yZRlqg==.
	if got := EncodeCRC32C(0xc99465aa); got != "yZRlqg==" {
		t.Errorf("got %s", got)
	}
}

func TestGCSGlobs(t *testing.T) {
	emu := gcstest.Start(t)
	emu.Bucket("ledger", false)
	objs := map[string]*storage.ObjectAttrs{}
	for _, name := range []string{"2026-12-01/a.csv", "2026-12-01/b.csv", "2026-12-01/sub/c.csv", "2026-12-02/d.csv", "2026-12-10/e.csv"} {
		objs[name] = emu.Put(t, "ledger", name, csvData("t-"+name+",acc,1.00,2026-12-01T00:00:00Z"))
	}
	emu.Put(t, "ledger", "2026-12-01/notes.txt", []byte("not an input"))
	emu.Put(t, "ledger", "2026-12-01/", nil) // a folder placeholder, as the console makes
	emu.Bucket("other", false)
	emu.Put(t, "other", "2026-12-01/a.csv", csvData())

	local, err := filepath.Abs("../../testdata/day1/a.csv")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		patterns []string
		want     []string // object names in ledger, or local paths
	}{
		{[]string{"gs://ledger/2026-12-01/*.csv"}, []string{"2026-12-01/a.csv", "2026-12-01/b.csv"}},
		{[]string{"gs://ledger/2026-12-01/?.csv"}, []string{"2026-12-01/a.csv", "2026-12-01/b.csv"}},
		{[]string{"gs://ledger/2026-12-0[2-9]/*.csv"}, []string{"2026-12-02/d.csv"}},
		{[]string{"gs://ledger/2026-12-*/*.csv"}, []string{"2026-12-01/a.csv", "2026-12-01/b.csv", "2026-12-02/d.csv", "2026-12-10/e.csv"}},
		{[]string{"gs://ledger/*/sub/*.csv"}, []string{"2026-12-01/sub/c.csv"}},
		{[]string{"gs://ledger/2026-12-01/sub/c.csv"}, []string{"2026-12-01/sub/c.csv"}},
		{[]string{"gs://ledger/2026-12-01/[ab].csv", "gs://ledger/2026-12-01/a.csv"}, []string{"2026-12-01/a.csv", "2026-12-01/b.csv"}},
		{[]string{"gs://ledger/2026-12-02/d.csv", local, "gs://ledger/2026-12-01/b.csv"}, []string{local, "2026-12-01/b.csv", "2026-12-02/d.csv"}},
	}
	ctx := context.Background()
	// "*" matches every name in the folder but not the folder placeholder:
	// notes.txt is an input then, and has no header.
	if _, err := Build(ctx, []string{"gs://ledger/2026-12-01/*"}); err == nil ||
		!strings.Contains(err.Error(), "input gs://ledger/2026-12-01/notes.txt line 1:") {
		t.Errorf("a glob matching notes.txt: %v", err)
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.patterns, ","), func(t *testing.T) {
			m, err := Build(ctx, tt.patterns)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range m.Files {
				if !f.IsGCS() {
					got = append(got, f.Path)
					if f.Generation != 0 || f.CRC32C != "" || len(f.SHA256) != 64 {
						t.Errorf("local entry %+v", f)
					}
					continue
				}
				name := strings.TrimPrefix(f.Path, "gs://ledger/")
				got = append(got, name)
				a := objs[name]
				want := File{Path: f.Path, Size: a.Size, Generation: a.Generation, CRC32C: EncodeCRC32C(a.CRC32C), MD5: base64.StdEncoding.EncodeToString(a.MD5)}
				if f != want || f.Generation == 0 || f.MD5 == "" {
					t.Errorf("entry %+v, want %+v", f, want)
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("files %v, want %v", got, tt.want)
			}
			if m.SHA256 != Hash(m.Files) {
				t.Error("manifest hash is not the hash of its files")
			}
		})
	}
}

// The same objects at the same generations are the same batch; an
// overwrite, even with the same bytes, is a new generation and a new batch.
func TestGCSIdentity(t *testing.T) {
	emu := gcstest.Start(t)
	emu.Bucket("ledger", false)
	data := csvData("t1,acc,1.00,2026-12-01T00:00:00Z")
	emu.Put(t, "ledger", "in/a.csv", data)
	emu.Put(t, "ledger", "in/b.csv", csvData("t2,acc,2.00,2026-12-01T00:00:00Z"))
	ctx := context.Background()
	pattern := []string{"gs://ledger/in/*.csv"}
	first, err := Build(ctx, pattern)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Build(ctx, SplitPatterns([]string{"gs://ledger/in/b.csv,gs://ledger/in/a.csv"}))
	if err != nil {
		t.Fatal(err)
	}
	if again.SHA256 != first.SHA256 {
		t.Errorf("same objects listed another way: hash %s, then %s", first.SHA256, again.SHA256)
	}
	emu.Put(t, "ledger", "in/a.csv", data)
	rewritten, err := Build(ctx, pattern)
	if err != nil {
		t.Fatal(err)
	}
	if rewritten.SHA256 == first.SHA256 {
		t.Error("an overwritten object (same bytes, new generation) gives the same manifest hash")
	}
	if rewritten.Files[0].CRC32C != first.Files[0].CRC32C || rewritten.Files[0].Generation == first.Files[0].Generation {
		t.Errorf("entries %+v then %+v", first.Files[0], rewritten.Files[0])
	}
	changes := Changes(first.Files, rewritten.Files)
	want := []string{"gs://ledger/in/a.csv was generation "}
	if len(changes) != 1 || !strings.HasPrefix(changes[0], want[0]) ||
		!strings.Contains(changes[0], " is generation ") {
		t.Errorf("changes %q", changes)
	}
	if c := Changes(first.Files, first.Files); len(c) != 0 {
		t.Errorf("changes of a list against itself: %q", c)
	}
	if c := Changes(first.Files[:1], first.Files[1:]); len(c) != 2 {
		t.Errorf("changes between disjoint lists: %q", c)
	}
}

// The manifest reads only the first bytes of an object, at the listed
// generation, to check its header: no object is downloaded to build it.
func TestGCSHeaderCheckReadsARange(t *testing.T) {
	emu := gcstest.Start(t)
	emu.Bucket("ledger", false)
	var big strings.Builder
	big.WriteString(header)
	for big.Len() < 1<<20 {
		big.WriteString("t,acc,1.00,2026-12-01T00:00:00Z\n")
	}
	a := emu.Put(t, "ledger", "big.csv", []byte(big.String()))
	// A header longer than the first probe is read again in full.
	long := "transaction_id,account_id,amount,timestamp," + strings.Repeat("x", headerProbeBytes) + "\n"
	l := emu.Put(t, "ledger", "long-header.csv", []byte(long+"t,acc,1.00,2026-12-01T00:00:00Z\n"))
	if _, err := Build(context.Background(), []string{"gs://ledger/big.csv", "gs://ledger/long-header.csv"}); err != nil {
		t.Fatal(err)
	}
	reads := emu.Reads()
	var bigReads, longReads []string
	for _, r := range reads {
		switch r.Object {
		case "big.csv":
			bigReads = append(bigReads, r.Range+"@"+r.Generation)
		case "long-header.csv":
			longReads = append(longReads, r.Range+"@"+r.Generation)
		}
	}
	if want := []string{"bytes=0-65535@" + itoa(a.Generation)}; !reflect.DeepEqual(bigReads, want) {
		t.Errorf("reads of big.csv %v, want %v", bigReads, want)
	}
	if want := []string{"bytes=0-65535@" + itoa(l.Generation), "bytes=0-" + itoa(l.Size-1) + "@" + itoa(l.Generation)}; !reflect.DeepEqual(longReads, want) {
		t.Errorf("reads of long-header.csv %v, want %v", longReads, want)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// The errors people hit come back as clear messages, before anything runs.
func TestGCSErrors(t *testing.T) {
	emu := gcstest.Start(t)
	emu.Bucket("ledger", false)
	emu.Put(t, "ledger", "2026-12-01/a.csv", csvData("t1,acc,1.00,2026-12-01T00:00:00Z"))
	emu.Put(t, "ledger", "empty.csv", nil)
	emu.Put(t, "ledger", "noheader.csv", []byte("t1,acc,1.00,2026-12-01T00:00:00Z\n"))
	emu.PutWith(t, "ledger", "zipped.csv", csvData(), func(a *storage.ObjectAttrs) { a.ContentEncoding = "gzip" })
	emu.Bucket("locked", false)
	emu.Put(t, "locked", "a.csv", csvData())
	emu.Deny("locked", gcstest.DenyAll)
	emu.Bucket("listonly", false)
	emu.Put(t, "listonly", "a.csv", csvData())
	emu.Deny("listonly", gcstest.DenyRead)
	tests := []struct {
		name   string
		inputs []string
		want   []string
	}{
		{"bucket not found, glob", []string{"gs://nope/*.csv"}, []string{`input "gs://nope/*.csv": bucket nope does not exist`}},
		{"bucket not found, object", []string{"gs://nope/a.csv"}, []string{`input "gs://nope/a.csv": bucket nope does not exist`}},
		{"no such object", []string{"gs://ledger/2026-12-01/b.csv"}, []string{`input "gs://ledger/2026-12-01/b.csv": no such object`}},
		{"no match", []string{"gs://ledger/2026-12-02/*.csv"}, []string{`input "gs://ledger/2026-12-02/*.csv" matches no objects`}},
		{"folder", []string{"gs://ledger/2026-12-01"}, []string{"is a folder", "gs://ledger/2026-12-01/*.csv"}},
		{"bucket", []string{"gs://ledger"}, []string{"is a bucket or folder", "gs://ledger/*.csv"}},
		{"no bucket", []string{"gs:///a.csv"}, []string{"want gs://bucket/object"}},
		{"bad pattern", []string{"gs://ledger/[.csv"}, []string{"bad pattern"}},
		{"empty object", []string{"gs://ledger/empty.csv"}, []string{"input gs://ledger/empty.csv: file is empty: no header line"}},
		{"the first bad object in order", []string{"gs://ledger/noheader.csv", "gs://ledger/empty.csv"}, []string{"gs://ledger/empty.csv"}},
		{"header lacks a column", []string{"gs://ledger/noheader.csv"}, []string{"input gs://ledger/noheader.csv line 1:", "lacks column"}},
		{"gzip transcoding", []string{"gs://ledger/zipped.csv"}, []string{"Content-Encoding: gzip"}},
		{"permission denied, list", []string{"gs://locked/*.csv"}, []string{"permission denied on bucket locked: the job's account lacks storage.objects.list", "roles/storage.objectViewer"}},
		{"permission denied, object", []string{"gs://locked/a.csv"}, []string{"permission denied on bucket locked: the job's account lacks storage.objects.get"}},
		{"permission denied, read", []string{"gs://listonly/*.csv"}, []string{`input "gs://listonly/a.csv": permission denied on bucket listonly: the job's account lacks storage.objects.get`, "AccessDenied"}},
		{"other scheme", []string{"s3://bucket/a.csv"}, []string{"only local paths and gs:// URLs"}},
		{"local errors keep their messages", []string{"gs://ledger/2026-12-01/a.csv", "../../testdata/nope.csv"}, []string{`input "../../testdata/nope.csv": no such file`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Build(context.Background(), tt.inputs)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// Without an emulator, gs:// inputs need credentials that work: the run
// stops before anything else with a message that says how to get them.
func TestGCSNoCredentials(t *testing.T) {
	home := t.TempDir() // no gcloud application default credentials
	t.Setenv("HOME", home)
	t.Setenv(EmulatorHostEnv, "")
	t.Run("credentials file missing", func(t *testing.T) {
		t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", filepath.Join(home, "key.json"))
		_, err := Build(context.Background(), []string{"gs://ledger/*.csv"})
		checkNoCredentials(t, err, "key.json")
	})
	t.Run("on a VM without a service account", func(t *testing.T) {
		t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "")
		// A metadata server that has no service account, as on a Compute
		// Engine VM created without one.
		md := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Metadata-Flavor", "Google")
			http.NotFound(w, r)
		}))
		defer md.Close()
		t.Setenv("GCE_METADATA_HOST", strings.TrimPrefix(md.URL, "http://"))
		_, err := Build(context.Background(), []string{"gs://ledger/*.csv"})
		checkNoCredentials(t, err, "service-accounts/default/token")
	})
}

func checkNoCredentials(t *testing.T, err error, cause string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{"gs:// inputs need Google credentials and none could be used", cause,
		"gcloud auth application-default login", "GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
}
