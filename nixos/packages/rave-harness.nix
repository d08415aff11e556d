# The rave-harness command (workspace package rave-harness-cli at harness/cli),
# with the host programs it runs on its PATH: QEMU, qemu-img, openssl
# (s_client for the TLS case), timeout.
{
  lib,
  rustPlatform,
  pkg-config,
  makeWrapper,
  openssl,
  zlib,
  libssh2,
  qemu_kvm,
  coreutils,
}:
rustPlatform.buildRustPackage {
  pname = "rave-harness";
  version = (lib.importTOML ../../harness/cli/Cargo.toml).package.version;

  src = import ./workspace-src.nix { inherit lib; };
  cargoLock.lockFile = ../../Cargo.lock;
  cargoBuildFlags = [
    "-p"
    "rave-harness-cli"
  ];

  nativeBuildInputs = [
    pkg-config
    makeWrapper
  ];
  # ssh2 (libssh2-sys) links libssh2, OpenSSL and zlib.
  buildInputs = [
    openssl
    zlib
    libssh2
  ];

  # The unit and snapshot tests run with `cargo test`; the cases need guests.
  doCheck = false;

  postInstall = ''
    wrapProgram $out/bin/rave-harness \
      --prefix PATH : ${
        lib.makeBinPath [
          qemu_kvm
          openssl
          coreutils
        ]
      }
  '';

  meta = {
    description = "Boots the rave images under QEMU and checks them over SSH and HTTPS";
    license = lib.licenses.mit;
    mainProgram = "rave-harness";
    platforms = lib.platforms.linux;
  };
}
