# scripts/check-nix --deep (issue 17): forces one option of one configuration
# without builtins.tryEval, so Nix prints why it does not evaluate (the
# report of deep-check.nix only knows that it does not).
# `nix eval …#nixosConfigurations --apply '(import force-option.nix) NAME LOC-JSON'`
name: locJson: configs:
let
  cfg = configs.${name};
  inherit (cfg) lib;
  opt = lib.attrByPath (builtins.fromJSON locJson) null cfg.options;
  inherit (import ./force.nix { inherit lib; }) forceAsDefined;
  root = toString (dirOf (dirOf (toString (builtins.head cfg._module.args.modules))));
  fromRave = file: lib.hasPrefix (root + "/") file;
in
forceAsDefined (map (d: d.value) (builtins.filter (d: fromRave d.file) opt.definitionsWithLocations)) opt.value
