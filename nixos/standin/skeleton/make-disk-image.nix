# rave stand-in (issue 17): a stub of nixpkgs' nixos/lib/make-disk-image.nix
# with the same formal arguments (those of the NixOS/nixpkgs copy at
# 025640dcb7270faa6fe80089fda831b89f3824a9, no `...`), so a misspelt or
# unknown argument fails as it would with the real file, and the same
# argument assertions (partitionTableType, onlyNixStore, user/group). The
# disk itself is a derivation that is never built. Not public code.
{
  pkgs,
  lib,
  config,
  diskSize ? "auto",
  additionalSpace ? "512M",
  bootSize ? "256M",
  contents ? [ ],
  partitionTableType ? "legacy",
  installBootLoader ? true,
  touchEFIVars ? false,
  OVMF ? null,
  efiFirmware ? null,
  efiVariables ? null,
  fsType ? "ext4",
  label ? if onlyNixStore then "nix-store" else "nixos",
  configFile ? null,
  postVM ? "",
  memSize ? 1024,
  onlyNixStore ? false,
  name ? "nixos-disk-image",
  format ? "raw",
  deterministic ? true,
  rootGPUID ? null,
  rootFSUID ? (if fsType == "ext4" then rootGPUID else null),
  copyChannel ? true,
  additionalPaths ? [ ],
}:
assert lib.assertOneOf "partitionTableType" partitionTableType [
  "legacy"
  "legacy+gpt"
  "efi"
  "efixbootldr"
  "hybrid"
  "none"
];
assert lib.assertOneOf "format" format [
  "qcow2"
  "qcow2-compressed"
  "vdi"
  "vpc"
  "raw"
];
assert lib.assertMsg (
  partitionTableType != "none" -> fsType == "ext4"
) "to produce a partition table, we need to use -E offset flag which is support only for fsType = ext4";
assert lib.assertMsg (
  onlyNixStore -> contents == [ ] && configFile == null && !installBootLoader
) "In a only Nix store image, the contents must be empty, no configuration must be provided and no bootloader should be installed.";
assert lib.assertMsg (lib.all (
  attrs: ((attrs.user or null) == null) == ((attrs.group or null) == null)
) contents) "Contents of the disk image should set none of {user, group} or both at the same time.";
let
  filename =
    "nixos."
    + {
      qcow2 = "qcow2";
      qcow2-compressed = "qcow2";
      vdi = "vdi";
      vpc = "vhd";
      raw = "img";
    }
    .${format};
in
pkgs.runCommand name {
  toplevel = config.system.build.toplevel;
  inherit
    diskSize
    additionalSpace
    label
    fsType
    partitionTableType
    filename
    ;
  installBootLoader = if installBootLoader then "1" else "";
  copyChannel = if copyChannel then "1" else "";
} "stand-in: never built"
