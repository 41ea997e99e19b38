package transforms

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	"github.com/balancebeam/balancebeam/transforms/txnfile"
)

// IsLocalPath reports whether path names a file of a local filesystem (it
// has no URL scheme such as gs://), which the dedup stage can read again.
func IsLocalPath(path string) bool { return path != "" && !strings.Contains(path, "://") }

// rawReader reads the raw text of rows that left it in their files
// (FileSpec.RawInFile) back from the files, for the few rows that turn out
// to be rejected. It keeps the files it opened until close.
type rawReader struct {
	files []string
	open  map[int32]*os.File
}

// read returns t's raw text: Raw, or the bytes it points to in its file.
func (r *rawReader) read(t Txn) (string, error) {
	if t.RawLen <= 0 {
		return t.Raw, nil
	}
	path := fileName(r.files, t.File)
	f := r.open[t.File]
	if f == nil {
		var err error
		if f, err = os.Open(path); err != nil {
			return "", fmt.Errorf("read the text of %s line %d again: %w", path, t.Line, err)
		}
		if r.open == nil {
			r.open = map[int32]*os.File{}
		}
		r.open[t.File] = f
	}
	buf := make([]byte, t.RawLen)
	if _, err := f.ReadAt(buf, t.RawOffset); err != nil {
		return "", fmt.Errorf("read the text of %s line %d again: %w", path, t.Line, err)
	}
	// The file matched its manifest when it was parsed; it must still hold
	// the row where it was.
	cut := t.RawLen >= txnfile.MaxRawBytes
	if bytes.IndexByte(buf, '\n') >= 0 || !cut && (!bytes.Contains(buf, []byte(t.ID)) || !bytes.Contains(buf, []byte(t.Account))) {
		return "", fmt.Errorf("%w: %s line %d no longer holds transaction %q where it was read", ErrChanged, path, t.Line, txnfile.Truncate(t.ID, 64))
	}
	return string(buf), nil
}

func (r *rawReader) close() {
	for _, f := range r.open {
		f.Close()
	}
	r.open = nil
}
