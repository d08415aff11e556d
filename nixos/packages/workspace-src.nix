# The Cargo workspace's sources (only what cargo needs), shared by the Rust
# packages the flake builds. In a flake these are the git-tracked files.
#
# builtins.path with a filter, not lib.fileset.toSource: the latter needs
# builtins.readFileType (Nix >= 2.14) under pure evaluation, and Debian's
# nix-bin is 2.8.
{ lib }:
let
  root = ../..;
  # Relative to the root; a directory brings everything under it.
  keep = [
    "Cargo.toml"
    "Cargo.lock"
    "harness"
    "suites"
    "examples"
    "images/webhook-dispatcher"
    # The SAFE table the rave crate reads at compile time (include_str!).
    "images/safe-mode.json"
  ];
  wanted =
    path: type:
    let
      rel = lib.removePrefix (toString root + "/") (toString path);
    in
    lib.any (
      k: rel == k || lib.hasPrefix (k + "/") rel || (type == "directory" && lib.hasPrefix (rel + "/") k)
    ) keep;
in
builtins.path {
  path = root;
  name = "rave-workspace-src";
  filter = wanted;
}
