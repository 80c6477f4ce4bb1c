# Derivations covering every kind the derivation package must handle.
# Instantiating them downloads and builds nothing.
{ extra ? null }:
let
  fetchurl = import <nix/fetchurl.nix>;
  system = builtins.currentSystem;
  bb = attrs: derivation ({
    inherit system;
    builder = "/bin/busybox";
    args = [ "sh" "-c" "echo $name > $out" ];
  } // attrs);
  md5 = "e9820012060b19cead6148900edf4a32";
  sha1 = "a3a2b7b91e6f1abfd54dac8f37368262bcb20c5a";
  sha256 = "68c5ccdad0655d816f445d522a3da5f0d2bc0324d67ae165b993e28ecb595506";
  sha256nix32 = "01jmb75qxqlkp5jy2ynn4h1vrlphllyjlljx8ipq2pb5s3dcrib8";
  sha512 = "f79e886299cefa84cb59c17d6207b39fda244515a941536ee3870138ae684dd58de3faf0183b9170f7edc41ebf2b30cd42998feb2bebbc675596efc539b34096";
  sha512nix32 = "2b41crrqpprcmb7pkmjpswgk51csc1bpwgc9vgpf28kn67hzbiqvmadd2p3h0c7wdp56hd92m2j9nlznc3n4zf1b75q9ynfk5i8i7pp";

  flat = fetchurl { url = "http://127.0.0.1:1/flat.tar.gz"; sha256 = sha256nix32; };
  # Same name and hash from another URL: same output path, other .drv.
  flatMirror = fetchurl { url = "http://127.0.0.1:1/mirror/flat.tar.gz"; sha256 = sha256; };
  flat512 = fetchurl { url = "http://127.0.0.1:1/big.bin"; sha512 = sha512nix32; };
  flatSRI = fetchurl { url = "http://127.0.0.1:1/sri.bin"; hash = "sha256-aMXM2tBlXYFvRF1SKj2l8NK8AyTWeuFluZPijstZVQY="; };
  exe = fetchurl { url = "http://127.0.0.1:1/tool"; sha256 = sha256; executable = true; };
  unpacked = fetchurl { url = "http://127.0.0.1:1/src.tar"; sha256 = sha256; unpack = true; };

  fod = mode: algo: hash: bb {
    name = "fod-${mode}-${algo}";
    outputHashMode = mode;
    outputHashAlgo = algo;
    outputHash = hash;
  };
  fods = [
    (fod "flat" "md5" md5)
    (fod "recursive" "md5" md5)
    (fod "flat" "sha1" sha1)
    (fod "recursive" "sha1" sha1)
    (fod "flat" "sha256" sha256nix32)
    (fod "recursive" "sha256" sha256)
    (fod "flat" "sha512" sha512)
    (fod "recursive" "sha512" sha512nix32)
  ];

  # nixpkgs' fetchurl and fetchgit since late 2025, and a build, with
  # structured attrs: the name, URLs and hash live in __json, not in the
  # environment.
  structured = bb {
    name = "structured.tar.gz";
    __structuredAttrs = true;
    urls = [ "http://127.0.0.1:1/structured.tar.gz" "http://127.0.0.1:1/mirror/structured.tar.gz" ];
    outputHashMode = "flat";
    outputHashAlgo = "sha256";
    outputHash = sha256nix32;
    impureEnvVars = [ "NIX_HASHED_MIRRORS" ];
  };
  structuredGit = bb {
    name = "structured-git-source";
    __structuredAttrs = true;
    url = "http://127.0.0.1:1/repo.git";
    rev = "0123456789abcdef0123456789abcdef01234567";
    outputHashMode = "recursive";
    outputHashAlgo = "sha256";
    outputHash = sha256;
  };
  structuredBuild = bb {
    name = "structured-build";
    __structuredAttrs = true;
    srcs = [ structured structuredGit ];
    flags = [ "-O2" "-g" ];
  };

  multi = bb {
    name = "multi";
    outputs = [ "out" "dev" "lib" ];
    args = [ "sh" "-c" "echo > $out; echo > $dev; echo > $lib" ];
    src = ./src.txt;
    escapes = "quote\" backslash\\ newline\n tab\t return\r dollar$ unicode é ☃";
    "odd name" = "(,[])";
  };
  useDev = bb {
    name = "use-dev";
    dev = multi.dev;
    inherit flat flatMirror;
  };
in
bb ({
  name = "top";
  script = builtins.toFile "script.sh" "echo hi";
  deps = [ multi multi.lib useDev flat512 flatSRI exe unpacked structuredBuild ] ++ fods;
  args = [ "sh" "-c" "echo \"$deps\" > $out" "" "tab\targ" ];
} // (if extra == null then { } else { inherit extra; }))
