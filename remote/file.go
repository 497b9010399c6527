package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"
)

// fileSource reads a local file. Its identity is its size and
// modification time; every read checks them.
type fileSource struct {
	url string
	f   *os.File
	id  Identity
}

func openFile(rawurl, path string) (Source, error) {
	f, err := os.Open(path)
	if err != nil {
		kind := KindOther
		switch {
		case errors.Is(err, fs.ErrNotExist):
			kind = KindNotFound
		case errors.Is(err, fs.ErrPermission):
			kind = KindDenied
		}
		return nil, &Error{Op: "open", URL: rawurl, Kind: kind, Err: err}
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("not a regular file")
	}
	if err != nil {
		f.Close()
		return nil, &Error{Op: "open", URL: rawurl, Kind: KindOther, Err: err}
	}
	return &fileSource{url: rawurl, f: f, id: Identity{Size: st.Size(), LastModified: st.ModTime()}}, nil
}

func (s *fileSource) URL() string        { return s.url }
func (s *fileSource) Identity() Identity { return s.id }
func (s *fileSource) Close() error       { return s.f.Close() }

// changed reports whether the file at the path has been replaced or
// modified since it was opened.
func (s *fileSource) changed() error {
	st, err := s.f.Stat()
	if err != nil {
		return &Error{Op: "read", URL: s.url, Kind: KindTransient, Err: err}
	}
	if st.Size() != s.id.Size || !st.ModTime().Equal(s.id.LastModified) {
		return &Error{Op: "read", URL: s.url, Kind: KindChanged, Err: fmt.Errorf("now %d bytes modified %s, was %s", st.Size(), st.ModTime().Format(time.RFC3339Nano), s.id)}
	}
	return nil
}

func (s *fileSource) ReadRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	if err := checkRange(s.url, s.id.Size, off, n); err != nil {
		return nil, err
	}
	if err := s.changed(); err != nil {
		return nil, err
	}
	return &fileRange{s: s, r: io.NewSectionReader(s.f, off, n)}, nil
}

type fileRange struct {
	s *fileSource
	r *io.SectionReader
}

func (r *fileRange) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err == io.EOF {
		// The bytes read are the version opened only if it is still there.
		if cerr := r.s.changed(); cerr != nil {
			return 0, cerr
		}
	} else if err != nil {
		err = &Error{Op: "read", URL: r.s.url, Kind: KindTransient, Err: err}
	}
	return n, err
}

func (r *fileRange) Close() error { return nil }
