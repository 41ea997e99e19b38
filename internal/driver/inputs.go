package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/balancebeam/balancebeam/internal/manifest"
	"github.com/balancebeam/balancebeam/sinks"
	"github.com/balancebeam/balancebeam/transforms"
)

// fileSpec is the pipeline's view of manifest entry i: what the reader must
// find when it reads the file.
func fileSpec(i int, f manifest.File) transforms.FileSpec {
	return transforms.FileSpec{Index: int32(i), Path: f.Path, Size: f.Size, SHA256: f.SHA256, Generation: f.Generation, CRC32C: f.CRC32C,
		RawInFile: transforms.IsLocalPath(f.Path) && f.Generation == 0}
}

// explainConflict adds to a refused forced batch id what changed between the
// files that batch was registered with and these inputs: for an overwritten
// GCS object, its name and both generations.
func explainConflict(ctx context.Context, reg *sinks.Registry, forced int64, m *manifest.Manifest, err error) error {
	if forced == 0 || !errors.Is(err, sinks.ErrBatchConflict) {
		return err
	}
	stored, ferr := reg.BatchFiles(ctx, forced)
	if ferr != nil || stored == nil {
		return err
	}
	var registered []manifest.File
	if json.Unmarshal(stored, &registered) != nil {
		return err
	}
	changes := manifest.Changes(registered, m.Files)
	if len(changes) == 0 {
		return err
	}
	return fmt.Errorf("batch %d was registered with other versions of these inputs, so it cannot be rerun on them: %s; %w",
		forced, strings.Join(changes, "; "), err)
}
