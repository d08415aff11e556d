# The Cargo workspace's sources (only what cargo needs), shared by the Rust
# packages the flake builds. In a flake these are the git-tracked files.
{ lib }:
let
  root = ../..;
in
lib.fileset.toSource {
  inherit root;
  fileset = lib.fileset.unions [
    (root + "/Cargo.toml")
    (root + "/Cargo.lock")
    (root + "/harness")
    (root + "/suites")
    (root + "/examples")
    (root + "/images/webhook-dispatcher")
    # The SAFE table the rave crate reads at compile time (include_str!).
    (root + "/images/safe-mode.json")
  ];
}
