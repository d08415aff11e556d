# rave stand-in (issue 17): a flake named like nixpkgs, for evaluating the rave
# flake offline with `--override-input nixpkgs path:DIR/nixpkgs` (and
# nixpkgs-rust likewise). It holds nixpkgs' real lib/ and real NixOS module
# files (copied in by nixos/standin/assemble, listed in PROVENANCE),
# plus the rave project's own stubs under rave-standin/: the packages
# (stub-pkgs.nix, derivations that instantiate but never build) and the
# namespaces not yet real (stub-module.nix). Not public code: the rave
# project's own.
{
  description = "rave stand-in for nixpkgs: real lib and NixOS modules, stub packages";

  outputs =
    { self }:
    let
      system = "x86_64-linux";
      realLib = import ./lib;
      lib = realLib.extend (
        final: _prev: {
          # As nixpkgs' flake.nix defines it, on the stand-in's module list.
          nixosSystem =
            args:
            import ./nixos/lib/eval-config.nix (
              {
                lib = final;
                system = null;
                baseModules = import ./rave-standin/module-list.nix ++ [ { _module.args.pkgs = pkgs; } ];
              }
              // args
              // {
                # Inline modules are located where the caller wrote `modules`.
                modulesLocation = args.modulesLocation or (builtins.unsafeGetAttrPos "modules" args).file or null;
              }
            );
        }
      );
      pkgs = import ./rave-standin/stub-pkgs.nix {
        inherit lib system;
        path = self.outPath;
      };
    in
    {
      inherit lib;
      legacyPackages.${system} = pkgs;
      # What the stand-in is made of, for the driver's [real]/[stub] labels.
      standin = {
        stubModule = ./rave-standin/stub-module.nix;
        moduleList = import ./rave-standin/module-list.nix;
      };
    };
}
