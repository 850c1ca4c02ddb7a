// ociimage writes a container image archive (docker save format, which `ctr images import`
// reads) with one layer made from a directory, using go-containerregistry. The real-node test
// builds its images with it (the Orrery image and a pause image) without a registry or a Docker
// engine.
//
//	ociimage -rootfs DIR -tag docker.io/library/orrery:dev -out image.tar \
//	  -entrypoint node,/opt/orrery/bin/orrery.js -workdir /opt/orrery -env PATH=/usr/local/bin:/usr/bin:/bin
package main

import (
	"archive/tar"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	rootfs := flag.String("rootfs", "", "directory whose contents become the image's one layer")
	tag := flag.String("tag", "", "image reference, e.g. docker.io/library/orrery:dev")
	out := flag.String("out", "", "archive to write")
	entrypoint := flag.String("entrypoint", "", "comma-separated entrypoint")
	workdir := flag.String("workdir", "/", "working directory")
	var env list
	flag.Var(&env, "env", "NAME=value, repeatable")
	flag.Parse()
	if *rootfs == "" || *tag == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "ociimage: -rootfs, -tag and -out are required")
		flag.Usage()
		os.Exit(2)
	}
	if err := build(*rootfs, *tag, *out, *entrypoint, *workdir, env); err != nil {
		fmt.Fprintf(os.Stderr, "ociimage: %v\n", err)
		os.Exit(1)
	}
}

func build(rootfs, tag, out, entrypoint, workdir string, env []string) error {
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("-tag %q: %w", tag, err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return tarDir(rootfs), nil })
	if err != nil {
		return fmt.Errorf("layer from %s: %w", rootfs, err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.OS = "linux"
	cfg.Architecture = "amd64"
	cfg.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cfg.Config.Env = env
	cfg.Config.WorkingDir = workdir
	if entrypoint != "" {
		cfg.Config.Entrypoint = strings.Split(entrypoint, ",")
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(out, ref, img)
}

// tarDir streams dir as a tar archive: regular files, directories and symlinks, owned by root,
// with their modes and a fixed time, so the same tree gives the same layer digest.
func tarDir(dir string) io.ReadCloser {
	r, w := io.Pipe()
	go func() {
		tw := tar.NewWriter(w)
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(dir, path)
			if err != nil || rel == "." {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			link := ""
			if info.Mode()&fs.ModeSymlink != 0 {
				if link, err = os.Readlink(path); err != nil {
					return err
				}
			} else if !info.Mode().IsRegular() && !info.IsDir() {
				return nil // sockets, fifos, devices: not image content
			}
			hdr, err := tar.FileInfoHeader(info, link)
			if err != nil {
				return err
			}
			hdr.Name = filepath.ToSlash(rel)
			if info.IsDir() {
				hdr.Name += "/"
			}
			hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "root", "root"
			hdr.ModTime = time.Unix(0, 0)
			hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
			hdr.Format = tar.FormatPAX
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			if !info.Mode().IsRegular() {
				return nil
			}
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(tw, f)
			return err
		})
		if err == nil {
			err = tw.Close()
		}
		w.CloseWithError(err)
	}()
	return r
}
