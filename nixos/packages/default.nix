# The packages the images and the flake need beyond nixpkgs. `rustPlatform`
# must have a rustc that meets the workspace's rust-version (flake.nix checks).
{
  pkgs,
  rustPlatform ? pkgs.rustPlatform,
}:
{
  webhook-dispatcher = pkgs.callPackage ./webhook-dispatcher.nix { inherit rustPlatform; };
  rave-harness = pkgs.callPackage ./rave-harness.nix { inherit rustPlatform; };
  vibe-kanban = pkgs.callPackage ./vibe-kanban.nix { };
  claude-code-router = pkgs.callPackage ./claude-code-router { };
  rave-secrets = pkgs.callPackage ./rave-secrets.nix { };
}
