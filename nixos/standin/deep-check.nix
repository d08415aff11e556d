# scripts/check-nix --deep (issue 17): applied to the rave flake's
# nixosConfigurations (`nix eval FLAKE#nixosConfigurations --apply`), returns
# the report as text, one line per check. For every configuration: every
# option a rave module defines (its definitions come from the rave tree),
# forced along what rave set and deeply below it (force.nix; stopping at
# derivations, whose .drvPath is forced), labelled
# [real] (declared by a real nixpkgs / sops-nix module of the stand-in),
# [stub] (declared by the stand-in's stub module) or [own] (declared by rave
# itself); every assertion evaluated, failed ones listed; the warnings; the
# system's and the rave image's .drvPath.
#
# A line starting with "FAIL" is a failure. Errors the module system throws
# (types, undeclared options, conflicting definitions, failed assertions in
# values) are caught per option with builtins.tryEval; errors Nix cannot catch
# (a missing attribute) stop the evaluation, and the driver reports them.
configs:
let
  lib = (builtins.head (builtins.attrValues configs)).lib;
  inherit (lib) concatMap concatStringsSep;

  inherit (import ./force.nix { inherit lib; }) forceAsDefined;

  firstLine =
    s:
    let
      lines = lib.splitString "\n" s;
    in
    builtins.head lines;

  report =
    name: cfg:
    let
      # The rave tree in the store: the flake's first module is ./nixos/<profile>.nix.
      root = toString (dirOf (dirOf (toString (builtins.head cfg._module.args.modules))));
      fromRave = file: lib.hasPrefix (root + "/") file;
      isStubDecl = file: lib.hasSuffix "rave-standin/stub-module.nix" file;

      allOptions = lib.collect lib.isOption (builtins.removeAttrs cfg.options [ "_module" ]);
      # An option nobody defines whose default throws (networking.fqdn) has no
      # definitions to list: tryEval, and it is not one rave defines.
      checked = builtins.filter (
        opt:
        let
          r = builtins.tryEval (builtins.any (d: fromRave d.file) (opt.definitionsWithLocations or [ ]));
        in
        r.success && r.value
      ) allOptions;

      label =
        opt:
        # [stub] when only the stub module declares it (beside rave); an option
        # a real module declares and the stub only extends (fileSystems:
        # stage-1.nix's neededForBoot) is [real].
        if builtins.any isStubDecl opt.declarations
          && builtins.all (f: isStubDecl f || fromRave f) opt.declarations then
          (if lib.hasPrefix "rave stand-in stub, real type" (opt.description or "") then "stub, real type" else "stub")
        else if builtins.all fromRave opt.declarations then
          "own"
        else
          "real";

      optLine =
        opt:
        let
          path = lib.showOption opt.loc;
          # Forced along what rave set (force.nix).
          r = builtins.tryEval (
            forceAsDefined (map (d: d.value) (builtins.filter (d: fromRave d.file) opt.definitionsWithLocations)) opt.value
          );
          files = lib.unique (
            map (d: lib.removePrefix (root + "/") d.file) (
              builtins.filter (d: fromRave d.file) opt.definitionsWithLocations
            )
          );
        in
        if r.success then
          "ok    ${name}: [${label opt}] ${path}  (${concatStringsSep ", " files})"
        else
          "FAIL  ${name}: [${label opt}] ${path}: does not evaluate (${concatStringsSep ", " files}) loc ${builtins.toJSON opt.loc}";

      assertions = cfg.config.assertions;
      failedAssertions = builtins.filter (a: !a.assertion) assertions;
      warnings = cfg.config.warnings;

      drvLine =
        what: v:
        let
          r = builtins.tryEval (builtins.seq v.drvPath v.drvPath);
        in
        if r.success then "ok    ${name}: ${what} ${r.value}" else "FAIL  ${name}: ${what} does not instantiate";

      labels = map label checked;
      count = l: builtins.length (builtins.filter (x: x == l) labels);
    in
    map optLine checked
    ++ map (a: "FAIL  ${name}: assertion failed: ${firstLine a.message}") failedAssertions
    ++ map (w: "warn  ${name}: warning: ${firstLine w}") warnings
    ++ [
      (drvLine "system.build.toplevel" cfg.config.system.build.toplevel)
      (drvLine "system.build.raveImage" cfg.config.system.build.raveImage)
      "count ${name}: options ${toString (builtins.length checked)} real ${toString (count "real")} stub ${toString (count "stub")} stub-with-real-type ${toString (count "stub, real type")} own ${toString (count "own")} assertions ${toString (builtins.length assertions)} held ${
        toString (builtins.length assertions - builtins.length failedAssertions)
      } warnings ${toString (builtins.length warnings)}"
    ];
in
concatStringsSep "\n" (concatMap (n: report n configs.${n}) (builtins.attrNames configs)) + "\n"
