// Package manifest turns the input patterns of a run into the batch's
// manifest: the sorted list of files with their sizes and checksums, and one
// hash of it all that identifies the batch. Building it also checks that every
// file is there, readable and has a header, before anything is written.
package manifest

import (
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

// File is one input file.
type File struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

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

// Build expands the patterns (paths or globs), reads every file once to
// checksum it and check its header, and returns the manifest.
func Build(patterns []string) (*Manifest, error) {
	if len(patterns) == 0 {
		return nil, errors.New("no input: pass --input with one or more files or globs")
	}
	var paths []string
	for _, p := range patterns {
		if strings.Contains(p, "://") {
			return nil, fmt.Errorf("input %q: only local paths are supported here", p)
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
	m.SHA256 = Hash(m.Files)
	return m, nil
}

// Hash is the identity of a file list.
func Hash(files []File) string {
	h := sha256.New()
	io.WriteString(h, "balancebeam manifest v1\n")
	for _, f := range files {
		fmt.Fprintf(h, "%s\t%d\t%s\n", f.Path, f.Size, f.SHA256)
	}
	return hex.EncodeToString(h.Sum(nil))
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
	cr := txnfile.NewCSVReader(fh)
	first, err := cr.Next()
	if errors.Is(err, io.EOF) {
		return File{}, fmt.Errorf("input %s: %w", path, txnfile.ErrNoHeader)
	}
	if err != nil {
		return File{}, fmt.Errorf("input %s: %w", path, err)
	}
	if _, err := txnfile.ParseHeader(first); err != nil {
		return File{}, fmt.Errorf("input %s line %d: %w", path, first.Line, err)
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
