// Package manifest turns the input patterns of a run into the batch's
// manifest: the sorted list of files with their sizes and checksums, and one
// hash of it all that identifies the batch. Building it also checks that every
// file is there, readable and has a header, before anything is written.
//
// Inputs are local paths or globs, and gs://bucket/object URLs or globs on
// Google Cloud Storage. A local file is identified by its SHA-256, which
// building the manifest computes by reading it; a GCS object by its
// generation and CRC32C, which the object listing reports, so no object is
// downloaded to decide whether a batch was seen before.
package manifest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/balancebeam/balancebeam/transforms/txnfile"
)

// File is one input file: a local file or a GCS object.
type File struct {
	// Path is a local file's absolute path, or an object's gs://bucket/name.
	Path string `json:"path"`
	Size int64  `json:"size"`
	// SHA256 is the hex SHA-256 of a local file's contents.
	SHA256 string `json:"sha256,omitempty"`
	// Generation is a GCS object's generation: every write of the object,
	// even with the same bytes, makes a new one.
	Generation int64 `json:"generation,omitempty"`
	// CRC32C and MD5 are a GCS object's checksums as GCS computed them,
	// base64 as gcloud shows them. Composite objects have no MD5.
	CRC32C string `json:"crc32c,omitempty"`
	MD5    string `json:"md5,omitempty"`
}

// IsGCS reports whether f is a GCS object.
func (f File) IsGCS() bool { return IsGCS(f.Path) }

// Manifest is the pinned description of a batch's inputs.
type Manifest struct {
	Files []File
	// SHA256 is the hash of the file list: same files, same contents, same
	// hash.
	SHA256 string
}

// SplitPatterns splits comma-separated --input values into patterns.
func SplitPatterns(values []string) []string {
	var out []string
	for _, v := range values {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// Build expands the patterns (local paths or globs, gs:// URLs or globs),
// reads every local file once to checksum it and check its header, lists the
// GCS objects and checks their headers, and returns the manifest. Any input
// that is missing, unreadable or without a valid header is an error.
func Build(ctx context.Context, patterns []string) (*Manifest, error) {
	if len(patterns) == 0 {
		return nil, errors.New("no input: pass --input with one or more files or globs")
	}
	var paths []string
	var objects []File
	var gcs *gcsSource
	defer func() {
		if gcs != nil {
			gcs.close()
		}
	}()
	for _, p := range patterns {
		if IsGCS(p) {
			if gcs == nil {
				var err error
				if gcs, err = newGCSSource(ctx); err != nil {
					return nil, err
				}
			}
			matches, err := gcs.expand(ctx, p)
			if err != nil {
				return nil, err
			}
			objects = append(objects, matches...)
			continue
		}
		if strings.Contains(p, "://") {
			return nil, fmt.Errorf("input %q: only local paths and gs:// URLs are supported", p)
		}
		matches, err := expand(p)
		if err != nil {
			return nil, err
		}
		paths = append(paths, matches...)
	}
	slices.Sort(paths)
	paths = slices.Compact(paths)
	m := &Manifest{}
	for _, p := range paths {
		f, err := describe(p)
		if err != nil {
			return nil, err
		}
		m.Files = append(m.Files, f)
	}
	if len(objects) > 0 {
		objects, err := compactObjects(objects)
		if err != nil {
			return nil, err
		}
		if err := gcs.checkHeaders(ctx, objects); err != nil {
			return nil, err
		}
		m.Files = append(m.Files, objects...)
		// Local paths start with "/", so they sort before every gs:// URL
		// and the list stays sorted by path.
	}
	m.SHA256 = Hash(m.Files)
	return m, nil
}

// Hash is the identity of a file list. A local file counts by path, size
// and SHA-256; a GCS object by URL, size, generation and CRC32C.
func Hash(files []File) string {
	h := sha256.New()
	io.WriteString(h, "balancebeam manifest v1\n")
	for _, f := range files {
		if f.IsGCS() {
			fmt.Fprintf(h, "%s\t%d\tgeneration %d\tcrc32c %s\n", f.Path, f.Size, f.Generation, f.CRC32C)
			continue
		}
		fmt.Fprintf(h, "%s\t%d\t%s\n", f.Path, f.Size, f.SHA256)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Changes lists, for a person to read, how the files of now differ from
// those a batch was registered with: changed, added and missing files.
func Changes(registered, now []File) []string {
	before := make(map[string]File, len(registered))
	for _, f := range registered {
		before[f.Path] = f
	}
	var out []string
	seen := make(map[string]bool, len(now))
	for _, f := range now {
		seen[f.Path] = true
		old, ok := before[f.Path]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("%s is not in the registered batch", f.Path))
		case f.IsGCS() && old.Generation != f.Generation:
			out = append(out, fmt.Sprintf("%s was generation %d (crc32c %s, %d bytes) when the batch was registered and is generation %d (crc32c %s, %d bytes) now",
				f.Path, old.Generation, old.CRC32C, old.Size, f.Generation, f.CRC32C, f.Size))
		case f.IsGCS() && (old.CRC32C != f.CRC32C || old.Size != f.Size):
			out = append(out, fmt.Sprintf("%s: generation %d had crc32c %s (%d bytes) when the batch was registered and has crc32c %s (%d bytes) now",
				f.Path, f.Generation, old.CRC32C, old.Size, f.CRC32C, f.Size))
		case !f.IsGCS() && (old.SHA256 != f.SHA256 || old.Size != f.Size):
			out = append(out, fmt.Sprintf("%s had sha256 %s (%d bytes) when the batch was registered and has sha256 %s (%d bytes) now",
				f.Path, old.SHA256, old.Size, f.SHA256, f.Size))
		}
	}
	for _, f := range registered {
		if !seen[f.Path] {
			out = append(out, fmt.Sprintf("%s is in the registered batch but not in these inputs", f.Path))
		}
	}
	return out
}

func expand(pattern string) ([]string, error) {
	abs, err := filepath.Abs(pattern)
	if err != nil {
		return nil, fmt.Errorf("input %q: %w", pattern, err)
	}
	if !strings.ContainsAny(pattern, "*?[") {
		st, err := os.Stat(abs)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("input %q: no such file", pattern)
			}
			return nil, fmt.Errorf("input %q: %w", pattern, err)
		}
		if st.IsDir() {
			return nil, fmt.Errorf("input %q is a directory: name its files, for example %s", pattern, filepath.Join(pattern, "*.csv"))
		}
		return []string{abs}, nil
	}
	matches, err := filepath.Glob(abs)
	if err != nil {
		return nil, fmt.Errorf("input %q: bad pattern: %w", pattern, err)
	}
	var files []string
	for _, m := range matches {
		if st, err := os.Stat(m); err == nil && !st.IsDir() {
			files = append(files, m)
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("input %q matches no files", pattern)
	}
	return files, nil
}

// describe checksums a file and checks that it starts with a valid header.
func describe(path string) (File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return File{}, fmt.Errorf("input %s: %w", path, err)
	}
	defer fh.Close()
	if _, err := checkHeader(fh, path); err != nil {
		return File{}, err
	}
	// The header is good: hash the whole file, from the start again since
	// the reader has buffered part of it.
	if _, err := fh.Seek(0, io.SeekStart); err != nil {
		return File{}, fmt.Errorf("input %s: %w", path, err)
	}
	h := sha256.New()
	n, err := io.Copy(h, fh)
	if err != nil {
		return File{}, fmt.Errorf("input %s: %w", path, err)
	}
	return File{Path: path, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// checkHeader reads the first record of r and checks it is a valid header.
// It returns the length of the record's raw text.
func checkHeader(r io.Reader, path string) (int, error) {
	cr := txnfile.NewCSVReader(r)
	first, err := cr.Next()
	if errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("input %s: %w", path, txnfile.ErrNoHeader)
	}
	if err != nil {
		return 0, fmt.Errorf("input %s: %w", path, err)
	}
	if _, err := txnfile.ParseHeader(first); err != nil {
		return len(first.Raw), fmt.Errorf("input %s line %d: %w", path, first.Line, err)
	}
	return len(first.Raw), nil
}
