# The project's webhook dispatcher, built from the Cargo workspace
# (images/webhook-dispatcher). The flake calls this with a rustPlatform whose
# rustc meets the workspace's rust-version (see flake.nix).
{
  lib,
  rustPlatform,
}:
rustPlatform.buildRustPackage {
  pname = "webhook-dispatcher";
  version = (lib.importTOML ../../images/webhook-dispatcher/Cargo.toml).package.version;

  src = import ./workspace-src.nix { inherit lib; };
  cargoLock.lockFile = ../../Cargo.lock;
  cargoBuildFlags = [
    "-p"
    "webhook-dispatcher"
  ];

  # Its tests start throwaway PostgreSQL clusters; `cargo test` runs them.
  doCheck = false;

  meta = {
    description = "GitLab-style webhooks: authenticated, stored once in PostgreSQL, measured, traced";
    license = lib.licenses.mit;
    mainProgram = "webhook-dispatcher";
    platforms = lib.platforms.linux;
  };
}
