{
  description = "rave: the NixOS flavor of the P0/P1/P2 images, the packages they need, and checks that boot them";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";
    # The Rust toolchain only: the workspace needs rustc >= 1.95 (Cargo.toml),
    # nixos-25.05 has an older one; nixos-26.05 ships 1.95.0.
    nixpkgs-rust.url = "github:NixOS/nixpkgs/nixos-26.05";
    sops-nix = {
      url = "github:Mic92/sops-nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      nixpkgs-rust,
      sops-nix,
    }:
    let
      system = "x86_64-linux";
      inherit (nixpkgs) lib;
      pkgs = nixpkgs.legacyPackages.${system};

      # --- Rust ---------------------------------------------------------------
      # The nixpkgs whose Rust toolchain builds the workspace. Its rustc must meet
      # Cargo.toml's workspace rust-version; if it does not, evaluating anything
      # built from the workspace stops with the message below instead of failing
      # deep inside cargo. nixpkgs-rust (nixos-26.05, rustc 1.95.0) provides it;
      # the system itself comes from nixpkgs (nixos-25.05).
      rustPkgs = nixpkgs-rust.legacyPackages.${system};
      workspaceRustVersion = (lib.importTOML ./Cargo.toml).workspace.package.rust-version;
      rustPlatform =
        if lib.versionAtLeast rustPkgs.rustc.version workspaceRustVersion then
          rustPkgs.rustPlatform
        else
          throw ''
            rave flake: the workspace needs rustc >= ${workspaceRustVersion} (Cargo.toml rust-version),
            but the Rust toolchain's nixpkgs (rustPkgs in flake.nix) has rustc ${rustPkgs.rustc.version}.
            Point rustPkgs at a newer nixpkgs input (see the comment above it) or lower rust-version.
          '';

      ravePackages = import ./nixos/packages { inherit pkgs rustPlatform; };

      # --- SAFE mode ----------------------------------------------------------
      # SAFE=0 takes effect only under --impure (pure evaluation reads ""); the
      # …-safe and …-unsafe outputs name the mode explicitly.
      safeEnv = builtins.getEnv "SAFE";
      safeDefault =
        if safeEnv == "" || safeEnv == "1" then
          true
        else if safeEnv == "0" then
          false
        else
          throw "SAFE=${safeEnv} is not valid: use 1 (the default) or 0";

      # --- images -------------------------------------------------------------
      profiles = [
        "p0"
        "p1"
        "p2"
      ];
      kinds = [
        "production"
        "test"
      ];

      mkSystem =
        {
          profile,
          kind,
          safe,
        }:
        lib.nixosSystem {
          specialArgs = { inherit sops-nix ravePackages; };
          modules = [
            (./nixos + "/${profile}.nix")
            ./nixos/image.nix
            {
              nixpkgs.hostPlatform = system;
              rave.safeMode = safe;
            }
          ]
          ++ lib.optionals (kind == "test") [
            ./nixos/test-access.nix
            { rave.testAccess = true; }
          ];
        };

      imageOf = args: (mkSystem args).config.system.build.raveImage;

      # p0-production, p0-production-safe, p0-production-unsafe, p0-test, … p2-test-unsafe.
      variants = lib.concatMap (
        profile:
        lib.concatMap (kind: [
          {
            name = "${profile}-${kind}";
            inherit profile kind;
            safe = safeDefault;
          }
          {
            name = "${profile}-${kind}-safe";
            inherit profile kind;
            safe = true;
          }
          {
            name = "${profile}-${kind}-unsafe";
            inherit profile kind;
            safe = false;
          }
        ]) kinds
      ) profiles;

      images = lib.listToAttrs (
        map (v: lib.nameValuePair v.name (imageOf { inherit (v) profile kind safe; })) variants
      );

      # `nix run .#p2-production`: boot a production image on a throwaway overlay.
      bootApp =
        name: image:
        let
          inherit (image) manifest;
          bounds = import ./nixos/safe-mode.nix manifest.properties.safe_mode;
          script = pkgs.writeShellApplication {
            name = "rave-${name}";
            runtimeInputs = [
              pkgs.qemu_kvm
              pkgs.coreutils
            ];
            text = ''
              image=${image}
              max_ram=${toString bounds.ramMb}
              max_cpus=${toString bounds.cpus}
              ram=''${QEMU_RAM_MB:-3072}
              cpus=''${QEMU_CPUS:-2}
              case "$ram$cpus" in
                "" | *[!0-9]*) echo "rave: QEMU_RAM_MB and QEMU_CPUS must be whole numbers" >&2; exit 2 ;;
              esac
              if [ "$ram" -gt "$max_ram" ] || [ "$cpus" -gt "$max_cpus" ]; then
                echo "rave: this image (SAFE=${if manifest.properties.safe_mode then "1" else "0"}) allows at most $max_ram MiB and $max_cpus CPUs" >&2
                exit 2
              fi
              accel=''${RAVE_ACCEL:-auto}
              if [ "$accel" = auto ]; then
                if [ -w /dev/kvm ]; then accel=kvm; else accel=tcg; fi
              fi
              case "$accel" in
                kvm) accel_args=(-accel kvm) ;;
                tcg) accel_args=(-accel "tcg,tb-size=192") ;;
                *) echo "rave: RAVE_ACCEL=$accel is not valid: auto, kvm or tcg" >&2; exit 2 ;;
              esac
              ssh_port=''${RAVE_SSH_PORT:-2222}
              https_port=''${RAVE_HTTPS_PORT:-3002}
              state=$(mktemp -d "''${TMPDIR:-/tmp}/rave-${name}.XXXXXX")
              trap 'rm -rf "$state"' EXIT
              qemu-img create -q -f qcow2 -F qcow2 -b "$image/nixos.qcow2" "$state/overlay.qcow2"
              args=(
                -machine q35 "''${accel_args[@]}" -m "$ram" -smp "$cpus"
                -nodefaults -display none -serial mon:stdio
                -kernel "$image/bzImage" -initrd "$image/initrd"
                -append ${lib.escapeShellArg manifest.kernel_cmdline}
                -drive "file=$state/overlay.qcow2,if=virtio,format=qcow2"
                -netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$ssh_port-:22,hostfwd=tcp:127.0.0.1:$https_port-:3002"
                -device "virtio-net-pci,netdev=net0"
                -device virtio-rng-pci
              )
              for file in "$image"/fw-cfg/*; do
                [ -e "$file" ] || continue
                name=''${file##*/}
                args+=(-fw_cfg "name=''${name//-//},file=$file")
              done
              echo "rave ${name}: SSH on 127.0.0.1:$ssh_port, https://rave.local on 127.0.0.1:$https_port (CA: $image/ca.pem); Ctrl-a x quits" >&2
              qemu-system-x86_64 "''${args[@]}"
            '';
          };
        in
        {
          type = "app";
          program = lib.getExe script;
        };

      # One check per profile: the harness boots that profile's test image in
      # the build sandbox and runs the cases; the JUnit report is the output.
      checkProfile =
        profile:
        pkgs.runCommand "rave-check-${profile}"
          {
            nativeBuildInputs = [
              ravePackages.rave-harness
              pkgs.qemu_kvm
              pkgs.openssl
              pkgs.coreutils
            ];
            requiredSystemFeatures = [ "kvm" ];
            RAVE_NIXOS_IMAGES = pkgs.linkFarm "rave-nixos-images-${profile}" [
              {
                name = profile;
                path = images."${profile}-test";
              }
            ];
            RAVE_FLAVOR = "nixos";
            RAVE_ACCEL = "kvm";
          }
          ''
            export HOME="$TMPDIR"
            export RAVE_CACHE_DIR="$TMPDIR/rave-cache"
            mkdir -p "$out" "$RAVE_CACHE_DIR"
            rave-harness run --flavor nixos --profile ${profile} \
              --junit "$out/junit.xml" --json "$out/events.jsonl"
          '';
    in
    {
      # For NixOS configurations of one's own: the test access the harness
      # needs (its keys over fw_cfg, sudo, the tools checks run), and the
      # harness image of a configuration (manifest schema 2).
      # (Each a module that imports the file: Nix before 2.13 refuses a bare
      # path here in `nix flake check`, "module must be a function or an
      # attribute set".)
      nixosModules = {
        testAccess.imports = [ ./nixos/test-access.nix ];
        harnessImage.imports = [ ./nixos/harness-image.nix ];
      };

      # The harness image of a NixOS configuration of one's own (a
      # lib.nixosSystem result), with test access:
      #   rave.lib.harnessImage (nixpkgs.lib.nixosSystem { … modules = [ mine { harness.image.profile = "my-web"; } ]; })
      lib.harnessImage =
        configuration:
        (configuration.extendModules {
          modules = [
            self.nixosModules.harnessImage
            self.nixosModules.testAccess
          ];
        }).config.system.build.harnessImage;

      packages.${system} = images // {
        inherit (ravePackages)
          webhook-dispatcher
          rave-harness
          vibe-kanban
          claude-code-router
          rave-secrets
          ;
      };

      nixosConfigurations = lib.listToAttrs (
        map (
          v:
          lib.nameValuePair v.name (mkSystem {
            inherit (v) profile kind safe;
          })
        ) (lib.filter (v: v.safe == safeDefault && v.name == "${v.profile}-${v.kind}") variants)
      );

      apps.${system} = lib.mapAttrs bootApp (lib.filterAttrs (n: _: lib.hasInfix "-production" n) images);

      checks.${system} = lib.genAttrs profiles checkProfile // {
        # Cheap, no VM: the SAFE-mode values (throws at evaluation when wrong).
        safe-mode = pkgs.writeText "rave-safe-mode-check" (import ./nixos/tests/safe-mode.nix);
      };

      devShells.${system}.default = pkgs.mkShell {
        packages = [
          rustPlatform.rust.rustc
          rustPlatform.rust.cargo
          rustPkgs.clippy
          rustPkgs.rustfmt
          pkgs.pkg-config
          pkgs.openssl
          pkgs.zlib
          pkgs.libssh2
          # the harness and scripts/
          pkgs.qemu_kvm
          pkgs.shellcheck
          pkgs.openssh
          pkgs.curl
          pkgs.jq
          pkgs.libxml2
          pkgs.util-linux
          # the Debian image build (images/debian/build.sh)
          pkgs.mmdebstrap
          pkgs.e2fsprogs
          pkgs.age
          pkgs.unzip
          pkgs.nodejs_22
          # the dispatcher's tests, promtool for the alert rules, sops for secrets
          pkgs.postgresql_16
          (pkgs.prometheus.cli or pkgs.prometheus)
          pkgs.sops
          pkgs.nix
        ];
      };
    };
}
