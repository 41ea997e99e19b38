package manifest

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path"
	"slices"
	"strings"

	"cloud.google.com/go/auth/credentials"
	"cloud.google.com/go/storage"
	"golang.org/x/sync/errgroup"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	"github.com/balancebeam/balancebeam/transforms/txnfile"
)

// EmulatorHostEnv is the variable that points the GCS client at an emulator
// (host:port, or a URL). With it set, no credentials are needed or used.
const EmulatorHostEnv = "STORAGE_EMULATOR_HOST"

// Header checks read this many bytes from the start of an object first.
// That holds any real header; a longer first record is read again up to
// the CSV reader's record limit before the header is called bad.
const headerProbeBytes = 64 << 10

// headerCheckers is how many objects' headers are read at once.
const headerCheckers = 16

// IsGCS reports whether an input names Google Cloud Storage.
func IsGCS(input string) bool { return strings.HasPrefix(input, "gs://") }

// SplitGCS splits gs://bucket/name into the bucket and the object name. The
// name is taken as it is, without URL decoding.
func SplitGCS(url string) (bucket, name string, ok bool) {
	rest, ok := strings.CutPrefix(url, "gs://")
	if !ok {
		return "", "", false
	}
	bucket, name, _ = strings.Cut(rest, "/")
	return bucket, name, bucket != ""
}

// EncodeCRC32C formats a CRC32C as GCS and gcloud show it: the base64 of its
// four big-endian bytes.
func EncodeCRC32C(sum uint32) string {
	return base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint32(nil, sum))
}

// gcsSource lists and checks the gs:// inputs of a manifest.
type gcsSource struct {
	client *storage.Client
}

// newGCSSource makes a read-only client the way Beam's GCS filesystem does,
// but fails with a clear message when there are no usable credentials
// instead of falling back to anonymous access.
func newGCSSource(ctx context.Context) (*gcsSource, error) {
	ua := option.WithUserAgent("(GPN:Beam) balancebeam")
	if os.Getenv(EmulatorHostEnv) != "" {
		// The client talks to the emulator without authentication.
		c, err := storage.NewClient(ctx, option.WithScopes(storage.ScopeReadOnly), ua)
		if err != nil {
			return nil, fmt.Errorf("GCS emulator at %s=%s: %w", EmulatorHostEnv, os.Getenv(EmulatorHostEnv), err)
		}
		return &gcsSource{client: c}, nil
	}
	creds, err := credentials.DetectDefault(&credentials.DetectOptions{Scopes: []string{storage.ScopeReadOnly}})
	if err == nil {
		// Credentials can be found but unusable (no service account on the
		// VM, an expired login): get a token now to know before the run.
		_, err = creds.Token(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("gs:// inputs need Google credentials and none could be used: %w; "+
			"run `gcloud auth application-default login`, set GOOGLE_APPLICATION_CREDENTIALS to a service account key file, "+
			"or run as a service account on Google Cloud (for an emulator, set %s)", err, EmulatorHostEnv)
	}
	c, err := storage.NewClient(ctx, option.WithAuthCredentials(creds), ua)
	if err != nil {
		return nil, fmt.Errorf("GCS client: %w", err)
	}
	return &gcsSource{client: c}, nil
}

func (g *gcsSource) close() { g.client.Close() }

// listedAttrs are the object attributes the listing asks for.
var listedAttrs = []string{"Name", "Size", "Generation", "CRC32C", "MD5", "ContentEncoding"}

// expand turns one gs:// input into its objects: the object it names, or the
// objects whose names match its glob. A glob is matched against whole object
// names with path.Match, as Beam's GCS filesystem does: "*" does not cross
// "/".
func (g *gcsSource) expand(ctx context.Context, pattern string) ([]File, error) {
	bucket, name, ok := SplitGCS(pattern)
	if !ok {
		return nil, fmt.Errorf("input %q: want gs://bucket/object or a glob such as gs://bucket/2026-12-01/*.csv", pattern)
	}
	if name == "" || strings.HasSuffix(name, "/") {
		return nil, fmt.Errorf("input %q is a bucket or folder: name its objects, for example %s", pattern, folderGlob(bucket, name))
	}
	if !strings.ContainsAny(name, `*?[\`) {
		attrs, err := g.client.Bucket(bucket).Object(name).Attrs(ctx)
		if errors.Is(err, storage.ErrObjectNotExist) {
			return nil, g.notFound(ctx, pattern, bucket, name)
		}
		if err != nil {
			return nil, gcsError(pattern, bucket, "storage.objects.get", err)
		}
		f, err := objectFile(bucket, attrs)
		if err != nil {
			return nil, err
		}
		return []File{f}, nil
	}
	if _, err := path.Match(name, ""); err != nil {
		return nil, fmt.Errorf("input %q: bad pattern: %w", pattern, err)
	}
	prefix := name[:strings.IndexAny(name, `*?[\`)]
	q := &storage.Query{Prefix: prefix}
	if !strings.Contains(name[len(prefix):], "/") {
		// No match can hold a "/" after the prefix: let GCS fold deeper
		// names into prefixes instead of listing them one by one.
		q.Delimiter = "/"
	}
	if err := q.SetAttrSelection(listedAttrs); err != nil {
		return nil, err
	}
	var files []File
	it := g.client.Bucket(bucket).Objects(ctx, q)
	for {
		attrs, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			return nil, gcsError(pattern, bucket, "storage.objects.list", err)
		}
		// Skip folded prefixes and folder placeholders ("dir/"), as a local
		// glob skips directories.
		if attrs.Name == "" || strings.HasSuffix(attrs.Name, "/") {
			continue
		}
		if ok, _ := path.Match(name, attrs.Name); !ok {
			continue
		}
		f, err := objectFile(bucket, attrs)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("input %q matches no objects", pattern)
	}
	return files, nil
}

// notFound explains a missing object: no such bucket, a folder, or no such
// object.
func (g *gcsSource) notFound(ctx context.Context, pattern, bucket, name string) error {
	it := g.client.Bucket(bucket).Objects(ctx, &storage.Query{Prefix: name + "/"})
	_, err := it.Next()
	switch {
	case err == nil:
		return fmt.Errorf("input %q is a folder: name its objects, for example %s", pattern, folderGlob(bucket, name+"/"))
	case errors.Is(err, iterator.Done):
		return fmt.Errorf("input %q: no such object", pattern)
	default:
		return gcsError(pattern, bucket, "storage.objects.list", err)
	}
}

func folderGlob(bucket, folder string) string {
	return "gs://" + bucket + "/" + folder + "*.csv"
}

// gcsError turns the errors people hit into messages that say what to do.
func gcsError(input, bucket, permission string, err error) error {
	var gerr *googleapi.Error
	switch {
	case errors.Is(err, storage.ErrBucketNotExist):
		return fmt.Errorf("input %q: bucket %s does not exist", input, bucket)
	case errors.As(err, &gerr) && gerr.Code == http.StatusForbidden:
		return fmt.Errorf("input %q: permission denied on bucket %s: the job's account lacks %s "+
			"(it needs storage.objects.list and storage.objects.get, for example through roles/storage.objectViewer): %s",
			input, bucket, permission, apiMessage(gerr))
	case errors.As(err, &gerr) && gerr.Code == http.StatusUnauthorized:
		return fmt.Errorf("input %q: GCS refused the credentials (401: expired or revoked?): %s", input, apiMessage(gerr))
	}
	return fmt.Errorf("input %q: %w", input, err)
}

// apiMessage is what GCS said: the JSON API's message, or the XML API's
// details.
func apiMessage(e *googleapi.Error) string {
	if e.Message != "" {
		return e.Message
	}
	var x struct{ Code, Message, Details string }
	if xml.Unmarshal([]byte(e.Body), &x) == nil && (x.Details != "" || x.Message != "") {
		return strings.TrimSpace(x.Code + ": " + x.Message + " " + x.Details)
	}
	if body := strings.TrimSpace(e.Body); body != "" {
		return body
	}
	return http.StatusText(e.Code)
}

// objectFile is the manifest entry of a listed object.
func objectFile(bucket string, a *storage.ObjectAttrs) (File, error) {
	url := "gs://" + bucket + "/" + a.Name
	if a.ContentEncoding == "gzip" {
		return File{}, fmt.Errorf("input %s is stored with Content-Encoding: gzip; GCS serves it decompressed, "+
			"which cannot be checked against the object's size and CRC32C: store it uncompressed (or as a .gz object without that metadata)", url)
	}
	f := File{Path: url, Size: a.Size, Generation: a.Generation, CRC32C: EncodeCRC32C(a.CRC32C)}
	if len(a.MD5) > 0 {
		f.MD5 = base64.StdEncoding.EncodeToString(a.MD5)
	}
	return f, nil
}

// compactObjects sorts the objects by URL and drops the copies that two
// patterns matching the same object give. Two listings that saw different
// generations of one object mean it changed while the manifest was built.
func compactObjects(files []File) ([]File, error) {
	slices.SortStableFunc(files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	out := files[:0]
	for _, f := range files {
		if n := len(out); n > 0 && out[n-1].Path == f.Path {
			if out[n-1] != f {
				return nil, fmt.Errorf("input %s changed while its inputs were listed (generation %d, then %d): run again",
					f.Path, out[n-1].Generation, f.Generation)
			}
			continue
		}
		out = append(out, f)
	}
	return out, nil
}

// checkHeaders checks that every object starts with a valid header, reading
// only the first bytes of the generation the listing saw (a ranged read), a
// few objects at a time. The first failure in manifest order is reported.
func (g *gcsSource) checkHeaders(ctx context.Context, files []File) error {
	errs := make([]error, len(files))
	var eg errgroup.Group
	eg.SetLimit(headerCheckers)
	for i := range files {
		eg.Go(func() error {
			errs[i] = g.checkHeader(ctx, files[i])
			return nil
		})
	}
	eg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (g *gcsSource) checkHeader(ctx context.Context, f File) error {
	if f.Size == 0 {
		return fmt.Errorf("input %s: %w", f.Path, txnfile.ErrNoHeader)
	}
	bucket, name, _ := SplitGCS(f.Path)
	obj := g.client.Bucket(bucket).Object(name).Generation(f.Generation)
	var err error
	for _, n := range []int64{headerProbeBytes, txnfile.MaxRecordBytes + 4} {
		n = min(n, f.Size)
		r, oerr := obj.NewRangeReader(ctx, 0, n)
		if errors.Is(oerr, storage.ErrObjectNotExist) {
			return fmt.Errorf("input %s changed while the manifest was built: generation %d is gone: run again", f.Path, f.Generation)
		}
		if oerr != nil {
			return gcsError(f.Path, bucket, "storage.objects.get", oerr)
		}
		var rawLen int
		rawLen, err = checkHeader(r, f.Path)
		r.Close()
		// A first record that reaches the end of a partial read (a byte
		// order mark and a line end aside) may go on: read more.
		if n == f.Size || int64(rawLen) < n-4 {
			break
		}
	}
	return err
}
