package transforms

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"strings"

	"cloud.google.com/go/storage"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/util/gcsx"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encodeCRC32C formats a CRC32C as GCS does (base64 of the big-endian bytes).
func encodeCRC32C(sum uint32) string {
	return base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint32(nil, sum))
}

// splitGCS splits gs://bucket/name without URL-decoding the name.
func splitGCS(url string) (bucket, name string, ok bool) {
	rest, ok := strings.CutPrefix(url, "gs://")
	if !ok {
		return "", "", false
	}
	bucket, name, _ = strings.Cut(rest, "/")
	return bucket, name, bucket != "" && name != ""
}

// openFile opens one input of the batch through Beam's filesystems. A GCS
// object is read at exactly the generation its manifest pinned:
//
//   - Beam's GCS filesystem opens the live object; the reader it returns
//     reports the generation it is reading, and if that is the pinned one the
//     read goes on through it (the storage client keeps a reader on the
//     generation its first response served, retries included).
//   - If the object was overwritten or deleted since the manifest, Beam's
//     filesystem cannot ask for an older generation, so the pinned one is
//     opened with a storage client made the way Beam makes it. That works
//     when the bucket keeps noncurrent generations (object versioning);
//     otherwise the read fails, naming the object and both generations.
//
// Either way ParseStream then checks the size and CRC32C of what was read.
func openFile(ctx context.Context, file FileSpec) (io.ReadCloser, error) {
	if file.Generation == 0 {
		fs, err := filesystem.New(ctx, file.Path)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", file.Path, err)
		}
		rc, err := fs.OpenRead(ctx, file.Path)
		if err != nil {
			fs.Close()
			return nil, fmt.Errorf("open %s: %w", file.Path, err)
		}
		return &closers{rc, fs}, nil
	}
	bucket, name, ok := splitGCS(file.Path)
	if !ok {
		return nil, fmt.Errorf("open %s: a file with a generation must be gs://bucket/object", file.Path)
	}
	live := int64(0) // the generation Beam's filesystem found, 0 if none
	if beamAddresses(file.Path, bucket, name) {
		fs, err := filesystem.New(ctx, file.Path)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", file.Path, err)
		}
		rc, err := fs.OpenRead(ctx, file.Path)
		switch {
		case errors.Is(err, storage.ErrObjectNotExist):
			fs.Close()
		case err != nil:
			fs.Close()
			return nil, fmt.Errorf("open %s: %w", file.Path, err)
		default:
			r, isGCS := rc.(*storage.Reader)
			if !isGCS || r.Attrs.Generation == file.Generation {
				return &closers{rc, fs}, nil
			}
			live = r.Attrs.Generation
			rc.Close()
			fs.Close()
		}
	}
	client, err := newStorageClient(ctx)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", file.Path, err)
	}
	r, err := client.Bucket(bucket).Object(name).Generation(file.Generation).NewReader(ctx)
	if errors.Is(err, storage.ErrObjectNotExist) {
		defer client.Close()
		if live == 0 {
			if a, aerr := client.Bucket(bucket).Object(name).Attrs(ctx); aerr == nil {
				live = a.Generation
			}
		}
		now := "has been deleted"
		if live != 0 {
			now = fmt.Sprintf("is generation %d now", live)
		}
		return nil, fmt.Errorf("%s %w: it was generation %d when the batch was registered and %s, and the bucket no longer has generation %d "+
			"(a bucket with object versioning keeps it); run again to register the current objects as a new batch",
			file.Path, ErrChanged, file.Generation, now, file.Generation)
	}
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("open %s generation %d: %w", file.Path, file.Generation, err)
	}
	if live != 0 {
		slog.Warn("object overwritten since its batch was registered: reading the registered generation",
			"file", file.Path, "registered_generation", file.Generation, "live_generation", live)
	}
	return &closers{r, client}, nil
}

// beamAddresses reports whether Beam's GCS filesystem, which parses the path
// as a URL, finds the same object (it would not for a name with "#", "?" or
// "%" in it). If it found another object, the generation check would catch
// it; this only spares the request.
func beamAddresses(path, bucket, name string) bool {
	b, n, err := gcsx.ParseObject(path)
	return err == nil && b == bucket && n == name
}

// newStorageClient makes a client as Beam's GCS filesystem does: default
// credentials, else unauthenticated (STORAGE_EMULATOR_HOST is honoured).
func newStorageClient(ctx context.Context) (*storage.Client, error) {
	c, err := gcsx.NewClient(ctx, storage.ScopeReadOnly)
	if err != nil {
		c, err = gcsx.NewUnauthenticatedClient(ctx)
	}
	return c, err
}

// currentGeneration describes an object's live generation next to the
// registered one, for the message of a read that did not match.
func currentGeneration(ctx context.Context, file FileSpec) string {
	bucket, name, _ := splitGCS(file.Path)
	client, err := newStorageClient(ctx)
	if err != nil {
		return fmt.Sprintf("registered generation %d; the live generation is unknown: %v", file.Generation, err)
	}
	defer client.Close()
	a, err := client.Bucket(bucket).Object(name).Attrs(ctx)
	switch {
	case errors.Is(err, storage.ErrObjectNotExist):
		return fmt.Sprintf("registered generation %d; the object has been deleted", file.Generation)
	case err != nil:
		return fmt.Sprintf("registered generation %d; the live generation is unknown: %v", file.Generation, err)
	case a.Generation == file.Generation:
		return fmt.Sprintf("registered generation %d, which is still the live one, with crc32c %s: the bytes read are not the object's",
			file.Generation, encodeCRC32C(a.CRC32C))
	default:
		return fmt.Sprintf("registered generation %d; the object is generation %d now", file.Generation, a.Generation)
	}
}

// closers closes a reader, then what it came from.
type closers struct {
	io.ReadCloser
	from io.Closer
}

func (c *closers) Close() error {
	err := c.ReadCloser.Close()
	if ferr := c.from.Close(); err == nil {
		err = ferr
	}
	return err
}
