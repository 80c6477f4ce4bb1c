package nar_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"

	"github.com/nix-airgap/nix-airgap/internal/nar"
)

func Example() {
	dir, err := os.MkdirTemp("", "nar-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "bin"), 0o755)
	os.WriteFile(filepath.Join(tree, "bin", "hello"), []byte("#!/bin/sh\necho hello\n"), 0o755)
	os.Symlink("bin/hello", filepath.Join(tree, "run"))

	var buf bytes.Buffer
	if err := nar.Dump(&buf, tree); err != nil {
		log.Fatal(err)
	}

	nr := nar.NewReader(&buf)
	for {
		hdr, err := nr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		switch hdr.Type {
		case nar.TypeRegular:
			fmt.Println(hdr.Path, hdr.Type, hdr.Size, "executable:", hdr.Executable)
		case nar.TypeSymlink:
			fmt.Println(hdr.Path, hdr.Type, "->", hdr.LinkTarget)
		default:
			fmt.Println(hdr.Path, hdr.Type)
		}
	}
	// Output:
	// / directory
	// /bin directory
	// /bin/hello regular 21 executable: true
	// /run symlink -> bin/hello
}

func ExampleDumpHash() {
	dir, err := os.MkdirTemp("", "nar-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, "hello.txt")
	os.WriteFile(p, []byte("hello\n"), 0o644)

	hash, size, err := nar.DumpHash(io.Discard, p)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(hash, size)
	// Output:
	// sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw 120
}

func ExampleOpenFile() {
	var buf bytes.Buffer
	nw := nar.NewWriter(&buf)
	nw.WriteHeader(&nar.Header{Path: "/", Type: nar.TypeRegular, Size: 6})
	io.WriteString(nw, "hello\n")
	nw.Close()

	r, size, err := nar.OpenFile(&buf)
	if err != nil {
		log.Fatal(err)
	}
	contents, err := io.ReadAll(r)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d %q\n", size, contents)
	// Output:
	// 6 "hello\n"
}

func ExampleWriteListing() {
	var buf bytes.Buffer
	nw := nar.NewWriter(&buf)
	nw.WriteHeader(&nar.Header{Path: "/", Type: nar.TypeDirectory})
	nw.WriteHeader(&nar.Header{Path: "/lib", Type: nar.TypeSymlink, LinkTarget: "../lib64"})
	nw.WriteHeader(&nar.Header{Path: "/x", Type: nar.TypeRegular, Size: 1, Executable: true})
	io.WriteString(nw, "x")
	nw.Close()

	root, err := nar.List(&buf)
	if err != nil {
		log.Fatal(err)
	}
	nar.WriteListing(os.Stdout, root)
	// Output:
	// {"version":1,"root":{"type":"directory","entries":{"lib":{"type":"symlink","target":"../lib64"},"x":{"type":"regular","size":1,"executable":true,"narOffset":456}}}}
}
