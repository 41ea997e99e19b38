// Package gcstest runs a Google Cloud Storage emulator for tests: the
// fake-gcs-server (github.com/fsouza/fake-gcs-server) in the test process,
// served over HTTP on the loopback like a real endpoint, with
// STORAGE_EMULATOR_HOST pointing every storage client of the process at it
// (ours and Beam's GCS filesystem alike, on any in-process runner).
//
// Between the clients and the emulator sits a small proxy that can refuse
// requests the way GCS does (403), run a hook before an object's full read
// (to change the object between the manifest and the pipeline's read), and
// records the object reads it saw.
package gcstest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"google.golang.org/api/option"
)

// Emulator is a running fake GCS.
type Emulator struct {
	// Host is the emulator's host:port, the value of STORAGE_EMULATOR_HOST.
	Host string
	// Server is the emulator itself.
	Server *fakestorage.Server
	// Client talks to the emulator over HTTP, like the code under test.
	Client *storage.Client

	mu         sync.Mutex
	deny       map[string]Access
	beforeRead map[string]func()
	corrupt    map[string][2]string
	reads      []Read
}

// Access is what the proxy refuses on a bucket.
type Access int

const (
	// DenyAll refuses every request on the bucket, listing included.
	DenyAll Access = iota + 1
	// DenyRead lets objects be listed but refuses their metadata and
	// contents, like an account with storage.objects.list only.
	DenyRead
)

// Read is one request for an object's contents.
type Read struct {
	Bucket, Object string
	// Range is the request's Range header ("" for a read of the whole object).
	Range string
	// Generation is the generation asked for ("" for the live one).
	Generation string
}

// Start starts an emulator for the rest of the test and sets
// STORAGE_EMULATOR_HOST to it (so the test must not be parallel).
func Start(t testing.TB) *Emulator {
	t.Helper()
	e := &Emulator{deny: map[string]Access{}, beforeRead: map[string]func(){}, corrupt: map[string][2]string{}}
	ts := httptest.NewUnstartedServer(nil)
	e.Host = ts.Listener.Addr().String()
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{
		NoListener: true,
		Scheme:     "http",
		// The XML API (object reads) is served at http://Host/bucket/object.
		PublicHost: e.Host,
		Writer:     io.Discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.Server = srv
	ts.Config.Handler = e.proxy(srv.HTTPHandler())
	ts.Start()
	t.Cleanup(ts.Close)
	t.Setenv("STORAGE_EMULATOR_HOST", e.Host)
	c, err := storage.NewClient(context.Background(), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	e.Client = c
	return e
}

// Bucket creates a bucket, keeping noncurrent object generations if
// versioned.
func (e *Emulator) Bucket(name string, versioned bool) {
	e.Server.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: name, VersioningEnabled: versioned})
}

// Put uploads an object through the storage API and returns its attributes
// (generation, CRC32C) as GCS reports them.
func (e *Emulator) Put(t testing.TB, bucket, name string, data []byte) *storage.ObjectAttrs {
	t.Helper()
	return e.PutWith(t, bucket, name, data, nil)
}

// PutWith is Put with a function that sets the writer's attributes.
func (e *Emulator) PutWith(t testing.TB, bucket, name string, data []byte, set func(*storage.ObjectAttrs)) *storage.ObjectAttrs {
	t.Helper()
	w := e.Client.Bucket(bucket).Object(name).NewWriter(context.Background())
	if set != nil {
		set(&w.ObjectAttrs)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatalf("upload gs://%s/%s: %v", bucket, name, err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("upload gs://%s/%s: %v", bucket, name, err)
	}
	return w.Attrs()
}

// Deny makes the proxy refuse access to a bucket with 403, as GCS does.
func (e *Emulator) Deny(bucket string, a Access) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.deny[bucket] = a
}

// BeforeFullRead runs f once, just before the first request for the whole
// contents of the object is passed on to the emulator.
func (e *Emulator) BeforeFullRead(bucket, object string, f func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.beforeRead[bucket+"/"+object] = f
}

// Corrupt makes every full read of the object serve its bytes with the
// first old replaced by new (of the same length), and without the checksum
// header that would let the storage client notice: bytes damaged on the way
// that only the reader's own check against the manifest can catch.
func (e *Emulator) Corrupt(bucket, object, old, new string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.corrupt[bucket+"/"+object] = [2]string{old, new}
}

// Reads returns the object reads seen so far.
func (e *Emulator) Reads() []Read {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Read(nil), e.reads...)
}

// request classifies a request: its bucket, its object ("" for a listing
// or a bucket), and whether it reads the object's contents (XML API).
func request(r *http.Request) (bucket, object string, media bool) {
	p := r.URL.EscapedPath()
	if rest, ok := strings.CutPrefix(p, "/storage/v1/b/"); ok {
		b, o, _ := strings.Cut(rest, "/o")
		object, _ = url.PathUnescape(strings.TrimPrefix(o, "/"))
		bucket, _ = url.PathUnescape(b)
		return bucket, object, r.URL.Query().Get("alt") == "media"
	}
	if strings.HasPrefix(p, "/upload/") || strings.HasPrefix(p, "/_internal/") || r.Method != http.MethodGet {
		return "", "", false
	}
	b, o, _ := strings.Cut(strings.TrimPrefix(p, "/"), "/")
	bucket, _ = url.PathUnescape(b)
	object, _ = url.PathUnescape(o)
	return bucket, object, object != ""
}

func (e *Emulator) proxy(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bucket, object, media := request(r)
		e.mu.Lock()
		deny := e.deny[bucket]
		var hook func()
		var damage [2]string
		if media {
			e.reads = append(e.reads, Read{Bucket: bucket, Object: object, Range: r.Header.Get("Range"), Generation: r.URL.Query().Get("generation")})
			if r.Header.Get("Range") == "" {
				key := bucket + "/" + object
				if hook = e.beforeRead[key]; hook != nil {
					delete(e.beforeRead, key)
				}
				damage = e.corrupt[key]
			}
		}
		e.mu.Unlock()
		if deny == DenyAll || (deny == DenyRead && object != "") {
			forbidden(w, media, bucket, object)
			return
		}
		if hook != nil {
			hook()
		}
		if damage[0] == "" {
			next.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			if k != "X-Goog-Hash" {
				w.Header()[k] = v
			}
		}
		w.WriteHeader(rec.Code)
		w.Write(bytes.Replace(rec.Body.Bytes(), []byte(damage[0]), []byte(damage[1]), 1))
	})
}

// forbidden answers as GCS does when the caller lacks a permission.
func forbidden(w http.ResponseWriter, media bool, bucket, object string) {
	if media {
		w.Header().Set("Content-Type", "application/xml; charset=UTF-8")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprintf(w, "<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code><Message>Access denied.</Message>"+
			"<Details>tester@example.iam.gserviceaccount.com does not have storage.objects.get access to the Google Cloud Storage object.</Details></Error>")
		return
	}
	msg := fmt.Sprintf("tester@example.iam.gserviceaccount.com does not have storage.objects.list access to the Google Cloud Storage bucket %s.", bucket)
	if object != "" {
		msg = fmt.Sprintf("tester@example.iam.gserviceaccount.com does not have storage.objects.get access to the Google Cloud Storage object %s/%s.", bucket, object)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"error":{"code":403,"message":%q,"errors":[{"message":%q,"domain":"global","reason":"forbidden"}]}}`, msg, msg)
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(http.StatusForbidden)
	w.Write(b.Bytes())
}
