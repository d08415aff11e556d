# The image directory the harness boots (RAVE_NIXOS_IMAGES/pN): the kernel,
# the initrd, a qcow2 disk, ca.pem, the age identity and manifest.json in the
# schema of harness/src/manifest.rs (schema 1, deny_unknown_fields), at
# config.system.build.raveImage.
#
# The disk is nixpkgs' nixos/lib/make-disk-image.nix: a bare ext4 filesystem
# (partitionTableType "none", label "nixos") holding the system closure, no
# boot loader (QEMU boots the kernel directly with the manifest's command
# line), no channel. make-disk-image runs part of its work in a VM
# (vmTools.runInLinuxVM), so the builder needs the kvm system feature.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.rave;
  toplevel = config.system.build.toplevel;
  flavorName = if cfg.testAccess then "test" else "production";
  name = "rave-${cfg.profile}-${flavorName}${lib.optionalString (!cfg.safeMode) "-unsafe"}";

  disk = import "${pkgs.path}/nixos/lib/make-disk-image.nix" {
    inherit config lib pkgs;
    name = "${name}-disk";
    format = "qcow2";
    partitionTableType = "none";
    label = "nixos";
    installBootLoader = false;
    copyChannel = false;
    diskSize = "auto";
    # Room for PostgreSQL, Prometheus' TSDB, Grafana and vibe-kanban's data.
    additionalSpace = "3072M";
  };

  kernelCmdline = lib.concatStringsSep " " ([ "init=${toplevel}/init" ] ++ config.boot.kernelParams);

  manifest = {
    schema = 1;
    profile = cfg.profile;
    flavor = "nixos";
    safe_mode = cfg.safeMode;
    kernel = "bzImage";
    initrd = "initrd";
    disk = "nixos.qcow2";
    kernel_cmdline = kernelCmdline;
    ssh_user = "agent";
    ca_cert = "ca.pem";
    age_identity = if cfg.secrets.ageIdentity == null then null else "age-identity.txt";
    components = lib.mapAttrs (_: unit: { inherit unit; }) cfg.manifest.components;
    limits = cfg.manifest.limits;
    absent = cfg.manifest.absent;
  };
in
{
  # make-disk-image labels the filesystem; stage 1 mounts it by that label.
  fileSystems."/" = {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
  };

  system.build.raveImage =
    pkgs.runCommand name
      {
        nativeBuildInputs = [ pkgs.sops ];
        manifestJson = builtins.toJSON manifest;
        passAsFile = [ "manifestJson" ];
        passthru = {
          inherit disk manifest kernelCmdline;
        };
      }
      ''
        mkdir "$out"
        ln -s ${toplevel}/kernel "$out/bzImage"
        ln -s ${toplevel}/initrd "$out/initrd"
        ln -s ${disk}/nixos.qcow2 "$out/nixos.qcow2"
        ln -s ${cfg.secrets.caCert} "$out/ca.pem"
        cp "$manifestJsonPath" "$out/manifest.json"
        ${lib.optionalString (cfg.secrets.ageIdentity != null) ''
          ln -s ${cfg.secrets.ageIdentity} "$out/age-identity.txt"

          # The disk may hold the secrets only encrypted: refuse an image whose
          # bytes contain the webhook token or the body of the TLS key (qcow2
          # keeps data clusters as they are, so this scans what the guest sees).
          export HOME=$TMPDIR SOPS_AGE_KEY_FILE=${cfg.secrets.ageIdentity}
          extract() { sops --decrypt --extract "[\"$1\"]" ${cfg.secrets.sopsFile}; }
          token=$(extract webhook-gitlab-secret)
          key_body=$(extract tls-key | sed -n 2p)
          for needle in "$token" "$key_body"; do
            if [ -z "$needle" ]; then echo "rave image: a secret decrypted empty" >&2; exit 1; fi
            if grep -qaF -- "$needle" "$out/nixos.qcow2"; then
              echo "rave image: a plaintext secret is on the disk image: refusing it" >&2
              exit 1
            fi
          done
        ''}
      '';
}
